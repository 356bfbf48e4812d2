"""Per-resource gauges: one phase set at a time, info label sets replaced on a version change, weights, and no
series left behind by a deleted resource. A private registry per test; no cluster."""

from __future__ import annotations

from typing import Any, cast

import pytest
from prometheus_client import REGISTRY, CollectorRegistry

from modeldeploy.config import OperatorConfig
from modeldeploy.controller.queue import Controller
from modeldeploy.metrics import PHASES, ResourceMetrics

NS, NAME = "models", "fraud-detector"


def status(phase: str, stable: str = "1.0.0", canary: str | None = None, desired: int = 0, actual: int = 0) -> Any:
    body: dict[str, Any] = {"phase": phase, "model": "fraud", "stable": {"version": stable, "revision": "a"}}
    if canary is not None:
        body["canary"] = {"version": canary, "revision": "b", "desiredWeight": desired, "actualWeight": actual}
    return body


@pytest.fixture
def registry() -> CollectorRegistry:
    return CollectorRegistry()


@pytest.fixture
def gauges(registry: CollectorRegistry) -> ResourceMetrics:
    return ResourceMetrics(registry)


def series(registry: CollectorRegistry, metric: str, name: str = NAME) -> dict[tuple[tuple[str, str], ...], float]:
    """Every sample of `metric` for one resource, by its labels other than namespace and name."""
    found = {}
    for family in registry.collect():
        for sample in family.samples:
            labels = sample.labels
            if sample.name == metric and labels.get("namespace") == NS and labels.get("name") == name:
                rest = tuple(sorted((k, v) for k, v in labels.items() if k not in ("namespace", "name")))
                found[rest] = sample.value
    return found


def phases(registry: CollectorRegistry, name: str = NAME) -> dict[str, float]:
    return {
        dict(labels)["phase"]: value for labels, value in series(registry, "modeldeploy_resource_phase", name).items()
    }


def test_phase_is_one_for_the_current_phase_only(registry: CollectorRegistry, gauges: ResourceMetrics) -> None:
    gauges.observe(NS, NAME, status("Progressing"))
    assert phases(registry) == {"Healthy": 0, "Progressing": 1, "Paused": 0, "Degraded": 0}
    gauges.observe(NS, NAME, status("Healthy"))
    assert phases(registry) == {"Healthy": 1, "Progressing": 0, "Paused": 0, "Degraded": 0}
    assert set(PHASES) == {"Healthy", "Progressing", "Paused", "Degraded"}


def test_a_resource_without_status_has_no_phase_set(registry: CollectorRegistry, gauges: ResourceMetrics) -> None:
    gauges.observe(NS, NAME, None)
    assert phases(registry) == dict.fromkeys(PHASES, 0)
    assert series(registry, "modeldeploy_resource_info") == {
        (("canary_version", ""), ("model", ""), ("stable_version", "")): 1
    }


def test_info_keeps_one_label_set_and_drops_the_old_one(registry: CollectorRegistry, gauges: ResourceMetrics) -> None:
    gauges.observe(NS, NAME, status("Healthy", stable="1.0.0"))
    gauges.observe(NS, NAME, status("Progressing", stable="1.0.0", canary="1.1.0", desired=20, actual=0))
    assert series(registry, "modeldeploy_resource_info") == {
        (("canary_version", "1.1.0"), ("model", "fraud"), ("stable_version", "1.0.0")): 1
    }
    gauges.observe(NS, NAME, status("Healthy", stable="1.1.0"))
    assert series(registry, "modeldeploy_resource_info") == {
        (("canary_version", ""), ("model", "fraud"), ("stable_version", "1.1.0")): 1
    }


def test_canary_weights(registry: CollectorRegistry, gauges: ResourceMetrics) -> None:
    gauges.observe(NS, NAME, status("Paused", canary="1.1.0", desired=50, actual=40))
    assert series(registry, "modeldeploy_canary_weight_percent") == {
        (("kind", "desired"),): 50,
        (("kind", "actual"),): 40,
    }
    gauges.observe(NS, NAME, status("Healthy", stable="1.1.0"))
    assert series(registry, "modeldeploy_canary_weight_percent") == {
        (("kind", "desired"),): 0,
        (("kind", "actual"),): 0,
    }


def test_forget_removes_every_series_of_one_resource(registry: CollectorRegistry, gauges: ResourceMetrics) -> None:
    gauges.observe(NS, NAME, status("Paused", canary="1.1.0", desired=50, actual=40))
    gauges.observe(NS, "other", status("Healthy"))
    gauges.forget(NS, NAME)
    for metric in ("modeldeploy_resource_phase", "modeldeploy_resource_info", "modeldeploy_canary_weight_percent"):
        assert series(registry, metric) == {}, metric
        assert series(registry, metric, "other"), metric
    gauges.forget(NS, NAME)  # a second delete event is harmless
    gauges.forget(NS, "never-seen")


def test_the_controller_feeds_the_gauges_from_watch_events() -> None:
    controller = Controller(cast(Any, None), OperatorConfig())
    body = {
        "apiVersion": "modeldeploy.io/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": {"namespace": NS, "name": "watched", "resourceVersion": "1"},
        "status": status("Degraded", canary="2.0.0", desired=20, actual=10),
    }
    controller.observe_resource("MODIFIED", body)
    assert phases(REGISTRY, "watched")["Degraded"] == 1
    assert series(REGISTRY, "modeldeploy_canary_weight_percent", "watched")[(("kind", "desired"),)] == 20
    controller.observe_resource("DELETED", body)
    assert series(REGISTRY, "modeldeploy_resource_phase", "watched") == {}
    assert series(REGISTRY, "modeldeploy_resource_info", "watched") == {}
