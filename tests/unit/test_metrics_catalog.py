"""Every metric's name, type and labels match the one catalog; no unbounded label; sensible names and buckets."""

from __future__ import annotations

import re

import torch
from prometheus_client.registry import REGISTRY

import service.metrics
import service.webhooks
import worker.metrics
from tests.metrics_catalog import ALL, API, FORBIDDEN_LABELS, WORKER


def _module_families() -> dict[str, tuple[str, tuple[str, ...]]]:
    found = {}
    for module in (service.metrics, service.webhooks, worker.metrics):
        for value in vars(module).values():
            describe = getattr(value, "describe", None)
            if callable(describe) and hasattr(value, "_labelnames") and hasattr(value, "_type"):
                for family in describe():
                    found[family.name] = (family.type, tuple(value._labelnames))
    return found


def test_module_level_metrics_match_the_catalog() -> None:
    found = _module_families()
    expected = {name: spec for name, spec in ALL.items() if name in found}
    assert found == expected
    collected = (
        set(found)
        | {"imagegen_queue_depth", "imagegen_workers"}
        | {
            "imagegen_gpu_memory_allocated_bytes",
            "imagegen_gpu_memory_reserved_bytes",
        }
    )
    assert collected == set(ALL), set(ALL) ^ collected


def test_collectors_match_the_catalog() -> None:
    redis_state = service.metrics.RedisStateCollector(redis=None)  # describe() reads nothing
    gpu = worker.metrics.GpuMemoryCollector(torch.device("cuda"))
    for collector, catalog in ((redis_state, API), (gpu, WORKER)):
        for family in collector.describe():
            kind, labels = catalog[family.name]
            assert family.type == kind
            assert tuple(family._labelnames) == labels


def test_names_units_and_labels() -> None:
    for name, (kind, labels) in ALL.items():
        assert re.fullmatch(r"imagegen_[a-z_]+", name)
        assert not name.endswith("_total"), "counters get _total from the client"
        if kind == "histogram":
            assert name.endswith(("_seconds", "_size")), name
        assert not FORBIDDEN_LABELS & set(labels), name


def test_step_buckets_cover_gpu_to_cpu() -> None:
    buckets = worker.metrics.STEP_BUCKETS
    assert buckets[0] <= 0.002 and 0.005 in buckets and buckets[-1] >= 10


def test_registered_in_the_process_registry() -> None:
    names = {metric.name for metric in REGISTRY.collect()}
    assert {"imagegen_denoise_step_seconds", "imagegen_http_requests", "imagegen_jobs"} <= names
