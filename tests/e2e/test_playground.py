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


@pytest.fixture(scope="module")
def stack(cache_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with started_stack(tmp_path_factory.mktemp("playground"), stack_env(cache_dir)) as running:
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
