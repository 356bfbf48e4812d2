"""R8 and R11: Prometheus misbehaving during canary analysis. No fault may promote a canary; once Prometheus is
well again, a good canary is promoted.

The real Prometheus of the test kit (testkit/scripts/prometheus-up.sh; started here when it is not running, and
stopped again at the end unless MODELDEPLOY_KEEP_CLUSTER=1) answers every query, through a fault-injecting relay
(modeldeploy_testkit.prometheus_faults.FaultRelay, a test double of the network path) that forwards or injects
one fault: a 5xx, an answer that is not JSON, JSON of the wrong shape, a body of several MiB, NaN values, an
empty result, an answer slower than the operator's query deadline, or the port closed. The analysis' queries are
ones Prometheus answers by itself (`vector(...)`): a good canary's metric is 0.999 against
`successCondition: result >= 0.99`, a bad one's 0.2, which meets `failureCondition: result < 0.5`. So a healthy
Prometheus promotes the good canary and rolls the bad one back, and any other outcome is the fault's doing.

The rounds come in an order drawn from the run's seed: each fault once with 2 resources and a 2 s interval
(short), or each fault 2-3 times with 3 resources and a 5 s interval (full). In a round, the resources' relay
serves the stable version 1.0.0 while healthy; then the fault is set and version 2.0.0 rolled out. A watch of the
namespace checks that status.stable.version is never 2.0.0 while the fault lasts. Each resource must end as the
documented semantics say: a query error (5xx, malformed answers, slow, unreachable) counts toward
consecutiveErrorLimit and one too many rolls the canary back (Degraded, AnalysisFailed); NaN and an empty result
are no data, Inconclusive, and one more than inconclusiveLimit pauses the rollout (AnalysisInconclusive). The
fault is kept two more intervals, to see that the rollout stays where it is. Then it is lifted and version 3.0.0
rolled out: it must be promoted (liveness). A last round with a healthy Prometheus and the bad metric checks that
the analysis judges at all: it must roll back.

One operator process (`modeldeploy run`) watches only the case's namespace, with a query deadline of 2 s.
"""

from __future__ import annotations

import re
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from modeldeploy_testkit.chaos.common import (
    FIELD_MANAGER,
    ChaosRun,
    Figure,
    count_figure,
    errors_figure,
    is_converged,
    log,
    model_deployment,
    resources_path,
)
from modeldeploy_testkit.kubeapi import Manifest
from modeldeploy_testkit.operator_process import OperatorProcess
from modeldeploy_testkit.prometheus import start_prometheus, stop_prometheus
from modeldeploy_testkit.prometheus_faults import EMPTY_RESULT, FAULTS, NAN, UNREACHABLE, FaultRelay
from modeldeploy_testkit.scripts import keep_running
from modeldeploy_testkit.waiting import wait_until
from modeldeploy_testkit.watches import CollectionWatch

CASE = "R8"
TITLE = "Prometheus faults during canary analysis (R8, R11): never promoted on bad metrics, recovers after"

STABLE, CANARY, GOOD = "1.0.0", "2.0.0", "3.0.0"
REPLICAS = 2
QUERY_TIMEOUT_SECONDS = 2.0
GOOD_QUERY = "vector(0.999)"
BAD_QUERY = "vector(0.2)"
CONSECUTIVE_ERROR_LIMIT = 2
INCONCLUSIVE_LIMIT = 1
NO_DATA = (NAN, EMPTY_RESULT)
ROLLED_BACK = "rolled back"
PAUSED = "paused"
CONTROL = "healthy Prometheus, failing threshold"


@dataclass(frozen=True)
class R8Size:
    resources: int
    interval: int  # seconds between measurements
    repeats: tuple[int, int]  # each fault this many times (inclusive range, drawn from the run's rng)
    # The analysis window. The queries are constants, so it changes no answer; it sets the warm-up (window + 10 s)
    # through which no data is not counted, so it is how long a no-data fault takes to pause a rollout.
    window: str


def r8_size(short: bool) -> R8Size:
    return R8Size(2, 2, (1, 1), "10s") if short else R8Size(3, 5, (2, 3), "1m")


def expected(fault: str) -> str:
    """What the product documents for a fault: no data pauses for a person, an error rolls back."""
    return PAUSED if fault in NO_DATA else ROLLED_BACK


def rollout(address: str, interval: int, query: str, window: str) -> dict[str, Any]:
    return {
        "strategy": "Canary",
        "steps": [{"setWeight": 50}, {"pause": {"duration": f"{interval}s"}}],
        "progressDeadlineSeconds": 600,
        "analysis": {
            "interval": f"{interval}s",
            "window": window,
            "failureLimit": 0,
            "inconclusiveLimit": INCONCLUSIVE_LIMIT,
            "consecutiveErrorLimit": CONSECUTIVE_ERROR_LIMIT,
            "prometheus": {"address": address},
            "metrics": [
                {
                    "name": "quality",
                    "query": query,
                    "successCondition": "result >= 0.99",
                    "failureCondition": "result < 0.5",
                }
            ],
        },
    }


def outcome(body: Manifest) -> str | None:
    """Rolled back by the analysis, paused by it, or None (still going, or something else)."""
    status = body.get("status") or {}
    if status.get("phase") == "Degraded" and (status.get("aborted") or {}).get("reason") == "AnalysisFailed":
        return ROLLED_BACK
    if (status.get("pause") or {}).get("reason") == "AnalysisInconclusive":
        return PAUSED
    return None


def reason_shape(measurement: dict[str, Any]) -> str:
    """A measurement's phase and message with addresses and numbers blanked: what kind of answer it was."""
    message = re.sub(r"https?://[^\s:]+(:\d+)?", "<prometheus>", str(measurement.get("message") or ""))
    message = re.sub(r"\d+(\.\d+)?", "N", message)
    return f"{measurement.get('phase')}: {message[:90]}"


@dataclass
class Observer:
    """Every status of the namespace's resources, as a watch delivers it: which were promoted to a version they
    must not be promoted to, and the measurements' reasons seen for each fault."""

    forbidden: dict[str, str] = field(default_factory=dict)  # name -> a version it must not serve now
    promoted_on_bad: list[str] = field(default_factory=list)
    reasons: dict[str, Counter[str]] = field(default_factory=dict)  # fault -> reason shape -> count
    fault_of: dict[str, str] = field(default_factory=dict)  # name -> its round's fault
    seen_times: set[tuple[str, str]] = field(default_factory=set)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def __call__(self, kind: str, body: Manifest) -> None:
        if kind == "DELETED":
            return
        name = str(body["metadata"]["name"])
        status = body.get("status") or {}
        serving = (status.get("stable") or {}).get("version")
        with self.lock:
            bad = self.forbidden.get(name)
            if bad is not None and serving == bad:
                self.promoted_on_bad.append(f"{name} ({self.fault_of.get(name)}) serves {bad}")
                del self.forbidden[name]
            fault = self.fault_of.get(name)
            if fault is None or name not in self.forbidden:
                return  # only what was measured while the round's fault lasted
            for metric in (status.get("analysis") or {}).get("metrics") or []:
                for measurement in metric.get("measurements") or []:
                    key = (name, str(measurement.get("time")))
                    if key not in self.seen_times:
                        self.seen_times.add(key)
                        self.reasons.setdefault(fault, Counter())[reason_shape(measurement)] += 1


@dataclass
class Round:
    fault: str  # one of FAULTS, or CONTROL
    names: list[str]
    relay: FaultRelay
    outcomes: dict[str, str] = field(default_factory=dict)
    recovered: list[str] = field(default_factory=list)
    requests: dict[str, int] = field(default_factory=dict)


def rounds_of(run: ChaosRun, size: R8Size) -> list[str]:
    faults = [fault for fault in FAULTS for _ in range(run.rng.randint(*size.repeats))]
    run.rng.shuffle(faults)
    return faults


def run(run: ChaosRun) -> list[Figure]:
    prometheus, started_here = start_prometheus()
    if started_here:
        log(f"Prometheus was not running: started it ({prometheus.url}) with testkit/scripts/prometheus-up.sh")
    else:
        log(f"Prometheus already running at {prometheus.url}")
    try:
        return _run(run, prometheus.url)
    finally:
        if started_here and not keep_running():
            log("stopping the Prometheus this case started")
            stop_prometheus()


def _run(run: ChaosRun, upstream: str) -> list[Figure]:
    size = r8_size(run.short)
    run.cluster.install_crd()  # a fresh control plane has none yet; applying it again changes nothing
    faults = rounds_of(run, size)
    namespace = run.namespace("prometheus")
    api = run.api
    collection = resources_path(namespace)
    log(f"{len(faults)} fault rounds of {size.resources} resources, interval {size.interval} s: {', '.join(faults)}")
    operator = OperatorProcess(
        run.cluster,
        run.directory / "operator-prometheus.log",
        namespaces=[namespace],
        extra_env={"MODELDEPLOY_PROMETHEUS_TIMEOUT_SECONDS": f"{QUERY_TIMEOUT_SECONDS:g}"},
    )
    observer = Observer()
    watch = CollectionWatch(api, collection, observer, timeout_seconds=290)
    rounds: list[Round] = []
    try:
        operator.start()
        watch.start()
        for index, fault in enumerate([*faults, CONTROL]):
            relay = FaultRelay(upstream, slow_seconds=2 * QUERY_TIMEOUT_SECONDS + 1).start()
            slug = "control" if fault == CONTROL else fault
            names = [f"r{index:02d}-{slug}-{number}" for number in range(size.resources)]
            current = Round(fault, names, relay)
            rounds.append(current)
            with observer.lock:
                observer.fault_of.update(dict.fromkeys(names, fault))
            try:
                play(run, current, size, collection, observer)
            finally:
                current.requests = dict(relay.requests)
                relay.stop()
        errors = errors_figure(operator)
    finally:
        watch.stop()
        run.cleanup(namespace)
        operator.stop()
    return figures(rounds, observer, errors)


def play(run: ChaosRun, current: Round, size: R8Size, collection: str, observer: Observer) -> None:
    """One round: serve STABLE with a healthy relay, roll out CANARY under the fault, then GOOD without it."""
    api = run.api
    query = BAD_QUERY if current.fault == CONTROL else GOOD_QUERY
    spec = rollout(current.relay.url, size.interval, query, size.window)

    def apply(version: str) -> None:
        for name in current.names:
            api.apply(collection, model_deployment(name, version, REPLICAS, spec), FIELD_MANAGER)

    def bodies() -> list[Manifest]:
        return [body for body in api.list(collection)["items"] if body["metadata"]["name"] in current.names]

    apply(STABLE)
    wait_until(
        lambda: len([body for body in bodies() if is_converged(body)]) == len(current.names),
        timeout=120,
        interval=0.5,
        what=f"{STABLE} of round {current.fault} to be served",
    )
    log(f"round {current.fault}: {STABLE} served; rolling out {CANARY} through {current.relay.url}")
    if current.fault != CONTROL:
        current.relay.fault = current.fault
    with observer.lock:
        observer.forbidden.update(dict.fromkeys(current.names, CANARY))
    apply(CANARY)
    # Enough for the canary's pods, the measurements up to one past the limit (slow ones take their deadline), and
    # the operator's own pace.
    deadline = 90 + (CONSECUTIVE_ERROR_LIMIT + INCONCLUSIVE_LIMIT + 2) * (size.interval + QUERY_TIMEOUT_SECONDS * 3)
    started = time.monotonic()
    while time.monotonic() - started < deadline and len(current.outcomes) < len(current.names):
        for body in bodies():
            result = outcome(body)
            if result is not None:
                current.outcomes.setdefault(body["metadata"]["name"], result)
        time.sleep(0.5)
    outcomes = Counter(current.outcomes.values())
    took = time.monotonic() - started
    log(f"  {dict(outcomes) or 'no outcome'} after {took:.0f} s; requests {current.relay.requests}")
    # The fault stays on a little longer: a rollout that stopped must stay stopped while Prometheus is faulty.
    held = time.monotonic() + 2 * size.interval
    while time.monotonic() < held:
        for body in bodies():
            name = body["metadata"]["name"]
            reached = current.outcomes.get(name)
            if reached in (ROLLED_BACK, PAUSED) and outcome(body) != reached:
                current.outcomes[name] = f"left {reached}: {(body.get('status') or {}).get('phase')}"
        time.sleep(0.5)

    current.relay.fault = None
    with observer.lock:
        for name in current.names:
            observer.forbidden.pop(name, None)
    if current.fault == CONTROL:
        return
    apply(GOOD)
    done: set[str] = set()

    def promoted() -> bool:
        for body in bodies():
            if body["spec"]["model"]["version"] == GOOD and is_converged(body):
                done.add(body["metadata"]["name"])
        return len(done) == len(current.names)

    try:
        wait_until(promoted, timeout=60 + 6 * size.interval, interval=0.5, what=f"{GOOD} to be promoted")
    except AssertionError as error:
        log(f"  not recovered: {error}")
    current.recovered = sorted(done)
    log(f"  after the fault: {len(done)}/{len(current.names)} promoted {GOOD}")


def figures(rounds: list[Round], observer: Observer, errors: Figure) -> list[Figure]:
    result = [
        count_figure(
            "promoted on bad metrics", len(observer.promoted_on_bad), note="; ".join(observer.promoted_on_bad[:3])
        )
    ]
    by_fault: dict[str, list[Round]] = {}
    for current in rounds:
        by_fault.setdefault(current.fault, []).append(current)
    for fault, played in by_fault.items():
        wanted = ROLLED_BACK if fault == CONTROL else expected(fault)
        total = sum(len(current.names) for current in played)
        got = sum(1 for current in played for value in current.outcomes.values() if value == wanted)
        others = Counter(
            [value for current in played for value in current.outcomes.values() if value != wanted]
            + ["no outcome"] * sum(len(current.names) - len(current.outcomes) for current in played)
        )
        faulted = sum(current.requests.get(fault, 0) for current in played)
        note = "" if fault == CONTROL else "port closed" if fault == UNREACHABLE else f"{faulted} faulty answers"
        if others:
            note = f"{dict(others)}; {note}".rstrip("; ")
        result.append(Figure(f"{fault}: {wanted}", f"{got}/{total}", f"{total}/{total}", got == total, note))
    faulty = [current for current in rounds if current.fault != CONTROL]
    total = sum(len(current.names) for current in faulty)
    recovered = sum(len(current.recovered) for current in faulty)
    result.append(
        Figure(
            "recovered after fault (good canary promoted)",
            "yes" if recovered == total else "no",
            "yes",
            recovered == total,
            f"{recovered}/{total} promoted {GOOD}",
        )
    )
    result.append(errors)
    for fault, reasons in sorted(observer.reasons.items()):
        seen = "; ".join(f"{count}x {shape}" for shape, count in reasons.most_common(3))
        result.append(Figure(f"reasons seen: {fault}", str(sum(reasons.values())), "(informational)", True, seen))
    return result
