"""reconcile() as a whole pass, against an in-memory API server (fake_cluster.py), a fake clock and fake metrics.

What the pure tests cannot see: which writes a pass makes. A pass with nothing to change writes nothing; a pass
writes status at most once; a resource being deleted is left to garbage collection; an API error ends the pass
without a status that claims what did not happen, and the next pass finishes the job.
"""

from __future__ import annotations

import copy
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from modeldeploy.analysis.measure import QueryError, Sample
from modeldeploy.config import OperatorConfig
from modeldeploy.controller.reconcile import reconcile
from modeldeploy.controller.store import Key, Store
from modeldeploy.kube.client import ApiError

from .fake_cluster import FakeCluster

START = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
STATUS_WRITE = "patch ModelDeployment/status"

SPEC: dict[str, Any] = {
    "model": {"version": "1.0.0", "uri": "s3://models/fraud/1.0.0/model.joblib"},
    "replicas": 2,
    "rollout": {"steps": [{"setWeight": 50}, {"pause": {"duration": "30s"}}]},
}


def with_version(spec: dict[str, Any], version: str) -> dict[str, Any]:
    changed = copy.deepcopy(spec)
    changed["model"]["version"] = version
    changed["model"]["uri"] = f"s3://models/fraud/{version}/model.joblib"
    return changed


class Harness:
    """One resource, its Store fed the way the watches feed it, and passes run at a clock the test moves."""

    def __init__(self, config: OperatorConfig, spec: dict[str, Any] = SPEC) -> None:
        self.cluster = FakeCluster()
        self.store = Store()
        self.config = config
        self.key: Key = self.cluster.create_resource(spec)
        self.now = START
        self.queried: list[tuple[str, str]] = []
        self.answers: list[Sample] | QueryError = [Sample(labels={}, value=1.0)]
        self.observe()

    def observe(self) -> None:
        """The watch event of the resource, as after any change to it."""
        self.store.put_parent(copy.deepcopy(self.cluster.resource(self.key)))

    def querier(self, address: str) -> Harness.Querier:
        return Harness.Querier(self, address)

    class Querier:
        def __init__(self, harness: Harness, address: str) -> None:
            self.harness, self.address = harness, address

        def query(self, promql: str, timeout: float) -> list[Sample]:
            self.harness.queried.append((self.address, promql))
            if isinstance(self.harness.answers, QueryError):
                raise self.harness.answers
            return self.harness.answers

    def run(self, advance: timedelta = timedelta(0)) -> Counter[str]:
        """One pass; the writes it made."""
        self.now += advance
        before = Counter(self.cluster.writes)
        reconcile(self.cluster, self.store, self.config, self.key, self.now, self.querier)
        return self.cluster.writes - before

    def settle(self, limit: int = 40, advance: timedelta = timedelta(seconds=31)) -> list[Counter[str]]:
        """Passes, with pods made ready and the clock moved between them, until one writes nothing."""
        history = []
        for _ in range(limit):
            writes = self.run(advance)
            history.append(writes)
            if not writes:
                return history
            self.cluster.make_ready(self.store)
        raise AssertionError(f"no quiet pass after {limit}: {history[-3:]}")

    @property
    def status(self) -> dict[str, Any]:
        return self.cluster.status(self.key)


@pytest.fixture
def harness(config: OperatorConfig) -> Harness:
    return Harness(config)


def test_the_first_pass_creates_the_children_and_writes_status_once(harness: Harness) -> None:
    writes = harness.run()
    assert writes["apply Deployment"] == 1
    assert writes["apply Service"] == 3
    assert writes[STATUS_WRITE] == 1
    assert harness.status["observedGeneration"] == 1
    assert harness.status["phase"] == "Progressing"


def test_a_pass_with_nothing_to_change_writes_nothing(harness: Harness) -> None:
    harness.run()
    # The second pass sees the Deployment the first one created (its replicas go into status); then nothing moves.
    assert harness.run() == Counter({STATUS_WRITE: 1})
    assert harness.run() == Counter()
    harness.cluster.make_ready(harness.store)
    assert harness.run()[STATUS_WRITE] == 1
    assert harness.status["phase"] == "Healthy"
    assert harness.run() == Counter()
    assert harness.run(timedelta(hours=1)) == Counter()


def test_a_whole_canary_writes_status_at_most_once_per_pass(harness: Harness) -> None:
    harness.settle()
    harness.cluster.update_spec(harness.key, with_version(SPEC, "2.0.0"))
    harness.observe()
    history = harness.settle()
    assert all(writes[STATUS_WRITE] <= 1 for writes in history), history
    assert sum(writes[STATUS_WRITE] for writes in history) >= 3  # canary started, weight reached, promoted
    status = harness.status
    assert status["phase"] == "Healthy"
    assert status["stable"]["version"] == "2.0.0"
    assert "canary" not in status
    assert status["observedGeneration"] == 2
    reasons = [event.reason for event in harness.cluster.events]
    assert reasons[reasons.index("RolloutStarted") :] == [
        "RolloutStarted",
        "PhaseProgressing",
        "PhasePaused",
        "PhaseProgressing",
        "Promoted",
        "PhaseHealthy",
    ]


def test_events_are_posted_only_with_the_status_write_that_records_them(harness: Harness) -> None:
    harness.settle()
    posted = len(harness.cluster.events)
    harness.cluster.fail_next["patch_status"] = ApiError(409, "Conflict", '{"message": "conflict"}')
    harness.cluster.update_spec(harness.key, with_version(SPEC, "2.0.0"))
    harness.observe()
    with pytest.raises(ApiError):
        harness.run()
    assert len(harness.cluster.events) == posted
    harness.run()
    assert len(harness.cluster.events) > posted


@pytest.mark.parametrize("gone", ["deleted", "deleting"])
def test_a_resource_gone_or_going_gets_no_writes(harness: Harness, gone: str) -> None:
    harness.settle()
    if gone == "deleted":
        harness.store.remove_parent(harness.key)
    else:
        body = copy.deepcopy(harness.cluster.resource(harness.key))
        body["metadata"]["deletionTimestamp"] = "2026-12-01T12:05:00Z"
        body["metadata"]["resourceVersion"] = "999999"
        harness.store.put_parent(body)
    harness.cluster.update_spec(harness.key, with_version(SPEC, "2.0.0"))
    assert harness.run(timedelta(minutes=1)) == Counter()


@pytest.mark.parametrize("failing", ["apply", "patch_status"])
def test_an_api_error_ends_the_pass_and_the_next_pass_finishes(harness: Harness, failing: str) -> None:
    harness.cluster.fail_next[failing] = ApiError(500, "Internal Server Error", '{"message": "etcd timeout"}')
    with pytest.raises(ApiError):
        harness.run()
    if failing == "apply":
        assert "status" not in harness.cluster.resource(harness.key), "no status may claim children not written"
    writes = harness.run()
    assert writes[STATUS_WRITE] == 1
    harness.cluster.make_ready(harness.store)
    harness.run()
    assert harness.status["phase"] == "Healthy"


def test_a_conflict_on_status_leaves_the_store_as_it_was(harness: Harness) -> None:
    harness.run()
    before = harness.store.snapshot(harness.key)[0]
    harness.cluster.make_ready(harness.store)
    harness.cluster.fail_next["patch_status"] = ApiError(409, "Conflict", '{"message": "the object has been modified"}')
    with pytest.raises(ApiError):
        harness.run()
    assert harness.store.snapshot(harness.key)[0] == before
    assert harness.run()[STATUS_WRITE] == 1


def test_deleting_a_deployment_that_is_already_gone_is_not_an_error(config: OperatorConfig) -> None:
    harness = Harness(config, {**SPEC, "rollout": {"strategy": "Immediate"}})
    harness.settle()
    for version in ("2.0.0", "3.0.0", "4.0.0", "5.0.0"):
        harness.cluster.update_spec(harness.key, with_version(SPEC, version) | {"rollout": {"strategy": "Immediate"}})
        harness.observe()
        history = harness.settle()
    assert sum(writes["delete Deployment"] for writes in history) >= 1
    assert len(harness.cluster.of_kind("Deployment")) <= config.retained_revisions
    assert harness.status["stable"]["version"] == "5.0.0"


def test_an_invalid_stored_spec_is_degraded_with_one_write_and_no_children(config: OperatorConfig) -> None:
    harness = Harness(config, {**SPEC, "replicas": -3})
    writes = harness.run()
    assert writes == Counter({STATUS_WRITE: 1})
    assert harness.status["phase"] == "Degraded"
    degraded = next(c for c in harness.status["conditions"] if c["type"] == "Degraded")
    assert degraded["reason"] == "InvalidSpec"
    assert "spec.replicas" in degraded["message"]
    assert harness.run() == Counter()


ANALYSIS = {
    "interval": "10s",
    "prometheus": {"address": "http://prometheus.monitoring:9090"},
    "metrics": [{"name": "success-rate", "builtin": "successRate", "min": 0.99}],
}


def analysed_spec(version: str) -> dict[str, Any]:
    spec = with_version(SPEC, version)
    spec["rollout"] = {"steps": [{"setWeight": 50}, {"pause": {}}], "analysis": ANALYSIS}
    return spec


def test_measurements_go_to_the_querier_of_the_spec_address(config: OperatorConfig) -> None:
    harness = Harness(config, analysed_spec("1.0.0"))
    harness.settle()
    harness.cluster.update_spec(harness.key, analysed_spec("2.0.0"))
    harness.observe()
    # Measuring goes on at the open pause, a status write per measurement: run a few passes rather than settle.
    for _ in range(4):
        assert harness.run(timedelta(seconds=11))[STATUS_WRITE] <= 1
        harness.cluster.make_ready(harness.store)
    assert harness.queried, "a measurement was due while the canary held traffic"
    assert {address for address, _ in harness.queried} == {"http://prometheus.monitoring:9090"}
    metric = harness.status["analysis"]["metrics"][0]
    assert metric["measurements"][0]["phase"] == "Successful"


def test_query_errors_past_the_limit_roll_back(config: OperatorConfig) -> None:
    harness = Harness(config, analysed_spec("1.0.0"))
    harness.settle()
    harness.answers = QueryError("connection refused")
    harness.cluster.update_spec(harness.key, analysed_spec("2.0.0"))
    harness.observe()
    history = harness.settle(limit=20, advance=timedelta(seconds=11))
    assert all(writes[STATUS_WRITE] <= 1 for writes in history)
    status = harness.status
    assert status["phase"] == "Degraded"
    assert status["stable"]["version"] == "1.0.0"
    degraded = next(c for c in status["conditions"] if c["type"] == "Degraded")
    assert degraded["reason"] == "AnalysisFailed"
    assert any(event.reason == "AnalysisMeasurementError" for event in harness.cluster.events)
