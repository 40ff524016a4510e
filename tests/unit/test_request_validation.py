"""Every bad input gets a 4xx in the one error shape, naming the field and the limit; none reaches Redis."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from core.schemas import IMAGE_FIELDS, GenerateRequest, Sampler
from core.settings import Settings
from service.app import create_app
from service.routes.generate import _JSON_FORM_FIELDS

GOOD = {"prompt": "a red circle", "width": 64, "height": 64, "steps": 2}


@pytest.fixture
def client() -> TestClient:
    # Nothing listens on port 1: a request that got past validation would fail with 503, not the 4xx asserted.
    settings = Settings(redis_url="redis://127.0.0.1:1/0", max_pixels=512 * 512, max_body_bytes=1024 * 1024)
    return TestClient(create_app(settings), raise_server_exceptions=False)


def _error(response) -> dict:
    body = response.json()
    assert set(body) == {"error"}, body
    assert set(body["error"]) == {"code", "message", "details"}, body
    return body["error"]


@pytest.mark.parametrize(
    ("patch", "field", "limit_text"),
    [
        ({"prompt": ""}, "prompt", "at least 1 character"),
        ({"prompt": "x" * 2001}, "prompt", "at most 2000 characters"),
        ({"negative_prompt": "x" * 2001}, "negative_prompt", "at most 2000 characters"),
        ({"width": 100}, "width", "multiple of 8"),
        ({"height": 76}, "height", "multiple of 8"),
        ({"width": 4096}, "width", "less than or equal to 2048"),
        ({"height": 32}, "height", "greater than or equal to 64"),
        ({"steps": 0}, "steps", "greater than or equal to 1"),
        ({"steps": 1000}, "steps", "less than or equal to 150"),
        ({"guidance_scale": -1}, "guidance_scale", "greater than or equal to 0"),
        ({"guidance_scale": 31}, "guidance_scale", "less than or equal to 30"),
        ({"sampler": "k_dpm_9000"}, "sampler", "'euler_a'"),
        ({"num_images": 0}, "num_images", "greater than or equal to 1"),
        ({"num_images": 100}, "num_images", "less than or equal to 8"),
        ({"seed": -1}, "seed", "greater than or equal to 0"),
        ({"seed": 2**32}, "seed", "less than or equal to 4294967295"),
        ({"output_format": "gif"}, "output_format", "'png'"),
        ({"colour": "red"}, "colour", "Extra inputs are not permitted"),
        ({"steps": "many"}, "steps", "valid integer"),
    ],
)
def test_bad_field_is_422_naming_field_and_limit(client: TestClient, patch: dict, field: str, limit_text: str) -> None:
    response = client.post("/generate", json={**GOOD, **patch})
    assert response.status_code == 422
    error = _error(response)
    assert error["code"] == "invalid_request"
    assert error["message"].startswith(f"{field}: ")
    assert limit_text in error["message"]
    assert [d["field"] for d in error["details"]] == [field]


def test_nan_guidance_is_refused(client: TestClient) -> None:
    # JSON has no NaN, but Python's parser accepts the literal; it must still be refused.
    response = client.post(
        "/generate", content=b'{"prompt": "x", "guidance_scale": NaN}', headers={"content-type": "application/json"}
    )
    assert response.status_code == 422
    assert _error(response)["message"] == "guidance_scale: Input should be a finite number"


def test_body_not_json(client: TestClient) -> None:
    response = client.post("/generate", content=b"{prompt:", headers={"content-type": "application/json"})
    assert response.status_code == 422
    assert _error(response)["message"].startswith("body is not valid JSON")


def test_body_not_an_object(client: TestClient) -> None:
    response = client.post("/generate", json=["a red circle"])
    assert response.status_code == 422
    assert _error(response)["code"] == "invalid_request"


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded", "image/png"])
def test_wrong_content_type_is_415(client: TestClient, content_type: str) -> None:
    response = client.post("/generate", content=b'{"prompt": "x"}', headers={"content-type": content_type})
    assert response.status_code == 415
    error = _error(response)
    assert error["code"] == "unsupported_media_type"
    assert "application/json" in error["message"]


def test_body_over_1mb_is_413(client: TestClient) -> None:
    body = b'{"prompt": "' + b"x" * (1024 * 1024) + b'"}'
    response = client.post("/generate", content=body, headers={"content-type": "application/json"})
    assert response.status_code == 413
    assert _error(response)["message"] == "request body is over the limit of 1048576 bytes"


def test_chunked_body_over_limit_is_413(client: TestClient) -> None:
    def chunks():
        yield b'{"prompt": "'
        for _ in range(20):
            yield b"x" * 65536
        yield b'"}'

    response = client.post("/generate", content=chunks(), headers={"content-type": "application/json"})
    assert response.status_code == 413
    assert _error(response)["code"] == "payload_too_large"


def test_redis_down_is_503_not_a_trace(client: TestClient) -> None:
    response = client.post("/generate", json=GOOD)
    assert response.status_code == 503
    error = _error(response)
    assert error["code"] == "unavailable"
    assert "Traceback" not in response.text


def test_unknown_route_is_404_in_the_error_shape(client: TestClient) -> None:
    response = client.get("/nope")
    assert response.status_code == 404
    assert _error(response)["code"] == "not_found"


# The JSON schema keywords that say what a value may be: a multipart part must say the same.
BOUNDS = ("type", "enum", "minimum", "maximum", "exclusiveMinimum", "minLength", "maxLength", "pattern")


def _value_schema(schema: dict, definitions: dict) -> dict:
    """A field's schema without its null branch, its `$ref` followed, cut to what bounds its value."""
    branches = [branch for branch in schema.get("anyOf", [schema]) if branch.get("type") != "null"]
    assert len(branches) == 1, schema
    (value,) = branches
    if "$ref" in value:
        value = definitions[value["$ref"].rsplit("/", 1)[-1]]
    return {key: value[key] for key in BOUNDS if key in value}


def test_multipart_body_has_every_field_with_its_type_and_bounds(client: TestClient) -> None:
    operation = client.get("/openapi.json").json()["paths"]["/generate"]["post"]
    form = operation["requestBody"]["content"]["multipart/form-data"]["schema"]
    schema = GenerateRequest.model_json_schema()
    definitions = schema["$defs"]
    assert set(form["properties"]) == set(GenerateRequest.model_fields)
    assert form["required"] == schema["required"] == ["prompt"]
    for name, part in form["properties"].items():
        field = schema["properties"][name]
        if name in IMAGE_FIELDS:
            assert (part["type"], part["format"]) == ("string", "binary"), name
        elif field.get("type") == "array":  # sent as JSON text, as the form parser reads it
            assert (part["type"], part["contentMediaType"]) == ("string", "application/json"), name
            assert part["contentSchema"]["type"] == "array"
            content = part["contentSchema"]
            assert (content.get("minItems"), content["maxItems"]) == (field.get("minItems"), field["maxItems"])
            assert name in _JSON_FORM_FIELDS
        else:
            expected = _value_schema(field, definitions)
            assert expected["type"] in ("string", "integer", "number", "boolean"), name
            assert _value_schema(part, definitions) == expected, name
    steps = form["properties"]["steps"]
    assert (steps["type"], steps["minimum"], steps["maximum"], steps["default"]) == ("integer", 1, 150, 25)
    assert form["properties"]["sampler"]["enum"] == [sampler.value for sampler in Sampler]


@pytest.mark.parametrize(
    ("field", "text", "limit_text"),
    [("loras", '[{"name": "ink", "scale": 5}]', "less than or equal to 4"), ("webhook_events", '["nope"]', "'queued'")],
)
def test_multipart_list_fields_are_read_as_json(client: TestClient, field: str, text: str, limit_text: str) -> None:
    # Refused for the list's item, not as "not a list": the part was parsed as JSON (a file part makes it multipart).
    response = client.post("/generate", data={"prompt": "x", field: text}, files={"init_image": ("a.png", b"x")})
    error = _error(response)
    assert response.status_code == 422, error
    assert error["message"].startswith(f"{field}.0"), error
    assert limit_text in error["message"]
