"""The gateway kit without a cluster: the objects gateway-up.sh applies, Contour's port mapping, the routes and
VirtualServices tests write, reading a route's status, Envoy's admin interface (a stand-in on 127.0.0.1), and the
route guard of lib.sh that keeps Envoy (and Prometheus) from starting when a pod IP could leave the machine.
"""

from __future__ import annotations

import http.server
import json
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from modeldeploy_testkit import gateway as gw
from modeldeploy_testkit.gateway import (
    CONTOUR_CONTROLLER,
    Backend,
    Gateway,
    GatewayRef,
    envoy_port_of,
    http_route,
    listener_port_for,
    manifests,
    route_accepted,
    route_conditions,
    virtual_service,
)
from modeldeploy_testkit.nodeagent.network import RouteRefusedError
from modeldeploy_testkit.scripts import SCRIPTS

PARENT = GatewayRef("modeldeploy-gateway", "modeldeploy")


# --- Contour's port mapping and the objects gateway-up.sh applies ---------------------------------------------------


@pytest.mark.parametrize(
    ("listener", "envoy"),
    [
        (80, 8080),
        (443, 8443),
        (10080, 18080),
        (57535, 65535),
        # Past 65535 it wraps around, and skips the privileged ports.
        (57536, 1024),
        (58558, 2046),
        (58559, 1024),
        (65535, 8000),
    ],
)
def test_envoy_binds_the_listener_port_plus_8000_as_contour_maps_it(listener: int, envoy: int) -> None:
    assert envoy_port_of(listener) == envoy


@pytest.mark.parametrize("envoy", [8001, 8080, 18080, 65535])
def test_the_listener_port_for_an_envoy_port_maps_back_to_it(envoy: int) -> None:
    assert envoy_port_of(listener_port_for(envoy)) == envoy


@pytest.mark.parametrize("envoy", [0, 80, 1024, 8000, 65536])
def test_an_envoy_port_no_listener_port_gives_without_wrapping_is_refused(envoy: int) -> None:
    with pytest.raises(ValueError, match="8001-65535"):
        listener_port_for(envoy)


def test_the_kit_applies_a_namespace_a_contour_gateway_class_and_one_open_http_listener() -> None:
    namespace, gateway_class, gateway = manifests("modeldeploy", "modeldeploy-gateway", "modeldeploy", 10080)

    assert (namespace["kind"], namespace["metadata"]["name"]) == ("Namespace", "modeldeploy-gateway")
    assert gateway_class["apiVersion"] == "gateway.networking.k8s.io/v1"
    assert gateway_class["spec"]["controllerName"] == "projectcontour.io/gateway-controller"
    assert gateway["metadata"] == {"name": "modeldeploy", "namespace": "modeldeploy-gateway"}
    assert gateway["spec"]["gatewayClassName"] == "modeldeploy"
    assert gateway["spec"]["listeners"] == [
        {"name": "http", "protocol": "HTTP", "port": 10080, "allowedRoutes": {"namespaces": {"from": "All"}}}
    ]


def test_the_command_line_prints_what_gateway_up_applies(capsys: pytest.CaptureFixture[str]) -> None:
    args = ["manifests", "--class", "c", "--namespace", "n", "--name", "g", "--listener-port", "80"]
    assert gw.main(args) == 0
    documents = list(yaml.safe_load_all(capsys.readouterr().out))
    assert [d["kind"] for d in documents] == ["Namespace", "GatewayClass", "Gateway"]
    assert documents[2]["spec"]["listeners"][0]["port"] == 80

    assert gw.main(["listener-port", "18080"]) == 0
    assert capsys.readouterr().out == "10080\n"
    assert gw.main(["listener-port", "80"]) == 2
    assert "8001-65535" in capsys.readouterr().err


def test_the_envoy_binary_is_the_wheels() -> None:
    path = gw.envoy_path()
    assert path.name == "envoy"
    assert path.is_file()


# --- routes and their status ----------------------------------------------------------------------------------------


def test_a_weighted_route_with_a_mirror_names_the_gateways_listener() -> None:
    route = http_route(
        "scorer",
        "team-a",
        PARENT,
        ["scorer.example"],
        [Backend("scorer-stable", 80, 80), Backend("scorer-canary", 80, 20)],
        mirror=Backend("scorer-shadow", 80),
    )
    assert route["apiVersion"] == "gateway.networking.k8s.io/v1"
    assert route["spec"]["parentRefs"] == [
        {
            "group": "gateway.networking.k8s.io",
            "kind": "Gateway",
            "namespace": "modeldeploy-gateway",
            "name": "modeldeploy",
            "sectionName": "http",
        }
    ]
    assert route["spec"]["hostnames"] == ["scorer.example"]
    [rule] = route["spec"]["rules"]
    assert rule["backendRefs"] == [
        {"name": "scorer-stable", "port": 80, "weight": 80},
        {"name": "scorer-canary", "port": 80, "weight": 20},
    ]
    assert rule["filters"] == [
        {"type": "RequestMirror", "requestMirror": {"backendRef": {"name": "scorer-shadow", "port": 80}}}
    ]


def test_a_route_without_weights_or_mirror_leaves_them_out() -> None:
    [rule] = http_route("r", "ns", PARENT, ["h.example"], [Backend("s", 80)])["spec"]["rules"]
    assert rule == {"backendRefs": [{"name": "s", "port": 80}]}


def routed(
    conditions: dict[str, str],
    *,
    generation: int = 2,
    observed: int = 2,
    controller: str = CONTOUR_CONTROLLER,
    parent: dict[str, str] | None = None,
) -> dict[str, Any]:
    ref = parent if parent is not None else {"name": "modeldeploy", "namespace": "modeldeploy-gateway"}
    return {
        "metadata": {"name": "r", "namespace": "team-a", "generation": generation},
        "status": {
            "parents": [
                {
                    "parentRef": ref,
                    "controllerName": controller,
                    "conditions": [
                        {"type": kind, "status": status, "reason": kind, "observedGeneration": observed}
                        for kind, status in conditions.items()
                    ],
                }
            ]
        },
    }


BOTH_TRUE = {"Accepted": "True", "ResolvedRefs": "True"}


@pytest.mark.parametrize(
    ("route", "accepted"),
    [
        pytest.param(routed(BOTH_TRUE), True, id="accepted"),
        pytest.param({"metadata": {"name": "r", "namespace": "team-a", "generation": 1}}, False, id="no-status"),
        pytest.param(routed({"Accepted": "True", "ResolvedRefs": "False"}), False, id="unresolved"),
        pytest.param(routed({"Accepted": "True"}), False, id="refs-not-said"),
        pytest.param(routed(BOTH_TRUE, generation=3, observed=2), False, id="stale"),
        pytest.param(routed(BOTH_TRUE, controller="example.com/other"), False, id="other-controller"),
        pytest.param(
            routed(BOTH_TRUE, parent={"name": "other", "namespace": "modeldeploy-gateway"}), False, id="other"
        ),
        # A parentRef without a namespace means the route's own namespace, not the Gateway's.
        pytest.param(routed(BOTH_TRUE, parent={"name": "modeldeploy"}), False, id="route-namespace"),
    ],
)
def test_a_route_is_accepted_only_when_contour_says_so_for_our_gateway_and_this_generation(
    route: dict[str, Any], accepted: bool
) -> None:
    assert route_accepted(route, PARENT) is accepted


def test_route_conditions_are_those_of_our_gateway() -> None:
    route = routed({"Accepted": "True", "ResolvedRefs": "False"})
    assert route_conditions(route, PARENT)["ResolvedRefs"]["status"] == "False"
    assert route_conditions(route, GatewayRef("elsewhere", "modeldeploy")) == {}


def test_a_virtual_service_splits_by_weight_and_mirrors() -> None:
    body = virtual_service(
        "scorer",
        "team-a",
        ["scorer"],
        [Backend("scorer-stable", 80, 90), Backend("scorer-canary", 80, 10)],
        mirror=Backend("scorer-shadow", 80),
        mirror_percent=100.0,
    )
    assert body["apiVersion"] == "networking.istio.io/v1"
    assert body["spec"] == {
        "hosts": ["scorer"],
        "http": [
            {
                "route": [
                    {"destination": {"host": "scorer-stable", "port": {"number": 80}}, "weight": 90},
                    {"destination": {"host": "scorer-canary", "port": {"number": 80}}, "weight": 10},
                ],
                "mirror": {"host": "scorer-shadow", "port": {"number": 80}},
                "mirrorPercentage": {"value": 100.0},
            }
        ],
    }


# --- Envoy's admin interface ----------------------------------------------------------------------------------------


def cluster_status(name: str, *hosts: tuple[str, int, str]) -> dict[str, Any]:
    return {
        "name": name,
        "host_statuses": [
            {
                "address": {"socket_address": {"address": address, "port_value": port}},
                "health_status": {"eds_health_status": health},
            }
            for address, port, health in hosts
        ],
    }


ADMIN_SOCKET_CLUSTER = {
    "name": "envoy-admin",
    "host_statuses": [{"address": {"pipe": {"path": "admin.sock"}}, "health_status": {"eds_health_status": "HEALTHY"}}],
}


class AdminHandler(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        server: Any = self.server
        if self.path == "/ready":
            status, body = (200, b"LIVE\n") if server.live else (503, b"PRE_INITIALIZING\n")
        elif self.path == "/clusters?format=json":
            status, body = 200, json.dumps({"cluster_statuses": server.clusters}).encode()
        else:
            status, body = 404, b""
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def admin() -> Iterator[Any]:
    server: Any = http.server.ThreadingHTTPServer(("127.0.0.1", 0), AdminHandler)
    server.port = server.server_address[1]
    server.live = True
    server.clusters = [ADMIN_SOCKET_CLUSTER, cluster_status("contour", ("127.0.0.1", 20001, "HEALTHY"))]
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server
    server.shutdown()
    server.server_close()


def running(admin_server: Any) -> Gateway:
    return Gateway("modeldeploy-gateway", "modeldeploy", "modeldeploy", 10080, "127.0.0.1", 18080, admin_server.port)


@pytest.fixture
def routes(monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """`ip route get` stood in for: the device of each pod IP this machine would route through our veths."""
    devices = {"198.19.128.5": "mdv1", "198.19.128.6": "mdv2"}

    def check_route(address: str) -> str:
        if address not in devices:
            raise RouteRefusedError(f"{address} is routed through eth0, which is not one of our veths")
        return devices[address]

    monkeypatch.setattr(gw, "check_route", check_route)
    return devices


def test_gateway_env_is_read_as_gateway_up_writes_it(tmp_path: Path) -> None:
    env = tmp_path / "gateway.env"
    env.write_text(
        "CONTOUR_VERSION=v1.33.8\nGATEWAY_CLASS=modeldeploy\nGATEWAY_NAMESPACE=modeldeploy-gateway\n"
        "GATEWAY_NAME=modeldeploy\nGATEWAY_LISTENER_PORT=10080\nENVOY_ADDRESS=127.0.0.1\nENVOY_PORT=18080\n"
        "ENVOY_ADMIN_PORT=23456\nENVOY_STATS_PORT=23457\n"
    )
    gateway = Gateway.from_env(env)
    assert (gateway.envoy_address, gateway.envoy_port, gateway.admin_port) == ("127.0.0.1", 18080, 23456)
    assert gateway.ref == PARENT
    endpoint = gateway.endpoint("scorer.team-a.example")
    assert (endpoint.ip, endpoint.port, endpoint.host) == ("127.0.0.1", 18080, "scorer.team-a.example")


def test_ready_is_envoys_live(admin: Any) -> None:
    assert running(admin).ready()
    admin.live = False
    assert not running(admin).ready()


def test_upstream_hosts_skip_the_admin_socket(admin: Any) -> None:
    admin.clusters.append(cluster_status("team-a/primary/80/da39a3ee5e", ("198.19.128.5", 9000, "HEALTHY")))
    hosts = running(admin).upstream_hosts()
    assert [(h.cluster, h.address, h.port, h.health) for h in hosts] == [
        ("contour", "127.0.0.1", 20001, "HEALTHY"),
        ("team-a/primary/80/da39a3ee5e", "198.19.128.5", 9000, "HEALTHY"),
    ]


def test_every_upstream_must_be_loopback_or_a_pod_ip_through_our_veths(admin: Any, routes: dict[str, str]) -> None:
    admin.clusters.append(cluster_status("team-a/primary/80/x", ("198.19.128.5", 9000, "HEALTHY")))
    assert running(admin).check_upstreams() == {"127.0.0.1": "lo", "198.19.128.5": "mdv1"}

    admin.clusters.append(cluster_status("team-a/elsewhere/80/y", ("10.1.2.3", 80, "HEALTHY")))
    with pytest.raises(RouteRefusedError, match=r"team-a/elsewhere/80/y holds 10\.1\.2\.3"):
        running(admin).check_upstreams()


def test_an_upstream_named_by_dns_is_refused(admin: Any, routes: dict[str, str]) -> None:
    admin.clusters.append(cluster_status("team-a/external/80/z", ("example.com", 80, "HEALTHY")))
    with pytest.raises(RouteRefusedError, match="not an IP"):
        running(admin).check_upstreams()


def test_waiting_for_hosts_needs_each_healthy_and_then_checks_every_route(admin: Any, routes: dict[str, str]) -> None:
    admin.clusters.append(
        cluster_status("team-a/primary/80/x", ("198.19.128.5", 9000, "HEALTHY"), ("198.19.128.6", 9000, "UNHEALTHY"))
    )
    gateway = running(admin)
    with pytest.raises(AssertionError, match="timed out"):
        gateway.wait_for_hosts([("198.19.128.5", 9000), ("198.19.128.6", 9000)], timeout=0.5)
    admin.clusters[-1]["host_statuses"][1]["health_status"]["eds_health_status"] = "HEALTHY"
    devices = gateway.wait_for_hosts([("198.19.128.5", 9000), ("198.19.128.6", 9000)], timeout=5)
    assert devices == {"127.0.0.1": "lo", "198.19.128.5": "mdv1", "198.19.128.6": "mdv2"}


# --- lib.sh's route guard, with `ip` stood in for ----------------------------------------------------------------


ROUTE_OURS = "198.18.0.9 dev mdpods0 src 198.19.255.254 uid 0"
RANGE_OURS = "198.18.0.0/15 dev mdpods0 proto kernel scope link src 198.19.255.254"
AGENT_POD = "198.19.128.5 dev mdv1a2b3c scope link src 198.19.255.254"


def guard(
    tmp_path: Path, route_get: str, routes: list[str], aliased: tuple[str, ...] = ()
) -> subprocess.CompletedProcess[str]:
    """pod_range_routed_here from lib.sh, with an `ip` that answers as this machine would."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    show = "\n".join(routes)
    links = "\n".join(
        f'  "{dev}") echo "9: {dev}@if2: <UP> mtu 1500 alias modeldeploy-nodeagent:uid" ;;' for dev in aliased
    )
    fake_ip = bin_dir / "ip"
    fake_ip.write_text(
        "#!/bin/bash\n"
        'case "$1 $2" in\n'
        f'  "route get") echo "{route_get}" ;;\n'
        f'  "-o route") printf "%s\\n" "{show}" ;;\n'
        '  "-o link") case "$5" in\n'
        f"{links}\n"
        '    *) echo "9: $5: <UP> mtu 1500" ;;\n'
        "  esac ;;\n"
        "esac\n"
    )
    fake_ip.chmod(0o755)
    script = f'. "{SCRIPTS}/lib.sh"; pod_range_routed_here'
    return subprocess.run(
        ["bash", "-c", script],
        env={"PATH": f"{bin_dir}:/usr/bin:/bin", "HOME": str(tmp_path)},
        capture_output=True,
        text=True,
        check=False,
    )


def test_the_guard_passes_when_every_route_into_the_pod_range_is_ours(tmp_path: Path) -> None:
    result = guard(tmp_path, ROUTE_OURS, [RANGE_OURS, AGENT_POD], aliased=("mdv1a2b3c",))
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize(
    ("route_get", "routes", "says"),
    [
        pytest.param(
            "198.18.0.9 via 192.168.1.1 dev eth0 src 192.168.1.20 uid 0",
            [],
            "not routed through mdpods0",
            id="no-veth",
        ),
        pytest.param(ROUTE_OURS, [RANGE_OURS, "198.19.0.0/16 dev eth0 scope link"], "not one of ours", id="foreign"),
        pytest.param(ROUTE_OURS, [RANGE_OURS, "198.19.1.0/24 via 10.0.0.1 dev mdpods0"], "through a gateway", id="via"),
        pytest.param(ROUTE_OURS, [RANGE_OURS, AGENT_POD], "not one of ours", id="veth-without-alias"),
    ],
)
def test_the_guard_refuses_any_route_that_could_leave_the_machine(
    tmp_path: Path, route_get: str, routes: list[str], says: str
) -> None:
    result = guard(tmp_path, route_get, routes)
    assert result.returncode == 1
    assert says in result.stderr
