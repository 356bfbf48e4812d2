"""Per-resource gauges: one phase set at a time, info label sets replaced on a version change, weights, and no
series left behind by a deleted resource. A private registry per test; no cluster. Then the stage histograms that
say where a reaction's time goes (hand-off, queue wait, thread hand-off, compute, API round trips)."""

from __future__ import annotations

import asyncio
import threading
from typing import Any, cast

import pytest
from prometheus_client import REGISTRY, CollectorRegistry

from modeldeploy.config import OperatorConfig
from modeldeploy.controller import queue as queue_module
from modeldeploy.controller.queue import Controller, WorkQueue
from modeldeploy.metrics import API_WAIT, PHASES, ResourceMetrics, observe_api_request

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


# --- where a reaction's time goes ------------------------------------------------------------------------------------


def sample(name: str, labels: dict[str, str] | None = None) -> float:
    return REGISTRY.get_sample_value(name, labels or {}) or 0.0


def test_a_watch_event_times_its_hand_off_to_the_queue() -> None:
    controller = Controller(cast(Any, None), OperatorConfig())
    before = sample("modeldeploy_event_handoff_seconds_count", {"kind": "resource"})
    body = {
        "apiVersion": "modeldeploy.io/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": {"namespace": NS, "name": "timed", "resourceVersion": "1"},
    }
    controller.observe_resource("ADDED", body)
    assert sample("modeldeploy_event_handoff_seconds_count", {"kind": "resource"}) == before + 1
    controller.observe_resource("DELETED", body)  # nothing handed to the queue: nothing timed
    assert sample("modeldeploy_event_handoff_seconds_count", {"kind": "resource"}) == before + 1


def test_a_request_round_trip_counts_toward_its_thread_only() -> None:
    before = sample("modeldeploy_api_request_duration_seconds_count", {"method": "PATCH"})
    waited = API_WAIT.seconds
    observe_api_request("PATCH", 0.004)
    assert sample("modeldeploy_api_request_duration_seconds_count", {"method": "PATCH"}) == before + 1
    assert API_WAIT.seconds == pytest.approx(waited + 0.004)
    seen_elsewhere: list[float] = []
    other = threading.Thread(target=lambda: seen_elsewhere.append(API_WAIT.seconds))
    other.start()
    other.join()
    assert seen_elsewhere == [0.0]


def test_a_pass_compute_time_leaves_out_its_api_round_trips(monkeypatch: pytest.MonkeyPatch) -> None:
    def slow_api_pass(*_: Any) -> float | None:
        observe_api_request("PATCH", 5.0)  # as if the pass had waited 5 s for the API server
        return None

    monkeypatch.setattr(queue_module, "reconcile", slow_api_pass)
    controller = Controller(cast(Any, None), OperatorConfig())
    compute_before = sample("modeldeploy_reconcile_compute_seconds_sum")
    handoffs_before = sample("modeldeploy_thread_handoff_seconds_count")
    assert asyncio.run(controller._reconcile((NS, "timed"))) is None
    assert sample("modeldeploy_thread_handoff_seconds_count") == handoffs_before + 1
    assert 0.0 <= sample("modeldeploy_reconcile_compute_seconds_sum") - compute_before < 1.0


def test_the_queue_times_the_wait_of_each_key_it_hands_out() -> None:
    async def scenario() -> None:
        handled = asyncio.Event()

        async def handle(_: Any) -> float | None:
            handled.set()
            return None

        queue = WorkQueue(handle, workers=1)
        queue.add((NS, "waiting"))
        await asyncio.sleep(0.02)
        queue.start()
        try:
            await asyncio.wait_for(handled.wait(), 2.0)
        finally:
            await queue.stop()

    count_before = sample("modeldeploy_queue_wait_seconds_count")
    sum_before = sample("modeldeploy_queue_wait_seconds_sum")
    asyncio.run(scenario())
    assert sample("modeldeploy_queue_wait_seconds_count") == count_before + 1
    assert sample("modeldeploy_queue_wait_seconds_sum") - sum_before >= 0.02
