"""Rollouts behind a router, on the real API server with the real Gateway API and Istio CRDs: the route objects the
operator owns are accepted by those CRDs' schemas at every step, their weights are the planner's, and a step waits
for the gateway to accept its weight. The pods are kwok's; the data plane (Envoy) is tested in test_gateway_routing.
No Istio control plane runs here: nothing reports on VirtualServices, and the operator takes a stored one as in
force (docs/traffic-routing.md).
"""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

from modeldeploy_testkit.cluster import Cluster
from modeldeploy_testkit.resources import (
    apply,
    get,
    mdep,
    model_deployment,
    patch_spec,
    ready_pods_by_revision,
    wait_for_status,
)
from modeldeploy_testkit.waiting import wait_until

pytestmark = pytest.mark.usefixtures("operator", "route_crds")

STEPS: list[dict[str, Any]] = [
    {"setMirror": {}},
    {"pause": {}},
    {"setWeight": 5},
    {"pause": {}},
    {"setWeight": 50},
    {"pause": {}},
]


def routed(name: str, routing: dict[str, Any], version: str = "1.0.0", replicas: int = 4) -> dict[str, Any]:
    body = model_deployment(
        name, version, replicas, {"strategy": "Canary", "steps": STEPS, "progressDeadlineSeconds": 120}
    )
    body["spec"]["trafficRouting"] = routing
    return body


def bump(cluster: Cluster, namespace: str, name: str, version: str) -> None:
    patch_spec(
        cluster,
        namespace,
        name,
        {"model": {"version": version, "uri": f"file:///models/{name}/{version}/model.joblib"}},
    )


def paused_at(step: int) -> Any:
    return lambda s: s.get("phase") == "Paused" and s.get("currentStepIndex") == step


def virtual_service(cluster: Cluster, namespace: str, name: str) -> tuple[list[int], bool]:
    body = get(cluster, "virtualservices.networking.istio.io", name, "-n", namespace)
    (http,) = body["spec"]["http"]
    return [entry.get("weight", 0) for entry in http["route"]], "mirror" in http


def test_istio_virtual_service_follows_every_step(cluster: Cluster, namespace: str) -> None:
    name = "vs"
    apply(cluster, namespace, routed(name, {"istio": {"hosts": ["vs.example.com"]}}))
    first = wait_for_status(cluster, namespace, name, lambda s: s.get("phase") == "Healthy")
    assert virtual_service(cluster, namespace, name) == ([100, 0], False)
    body = get(cluster, "virtualservices.networking.istio.io", name, "-n", namespace)
    assert body["metadata"]["ownerReferences"][0]["kind"] == "ModelDeployment"
    assert body["spec"]["hosts"] == ["vs.example.com"]
    stable = first["stable"]["revision"]

    bump(cluster, namespace, name, "2.0.0")
    mirrored = wait_for_status(cluster, namespace, name, paused_at(1), what="the pause after the mirror step")
    canary = mirrored["canary"]["revision"]
    assert virtual_service(cluster, namespace, name) == ([100, 0], True)
    assert (mirrored["canary"]["desiredWeight"], mirrored["canary"]["actualWeight"]) == (0, 0)
    assert ready_pods_by_revision(cluster, namespace) == {stable: 4, canary: 4}  # mirrored: the whole load

    for pause, weight, canary_pods in ((3, 5, 1), (5, 50, 2)):
        mdep(cluster, namespace, "promote", name)
        status = wait_for_status(cluster, namespace, name, paused_at(pause), what=f"the pause at {weight} %")
        assert virtual_service(cluster, namespace, name) == ([100 - weight, weight], False)
        assert (status["canary"]["desiredWeight"], status["canary"]["actualWeight"]) == (weight, weight)
        wait_until(
            lambda: ready_pods_by_revision(cluster, namespace) == {stable: 4, canary: canary_pods},  # noqa: B023
            timeout=60,
            what=f"4 stable and {canary_pods} canary pods at {weight} %",
        )

    mdep(cluster, namespace, "promote", name)
    done = wait_for_status(
        cluster, namespace, name, lambda s: s.get("phase") == "Healthy" and s["stable"]["version"] == "2.0.0"
    )
    assert done["stable"]["revision"] == canary
    assert virtual_service(cluster, namespace, name) == ([100, 0], False)
    services = {item["metadata"]["name"]: item for item in get(cluster, "services", "-n", namespace)["items"]}
    for service in (name, f"{name}-stable", f"{name}-canary"):
        assert services[service]["spec"]["selector"]["modeldeploy.io/revision"] == canary


def http_route(cluster: Cluster, namespace: str, name: str) -> dict[str, Any]:
    body: dict[str, Any] = get(cluster, "httproutes.gateway.networking.k8s.io", name, "-n", namespace)
    return body


def route_weights(route: dict[str, Any]) -> tuple[list[int], bool]:
    (rule,) = route["spec"]["rules"]
    mirrored = any(f.get("type") == "RequestMirror" for f in rule.get("filters") or [])
    return [ref.get("weight", 1) for ref in rule["backendRefs"]], mirrored


def accept(cluster: Cluster, namespace: str, name: str, status: str = "True", reason: str = "Accepted") -> None:
    """What a Gateway API controller writes once it has programmed this generation of the route."""
    route = http_route(cluster, namespace, name)
    generation = route["metadata"]["generation"]
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    parents = [
        {
            "parentRef": ref,
            "controllerName": "example.com/test-gateway",
            "conditions": [
                {
                    "type": "Accepted",
                    "status": status,
                    "reason": reason,
                    "message": "set by the test",
                    "observedGeneration": generation,
                    "lastTransitionTime": now,
                }
            ],
        }
        for ref in route["spec"]["parentRefs"]
    ]
    cluster.kubectl(
        "patch",
        "httproutes.gateway.networking.k8s.io",
        name,
        "-n",
        namespace,
        "--subresource=status",
        "--type=merge",
        "-p",
        json.dumps({"status": {"parents": parents}}),
    )


def test_a_gateway_route_step_waits_for_the_gateway_to_accept_it(cluster: Cluster, namespace: str) -> None:
    """No gateway controller watches this Gateway: the test plays it, so what is checked is the operator's side."""
    name = "gw"
    routing = {"gatewayAPI": {"parentRefs": [{"name": "nobody-programs-this"}], "hostnames": ["gw.example.com"]}}
    body = routed(name, routing)
    body["spec"]["rollout"]["steps"] = [{"setWeight": 20}, {"pause": {}}]
    apply(cluster, namespace, body)
    wait_until(
        lambda: (
            cluster.kubectl(
                "get", "httproutes.gateway.networking.k8s.io", name, "-n", namespace, check=False
            ).returncode
            == 0
        ),
        timeout=30,
        what="the HTTPRoute",
    )
    accept(cluster, namespace, name)
    wait_for_status(cluster, namespace, name, lambda s: s.get("phase") == "Healthy")
    route = http_route(cluster, namespace, name)
    assert route_weights(route) == ([100, 0], False)
    assert route["spec"]["parentRefs"][0]["name"] == "nobody-programs-this"
    assert route["spec"]["hostnames"] == ["gw.example.com"]

    bump(cluster, namespace, name, "2.0.0")
    wait_until(
        lambda: route_weights(http_route(cluster, namespace, name)) == ([80, 20], False),
        timeout=60,
        what="20 % written to the route",
    )
    held = wait_for_status(
        cluster, namespace, name, lambda s: (s.get("canary") or {}).get("desiredWeight") == 20, what="20 % asked"
    )
    assert held["currentStepIndex"] == 0  # not accepted yet: the step holds
    accept(cluster, namespace, name, status="False", reason="NotAllowedByListeners")
    refused = wait_for_status(
        cluster,
        namespace,
        name,
        lambda s: any(c["type"] == "Degraded" and c["reason"] == "RouteNotAccepted" for c in s.get("conditions", [])),
        what="RouteNotAccepted",
    )
    assert refused["currentStepIndex"] == 0
    accept(cluster, namespace, name)
    at_pause = wait_for_status(cluster, namespace, name, paused_at(1), what="the pause once 20 % is accepted")
    assert at_pause["canary"]["actualWeight"] == 20
