"""reconcile() behind an exact router: the HTTPRoute (or VirtualService) it owns, in the order traffic needs.

Against the in-memory API server; a gateway's acceptance is played by `accept()`, which writes what a Gateway API
controller writes (an Accepted condition for the route's generation).
"""

from __future__ import annotations

import copy
import dataclasses
from datetime import timedelta
from typing import Any

import pytest

from modeldeploy.config import OperatorConfig, parse_traffic_routers
from modeldeploy.traffic import routes

from .test_reconcile import SPEC, Harness, with_version

NAME = "fraud-detector"
GATEWAY: dict[str, Any] = {"gatewayAPI": {"parentRefs": [{"name": "public", "namespace": "gateways"}]}}
ROUTED: dict[str, Any] = {
    **SPEC,
    "replicas": 2,
    "rollout": {"steps": [{"setMirror": {}}, {"setWeight": 50}, {"pause": {"duration": "30s"}}]},
    "trafficRouting": GATEWAY,
}


@pytest.fixture
def routed(config: OperatorConfig) -> Harness:
    return Harness(dataclasses.replace(config, traffic_routers=frozenset({"HTTPRoute", "VirtualService"})), ROUTED)


def accept(harness: Harness) -> None:
    """The gateway accepts every HTTPRoute at its current generation; the watch shows it."""
    for body in harness.cluster.of_kind("HTTPRoute").values():
        generation = body["metadata"]["generation"]
        body["status"] = {
            "parents": [
                {
                    "parentRef": ref,
                    "controllerName": "example.com/gateway",
                    "conditions": [{"type": "Accepted", "status": "True", "observedGeneration": generation}],
                }
                for ref in body["spec"]["parentRefs"]
            ]
        }
        body["metadata"]["resourceVersion"] = harness.cluster._next_version()
        harness.store.put_child(copy.deepcopy(body))


def settle(harness: Harness, limit: int = 40) -> None:
    for _ in range(limit):
        writes = harness.run(timedelta(seconds=31))
        harness.cluster.make_ready(harness.store)
        accept(harness)
        if not writes:
            return
    raise AssertionError("no quiet pass")


def route_history(harness: Harness) -> list[tuple[int, bool]]:
    """Each HTTPRoute write as (canary weight, mirrored)."""
    history = []
    for what, body in harness.cluster.journal:
        if what.startswith("apply HTTPRoute/"):
            state = routes.route_state(body)
            history.append((state.weight, state.mirror))
    return history


def stable_scales(harness: Harness, deployment: str) -> list[int]:
    return [
        body["spec"]["replicas"]
        for what, body in harness.cluster.journal
        if what in (f"apply Deployment/{deployment}", f"scale Deployment/{deployment}")
    ]


def deployment_of(harness: Harness, version: str) -> str:
    (name,) = [
        name
        for name, body in harness.cluster.of_kind("Deployment").items()
        if body["metadata"]["labels"]["app.kubernetes.io/version"] == version
    ]
    return name


def test_a_canary_behind_a_gateway_moves_only_the_route(routed: Harness) -> None:
    settle(routed)
    assert routed.status["phase"] == "Healthy"
    route = routed.cluster.objects[("HTTPRoute", "models", NAME)]
    assert route["metadata"]["ownerReferences"][0]["kind"] == "ModelDeployment"
    assert set(routed.cluster.of_kind("Service")) == {NAME, f"{NAME}-stable", f"{NAME}-canary"}
    old = deployment_of(routed, "1.0.0")
    routed.cluster.journal.clear()

    routed.cluster.update_spec(routed.key, with_version(ROUTED, "2.0.0"))
    routed.observe()
    settle(routed)

    assert routed.status["phase"] == "Healthy"
    assert routed.status["stable"]["version"] == "2.0.0"
    # Mirror first (no weight), then 50 %, then everything before the promotion, then back to the stable Service.
    assert route_history(routed) == [(0, True), (50, False), (100, False), (0, False)]
    # The old revision kept every pod until the promotion, then went to zero.
    assert stable_scales(routed, old) == [0]
    # `<name>` never selected the canary: clients that go around the gateway get the serving revision.
    for what, body in routed.cluster.journal:
        if what == f"apply Service/{NAME}":
            assert "modeldeploy.io/revision" in body["spec"]["selector"]


def test_a_revert_takes_the_route_back_before_touching_the_canary(routed: Harness) -> None:
    settle(routed)
    routed.cluster.update_spec(routed.key, with_version(ROUTED, "2.0.0"))
    routed.observe()
    for _ in range(8):
        routed.run(timedelta(seconds=1))
        routed.cluster.make_ready(routed.store)
        accept(routed)
        if route_history(routed)[-1:] == [(50, False)]:
            break
    assert route_history(routed)[-1] == (50, False)
    accept(routed)
    canary = deployment_of(routed, "2.0.0")
    routed.cluster.journal.clear()

    routed.cluster.update_spec(routed.key, ROUTED)
    routed.observe()
    routed.run(timedelta(seconds=1))

    writes = [what for what, _ in routed.cluster.journal]
    assert writes[0] == f"apply HTTPRoute/{NAME}"  # the weight goes before anything else moves
    assert route_history(routed) == [(0, False)]
    assert f"scale Deployment/{canary}" in writes
    assert routed.status.get("canary") is None


def test_a_router_not_turned_on_holds_with_a_reason(config: OperatorConfig) -> None:
    harness = Harness(config, ROUTED)
    harness.run()
    assert harness.cluster.of_kind("Deployment") == {}
    assert harness.cluster.of_kind("HTTPRoute") == {}
    degraded = next(c for c in harness.status["conditions"] if c["type"] == "Degraded")
    assert degraded["status"] == "True"
    assert degraded["reason"] == "RouterNotEnabled"
    assert "HTTPRoute" in degraded["message"]


def test_dropping_the_router_deletes_its_route(routed: Harness) -> None:
    settle(routed)
    assert routed.cluster.of_kind("HTTPRoute")
    plain = {key: value for key, value in ROUTED.items() if key != "trafficRouting"}
    plain["rollout"] = {"steps": [{"setWeight": 50}]}
    routed.cluster.update_spec(routed.key, plain)
    routed.observe()
    settle(routed)
    assert routed.cluster.of_kind("HTTPRoute") == {}
    assert routed.status["phase"] == "Healthy"


def test_istio_gets_a_virtual_service(config: OperatorConfig) -> None:
    spec = {**ROUTED, "trafficRouting": {"istio": {"hosts": ["fraud.example"]}}}
    harness = Harness(dataclasses.replace(config, traffic_routers=frozenset({"VirtualService"})), spec)
    settle(harness)
    (service,) = harness.cluster.of_kind("VirtualService").values()
    assert service["spec"]["hosts"] == ["fraud.example"]
    assert routes.route_state(service).weight == 0


def test_traffic_routers_setting() -> None:
    assert parse_traffic_routers("") == frozenset()
    assert parse_traffic_routers("gatewayAPI, istio") == frozenset({"HTTPRoute", "VirtualService"})
    with pytest.raises(ValueError, match="unknown router linkerd"):
        parse_traffic_routers("gatewayAPI,linkerd")


def test_a_route_the_gateway_refuses_shows_in_status(routed: Harness) -> None:
    routed.run()
    route = routed.cluster.objects[("HTTPRoute", "models", NAME)]
    route["status"] = {
        "parents": [
            {
                "parentRef": route["spec"]["parentRefs"][0],
                "controllerName": "example.com/gateway",
                "conditions": [
                    {
                        "type": "Accepted",
                        "status": "False",
                        "observedGeneration": route["metadata"]["generation"],
                        "reason": "NotAllowedByListeners",
                        "message": "namespace models is not allowed",
                    }
                ],
            }
        ]
    }
    routed.store.put_child(copy.deepcopy(route))
    routed.run()
    degraded = next(c for c in routed.status["conditions"] if c["type"] == "Degraded")
    assert (degraded["status"], degraded["reason"]) == ("True", "RouteNotAccepted")
    assert "NotAllowedByListeners: namespace models is not allowed" in degraded["message"]
    assert routed.status["phase"] == "Degraded"
    accept(routed)
    routed.cluster.make_ready(routed.store)
    routed.run()
    degraded = next(c for c in routed.status["conditions"] if c["type"] == "Degraded")
    assert degraded["status"] == "False"
