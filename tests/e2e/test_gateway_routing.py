"""Canary rollouts through a real gateway: the operator owns an HTTPRoute, Contour programs Envoy from it, and the
load generator sends every request to Envoy on 127.0.0.1. The model servers are real processes on the node agent's
node, each answering with its version (meta.tags.version).

- exact weights: one canary pod beside 4 stable pods takes 5 % of 4,000 requests, then 20 % and 50 %, each share
  within 3 binomial standard deviations, and status shows the weight in force;
- shadow traffic: during a setMirror step every request is answered by the stable revision, and the canary's own
  request counter grows by as many requests as the stable's;
- shadow traffic judged: a canary whose predictions are shifted fails predictionShift during its mirror step and is
  rolled back before any weight moves (the load generator never gets one of its answers);
- one load generator across two rollouts: the first goes from a mirror through 20 % and 50 % to its promotion, the
  second is reverted mid-canary; no request fails, the old version answers nothing once the new one is promoted, and
  the reverted canary's last request is sent within 1 s of the revert being stored.
"""

from __future__ import annotations

import json
import math
import threading
import time
from typing import Any

import pytest

from modeldeploy_testkit.agent_pods import RUNTIME_METRICS_PORT, Artifact, healthy, model_deployment, pods_of
from modeldeploy_testkit.cluster import Cluster
from modeldeploy_testkit.custom_models import ECHO_FIRST_FEATURE, SHIFTED_OUTPUTS, write_custom_model
from modeldeploy_testkit.custom_models import PAYLOAD as SPREAD_PAYLOAD
from modeldeploy_testkit.gateway import Gateway
from modeldeploy_testkit.nodeagent.network import check_route
from modeldeploy_testkit.prometheus import Prometheus
from modeldeploy_testkit.resources import apply, get, mdep, patch_spec, status_of, wait_for_status
from modeldeploy_testkit.runtime_server import parse_metrics
from modeldeploy_testkit.traffic import GatewayLoad, loadgen_via_gateway
from modeldeploy_testkit.waiting import http_get, wait_until

pytestmark = [
    pytest.mark.nodeagent,
    pytest.mark.gateway,
    pytest.mark.timeout(1200),
    pytest.mark.usefixtures("node_agent", "operator", "route_crds"),
]

PAYLOAD: dict[str, Any] = {"data": {"ndarray": [[0.5, 1.0]]}}
SPLIT_REQUESTS = 4000
SPLIT_Z = 3.0
REQUESTS_TOTAL = "modeldeploy_model_requests_total"
STEP_TIMEOUT = 240.0


@pytest.fixture(scope="module")
def echo(tmp_path_factory: pytest.TempPathFactory) -> Artifact:
    return write_custom_model(tmp_path_factory.mktemp("models"), "echo", ECHO_FIRST_FEATURE)


def host_for(name: str, namespace: str) -> str:
    return f"{name}.{namespace}.modeldeploy.test"


def routed(name: str, namespace: str, echo: Artifact, gateway: Gateway, steps: list[dict[str, Any]]) -> dict[str, Any]:
    rollout = {"strategy": "Canary", "steps": steps, "progressDeadlineSeconds": int(STEP_TIMEOUT)}
    body = model_deployment(name, echo, "1.0.0", 4, rollout)
    body["spec"]["trafficRouting"] = {
        "gatewayAPI": {
            "parentRefs": [{"name": gateway.name, "namespace": gateway.namespace}],
            "hostnames": [host_for(name, namespace)],
        }
    }
    return body


def bump(cluster: Cluster, namespace: str, name: str, version: str) -> None:
    patch_spec(cluster, namespace, name, {"model": {"version": version}})


def paused_at(step: int) -> Any:
    return lambda s: s.get("phase") == "Paused" and s.get("currentStepIndex") == step


def send(gateway: Gateway, host: str, *args: str) -> dict[str, Any]:
    return loadgen_via_gateway(
        gateway.envoy_address, gateway.envoy_port, host, "--payload", json.dumps(PAYLOAD), "--concurrency", "8", *args
    )


def start_serving(cluster: Cluster, namespace: str, echo: Artifact, gateway: Gateway, name: str, steps: Any) -> str:
    apply(cluster, namespace, routed(name, namespace, echo, gateway, steps))
    wait_for_status(cluster, namespace, name, healthy("1.0.0", 4), timeout=STEP_TIMEOUT, what="1.0.0 Healthy")
    host = host_for(name, namespace)
    gateway.wait_for_route(host, PAYLOAD)
    return host


def requests_served(cluster: Cluster, namespace: str, revision: str) -> int:
    """The runtime's own count of prediction requests over a revision's pods, read through each pod's IP once its
    route is checked."""
    total = 0.0
    for pod in pods_of(cluster, namespace, f"modeldeploy.io/revision={revision}"):
        ip = pod["status"]["podIP"]
        check_route(ip)
        answer = http_get(f"http://{ip}:{RUNTIME_METRICS_PORT}/metrics", timeout=5)
        assert answer is not None, f"the metrics of {pod['metadata']['name']} did not answer"
        assert answer.status == 200, answer
        total += sum(value for (metric, _), value in parse_metrics(answer.text).items() if metric == REQUESTS_TOTAL)
    return int(total)


def settled(cluster: Cluster, namespace: str, revision: str) -> int:
    readings: list[int] = []

    def same_twice() -> bool:
        readings.append(requests_served(cluster, namespace, revision))
        return len(readings) >= 2 and readings[-1] == readings[-2]

    wait_until(same_twice, timeout=30, interval=1.0, what=f"the request count of {revision} to settle")
    return readings[-1]


def test_one_canary_pod_takes_exactly_its_weight(
    cluster: Cluster, namespace: str, gateway: Gateway, echo: Artifact
) -> None:
    steps = [{"setWeight": 5}, {"pause": {}}, {"setWeight": 20}, {"pause": {}}, {"setWeight": 50}, {"pause": {}}]
    host = start_serving(cluster, namespace, echo, gateway, "exact", steps)
    bump(cluster, namespace, "exact", "2.0.0")
    for pause, weight in ((1, 5), (3, 20), (5, 50)):
        status = wait_for_status(
            cluster, namespace, "exact", paused_at(pause), timeout=STEP_TIMEOUT, what=f"the pause at {weight} %"
        )
        assert (status["canary"]["desiredWeight"], status["canary"]["actualWeight"]) == (weight, weight)
        assert status["stable"]["readyReplicas"] == 4  # the stable keeps every pod behind a gateway
        assert status["canary"]["readyReplicas"] == max(1, math.ceil(4 * weight / 100))
        report = send(gateway, host, "--requests", str(SPLIT_REQUESTS), "--rate", "250", "--seed", str(weight))
        assert report["errors"] == 0, report["error_examples"]
        canary = report["by_version"].get("2.0.0", 0)
        share = weight / 100
        expected = SPLIT_REQUESTS * share
        tolerance = SPLIT_Z * math.sqrt(SPLIT_REQUESTS * share * (1 - share))
        print(f"  {weight} %: 2.0.0 answered {canary} of {SPLIT_REQUESTS} (expected {expected:.0f} +- {tolerance:.0f})")
        assert abs(canary - expected) <= tolerance, (canary, expected, tolerance)
        mdep(cluster, namespace, "promote", "exact")
    wait_for_status(cluster, namespace, "exact", healthy("2.0.0", 4), timeout=STEP_TIMEOUT, what="2.0.0 promoted")
    report = send(gateway, host, "--requests", "200", "--rate", "100")
    assert report["by_version"] == {"2.0.0": 200}, report


def test_a_mirrored_canary_sees_every_request_and_answers_nobody(
    cluster: Cluster, namespace: str, gateway: Gateway, echo: Artifact
) -> None:
    steps = [{"setMirror": {}}, {"pause": {}}, {"setWeight": 50}]
    host = start_serving(cluster, namespace, echo, gateway, "shadow", steps)
    bump(cluster, namespace, "shadow", "2.0.0")
    status = wait_for_status(cluster, namespace, "shadow", paused_at(1), timeout=STEP_TIMEOUT, what="the mirror")
    stable, canary = status["stable"]["revision"], status["canary"]["revision"]
    gateway.wait_for_route(host, PAYLOAD)
    before = {revision: settled(cluster, namespace, revision) for revision in (stable, canary)}
    report = send(gateway, host, "--requests", "1000", "--rate", "200")
    assert report["errors"] == 0, report["error_examples"]
    assert report["by_version"] == {"1.0.0": 1000}, report["by_version"]  # users get the stable's answers only
    served = {revision: settled(cluster, namespace, revision) - before[revision] for revision in (stable, canary)}
    print(f"  mirrored: stable served {served[stable]}, canary {served[canary]}")
    assert served[stable] == 1000
    assert abs(served[canary] - served[stable]) <= 0.02 * served[stable], served


def test_prediction_shift_fails_a_mirrored_canary_before_any_user_sees_it(
    cluster: Cluster, namespace: str, gateway: Gateway, echo: Artifact, prometheus: Prometheus, tmp_path: Any
) -> None:
    shifted = write_custom_model(tmp_path, "shifted", SHIFTED_OUTPUTS)
    steps = [{"setMirror": {}}, {"pause": {"duration": "60s"}}, {"setWeight": 50}, {"pause": {}}]
    body = routed("judged", namespace, echo, gateway, steps)
    body["spec"]["replicas"] = 2
    body["spec"]["rollout"]["analysis"] = {
        "interval": "3s",
        "initialDelay": "8s",
        "window": "10s",
        "failureLimit": 0,
        "inconclusiveLimit": 0,
        "prometheus": {"address": prometheus.url},
        "metrics": [{"name": "agreement", "builtin": "predictionShift", "max": 0.2}],
    }
    apply(cluster, namespace, body)
    wait_for_status(cluster, namespace, "judged", healthy("1.0.0", 2), timeout=STEP_TIMEOUT, what="1.0.0 Healthy")
    host = host_for("judged", namespace)
    gateway.wait_for_route(host, SPREAD_PAYLOAD)
    results: dict[str, Any] = {}

    def traffic() -> None:
        results.update(
            loadgen_via_gateway(
                gateway.envoy_address,
                gateway.envoy_port,
                host,
                *("--payload", json.dumps(SPREAD_PAYLOAD), "--duration", "90", "--rate", "20", "--concurrency", "4"),
            )
        )

    sender = threading.Thread(target=traffic, daemon=True)
    sender.start()
    time.sleep(5)  # the stable's predictions reach Prometheus before the canary's
    patch_spec(
        cluster, namespace, "judged", {"model": {"version": "2.0.0", "uri": shifted.uri, "sha256": shifted.sha256}}
    )
    final = wait_for_status(
        cluster, namespace, "judged", lambda s: s.get("phase") == "Degraded", timeout=120, what="the rollback"
    )
    sender.join(timeout=120)
    assert final["aborted"]["reason"] == "AnalysisFailed", final
    assert "prediction shift" in final["aborted"]["message"]
    assert final["history"][0]["outcome"] == "RolledBack"
    assert results, "the load generator did not report"
    assert results["errors"] == 0, results["error_examples"]
    assert set(results["by_version"]) == {"1.0.0"}, results["by_version"]  # no user got a shifted answer
    route = get(cluster, "httproutes.gateway.networking.k8s.io", "judged", "-n", namespace)
    assert [ref["weight"] for ref in route["spec"]["rules"][0]["backendRefs"]] == [100, 0]


def test_no_request_fails_through_a_promotion_and_a_revert(
    cluster: Cluster, namespace: str, gateway: Gateway, echo: Artifact
) -> None:
    steps = [
        {"setMirror": {}},
        {"pause": {"duration": "3s"}},
        {"setWeight": 20},
        {"pause": {"duration": "3s"}},
        {"setWeight": 50},
        {"pause": {}},
    ]
    host = start_serving(cluster, namespace, echo, gateway, "whole", steps)
    arguments = ("--payload", json.dumps(PAYLOAD), "--rate", "100", "--concurrency", "8", "--duration", "900")
    with GatewayLoad(gateway.envoy_address, gateway.envoy_port, host, *arguments) as load:
        time.sleep(2)  # the first answers come from the stable alone
        bump(cluster, namespace, "whole", "2.0.0")
        wait_for_status(cluster, namespace, "whole", paused_at(5), timeout=STEP_TIMEOUT, what="2.0.0 at 50 %")
        mdep(cluster, namespace, "promote", "whole")
        wait_for_status(cluster, namespace, "whole", healthy("2.0.0", 4), timeout=STEP_TIMEOUT, what="2.0.0 promoted")
        promoted_at = time.time()

        bump(cluster, namespace, "whole", "3.0.0")
        wait_for_status(cluster, namespace, "whole", paused_at(5), timeout=STEP_TIMEOUT, what="3.0.0 at 50 %")
        time.sleep(2)  # 3.0.0 answers half of the requests
        bump(cluster, namespace, "whole", "2.0.0")
        reverted_at = time.time()
        wait_for_status(cluster, namespace, "whole", healthy("2.0.0", 4), timeout=STEP_TIMEOUT, what="the revert")
        time.sleep(2)  # requests after the revert, to the stable alone
        report = load.stop()
    print(
        f"  {report['sent']} requests in {report['elapsed_seconds']} s, {report['errors']} failed, "
        f"answers by version {report['by_version']}"
    )
    assert report["errors"] == 0, (report["errors_by_kind"], report["error_examples"])
    assert set(report["by_version"]) == {"1.0.0", "2.0.0", "3.0.0"}, report["by_version"]
    last = report["last_sent_by_version"]
    # Past the last step the route gives the canary 100 % before it is promoted: 1.0.0 answers nothing after that.
    assert last["1.0.0"] < promoted_at, (last, promoted_at)
    lag = last["3.0.0"] - reverted_at
    print(f"  revert: last request to 3.0.0 sent {lag * 1000:+.0f} ms after the revert was stored")
    assert lag <= 1.0, lag
    assert last["2.0.0"] > reverted_at
    final = status_of(cluster, namespace, "whole")
    assert final["stable"]["version"] == "2.0.0"
    assert not final.get("canary")
