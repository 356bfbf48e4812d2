"""reconcile() as a whole pass, against an in-memory API server (fake_cluster.py), a fake clock and fake metrics.

What the pure tests cannot see: which writes a pass makes. A pass with nothing to change writes nothing; a pass
writes status at most once; a resource being deleted is left to garbage collection; an API error ends the pass
without a status that claims what did not happen, and the next pass finishes the job.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import time
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from modeldeploy.analysis import measure as analysis
from modeldeploy.analysis.measure import QueryError, Sample
from modeldeploy.analysis.prometheus import PrometheusClient
from modeldeploy.config import OperatorConfig, parse_url_prefixes
from modeldeploy.controller.reconcile import QuerierFactory, reconcile
from modeldeploy.controller.store import Key, Store
from modeldeploy.kube.client import ApiError

from .fake_cluster import FakeCluster, RecordedEvent
from .prometheus_server import MisbehavingPrometheus, misbehaving_prometheus

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

    def __init__(self, config: OperatorConfig, spec: dict[str, Any] = SPEC, name: str = "fraud-detector") -> None:
        self.cluster = FakeCluster()
        self.store = Store()
        self.config = config
        self.key: Key = self.cluster.create_resource(spec, name=name)
        self.now = START
        self.cluster.clock = lambda: self.now
        self.queried: list[tuple[str, str]] = []
        self.answers: list[Sample] | QueryError = [Sample(labels={}, value=1.0)]
        self.queriers: QuerierFactory = self.querier
        """The metrics querier a pass is given: the fake below, or the real client."""
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
        reconcile(self.cluster, self.store, self.config, self.key, self.now, self.queriers)
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
    assert writes["apply Service"] == 1, "at rest the Service <name> alone"
    assert writes[STATUS_WRITE] == 1
    assert harness.status["observedGeneration"] == 1
    assert harness.status["phase"] == "Progressing"


def test_a_pass_with_nothing_to_change_writes_nothing(harness: Harness) -> None:
    harness.run()
    assert harness.status["stable"]["replicas"] == 2, "the first status says what the Deployment it created asks for"
    # The second pass sees that Deployment, which is what the status already says: nothing moves.
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
        # The spec's sklearn model has no sha256: said once for the new revision.
        "UnverifiedArtifact",
        "StepCompleted",
        "PhasePaused",
        "StepCompleted",
        "PhaseProgressing",
        "Promoted",
        "PhaseHealthy",
    ]
    steps = [event.message for event in harness.cluster.events if event.reason == "StepCompleted"]
    assert steps == ["Step 1/2 of 2.0.0 completed (setWeight 50)", "Step 2/2 of 2.0.0 completed (pause 30s)"]
    # Each transition is one Event of its own: nothing repeated, nothing patched.
    assert sum(writes["patch Event"] for writes in history) == 0


def test_events_are_posted_only_with_the_status_write_that_records_them(harness: Harness) -> None:
    harness.settle()
    posted = len(harness.cluster.events)
    harness.cluster.fail_next["patch_status"] = ApiError(500, "Internal Server Error", '{"message": "etcd"}')
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


def test_a_conflict_on_status_reads_the_resource_again_and_writes_in_the_same_pass(harness: Harness) -> None:
    harness.run()
    harness.cluster.make_ready(harness.store)
    harness.cluster.fail_next["patch_status"] = ApiError(409, "Conflict", '{"message": "the object has been modified"}')
    assert harness.run()[STATUS_WRITE] == 1  # the refused write fails before the fake counts it
    assert harness.cluster.reads["get ModelDeployment"] == 1
    assert harness.status["phase"] == "Healthy"
    assert harness.run() == Counter()


def test_status_writes_carry_the_resource_version_they_were_decided_from(harness: Harness) -> None:
    harness.run()
    harness.cluster.make_ready(harness.store)
    # Someone else writes the object; the watch has not shown it yet.
    harness.cluster.replace_status(harness.key, harness.status)
    harness.run()
    assert harness.cluster.conflicts == 1
    assert harness.status["phase"] == "Healthy"


def test_a_concurrent_status_write_is_never_lost(config: OperatorConfig) -> None:
    """Two writers from two Stores (a replica that still believes it leads, and the one that does): the one whose
    view is stale is refused, reads the resource again and plans from the other's write instead of overwriting it."""
    first = Harness(config)
    first.settle()
    second = Store()
    for body in first.cluster.of_kind("Deployment").values():
        second.put_child(copy.deepcopy(body))
    for body in first.cluster.of_kind("Service").values():
        second.put_child(copy.deepcopy(body))
    first.cluster.update_spec(first.key, with_version(SPEC, "2.0.0"))
    first.observe()
    second.put_parent(copy.deepcopy(first.cluster.resource(first.key)))
    # The first writer starts the canary and records it.
    first.run(timedelta(seconds=5))
    recorded = copy.deepcopy(first.status)
    assert recorded["canary"]["version"] == "2.0.0"
    # The second writer, ten seconds later, decides from the resource as it was before that write.
    reconcile(first.cluster, second, config, first.key, first.now + timedelta(seconds=10), first.queriers)
    assert first.cluster.conflicts == 1

    # What the first writer decided (the canary, when its step began, the history, the conditions' times) is still
    # there; only what the second writer observed since (the canary's Deployment, which its Store lacked) moved.
    def decided(status: dict[str, Any]) -> dict[str, Any]:
        canary = {key: value for key, value in status["canary"].items() if "eplicas" not in key}
        return {**{field: status.get(field) for field in ("stable", "history", "currentStepIndex")}, "canary": canary}

    assert decided(first.status) == decided(recorded)
    assert first.status["conditions"] == recorded["conditions"]


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
    assert writes == Counter({STATUS_WRITE: 1, "create Event": 1})
    assert harness.status["phase"] == "Degraded"
    degraded = next(c for c in harness.status["conditions"] if c["type"] == "Degraded")
    assert degraded["reason"] == "InvalidSpec"
    assert "spec.replicas" in degraded["message"]
    assert harness.cluster.events == [RecordedEvent("Warning", "InvalidSpec", degraded["message"])]
    assert harness.run() == Counter(), "said once: nothing is retried until the spec changes"


PROMETHEUS = "http://prometheus.monitoring:9090"
ANALYSIS = {
    "interval": "10s",
    "prometheus": {"address": PROMETHEUS},
    "metrics": [{"name": "success-rate", "builtin": "successRate", "min": 0.99}],
}


def allowing(config: OperatorConfig, *prefixes: str) -> OperatorConfig:
    """`config` whose MODELDEPLOY_PROMETHEUS_ALLOWED_URLS are `prefixes`."""
    return dataclasses.replace(config, prometheus_allowed_urls=parse_url_prefixes(prefixes, source="test"))


def analysed_spec(version: str) -> dict[str, Any]:
    spec = with_version(SPEC, version)
    spec["rollout"] = {"steps": [{"setWeight": 50}, {"pause": {}}], "analysis": ANALYSIS}
    return spec


def test_measurements_go_to_the_querier_of_the_spec_address(config: OperatorConfig) -> None:
    harness = Harness(allowing(config, PROMETHEUS), analysed_spec("1.0.0"))
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
    harness = Harness(allowing(config, PROMETHEUS), analysed_spec("1.0.0"))
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


# --- which Prometheus a spec may name ---------------------------------------------------------------------------

ELSEWHERE = "http://kube-state.kube-system:8080"


def analysed_at(version: str, address: str, **analysis_fields: Any) -> dict[str, Any]:
    spec = analysed_spec(version)
    spec["rollout"]["analysis"] = {**ANALYSIS, "prometheus": {"address": address}, **analysis_fields}
    return spec


def condition(status: dict[str, Any], kind: str) -> dict[str, Any]:
    return next(c for c in status["conditions"] if c["type"] == kind)


@pytest.mark.parametrize(
    ("own", "allowed", "address", "refused"),
    [
        (PROMETHEUS, (), PROMETHEUS, False),
        (PROMETHEUS, (), "http://Prometheus.Monitoring:9090/", False),
        (PROMETHEUS, (), "", False),
        (PROMETHEUS, (), ELSEWHERE, True),
        (PROMETHEUS, (), "http://prometheus.monitoring:9091", True),
        (PROMETHEUS, (), "http://prometheus.monitoring.evil:9090", True),
        ("", (), PROMETHEUS, True),
        ("", (), "", False),
        ("", ("http://prometheus.monitoring:9090/team-a",), "http://prometheus.monitoring:9090/team-a/", False),
        ("", ("http://prometheus.monitoring:9090/team-a",), "http://prometheus.monitoring:9090/team-ab", True),
        ("", ("http://127.0.0.1:*",), "http://127.0.0.1:41234", False),
    ],
    ids=[
        "own",
        "own-normalised",
        "none-named",
        "elsewhere",
        "other-port",
        "longer-host",
        "nothing-allowed",
        "nothing-named-nothing-allowed",
        "under-a-prefix",
        "past-a-path-boundary",
        "any-port",
    ],
)
def test_which_addresses_a_spec_may_name(
    config: OperatorConfig, own: str, allowed: tuple[str, ...], address: str, refused: bool
) -> None:
    harness = Harness(
        dataclasses.replace(allowing(config, *allowed), prometheus_url=own), analysed_at("1.0.0", address)
    )
    harness.settle()
    degraded = condition(harness.status, "Degraded")
    assert (degraded["reason"] == "InvalidSpec") == refused, degraded


def test_an_address_not_allowed_is_invalid_never_asked_and_its_canary_rolled_back_as_with_errors(
    config: OperatorConfig,
) -> None:
    """The rollout goes on as without the refusal, but its analysis cannot succeed: every measurement is an Error
    without a query, no step passes on analysis, and the canary is rolled back at consecutiveErrorLimit."""
    harness = Harness(dataclasses.replace(config, prometheus_url=PROMETHEUS), analysed_at("1.0.0", ELSEWHERE))
    harness.settle()
    status = harness.status
    assert status["phase"] == "Degraded"
    field = "spec.rollout.analysis.prometheus.address"
    assert status["message"] == (
        f"{field}: {ELSEWHERE} is not a Prometheus address this operator may ask (allowed: {PROMETHEUS})"
    )
    for kind, value in (("Degraded", "True"), ("Ready", "False")):
        assert (condition(status, kind)["status"], condition(status, kind)["reason"]) == (value, "InvalidSpec")
    assert status["stable"]["readyReplicas"] == 2, "the serving revision is served as ever"
    degraded_since = condition(status, "Degraded")["lastTransitionTime"]

    harness.cluster.update_spec(harness.key, analysed_at("2.0.0", ELSEWHERE, consecutiveErrorLimit=2))
    harness.observe()
    history = harness.settle(limit=30, advance=timedelta(seconds=11))
    assert all(writes[STATUS_WRITE] <= 1 for writes in history), history
    assert harness.queried == [], "not one query to an address the operator may not ask"
    status = harness.status
    assert status["stable"]["version"] == "1.0.0"
    assert status["aborted"]["reason"] == "AnalysisFailed"
    assert "3 query errors in a row" in status["aborted"]["message"]
    metric = status["analysis"]["metrics"][0]
    assert (metric["errors"], metric["successful"]) == (3, 0)
    assert all(m["message"].startswith(f"not measured: {field}: ") for m in metric["measurements"])
    assert condition(status, "Degraded")["reason"] == "InvalidSpec"
    assert condition(status, "Degraded")["lastTransitionTime"] == degraded_since, "no flapping"
    # Said when the errors began, not once per measurement: status.analysis counts them.
    assert [e.reason for e in harness.cluster.events].count("AnalysisMeasurementError") == 1


def test_an_address_made_allowed_ends_the_refusal(config: OperatorConfig) -> None:
    harness = Harness(dataclasses.replace(config, prometheus_url=PROMETHEUS), analysed_at("1.0.0", ELSEWHERE))
    harness.settle()
    assert condition(harness.status, "Degraded")["reason"] == "InvalidSpec"
    harness.cluster.update_spec(harness.key, analysed_at("1.0.0", PROMETHEUS))
    harness.observe()
    harness.settle()
    assert harness.status["phase"] == "Healthy"
    assert condition(harness.status, "Degraded")["status"] == "False"
    assert condition(harness.status, "Ready")["status"] == "True"
    assert [e.reason for e in harness.cluster.events][-1] == "PhaseHealthy"


# --- the size of status, whatever Prometheus answers ------------------------------------------------------------

STATUS_BOUND = 48 * 1024
"""Bytes of status (JSON) with the largest spec the API allows and the worst answers; see the test."""
HUGE = "X" * 100_000


def json_size(value: Any) -> int:
    return len(json.dumps(value, separators=(",", ":")).encode())


def strings(value: Any, path: str = "status") -> Iterator[tuple[str, str]]:
    if isinstance(value, dict):
        for key, item in value.items():
            yield from strings(item, f"{path}.{key}")
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from strings(item, f"{path}[{index}]")
    elif isinstance(value, str):
        yield path, value


class WorstAnswers:
    """Answers that put as much text as they can into messages: huge error texts, a huge label, infinities."""

    def __init__(self) -> None:
        self.calls = 0
        self.only_errors = False

    def __call__(self, address: str) -> WorstAnswers:
        return self

    def query(self, promql: str, timeout: float) -> list[Sample]:
        self.calls += 1
        if self.only_errors or self.calls % 4 == 0:
            raise QueryError(f"Prometheus answered 500 Internal Server Error: {HUGE}")
        if self.calls % 4 == 1:
            # Buckets of one output column with a huge name: quoted by predictionShift, too many series elsewhere.
            return [Sample({"output": HUGE, "le": le}, count) for le, count in (("0.5", 30.0), ("+Inf", 60.0))]
        if self.calls % 4 == 2:
            return [Sample({"huge": HUGE}, math.inf)]
        return [Sample({"huge": HUGE}, -math.inf)]


def largest_spec(version: str) -> dict[str, Any]:
    """Every length at its maximum where it can reach status: names, versions, conditions, 10 metrics."""
    success = "result >= 0.95" + " and result > 0" * 16
    failure = "result < 0.5" + " and result < 1" * 16
    assert max(len(success), len(failure)) <= 256, "the API's longest conditions"
    metrics: list[dict[str, Any]] = []
    for index in range(10):
        name = f"m{index}".ljust(63, "x")
        kind = index % 5
        if kind == 0:
            metrics.append({"name": name, "builtin": "successRate", "min": 0.99})
        elif kind == 1:
            metrics.append({"name": name, "builtin": "latencyP99", "max": 0.05, "relativeTo": "stable"})
        elif kind == 2:
            metrics.append({"name": name, "builtin": "predictionShift", "max": 0.1})
        else:
            metrics.append(
                {
                    "name": name,
                    "query": 'sum(x{v="{{ .canary.version }}"})' + " + 0" * 1000,
                    "successCondition": success,
                    "failureCondition": failure,
                }
            )
    return {
        "model": {"name": "m".ljust(63, "m"), "version": version, "uri": "s3://models/" + "k" * 2000},
        "replicas": 2,
        "rollout": {
            "steps": [{"setWeight": 50}, {"pause": {}}],
            "analysis": {
                "interval": "10s",
                "prometheus": {"address": PROMETHEUS + "/" + "p" * 400},
                "failureLimit": 100,
                "inconclusiveLimit": 100,
                "consecutiveErrorLimit": 100,
                "metrics": metrics,
            },
        },
    }


def test_status_stays_small_with_the_largest_spec_and_the_worst_answers(config: OperatorConfig) -> None:
    """10 metrics (the API's maximum), each keeping its last 10 measurements, every name and version at its longest,
    and answers of 100 KB error texts, 100 KB labels and infinities, through whole passes. Measurement messages
    are capped at 256 bytes, so the status stays under STATUS_BOUND; it is also measured once the errors roll the
    canary back, when the verdict is quoted in the conditions, the phase and status.aborted."""
    stable, canary = "1.".ljust(63, "0"), "2.".ljust(63, "0")
    harness = Harness(allowing(config, PROMETHEUS), largest_spec(stable), name="f".ljust(52, "f"))
    harness.settle()
    worst = WorstAnswers()
    harness.queriers = worst
    harness.cluster.update_spec(harness.key, largest_spec(canary))
    harness.observe()
    largest = 0
    for _ in range(15):
        harness.run(timedelta(seconds=11))
        harness.cluster.make_ready(harness.store)
        largest = max(largest, json_size(harness.status))
    metrics = harness.status["analysis"]["metrics"]
    assert [len(metric["measurements"]) for metric in metrics] == [10] * 10, "every metric keeps its maximum"
    phases = {m["phase"] for metric in metrics for m in metric["measurements"]}
    assert phases == {"Error", "Failed", "Inconclusive"}, "never Successful on these answers"
    measured = [m["message"] for metric in metrics for m in metric["measurements"]]
    assert max(len(message.encode()) for message in measured) == analysis.MAX_MESSAGE_BYTES
    assert largest <= STATUS_BOUND, largest

    worst.only_errors = True
    for _ in range(110):
        harness.run(timedelta(seconds=11))
        harness.cluster.make_ready(harness.store)
        largest = max(largest, json_size(harness.status))
        if harness.status.get("aborted"):
            break
    status = harness.status
    assert status["aborted"]["reason"] == "AnalysisFailed", status.get("message")
    assert "101 query errors in a row" in status["aborted"]["message"]
    assert largest <= STATUS_BOUND, largest
    too_long = {path: len(text.encode()) for path, text in strings(status) if len(text.encode()) > 512}
    assert not too_long, too_long
    assert all(len(event.message.encode()) <= 1024 for event in harness.cluster.events)
    print(f"\nlargest status: {largest} bytes (bound {STATUS_BOUND})")


# --- a real, misbehaving Prometheus behind whole passes -----------------------------------------------------------

ROUND_SECONDS = 1.0
SUCCESS_RATE = {"name": "success-rate", "builtin": "successRate", "min": 0.99}
LATENCY = {"name": "latency", "builtin": "latencyP99", "max": 0.25}


@pytest.fixture(scope="module")
def prometheus_server() -> Iterator[MisbehavingPrometheus]:
    with misbehaving_prometheus() as server:
        yield server


def real_prometheus_harness(config: OperatorConfig, address: str, *metrics: dict[str, Any]) -> Harness:
    """A harness whose passes ask `address` with the operator's own client, under a 1 s round budget."""
    local = dataclasses.replace(allowing(config, "http://127.0.0.1:*"), prometheus_timeout=ROUND_SECONDS)
    harness = Harness(local, analysed_at("1.0.0", address, metrics=list(metrics or [SUCCESS_RATE])))
    harness.queriers = PrometheusClient
    harness.settle()
    harness.cluster.update_spec(harness.key, analysed_at("2.0.0", address, metrics=list(metrics or [SUCCESS_RATE])))
    harness.observe()
    return harness


def first_measurements(harness: Harness) -> tuple[list[dict[str, Any]], float]:
    """Passes until every metric was measured once; the measurements, and the longest pass in seconds."""
    longest = 0.0
    for _ in range(8):
        started = time.monotonic()
        harness.run(timedelta(seconds=11))
        longest = max(longest, time.monotonic() - started)
        harness.cluster.make_ready(harness.store)
        metrics = (harness.status.get("analysis") or {}).get("metrics") or []
        if metrics and all(metric["measurements"] for metric in metrics):
            return [metric["measurements"][0] for metric in metrics], longest
    raise AssertionError(f"no measurement: {harness.status.get('message')}")


MISBEHAVIOURS: list[tuple[str, dict[str, Any], str]] = [
    ("value-0.995", SUCCESS_RATE, "Successful"),
    ("status-500", SUCCESS_RATE, "Error"),
    ("status-503-html", SUCCESS_RATE, "Error"),
    ("not-json", SUCCESS_RATE, "Error"),
    ("truncated-json", SUCCESS_RATE, "Error"),
    ("deep-json", SUCCESS_RATE, "Error"),
    ("data-string", SUCCESS_RATE, "Error"),
    ("matrix", SUCCESS_RATE, "Error"),
    ("value-not-a-number", SUCCESS_RATE, "Error"),
    ("labels-not-strings", SUCCESS_RATE, "Error"),
    ("too-many-series", SUCCESS_RATE, "Error"),
    ("huge-message", SUCCESS_RATE, "Error"),
    ("huge", SUCCESS_RATE, "Error"),
    ("huge-chunked", SUCCESS_RATE, "Error"),
    ("drip-body", SUCCESS_RATE, "Error"),
    ("drip-headers", SUCCESS_RATE, "Error"),
    ("silent", SUCCESS_RATE, "Error"),
    ("redirect", SUCCESS_RATE, "Error"),
    ("close", SUCCESS_RATE, "Error"),
    ("value-nan", SUCCESS_RATE, "Inconclusive"),
    ("value-inf", SUCCESS_RATE, "Inconclusive"),
    ("value-inf", LATENCY, "Failed"),
    ("value-minus-inf", SUCCESS_RATE, "Failed"),
    ("value-minus-inf", LATENCY, "Inconclusive"),
    ("scalar-inf", LATENCY, "Failed"),
]


@pytest.mark.parametrize(
    ("case", "metric", "phase"),
    MISBEHAVIOURS,
    ids=[f"{case}-{metric['name']}" for case, metric, _ in MISBEHAVIOURS],
)
def test_every_answer_of_a_misbehaving_prometheus_is_counted_as_its_phase(
    config: OperatorConfig, prometheus_server: MisbehavingPrometheus, case: str, metric: dict[str, Any], phase: str
) -> None:
    """No pass fails, no pass waits past the round's deadline (plus a second), the status stays bounded."""
    harness = real_prometheus_harness(config, prometheus_server.address(case), metric)
    [measurement], longest = first_measurements(harness)
    assert measurement["phase"] == phase, measurement
    assert longest < ROUND_SECONDS + 1, longest
    assert len(measurement["message"].encode()) <= analysis.MAX_MESSAGE_BYTES
    assert json_size(harness.status) <= STATUS_BOUND
    if phase == "Error":
        assert harness.status["analysis"]["metrics"][0]["consecutiveErrors"] == 1


def test_one_deadline_for_the_round_whatever_the_number_of_metrics(
    config: OperatorConfig, prometheus_server: MisbehavingPrometheus
) -> None:
    """Three metrics, one of them asking twice, from a server that drips: the pass ends by the round's budget."""
    relative = {"name": "relative", "builtin": "latencyP99", "max": 0.05, "relativeTo": "stable"}
    harness = real_prometheus_harness(config, prometheus_server.address("drip-body"), SUCCESS_RATE, LATENCY, relative)
    measurements, longest = first_measurements(harness)
    assert longest < ROUND_SECONDS + 1, longest
    assert [m["phase"] for m in measurements] == ["Error"] * 3
    assert "did not answer within the 1s deadline" in measurements[0]["message"]
    assert all("used up the 1s budget" in m["message"] for m in measurements[1:]), measurements


def test_errors_of_a_misbehaving_prometheus_roll_the_canary_back(
    config: OperatorConfig, prometheus_server: MisbehavingPrometheus
) -> None:
    """The answer of the issue: `{"status": "success", "data": "x"}` made every pass fail and the canary held its
    weight for ever. Now each is an Error, and consecutiveErrorLimit rolls the canary back."""
    local = dataclasses.replace(allowing(config, "http://127.0.0.1:*"), prometheus_timeout=ROUND_SECONDS)
    address = prometheus_server.address("data-string")
    harness = Harness(local, analysed_at("1.0.0", address, consecutiveErrorLimit=2))
    harness.queriers = PrometheusClient
    harness.settle()
    harness.cluster.update_spec(harness.key, analysed_at("2.0.0", address, consecutiveErrorLimit=2))
    harness.observe()
    harness.settle(limit=20, advance=timedelta(seconds=11))
    status = harness.status
    assert status["aborted"]["reason"] == "AnalysisFailed"
    assert "3 query errors in a row" in status["aborted"]["message"]
    assert "no data object" in status["aborted"]["message"]
    assert status["stable"]["version"] == "1.0.0"


def test_an_address_not_allowed_gets_no_request(
    config: OperatorConfig, prometheus_server: MisbehavingPrometheus
) -> None:
    """The same server under another name (localhost, not 127.0.0.1): refused, and asked nothing."""
    address = prometheus_server.address("value-0.995").replace("127.0.0.1", "localhost")
    asked = len(prometheus_server.asked)
    harness = real_prometheus_harness(config, address)
    [measurement], _ = first_measurements(harness)
    assert measurement["phase"] == "Error"
    assert measurement["message"].startswith("not measured: spec.rollout.analysis.prometheus.address: ")
    assert condition(harness.status, "Degraded")["reason"] == "InvalidSpec"
    assert prometheus_server.asked[asked:] == []


@pytest.mark.parametrize(
    ("status", "body"),
    [
        pytest.param(
            422,
            '{"message": "Deployment.apps \\"fraud-detector-x\\" is invalid: spec.template.spec.containers[0]'
            '.resources.requests: Invalid value: \\"2\\": must be less than or equal to cpu limit of 1"}',
            id="invalid",
        ),
        pytest.param(
            400,
            '{"message": "admission webhook \\"policy.example\\" denied the request: images must be signed"}',
            id="webhook-denial",
        ),
    ],
)
def test_a_child_the_api_server_refuses_is_degraded_with_its_reason(harness: Harness, status: int, body: str) -> None:
    harness.cluster.fail_next["apply Deployment"] = ApiError(status, "Refused", body)
    writes = harness.run()
    # The Service goes first (a rollout's Services exist before its pods): it was written, the Deployment refused.
    assert writes == Counter({"apply Service": 1, STATUS_WRITE: 1, "create Event": 1})
    degraded = next(c for c in harness.status["conditions"] if c["type"] == "Degraded")
    assert degraded["status"] == "True"
    assert degraded["reason"] == "ReconcileError"
    assert degraded["message"].startswith("the API server refused Deployment/fraud-detector-")
    assert f"({status}): " in degraded["message"]
    assert harness.status["phase"] == "Degraded"
    assert [event.reason for event in harness.cluster.events] == ["ReconcileError"]
    # Refused again on the next try: status stays as it is, and the retry is counted on the same Event.
    harness.cluster.fail_next["apply Deployment"] = ApiError(status, "Refused", body)
    assert harness.run(timedelta(minutes=5)) == Counter({"patch Event": 1})
    assert list(harness.cluster.event_counts.values()) == [2]
    # Accepted once the cause is gone (a webhook's policy changed, a quota raised): the rollout carries on.
    harness.run(timedelta(minutes=1))
    harness.cluster.make_ready(harness.store)
    harness.run()
    assert harness.status["phase"] == "Healthy"
    assert not any(c["type"] == "Degraded" and c["status"] == "True" for c in harness.status["conditions"])


def test_a_refused_child_is_looked_at_again_after_five_minutes(harness: Harness) -> None:
    harness.cluster.fail_next["apply"] = ApiError(422, "Unprocessable Entity", '{"message": "invalid"}')
    requeue = reconcile(harness.cluster, harness.store, harness.config, harness.key, harness.now, harness.querier)
    assert requeue == 300.0


def test_a_status_write_the_api_server_refuses_is_degraded_with_its_reason(harness: Harness) -> None:
    harness.cluster.fail_next["patch_status"] = ApiError(422, "Unprocessable Entity", '{"message": "status too big"}')
    requeue = reconcile(harness.cluster, harness.store, harness.config, harness.key, harness.now, harness.querier)
    assert requeue == 300.0
    degraded = next(c for c in harness.status["conditions"] if c["type"] == "Degraded")
    assert degraded["reason"] == "ReconcileError"
    assert degraded["message"] == "the API server refused the status write (422): status too big"
    assert [event.reason for event in harness.cluster.events] == ["ReconcileError"]
