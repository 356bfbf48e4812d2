"""Route objects of the exact routers: what the HTTPRoute and the VirtualService hold, and what is read back."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from modeldeploy.api import models as api
from modeldeploy.traffic import routes
from modeldeploy.traffic.routers import RouteState

from .conftest import NAME, NAMESPACE, UID, build_resource

GATEWAY = {"gatewayAPI": {"parentRefs": [{"name": "public", "namespace": "gateways"}], "hostnames": ["m.example"]}}
ISTIO = {"istio": {"hosts": ["m.example"], "gateways": ["gateways/public"]}}


def resource(routing: dict[str, Any] | None = None, **spec: Any) -> api.ModelDeployment:
    return build_resource({"trafficRouting": routing if routing is not None else GATEWAY, **spec})


def accepted(route: dict[str, Any], *, generation: int = 1, status: str = "True") -> dict[str, Any]:
    """`route` as stored at `generation`, with every parent's Accepted condition for that generation."""
    stored = copy.deepcopy(route)
    stored["metadata"]["generation"] = generation
    stored["status"] = {
        "parents": [
            {
                "parentRef": parent,
                "controllerName": "projectcontour.io/gateway-controller",
                "conditions": [
                    {"type": "Accepted", "status": status, "observedGeneration": generation, "reason": "Accepted"}
                ],
            }
            for parent in route["spec"]["parentRefs"]
        ]
    }
    return stored


def test_http_route_sends_the_weight_to_the_canary_service() -> None:
    route = routes.build_route(resource(service={"port": 8000}), 20, mirror=False)
    assert route is not None
    assert route["apiVersion"] == "gateway.networking.k8s.io/v1"
    assert route["kind"] == "HTTPRoute"
    assert route["metadata"]["name"] == NAME
    assert route["metadata"]["namespace"] == NAMESPACE
    assert route["metadata"]["ownerReferences"][0]["uid"] == UID
    assert route["metadata"]["ownerReferences"][0]["controller"] is True
    assert route["spec"]["parentRefs"] == [
        {"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": "public", "namespace": "gateways"}
    ]
    assert route["spec"]["hostnames"] == ["m.example"]
    (rule,) = route["spec"]["rules"]
    assert rule["matches"] == [{"path": {"type": "PathPrefix", "value": "/"}}]
    assert [(ref["name"], ref["port"], ref["weight"]) for ref in rule["backendRefs"]] == [
        (f"{NAME}-stable", 8000, 80),
        (f"{NAME}-canary", 8000, 20),
    ]
    assert "filters" not in rule


def test_http_route_mirrors_to_the_canary_in_a_mirror_step() -> None:
    route = routes.build_route(resource(), 0, mirror=True)
    assert route is not None
    (rule,) = route["spec"]["rules"]
    assert [ref["weight"] for ref in rule["backendRefs"]] == [100, 0]
    assert rule["filters"] == [
        {
            "type": "RequestMirror",
            "requestMirror": {"backendRef": {"group": "", "kind": "Service", "name": f"{NAME}-canary", "port": 80}},
        }
    ]


def test_http_route_matches_path_and_headers() -> None:
    routing = {
        "gatewayAPI": {
            "parentRefs": [{"name": "public", "sectionName": "http"}],
            "path": {"type": "Exact", "value": "/predict"},
            "headers": [{"name": "x-tenant", "value": "retail"}],
        }
    }
    route = routes.build_route(resource(routing), 0, mirror=False)
    assert route is not None
    assert "hostnames" not in route["spec"]
    assert route["spec"]["parentRefs"][0]["sectionName"] == "http"
    assert "namespace" not in route["spec"]["parentRefs"][0]
    assert route["spec"]["rules"][0]["matches"] == [
        {
            "path": {"type": "Exact", "value": "/predict"},
            "headers": [{"type": "Exact", "name": "x-tenant", "value": "retail"}],
        }
    ]


def test_virtual_service_weights_and_mirror() -> None:
    route = routes.build_route(resource(ISTIO), 30, mirror=True, cluster_domain="corp.local")
    assert route is not None
    assert (route["apiVersion"], route["kind"]) == ("networking.istio.io/v1", "VirtualService")
    assert route["spec"]["hosts"] == ["m.example"]
    assert route["spec"]["gateways"] == ["gateways/public"]
    (http,) = route["spec"]["http"]
    stable_host = f"{NAME}-stable.{NAMESPACE}.svc.corp.local"
    canary_host = f"{NAME}-canary.{NAMESPACE}.svc.corp.local"
    assert http["route"] == [
        {"destination": {"host": stable_host, "port": {"number": 80}}, "weight": 70},
        {"destination": {"host": canary_host, "port": {"number": 80}}, "weight": 30},
    ]
    assert http["mirror"] == {"host": canary_host, "port": {"number": 80}}
    assert http["mirrorPercentage"] == {"value": 100.0}
    assert http["match"] == [{"uri": {"prefix": "/"}}]


def test_virtual_service_defaults_to_the_service_in_the_mesh() -> None:
    route = routes.build_route(resource({"istio": {}}), 0, mirror=False)
    assert route is not None
    assert route["spec"]["hosts"] == [NAME]
    assert "gateways" not in route["spec"]
    assert "mirror" not in route["spec"]["http"][0]


def test_no_router_no_route() -> None:
    plain = build_resource({})
    assert routes.build_route(plain, 50, mirror=False) is None
    assert routes.route_kind(plain) is None
    assert routes.route_kind(resource()) == "HTTPRoute"
    assert routes.route_kind(resource(ISTIO)) == "VirtualService"


@pytest.mark.parametrize(("weight", "mirror"), [(0, False), (5, False), (50, False), (100, False), (0, True)])
def test_route_state_reads_back_what_was_built(weight: int, mirror: bool) -> None:
    built = routes.build_route(resource(), weight, mirror)
    assert built is not None
    assert routes.route_state(accepted(built)) == RouteState(weight=weight, mirror=mirror, accepted=True)
    istio = routes.build_route(resource(ISTIO), weight, mirror)
    assert istio is not None
    assert routes.route_state(istio) == RouteState(weight=weight, mirror=mirror, accepted=True)


def test_a_route_is_accepted_only_at_its_own_generation_by_every_parent() -> None:
    two_parents = {"gatewayAPI": {"parentRefs": [{"name": "a"}, {"name": "b", "sectionName": "https"}]}}
    md = resource(two_parents)
    built = routes.build_route(md, 20, mirror=False)
    assert built is not None
    assert routes.route_state(accepted(built)).accepted
    stale = accepted(built, generation=1)
    stale["metadata"]["generation"] = 2  # edited since the gateway last looked
    assert not routes.route_state(stale).accepted
    one_missing = accepted(built)
    one_missing["status"]["parents"].pop()
    assert not routes.route_state(one_missing).accepted
    refused = accepted(built, status="False")
    assert not routes.route_state(refused).accepted
    assert not routes.route_state(built).accepted  # no status at all


@pytest.mark.parametrize(
    "mangle",
    [
        lambda r: r["spec"].update(rules="garbage"),
        lambda r: r["spec"]["rules"][0].update(backendRefs=[{"weight": "x"}]),
        lambda r: r["spec"]["rules"].append(r["spec"]["rules"][0]),
        lambda r: r.update(status={"parents": "nope"}),
        lambda r: r["spec"].update(parentRefs=[7]),
    ],
)
def test_an_unreadable_route_is_not_in_force(mangle: Any) -> None:
    built = routes.build_route(resource(), 20, mirror=False)
    assert built is not None
    stored = accepted(built)
    mangle(stored)
    assert routes.route_state(stored) == RouteState(weight=0, mirror=False, accepted=False)


def test_same_route_sees_weight_and_mirror_changes_and_ignores_server_defaults() -> None:
    md = resource()
    built = routes.build_route(md, 20, mirror=True)
    assert built is not None
    stored = accepted(built)
    stored["metadata"].update(resourceVersion="7", uid="abc", managedFields=[{}])
    stored["spec"]["rules"][0]["matches"][0]["path"]["extra"] = "defaulted"
    assert routes.same_route(stored, built)
    for weight, mirror in ((20, False), (50, True), (0, True)):
        other = routes.build_route(md, weight, mirror)
        assert other is not None
        assert routes.same_route(stored, other) is (weight == 20 and mirror)


def test_route_refusal_names_the_gateway_and_its_reason() -> None:
    built = routes.build_route(resource(), 0, mirror=False)
    assert built is not None
    stored = accepted(built, status="False")
    stored["status"]["parents"][0]["conditions"][0].update(reason="NotAllowedByListeners", message="namespace denied")
    assert routes.route_refusal(stored) == "Gateway public: NotAllowedByListeners: namespace denied"
    assert routes.route_refusal(accepted(built)) is None


def test_a_mirror_step_needs_a_router() -> None:
    steps = [{"setMirror": {}}, {"setWeight": 50}]
    with pytest.raises(ValueError, match=r"setMirror needs spec\.trafficRouting"):
        build_resource({"rollout": {"steps": steps}})
    assert build_resource({"rollout": {"steps": steps}, "trafficRouting": GATEWAY}).spec.rollout.steps[0].setMirror


@pytest.mark.parametrize(
    "step",
    [{}, {"setWeight": 5, "setMirror": {}}, {"pause": {}, "setMirror": {}}, {"setWeight": 5, "pause": {}}],
)
def test_a_step_is_exactly_one_kind(step: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="exactly one of setWeight, setMirror or pause"):
        build_resource({"rollout": {"steps": [step]}, "trafficRouting": GATEWAY})


def test_routing_is_exactly_one_router() -> None:
    with pytest.raises(ValueError, match="exactly one of gatewayAPI or istio"):
        build_resource({"trafficRouting": {**GATEWAY, **ISTIO}})
    with pytest.raises(ValueError, match="exactly one of gatewayAPI or istio"):
        build_resource({"trafficRouting": {}})


def test_the_client_knows_where_every_route_kind_lives() -> None:
    from modeldeploy.kube.client import CHILD_PATHS
    from modeldeploy.main import ROUTE_RESOURCES

    for kind in routes.ROUTE_KINDS:
        group, version, plural = ROUTE_RESOURCES[kind]
        assert CHILD_PATHS[kind] == (f"/apis/{group}/{version}", plural)
        built = routes.build_route(resource(GATEWAY if kind == "HTTPRoute" else ISTIO), 0, mirror=False)
        assert built is not None
        assert built["apiVersion"] == f"{group}/{version}"
