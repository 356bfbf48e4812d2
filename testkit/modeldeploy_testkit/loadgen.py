"""Load generator for a model Service on the local cluster, spreading requests as kube-proxy would.

    .venv/bin/python -m modeldeploy_testkit.loadgen -n NAMESPACE SERVICE --requests 2000 --rate 200 [--json]
    .venv/bin/python -m modeldeploy_testkit.loadgen -n NAMESPACE SERVICE --duration 30 --rate 50

There is no kube-proxy on the local cluster, so the Service is resolved here: its EndpointSlices, ready endpoints
only, the port number the slice gives for the Service port (`http` unless --port names another). Each request
goes to an endpoint picked uniformly at random, as kube-proxy's iptables and nftables modes pick a backend per
connection; every request here opens or reuses a connection to the endpoint it picked.

Before anything is sent, `ip route get` must show each endpoint IP routed through one of our veths (the
cluster's mdpods0 or a per-pod veth of the node agent); otherwise the run is refused. The run is bounded: a rate
and a request count or a duration are required.

Reported per pod and per model version: how many requests each answered, and mismatches between the version a
pod should serve (its `app.kubernetes.io/version` label) and the `meta.tags.version` it answered with.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import queue
import random
import statistics
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from modeldeploy_testkit.kubeapi import KubeAPI
from modeldeploy_testkit.nodeagent.network import RouteRefusedError, check_route
from modeldeploy_testkit.scripts import REPO_ROOT

VERSION_LABEL = "app.kubernetes.io/version"
MAX_REQUESTS = 1_000_000
MAX_DURATION_SECONDS = 3600.0
MAX_RATE = 5000.0
DEFAULT_PAYLOAD = {"data": {"ndarray": [[0.5, 0.5]]}}


class RefusedError(Exception):
    pass


@dataclass(frozen=True)
class Endpoint:
    pod: str
    ip: str
    port: int
    version: str | None


@dataclass
class Tally:
    lock: threading.Lock = field(default_factory=threading.Lock)
    sent: int = 0
    answered: Counter[str] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    by_version: Counter[str] = field(default_factory=Counter)
    pod_versions: dict[str, Counter[str]] = field(default_factory=dict)
    mismatches: int = 0
    mismatch_examples: list[dict[str, str | None]] = field(default_factory=list)
    error_examples: list[str] = field(default_factory=list)
    latencies: list[float] = field(default_factory=list)


def resolve(api: KubeAPI, namespace: str, service: str, port_name: str) -> list[Endpoint]:
    """Ready endpoints of the Service's port, with the version each pod should serve."""
    body = api.get(f"/api/v1/namespaces/{namespace}/services/{service}")
    if body is None:
        raise RefusedError(f"service {namespace}/{service} not found")
    ports = body["spec"].get("ports") or []
    if not any(p.get("name", "") == port_name for p in ports) and not (len(ports) == 1 and not port_name):
        raise RefusedError(f"service {namespace}/{service} has no port named {port_name!r}")
    slices = api.list(
        f"/apis/discovery.k8s.io/v1/namespaces/{namespace}/endpointslices",
        {"labelSelector": f"kubernetes.io/service-name={service}"},
    )
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
            if not (endpoint.get("conditions") or {}).get("ready"):
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


class Sender(threading.Thread):
    """One worker: keeps a connection per endpoint it has talked to, as a client with keep-alive would."""

    def __init__(
        self, jobs: queue.Queue[Endpoint | None], path: str, payload: bytes, tally: Tally, timeout: float
    ) -> None:
        super().__init__(daemon=True)
        self.jobs = jobs
        self.path = path
        self.payload = payload
        self.tally = tally
        self.timeout = timeout
        self.connections: dict[str, http.client.HTTPConnection] = {}

    def run(self) -> None:
        while True:
            endpoint = self.jobs.get()
            if endpoint is None:
                for connection in self.connections.values():
                    connection.close()
                return
            self.send(endpoint)

    def _connection(self, endpoint: Endpoint) -> http.client.HTTPConnection:
        key = f"{endpoint.ip}:{endpoint.port}"
        connection = self.connections.get(key)
        if connection is None:
            connection = http.client.HTTPConnection(endpoint.ip, endpoint.port, timeout=self.timeout)
            self.connections[key] = connection
        return connection

    def send(self, endpoint: Endpoint) -> None:
        started = time.perf_counter()
        answered: str | None = None
        problem = ""
        for attempt in range(2):
            connection = self._connection(endpoint)
            try:
                connection.request("POST", self.path, body=self.payload, headers={"Content-Type": "application/json"})
                response = connection.getresponse()
                body = response.read()
            except (OSError, http.client.HTTPException) as error:
                connection.close()
                self.connections.pop(f"{endpoint.ip}:{endpoint.port}", None)
                problem = f"{type(error).__name__}: {error}"
                if attempt == 0 and isinstance(error, (http.client.RemoteDisconnected, BrokenPipeError)):
                    continue  # a keep-alive connection the server had closed: retry once on a new one
                break
            if response.status != 200:
                problem = f"HTTP {response.status}: {body[:200].decode(errors='replace')}"
                break
            try:
                answered = str(json.loads(body)["meta"]["tags"]["version"])
            except (ValueError, KeyError, TypeError):
                problem = f"no meta.tags.version in {body[:200].decode(errors='replace')}"
            break
        elapsed = time.perf_counter() - started
        tally = self.tally
        with tally.lock:
            if answered is None:
                tally.errors[endpoint.pod] += 1
                if len(tally.error_examples) < 5:
                    tally.error_examples.append(f"{endpoint.pod} ({endpoint.ip}): {problem}")
                return
            tally.answered[endpoint.pod] += 1
            tally.by_version[answered] += 1
            tally.pod_versions.setdefault(endpoint.pod, Counter())[answered] += 1
            tally.latencies.append(elapsed)
            if endpoint.version is not None and answered != endpoint.version:
                tally.mismatches += 1
                if len(tally.mismatch_examples) < 5:
                    tally.mismatch_examples.append(
                        {"pod": endpoint.pod, "expected": endpoint.version, "answered": answered}
                    )


def run(
    endpoints: list[Endpoint],
    *,
    rate: float,
    requests: int | None,
    duration: float | None,
    concurrency: int,
    path: str,
    payload: dict[str, Any],
    timeout: float,
    seed: int | None,
) -> tuple[Tally, float]:
    """Send at `rate` per second until `requests` were sent or `duration` passed, whichever comes first."""
    chooser = random.Random(seed)
    tally = Tally()
    # At most `concurrency` requests wait for a worker: when the endpoints cannot keep up, the rate drops
    # (the achieved rate is reported) rather than a backlog piling up.
    jobs: queue.Queue[Endpoint | None] = queue.Queue(maxsize=concurrency)
    body = json.dumps(payload).encode()
    senders = [Sender(jobs, path, body, tally, timeout) for _ in range(concurrency)]
    for sender in senders:
        sender.start()
    started = time.monotonic()
    limit = requests if requests is not None else MAX_REQUESTS
    deadline = started + duration if duration is not None else float("inf")
    index = 0
    while index < limit:
        due = started + index / rate
        if due >= deadline:
            break
        now = time.monotonic()
        if due > now:
            time.sleep(due - now)
        jobs.put(chooser.choice(endpoints))
        tally.sent += 1
        index += 1
    for _ in senders:
        jobs.put(None)
    for sender in senders:
        sender.join()
    return tally, time.monotonic() - started


def report(endpoints: list[Endpoint], devices: dict[str, str], tally: Tally, elapsed: float) -> dict[str, Any]:
    answered = sum(tally.answered.values())
    latencies = sorted(tally.latencies)
    pods: dict[str, Any] = {}
    for endpoint in endpoints:
        pods[endpoint.pod] = {
            "ip": endpoint.ip,
            "port": endpoint.port,
            "route": devices.get(endpoint.ip),
            "expected_version": endpoint.version,
            "answered": tally.answered[endpoint.pod],
            "errors": tally.errors[endpoint.pod],
            "versions": dict(tally.pod_versions.get(endpoint.pod, Counter())),
        }
    return {
        "endpoints": len(endpoints),
        "sent": tally.sent,
        "answered": answered,
        "errors": sum(tally.errors.values()),
        "error_examples": tally.error_examples,
        "by_version": dict(tally.by_version),
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


def print_report(result: dict[str, Any]) -> None:
    print(
        f"sent {result['sent']} in {result['elapsed_seconds']}s ({result['achieved_rate']}/s) to "
        f"{result['endpoints']} ready endpoints: {result['answered']} answered, {result['errors']} errors, "
        f"{result['mismatches']} version mismatches"
    )
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
    parser.add_argument("service", help="Service name")
    parser.add_argument("-n", "--namespace", default="default")
    parser.add_argument("--port", default="http", help="name of the Service port (default http)")
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


def main(argv: list[str] | None = None) -> int:
    options = parse_args(sys.argv[1:] if argv is None else argv)
    api = KubeAPI(Path(options.kubeconfig), "modeldeploy-loadgen/0.1.0")
    try:
        endpoints = resolve(api, options.namespace, options.service, options.port)
        if not endpoints:
            raise RefusedError(f"service {options.namespace}/{options.service} has no ready endpoints")
        devices = check_routes(endpoints)
    except RefusedError as error:
        print(f"loadgen: {error}", file=sys.stderr)
        return 2
    tally, elapsed = run(
        endpoints,
        rate=options.rate,
        requests=options.requests,
        duration=options.duration,
        concurrency=options.concurrency,
        path=options.path,
        payload=json.loads(options.payload),
        timeout=options.timeout,
        seed=options.seed,
    )
    result = report(endpoints, devices, tally, elapsed)
    if options.json:
        print(json.dumps(result, indent=1))
    else:
        print_report(result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
