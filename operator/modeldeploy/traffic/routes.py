"""Pure builders and readers of the route objects behind the exact routers: a Gateway API HTTPRoute or an Istio
VirtualService, named like the resource and owned by it. No I/O here.

Both send the resource's traffic to two Services, `<name>-stable` and `<name>-canary`, with the canary's weight
and, during a mirror step, a copy of every request to the canary. At rest both Services select the serving revision
and the canary's weight is 0, so the object's shape never changes, only its numbers and its mirror.

Reading one back (`route_state`) treats it as untrusted input: anything the readers do not understand is a route
that is not in force, never an exception.
"""

from __future__ import annotations

from typing import Any

from modeldeploy.api import models as api
from modeldeploy.children.builders import (
    CANARY_SUFFIX,
    STABLE_SUFFIX,
    Manifest,
    common_labels,
    owner_reference,
    resource_name,
    service_name,
)
from modeldeploy.traffic.routers import RouteState

GATEWAY_GROUP = "gateway.networking.k8s.io"
HTTP_ROUTE_API_VERSION = f"{GATEWAY_GROUP}/v1"
HTTP_ROUTE = "HTTPRoute"
ISTIO_API_VERSION = "networking.istio.io/v1"
VIRTUAL_SERVICE = "VirtualService"
ROUTE_KINDS = (HTTP_ROUTE, VIRTUAL_SERVICE)


def route_kind(resource: api.ModelDeployment) -> str | None:
    """The kind of route object the resource's router needs, None without a router."""
    routing = resource.spec.trafficRouting
    if routing is None:
        return None
    return HTTP_ROUTE if routing.gatewayAPI is not None else VIRTUAL_SERVICE


def build_route(
    resource: api.ModelDeployment, weight: int, mirror: bool, cluster_domain: str = "cluster.local"
) -> Manifest | None:
    """The route object with `weight` percent to the canary (and a mirror to it), None without a router."""
    routing = resource.spec.trafficRouting
    if routing is None:
        return None
    if routing.gatewayAPI is not None:
        return build_http_route(resource, routing.gatewayAPI, weight, mirror)
    assert routing.istio is not None
    return build_virtual_service(resource, routing.istio, weight, mirror, cluster_domain)


def _metadata(resource: api.ModelDeployment) -> dict[str, Any]:
    return {
        "name": resource_name(resource),
        "namespace": resource.metadata["namespace"],
        "labels": common_labels(resource),
        "ownerReferences": [owner_reference(resource)],
    }


def build_http_route(
    resource: api.ModelDeployment, routing: api.GatewayAPIRouting, weight: int, mirror: bool
) -> Manifest:
    port = resource.spec.service.port
    stable, canary = service_name(resource, STABLE_SUFFIX), service_name(resource, CANARY_SUFFIX)
    parents = []
    for parent in routing.parentRefs:
        ref: dict[str, Any] = {"group": GATEWAY_GROUP, "kind": "Gateway", "name": parent.name}
        if parent.namespace is not None:
            ref["namespace"] = parent.namespace
        if parent.sectionName is not None:
            ref["sectionName"] = parent.sectionName
        parents.append(ref)
    match: dict[str, Any] = {"path": {"type": routing.path.type, "value": routing.path.value}}
    if routing.headers:
        match["headers"] = [{"type": "Exact", "name": header.name, "value": header.value} for header in routing.headers]
    rule: dict[str, Any] = {
        "matches": [match],
        "backendRefs": [
            {"group": "", "kind": "Service", "name": stable, "port": port, "weight": 100 - weight},
            {"group": "", "kind": "Service", "name": canary, "port": port, "weight": weight},
        ],
    }
    if mirror:
        rule["filters"] = [
            {
                "type": "RequestMirror",
                "requestMirror": {"backendRef": {"group": "", "kind": "Service", "name": canary, "port": port}},
            }
        ]
    spec: dict[str, Any] = {"parentRefs": parents, "rules": [rule]}
    if routing.hostnames:
        spec["hostnames"] = list(routing.hostnames)
    return {"apiVersion": HTTP_ROUTE_API_VERSION, "kind": HTTP_ROUTE, "metadata": _metadata(resource), "spec": spec}


def service_host(resource: api.ModelDeployment, suffix: str, cluster_domain: str) -> str:
    """A Service's fully qualified name, so that a VirtualService bound to a gateway elsewhere finds it."""
    return f"{service_name(resource, suffix)}.{resource.metadata['namespace']}.svc.{cluster_domain}"


def build_virtual_service(
    resource: api.ModelDeployment, routing: api.IstioRouting, weight: int, mirror: bool, cluster_domain: str
) -> Manifest:
    port = resource.spec.service.port
    stable_host = service_host(resource, STABLE_SUFFIX, cluster_domain)
    canary_host = service_host(resource, CANARY_SUFFIX, cluster_domain)
    uri = {"prefix" if routing.path.type == api.PathMatchType.PATH_PREFIX else "exact": routing.path.value}
    http: dict[str, Any] = {
        "name": "rollout",
        "match": [{"uri": uri}],
        "route": [
            {"destination": {"host": stable_host, "port": {"number": port}}, "weight": 100 - weight},
            {"destination": {"host": canary_host, "port": {"number": port}}, "weight": weight},
        ],
    }
    if mirror:
        http["mirror"] = {"host": canary_host, "port": {"number": port}}
        http["mirrorPercentage"] = {"value": 100.0}
    spec: dict[str, Any] = {"hosts": list(routing.hosts) or [resource_name(resource)], "http": [http]}
    if routing.gateways:
        spec["gateways"] = list(routing.gateways)
    return {"apiVersion": ISTIO_API_VERSION, "kind": VIRTUAL_SERVICE, "metadata": _metadata(resource), "spec": spec}


def same_route(current: Manifest, desired: Manifest) -> bool:
    """Whether a stored route object holds what we build, compared on what we set (the API server adds defaults,
    so a plain equality would never hold, and a plain subset test would not see a mirror we no longer set)."""
    return bool(_essentials(current) == _essentials(desired))


def _essentials(route: Manifest) -> Any:
    spec = route.get("spec") or {}
    if route.get("kind") == HTTP_ROUTE:
        return (
            _parents(spec.get("parentRefs")),
            sorted(spec.get("hostnames") or []),
            [_http_rule(rule) for rule in spec.get("rules") or []],
            _labels_and_owners(route),
        )
    return (
        sorted(spec.get("hosts") or []),
        sorted(spec.get("gateways") or []),
        [
            (
                http.get("match"),
                [(entry.get("destination"), entry.get("weight") or 0) for entry in http.get("route") or []],
                http.get("mirror"),
                (http.get("mirrorPercentage") or {}).get("value"),
            )
            for http in spec.get("http") or []
            if isinstance(http, dict)
        ],
        _labels_and_owners(route),
    )


def _parents(parents: Any) -> list[tuple[Any, ...]]:
    return [
        (parent.get("name"), parent.get("namespace"), parent.get("sectionName"))
        for parent in parents or []
        if isinstance(parent, dict)
    ]


def _http_rule(rule: Any) -> tuple[Any, ...]:
    if not isinstance(rule, dict):
        return ()
    matches = [
        (
            (match.get("path") or {}).get("type"),
            (match.get("path") or {}).get("value"),
            [(header.get("name"), header.get("value")) for header in match.get("headers") or []],
        )
        for match in rule.get("matches") or []
        if isinstance(match, dict)
    ]
    backends = [(ref.get("name"), ref.get("port"), ref.get("weight", 1)) for ref in rule.get("backendRefs") or []]
    mirrors = [
        ((filter_.get("requestMirror") or {}).get("backendRef") or {}).get("name")
        for filter_ in rule.get("filters") or []
        if isinstance(filter_, dict) and filter_.get("type") == "RequestMirror"
    ]
    return (matches, backends, mirrors, len(rule.get("filters") or []))


def _labels_and_owners(route: Manifest) -> tuple[Any, ...]:
    metadata = route.get("metadata") or {}
    owners = [(owner.get("uid"), owner.get("controller")) for owner in metadata.get("ownerReferences") or []]
    labels = metadata.get("labels") or {}
    return (owners, {key: labels.get(key) for key in sorted(labels) if key.startswith("app.kubernetes.io/")})


def route_state(route: Manifest, cluster_domain: str = "cluster.local") -> RouteState:
    """What a stored route object holds for the canary: its weight, its mirror, and whether its controller accepted
    that very generation. The route is named like its resource, so the canary's Service is `<its name>-canary`.
    Anything unreadable is a route not in force."""
    try:
        name, namespace = str(route["metadata"]["name"]), str(route["metadata"]["namespace"])
        canary = f"{name}-{CANARY_SUFFIX}"
        if route.get("kind") == HTTP_ROUTE:
            return _http_route_state(route, canary)
        return _virtual_service_state(route, f"{canary}.{namespace}.svc.{cluster_domain}")
    except (AttributeError, KeyError, TypeError, ValueError, IndexError):
        return RouteState(weight=0, mirror=False, accepted=False)


def _share(weights: dict[str, int], canary: str) -> int:
    total = sum(weights.values())
    if total <= 0:
        return 0
    return round(100 * weights.get(canary, 0) / total)


def _http_route_state(route: Manifest, canary: str) -> RouteState:
    spec = route["spec"]
    rules = spec.get("rules") or []
    if len(rules) != 1:
        return RouteState(weight=0, mirror=False, accepted=False)
    rule = rules[0]
    weights: dict[str, int] = {}
    for ref in rule.get("backendRefs") or []:
        weights[str(ref["name"])] = weights.get(str(ref["name"]), 0) + int(ref.get("weight", 1))
    mirror = any(
        filter_.get("type") == "RequestMirror" and filter_["requestMirror"]["backendRef"]["name"] == canary
        for filter_ in rule.get("filters") or []
    )
    return RouteState(weight=_share(weights, canary), mirror=mirror, accepted=_accepted_by_parents(route))


def _accepted_by_parents(route: Manifest) -> bool:
    """Every parent Gateway the route names has accepted this generation of it (Gateway API's status contract)."""
    generation = route["metadata"].get("generation")
    namespace = route["metadata"].get("namespace")
    statuses = (route.get("status") or {}).get("parents") or []
    for parent in route["spec"].get("parentRefs") or []:
        wanted = (parent["name"], parent.get("namespace") or namespace, parent.get("sectionName"))
        accepted = False
        for status in statuses:
            ref = status.get("parentRef") or {}
            if (ref.get("name"), ref.get("namespace") or namespace, ref.get("sectionName")) != wanted:
                continue
            for condition in status.get("conditions") or []:
                if (
                    condition.get("type") == "Accepted"
                    and condition.get("status") == "True"
                    and condition.get("observedGeneration") == generation
                ):
                    accepted = True
        if not accepted:
            return False
    return True


def route_refusal(route: Manifest) -> str | None:
    """A parent's reason for not accepting this generation of the route, when one says so (for status)."""
    generation = route.get("metadata", {}).get("generation")
    for status in (route.get("status") or {}).get("parents") or []:
        if not isinstance(status, dict):
            continue
        for condition in status.get("conditions") or []:
            if (
                isinstance(condition, dict)
                and condition.get("type") in ("Accepted", "ResolvedRefs")
                and condition.get("status") == "False"
                and condition.get("observedGeneration") == generation
            ):
                parent = (status.get("parentRef") or {}).get("name", "?")
                return f"Gateway {parent}: {condition.get('reason', '')}: {condition.get('message', '')}"[:256]
    return None


def _virtual_service_state(route: Manifest, canary_host: str) -> RouteState:
    http = route["spec"].get("http") or []
    if len(http) != 1:
        return RouteState(weight=0, mirror=False, accepted=False)
    weights: dict[str, int] = {}
    for entry in http[0].get("route") or []:
        host = str(entry["destination"]["host"])
        weights[host] = weights.get(host, 0) + int(entry.get("weight", 0))
    mirror = (http[0].get("mirror") or {}).get("host") == canary_host
    # No Istio control plane has to report anything: istiod writes status only with its status feature on. What
    # the API server stored is in force unless a reported condition says it is not.
    conditions = (route.get("status") or {}).get("conditions") or []
    refused = any(
        condition.get("type") == "Reconciled" and condition.get("status") == "False" for condition in conditions
    )
    return RouteState(weight=_share(weights, canary_host), mirror=mirror, accepted=not refused)
