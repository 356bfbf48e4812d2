"""Exact traffic splitting through a real gateway: Contour and Envoy (modeldeploy_testkit.gateway) in front of two
model servers running as processes on the node agent's node.

Two plain Deployments of the runtime serving the kit's echo model, one as version 1.0.0 and one as 2.0.0, each
behind a Service of its own, all written by hand: nothing here depends on the operator. Each test writes its own
HTTPRoute and attaches it to the kit's Gateway; every request goes to Envoy on 127.0.0.1 with the route's Host, and
each answer says which version served it (meta.tags.version).

- weights 80/20: the route is Accepted (and its references resolved) for the Gateway, and of 2,000 requests 2.0.0
  answers a share within 3 binomial standard deviations of 20%, none failing;
- a RequestMirror filter: every request is answered by 1.0.0 alone, while 2.0.0's own request counter grows by one
  per request (the copies, whose answers Envoy drops);
- a route to a Service that does not exist is Accepted but says ResolvedRefs=False, BackendNotFound.

The gateway and the node agent are started by session fixtures when they are not running (Contour built first when
it is not cached). The tests are skipped only when Contour cannot be built here, and say so.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from modeldeploy_testkit.agent_pods import (
    RUNTIME_HTTP_PORT,
    RUNTIME_METRICS_PORT,
    Artifact,
    NodeAgent,
    pods_of,
    runtime_deployment,
    runtime_service,
)
from modeldeploy_testkit.cluster import Cluster, scratch_namespace
from modeldeploy_testkit.custom_models import ECHO_FIRST_FEATURE, write_custom_model
from modeldeploy_testkit.gateway import Backend, Gateway, GatewayRef, http_route, route_accepted, route_conditions
from modeldeploy_testkit.kubeapi import Manifest
from modeldeploy_testkit.nodeagent.network import check_route
from modeldeploy_testkit.resources import apply, get
from modeldeploy_testkit.runtime_server import parse_metrics
from modeldeploy_testkit.traffic import loadgen_via_gateway
from modeldeploy_testkit.waiting import http_get, wait_until

# The first test's setup may build Contour (2-5 minutes with warm Go caches, more cold) and start two model servers.
pytestmark = [pytest.mark.nodeagent, pytest.mark.gateway, pytest.mark.timeout(1200)]

PRIMARY, SECOND = "primary", "second"
VERSIONS = {PRIMARY: "1.0.0", SECOND: "2.0.0"}
SERVICE_PORT = 80
HTTPROUTE = "httproute.gateway.networking.k8s.io"
PAYLOAD: dict[str, Any] = {"data": {"ndarray": [[0.5, 1.0]]}}
REQUESTS_TOTAL = "modeldeploy_model_requests_total"

SPLIT_WEIGHTS = {PRIMARY: 80, SECOND: 20}
SPLIT_REQUESTS = 2000
# The brief of the feature: the share within 3 binomial standard deviations (a correct split falls outside 0.27% of
# the time).
SPLIT_Z = 3.0
MIRRORED_REQUESTS = 300


@dataclass
class Backends:
    namespace: str
    pods: dict[str, list[Manifest]]
    """Service -> its pods (one each), Ready."""

    def addresses(self, *services: str) -> list[tuple[str, int]]:
        return [(pod["status"]["podIP"], RUNTIME_HTTP_PORT) for service in services for pod in self.pods[service]]

    def requests_served(self, service: str) -> int:
        """The runtime's own count of prediction requests (both outcomes), summed over the Service's pods, read from
        each pod's metrics port through its IP once the route to it is checked."""
        total = 0.0
        for pod in self.pods[service]:
            ip = pod["status"]["podIP"]
            check_route(ip)
            answer = http_get(f"http://{ip}:{RUNTIME_METRICS_PORT}/metrics", timeout=5)
            if answer is None or answer.status != 200:
                raise AssertionError(f"the metrics of {pod['metadata']['name']} answered {answer}")
            total += sum(value for (name, _), value in parse_metrics(answer.text).items() if name == REQUESTS_TOTAL)
        return int(total)

    def settled_requests(self, service: str) -> int:
        """requests_served once it stays the same for a second: copies of earlier requests may still be arriving."""
        readings: list[int] = []

        def settled() -> bool:
            readings.append(self.requests_served(service))
            return len(readings) >= 2 and readings[-1] == readings[-2]

        wait_until(settled, timeout=30, interval=1.0, what=f"the request count of {service} to settle")
        return readings[-1]


@pytest.fixture(scope="module")
def echo(tmp_path_factory: pytest.TempPathFactory) -> Artifact:
    return write_custom_model(tmp_path_factory.mktemp("models"), "echo", ECHO_FIRST_FEATURE)


@pytest.fixture(scope="module")
def backends(cluster: Cluster, node_agent: NodeAgent, echo: Artifact) -> Iterator[Backends]:
    with scratch_namespace(cluster, "gateway") as namespace:
        for name, version in VERSIONS.items():
            apply(cluster, namespace, runtime_deployment(name, echo, version))
            apply(cluster, namespace, runtime_service(name, SERVICE_PORT))
        for name in VERSIONS:
            # A real model server each: a few seconds to load on two busy cores.
            cluster.kubectl("rollout", "status", f"deployment/{name}", "-n", namespace, "--timeout=180s")
        yield Backends(namespace, {name: pods_of(cluster, namespace, f"app={name}") for name in VERSIONS})


def host_for(route: str, namespace: str) -> str:
    """A host of the test's own, so that no other route of the Gateway (another test's, another run's) matches."""
    return f"{route}.{namespace}.modeldeploy.test"


def accepted_route(cluster: Cluster, namespace: str, name: str, parent: GatewayRef) -> Manifest:
    """The route once Contour has written Accepted and ResolvedRefs True for its current generation."""

    def current() -> Manifest | None:
        route: Manifest = get(cluster, HTTPROUTE, name, "-n", namespace)
        return route if route_accepted(route, parent) else None

    return wait_until(current, timeout=60, interval=0.5, what=f"HTTPRoute {namespace}/{name} to be Accepted")


def test_weights_split_the_requests_as_the_route_says(cluster: Cluster, gateway: Gateway, backends: Backends) -> None:
    namespace = backends.namespace
    host = host_for("split", namespace)
    weighted = [Backend(service, SERVICE_PORT, weight) for service, weight in SPLIT_WEIGHTS.items()]
    apply(cluster, namespace, http_route("split", namespace, gateway.ref, [host], weighted))

    route = accepted_route(cluster, namespace, "split", gateway.ref)
    conditions = route_conditions(route, gateway.ref)
    assert conditions["Accepted"]["reason"] == "Accepted", conditions
    assert conditions["ResolvedRefs"]["reason"] == "ResolvedRefs", conditions
    # Envoy holds both pods, and every address it holds is a pod IP routed through our veths (or its own loopback).
    devices = gateway.wait_for_hosts(backends.addresses(PRIMARY, SECOND))
    assert all(devices[ip] != "lo" for ip, _ in backends.addresses(PRIMARY, SECOND)), devices
    gateway.wait_for_route(host, PAYLOAD)

    report = loadgen_via_gateway(
        gateway.envoy_address,
        gateway.envoy_port,
        host,
        *("--requests", str(SPLIT_REQUESTS), "--rate", "200", "--concurrency", "8"),
        *("--payload", json.dumps(PAYLOAD), "--seed", "1"),
    )
    assert report["errors"] == 0, report["error_examples"]
    assert report["answered"] == SPLIT_REQUESTS, report
    by_version = report["by_version"]
    assert set(by_version) == set(VERSIONS.values()), by_version
    share = SPLIT_WEIGHTS[SECOND] / sum(SPLIT_WEIGHTS.values())
    expected = SPLIT_REQUESTS * share
    deviation = math.sqrt(SPLIT_REQUESTS * share * (1 - share))
    second = by_version[VERSIONS[SECOND]]
    assert abs(second - expected) <= SPLIT_Z * deviation, (
        f"{VERSIONS[SECOND]} answered {second} of {SPLIT_REQUESTS} ({100 * second / SPLIT_REQUESTS:.2f}%), expected "
        f"{expected:.0f} +- {SPLIT_Z * deviation:.1f} ({SPLIT_Z:g} standard deviations of a {100 * share:g}% share)"
    )


def test_a_mirror_copies_every_request_to_the_second_backend_while_clients_see_the_first(
    cluster: Cluster, gateway: Gateway, backends: Backends
) -> None:
    namespace = backends.namespace
    host = host_for("mirror", namespace)
    route = http_route(
        "mirror", namespace, gateway.ref, [host], [Backend(PRIMARY, SERVICE_PORT)], mirror=Backend(SECOND, SERVICE_PORT)
    )
    apply(cluster, namespace, route)
    accepted_route(cluster, namespace, "mirror", gateway.ref)
    gateway.wait_for_hosts(backends.addresses(PRIMARY, SECOND))
    gateway.wait_for_route(host, PAYLOAD)
    # The copies of the requests just sent to find the route may still be arriving: compare with settled counts.
    primary_before = backends.settled_requests(PRIMARY)
    second_before = backends.settled_requests(SECOND)

    report = loadgen_via_gateway(
        gateway.envoy_address,
        gateway.envoy_port,
        host,
        *("--requests", str(MIRRORED_REQUESTS), "--rate", "100", "--concurrency", "4"),
        *("--payload", json.dumps(PAYLOAD)),
    )
    assert report["errors"] == 0, report["error_examples"]
    # Clients see the primary's answers only: a copy's answer never reaches them.
    assert report["by_version"] == {VERSIONS[PRIMARY]: MIRRORED_REQUESTS}, report["by_version"]

    # Envoy sends the copies without waiting for them: they may land a moment after the last answer.
    wait_until(
        lambda: backends.requests_served(SECOND) - second_before >= MIRRORED_REQUESTS,
        timeout=30,
        interval=0.5,
        what=f"{MIRRORED_REQUESTS} mirrored requests at {SECOND}",
    )
    assert backends.settled_requests(SECOND) - second_before == MIRRORED_REQUESTS
    assert backends.settled_requests(PRIMARY) - primary_before == MIRRORED_REQUESTS


def test_a_route_to_a_missing_service_says_so_in_its_status(
    cluster: Cluster, gateway: Gateway, backends: Backends
) -> None:
    namespace = backends.namespace
    route = http_route(
        "nowhere", namespace, gateway.ref, [host_for("nowhere", namespace)], [Backend("no-such-service", SERVICE_PORT)]
    )
    apply(cluster, namespace, route)

    def resolved_refs() -> Manifest | None:
        body: Manifest = get(cluster, HTTPROUTE, "nowhere", "-n", namespace)
        conditions = route_conditions(body, gateway.ref)
        fresh = (conditions.get("ResolvedRefs") or {}).get("observedGeneration") == body["metadata"]["generation"]
        return conditions if fresh else None

    conditions = wait_until(resolved_refs, timeout=60, interval=0.5, what="Contour to write the route's status")
    assert conditions["Accepted"]["status"] == "True", conditions
    assert (conditions["ResolvedRefs"]["status"], conditions["ResolvedRefs"]["reason"]) == (
        "False",
        "BackendNotFound",
    ), conditions
