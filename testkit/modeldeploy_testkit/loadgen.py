"""Load generator for a model Service on the local cluster, spreading requests as kube-proxy would.

    .venv/bin/python -m modeldeploy_testkit.loadgen -n NAMESPACE SERVICE --requests 2000 --rate 200 [--json]
    .venv/bin/python -m modeldeploy_testkit.loadgen -n NAMESPACE SERVICE --duration 30 --rate 50
    .venv/bin/python -m modeldeploy_testkit.loadgen --gateway 127.0.0.1:18080 --host HOST --requests 2000 --rate 200

There is no kube-proxy on the local cluster, so the Service is resolved here, the way kube-proxy does it: a list of
its EndpointSlices, then a watch that follows them for as long as the run lasts (EndpointWatch). Only ready
endpoints take requests (an endpoint without a `ready` condition counts as ready, as the API says); the port is the
number the slice gives for the Service port (`http` unless --port names another). Each request goes to an endpoint
picked uniformly at random among those ready at the moment it is sent, as kube-proxy's iptables and nftables modes
pick a backend per connection; every request here opens or reuses a connection to the endpoint it picked, and
connections to an endpoint that is no longer ready are closed.

Before anything is sent to an IP, `ip route get` must show it routed through one of our veths (the cluster's
mdpods0 or a per-pod veth of the node agent). At the start, one endpoint that is not refuses the whole run; an
endpoint that appears later and is not is never sent to, and the report names it. The run is bounded: a rate and
a request count or a duration are required; SIGTERM ends a run early, and the report covers what was sent.

Through a gateway (--gateway ADDRESS:PORT --host HOST), every request goes to that one address, on this machine
only (loopback), with the Host header a route matches; the gateway picks the backend, and the report counts the
answers per version as before (per pod there is only the gateway). The gateway's own data plane checked the pod
range's routes before it started (modeldeploy_testkit.gateway).

Reported per pod and per model version: how many requests each answered, and mismatches between the version a
pod should serve (its `app.kubernetes.io/version` label) and the `meta.tags.version` it answered with. Every
failed request is counted by kind (FAILURE_KINDS): a request never sent for want of a ready endpoint, a connection
refused, reset or timed out, an HTTP error status, an answer without a version.
"""

from __future__ import annotations

import argparse
import http.client
import ipaddress
import json
import os
import queue
import random
import re
import signal
import socket
import statistics
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from modeldeploy_testkit.kubeapi import ApiError, KubeAPI, Manifest
from modeldeploy_testkit.nodeagent.network import RouteRefusedError, check_route
from modeldeploy_testkit.scripts import REPO_ROOT
from modeldeploy_testkit.watches import CollectionWatch

VERSION_LABEL = "app.kubernetes.io/version"
MAX_REQUESTS = 1_000_000
MAX_DURATION_SECONDS = 3600.0
MAX_RATE = 5000.0
DEFAULT_PAYLOAD = {"data": {"ndarray": [[0.5, 0.5]]}}
ENDPOINT_SLICES = "/apis/discovery.k8s.io/v1/namespaces/{namespace}/endpointslices"
SERVICE_NAME_LABEL = "kubernetes.io/service-name"
# How a request can fail, one counter each.
NO_ENDPOINT = "no_endpoint"  # nothing ready to send it to: kube-proxy rejects such a connection
REFUSED = "connection_refused"
RESET = "connection_reset"  # reset, or closed before the answer
TIMEOUT = "timeout"
BAD_ANSWER = "bad_answer"  # 200 without meta.tags.version
OTHER = "other"
FAILURE_KINDS = (NO_ENDPOINT, REFUSED, RESET, TIMEOUT, "http_<status>", BAD_ANSWER, OTHER)


# One label of a DNS name (RFC 1123), lower case: what a route's `hostnames` are made of.
_DNS_LABEL = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")


class RefusedError(Exception):
    pass


@dataclass(frozen=True)
class Endpoint:
    pod: str
    ip: str
    port: int
    version: str | None
    host: str | None = None
    """The Host header to send (a gateway routes by it); None sends the address, as http.client does."""


def valid_host(host: str) -> bool:
    """A Host header a gateway route can match: a lower-case DNS name, optionally with a port."""
    name, colon, port = host.partition(":")
    if colon and not (port.isdigit() and 0 < int(port) < 65536):
        return False
    return 0 < len(name) <= 253 and all(_DNS_LABEL.match(label) for label in name.split("."))


def gateway_endpoint(address: str, port: int, host: str) -> Endpoint:
    """The one endpoint of a run through a gateway: its listener on this machine, and the Host a route matches.

    Only a loopback address is accepted: the gateway runs here, and it is the gateway that checked, before it
    started, that the pod IPs it forwards to are routed through our veths."""
    try:
        parsed = ipaddress.ip_address(address)
    except ValueError:
        raise RefusedError(f"gateway address {address!r} is not an IP address") from None
    if not parsed.is_loopback:
        raise RefusedError(f"gateway address {address} is not on this machine (loopback); refusing to send")
    if not 0 < port < 65536:
        raise RefusedError(f"gateway port {port} is out of range")
    if not valid_host(host):
        raise RefusedError(f"{host!r} is not a host name a route can match")
    return Endpoint(f"gateway {address}:{port}", address, port, None, host)


@dataclass
class Tally:
    lock: threading.Lock = field(default_factory=threading.Lock)
    sent: int = 0
    answered: Counter[str] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    """Failed requests per pod (a request that found no ready endpoint has no pod: it is in `failures` only)."""
    failures: Counter[str] = field(default_factory=Counter)
    """Failed requests per kind (FAILURE_KINDS): every failure is here once."""
    retried: int = 0
    """Requests sent again on a new connection after a kept-alive one turned out closed by the server before it
    answered (RFC 9112 9.3.1); counted apart, never hidden: the retry's own failure is a failure."""
    by_version: Counter[str] = field(default_factory=Counter)
    pod_versions: dict[str, Counter[str]] = field(default_factory=dict)
    mismatches: int = 0
    mismatch_examples: list[dict[str, str | None]] = field(default_factory=list)
    error_examples: list[str] = field(default_factory=list)
    latencies: list[float] = field(default_factory=list)
    last_sent: dict[str, float] = field(default_factory=dict)
    """Version -> the wall-clock time (time.time()) at which the latest request it answered was sent: when a
    version stopped getting requests, as the client saw it."""


def is_ready(endpoint: Manifest) -> bool:
    """An endpoint's `ready` condition as kube-proxy reads it: absent means ready (the API's own rule)."""
    return (endpoint.get("conditions") or {}).get("ready") is not False


def check_service(api: KubeAPI, namespace: str, service: str, port_name: str) -> None:
    body = api.get(f"/api/v1/namespaces/{namespace}/services/{service}")
    if body is None:
        raise RefusedError(f"service {namespace}/{service} not found")
    ports = body["spec"].get("ports") or []
    if not any(p.get("name", "") == port_name for p in ports) and not (len(ports) == 1 and not port_name):
        raise RefusedError(f"service {namespace}/{service} has no port named {port_name!r}")


def resolve(api: KubeAPI, namespace: str, service: str, port_name: str) -> list[Endpoint]:
    """Ready endpoints of the Service's port now, with the version each pod should serve (one look: EndpointWatch
    follows them)."""
    check_service(api, namespace, service, port_name)
    slices = api.list(ENDPOINT_SLICES.format(namespace=namespace), {"labelSelector": f"{SERVICE_NAME_LABEL}={service}"})
    endpoints = []
    for endpoint_slice in slices.get("items") or []:
        if endpoint_slice.get("addressType") != "IPv4":
            continue
        number = next(
            (p.get("port") for p in endpoint_slice.get("ports") or [] if (p.get("name") or "") == port_name), None
        )
        if number is None:
            continue
        for endpoint in endpoint_slice.get("endpoints") or []:
            if not is_ready(endpoint):
                continue
            target = endpoint.get("targetRef") or {}
            pod_name = str(target.get("name") or endpoint["addresses"][0])
            pod = api.get(f"/api/v1/namespaces/{namespace}/pods/{pod_name}") if target.get("kind") == "Pod" else None
            version = ((pod or {}).get("metadata", {}).get("labels") or {}).get(VERSION_LABEL)
            for address in endpoint.get("addresses") or []:
                endpoints.append(Endpoint(pod_name, str(address), int(number), version))
    return endpoints


def check_routes(endpoints: list[Endpoint]) -> dict[str, str]:
    """`ip route get` for every endpoint IP; refuses the whole run when one is not routed through our veths."""
    devices = {}
    for endpoint in endpoints:
        try:
            devices[endpoint.ip] = check_route(endpoint.ip)
        except RouteRefusedError as error:
            raise RefusedError(f"refusing to send to {endpoint.pod} ({endpoint.ip}): {error}") from None
    return devices


class EndpointSource(Protocol):
    """Where a sender takes the endpoints to choose from, at the moment it sends."""

    def ready(self) -> list[Endpoint]: ...

    def seen(self) -> list[Endpoint]:
        """Every endpoint that was ready at some point, for the report."""
        ...


class FixedEndpoints:
    """The same endpoints for the whole run (what `resolve` gave)."""

    def __init__(self, endpoints: Iterable[Endpoint]) -> None:
        self._endpoints = list(endpoints)

    def ready(self) -> list[Endpoint]:
        return self._endpoints

    def seen(self) -> list[Endpoint]:
        return self._endpoints


class EndpointWatch:
    """The ready endpoints of one Service port, kept current from a watch of its EndpointSlices, as kube-proxy
    keeps its rules: start() lists them (in the calling thread), then every change arrives as it happens.

    A new endpoint's IP must pass the route check before it is ever offered; one that does not is kept out and
    listed in `refused`. The pod's version (its label) is read once per pod."""

    def __init__(
        self,
        api: KubeAPI,
        namespace: str,
        service: str,
        port_name: str = "http",
        route_check: Callable[[str], str] = check_route,
    ) -> None:
        self.api = api
        self.namespace = namespace
        self.service = service
        self.port_name = port_name
        self.route_check = route_check
        self.refused: dict[str, str] = {}
        """IP -> why it is never sent to."""
        self.devices: dict[str, str] = {}
        """IP -> the veth `ip route get` named."""
        self.changes: list[tuple[float, int]] = []
        """(time.monotonic(), ready endpoints) after every change of the ready set."""
        self._lock = threading.Lock()
        self._by_slice: dict[str, list[Endpoint]] = {}
        self._ready: list[Endpoint] = []
        self._seen: dict[tuple[str, str, int], Endpoint] = {}
        self._versions: dict[str, str | None] = {}
        self._watch = CollectionWatch(
            api,
            ENDPOINT_SLICES.format(namespace=namespace),
            self._on_event,
            {"labelSelector": f"{SERVICE_NAME_LABEL}={service}"},
            timeout_seconds=60,
        )

    def start(self) -> EndpointWatch:
        check_service(self.api, self.namespace, self.service, self.port_name)
        self._watch.start()
        with self._lock:
            # The list is one state, whatever number of slices it came in.
            self.changes = [(time.monotonic(), len(self._ready))]
        return self

    def stop(self) -> None:
        self._watch.stop()

    def __enter__(self) -> EndpointWatch:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()

    @property
    def initial_count(self) -> int:
        """Ready endpoints when the watch started (after its list)."""
        with self._lock:
            return self.changes[0][1] if self.changes else 0

    @property
    def watch_errors(self) -> list[str]:
        return list(self._watch.errors)

    def ready(self) -> list[Endpoint]:
        with self._lock:
            return self._ready

    def seen(self) -> list[Endpoint]:
        with self._lock:
            return list(self._seen.values())

    def _on_event(self, kind: str, endpoint_slice: Manifest) -> None:
        name = str(endpoint_slice["metadata"]["name"])
        endpoints = [] if kind == "DELETED" else self._endpoints_of(endpoint_slice)
        with self._lock:
            self._by_slice[name] = endpoints
            ready = sorted(
                {(e.ip, e.port): e for slice_endpoints in self._by_slice.values() for e in slice_endpoints}.values(),
                key=lambda e: (e.pod, e.ip),
            )
            if ready != self._ready:
                # A new list, never changed in place: a sender holding the old one keeps a consistent view.
                self._ready = ready
                self.changes.append((time.monotonic(), len(ready)))
            for endpoint in ready:
                self._seen[(endpoint.pod, endpoint.ip, endpoint.port)] = endpoint

    def _endpoints_of(self, endpoint_slice: Manifest) -> list[Endpoint]:
        if endpoint_slice.get("addressType") != "IPv4":
            return []
        number = next(
            (p.get("port") for p in endpoint_slice.get("ports") or [] if (p.get("name") or "") == self.port_name), None
        )
        if number is None:
            return []
        endpoints = []
        for endpoint in endpoint_slice.get("endpoints") or []:
            if not is_ready(endpoint):
                continue
            target = endpoint.get("targetRef") or {}
            pod_name = str(target.get("name") or endpoint["addresses"][0])
            version = self._version_of(target, pod_name)
            for address in endpoint.get("addresses") or []:
                if self._routed(str(address)):
                    endpoints.append(Endpoint(pod_name, str(address), int(number), version))
        return endpoints

    def _version_of(self, target: Manifest, pod_name: str) -> str | None:
        if target.get("kind") != "Pod":
            return None
        key = str(target.get("uid") or pod_name)
        if key not in self._versions:
            try:
                pod = self.api.get(f"/api/v1/namespaces/{self.namespace}/pods/{pod_name}")
            except (ApiError, OSError):
                return None  # asked again with the slice's next change
            self._versions[key] = ((pod or {}).get("metadata", {}).get("labels") or {}).get(VERSION_LABEL)
        return self._versions[key]

    def _routed(self, ip: str) -> bool:
        if ip in self.devices:
            return True
        if ip in self.refused:
            return False
        try:
            self.devices[ip] = self.route_check(ip)
        except RouteRefusedError as error:
            self.refused[ip] = str(error)
            return False
        return True


def failure_kind(error: BaseException) -> str:
    if isinstance(error, ConnectionRefusedError):
        return REFUSED
    if isinstance(error, TimeoutError | socket.timeout):
        return TIMEOUT
    if isinstance(error, ConnectionError | http.client.RemoteDisconnected | http.client.IncompleteRead):
        return RESET
    return OTHER


class Sender(threading.Thread):
    """One worker: keeps a connection per endpoint it has talked to, as a client with keep-alive would, and picks
    each request's endpoint among those ready when it sends it."""

    def __init__(
        self,
        jobs: queue.Queue[bool | None],
        source: EndpointSource,
        chooser: Callable[[list[Endpoint]], Endpoint],
        path: str,
        payload: bytes,
        tally: Tally,
        timeout: float,
    ) -> None:
        super().__init__(daemon=True)
        self.jobs = jobs
        self.source = source
        self.chooser = chooser
        self.path = path
        self.payload = payload
        self.tally = tally
        self.timeout = timeout
        self.connections: dict[str, http.client.HTTPConnection] = {}
        self.used: set[str] = set()
        """Connections that have carried a request (only those may be stale kept-alive ones)."""

    def run(self) -> None:
        while True:
            job = self.jobs.get()
            if job is None:
                for connection in self.connections.values():
                    connection.close()
                return
            ready = self.source.ready()
            self._forget_gone(ready)
            if not ready:
                self.fail(None, NO_ENDPOINT, "no ready endpoint")
                continue
            self.send(self.chooser(ready))

    def _forget_gone(self, ready: list[Endpoint]) -> None:
        """Close connections to endpoints that are no longer ready: nothing more is sent there."""
        keys = {f"{endpoint.ip}:{endpoint.port}" for endpoint in ready}
        for key in [key for key in self.connections if key not in keys]:
            self.connections.pop(key).close()
            self.used.discard(key)

    def _connection(self, endpoint: Endpoint) -> http.client.HTTPConnection:
        key = f"{endpoint.ip}:{endpoint.port}"
        connection = self.connections.get(key)
        if connection is None:
            connection = http.client.HTTPConnection(endpoint.ip, endpoint.port, timeout=self.timeout)
            self.connections[key] = connection
        return connection

    def send(self, endpoint: Endpoint) -> None:
        sent_at = time.time()
        started = time.perf_counter()
        key = f"{endpoint.ip}:{endpoint.port}"
        answered: str | None = None
        kind, problem = "", ""
        for attempt in range(2):
            reused = key in self.used
            connection = self._connection(endpoint)
            try:
                headers = {"Content-Type": "application/json"}
                if endpoint.host is not None:
                    headers["Host"] = endpoint.host
                connection.request("POST", self.path, body=self.payload, headers=headers)
                self.used.add(key)
                response = connection.getresponse()
                body = response.read()
                if response.will_close:
                    # The server said "Connection: close" (a draining one does): the next request opens a new one.
                    connection.close()
                    self.connections.pop(key, None)
                    self.used.discard(key)
            except (OSError, http.client.HTTPException) as error:
                connection.close()
                self.connections.pop(key, None)
                self.used.discard(key)
                kind, problem = failure_kind(error), f"{type(error).__name__}: {error}"
                stale = isinstance(error, http.client.RemoteDisconnected | BrokenPipeError | ConnectionResetError)
                if attempt == 0 and reused and stale:
                    with self.tally.lock:
                        self.tally.retried += 1
                    continue  # a kept-alive connection the server had closed: once more, on a new one
                break
            if response.status != 200:
                kind = f"http_{response.status}"
                problem = f"HTTP {response.status}: {body[:200].decode(errors='replace')}"
                break
            try:
                answered = str(json.loads(body)["meta"]["tags"]["version"])
            except (ValueError, KeyError, TypeError):
                kind, problem = BAD_ANSWER, f"no meta.tags.version in {body[:200].decode(errors='replace')}"
            break
        elapsed = time.perf_counter() - started
        if answered is None:
            self.fail(endpoint, kind or OTHER, problem)
            return
        tally = self.tally
        with tally.lock:
            tally.answered[endpoint.pod] += 1
            tally.by_version[answered] += 1
            tally.last_sent[answered] = max(sent_at, tally.last_sent.get(answered, 0.0))
            tally.pod_versions.setdefault(endpoint.pod, Counter())[answered] += 1
            tally.latencies.append(elapsed)
            if endpoint.version is not None and answered != endpoint.version:
                tally.mismatches += 1
                if len(tally.mismatch_examples) < 5:
                    tally.mismatch_examples.append(
                        {"pod": endpoint.pod, "expected": endpoint.version, "answered": answered}
                    )

    def fail(self, endpoint: Endpoint | None, kind: str, problem: str) -> None:
        tally = self.tally
        with tally.lock:
            tally.failures[kind] += 1
            if endpoint is not None:
                tally.errors[endpoint.pod] += 1
            if len(tally.error_examples) < 5:
                where = f"{endpoint.pod} ({endpoint.ip})" if endpoint is not None else "(no endpoint)"
                tally.error_examples.append(f"{where}: {problem}")


def run(
    endpoints: list[Endpoint] | EndpointSource,
    *,
    rate: float,
    requests: int | None,
    duration: float | None,
    concurrency: int,
    path: str,
    payload: dict[str, Any],
    timeout: float,
    seed: int | None,
    stop: threading.Event | None = None,
) -> tuple[Tally, float]:
    """Send at `rate` per second until `requests` were sent, `duration` passed or `stop` is set, whichever comes
    first; requests already sent are waited for either way.

    `endpoints` is a fixed list, or a source (EndpointWatch) whose ready endpoints are read at each request."""
    source: EndpointSource = FixedEndpoints(endpoints) if isinstance(endpoints, list) else endpoints
    rng = random.Random(seed)
    rng_lock = threading.Lock()

    def choose(ready: list[Endpoint]) -> Endpoint:
        with rng_lock:
            return rng.choice(ready)

    tally = Tally()
    # At most `concurrency` requests wait for a worker: when the endpoints cannot keep up, the rate drops
    # (the achieved rate is reported) rather than a backlog piling up.
    jobs: queue.Queue[bool | None] = queue.Queue(maxsize=concurrency)
    body = json.dumps(payload).encode()
    senders = [Sender(jobs, source, choose, path, body, tally, timeout) for _ in range(concurrency)]
    for sender in senders:
        sender.start()
    started = time.monotonic()
    limit = requests if requests is not None else MAX_REQUESTS
    deadline = started + duration if duration is not None else float("inf")
    stopped = stop if stop is not None else threading.Event()
    index = 0
    while index < limit and not stopped.is_set():
        due = started + index / rate
        if due >= deadline:
            break
        now = time.monotonic()
        if due > now and stopped.wait(due - now):
            break
        jobs.put(True)
        with tally.lock:
            tally.sent += 1
        index += 1
    for _ in senders:
        jobs.put(None)
    for sender in senders:
        sender.join()
    return tally, time.monotonic() - started


def report(
    endpoints: list[Endpoint] | EndpointSource, devices: dict[str, str], tally: Tally, elapsed: float
) -> dict[str, Any]:
    source: EndpointSource = FixedEndpoints(endpoints) if isinstance(endpoints, list) else endpoints
    answered = sum(tally.answered.values())
    latencies = sorted(tally.latencies)
    pods: dict[str, Any] = {}
    for endpoint in source.seen():
        pods[endpoint.pod] = {
            "ip": endpoint.ip,
            "port": endpoint.port,
            "route": devices.get(endpoint.ip),
            "expected_version": endpoint.version,
            "answered": tally.answered[endpoint.pod],
            "errors": tally.errors[endpoint.pod],
            "versions": dict(tally.pod_versions.get(endpoint.pod, Counter())),
        }
    result = {
        # Ready endpoints at the start of the run.
        "endpoints": source.initial_count if isinstance(source, EndpointWatch) else len(source.ready()),
        "sent": tally.sent,
        "answered": answered,
        "errors": sum(tally.failures.values()),
        "errors_by_kind": dict(tally.failures),
        "retried_on_closed_keepalive": tally.retried,
        "error_examples": tally.error_examples,
        "by_version": dict(tally.by_version),
        "last_sent_by_version": {version: round(at, 3) for version, at in tally.last_sent.items()},
        "by_pod": pods,
        "mismatches": tally.mismatches,
        "mismatch_examples": tally.mismatch_examples,
        "elapsed_seconds": round(elapsed, 3),
        "achieved_rate": round(tally.sent / elapsed, 1) if elapsed > 0 else 0.0,
        "latency_ms": {
            "p50": round(statistics.median(latencies) * 1000, 2) if latencies else None,
            "p99": round(latencies[int(0.99 * (len(latencies) - 1))] * 1000, 2) if latencies else None,
        },
    }
    if isinstance(source, EndpointWatch):
        result["endpoint_changes"] = max(len(source.changes) - 1, 0)
        result["refused_endpoints"] = dict(source.refused)
    return result


def print_report(result: dict[str, Any]) -> None:
    print(
        f"sent {result['sent']} in {result['elapsed_seconds']}s ({result['achieved_rate']}/s) to "
        f"{result['endpoints']} ready endpoints: {result['answered']} answered, {result['errors']} errors, "
        f"{result['mismatches']} version mismatches"
    )
    if result["errors_by_kind"]:
        print("errors by kind: " + ", ".join(f"{k} {n}" for k, n in sorted(result["errors_by_kind"].items())))
    if result.get("endpoint_changes"):
        print(f"the ready endpoints changed {result['endpoint_changes']} times during the run")
    for ip, why in (result.get("refused_endpoints") or {}).items():
        print(f"never sent to {ip}: {why}")
    print(f"{'pod':<48} {'ip':<16} {'should serve':<14} {'answered':>9} {'errors':>7}  versions")
    for pod, row in sorted(result["by_pod"].items()):
        versions = ", ".join(f"{v}: {n}" for v, n in sorted(row["versions"].items()))
        print(
            f"{pod:<48} {row['ip']:<16} {row['expected_version'] or '?':<14} {row['answered']:>9} "
            f"{row['errors']:>7}  {versions}"
        )
    total = result["answered"] or 1
    for version, count in sorted(result["by_version"].items()):
        print(f"version {version}: {count} ({100 * count / total:.1f}%)")
    for example in result["error_examples"]:
        print(f"error: {example}")
    for example in result["mismatch_examples"]:
        print(f"mismatch: {example}")
    latency = result["latency_ms"]
    print(f"latency p50 {latency['p50']} ms, p99 {latency['p99']} ms")


def parse_args(argv: list[str]) -> argparse.Namespace:
    cluster_dir = Path(os.environ.get("MODELDEPLOY_CLUSTER_DIR") or REPO_ROOT / ".cluster")
    parser = argparse.ArgumentParser(prog="python -m modeldeploy_testkit.loadgen", description=__doc__.split("\n\n")[0])
    parser.add_argument("service", nargs="?", help="Service name (not with --gateway)")
    parser.add_argument("-n", "--namespace", default="default")
    parser.add_argument("--port", default="http", help="name of the Service port (default http)")
    parser.add_argument("--gateway", metavar="ADDRESS:PORT", help="send through this gateway (loopback only)")
    parser.add_argument("--host", help="with --gateway: the Host header of every request")
    parser.add_argument("--rate", type=float, required=True, help=f"requests per second (at most {MAX_RATE:g})")
    parser.add_argument("--requests", type=int, help=f"how many requests (at most {MAX_REQUESTS})")
    parser.add_argument("--duration", type=float, help=f"how long in seconds (at most {MAX_DURATION_SECONDS:g})")
    parser.add_argument("--concurrency", type=int, default=8, help="requests in flight at most (default 8)")
    parser.add_argument("--path", default="/api/v1.0/predictions")
    parser.add_argument("--payload", default=json.dumps(DEFAULT_PAYLOAD), help="JSON body of every request")
    parser.add_argument("--timeout", type=float, default=10.0, help="seconds per request")
    parser.add_argument("--seed", type=int, help="seed of the endpoint choice, for a reproducible sequence")
    parser.add_argument("--kubeconfig", default=os.environ.get("KUBECONFIG") or str(cluster_dir / "kubeconfig"))
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    options = parser.parse_args(argv)
    if (options.service is None) == (options.gateway is None):
        parser.error("name a Service, or give --gateway: one of the two")
    if options.gateway is not None:
        address, _, port = options.gateway.rpartition(":")
        if not address or not port.isdigit():
            parser.error("--gateway must be ADDRESS:PORT")
        if not options.host:
            parser.error("--gateway needs --host: the gateway routes by the Host header")
        try:
            options.gateway_endpoint = gateway_endpoint(address, int(port), options.host.lower())
        except RefusedError as error:
            parser.error(str(error))
    elif options.host:
        parser.error("--host applies to --gateway only")
    if options.requests is None and options.duration is None:
        parser.error("refusing an unbounded run: give --requests or --duration (or both)")
    if not 0 < options.rate <= MAX_RATE:
        parser.error(f"--rate must be in (0, {MAX_RATE:g}]")
    if options.requests is not None and not 0 < options.requests <= MAX_REQUESTS:
        parser.error(f"--requests must be in [1, {MAX_REQUESTS}]")
    if options.duration is not None and not 0 < options.duration <= MAX_DURATION_SECONDS:
        parser.error(f"--duration must be in (0, {MAX_DURATION_SECONDS:g}]")
    if not 1 <= options.concurrency <= 256:
        parser.error("--concurrency must be in [1, 256]")
    return options


def _send_all(options: argparse.Namespace, endpoints: list[Endpoint] | EndpointSource) -> tuple[Tally, float]:
    # SIGTERM ends the run early with a full report, so a test can keep traffic flowing for exactly as long as
    # whatever it watches takes, then read what happened.
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda _signum, _frame: stop.set())
    return run(
        endpoints,
        rate=options.rate,
        requests=options.requests,
        duration=options.duration,
        concurrency=options.concurrency,
        path=options.path,
        payload=json.loads(options.payload),
        timeout=options.timeout,
        seed=options.seed,
        stop=stop,
    )


def _print(options: argparse.Namespace, result: dict[str, Any]) -> None:
    if options.json:
        print(json.dumps(result, indent=1))
    else:
        print_report(result)


def main(argv: list[str] | None = None) -> int:
    options = parse_args(sys.argv[1:] if argv is None else argv)
    if options.gateway is not None:
        endpoints = [options.gateway_endpoint]
        tally, elapsed = _send_all(options, endpoints)
        _print(options, report(endpoints, {}, tally, elapsed))
        return 0
    api = KubeAPI(Path(options.kubeconfig), "modeldeploy-loadgen/0.1.0")
    watch = EndpointWatch(api, options.namespace, options.service, options.port)
    try:
        watch.start()
        if watch.refused:
            ip, why = next(iter(watch.refused.items()))
            raise RefusedError(f"refusing to send to {ip}: {why}")
        if not watch.ready():
            raise RefusedError(f"service {options.namespace}/{options.service} has no ready endpoints")
    except RefusedError as error:
        watch.stop()
        print(f"loadgen: {error}", file=sys.stderr)
        return 2
    try:
        tally, elapsed = _send_all(options, watch)
    finally:
        watch.stop()
    _print(options, report(watch, watch.devices, tally, elapsed))
    return 0


if __name__ == "__main__":
    sys.exit(main())
