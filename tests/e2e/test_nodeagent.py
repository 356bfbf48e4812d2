"""Model servers as real processes: ModelDeployments placed on the node agent's nodes.

kwok's pods are not processes, so these tests place the serving pods on a node run by the node agent
(modeldeploy_testkit.nodeagent): each pod gets a network namespace, a veth and a pod IP from 198.19.128.0/18, and
its container runs the real `modeldeploy-runtime` with the env the operator wrote. Readiness is the runtime's own
/health/status through the agent's probe; traffic comes from the kit's load generator, which resolves the Service's
EndpointSlices like kube-proxy; metrics go through a real Prometheus (testkit/scripts/prometheus-up.sh)
discovering the pods from the API server.

The agent and Prometheus are started by session fixtures when they are not running. When they cannot start
(not root, Prometheus not built) the tests fail and say why: they never pass without running.
"""

from __future__ import annotations

import contextlib
import hashlib
import ipaddress
import json
import math
import os
import signal
import subprocess
import time
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

from modeldeploy_testkit.agent_pods import (
    AGENT_NODE,
    PLACEMENT,
    REVISION_LABEL,
    SCRAPE_INTERVAL_SECONDS,
    VERSION_LABEL,
    Artifact,
    NodeAgent,
    PodWatch,
    healthy,
    is_ready,
    model_deployment,
    pods_of,
)
from modeldeploy_testkit.cluster import Cluster, scratch_namespace
from modeldeploy_testkit.nodeagent.network import AGENT_POD_RANGE, CLUSTER_POD_RANGE, check_route
from modeldeploy_testkit.operator_process import OperatorProcess
from modeldeploy_testkit.prometheus import Prometheus
from modeldeploy_testkit.resources import apply, get, patch_spec, wait_for_status
from modeldeploy_testkit.scripts import run_script
from modeldeploy_testkit.traffic import loadgen
from modeldeploy_testkit.waiting import http_get, wait_until

pytestmark = [pytest.mark.nodeagent, pytest.mark.usefixtures("operator")]

# Two-sided z for the traffic split: a correct spread falls outside with probability ~6e-5.
SPLIT_Z = 4.0
FEATURES = np.array([[0.0, 1.0], [1.0, 0.0], [0.9, 0.2], [0.1, 0.8]])


@pytest.fixture(scope="module")
def artifact(tmp_path_factory: pytest.TempPathFactory) -> Artifact:
    """A tiny sklearn model, trained now, served from a file:// URI."""
    path = tmp_path_factory.mktemp("model") / "model.joblib"
    joblib.dump(LogisticRegression().fit(FEATURES, [0, 1, 1, 0]), path)
    return Artifact(path.as_uri(), hashlib.sha256(path.read_bytes()).hexdigest())


def klog_time(line: str) -> float:
    """Epoch seconds of a klog header (`I1127 10:10:07.123456 ...`, local time, no year)."""
    stamp = line[1:21]
    now = datetime.now().astimezone()
    parsed = datetime.strptime(f"{now.year}{stamp}", "%Y%m%d %H:%M:%S.%f").replace(tzinfo=now.tzinfo)
    return parsed.timestamp()


def runtime_status(pod: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    """GET /health/status of the pod's runtime, through its pod IP, after checking the route."""
    ip = pod["status"]["podIP"]
    check_route(ip)
    port = next(p["containerPort"] for p in pod["spec"]["containers"][0]["ports"] if p["name"] == "http")
    answer = http_get(f"http://{ip}:{port}/health/status", timeout=5)
    if answer is None:
        raise ConnectionError(f"nothing answers on {ip}:{port}")
    return answer.status, json.loads(answer.body)


# --- one model server: ready after load, restarted after a kill, stopped on deletion -------------------------------


@dataclass
class Served:
    namespace: str
    name: str
    watch: PodWatch
    applied_at: float


@pytest.fixture(scope="module")
def served(
    cluster: Cluster, node_agent: NodeAgent, artifact: Artifact, operator_process: OperatorProcess
) -> Iterator[Served]:
    operator_process.start()
    api = cluster.api()
    with scratch_namespace(cluster, "agent-served") as namespace, PodWatch(api, namespace) as watch:
        applied_at = time.time()
        apply(cluster, namespace, model_deployment("served", artifact, "1.0.0", 1, {"strategy": "Immediate"}))
        wait_for_status(cluster, namespace, "served", healthy("1.0.0", 1), timeout=120, what="served Healthy")
        yield Served(namespace, "served", watch, applied_at)


def test_pod_becomes_ready_only_after_the_model_loaded(served: Served, node_agent: NodeAgent, cluster: Cluster) -> None:
    [pod] = pods_of(cluster, served.namespace)
    assert pod["spec"]["nodeName"] == AGENT_NODE
    assert ipaddress.ip_address(pod["status"]["podIP"]) in AGENT_POD_RANGE
    assert pod["status"]["hostIP"] == "198.19.255.254"
    container = pod["status"]["containerStatuses"][0]
    assert container["state"].get("running")
    assert container["ready"]
    assert container["restartCount"] == 0

    # The agent ran the real runtime with the operator's env: it says it loaded the model and verified it.
    log = node_agent.log_of(pod)
    loaded = [line for line in log.splitlines() if '"Loaded model"' in line]
    assert loaded, f"the runtime never logged a loaded model:\n{log[-2000:]}"
    assert 'version="1.0.0"' in loaded[0]
    assert "verified=true" in loaded[0]
    loaded_at = klog_time(loaded[0])

    observations = served.watch.of(pod["metadata"]["uid"])
    first_ready = next(o for o in observations if o.ready)
    assert any(not o.ready and o.phase == "Running" for o in observations), "never seen Running and not Ready"
    assert first_ready.at >= loaded_at, (
        f"Ready seen at {first_ready.at:.3f}, before the model was loaded at {loaded_at:.3f}"
    )
    print(
        f"\npod {pod['metadata']['name']}: applied -> loaded {loaded_at - served.applied_at:.1f}s, "
        f"loaded -> Ready seen {first_ready.at - loaded_at:.2f}s"
    )
    # And the resource's own Ready condition followed.
    status = get(cluster, "mdep", served.name, "-n", served.namespace)["status"]
    ready_condition = next(c for c in status["conditions"] if c["type"] == "Ready")
    assert ready_condition["status"] == "True"
    assert datetime.fromisoformat(ready_condition["lastTransitionTime"]).timestamp() >= math.floor(loaded_at)
    code, body = runtime_status(pod)
    assert code == 200
    assert body["jsonData"]["version"] == "1.0.0"
    report = loadgen(cluster, served.namespace, "served", "--requests", "20", "--rate", "50")
    assert report["answered"] == 20
    assert report["by_version"] == {"1.0.0": 20}
    assert report["mismatches"] == 0


def test_killed_model_process_makes_the_pod_unready_then_it_is_restarted(
    served: Served, node_agent: NodeAgent, cluster: Cluster
) -> None:
    wait_for_status(cluster, served.namespace, served.name, healthy("1.0.0", 1), timeout=120)
    [pod] = pods_of(cluster, served.namespace)
    uid = pod["metadata"]["uid"]
    restarts = pod["status"]["containerStatuses"][0]["restartCount"]
    pid = node_agent.container_pid(pod)
    netns = subprocess.run(["ip", "netns", "identify", str(pid)], capture_output=True, text=True, check=True)
    assert netns.stdout.strip().startswith("mdpod-"), "the model process does not run in the pod's namespace"

    killed_at = time.time()
    os.kill(pid, signal.SIGKILL)
    unready = wait_until(
        lambda: next((o for o in served.watch.of(uid) if o.at >= killed_at and not o.ready), None),
        timeout=15,
        what="the pod to be reported not Ready",
    )
    back = wait_until(
        lambda: next(
            (o for o in served.watch.of(uid) if o.at >= unready.at and o.ready and o.restarts == restarts + 1), None
        ),
        timeout=90,
        what="the restarted container to be Ready",
    )
    [after] = pods_of(cluster, served.namespace)
    assert after["metadata"]["uid"] == uid, "the pod was replaced instead of its container restarted"
    status = after["status"]["containerStatuses"][0]
    assert status["restartCount"] == restarts + 1
    assert status["lastState"]["terminated"]["exitCode"] == 137
    assert not Path(f"/proc/{pid}").exists()
    assert node_agent.container_pid(after) != pid
    print(f"\nkilled -> not Ready {unready.at - killed_at:.2f}s, -> Ready again {back.at - killed_at:.1f}s")
    wait_for_status(cluster, served.namespace, served.name, healthy("1.0.0", 1), timeout=60)


def test_restarted_agent_adopts_running_containers(served: Served, node_agent: NodeAgent, cluster: Cluster) -> None:
    wait_for_status(cluster, served.namespace, served.name, healthy("1.0.0", 1), timeout=120)
    [pod] = pods_of(cluster, served.namespace)
    uid = pod["metadata"]["uid"]
    restarts = pod["status"]["containerStatuses"][0]["restartCount"]
    pid = node_agent.container_pid(pod)
    agent = node_agent.pid()
    # A crash: no chance to stop anything. The pod's processes carry on without the agent.
    os.kill(agent, signal.SIGKILL)
    wait_until(lambda: not Path(f"/proc/{agent}").exists(), timeout=10, what="the agent to die")
    assert Path(f"/proc/{pid}").exists()
    restarted_at = time.time()
    run_script("nodeagent-up.sh")
    assert node_agent.pid() != agent
    time.sleep(2)  # two passes of the pod worker
    [after] = pods_of(cluster, served.namespace)
    assert after["metadata"]["uid"] == uid
    assert is_ready(after)
    assert after["status"]["containerStatuses"][0]["restartCount"] == restarts
    assert node_agent.container_pid(after) == pid, "the container was restarted instead of adopted"
    assert not any(not o.ready for o in served.watch.of(uid) if o.at >= restarted_at)
    # Adopted means supervised: the new agent still learns how the process ends, and restarts it.
    os.kill(pid, signal.SIGKILL)
    wait_until(
        lambda: next(
            (o for o in served.watch.of(uid) if o.at >= restarted_at and o.ready and o.restarts == restarts + 1), None
        ),
        timeout=90,
        what="the adopted container to be restarted after its process was killed",
    )
    [again] = pods_of(cluster, served.namespace)
    assert again["status"]["containerStatuses"][0]["lastState"]["terminated"]["exitCode"] == 137
    wait_for_status(cluster, served.namespace, served.name, healthy("1.0.0", 1), timeout=60)


def test_deleting_a_pod_stops_its_process_and_network(served: Served, node_agent: NodeAgent, cluster: Cluster) -> None:
    wait_for_status(cluster, served.namespace, served.name, healthy("1.0.0", 1), timeout=120)
    [pod] = pods_of(cluster, served.namespace)
    pid = node_agent.container_pid(pod)
    ip = pod["status"]["podIP"]
    netns = subprocess.run(["ip", "netns", "identify", str(pid)], capture_output=True, text=True).stdout.strip()
    assert netns
    started = time.monotonic()
    cluster.kubectl("delete", "pod", "-n", served.namespace, pod["metadata"]["name"], "--wait=false")
    wait_until(lambda: not Path(f"/proc/{pid}").exists(), timeout=40, what="the model process to exit")
    stopped = time.monotonic() - started
    wait_until(
        lambda: (
            cluster.kubectl("get", "pod", "-n", served.namespace, pod["metadata"]["name"], check=False).returncode != 0
        ),
        timeout=30,
        what="the pod object to be deleted",
    )
    netns_list = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True).stdout
    assert netns not in netns_list
    # The /32 route went with the veth: the pod IP falls back to the cluster's catch-all.
    route = subprocess.run(["ip", "route", "get", ip], capture_output=True, text=True, check=True).stdout
    assert "dev mdpods0" in route, route
    print(f"\ndeleted -> process gone {stopped:.1f}s")
    # The Deployment replaces it, on the agent's node again.
    wait_for_status(cluster, served.namespace, served.name, healthy("1.0.0", 1), timeout=120)
    [replacement] = pods_of(cluster, served.namespace)
    assert replacement["metadata"]["uid"] != pod["metadata"]["uid"]
    assert replacement["spec"]["nodeName"] == AGENT_NODE


@pytest.mark.usefixtures("node_agent")
def test_unknown_image_is_reported_as_a_failed_pull(cluster: Cluster, namespace: str) -> None:
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "nowhere"},
        "spec": {
            **PLACEMENT,
            "containers": [{"name": "main", "image": "modeldeploy.test/not-on-this-node:1.0"}],
        },
    }
    with PodWatch(cluster.api(), namespace) as watch:
        cluster.kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(pod))
        wait_until(
            lambda: any(o.waiting == "ImagePullBackOff" for o in watch.seen),
            timeout=30,
            what="ImagePullBackOff",
        )
    reasons = [o.waiting for o in watch.seen if o.waiting]
    assert reasons.index("ErrImagePull") < reasons.index("ImagePullBackOff")
    body = get(cluster, "pod", "nowhere", "-n", namespace)
    assert body["spec"]["nodeName"] == AGENT_NODE
    assert body["status"]["phase"] == "Pending"
    assert not is_ready(body)
    assert (
        "modeldeploy.test/not-on-this-node:1.0" in body["status"]["containerStatuses"][0]["state"]["waiting"]["message"]
    )


# --- a version that never loads ------------------------------------------------------------------------------------


def test_wrong_digest_stays_unready_and_is_rolled_back(
    cluster: Cluster, namespace: str, artifact: Artifact, node_agent: NodeAgent
) -> None:
    api = cluster.api()
    rollout = {"strategy": "Immediate", "progressDeadlineSeconds": 20}
    with PodWatch(api, namespace) as watch:
        apply(cluster, namespace, model_deployment("guarded", artifact, "1.0.0", 1, rollout))
        before = wait_for_status(cluster, namespace, "guarded", healthy("1.0.0", 1), timeout=120)
        patch_spec(cluster, namespace, "guarded", {"model": {"version": "2.0.0", "sha256": "0" * 64}})
        progressing = wait_for_status(
            cluster, namespace, "guarded", lambda s: (s.get("canary") or {}).get("version") == "2.0.0"
        )
        bad_revision = progressing["canary"]["revision"]
        refused: list[dict[str, Any]] = []

        def degraded() -> bool:
            """Degraded yet? Meanwhile, ask the bad pod's runtime why it is not ready, while it still runs."""
            if not refused:
                for pod in pods_of(cluster, namespace, f"{REVISION_LABEL}={bad_revision}"):
                    if (pod.get("status") or {}).get("phase") == "Running" and pod["status"].get("podIP"):
                        with contextlib.suppress(OSError, ValueError):
                            code, body = runtime_status(pod)
                            if code == 503 and body.get("state") == "failed":
                                refused.append(body)
            status = get(cluster, "mdep", "guarded", "-n", namespace).get("status") or {}
            return status.get("phase") == "Degraded"

        wait_until(degraded, timeout=90, interval=0.5, what="Degraded")
        rolled_back = wait_for_status(cluster, namespace, "guarded", lambda s: s.get("phase") == "Degraded")
        wait_until(
            lambda: not pods_of(cluster, namespace, f"{REVISION_LABEL}={bad_revision}"),
            timeout=60,
            what="the rolled-back revision's pods to be stopped",
        )
    bad = [o for o in list(watch.seen) if o.revision == bad_revision]
    assert bad, "the bad revision's pod was never observed"
    # Running (liveness passed, never restarted) but never Ready: a revision that does not become ready.
    assert any(o.phase == "Running" for o in bad)
    assert not any(o.ready for o in bad), "the pod with the wrong digest was reported Ready"
    assert max(o.restarts for o in bad) == 0
    if refused:
        assert refused[0]["reason"] == "digest_mismatch"
    bad_pod = {"metadata": {"namespace": namespace, "name": bad[0].name, "uid": bad[0].uid}}
    assert 'reason="digest_mismatch"' in node_agent.log_of(bad_pod)
    conditions = {c["type"]: c for c in rolled_back["conditions"]}
    assert conditions["Degraded"]["reason"] == "ProgressDeadlineExceeded"
    assert rolled_back["stable"]["revision"] == before["stable"]["revision"]
    assert rolled_back["history"][0]["outcome"] == "RolledBack"
    print(f"\nwrong digest: runtime said {refused[0]['reason'] if refused else '(not asked in time)'}; rolled back")
    # The serving version kept serving all along.
    report = loadgen(cluster, namespace, "guarded", "--requests", "20", "--rate", "50")
    assert report["by_version"] == {"1.0.0": 20}
    assert report["errors"] == 0


# --- a canary at 25% with 4 ready pods ------------------------------------------------------------------------------


@dataclass
class Canary:
    namespace: str
    name: str
    stable_revision: str
    canary_revision: str


def ready_endpoints(cluster: Cluster, namespace: str, service: str) -> list[dict[str, Any]]:
    slices = get(cluster, "endpointslices", "-n", namespace, "-l", f"kubernetes.io/service-name={service}")["items"]
    return [e for s in slices for e in s.get("endpoints") or [] if (e.get("conditions") or {}).get("ready")]


@pytest.fixture(scope="module")
def canary_at_25(
    cluster: Cluster, node_agent: NodeAgent, artifact: Artifact, operator_process: OperatorProcess
) -> Iterator[Canary]:
    operator_process.start()
    """4 replicas, version 2.0.0 paused at 25%: 3 ready stable pods and 1 ready canary pod behind Service `split`."""
    rollout = {"strategy": "Canary", "steps": [{"setWeight": 25}, {"pause": {}}], "progressDeadlineSeconds": 180}
    with scratch_namespace(cluster, "agent-canary") as namespace:
        apply(cluster, namespace, model_deployment("split", artifact, "1.0.0", 4, rollout))
        stable = wait_for_status(cluster, namespace, "split", healthy("1.0.0", 4), timeout=180, what="4 ready")
        patch_spec(cluster, namespace, "split", {"model": {"version": "2.0.0"}})
        paused = wait_for_status(
            cluster,
            namespace,
            "split",
            lambda s: s.get("phase") == "Paused" and (s.get("canary") or {}).get("actualWeight") == 25,
            timeout=180,
            what="the pause at 25%",
        )
        # The stable pod given up must be gone from the Service's ready endpoints.
        wait_until(
            lambda: len(ready_endpoints(cluster, namespace, "split")) == 4,
            timeout=60,
            what="exactly 4 ready endpoints",
        )
        yield Canary(namespace, "split", stable["stable"]["revision"], paused["canary"]["revision"])


def test_canary_traffic_splits_by_ready_pods_and_versions_match_pods(cluster: Cluster, canary_at_25: Canary) -> None:
    namespace = canary_at_25.namespace
    pods = pods_of(cluster, namespace)
    by_revision: dict[str, list[dict[str, Any]]] = {}
    for pod in pods:
        if is_ready(pod):
            by_revision.setdefault(pod["metadata"]["labels"][REVISION_LABEL], []).append(pod)
    assert len(by_revision[canary_at_25.stable_revision]) == 3
    assert len(by_revision[canary_at_25.canary_revision]) == 1
    assert all(p["spec"]["nodeName"] == AGENT_NODE for p in pods)

    total = 2000
    report = loadgen(cluster, namespace, "split", "--requests", str(total), "--rate", "400", "--concurrency", "8")
    assert report["endpoints"] == 4
    assert report["errors"] == 0, report["error_examples"]
    assert report["answered"] == total
    assert report["mismatches"] == 0, report["mismatch_examples"]
    assert set(report["by_version"]) == {"1.0.0", "2.0.0"}

    share = 0.25
    spread = SPLIT_Z * math.sqrt(total * share * (1 - share))
    low, high = math.ceil(total * share - spread), math.floor(total * share + spread)
    canary = report["by_version"]["2.0.0"]
    print(
        f"\n{total} requests at {report['achieved_rate']}/s: canary 2.0.0 answered {canary} "
        f"({100 * canary / total:.1f}%), expected {total * share:.0f} in [{low}, {high}] "
        f"(binomial n={total}, p={share}, ±{SPLIT_Z} sd); latency p50 {report['latency_ms']['p50']} ms"
    )
    for pod_name, row in sorted(report["by_pod"].items()):
        print(f"  {pod_name}: should serve {row['expected_version']}, answered {row['versions']}")
    assert low <= canary <= high
    for row in report["by_pod"].values():
        # Each of the 4 endpoints is picked with probability 1/4, whatever its version.
        assert low <= row["answered"] <= high, row
        assert set(row["versions"]) == {row["expected_version"]}


@pytest.mark.prometheus
def test_prometheus_sees_request_and_latency_series_of_both_versions(
    cluster: Cluster, canary_at_25: Canary, prometheus: Prometheus
) -> None:
    namespace = canary_at_25.namespace
    pods = {p["metadata"]["name"]: p for p in pods_of(cluster, namespace) if is_ready(p)}

    def scraped() -> bool:
        up = {
            t["labels"].get("pod"): t["health"]
            for t in prometheus.targets()
            if t["labels"].get("namespace") == namespace
        }
        return all(up.get(name) == "up" for name in pods)

    wait_until(scraped, timeout=60, interval=0.5, what="every ready pod to be a healthy Prometheus target")
    # Only pod IPs are ever scraped.
    for target in prometheus.targets():
        host = urllib.parse.urlsplit(target["scrapeUrl"]).hostname or ""
        assert ipaddress.ip_address(host) in CLUSTER_POD_RANGE, target["scrapeUrl"]

    selector = f'namespace="{namespace}"'
    requests_query = f'sum by (version) (modeldeploy_model_requests_total{{{selector}, outcome="success"}})'
    latency_query = f"sum by (version) (modeldeploy_model_request_duration_seconds_count{{{selector}}})"

    def totals(query: str) -> dict[str, float]:
        return {r["metric"].get("version", ""): float(r["value"][1]) for r in prometheus.query(query)}

    baseline = totals(requests_query)
    baseline_latency = totals(latency_query)
    report = loadgen(cluster, namespace, "split", "--requests", "400", "--rate", "400")
    assert report["errors"] == 0
    assert set(report["by_version"]) == {"1.0.0", "2.0.0"}
    sent_at = time.monotonic()

    def visible() -> bool:
        counts, latency = totals(requests_query), totals(latency_query)
        return all(
            counts.get(v, 0) >= baseline.get(v, 0) + n and latency.get(v, 0) >= baseline_latency.get(v, 0) + n
            for v, n in report["by_version"].items()
        )

    wait_until(visible, timeout=30, interval=0.1, what="the requests to show in Prometheus")
    delay = time.monotonic() - sent_at
    print(f"\nrequests of both versions visible in Prometheus {delay:.2f}s after the load ended")
    assert delay <= 2 * SCRAPE_INTERVAL_SECONDS, f"{delay:.2f}s is more than two scrape intervals"

    series = prometheus.query(f'modeldeploy_model_requests_total{{{selector}, outcome="success"}}')
    assert {s["metric"]["version"] for s in series} == {"1.0.0", "2.0.0"}
    # A stable pod given up at the canary step is scraped while it drains (not ready, or gone by now): its series
    # is checked against the pod where the pod can still be read.
    every = {p["metadata"]["name"]: p for p in pods_of(cluster, namespace)}
    for sample in series:
        labels = sample["metric"]
        pod = pods.get(labels["pod"]) or every.get(labels["pod"])
        if pod is None:
            assert labels["pod"].startswith("split-"), labels
            continue
        assert labels["namespace"] == namespace
        assert labels["revision"] == pod["metadata"]["labels"][REVISION_LABEL]
        assert labels["version"] == pod["metadata"]["labels"][VERSION_LABEL]
    buckets = f"modeldeploy_model_request_duration_seconds_bucket{{{selector}}}"
    latency = prometheus.query(f"histogram_quantile(0.99, sum by (version, le) ({buckets}))")
    assert {s["metric"]["version"] for s in latency} == {"1.0.0", "2.0.0"}
