"""Offline checks of the KEDA autoscaling objects: the worker scales on the real RQ queue and busy-worker metric,
and every field is one KEDA's CRD types define."""

from __future__ import annotations

import json
import re
import types
import typing
from typing import Any

import pytest

from tests.deploy.k8s_objects import _base_objects, _config, _find, _manifest_sets


def _trigger(scaled: dict[str, Any], kind: str) -> dict[str, Any]:
    [trigger] = [t for t in scaled["spec"]["triggers"] if t["type"] == kind]
    return trigger


def test_keda_scales_workers_on_the_real_rq_queue_of_the_configured_model() -> None:
    from rq import Queue

    from core.keys import queue_name

    objects = _base_objects()
    model = _config(objects)["IMAGEGEN_MODEL_NAME"]
    scaled = _find(objects, "ScaledObject")
    assert scaled["apiVersion"] == "keda.sh/v1alpha1"
    assert scaled["spec"]["scaleTargetRef"]["name"] == "imagegen-worker"
    _find(objects, "Deployment", scaled["spec"]["scaleTargetRef"]["name"])

    redis_trigger = _trigger(scaled, "redis")
    list_name = redis_trigger["metadata"]["listName"]
    assert list_name == f"rq:queue:imagegen.{model}"
    # ... which is the key RQ itself uses for the queue the API enqueues to.
    assert list_name == Queue.redis_queue_namespace_prefix + queue_name(model)
    assert int(redis_trigger["metadata"]["listLength"]) >= 1
    auth = _find(objects, "TriggerAuthentication", redis_trigger["authenticationRef"]["name"])
    secret = _find(objects, "Secret")
    params = {ref["parameter"]: ref for ref in auth["spec"]["secretTargetRef"]}
    assert set(params) == {"address", "password"}
    for ref in params.values():
        assert ref["name"] == secret["metadata"]["name"] and ref["key"] in secret["stringData"]

    busy = _trigger(scaled, "prometheus")["metadata"]
    from tests.metrics_catalog import API

    assert "imagegen_workers" in API and API["imagegen_workers"][1] == ("model", "state")
    assert re.fullmatch(rf'max\(imagegen_workers\{{model="{model}",state="busy"\}}\)', busy["query"]), busy["query"]
    assert float(busy["threshold"]) == 1

    spec = scaled["spec"]
    assert spec["minReplicaCount"] in (0, 1) and spec["maxReplicaCount"] > max(spec["minReplicaCount"], 1)
    behavior = spec["advanced"]["horizontalPodAutoscalerConfig"]["behavior"]
    assert behavior["scaleDown"]["stabilizationWindowSeconds"] >= 300


def _keda_models() -> types.ModuleType | None:
    try:
        from cloudcoil.models.keda import v1alpha1
    except ImportError:
        return None
    return v1alpha1


def _unknown_fields(annotation: Any, value: Any, path: str) -> list[str]:
    """Keys of `value` that the pydantic type `annotation` (generated from KEDA's CRD schemas) does not define."""
    from pydantic import BaseModel

    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is typing.Annotated:
        return _unknown_fields(args[0], value, path)
    if origin in (typing.Union, types.UnionType):
        options = [a for a in args if a is not type(None)]
        if isinstance(value, dict):
            options = [
                a for a in options if typing.get_origin(a) is dict or (isinstance(a, type) and issubclass(a, BaseModel))
            ]
        elif isinstance(value, list):
            options = [a for a in options if typing.get_origin(a) is list]
        results = [_unknown_fields(a, value, path) for a in options]
        return min(results, key=len) if results else []
    if origin is list and isinstance(value, list):
        return [err for i, item in enumerate(value) for err in _unknown_fields(args[0], item, f"{path}[{i}]")]
    if origin is dict and isinstance(value, dict):
        return [err for key, item in value.items() for err in _unknown_fields(args[1], item, f"{path}.{key}")]
    if isinstance(annotation, type) and issubclass(annotation, BaseModel) and isinstance(value, dict):
        fields = {(f.alias or name): f.annotation for name, f in annotation.model_fields.items()}
        errors = []
        for key, item in value.items():
            if key in fields:
                errors += _unknown_fields(fields[key], item, f"{path}.{key}")
            else:
                errors.append(f"{path}.{key}")
        return errors
    return []


needs_keda_models = pytest.mark.skipif(
    _keda_models() is None, reason="KEDA CRD types not installed (pip install cloudcoil.models.keda)"
)


@needs_keda_models
def test_keda_objects_match_the_keda_crd_types() -> None:
    models = _keda_models()
    assert models is not None
    checked = 0
    for label, objects in _manifest_sets():
        for obj in objects:
            if obj["apiVersion"] != "keda.sh/v1alpha1":
                continue
            model = getattr(models, obj["kind"])
            model.model_validate(obj)  # types, enums and required fields
            assert _unknown_fields(model, obj, obj["kind"]) == [], label
            checked += 1
    assert checked >= 2


@needs_keda_models
def test_keda_unknown_field_check_catches_a_typo() -> None:
    models = _keda_models()
    assert models is not None
    scaled = json.loads(json.dumps(_find(_base_objects(), "ScaledObject")))
    scaled["spec"]["advanced"]["horizontalPodAutoscalerConfig"]["behaviour"] = {}
    scaled["spec"]["triggers"][0]["authRef"] = {"name": "x"}
    assert _unknown_fields(models.ScaledObject, scaled, "ScaledObject") == [
        "ScaledObject.spec.advanced.horizontalPodAutoscalerConfig.behaviour",
        "ScaledObject.spec.triggers[0].authRef",
    ]
