"""The playground page (`GET /`) in headless Chromium (Playwright) against real API and worker processes."""

from __future__ import annotations

import base64
import hashlib
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.conftest import stack_env, started_stack
from tests.e2e.processes import Stack, wait_until

sync_api = pytest.importorskip("playwright.sync_api", reason="the playwright package is not installed (pip)")
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="no chromium on PATH (apt-get install chromium)")

CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
# About 0.12 s a step on a 2-core CPU: long enough to cancel mid-run.
LONG = {"prompt": "a long job", "width": "512", "height": "512", "steps": "150"}


# A second model (no worker serves it) whose defaults differ from tiny's in every field a model sets; sorted after
# `tiny`, which stays the page's first, selected model.
SECOND_MODEL = "tiny-small"
MODELS_TOML = f"""
[models.{SECOND_MODEL}]
source = "tiny"
width = 64
height = 96
steps = 6
sampler = "euler"
guidance_scale = 3.5
"""


@pytest.fixture(scope="module")
def stack(cache_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    tmp = tmp_path_factory.mktemp("playground")
    models_file = tmp / "models.toml"
    models_file.write_text(MODELS_TOML)
    with started_stack(tmp, {**stack_env(cache_dir), "IMAGEGEN_MODELS_FILE": str(models_file)}) as running:
        yield running


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with sync_api.sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser: Any, stack: Stack) -> Iterator[Any]:
    """The playground, loaded, its models listed; fails the test on any script or CSP error in the console (the
    browser's own line for each 4xx answer is expected: the page shows those errors itself)."""
    context = browser.new_context(viewport={"width": 1200, "height": 900})
    tab = context.new_page()
    errors: list[str] = []
    tab.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
    http_status = re.compile(r"^Failed to load resource: the server responded with a status of 4\d\d")
    tab.on("pageerror", lambda error: errors.append(str(error)))
    tab.goto(stack.url + "/")
    tab.wait_for_selector("#sampler option", state="attached")
    yield tab
    context.close()
    assert [error for error in errors if not http_status.match(error)] == []


def _fill(page: Any, **fields: str) -> None:
    for name, value in fields.items():
        page.fill(f"#{name}", value)


def _poll(page: Any, selector: str, predicate: str, timeout: float = 60) -> None:
    """Until `predicate` (a JS function of the matching elements) is true; the page's CSP forbids
    `wait_for_function`'s string evaluation, while `eval_on_selector_all` runs outside it."""
    wait_until(lambda: page.eval_on_selector_all(selector, predicate), timeout, f"{predicate} on {selector}")


def _wait_state(page: Any, state: str, timeout: float = 60) -> None:
    page.wait_for_selector(f'#status[data-state="{state}"]', timeout=timeout * 1000)


def _job_id(page: Any) -> str:
    match = re.search(r"job ([0-9a-f]{32})", page.inner_text("#job-id"))
    assert match, page.inner_text("#job-id")
    return match.group(1)


def test_page_is_served_with_a_strict_csp(stack: Stack) -> None:
    response = stack.client.get("/")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    csp = dict(part.strip().split(" ", 1) for part in response.headers["content-security-policy"].split(";"))
    assert csp["default-src"] == "'none'"
    assert csp["connect-src"] == "'self'"
    assert "unsafe" not in response.headers["content-security-policy"]
    (script,) = re.findall(r"<script>(.*?)</script>", response.text, re.S)
    digest = base64.b64encode(hashlib.sha256(script.encode()).digest()).decode()
    assert csp["script-src"] == f"'sha256-{digest}'"
    assert response.headers["x-content-type-options"] == "nosniff"
    assert stack.client.head("/").status_code == 200


def _request_schema(stack: Stack) -> tuple[dict[str, Any], dict[str, Any]]:
    """GenerateRequest's JSON schema as the app publishes it, and its schemas by name."""
    schemas = stack.client.get("/openapi.json").json()["components"]["schemas"]
    return schemas.get("GenerateRequest") or schemas["GenerateRequest-Input"], schemas


def _field(stack: Stack, name: str) -> dict[str, Any]:
    """One field's schema with `X | null` reduced to X and its `$ref` followed."""
    request, schemas = _request_schema(stack)
    field = request["properties"][name]
    inner = next((b for b in field.get("anyOf", []) if b.get("type") != "null"), None) or field
    if "$ref" in inner:
        inner = schemas[inner["$ref"].rsplit("/", 1)[-1]]
    return {**inner, **{k: v for k, v in field.items() if k not in ("anyOf", "$ref")}}


def _form_values(page: Any, names: list[str]) -> dict[str, Any]:
    return {name: page.input_value(f"#{name}") for name in names}


def _js(value: Any) -> str:
    """A JSON value as JavaScript's String() writes it into an input: 7.5 -> "7.5", 4.0 -> "4", "euler" -> "euler"."""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _as_form(defaults: dict[str, Any]) -> dict[str, str]:
    """The defaults GET /models reports, as the form's inputs show them."""
    return {name: _js(value) for name, value in defaults.items()}


def test_form_opens_with_the_models_defaults_and_refills_them_on_a_model_change(page: Any, stack: Stack) -> None:
    models = {model["name"]: model for model in stack.client.get("/models").json()}
    assert next(iter(models)) == "tiny" and page.input_value("#model") == "tiny"
    first, second = models["tiny"]["defaults"], models[SECOND_MODEL]["defaults"]
    assert set(first) == set(second) >= {"width", "height", "steps", "sampler", "guidance_scale"}
    assert first != second, "the two models must differ for the refill to show"

    def shown() -> dict[str, str]:
        return _form_values(page, list(first))

    assert shown() == _as_form(first)
    page.select_option("#model", SECOND_MODEL)
    assert shown() == _as_form(second)
    # No live worker serves the second model: every sampler of its family (its capabilities) is offered, in the
    # schema's order; the flow-matching samplers are not an sd15 model's.
    samplers = page.eval_on_selector_all("#sampler option", "options => options.map(o => o.value)")
    assert samplers == models[SECOND_MODEL]["capabilities"]["samplers"]
    assert samplers == [name for name in _field(stack, "sampler")["enum"] if not name.startswith("flow_")]
    page.select_option("#model", "tiny")
    assert shown() == _as_form(first)


def test_fields_bounds_and_samplers_come_from_the_schema(page: Any, stack: Stack) -> None:
    tiny = stack.client.get("/models").json()[0]
    family_samplers, served = tiny["capabilities"]["samplers"], tiny["samplers"]
    samplers = page.eval_on_selector_all("#sampler option", "options => options.map(o => o.value)")
    assert samplers == [name for name in family_samplers if name in served]
    assert set(family_samplers) <= set(served), "tiny's worker runs every sd15 sampler: the page offers them all"
    assert tiny["capabilities"]["size_multiple"] == _field(stack, "width")["multipleOf"]  # an sd15 model: 8
    for name in ("width", "height", "steps", "guidance_scale", "seed", "num_images"):
        field = _field(stack, name)
        bounds = page.eval_on_selector(f"#{name}", "input => [input.min, input.max, input.step]")
        low = field.get("minimum", field.get("exclusiveMinimum"))
        step = field.get("multipleOf") or (1 if field["type"] == "integer" else "any")
        assert bounds == [_js(low), _js(field["maximum"]), _js(step)], name
    for name in ("prompt", "negative_prompt"):
        assert page.eval_on_selector(f"#{name}", "area => area.maxLength") == _field(stack, name)["maxLength"]
    assert page.eval_on_selector("#prompt", "area => area.required")


def test_generate_shows_progress_previews_and_the_images(page: Any, stack: Stack) -> None:
    samplers = page.eval_on_selector_all("#sampler option", "options => options.map(o => o.value)")
    assert sorted(samplers) == sorted(stack.client.get("/models").json()[0]["samplers"])
    assert page.input_value("#sampler") == "euler_a"
    _fill(page, prompt="a red circle on a blue background", width="128", height="96", steps="12", seed="42")
    _fill(page, num_images="2", negative_prompt="blurry")
    page.check("#preview")
    page.click("#submit")
    _wait_state(page, "succeeded")

    assert "100%" in page.inner_text("#progress-text")
    assert page.eval_on_selector("#progress", "bar => [bar.value, bar.max]") == [12, 12]
    assert page.get_attribute("#preview-img", "src").startswith("data:image/webp;base64,")
    _poll(page, "#results img", "images => images.length > 0 && images.every(image => image.complete)")
    sizes = page.eval_on_selector_all("#results img", "images => images.map(i => [i.naturalWidth, i.naturalHeight])")
    assert sizes == [[128, 96], [128, 96]]
    captions = page.eval_on_selector_all("#results figcaption", "captions => captions.map(c => c.textContent)")
    assert [caption.split(" · ")[0] for caption in captions] == ["seed 42", "seed 43"]
    params = page.inner_text("#params")
    assert "128\u00d796" in params and "12 steps" in params and "euler_a" in params and "a red circle" in params
    job = stack.client.get(f"/jobs/{_job_id(page)}").json()
    assert (job["status"], job["seed"], job["request"]["negative_prompt"]) == ("succeeded", 42, "blurry")
    assert job["request"]["preview_every"] == 1
    assert page.is_enabled("#submit") and not page.is_enabled("#cancel")


def test_cancel_a_running_job_from_the_page(page: Any, stack: Stack) -> None:
    _fill(page, **LONG)
    page.select_option("#sampler", "euler")
    page.uncheck("#preview")
    page.click("#submit")
    _poll(page, "#progress", "bars => bars[0].value >= 2")
    assert re.match(r"step \d+/150 · \d+% · ETA ", page.inner_text("#progress-text"))
    page.click("#cancel")
    _wait_state(page, "canceled")
    assert page.inner_text("#status").startswith("Canceled at step")
    job = stack.client.get(f"/jobs/{_job_id(page)}").json()
    assert job["status"] == "canceled"
    assert 0 < job["progress"]["step"] < 150
    assert page.eval_on_selector_all("#results img", "images => images.length") == 0


def test_queue_position_then_cancel_while_queued(page: Any, stack: Stack) -> None:
    blocker = stack.submit(prompt="blocker", width=512, height=512, steps=150, sampler="euler")
    wait_until(lambda: stack.client.get(f"/jobs/{blocker['id']}").json()["status"] == "running", 60, "the blocker")
    try:
        _fill(page, prompt="waits its turn", width="64", height="64", steps="4")
        page.click("#submit")
        page.wait_for_selector("#queue:has-text('next in line')", timeout=30_000)
        assert page.get_attribute("#status", "data-state") == "queued"
        page.click("#cancel")
        _wait_state(page, "canceled")
        job = stack.client.get(f"/jobs/{_job_id(page)}").json()
        assert job["status"] == "canceled" and job["timings"]["started_at"] is None
    finally:
        stack.client.delete(f"/jobs/{blocker['id']}")
        assert stack.wait_job(blocker["id"])["status"] == "canceled"


def test_refused_request_shows_the_apis_error(page: Any) -> None:
    _fill(page, prompt="too big", width="2048", height="2048")
    page.click("#submit")
    _wait_state(page, "refused")
    error = page.inner_text("#error")
    assert error.startswith("invalid_request: width*height: 2048x2048 = 4194304 pixels")
    assert page.is_enabled("#submit")


def test_with_an_api_key_the_page_streams_over_fetch(page: Any) -> None:
    """EventSource cannot send Authorization; with a key the page reads the stream with fetch (the key goes along)."""
    events_requests: list[Any] = []
    page.on("request", lambda request: events_requests.append(request) if "/events" in request.url else None)
    page.click("details summary")
    page.fill("#api_key", "sk-any")  # this service has no keys configured: any key is accepted and ignored
    _fill(page, prompt="with a key", width="64", height="64", steps="6")
    page.click("#submit")
    _wait_state(page, "succeeded")
    assert page.eval_on_selector_all("#results img", "images => images.map(i => i.naturalWidth)") == [64]
    assert events_requests and events_requests[0].headers["authorization"] == "Bearer sk-any"
    assert events_requests[0].resource_type == "fetch"
