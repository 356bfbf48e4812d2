"""Canary analysis benchmark: how fast a version that fails requests is taken out of traffic.

Run from the repository root, as root, with the local control plane up (`make bench` does both):
    .venv/bin/python -m modeldeploy_testkit.bench analysis [--samples N]

Model servers run as processes on the node agent's node (testkit/scripts/nodeagent-up.sh, needs root) and
Prometheus (testkit/scripts/prometheus-up.sh, built by `make tools-prometheus`) scrapes them every 2 s; both are
started when they are not running, and left running. The operator runs as
`modeldeploy run --namespace <the benchmark's namespace>` (log: .cluster/logs/operator-bench-analysis.log).

One ModelDeployment, 2 replicas of a `custom` model that answers each row's first feature, serves 1.0.0 under
steady traffic (the load generator's sender, 20 requests/s of 10 rows, to the endpoints ready at each moment as
its watch of the EndpointSlices shows them). Each sample rolls out a new version of a model that fails every 5th
call (20% of requests): steps 50% then a long pause, analysis every 5 s, failureLimit 0, one metric (successRate,
min 0.99), the default window. The operator rolls it back on its first measurement. Timed, per sample:
- failing measurement -> 100% stable: from the `time` of the first Failed measurement in status (the operator's
  clock, on this machine: when it measured) to the first moment a watch showed both: no canary pod with Ready=True
  but one being deleted (pods watched), and no canary weight in status (status.canary gone, or its actualWeight 0).
  Goal: <= one interval + 2 s.
Beside it, from the same start: the rollback written in status (Degraded) as the watch saw it; the last Ready
canary endpoint gone from the Service's EndpointSlices (what a kube-proxy would stop sending to); the stable back
at full strength (it gave up a pod for the canary's, and takes it back only after the rollback). And, before it,
how long the canary took traffic until the failing measurement (analysis.startedAt -> first Failed measurement).
"""

from __future__ import annotations

import contextlib
import json
import os
import statistics
import tempfile
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from modeldeploy_testkit.agent_pods import REVISION_LABEL, model_deployment, start_node_agent
from modeldeploy_testkit.bench import options
from modeldeploy_testkit.bench.common import (
    USER_AGENT,
    Report,
    bench_dir,
    bench_operator,
    load_note,
    log,
    other_operators,
    write_json,
)
from modeldeploy_testkit.cluster import Cluster, scratch_namespace, start_cluster
from modeldeploy_testkit.custom_models import ECHO_FIRST_FEATURE, FAILS_EVERY_FIFTH_CALL, PAYLOAD, write_custom_model
from modeldeploy_testkit.kubeapi import KubeAPI
from modeldeploy_testkit.prometheus import start_prometheus
from modeldeploy_testkit.scripts import StartError, cluster_dir
from modeldeploy_testkit.traffic import SteadyTraffic
from modeldeploy_testkit.waiting import wait_until
from modeldeploy_testkit.watches import EventLog, Seen

NAME = "judged"
REPLICAS = 2
STABLE = "1.0.0"
INTERVAL_SECONDS = 5
GOAL_SECONDS = INTERVAL_SECONDS + 2.0
MODELDEPLOYMENTS = "/apis/modeldeploy.io/v1alpha1/namespaces/{namespace}/modeldeployments"
PODS = "/api/v1/namespaces/{namespace}/pods"
ENDPOINT_SLICES = "/apis/discovery.k8s.io/v1/namespaces/{namespace}/endpointslices"


def ready_pods_over_time(pods: list[Seen], revision: str) -> list[tuple[float, int]]:
    """(time, number of the revision's pods whose Ready condition is True) after each pod event.

    A pod being deleted does not count: its endpoint is out of the Service's ready set from the moment deletion
    begins, while the pod itself stays Ready through its preStop delay and drain (docs/shutdown.md)."""
    ready: dict[str, bool] = {}
    series = []
    for event in pods:
        metadata = event.body["metadata"]
        if (metadata.get("labels") or {}).get(REVISION_LABEL) != revision:
            continue
        if event.kind == "DELETED":
            ready.pop(metadata["uid"], None)
        else:
            conditions = (event.body.get("status") or {}).get("conditions") or []
            ready[metadata["uid"]] = not metadata.get("deletionTimestamp") and any(
                c["type"] == "Ready" and c["status"] == "True" for c in conditions
            )
        series.append((event.at, sum(ready.values())))
    return series


def ready_endpoints_over_time(slices: list[Seen], pod_names: set[str]) -> list[tuple[float, int]]:
    """(time, ready endpoints that are one of `pod_names`) after each EndpointSlice event."""
    by_slice: dict[str, int] = {}
    series = []
    for event in slices:
        name = event.body["metadata"]["name"]
        if event.kind == "DELETED":
            by_slice.pop(name, None)
        else:
            by_slice[name] = sum(
                1
                for endpoint in event.body.get("endpoints") or []
                if (endpoint.get("conditions") or {}).get("ready")
                and (endpoint.get("targetRef") or {}).get("name") in pod_names
            )
        series.append((event.at, sum(by_slice.values())))
    return series


def first_time(series: list[tuple[float, int]], after: float, check: Any) -> float | None:
    """The first moment at or after `after` when the value (the last one reported by then) satisfies `check`."""
    reported = [value for moment, value in series if moment <= after]
    if reported and check(reported[-1]):
        return after
    return next((moment for moment, value in series if moment > after and check(value)), None)


def parse_time(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


# --- the benchmark --------------------------------------------------------------------------------------------------


@dataclass
class Sample:
    version: str
    revision: str
    live_to_failing: float
    """analysis.startedAt (the canary's first Ready pod) -> the first Failed measurement."""
    to_stable: float | None
    """The first Failed measurement -> no Ready canary pod and no canary weight in status (the headline)."""
    to_degraded_seen: float | None
    to_no_ready_endpoint: float | None
    to_full_strength: float | None
    measured_value: float | None
    message: str


def rollout_spec(prometheus_url: str) -> dict[str, Any]:
    return {
        "strategy": "Canary",
        "steps": [{"setWeight": 50}, {"pause": {"duration": "5m"}}],
        "progressDeadlineSeconds": 180,
        "analysis": {
            "interval": f"{INTERVAL_SECONDS}s",
            "failureLimit": 0,
            "prometheus": {"address": prometheus_url},
            "metrics": [{"name": "success-rate", "builtin": "successRate", "min": 0.99}],
        },
    }


def status_of(api: KubeAPI, namespace: str) -> dict[str, Any]:
    body = api.get(MODELDEPLOYMENTS.format(namespace=namespace) + f"/{NAME}") or {}
    return dict(body.get("status") or {})


def one_sample(
    api: KubeAPI,
    namespace: str,
    version: str,
    artifact_uri: str,
    sha256: str,
    watches: dict[str, EventLog],
) -> Sample:
    started = time.time()
    patch = {"spec": {"model": {"version": version, "uri": artifact_uri, "sha256": sha256}}}
    api.patch(MODELDEPLOYMENTS.format(namespace=namespace) + f"/{NAME}", patch)

    def rolled_back() -> dict[str, Any] | None:
        status = status_of(api, namespace)
        aborted = status.get("aborted") or {}
        return status if status.get("phase") == "Degraded" and aborted.get("version") == version else None

    status = wait_until(rolled_back, timeout=180, interval=0.2, what=f"{version} rolled back")
    revision = str(status["aborted"]["revision"])
    wait_until(
        lambda: (status_of(api, namespace).get("stable") or {}).get("readyReplicas") == REPLICAS,
        timeout=120,
        interval=0.2,
        what=f"the stable back at {REPLICAS} ready replicas",
    )
    analysis = status.get("analysis") or {}
    if analysis.get("revision") != revision:
        raise SystemExit(f"status.analysis is about {analysis.get('revision')}, not the rolled-back {revision}")
    metric = next(m for m in analysis.get("metrics") or [] if m["name"] == "success-rate")
    failing = [m for m in metric.get("measurements") or [] if m["phase"] == "Failed"]
    if not failing:
        raise SystemExit(f"{version} was rolled back without a Failed measurement: {status.get('aborted')}")
    first_failed = failing[-1]  # newest first
    failed_at = parse_time(first_failed["time"])

    statuses = [(e.at, e.body.get("status") or {}) for e in watches["mdep"].since(started)]
    weight = [(at, int((s.get("canary") or {}).get("actualWeight") or 0)) for at, s in statuses]
    degraded = [(at, int((s.get("aborted") or {}).get("revision") == revision)) for at, s in statuses]
    pods = ready_pods_over_time(watches["pods"].all(), revision)
    canary_pods = {
        e.body["metadata"]["name"]
        for e in watches["pods"].all()
        if (e.body["metadata"].get("labels") or {}).get(REVISION_LABEL) == revision
    }
    endpoints = ready_endpoints_over_time(watches["slices"].all(), canary_pods)
    stable_ready = [(at, int((s.get("stable") or {}).get("readyReplicas") or 0)) for at, s in statuses]

    no_weight = first_time(weight, failed_at, lambda value: value == 0)
    no_ready_pod = first_time(pods, failed_at, lambda value: value == 0)
    stable_at = max(no_weight, no_ready_pod) if no_weight is not None and no_ready_pod is not None else None
    degraded_seen = first_time(degraded, failed_at, lambda value: value == 1)
    no_endpoint = first_time(endpoints, failed_at, lambda value: value == 0)
    full = first_time(stable_ready, degraded_seen or failed_at, lambda value: value >= REPLICAS)

    def since_failure(moment: float | None) -> float | None:
        return None if moment is None else round(moment - failed_at, 3)

    return Sample(
        version=version,
        revision=revision,
        live_to_failing=round(failed_at - parse_time(analysis["startedAt"]), 3),
        to_stable=since_failure(stable_at),
        to_degraded_seen=since_failure(degraded_seen),
        to_no_ready_endpoint=since_failure(no_endpoint),
        to_full_strength=since_failure(full),
        measured_value=first_failed.get("value"),
        message=str(status["aborted"]["message"]),
    )


def describe(values: list[float | None]) -> str:
    known = [value for value in values if value is not None]
    if not known:
        return "n/a"
    missing = f", {len(values) - len(known)} not seen" if len(known) < len(values) else ""
    return f"median {statistics.median(known):.2f} s, worst {max(known):.2f} s (n={len(known)}{missing})"


def main(argv: list[str] | None = None) -> int:
    parser = options("analysis", __doc__)
    parser.add_argument("--samples", type=int, default=3, help="failing versions to roll out (default 3)")
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        raise SystemExit("the node agent needs root (network namespaces, veth pairs): run this benchmark as root")

    cluster = start_cluster(with_crd=True)
    try:
        start_node_agent()
        prometheus, _ = start_prometheus()
    except StartError as error:
        raise SystemExit(str(error)) from None

    with scratch_namespace(cluster, "bench-analysis") as namespace:
        return run(args.samples, cluster, namespace, prometheus.url)


def run(samples_wanted: int, cluster: Cluster, namespace: str, prometheus_url: str) -> int:
    """The samples, in a namespace of their own, and the report."""
    api = cluster.api(USER_AGENT)
    models_dir = Path(tempfile.mkdtemp(prefix="bench-analysis-"))
    echo = write_custom_model(models_dir, "echo", ECHO_FIRST_FEATURE)
    flaky = write_custom_model(models_dir, "flaky", FAILS_EVERY_FIFTH_CALL)
    operator = bench_operator(cluster_dir() / "logs" / "operator-bench-analysis.log", [namespace])
    others = other_operators()
    if others:
        log("WARNING: other `modeldeploy run` processes act on this benchmark's resources too:")
        for line in others:
            log(f"  {line}")
    operator.start()
    watches = {
        "mdep": EventLog(
            api, MODELDEPLOYMENTS.format(namespace=namespace), {"fieldSelector": f"metadata.name={NAME}"}, 5
        ).start(),
        "pods": EventLog(api, PODS.format(namespace=namespace), timeout_seconds=5).start(),
        "slices": EventLog(
            api,
            ENDPOINT_SLICES.format(namespace=namespace),
            {"labelSelector": f"kubernetes.io/service-name={NAME}"},
            5,
        ).start(),
    }
    samples: list[Sample] = []
    traffic: SteadyTraffic | None = None
    try:
        body = model_deployment(NAME, echo, STABLE, REPLICAS, rollout_spec(prometheus_url))
        cluster.kubectl("apply", "--server-side", "-n", namespace, "-f", "-", input=json.dumps(body))
        log(f"serving {STABLE} on {REPLICAS} pods of the node agent's node")
        wait_until(
            lambda: (
                status_of(api, namespace).get("phase") == "Healthy"
                and (status_of(api, namespace).get("stable") or {}).get("readyReplicas") == REPLICAS
            ),
            timeout=180,
            interval=0.2,
            what=f"{STABLE} Healthy",
        )
        traffic = SteadyTraffic(cluster, namespace, NAME, payload=PAYLOAD)
        traffic.start()
        for index in range(samples_wanted):
            version = f"2.0.{index}"
            log(f"sample {index + 1}/{samples_wanted}: rolling out {version}, which fails 1 request in 5")
            sample = one_sample(api, namespace, version, flaky.uri, flaky.sha256, watches)
            log(
                f"  failed measurement {sample.measured_value} after {sample.live_to_failing:.1f}s of canary; "
                f"100% stable {sample.to_stable}s later"
            )
            samples.append(sample)
    finally:
        if traffic is not None:
            with contextlib.suppress(AssertionError):
                traffic.stop()
        for recorder in watches.values():
            recorder.stop()
        operator.stop()

    report = Report(
        f"Canary analysis: a version failing 20% of requests (interval {INTERVAL_SECONDS}s, failureLimit 0, "
        f"{samples_wanted} samples)"
    )
    headline = [s.to_stable for s in samples]
    worst = max((value for value in headline if value is not None), default=None)
    met = worst is not None and None not in headline and worst <= GOAL_SECONDS
    report.add(
        "failing measurement -> 100% stable",
        describe(headline),
        f"<= {GOAL_SECONDS:g} s (one interval + 2 s)",
        met,
    )
    report.add("  failing measurement -> Degraded seen", describe([s.to_degraded_seen for s in samples]))
    report.add("  failing measurement -> no ready canary endpoint", describe([s.to_no_ready_endpoint for s in samples]))
    report.add(
        "  failing measurement -> stable at full strength",
        describe([s.to_full_strength for s in samples]),
        note=f"the stable gave a pod to the canary and starts it again after the rollback; {REPLICAS} replicas",
    )
    report.add(
        "canary Ready -> failing measurement",
        describe([s.live_to_failing for s in samples]),
        note=f"the first measurement is one interval ({INTERVAL_SECONDS}s) after the canary's first Ready pod",
    )
    report.add("success rate measured", ", ".join(f"{s.measured_value:.3f}" for s in samples if s.measured_value))
    report.print()
    print(f"\n{load_note()}")
    if traffic is not None:
        print(traffic.summary())
    write_json(
        bench_dir() / "analysis.json",
        {
            "goal_seconds": GOAL_SECONDS,
            "interval_seconds": INTERVAL_SECONDS,
            "samples": [sample.__dict__ for sample in samples],
        },
    )
    return 0
