"""Shared by the end-to-end tests that run model servers as real processes on the node agent's nodes.

The node agent and Prometheus as session fixtures (registered for every e2e test in conftest.py), placement on the
agent's nodes, model artifacts, observing pods, hack/loadgen.py once or as steady traffic in the background, and
the history of a ModelDeployment's status as a watch delivered it.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import requests
from hack.loadgen import RefusedError, check_routes, resolve
from hack.loadgen import run as send_requests
from hack.nodeagent.kubeapi import ApiError, KubeAPI

from tests.e2e.cluster import HACK, Cluster, hack_value, wait_until

RUNTIME_IMAGE = "modeldeploy/runtime:0.1.0"
AGENT_NODE = "agent-node-0"
NODE_LABEL = "modeldeploy.io/node-agent"
PLACEMENT = {
    "nodeSelector": {NODE_LABEL: "true"},
    "tolerations": [{"key": NODE_LABEL, "operator": "Exists", "effect": "NoSchedule"}],
}
REVISION_LABEL = "modeldeploy.io/revision"
VERSION_LABEL = "app.kubernetes.io/version"
LOADGEN = HACK / "loadgen.py"
SCRAPE_INTERVAL_SECONDS = 2.0


# --- fixtures -------------------------------------------------------------------------------------------------------


@dataclass
class NodeAgent:
    cluster_dir: Path

    @property
    def pods_dir(self) -> Path:
        return Path(hack_value("AGENT_PODS_DIR"))

    def container_pid(self, pod: dict[str, Any], container: str = "model-server") -> int:
        """PID of the container's own process, as the agent's shim recorded it."""
        info = json.loads((self.pods_dir / pod["metadata"]["uid"] / f"{container}.pid").read_text())
        return int(info["pid"])

    def pid(self) -> int:
        return int((self.cluster_dir / "pids" / "node-agent.pid").read_text().strip())

    def log_of(self, pod: dict[str, Any], container: str = "model-server") -> str:
        metadata = pod["metadata"]
        directory = f"{metadata['namespace']}_{metadata['name']}_{metadata['uid']}"
        return (self.cluster_dir / "logs" / "pods" / directory / f"{container}.log").read_text(errors="replace")


def _agent_running(cluster_dir: Path) -> bool:
    pid_file = cluster_dir / "pids" / "node-agent.pid"
    try:
        pid = int(pid_file.read_text().strip())
        return b"hack.nodeagent" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except (OSError, ValueError):
        return False


@pytest.fixture(scope="session")
def node_agent(cluster: Cluster) -> Iterator[NodeAgent]:
    """The node agent with node agent-node-0 Ready: the running one, or one started for the session."""
    cluster_dir = Path(hack_value("CLUSTER_DIR"))
    if os.geteuid() != 0:
        pytest.fail("the node agent needs root (network namespaces, veth pairs); run these tests as root")
    started_here = not _agent_running(cluster_dir)
    result = subprocess.run([str(HACK / "nodeagent-up.sh")], capture_output=True, text=True, check=False)
    if result.returncode != 0:
        pytest.fail(f"the node agent could not start (hack/nodeagent-up.sh):\n{result.stderr}{result.stdout}")
    yield NodeAgent(cluster_dir)
    if started_here and os.environ.get("MODELDEPLOY_KEEP_CLUSTER") != "1":
        subprocess.run([str(HACK / "nodeagent-down.sh")], check=False)


# Prometheus is on loopback: never through a proxy from the environment.
_LOCAL = urllib.request.build_opener(urllib.request.ProxyHandler({}))


@dataclass
class Prometheus:
    url: str

    def query(self, promql: str) -> list[dict[str, Any]]:
        address = f"{self.url}/api/v1/query?" + urllib.parse.urlencode({"query": promql})
        with _LOCAL.open(address, timeout=5) as response:
            body = json.loads(response.read())
        assert body["status"] == "success", body
        result: list[dict[str, Any]] = body["data"]["result"]
        return result

    def targets(self) -> list[dict[str, Any]]:
        with _LOCAL.open(f"{self.url}/api/v1/targets?state=active", timeout=5) as response:
            targets: list[dict[str, Any]] = json.loads(response.read())["data"]["activeTargets"]
        return targets


@pytest.fixture(scope="session")
def prometheus(cluster: Cluster) -> Iterator[Prometheus]:
    """Prometheus from hack/prometheus-up.sh: the running one, or one started for the session."""
    binary = Path(hack_value("BIN_CACHE")) / f"prometheus-{hack_value('PROMETHEUS_VERSION')}" / "prometheus"
    if not binary.exists():
        pytest.fail(f"Prometheus is not built ({binary} is missing): run `hack/build-tools.sh prometheus` first")
    cluster_dir = Path(hack_value("CLUSTER_DIR"))
    pid_file = cluster_dir / "pids" / "prometheus.pid"
    port = os.environ.get("MODELDEPLOY_PROMETHEUS_PORT", "9090")
    started_here = not pid_file.exists()
    result = subprocess.run([str(HACK / "prometheus-up.sh")], capture_output=True, text=True, check=False)
    if result.returncode != 0:
        pytest.fail(f"Prometheus could not start (hack/prometheus-up.sh):\n{result.stderr}{result.stdout}")
    yield Prometheus(f"http://127.0.0.1:{port}")
    if started_here and os.environ.get("MODELDEPLOY_KEEP_CLUSTER") != "1" and pid_file.exists():
        pid = int(pid_file.read_text())
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
        wait_until(lambda: not Path(f"/proc/{pid}").exists(), timeout=30, what="prometheus to stop")
        pid_file.unlink(missing_ok=True)


# --- model deployments on the agent's nodes -------------------------------------------------------------------------


@dataclass(frozen=True)
class Artifact:
    uri: str
    sha256: str
    format: str = "sklearn"


def model_deployment(
    name: str, artifact: Artifact, version: str, replicas: int, rollout: dict[str, Any], sha256: str | None = None
) -> dict[str, Any]:
    return {
        "apiVersion": "modeldeploy.io/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": {"name": name},
        "spec": {
            "model": {
                "version": version,
                "uri": artifact.uri,
                "format": artifact.format,
                "sha256": sha256 or artifact.sha256,
            },
            "replicas": replicas,
            "runtime": {"image": RUNTIME_IMAGE, **PLACEMENT},
            "rollout": rollout,
        },
    }


@contextlib.contextmanager
def scratch_namespace(cluster: Cluster, stem: str) -> Iterator[str]:
    name = f"{stem}-{uuid.uuid4().hex[:6]}"
    cluster.kubectl("create", "namespace", name)
    try:
        yield name
    finally:
        cluster.kubectl("delete", "namespace", name, "--wait=false", check=False)


def healthy(version: str, ready: int) -> Any:
    return lambda s: (
        s.get("phase") == "Healthy"
        and (s.get("stable") or {}).get("version") == version
        and (s.get("stable") or {}).get("readyReplicas") == ready
    )


# --- observing pods -------------------------------------------------------------------------------------------------


@dataclass
class PodObservation:
    at: float
    name: str
    uid: str
    ready: bool
    restarts: int
    phase: str
    waiting: str
    revision: str


@dataclass
class PodWatch:
    """Every state of the namespace's pods as a watch delivered it, with the local time it arrived."""

    api: KubeAPI
    namespace: str
    seen: list[PodObservation] = field(default_factory=list)
    stopping: threading.Event = field(default_factory=threading.Event)
    thread: threading.Thread | None = None

    def __enter__(self) -> PodWatch:
        listing = self.api.list(f"/api/v1/namespaces/{self.namespace}/pods")
        for pod in listing["items"]:
            self._record(pod)
        version = listing["metadata"]["resourceVersion"]
        self.thread = threading.Thread(target=self._run, args=(version,), daemon=True)
        self.thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stopping.set()

    def _run(self, version: str) -> None:
        while not self.stopping.is_set():
            with contextlib.suppress(Exception):
                for event in self.api.watch(
                    f"/api/v1/namespaces/{self.namespace}/pods", {"resourceVersion": version}, timeout_seconds=5
                ):
                    version = event["object"]["metadata"]["resourceVersion"]
                    if event["type"] in ("ADDED", "MODIFIED"):
                        self._record(event["object"])
                    if self.stopping.is_set():
                        return

    def _record(self, pod: dict[str, Any]) -> None:
        status = pod.get("status") or {}
        ready = any(c["type"] == "Ready" and c["status"] == "True" for c in status.get("conditions") or [])
        containers = status.get("containerStatuses") or []
        restarts = sum(c.get("restartCount", 0) for c in containers)
        waiting = next((c["state"]["waiting"].get("reason", "") for c in containers if "waiting" in c["state"]), "")
        metadata = pod["metadata"]
        self.seen.append(
            PodObservation(
                time.time(),
                metadata["name"],
                metadata["uid"],
                ready,
                restarts,
                status.get("phase", ""),
                waiting,
                (metadata.get("labels") or {}).get(REVISION_LABEL, ""),
            )
        )

    def of(self, uid: str) -> list[PodObservation]:
        return [o for o in list(self.seen) if o.uid == uid]


def kube_api(cluster: Cluster) -> KubeAPI:
    return KubeAPI(cluster.kubeconfig, "modeldeploy-e2e/0.1.0")


def pods_of(cluster: Cluster, namespace: str, selector: str = "") -> list[dict[str, Any]]:
    args = ["pods", "-n", namespace] + (["-l", selector] if selector else [])
    items = json.loads(cluster.kubectl("get", *args, "-o", "json").stdout)["items"]
    return [p for p in items if not p["metadata"].get("deletionTimestamp")]


def is_ready(pod: dict[str, Any]) -> bool:
    return any(c["type"] == "Ready" and c["status"] == "True" for c in (pod.get("status") or {}).get("conditions", []))


# --- observing a ModelDeployment ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class StatusSnapshot:
    at: float
    """Local wall-clock time (time.time()) the watch event arrived."""
    status: dict[str, Any]


class StatusHistory:
    """Every status of one ModelDeployment as a watch delivered it (list first, then watch from there).

    Status keeps only the newest measurements; the history of writes keeps all of them, and every step the rollout
    went through, with the operator's own timestamps.
    """

    def __init__(self, api: KubeAPI, namespace: str, name: str) -> None:
        self.api = api
        self.path = f"/apis/modeldeploy.io/v1alpha1/namespaces/{namespace}/modeldeployments"
        self.name = name
        self.seen: list[StatusSnapshot] = []
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._run, name=f"status of {namespace}/{name}", daemon=True)

    def __enter__(self) -> StatusHistory:
        self.thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stopping.set()
        self.thread.join(timeout=15)

    def _run(self) -> None:
        selector = {"fieldSelector": f"metadata.name={self.name}"}
        version = ""
        while not self.stopping.is_set():
            try:
                if not version:
                    listing = self.api.list(self.path, selector)
                    for item in listing["items"]:
                        self._record(item)
                    version = listing["metadata"]["resourceVersion"]
                for event in self.api.watch(self.path, {**selector, "resourceVersion": version}, timeout_seconds=5):
                    version = event["object"]["metadata"]["resourceVersion"]
                    if event["type"] in ("ADDED", "MODIFIED"):
                        self._record(event["object"])
                    if self.stopping.is_set():
                        return
            except ApiError as error:
                if error.status == 410:
                    version = ""  # expired: list again, from now
                else:
                    self.stopping.wait(0.2)
            except requests.RequestException:
                self.stopping.wait(0.2)

    def _record(self, body: dict[str, Any]) -> None:
        with self.lock:
            self.seen.append(StatusSnapshot(time.time(), dict(body.get("status") or {})))

    def statuses(self) -> list[StatusSnapshot]:
        with self.lock:
            return list(self.seen)

    def first(self, check: Callable[[dict[str, Any]], bool]) -> StatusSnapshot | None:
        """The first status seen that satisfies `check`."""
        return next((snapshot for snapshot in self.statuses() if check(snapshot.status)), None)


# --- traffic --------------------------------------------------------------------------------------------------------


def loadgen(cluster: Cluster, namespace: str, service: str, *args: str) -> dict[str, Any]:
    result = subprocess.run(
        [sys.executable, str(LOADGEN), "-n", namespace, service, "--json", *args],
        env=cluster.env(),
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )
    assert result.returncode == 0, f"loadgen failed ({result.returncode}):\n{result.stderr}{result.stdout}"
    report: dict[str, Any] = json.loads(result.stdout)
    return report


@dataclass(frozen=True)
class TrafficRound:
    started: float
    """time.time() when the round began sending."""
    ended: float
    endpoints: int
    answered_by_version: dict[str, int]
    errors: int
    error_examples: list[str]


class SteadyTraffic:
    """Requests to a Service for as long as it runs, from hack/loadgen.py's own sender, in short rounds.

    One run of loadgen resolves the Service's ready endpoints once, at its start. A canary's pods come and go during
    a rollout, so the traffic here is a sequence of loadgen runs of `round_seconds` each, every one to the ready
    endpoints of its moment, as a client behind kube-proxy sees pods join and leave.
    """

    def __init__(
        self,
        cluster: Cluster,
        namespace: str,
        service: str,
        *,
        payload: dict[str, Any],
        rate: float = 20.0,
        round_seconds: float = 1.0,
        concurrency: int = 4,
    ) -> None:
        self.api = kube_api(cluster)
        self.namespace = namespace
        self.service = service
        self.payload = payload
        self.rate = rate
        self.round_seconds = round_seconds
        self.concurrency = concurrency
        self.rounds: list[TrafficRound] = []
        self.problems: list[str] = []
        """Rounds not sent, and why (no ready endpoint yet, a route refused, the API server briefly away)."""
        self.crash: BaseException | None = None
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._run, name=f"traffic to {namespace}/{service}", daemon=True)

    def __enter__(self) -> SteadyTraffic:
        self.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self.stopping.set()
        self.thread.join(timeout=self.round_seconds + 30)
        if self.crash is not None:
            raise AssertionError(f"the traffic thread crashed: {self.crash!r}") from self.crash

    def _run(self) -> None:
        try:
            while not self.stopping.is_set():
                self._one_round()
        except BaseException as error:  # reported by stop(): a silent traffic thread would look like "no traffic"
            self.crash = error

    def _one_round(self) -> None:
        try:
            endpoints = resolve(self.api, self.namespace, self.service, "http")
            # The same refusal as loadgen's command line: nothing is sent to an IP outside our veths.
            check_routes(endpoints)
        except (RefusedError, ApiError, requests.RequestException) as error:
            self._problem(str(error))
            return
        if not endpoints:
            self._problem("no ready endpoints")
            return
        started = time.time()
        tally, _ = send_requests(
            endpoints,
            rate=self.rate,
            requests=None,
            duration=self.round_seconds,
            concurrency=self.concurrency,
            path="/api/v1.0/predictions",
            payload=self.payload,
            timeout=5.0,
            seed=None,
        )
        with self.lock:
            self.rounds.append(
                TrafficRound(
                    started=started,
                    ended=time.time(),
                    endpoints=len(endpoints),
                    answered_by_version=dict(tally.by_version),
                    errors=sum(tally.errors.values()),
                    error_examples=list(tally.error_examples),
                )
            )

    def _problem(self, text: str) -> None:
        with self.lock:
            self.problems.append(text)
        self.stopping.wait(0.2)

    def answered(self, since: float = 0.0) -> Counter[str]:
        """Answers by version, from the rounds that started at or after `since` (time.time())."""
        with self.lock:
            rounds = [r for r in self.rounds if r.started >= since]
        total: Counter[str] = Counter()
        for traffic_round in rounds:
            total.update(traffic_round.answered_by_version)
        return total

    def errors(self, since: float = 0.0) -> int:
        with self.lock:
            return sum(r.errors for r in self.rounds if r.started >= since)

    def error_examples(self, since: float = 0.0) -> list[str]:
        """Up to 5 examples per round (as loadgen keeps them): `pod (ip): HTTP 500: body` when a model server
        answered with an error, `pod (ip): ConnectionRefusedError: ...` when nothing answered."""
        with self.lock:
            return [example for r in self.rounds if r.started >= since for example in r.error_examples]

    def summary(self) -> str:
        with self.lock:
            rounds, problems = list(self.rounds), list(self.problems)
        answered: Counter[str] = Counter()
        for traffic_round in rounds:
            answered.update(traffic_round.answered_by_version)
        errors = sum(r.errors for r in rounds)
        examples = [example for r in rounds for example in r.error_examples][:3]
        return (
            f"{len(rounds)} rounds of traffic to {self.namespace}/{self.service}: answered {dict(answered)}, "
            f"{errors} errors{' (e.g. ' + '; '.join(examples) + ')' if examples else ''}; {len(problems)} rounds "
            f"not sent" + (f" (last: {problems[-1]})" if problems else "")
        )
