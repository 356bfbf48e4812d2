"""A whole canary under steady traffic through the Service: steps, a promotion, then a spec revert mid-canary.

Model servers run as processes on the node agent's node, so every pod that goes is really stopped: its preStop
hook, SIGTERM, the runtime's drain, its exit. Traffic comes from the load generator's sender at a steady rate
(SteadyTraffic), to the endpoints ready at each moment as a watch of the Service's EndpointSlices shows them,
the way kube-proxy follows them. What is recorded: every request's outcome by kind, every EndpointSlice and pod
event, and the exit code of every container that was stopped.

The scenario, 4 replicas, steps 25% / pause 5s / 50% / pause (until promoted):
1. 1.0.0 serves; traffic starts;
2. 2.0.0 rolls out to the open pause at 50% and is promoted: all of 1.0.0's pods go;
3. 3.0.0 rolls out to 25% (the stable gives up a pod for it) and answers requests, then the spec returns to 2.0.0:
   the canary's pod goes at once and the stable is back at 4.

Used by tests/e2e/test_graceful_shutdown.py (which asserts) and by the canary benchmark (which prints the line).
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from modeldeploy_testkit.agent_pods import REVISION_LABEL, Artifact, healthy, model_deployment
from modeldeploy_testkit.cluster import Cluster
from modeldeploy_testkit.custom_models import PAYLOAD
from modeldeploy_testkit.kubeapi import Manifest, pods_path
from modeldeploy_testkit.resources import apply, mdep, patch_spec, wait_for_status
from modeldeploy_testkit.traffic import SteadyTraffic
from modeldeploy_testkit.waiting import wait_until
from modeldeploy_testkit.watches import EventLog

NAME = "steady"
REPLICAS = 4
RATE = 20.0
STEPS: list[dict[str, Any]] = [
    {"setWeight": 25},
    {"pause": {"duration": "5s"}},
    {"setWeight": 50},
    {"pause": {}},
]
ENDPOINT_SLICES = "/apis/discovery.k8s.io/v1/namespaces/{namespace}/endpointslices"
# Pods start a real model server (a few seconds each on two busy cores) and stop in preStop + drain + exit.
STEP_TIMEOUT_SECONDS = 240.0
CANARY_ANSWERS_BEFORE_REVERT = 3


@dataclass
class StoppedPod:
    name: str
    version: str
    deleted_at: float
    """time.time() the pod watch first showed its deletionTimestamp."""
    conditions: dict[str, list[dict[str, bool]]] = field(default_factory=dict)
    """Per EndpointSlice that held it: its endpoint's conditions as the watch showed them from the first one marked
    terminating on, in order, repeats dropped. Kept per slice because during a rollout the pod sits behind several
    Services (`<name>` and `<name>-stable`), whose slices the endpoint controller updates one after another."""
    terminating_after: float | None = None
    """Seconds from the deletionTimestamp (pod watch) to its endpoint marked terminating (EndpointSlice watch)."""
    exit_code: int | None = None
    """The container's exit code in the last status the agent wrote before the pod object went."""
    gone_after: float | None = None
    """Seconds from the deletionTimestamp to the pod object's deletion."""


@dataclass
class CanaryTrafficRun:
    rate: float
    seconds: float
    sent: int
    answered: dict[str, int]
    errors_by_kind: dict[str, int]
    error_examples: list[str]
    rounds_not_sent: list[str]
    retried: int
    endpoint_changes: int
    phases: list[tuple[str, float]]
    stopped: list[StoppedPod]
    summary: str

    @property
    def errors(self) -> int:
        return sum(self.errors_by_kind.values())

    def line(self) -> str:
        versions = ", ".join(f"{version}: {count}" for version, count in sorted(self.answered.items()))
        kinds = ", ".join(f"{kind} {count}" for kind, count in sorted(self.errors_by_kind.items())) or "none"
        return (
            f"{self.errors} failed of {self.sent} sent at {self.rate:g}/s over {self.seconds:.0f}s "
            f"(answered {versions}; failures by kind: {kinds}; {len(self.rounds_not_sent)} rounds not sent; "
            f"{len(self.stopped)} pods stopped under traffic, exit codes "
            f"{sorted(Counter(p.exit_code for p in self.stopped).items(), key=str)}; "
            f"{self.endpoint_changes} changes of the ready endpoints)"
        )


def _set_version(cluster: Cluster, namespace: str, version: str) -> None:
    patch_spec(cluster, namespace, NAME, {"model": {"version": version}})


def _pods_of_revision(cluster: Cluster, namespace: str, revision: str) -> list[Manifest]:
    """Every pod of the revision, terminating ones included."""
    body = cluster.api().list(pods_path(namespace), {"labelSelector": f"{REVISION_LABEL}={revision}"})
    return list(body.get("items") or [])


def _wait_all_gone(cluster: Cluster, namespace: str, revision: str, what: str) -> None:
    wait_until(
        lambda: not _pods_of_revision(cluster, namespace, revision),
        timeout=STEP_TIMEOUT_SECONDS,
        interval=0.5,
        what=what,
    )


def _stopped_pods(pods: EventLog, slices: EventLog, since: float) -> list[StoppedPod]:
    stopped: dict[str, StoppedPod] = {}
    for event in pods.since(since):
        metadata = event.body["metadata"]
        name = metadata["name"]
        if metadata.get("deletionTimestamp") and name not in stopped:
            version = (metadata.get("labels") or {}).get("app.kubernetes.io/version", "")
            stopped[name] = StoppedPod(name, version, event.at)
        pod = stopped.get(name)
        if pod is None:
            continue
        if event.kind == "DELETED":
            pod.gone_after = round(event.at - pod.deleted_at, 2)
            continue
        for container in (event.body.get("status") or {}).get("containerStatuses") or []:
            terminated = (container.get("state") or {}).get("terminated")
            if terminated is not None:
                pod.exit_code = int(terminated.get("exitCode", -1))
    for event in slices.since(since):
        slice_name = str(event.body.get("metadata", {}).get("name", ""))
        for endpoint in event.body.get("endpoints") or []:
            pod = stopped.get((endpoint.get("targetRef") or {}).get("name") or "")
            if pod is None:
                continue
            conditions = {key: bool(value) for key, value in (endpoint.get("conditions") or {}).items()}
            seen = pod.conditions.get(slice_name)
            if not seen and not conditions.get("terminating"):
                continue  # before its deletion
            if pod.terminating_after is None:
                pod.terminating_after = round(event.at - pod.deleted_at, 3)
            if seen is None:
                pod.conditions[slice_name] = [conditions]
            elif seen[-1] != conditions:
                seen.append(conditions)
    return list(stopped.values())


def whole_canary_under_traffic(
    cluster: Cluster,
    namespace: str,
    artifact: Artifact,
    *,
    rate: float = RATE,
    log: Callable[[str], None] = print,
) -> CanaryTrafficRun:
    """The scenario of this module's docstring, in `namespace`, with the operator and the node agent running."""
    api = cluster.api()
    rollout = {"strategy": "Canary", "steps": STEPS, "progressDeadlineSeconds": int(STEP_TIMEOUT_SECONDS)}
    apply(cluster, namespace, model_deployment(NAME, artifact, "1.0.0", REPLICAS, rollout))
    first = wait_for_status(
        cluster, namespace, NAME, healthy("1.0.0", REPLICAS), timeout=STEP_TIMEOUT_SECONDS, what="1.0.0 Healthy"
    )
    pods = EventLog(api, pods_path(namespace), timeout_seconds=5).start()
    slices = EventLog(
        api, ENDPOINT_SLICES.format(namespace=namespace), {"labelSelector": f"kubernetes.io/service-name={NAME}"}, 5
    ).start()
    traffic = SteadyTraffic(cluster, namespace, NAME, payload=PAYLOAD, rate=rate)
    phases: list[tuple[str, float]] = []
    started = time.time()
    mark = time.monotonic()

    def phase(name: str) -> None:
        nonlocal mark
        now = time.monotonic()
        phases.append((name, round(now - mark, 1)))
        log(f"  {name} ({now - mark:.1f}s)")
        mark = now

    try:
        traffic.start()
        time.sleep(3)
        phase("1.0.0 serving under traffic")

        _set_version(cluster, namespace, "2.0.0")
        wait_for_status(
            cluster,
            namespace,
            NAME,
            lambda s: (
                s.get("phase") == "Paused"
                and (s.get("canary") or {}).get("version") == "2.0.0"
                and (s.get("canary") or {}).get("actualWeight") == 50
            ),
            timeout=STEP_TIMEOUT_SECONDS,
            what="2.0.0 paused at 50%",
        )
        phase("2.0.0 through 25% and a timed pause to the open pause at 50%")
        mdep(cluster, namespace, "promote", NAME)
        wait_for_status(
            cluster,
            namespace,
            NAME,
            lambda s: healthy("2.0.0", REPLICAS)(s) and not s.get("canary"),
            timeout=STEP_TIMEOUT_SECONDS,
            what="2.0.0 promoted",
        )
        _wait_all_gone(cluster, namespace, first["stable"]["revision"], "every pod of 1.0.0 to be gone")
        phase("2.0.0 promoted, every pod of 1.0.0 stopped")

        _set_version(cluster, namespace, "3.0.0")
        canary = wait_for_status(
            cluster,
            namespace,
            NAME,
            lambda s: (
                (s.get("canary") or {}).get("version") == "3.0.0" and (s.get("canary") or {}).get("actualWeight") == 25
            ),
            timeout=STEP_TIMEOUT_SECONDS,
            what="3.0.0 at 25%",
        )
        # The revert is to happen while 3.0.0 takes its share: its status says 25% once its pod is Ready, a moment
        # before the load generator has seen the EndpointSlice change and sent it a request.
        wait_until(
            lambda: traffic.answered(started)["3.0.0"] >= CANARY_ANSWERS_BEFORE_REVERT,
            timeout=STEP_TIMEOUT_SECONDS,
            interval=0.1,
            what=f"3.0.0 to answer {CANARY_ANSWERS_BEFORE_REVERT} requests",
        )
        phase("3.0.0 at 25%, answering requests")
        _set_version(cluster, namespace, "2.0.0")
        wait_for_status(
            cluster,
            namespace,
            NAME,
            lambda s: healthy("2.0.0", REPLICAS)(s) and not s.get("canary"),
            timeout=STEP_TIMEOUT_SECONDS,
            what="the spec revert back to 2.0.0",
        )
        _wait_all_gone(cluster, namespace, canary["canary"]["revision"], "the pod of 3.0.0 to be gone")
        phase("spec reverted to 2.0.0 mid-canary, 3.0.0's pod stopped, the stable back at 4")
        time.sleep(3)
        phase("2.0.0 serving under traffic")
    finally:
        traffic.stop()
        pods.stop()
        slices.stop()

    stopped = _stopped_pods(pods, slices, started)
    errors_by_kind = dict(traffic.errors_by_kind(started))
    return CanaryTrafficRun(
        rate=rate,
        seconds=time.time() - started,
        sent=traffic.sent(started),
        answered=dict(traffic.answered(started)),
        errors_by_kind=errors_by_kind,
        error_examples=traffic.error_examples(started),
        rounds_not_sent=list(traffic.problems),
        retried=sum(r.retried for r in traffic.rounds),
        endpoint_changes=max(len(traffic.endpoints.changes) - 1, 0),
        phases=phases,
        stopped=stopped,
        summary=traffic.summary(),
    )
