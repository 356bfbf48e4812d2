"""No request dropped when model pods go: preStop delay, the runtime's drain, the kubelet's order, kube-proxy's view.

Model servers run as processes on the node agent's node (like tests/e2e/test_nodeagent.py), so a pod that goes is
really stopped the way a kubelet stops it: its preStop sleep, SIGTERM, the runtime's drain (readiness 503, still
answering, `Connection: close`), its exit, SIGKILL only past the grace period. Traffic comes from the load
generator, which follows the Service's EndpointSlices with a watch as kube-proxy does.

- one pod deleted: its endpoint leaves the ready set at once (ready=false, terminating=true, serving=true while
  the preStop hook runs, then serving=false), the pod keeps answering on its IP through the preStop delay and the
  drain, SIGTERM comes only after the preStop delay, and the container exits 0;
- a whole canary at a steady 20 requests/s through the Service: steps, a promotion, then a spec revert
  mid-canary; 0 requests fail, and every stopped container exited 0.
"""

from __future__ import annotations

import http.client
import threading
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import pytest

from modeldeploy_testkit.agent_pods import AGENT_NODE, NodeAgent, PodWatch, healthy, model_deployment, pods_of
from modeldeploy_testkit.canary_traffic import REPLICAS, whole_canary_under_traffic
from modeldeploy_testkit.cluster import Cluster
from modeldeploy_testkit.custom_models import ECHO_FIRST_FEATURE, write_custom_model
from modeldeploy_testkit.kubeapi import Manifest
from modeldeploy_testkit.nodeagent.network import check_route
from modeldeploy_testkit.resources import apply, wait_for_status
from modeldeploy_testkit.waiting import wait_until
from modeldeploy_testkit.watches import EventLog

pytestmark = [pytest.mark.nodeagent, pytest.mark.usefixtures("operator")]

# The operator's defaults (config.py): preStop sleep 5 s, drain 5 s, grace period 30 s.
PRESTOP_SECONDS = 5.0
DRAIN_SECONDS = 5.0
GRACE_SECONDS = 30.0


@pytest.fixture(scope="module")
def echo(tmp_path_factory: pytest.TempPathFactory) -> Any:
    return write_custom_model(tmp_path_factory.mktemp("models"), "echo", ECHO_FIRST_FEATURE)


def klog_time(line: str) -> float:
    """Epoch seconds of a klog header (`I1127 10:10:07.123456 ...`, local time, no year)."""
    stamp = line[1:21]
    now = datetime.now().astimezone()
    return datetime.strptime(f"{now.year}{stamp}", "%Y%m%d %H:%M:%S.%f").replace(tzinfo=now.tzinfo).timestamp()


@dataclass
class Probe:
    """A request straight to the pod's IP (route checked first), on a new connection each time."""

    at: float
    status: int | None
    connection: str | None
    error: str = ""


def probe_pod(ip: str, port: int, stop: threading.Event, seen: list[Probe]) -> None:
    check_route(ip)
    body = b'{"data": {"ndarray": [[0.5, 1.0]]}}'
    while not stop.is_set():
        at = time.time()
        connection = http.client.HTTPConnection(ip, port, timeout=5)
        try:
            connection.request("POST", "/api/v1.0/predictions", body=body, headers={"Content-Type": "application/json"})
            response = connection.getresponse()
            response.read()
            seen.append(Probe(at, response.status, response.getheader("Connection")))
        except OSError as error:
            seen.append(Probe(at, None, None, f"{type(error).__name__}: {error}"))
        finally:
            connection.close()
        stop.wait(0.2)


def test_a_deleted_pod_serves_through_its_prestop_then_drains_and_exits_0(
    cluster: Cluster, namespace: str, echo: Any, node_agent: NodeAgent
) -> None:
    api = cluster.api()
    apply(cluster, namespace, model_deployment("drained", echo, "1.0.0", 1, {"strategy": "Immediate"}))
    wait_for_status(cluster, namespace, "drained", healthy("1.0.0", 1), timeout=180, what="1.0.0 Healthy")
    [pod] = pods_of(cluster, namespace)
    assert pod["spec"]["nodeName"] == AGENT_NODE
    container = pod["spec"]["containers"][0]
    assert container["lifecycle"] == {"preStop": {"sleep": {"seconds": int(PRESTOP_SECONDS)}}}
    assert pod["spec"]["terminationGracePeriodSeconds"] == int(GRACE_SECONDS)
    ip, name = pod["status"]["podIP"], pod["metadata"]["name"]
    port = next(p["containerPort"] for p in container["ports"] if p["name"] == "http")

    slices_path = f"/apis/discovery.k8s.io/v1/namespaces/{namespace}/endpointslices"
    probes: list[Probe] = []
    stop = threading.Event()
    prober = threading.Thread(target=probe_pod, args=(ip, port, stop, probes), daemon=True)
    with (
        EventLog(api, slices_path, {"labelSelector": "kubernetes.io/service-name=drained"}, 5) as slices,
        PodWatch(api, namespace) as pod_watch,
    ):
        prober.start()
        wait_until(lambda: len(probes) >= 3, timeout=10, what="the pod to answer on its IP")
        deleted = time.time()
        cluster.kubectl("delete", "pod", "-n", namespace, name, "--wait=false")
        wait_until(
            lambda: any(e.kind == "DELETED" and e.body["metadata"]["name"] == name for e in pod_watch.all()),
            timeout=GRACE_SECONDS + 15,
            what="the pod object to be deleted",
        )
        gone = time.time()
        stop.set()
        prober.join(10)
        slice_events = slices.since(deleted - 1)
        pod_events = [e for e in pod_watch.all() if e.body["metadata"]["name"] == name]

    # The endpoint: out of the ready set as soon as the deletion began, serving while the preStop hook runs.
    states: list[tuple[float, dict[str, bool]]] = []
    for event in slice_events:
        for endpoint in event.body.get("endpoints") or []:
            if (endpoint.get("targetRef") or {}).get("name") == name:
                conditions = {k: bool(v) for k, v in (endpoint.get("conditions") or {}).items()}
                if not states or states[-1][1] != conditions:
                    states.append((event.at, conditions))
    terminating = [(at, c) for at, c in states if c.get("terminating")]
    assert terminating, f"the endpoint was never marked terminating: {states}"
    first_at, first = terminating[0]
    assert first == {"ready": False, "serving": True, "terminating": True}, states
    assert first_at - deleted < 2.0, f"marked terminating {first_at - deleted:.2f}s after the delete"
    assert all(not c["ready"] for _, c in terminating), states
    # serving follows the pod's Ready condition: true through the preStop delay, false once the server drains or
    # exits (the endpoint may also go with the pod before a false is seen), never true again.
    serving = [c["serving"] for _, c in terminating]
    assert serving == sorted(serving, reverse=True), states

    # The pod itself: answered on its IP through the preStop delay and the drain, every answer a 200.
    during = [p for p in probes if deleted <= p.at < deleted + PRESTOP_SECONDS + DRAIN_SECONDS - 0.5]
    assert len(during) >= 10, probes
    assert all(p.status == 200 for p in during), [p for p in during if p.status != 200]
    draining = [p for p in during if p.at >= deleted + PRESTOP_SECONDS + 0.5]
    assert draining
    assert all(p.connection == "close" for p in draining), draining

    # SIGTERM only after the preStop delay; the runtime drained and exited 0, well inside the grace period.
    log = node_agent.log_of(pod)
    [sigterm_line] = [line for line in log.splitlines() if '"Received SIGTERM, draining"' in line]
    sigterm_after = klog_time(sigterm_line) - deleted
    assert PRESTOP_SECONDS - 0.5 <= sigterm_after <= PRESTOP_SECONDS + 2.0, f"SIGTERM {sigterm_after:.2f}s after"
    final: Manifest = next(
        e.body
        for e in reversed(pod_events)
        if e.kind != "DELETED" and (e.body.get("status") or {}).get("containerStatuses")
    )
    terminated = final["status"]["containerStatuses"][0]["state"].get("terminated") or {}
    assert terminated.get("exitCode") == 0, final["status"]["containerStatuses"]
    assert gone - deleted < GRACE_SECONDS, f"the pod took {gone - deleted:.1f}s to go"
    print(
        f"\ndeleted -> endpoint terminating {first_at - deleted:.2f}s, SIGTERM {sigterm_after:.2f}s, "
        f"{len(during)} requests to the pod IP answered meanwhile, pod gone {gone - deleted:.1f}s (exit 0); "
        f"endpoint conditions {[c for _, c in states]}"
    )


@pytest.mark.slow
def test_no_request_fails_across_a_whole_canary(
    cluster: Cluster, namespace: str, echo: Any, node_agent: NodeAgent
) -> None:
    print()
    run = whole_canary_under_traffic(cluster, namespace, echo, log=print)
    print(run.line())
    print(run.summary)
    for pod in run.stopped:
        print(f"  stopped {pod.name} ({pod.version}): exit {pod.exit_code}, gone {pod.gone_after}s, {pod.conditions}")

    assert run.errors == 0, f"{run.errors_by_kind}: {run.error_examples}"
    assert run.rounds_not_sent == [], run.rounds_not_sent
    assert run.sent >= run.rate * 0.8 * run.seconds * 0.9, "the traffic was not steady"
    assert {"1.0.0", "2.0.0", "3.0.0"} <= set(run.answered), run.answered
    # 1.0.0's four pods, the 2.0.0 pod given up at 3.0.0's 25%, and 3.0.0's pod after the revert.
    assert len(run.stopped) >= REPLICAS + 1, [p.name for p in run.stopped]
    for pod in run.stopped:
        assert pod.exit_code == 0, f"{pod.name} exited {pod.exit_code}: not drained within the grace period"
        # In each Service's slice a pod either leaves the endpoints as it terminates (not ready, still serving), or
        # had left them before its deletion: when a rollout ends, `<name>` narrows to the stable revision's pods
        # first. A slice updated late may first show it already drained (serving false); never serving again after.
        for slice_name, states in pod.conditions.items():
            assert all(not c["ready"] and c["terminating"] for c in states), (slice_name, states)
            serving = [c["serving"] for c in states]
            assert serving == sorted(serving, reverse=True), (slice_name, states)
        if pod.conditions:
            assert any(
                states[0] == {"ready": False, "serving": True, "terminating": True}
                for states in pod.conditions.values()
            ), pod.conditions
    assert any(pod.conditions for pod in run.stopped), "no endpoint was ever seen terminating"
