"""Canary metric analysis end to end: real model servers, real traffic, the real Prometheus, the real operator.

Every test serves version 1.0.0 of a small `custom` model (modeldeploy_testkit.custom_models) from pods the node
agent runs as processes, then rolls out 2.0.0 with `spec.rollout.analysis` pointing at the Prometheus of
testkit/scripts/prometheus-up.sh (scraping every 2 s). The load generator's sender sends requests throughout, in
rounds of one second, each to the ready endpoints of its moment (modeldeploy_testkit.traffic.SteadyTraffic), so
the canary takes its share as soon as its pod is Ready. What the operator measured is read from status, as a watch
delivered every write of it.

The node agent needs root and Prometheus must be built; when either cannot start, the fixtures fail and say why.
"""

from __future__ import annotations

import contextlib
import itertools
import re
import socket
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from modeldeploy.api.times import parse_time
from modeldeploy_testkit.agent_pods import (
    REVISION_LABEL,
    VERSION_LABEL,
    Artifact,
    healthy,
    model_deployment,
    pods_of,
)
from modeldeploy_testkit.cluster import Cluster
from modeldeploy_testkit.custom_models import (
    ECHO_FIRST_FEATURE,
    FAILS_EVERY_FIFTH_CALL,
    PAYLOAD,
    SHIFTED_OUTPUTS,
    write_custom_model,
)
from modeldeploy_testkit.operator_process import OperatorProcess
from modeldeploy_testkit.prometheus import Prometheus
from modeldeploy_testkit.resources import apply, deployments, get, mdep, patch_spec, status_of, wait_for_status
from modeldeploy_testkit.traffic import SteadyTraffic, loadgen
from modeldeploy_testkit.waiting import wait_until
from modeldeploy_testkit.watches import StatusHistory

pytestmark = [pytest.mark.nodeagent, pytest.mark.prometheus, pytest.mark.usefixtures("operator", "node_agent")]

NAME = "scored"
REPLICAS = 2
STABLE, CANARY = "1.0.0", "2.0.0"
INTERVAL_SECONDS = 3
# The runtime's prediction histogram has no series until the first prediction (its request counters exist at zero
# from the start), and increase() needs two scrapes of a series. A new pod reaches Prometheus' scrape pools at most
# every 5 s (its discovery manager sends target updates no more often), and the canary takes its first request up to
# a second after it is Ready: the canary's data can be some 8 s late. Without this delay the first measurement, one
# 3 s interval after Ready, is sometimes Inconclusive for that reason alone, and these tests allow no Inconclusive.
INITIAL_DELAY = "8s"
WINDOW = "10s"
READY_TIMEOUT = 120.0
CUSTOM_QUERY = (
    'sum(rate(modeldeploy_model_requests_total{namespace="{{ .namespace }}", version="{{ .canary.version }}"}'
    "[{{ .window }}]))"
)
BUILTIN_METRICS: list[dict[str, Any]] = [
    {"name": "success-rate", "builtin": "successRate", "min": 0.99},
    {"name": "latency", "builtin": "latencyP99", "max": 0.5},
    {"name": "agreement", "builtin": "predictionShift", "max": 0.2},
]
ALL_METRICS: list[dict[str, Any]] = [
    *BUILTIN_METRICS,
    # The canary's p99 minus the stable's, both from live traffic in the same window.
    {"name": "latency-vs-stable", "builtin": "latencyP99", "max": 0.25, "relativeTo": "stable"},
    {"name": "custom", "query": CUSTOM_QUERY, "successCondition": "result > 0"},
]
METRIC_NAMES = [metric["name"] for metric in ALL_METRICS]


# --- the resource ---------------------------------------------------------------------------------------------------


def rollout_with_analysis(
    prometheus_url: str,
    steps: list[dict[str, Any]],
    metrics: list[dict[str, Any]] = ALL_METRICS,
    interval_seconds: int = INTERVAL_SECONDS,
    initial_delay: str = INITIAL_DELAY,
    **limits: int,
) -> dict[str, Any]:
    return {
        "strategy": "Canary",
        "steps": steps,
        "progressDeadlineSeconds": 180,
        "analysis": {
            "interval": f"{interval_seconds}s",
            "initialDelay": initial_delay,
            "window": WINDOW,
            "failureLimit": 0,
            "inconclusiveLimit": 0,
            "consecutiveErrorLimit": 4,
            **limits,
            "prometheus": {"address": prometheus_url},
            "metrics": metrics,
        },
    }


@dataclass(frozen=True)
class Models:
    echo: Artifact
    flaky: Artifact
    shifted: Artifact


@pytest.fixture
def models(tmp_path: Path) -> Models:
    return Models(
        echo=write_custom_model(tmp_path, "echo", ECHO_FIRST_FEATURE),
        flaky=write_custom_model(tmp_path, "flaky", FAILS_EVERY_FIFTH_CALL),
        shifted=write_custom_model(tmp_path, "shifted", SHIFTED_OUTPUTS),
    )


def serve_stable(cluster: Cluster, namespace: str, artifact: Artifact, rollout: dict[str, Any]) -> dict[str, Any]:
    """Version 1.0.0 on REPLICAS ready pods; the status once Healthy."""
    apply(cluster, namespace, model_deployment(NAME, artifact, STABLE, REPLICAS, rollout))
    return wait_for_status(
        cluster, namespace, NAME, healthy(STABLE, REPLICAS), timeout=READY_TIMEOUT, what=f"{STABLE} Healthy"
    )


def wait_until_traffic_is_measured(prometheus: Prometheus, namespace: str) -> None:
    """Before a rollout under traffic: Prometheus holds the stable's predictions, so a measurement that finds no data
    can only be the canary's start-up, never a stable whose series had yet to be scraped twice."""
    query = (
        f'sum(increase(modeldeploy_model_prediction_value_count{{namespace="{namespace}", version="{STABLE}"}}'
        f"[{WINDOW}]))"
    )
    wait_until(
        lambda: any(float(sample["value"][1]) > 0 for sample in prometheus.query(query)),
        timeout=60,
        interval=0.5,
        what=f"Prometheus to see the stable's predictions ({query})",
    )


def roll_out(cluster: Cluster, namespace: str, artifact: Artifact) -> None:
    patch_spec(cluster, namespace, NAME, {"model": {"version": CANARY, "uri": artifact.uri, "sha256": artifact.sha256}})


def wait_for_rollout(
    cluster: Cluster,
    namespace: str,
    check: Callable[[dict[str, Any]], bool],
    *,
    what: str,
    timeout: float,
    unexpected: Callable[[dict[str, Any]], str | None] = lambda _: None,
) -> dict[str, Any]:
    """Poll the status until `check` holds; fail at once, with the status, when `unexpected` names a problem."""

    def current() -> dict[str, Any] | None:
        status = status_of(cluster, namespace, NAME)
        problem = unexpected(status)
        if problem:
            raise AssertionError(f"{problem} while waiting for {what}:\n{describe(status)}")
        return status if check(status) else None

    return wait_until(current, timeout=timeout, interval=0.2, what=what)


def rolled_back(status: dict[str, Any]) -> str | None:
    return (
        f"rolled back ({(status.get('aborted') or {}).get('message')})" if status.get("phase") == "Degraded" else None
    )


def not_progressing(status: dict[str, Any]) -> str | None:
    pause = (status.get("pause") or {}).get("reason")
    return rolled_back(status) or (f"paused ({pause})" if pause == "AnalysisInconclusive" else None)


def promoted(status: dict[str, Any]) -> bool:
    return (
        status.get("phase") == "Healthy"
        and (status.get("stable") or {}).get("version") == CANARY
        and (status.get("stable") or {}).get("readyReplicas") == REPLICAS
    )


def degraded(status: dict[str, Any]) -> bool:
    return status.get("phase") == "Degraded"


def describe(status: dict[str, Any]) -> str:
    """A status in a few lines: phase, step, pause, analysis counts and latest measurements."""
    analysis = status.get("analysis") or {}
    lines = [
        f"phase {status.get('phase')}: {status.get('message')}",
        f"step {status.get('currentStepIndex')} since {status.get('stepStartedAt')}, pause {status.get('pause')}",
        f"analysis {analysis.get('phase')}: {analysis.get('message')}",
    ]
    for metric in analysis.get("metrics") or []:
        latest = (metric.get("measurements") or [{}])[0]
        lines.append(
            f"  {metric['name']}: {metric.get('successful')} ok, {metric.get('failed')} failed, "
            f"{metric.get('inconclusive')} inconclusive, {metric.get('errors')} errors; latest "
            f"{latest.get('phase')} {latest.get('value')} ({latest.get('message')})"
        )
    return "\n".join(lines)


# --- reading what was measured --------------------------------------------------------------------------------------


def metric_of(status: dict[str, Any], name: str) -> dict[str, Any]:
    metrics = {m["name"]: m for m in (status.get("analysis") or {}).get("metrics") or []}
    assert name in metrics, f"no metric {name} in status.analysis: {describe(status)}"
    metric: dict[str, Any] = metrics[name]
    return metric


def counts(status: dict[str, Any]) -> dict[str, dict[str, int]]:
    """Per metric: successful, failed, inconclusive, errors."""
    return {
        m["name"]: {key: int(m.get(key) or 0) for key in ("successful", "failed", "inconclusive", "errors")}
        for m in (status.get("analysis") or {}).get("metrics") or []
    }


def every_metric(status: dict[str, Any], at_least: int, names: list[str] = METRIC_NAMES) -> bool:
    """Every metric has at least `at_least` Successful measurements."""
    found = counts(status)
    return all(found.get(name, {}).get("successful", 0) >= at_least for name in names)


def measurements_seen(history: StatusHistory) -> dict[str, list[dict[str, Any]]]:
    """Every measurement any status write held, per metric, oldest first (status keeps only the newest 10)."""
    by_metric: dict[str, dict[str, dict[str, Any]]] = {}
    for snapshot in history.statuses():
        for metric in (snapshot.status.get("analysis") or {}).get("metrics") or []:
            for measurement in metric.get("measurements") or []:
                by_metric.setdefault(metric["name"], {})[measurement["time"]] = measurement
    return {name: sorted(found.values(), key=lambda m: parse_time(m["time"])) for name, found in by_metric.items()}


def events_of(cluster: Cluster, namespace: str) -> list[dict[str, Any]]:
    """The ModelDeployment's Events, oldest first."""
    items = get(cluster, "events", "-n", namespace)["items"]
    mine = [
        e
        for e in items
        if e["involvedObject"].get("kind") == "ModelDeployment" and e["involvedObject"].get("name") == NAME
    ]
    return sorted(mine, key=lambda e: e.get("firstTimestamp") or e.get("eventTime") or "")


def reasons(events: list[dict[str, Any]], kind: str = "") -> list[str]:
    return [e["reason"] for e in events if not kind or e["type"] == kind]


def assert_stable_serves_everything(cluster: Cluster, namespace: str, canary_revision: str) -> float:
    """The canary's Deployment at zero with no ready pod, the stable's back at full strength, and every request sent
    through the Service answered by the stable version. Returns the seconds the stable took to be back at full
    strength from here (the canary is dropped at once; the pod the stable gave up for it has to start again)."""
    by_name = deployments(cluster, namespace)
    assert by_name[f"{NAME}-{canary_revision}"]["spec"]["replicas"] == 0
    status = status_of(cluster, namespace, NAME)
    assert not status.get("canary")
    assert by_name[f"{NAME}-{status['stable']['revision']}"]["spec"]["replicas"] == REPLICAS
    asked = time.monotonic()
    wait_for_status(
        cluster,
        namespace,
        NAME,
        lambda s: (s.get("stable") or {}).get("readyReplicas") == REPLICAS,
        timeout=READY_TIMEOUT,
        what=f"the stable at {REPLICAS} ready replicas",
    )
    back_in = time.monotonic() - asked
    # The Service's ready endpoints follow the pods: wait until the canary's pods are gone from behind it.
    wait_until(
        lambda: (
            not pods_of(cluster, namespace, f"{REVISION_LABEL}={canary_revision}")
            and len(ready_endpoint_versions(cluster, namespace)) == REPLICAS
        ),
        timeout=60,
        interval=0.5,
        what="the canary's pods gone and the stable's behind the Service",
    )
    assert not deployments(cluster, namespace)[f"{NAME}-{canary_revision}"]["status"].get("readyReplicas")
    assert ready_endpoint_versions(cluster, namespace) == [STABLE] * REPLICAS
    report = loadgen(cluster, namespace, NAME, "--requests", "200", "--rate", "100")
    assert report["errors"] == 0, report["error_examples"]
    assert report["by_version"] == {STABLE: 200}
    return back_in


def ready_endpoint_versions(cluster: Cluster, namespace: str) -> list[str]:
    """The version label of each pod behind the Service's ready endpoints."""
    slices = get(cluster, "endpointslices", "-n", namespace, "-l", f"kubernetes.io/service-name={NAME}")["items"]
    pods = {p["metadata"]["name"]: p for p in pods_of(cluster, namespace)}
    versions = []
    for endpoint in (e for s in slices for e in s.get("endpoints") or []):
        if (endpoint.get("conditions") or {}).get("ready"):
            pod = pods.get((endpoint.get("targetRef") or {}).get("name", ""))
            versions.append(pod["metadata"]["labels"][VERSION_LABEL] if pod else "?")
    return versions


def answered_with_errors(traffic: SteadyTraffic, since: float) -> list[str]:
    """Requests a model server answered with an error. Not the connections refused by a pod that was stopping:
    one round of traffic goes to the endpoints ready at its start, and a pod scaled away during the round refuses
    the rest of it, which says nothing about the model."""
    return [example for example in traffic.error_examples(since) if ": HTTP " in example]


def assert_rolled_back_by_analysis(
    cluster: Cluster, namespace: str, status: dict[str, Any], canary_revision: str
) -> None:
    """What the contract says a rollback by analysis leaves: status, condition, history and a Warning event."""
    assert status["phase"] == "Degraded", describe(status)
    assert status["aborted"]["reason"] == "AnalysisFailed"
    assert status["aborted"]["revision"] == canary_revision
    conditions = {c["type"]: c for c in status["conditions"]}
    assert conditions["Degraded"]["status"] == "True"
    assert conditions["Degraded"]["reason"] == "AnalysisFailed"
    assert status["history"][0]["outcome"] == "RolledBack"
    assert status["history"][0]["reason"] == "AnalysisFailed"
    assert status["history"][0]["revision"] == canary_revision
    assert status["stable"]["version"] == STABLE
    failed = [e for e in events_of(cluster, namespace) if e["reason"] == "AnalysisFailed"]
    assert failed, reasons(events_of(cluster, namespace))
    assert failed[-1]["type"] == "Warning"


def canary_revision_of(cluster: Cluster, namespace: str) -> str:
    status = wait_for_rollout(
        cluster, namespace, lambda s: (s.get("canary") or {}).get("version") == CANARY, what="the canary", timeout=30
    )
    return str(status["canary"]["revision"])


# --- a TCP relay to Prometheus --------------------------------------------------------------------------------------


class TcpForwarder:
    """Relays connections from a free port on 127.0.0.1 to the real Prometheus, until stopped.

    Stopping it closes the port and cuts the connections it relays: for a client of the forwarder, Prometheus is
    gone, while the shared Prometheus itself keeps running for everybody else.
    """

    def __init__(self, target_url: str) -> None:
        parts = urllib.parse.urlsplit(target_url)
        self.target = (parts.hostname or "127.0.0.1", parts.port or 80)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(0.2)
        self.port = int(self.listener.getsockname()[1])
        self.relayed = 0
        self.open: list[socket.socket] = []
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._accept, name="prometheus forwarder", daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> TcpForwarder:
        self.thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()

    def stop(self) -> None:
        self.stopping.set()
        self.thread.join(timeout=5)
        self.listener.close()
        with self.lock:
            for connection in self.open:
                with contextlib.suppress(OSError):
                    connection.shutdown(socket.SHUT_RDWR)
                connection.close()
            self.open.clear()

    def _accept(self) -> None:
        while not self.stopping.is_set():
            try:
                client, _ = self.listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            client.settimeout(None)
            upstream.settimeout(None)
            with self.lock:
                self.open += [client, upstream]
                self.relayed += 1
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(source, sink), daemon=True).start()

    @staticmethod
    def _pump(source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            with contextlib.suppress(OSError):
                sink.shutdown(socket.SHUT_WR)


# --- the tests ------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class StepSpan:
    index: int
    started: datetime
    """stepStartedAt as the operator wrote it; for a step no write showed, when the previous step was left."""
    left: datetime
    """When the operator moved past the step: the time of the measurement that decided it, when the write that
    shows the move carries a new one; else when the watch delivered that write (an upper bound)."""
    seen: bool
    """Some write of the status showed the rollout at this step (False: entered and left within one pass)."""


def step_spans(history: StatusHistory, steps: int) -> list[StepSpan]:
    """Start and end of every step of the rollout, from the writes of its status."""
    snapshots = [s for s in history.statuses() if s.status.get("canary") or promoted(s.status)]
    spans: list[StepSpan] = []
    for index in range(steps):
        position = next(
            (
                n
                for n, s in enumerate(snapshots)
                if promoted(s.status) or (s.status.get("currentStepIndex") or 0) > index
            ),
            None,
        )
        assert position is not None, f"step {index} never ended"
        assert position > 0, "the watch began after the rollout did"
        leaving, before = snapshots[position], snapshots[position - 1]
        measured = (leaving.status.get("analysis") or {}).get("lastMeasuredAt")
        if measured and measured != (before.status.get("analysis") or {}).get("lastMeasuredAt"):
            left = parse_time(measured)
        else:
            left = datetime.fromtimestamp(leaving.at).astimezone()
        starting = next((s for s in snapshots if s.status.get("currentStepIndex") == index), None)
        if starting is not None:
            spans.append(StepSpan(index, parse_time(starting.status["stepStartedAt"]), left, seen=True))
        else:
            assert spans, "the first step was never seen in status"
            spans.append(StepSpan(index, spans[-1].left, left, seen=False))
    return spans


def test_healthy_version_is_promoted_step_by_step_on_successful_measurements(
    cluster: Cluster, namespace: str, models: Models, prometheus: Prometheus
) -> None:
    """Pauses of 1 s with measurements every 3 s: a pause ends on time only by skipping the analysis, so each one
    must be held until a measurement of its own comes. Two in a row also cover a pause that starts when the previous
    one was due to end (not when it was left)."""
    steps: list[dict[str, Any]] = [{"setWeight": 50}, {"pause": {"duration": "1s"}}, {"pause": {"duration": "1s"}}]
    serve_stable(cluster, namespace, models.echo, rollout_with_analysis(prometheus.url, steps))
    api = cluster.api()
    with (
        SteadyTraffic(cluster, namespace, NAME, payload=PAYLOAD) as traffic,
        StatusHistory(api, namespace, NAME) as history,
    ):
        wait_until_traffic_is_measured(prometheus, namespace)
        rollout_started = time.time()
        roll_out(cluster, namespace, models.echo)  # the same model file: a new version that behaves the same
        final = wait_for_rollout(
            cluster, namespace, promoted, what=f"{CANARY} promoted", timeout=180, unexpected=not_progressing
        )
    assert traffic.answered(rollout_started).keys() == {STABLE, CANARY}, traffic.summary()
    assert not answered_with_errors(traffic, rollout_started), traffic.summary()

    analysis = final["analysis"]
    assert analysis["phase"] == "Successful", describe(final)
    assert analysis["version"] == CANARY
    assert final["history"][0]["outcome"] == "Promoted"
    assert final["history"][0]["version"] == CANARY
    assert analysis["revision"] == final["history"][0]["revision"] == final["stable"]["revision"]

    seen = measurements_seen(history)
    assert set(seen) == set(METRIC_NAMES)
    for name in METRIC_NAMES:
        metric = metric_of(final, name)
        assert metric["failed"] == metric["inconclusive"] == metric["errors"] == metric["consecutiveErrors"] == 0
        assert metric["successful"] == len(seen[name]), f"{name}: the count and the measurements disagree"
        assert metric["successful"] >= len(steps), f"{name}: fewer Successful measurements than steps"
        assert [m["phase"] for m in seen[name]] == ["Successful"] * len(seen[name]), seen[name]
        assert metric["measurements"] == list(reversed(seen[name]))[:10], "status keeps the newest 10, newest first"
        # Prometheus's view agrees with what was sent: some traffic, every request a success, fast, same outputs.
        values = {m["value"] for m in seen[name]}
        if name == "success-rate":
            assert values == {1.0}
        elif name == "latency":
            assert all(0 < v <= 0.5 for v in values), values
        elif name == "agreement":
            assert all(0 <= v <= 0.2 for v in values), values
        elif name == "latency-vs-stable":
            assert all(-0.25 <= v <= 0.25 for v in values), values
            assert all("minus stable's" in m["message"] for m in seen[name]), seen[name]
        else:
            assert all(v > 0 for v in values), values

    # Measured every interval while the canary took traffic: never early, none skipped.
    times = [parse_time(m["time"]) for m in seen["success-rate"]]
    for name in METRIC_NAMES:
        assert [parse_time(m["time"]) for m in seen[name]] == times, "every metric is measured in the same rounds"
    gaps = [(later - earlier).total_seconds() for earlier, later in itertools.pairwise(times)]
    assert all(INTERVAL_SECONDS <= gap < 2 * INTERVAL_SECONDS for gap in gaps), gaps

    # No step ended before every metric had a Successful measurement of its own, taken during that step.
    started = parse_time(analysis["startedAt"])
    spans = step_spans(history, len(steps))
    report = []
    previous_left: datetime | None = None
    for span in spans:
        earliest = span.started if previous_left is None else max(span.started, previous_left)
        for name in METRIC_NAMES:
            own = [
                m
                for m in seen[name]
                if m["phase"] == "Successful"
                and earliest <= parse_time(m["time"]) <= span.left
                # The measurement that ended the previous step belongs to that step, not to this one.
                and (previous_left is None or parse_time(m["time"]) > previous_left)
            ]
            assert own, (
                f"step {span.index} ({steps[span.index]}) "
                + (
                    f"ran {span.started.time()} - {span.left.time()}"
                    if span.seen
                    else f"was entered and left in one pass at {span.left.time()}, shown by no write of the status,"
                )
                + f" without a Successful {name} measurement of its own (the previous step was left at "
                f"{previous_left.time() if previous_left else '-'}); steps: "
                f"{[(s.index, str(s.started.time()), str(s.left.time())) for s in spans]}; {name} measured at "
                f"{[(m['time'][11:23], m['phase']) for m in seen[name]]}"
            )
        report.append(f"step {span.index}: {span.started.time()} -> {span.left.time()}")
        previous_left = span.left
    first_measurement = min(parse_time(m["time"]) for m in seen["success-rate"])
    assert first_measurement >= started + timedelta(seconds=INTERVAL_SECONDS + int(INITIAL_DELAY.rstrip("s")))
    assert spans[0].left >= first_measurement, "the first step ended before anything was measured"
    promoted_at = parse_time(final["history"][0]["time"])
    assert promoted_at >= spans[-1].left
    events = events_of(cluster, namespace)
    promoted_event = next(e for e in events if e["reason"] == "Promoted")
    # Events carry whole seconds.
    assert parse_time(promoted_event["firstTimestamp"]) >= first_measurement.replace(microsecond=0)
    assert not {"AnalysisMeasurementFailed", "AnalysisMeasurementError", "AnalysisInconclusive"} & set(reasons(events))
    print(
        f"\npromoted after {len(seen['success-rate'])} measurements of each metric; analysis started "
        f"{started.time()}, " + "; ".join(report) + f"; promoted {promoted_at.time()}\n{traffic.summary()}"
    )


def test_version_failing_a_fifth_of_requests_is_rolled_back_by_success_rate(
    cluster: Cluster, namespace: str, models: Models, prometheus: Prometheus
) -> None:
    steps: list[dict[str, Any]] = [{"setWeight": 50}, {"pause": {"duration": "60s"}}]
    serve_stable(cluster, namespace, models.echo, rollout_with_analysis(prometheus.url, steps))
    with SteadyTraffic(cluster, namespace, NAME, payload=PAYLOAD) as traffic:
        wait_until_traffic_is_measured(prometheus, namespace)
        rollout_started = time.time()
        roll_out(cluster, namespace, models.flaky)
        canary_revision = canary_revision_of(cluster, namespace)
        final = wait_for_rollout(cluster, namespace, degraded, what="the rollback", timeout=120)
    # The client's side: the canary did fail requests, with the runtime's 500.
    canary_answers = traffic.answered(rollout_started)[CANARY]
    assert canary_answers > 0, traffic.summary()
    refused = answered_with_errors(traffic, rollout_started)
    assert refused, traffic.summary()
    assert all(": HTTP 500: " in example for example in refused), refused

    assert_rolled_back_by_analysis(cluster, namespace, final, canary_revision)
    message = final["aborted"]["message"]
    found = re.search(r"metric success-rate: success rate ([0-9.]+) is below min 0\.99", message)
    assert found, message
    assert 0.7 <= float(found.group(1)) <= 0.9, message
    assert "failureLimit 0" in message
    success_rate = metric_of(final, "success-rate")
    assert success_rate["failed"] == 1
    assert success_rate["measurements"][0]["phase"] == "Failed"
    assert 0.7 <= success_rate["measurements"][0]["value"] <= 0.9
    assert final["analysis"]["phase"] == "Failed"
    assert "AnalysisMeasurementFailed" in reasons(events_of(cluster, namespace), "Warning")
    failed_event = next(e for e in events_of(cluster, namespace) if e["reason"] == "AnalysisMeasurementFailed")
    assert "success-rate" in failed_event["message"]

    back_in = assert_stable_serves_everything(cluster, namespace, canary_revision)
    print(f"\nrolled back: {message}; stable at full strength {back_in:.1f}s later\n{traffic.summary()}")


def test_version_with_shifted_predictions_is_rolled_back_by_prediction_shift(
    cluster: Cluster, namespace: str, models: Models, prometheus: Prometheus
) -> None:
    steps: list[dict[str, Any]] = [{"setWeight": 50}, {"pause": {"duration": "60s"}}]
    serve_stable(cluster, namespace, models.echo, rollout_with_analysis(prometheus.url, steps))
    with SteadyTraffic(cluster, namespace, NAME, payload=PAYLOAD) as traffic:
        wait_until_traffic_is_measured(prometheus, namespace)
        rollout_started = time.time()
        roll_out(cluster, namespace, models.shifted)
        canary_revision = canary_revision_of(cluster, namespace)
        final = wait_for_rollout(cluster, namespace, degraded, what="the rollback", timeout=120)
    assert traffic.answered(rollout_started)[CANARY] > 0, traffic.summary()
    assert not answered_with_errors(traffic, rollout_started), traffic.summary()

    assert_rolled_back_by_analysis(cluster, namespace, final, canary_revision)
    message = final["aborted"]["message"]
    assert "metric agreement" in message
    assert "prediction shift" in message
    agreement = metric_of(final, "agreement")
    assert agreement["failed"] == 1
    failing = agreement["measurements"][0]
    assert failing["phase"] == "Failed"
    # Uniform over (0, 1) against uniform over (0.5, 1), in buckets 0.1 wide: a KS distance of 0.5.
    assert 0.4 <= failing["value"] <= 0.6, failing
    # Requests all succeeded, and fast: the shift alone rolled it back.
    for name in ("success-rate", "latency"):
        metric = metric_of(final, name)
        assert metric["failed"] == metric["errors"] == 0, describe(final)
        assert metric["successful"] >= 1
        assert all(m["phase"] == "Successful" for m in metric["measurements"])
        assert metric["measurements"][0]["time"] == failing["time"], "measured in the same round"
    back_in = assert_stable_serves_everything(cluster, namespace, canary_revision)
    print(f"\nrolled back: {message}; stable at full strength {back_in:.1f}s later\n{traffic.summary()}")


def test_analysis_as_a_new_user_writes_it_promotes_a_good_canary_without_an_initial_delay(
    cluster: Cluster, namespace: str, models: Models, prometheus: Prometheus
) -> None:
    """The spec a new user writes: latencyP99 every 5 s, no initialDelay, no window, the default limits (one
    Inconclusive pauses for a person), live traffic on both versions. The first measurements come before the
    canary's series can fill a window; they are listed as not counted (the warm-up) instead of pausing the rollout,
    and the canary is promoted on the measurements that follow."""
    rollout = {
        "strategy": "Canary",
        "steps": [{"setWeight": 50}, {"pause": {"duration": "20s"}}],
        "progressDeadlineSeconds": 180,
        "analysis": {
            "interval": "5s",
            "prometheus": {"address": prometheus.url},
            "metrics": [{"name": "latency", "builtin": "latencyP99", "max": 0.5}],
        },
    }
    serve_stable(cluster, namespace, models.echo, rollout)
    api = cluster.api()
    with (
        SteadyTraffic(cluster, namespace, NAME, payload=PAYLOAD) as traffic,
        StatusHistory(api, namespace, NAME) as history,
    ):
        wait_until_traffic_is_measured(prometheus, namespace)
        rollout_started = time.time()
        roll_out(cluster, namespace, models.echo)
        final = wait_for_rollout(
            cluster, namespace, promoted, what=f"{CANARY} promoted", timeout=240, unexpected=not_progressing
        )
    assert not answered_with_errors(traffic, rollout_started), traffic.summary()
    seen = measurements_seen(history)["latency"]
    print(f"  measurements: {[(m['phase'], m.get('counted', True)) for m in seen]}")
    counted = [m for m in seen if m.get("counted", True)]
    assert counted, describe(final)
    assert {m["phase"] for m in counted} == {"Successful"}, seen
    # Whatever came before the canary's data could fill a window was listed and not counted, never Inconclusive.
    assert all(m["phase"] == "Inconclusive" for m in seen if not m.get("counted", True)), seen
    metric = metric_of(final, "latency")
    assert metric["inconclusive"] == metric["failed"] == metric["errors"] == 0, metric


def test_no_traffic_pauses_as_inconclusive_until_promoted_then_traffic_promotes(
    cluster: Cluster, namespace: str, models: Models, prometheus: Prometheus
) -> None:
    # Built-in metrics only: without traffic they have no data (Inconclusive), while a custom query of a rate says
    # 0, which is data, and fails its condition.
    steps: list[dict[str, Any]] = [{"setWeight": 50}, {"pause": {"duration": "4s"}}]
    interval = 5
    rollout = rollout_with_analysis(
        prometheus.url, steps, metrics=BUILTIN_METRICS, interval_seconds=interval, initial_delay="0s"
    )
    serve_stable(cluster, namespace, models.echo, rollout)
    names = [metric["name"] for metric in BUILTIN_METRICS]
    roll_out(cluster, namespace, models.echo)
    paused = wait_for_rollout(
        cluster,
        namespace,
        lambda s: s.get("phase") == "Paused",
        what="the inconclusive pause",
        timeout=90,
        unexpected=rolled_back,
    )
    assert paused["pause"]["reason"] == "AnalysisInconclusive"
    assert paused["analysis"]["phase"] == "Inconclusive"
    for name in names:
        metric = metric_of(paused, name)
        assert metric["inconclusive"] == 1, describe(paused)
        assert metric["successful"] == metric["failed"] == metric["errors"] == 0
        assert metric["measurements"][0]["phase"] == "Inconclusive"
        assert "no data" in metric["measurements"][0]["message"]
    assert "AnalysisInconclusive" in reasons(events_of(cluster, namespace), "Warning")
    # Paused means paused: nothing is measured until a person decides.
    measured_at = paused["analysis"]["lastMeasuredAt"]
    wait_until(
        lambda: time.time() > parse_time(measured_at).timestamp() + 2 * interval,
        timeout=3 * interval,
        what="two intervals to pass",
    )
    still = status_of(cluster, namespace, NAME)
    assert still["phase"] == "Paused"
    assert still["analysis"]["lastMeasuredAt"] == measured_at

    mdep(cluster, namespace, "promote", NAME)
    resumed = wait_for_rollout(
        cluster,
        namespace,
        lambda s: (s.get("analysis") or {}).get("phase") == "Running",
        what="the analysis to run again",
        timeout=30,
        unexpected=rolled_back,
    )
    assert (resumed.get("pause") or {}).get("reason") != "AnalysisInconclusive"
    assert resumed["phase"] != "Paused", describe(resumed)
    for name in names:
        assert metric_of(resumed, name)["inconclusive"] == 0, "promote resets the inconclusive counts"
    resumed_at = time.time()
    with SteadyTraffic(cluster, namespace, NAME, payload=PAYLOAD) as traffic:
        final = wait_for_rollout(
            cluster, namespace, promoted, what=f"{CANARY} promoted", timeout=120, unexpected=not_progressing
        )
    assert traffic.answered(resumed_at).keys() == {STABLE, CANARY}, traffic.summary()
    assert final["analysis"]["phase"] == "Successful"
    assert final["history"][0]["outcome"] == "Promoted"
    for name in names:
        metric = metric_of(final, name)
        assert metric["successful"] >= 1
        assert metric["inconclusive"] == 0
        assert metric["measurements"][0]["phase"] == "Successful"
    print(f"\npaused on no data, promoted, then promoted on traffic: {describe(final)}\n{traffic.summary()}")


def test_prometheus_outage_counts_errors_and_rolls_back_at_the_limit(
    cluster: Cluster, namespace: str, models: Models, prometheus: Prometheus, operator: OperatorProcess
) -> None:
    """The analysis asks Prometheus through a TCP forwarder started here; stopping the forwarder stands in for a
    Prometheus outage, so the shared Prometheus keeps running for the other tests."""
    limit = 2
    steps: list[dict[str, Any]] = [{"setWeight": 50}, {"pause": {"duration": "90s"}}]
    with TcpForwarder(prometheus.url) as forwarder:
        rollout = rollout_with_analysis(forwarder.url, steps, consecutiveErrorLimit=limit)
        serve_stable(cluster, namespace, models.echo, rollout)
        with SteadyTraffic(cluster, namespace, NAME, payload=PAYLOAD) as traffic:
            wait_until_traffic_is_measured(prometheus, namespace)
            roll_out(cluster, namespace, models.echo)
            canary_revision = canary_revision_of(cluster, namespace)
            before = wait_for_rollout(
                cluster,
                namespace,
                lambda s: every_metric(s, 1),
                what="a Successful measurement of every metric through the forwarder",
                timeout=90,
                unexpected=not_progressing,
            )
            assert forwarder.relayed > 0
            forwarder.stop()
            outage = datetime.now().astimezone()
            final = wait_for_rollout(cluster, namespace, degraded, what="the rollback", timeout=60)

    assert_rolled_back_by_analysis(cluster, namespace, final, canary_revision)
    assert final["analysis"]["phase"] == "Error"
    message = final["aborted"]["message"]
    assert any(f"metric {name}" in message for name in METRIC_NAMES), message
    assert "error" in message.lower(), message
    successful_before = counts(before)
    # A round of queries takes milliseconds, every 3 s: each metric saw the outage in the same rounds, unless the
    # forwarder stopped in the middle of one (then the first metrics of that round still got through).
    for name in METRIC_NAMES:
        metric = metric_of(final, name)
        assert limit <= metric["errors"] == metric["consecutiveErrors"] <= limit + 1, describe(final)
        assert metric["failed"] == 0
        assert metric["successful"] >= successful_before[name]["successful"]
        errors = metric["measurements"][: metric["errors"]]
        assert [m["phase"] for m in errors] == ["Error"] * metric["errors"]
        assert all(parse_time(m["time"]) >= outage - timedelta(seconds=1) for m in errors), (errors, outage)
        assert all(m["message"] and m.get("value") is None for m in errors), errors
        assert metric["measurements"][metric["errors"]]["phase"] == "Successful", "errors only since the outage"
    assert max(metric_of(final, name)["consecutiveErrors"] for name in METRIC_NAMES) == limit + 1
    # One Warning per metric when its errors began (the outage), not one per measurement: status counts those.
    error_events = [e for e in events_of(cluster, namespace) if e["reason"] == "AnalysisMeasurementError"]
    outage_events = [e for e in error_events if parse_time(e["firstTimestamp"]) >= outage - timedelta(seconds=2)]
    assert sorted(e["message"].split(":")[0] for e in outage_events) == sorted(METRIC_NAMES), error_events
    assert all(e["type"] == "Warning" and e.get("count", 1) == 1 for e in outage_events), outage_events
    # The operator lived through it and still answers.
    assert operator.running
    assert operator.metric("modeldeploy_queue_depth") is not None
    back_in = assert_stable_serves_everything(cluster, namespace, canary_revision)
    print(f"\n{final['aborted']['message']}; stable at full strength {back_in:.1f}s later\n{traffic.summary()}")


def test_restarted_operator_resumes_the_analysis_with_its_counts(
    cluster: Cluster, namespace: str, models: Models, prometheus: Prometheus, operator: OperatorProcess
) -> None:
    steps: list[dict[str, Any]] = [{"setWeight": 50}, {"pause": {"duration": "30s"}}]
    serve_stable(cluster, namespace, models.echo, rollout_with_analysis(prometheus.url, steps))
    api = cluster.api()
    with (
        SteadyTraffic(cluster, namespace, NAME, payload=PAYLOAD) as traffic,
        StatusHistory(api, namespace, NAME) as history,
    ):
        wait_until_traffic_is_measured(prometheus, namespace)
        roll_out(cluster, namespace, models.echo)
        before = wait_for_rollout(
            cluster,
            namespace,
            lambda s: every_metric(s, 2),
            what="two Successful measurements of every metric",
            timeout=90,
            unexpected=not_progressing,
        )
        running = before["analysis"]
        assert running["phase"] == "Running"
        assert running["version"] == CANARY
        assert running["revision"] == before["canary"]["revision"]
        assert running["message"]
        measured_at = parse_time(running["lastMeasuredAt"])
        assert parse_time(running["startedAt"]) < measured_at
        assert parse_time(running["nextMeasurementAt"]) - measured_at == timedelta(seconds=INTERVAL_SECONDS)
        operator.stop()
        stopped = status_of(cluster, namespace, NAME)
        # Down for longer than an interval, so a measurement is overdue when it comes back.
        overdue = parse_time(stopped["analysis"]["nextMeasurementAt"]).timestamp() + INTERVAL_SECONDS
        wait_until(lambda: time.time() > overdue, timeout=3 * INTERVAL_SECONDS, what="a measurement to be overdue")
        assert status_of(cluster, namespace, NAME)["analysis"] == stopped["analysis"], "measured with no operator"
        restarting = datetime.now().astimezone()
        operator.start()
        target = {name: value["successful"] + 2 for name, value in counts(stopped).items()}
        wait_for_rollout(
            cluster,
            namespace,
            lambda s: promoted(s) or all(counts(s)[name]["successful"] >= n for name, n in target.items()),
            what="two more Successful measurements of every metric after the restart",
            timeout=60,
            unexpected=not_progressing,
        )
        final = wait_for_rollout(
            cluster, namespace, promoted, what=f"{CANARY} promoted", timeout=90, unexpected=not_progressing
        )

    assert final["analysis"]["phase"] == "Successful"
    assert final["analysis"]["startedAt"] == before["analysis"]["startedAt"], "the analysis started over"
    # Counts never went back, in any write of the status.
    previous: dict[str, dict[str, int]] = {}
    for snapshot in history.statuses():
        current = counts(snapshot.status)
        for name, values in current.items():
            for key, value in values.items():
                assert value >= previous.get(name, {}).get(key, 0), f"{name} {key} went back to {value}"
        previous = current or previous
    # The first measurement after the restart was added to what was there: counts one up, the old measurements
    # under the new one.
    first_after = next(
        s.status
        for s in history.statuses()
        if (s.status.get("analysis") or {}).get("lastMeasuredAt") not in (None, stopped["analysis"]["lastMeasuredAt"])
        and parse_time(s.status["analysis"]["lastMeasuredAt"]) >= restarting
    )
    measured_after = parse_time(first_after["analysis"]["lastMeasuredAt"])
    for name in METRIC_NAMES:
        old, new = metric_of(stopped, name), metric_of(first_after, name)
        assert new["successful"] == old["successful"] + 1, (old, new)
        assert new["measurements"][1:] == old["measurements"][:9]
        assert new["measurements"][0]["phase"] == "Successful"
    seen = measurements_seen(history)
    for name in METRIC_NAMES:
        metric = metric_of(final, name)
        assert metric["successful"] >= counts(stopped)[name]["successful"] + 2
        assert metric["successful"] == len(seen[name]), f"{name}: counts and measurements disagree"
        assert all(m["phase"] == "Successful" for m in seen[name])
        assert len(metric["measurements"]) == min(10, metric["successful"]), "the newest 10 are kept"
        assert metric["measurements"] == list(reversed(seen[name]))[:10]
    print(
        f"\nbefore the stop: {counts(stopped)['success-rate']}; after: {counts(final)['success-rate']}; first "
        f"measurement {(measured_after - restarting).total_seconds():.1f}s after the restart began (it was overdue)"
        f"\n{traffic.summary()}"
    )


@pytest.fixture(autouse=True)
def _operator_log(namespace: str, operator: OperatorProcess) -> Iterator[None]:
    """The operator's lines about the test's namespace (what it measured and decided), printed at teardown: pytest
    shows them with a failure and keeps them quiet otherwise."""
    offset = operator.log_path.stat().st_size if operator.log_path.exists() else 0
    yield
    text = operator.log_path.read_bytes()[offset:].decode(errors="replace")
    lines = [line for line in text.splitlines() if namespace in line]
    print(f"\noperator log ({operator.log_path}), the last of {len(lines)} lines about {namespace}:")
    print("\n".join(lines[-80:]))
