"""The load generator: the ready endpoints it follows from EndpointSlice events, and how it counts failures.

The EndpointSlice events are fed to the watch's handler directly (no API server); the requests go to small HTTP
servers on 127.0.0.1 of this test, through `run()` with a fixed source (the route check belongs to the watch,
checked here with a stand-in).
"""

from __future__ import annotations

import http.server
import json
import socket
import threading
from collections.abc import Iterator
from typing import Any, cast

import pytest

from modeldeploy_testkit.kubeapi import KubeAPI
from modeldeploy_testkit.loadgen import (
    NO_ENDPOINT,
    REFUSED,
    RESET,
    Endpoint,
    EndpointWatch,
    FixedEndpoints,
    RefusedError,
    gateway_endpoint,
    parse_args,
    report,
    run,
)
from modeldeploy_testkit.nodeagent.network import RouteRefusedError
from modeldeploy_testkit.waiting import free_port

NAMESPACE, SERVICE = "team-a", "fraud-detector"


class StandInAPI:
    """Answers the pod lookups of the watch: each pod's version label; counts them."""

    def __init__(self, versions: dict[str, str]) -> None:
        self.versions = versions
        self.gets: list[str] = []

    def get(self, path: str, params: dict[str, Any] | None = None) -> dict[str, Any] | None:
        self.gets.append(path)
        name = path.rsplit("/", 1)[1]
        if name not in self.versions:
            return None
        return {"metadata": {"name": name, "labels": {"app.kubernetes.io/version": self.versions[name]}}}


def route_check(ip: str) -> str:
    if ip.startswith("10."):
        raise RouteRefusedError(f"{ip} is outside the pod range")
    return "mdpods0"


def endpoint(pod: str, ip: str, **conditions: bool) -> dict[str, Any]:
    body: dict[str, Any] = {"addresses": [ip], "targetRef": {"kind": "Pod", "name": pod, "uid": f"uid-{pod}"}}
    if conditions:
        body["conditions"] = conditions
    return body


def endpoint_slice(name: str, *endpoints: dict[str, Any], port: int = 9000) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "labels": {"kubernetes.io/service-name": SERVICE}},
        "addressType": "IPv4",
        "ports": [{"name": "http", "port": port, "protocol": "TCP"}, {"name": "metrics", "port": 6000}],
        "endpoints": list(endpoints),
    }


@pytest.fixture
def api() -> StandInAPI:
    return StandInAPI({"stable-a": "1.0.0", "stable-b": "1.0.0", "canary-a": "2.0.0"})


@pytest.fixture
def watch(api: StandInAPI) -> EndpointWatch:
    return EndpointWatch(cast(KubeAPI, api), NAMESPACE, SERVICE, "http", route_check=route_check)


def pods(watch: EndpointWatch) -> list[str]:
    return [e.pod for e in watch.ready()]


def test_only_ready_endpoints_take_requests_as_kube_proxy_reads_them(watch: EndpointWatch) -> None:
    watch._on_event(
        "ADDED",
        endpoint_slice(
            "fd-1",
            endpoint("stable-a", "198.19.128.1", ready=True, serving=True, terminating=False),
            # No conditions at all: the API says to read that as ready.
            endpoint("stable-b", "198.19.128.2"),
            # Not ready yet (its model loads).
            endpoint("canary-a", "198.19.128.3", ready=False, serving=False, terminating=False),
        ),
    )
    assert pods(watch) == ["stable-a", "stable-b"]
    assert {e.pod: (e.ip, e.port, e.version) for e in watch.ready()} == {
        "stable-a": ("198.19.128.1", 9000, "1.0.0"),
        "stable-b": ("198.19.128.2", 9000, "1.0.0"),
    }


def test_a_terminating_endpoint_leaves_at_once_even_while_still_serving(watch: EndpointWatch) -> None:
    watch._on_event(
        "ADDED",
        endpoint_slice(
            "fd-1", endpoint("stable-a", "198.19.128.1", ready=True), endpoint("stable-b", "198.19.128.2", ready=True)
        ),
    )
    # What the EndpointSlice controller writes as soon as the pod has a deletionTimestamp: ready false, terminating
    # true, and serving as the pod's Ready condition says (still true while its preStop hook runs).
    watch._on_event(
        "MODIFIED",
        endpoint_slice(
            "fd-1",
            endpoint("stable-a", "198.19.128.1", ready=False, serving=True, terminating=True),
            endpoint("stable-b", "198.19.128.2", ready=True),
        ),
    )
    assert pods(watch) == ["stable-b"]
    assert [count for _, count in watch.changes] == [2, 1]


def test_endpoints_of_every_slice_count_and_a_deleted_slice_takes_its_own(watch: EndpointWatch) -> None:
    watch._on_event("ADDED", endpoint_slice("fd-1", endpoint("stable-a", "198.19.128.1", ready=True)))
    watch._on_event("ADDED", endpoint_slice("fd-2", endpoint("canary-a", "198.19.128.3", ready=True)))
    assert pods(watch) == ["canary-a", "stable-a"]
    watch._on_event("DELETED", endpoint_slice("fd-1"))
    assert pods(watch) == ["canary-a"]
    assert {e.pod for e in watch.seen()} == {"stable-a", "canary-a"}


def test_an_ip_outside_our_veths_is_never_offered(watch: EndpointWatch) -> None:
    watch._on_event(
        "ADDED",
        endpoint_slice(
            "fd-1", endpoint("stable-a", "198.19.128.1", ready=True), endpoint("stray", "10.0.0.7", ready=True)
        ),
    )
    assert pods(watch) == ["stable-a"]
    assert "10.0.0.7" in watch.refused
    assert watch.devices == {"198.19.128.1": "mdpods0"}


def test_a_pods_version_is_asked_once(watch: EndpointWatch, api: StandInAPI) -> None:
    for _ in range(3):
        watch._on_event("MODIFIED", endpoint_slice("fd-1", endpoint("stable-a", "198.19.128.1", ready=True)))
    assert api.gets == [f"/api/v1/namespaces/{NAMESPACE}/pods/stable-a"]


def test_a_slice_without_the_service_port_offers_nothing(watch: EndpointWatch) -> None:
    body = endpoint_slice("fd-1", endpoint("stable-a", "198.19.128.1", ready=True))
    body["ports"] = [{"name": "metrics", "port": 6000}]
    watch._on_event("ADDED", body)
    assert watch.ready() == []


# --- sending and counting ----------------------------------------------------------------------------------------


class ModelHandler(http.server.BaseHTTPRequestHandler):
    """A model server of one version, or one that fails in the way the server's `behaviour` says."""

    protocol_version = "HTTP/1.1"

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        behaviour = getattr(self.server, "behaviour", "answer")
        if behaviour == "hang-up":
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)
            return
        status, body = (500, b'{"status": {"reason": "MODEL_PREDICTION_FAILED"}}')
        if behaviour in ("answer", "answer-and-close", "answer-then-drop"):
            status, body = 200, json.dumps({"meta": {"tags": {"version": "1.0.0"}}}).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        if behaviour == "answer-and-close":
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        self.wfile.write(body)
        if behaviour == "answer-then-drop":
            # Keep-alive announced, then closed anyway: what a server's idle timeout does to a kept-alive connection.
            self.wfile.flush()
            self.close_connection = True

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def serve() -> Iterator[Any]:
    servers: list[http.server.ThreadingHTTPServer] = []

    def start(behaviour: str) -> int:
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), ModelHandler)
        server.behaviour = behaviour  # type: ignore[attr-defined]
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return int(server.server_address[1])

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def send(endpoints: list[Endpoint] | FixedEndpoints, count: int = 20) -> dict[str, Any]:
    tally, elapsed = run(
        endpoints,
        rate=2000,
        requests=count,
        duration=None,
        concurrency=2,
        path="/api/v1.0/predictions",
        payload={"data": {"ndarray": [[1.0]]}},
        timeout=5,
        seed=7,
    )
    return report(endpoints, {}, tally, elapsed)


def test_answers_are_counted_per_pod_and_version(serve: Any) -> None:
    result = send([Endpoint("stable-a", "127.0.0.1", serve("answer"), "1.0.0")])
    assert (result["answered"], result["errors"], result["errors_by_kind"]) == (20, 0, {})
    assert result["by_version"] == {"1.0.0": 20}
    assert result["by_pod"]["stable-a"]["answered"] == 20
    assert result["retried_on_closed_keepalive"] == 0


def test_connection_close_is_honoured_without_a_failure(serve: Any) -> None:
    """A draining server says "Connection: close" on every answer: the next request opens a new connection."""
    result = send([Endpoint("draining", "127.0.0.1", serve("answer-and-close"), "1.0.0")])
    assert (result["answered"], result["errors"], result["retried_on_closed_keepalive"]) == (20, 0, 0)


def test_a_kept_alive_connection_the_server_closed_is_retried_once_and_counted(serve: Any) -> None:
    result = send([Endpoint("idle-timeout", "127.0.0.1", serve("answer-then-drop"), "1.0.0")], count=10)
    assert (result["answered"], result["errors"]) == (10, 0)
    # Every request after a sender's first found its connection closed.
    assert result["retried_on_closed_keepalive"] >= 1


@pytest.mark.parametrize(
    ("behaviour", "kind"),
    [
        ("fail", "http_500"),
        ("hang-up", RESET),
    ],
)
def test_failures_are_counted_by_kind(serve: Any, behaviour: str, kind: str) -> None:
    result = send([Endpoint("broken", "127.0.0.1", serve(behaviour), "1.0.0")], count=6)
    assert result["answered"] == 0
    assert result["errors"] == 6
    assert result["errors_by_kind"] == {kind: 6}
    assert result["by_pod"]["broken"]["errors"] == 6
    # A fresh connection that fails is a failure, never retried.
    assert result["retried_on_closed_keepalive"] == 0


def test_a_closed_port_is_a_refused_connection() -> None:
    result = send([Endpoint("gone", "127.0.0.1", free_port(), "1.0.0")], count=4)
    assert result["errors_by_kind"] == {REFUSED: 4}
    assert result["error_examples"][0].startswith("gone (127.0.0.1): ConnectionRefusedError")


def test_no_ready_endpoint_is_a_failure_of_its_own() -> None:
    result = send(FixedEndpoints([]), count=5)
    assert result["sent"] == 5
    assert result["errors_by_kind"] == {NO_ENDPOINT: 5}
    assert result["errors"] == 5
    assert result["error_examples"][0] == "(no endpoint): no ready endpoint"


# --- through a gateway -------------------------------------------------------------------------------------------


ROUTED_HOSTS = {"split.team-a.example": "2.0.0"}


class RoutingHandler(http.server.BaseHTTPRequestHandler):
    """A gateway in miniature: answers with the version its Host header routes to, 404 for any other host."""

    protocol_version = "HTTP/1.1"

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        version = ROUTED_HOSTS.get(self.headers.get("Host", ""))
        status, body = (
            (404, b"") if version is None else (200, json.dumps({"meta": {"tags": {"version": version}}}).encode())
        )
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def routing_gateway() -> Iterator[int]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), RoutingHandler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield int(server.server_address[1])
    server.shutdown()
    server.server_close()


def test_through_a_gateway_every_request_carries_the_routes_host(routing_gateway: int) -> None:
    result = send([gateway_endpoint("127.0.0.1", routing_gateway, "split.team-a.example")])
    assert (result["answered"], result["errors"]) == (20, 0)
    assert result["by_version"] == {"2.0.0": 20}
    assert result["by_pod"][f"gateway 127.0.0.1:{routing_gateway}"]["answered"] == 20

    unrouted = send([gateway_endpoint("127.0.0.1", routing_gateway, "other.example")], count=3)
    assert unrouted["errors_by_kind"] == {"http_404": 3}


@pytest.mark.parametrize(
    ("address", "port", "host", "refusal"),
    [
        ("198.19.128.5", 18080, "a.example", "not on this machine"),
        ("8.8.8.8", 80, "a.example", "not on this machine"),
        ("localhost", 18080, "a.example", "not an IP address"),
        ("127.0.0.1", 0, "a.example", "out of range"),
        ("127.0.0.1", 18080, "a.example/../x", "not a host name"),
        ("127.0.0.1", 18080, "A.Example", "not a host name"),
        ("127.0.0.1", 18080, "a.example:99999", "not a host name"),
        ("127.0.0.1", 18080, "-a.example", "not a host name"),
        ("127.0.0.1", 18080, "", "not a host name"),
    ],
)
def test_a_gateway_off_this_machine_or_a_bad_host_is_refused(address: str, port: int, host: str, refusal: str) -> None:
    with pytest.raises(RefusedError, match=refusal):
        gateway_endpoint(address, port, host)


def test_a_host_with_a_port_is_a_host_a_route_can_match() -> None:
    endpoint = gateway_endpoint("::1", 18080, "scorer.team-a.example:18080")
    assert (endpoint.ip, endpoint.host, endpoint.version) == ("::1", "scorer.team-a.example:18080", None)


@pytest.mark.parametrize(
    ("argv", "error"),
    [
        (["--rate", "10", "--requests", "1"], "name a Service, or give --gateway"),
        (["svc", "--gateway", "127.0.0.1:18080", "--host", "a.example", "--rate", "10", "--requests", "1"], "one of"),
        (["--gateway", "127.0.0.1:18080", "--rate", "10", "--requests", "1"], "needs --host"),
        (["--gateway", "18080", "--host", "a.example", "--rate", "10", "--requests", "1"], "ADDRESS:PORT"),
        (["--gateway", "10.0.0.1:80", "--host", "a.example", "--rate", "10", "--requests", "1"], "not on this machine"),
        (["svc", "--host", "a.example", "--rate", "10", "--requests", "1"], "--host applies to --gateway only"),
    ],
)
def test_the_command_line_takes_a_service_or_a_gateway_with_a_host(
    argv: list[str], error: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit):
        parse_args(argv)
    assert error in capsys.readouterr().err


def test_the_command_line_through_a_gateway_lowers_the_host() -> None:
    options = parse_args(
        ["--gateway", "127.0.0.1:18080", "--host", "Scorer.Example", "--rate", "10", "--requests", "1"]
    )
    assert options.gateway_endpoint == gateway_endpoint("127.0.0.1", 18080, "scorer.example")


def test_a_stop_ends_an_unbounded_run_and_every_request_sent_is_reported(serve: Any) -> None:
    stop = threading.Event()
    port = serve("answer")
    results: list[dict[str, Any]] = []

    def traffic() -> None:
        endpoints = [Endpoint("stable-a", "127.0.0.1", port, "1.0.0")]
        tally, elapsed = run(
            endpoints,
            rate=50,
            requests=None,
            duration=3600,
            concurrency=2,
            path="/api/v1.0/predictions",
            payload={"data": {"ndarray": [[1.0]]}},
            timeout=5,
            seed=7,
            stop=stop,
        )
        results.append(report(endpoints, {}, tally, elapsed))

    sender = threading.Thread(target=traffic)
    sender.start()
    stop.set()
    sender.join(timeout=10)
    assert not sender.is_alive(), "the run went on after its stop was set"
    (result,) = results
    assert result["errors"] == 0
    assert result["answered"] == result["sent"]
