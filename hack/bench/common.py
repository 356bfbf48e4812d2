"""Shared helpers for the benchmarks in hack/bench/ (cluster.py, operator.py).

A small client of its own (urllib3, with the credentials the kubernetes package reads from the kubeconfig) so
that every benchmark applies objects, watches them and times them the same way; parallel server-side apply;
watches that record when each object first appears and first becomes ready; the API server's audit log;
memory and CPU of local processes; and the printed table of figures beside their goals.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import statistics
import subprocess
import sys
import threading
import time
import urllib.parse
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import kubernetes
import urllib3

REPO_ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO_ROOT))

from tests.e2e.cluster import READY_IMAGE, Cluster, hack_value  # noqa: E402
from tests.e2e.operator_process import AuditLog, OperatorProcess  # noqa: E402

Manifest = dict[str, Any]

USER_AGENT = "bench/0.1.0 (modeldeploy hack/bench)"
FIELD_MANAGER = "modeldeploy-bench"
APPLY_CONTENT_TYPE = "application/apply-patch+yaml"
PARALLEL_THREADS = 16
REPLICAS = 2
OPERATOR_USER_AGENTS = ("modeldeploy/", "kopf/")
GROUP = "modeldeploy.io"
VERSION = "v1alpha1"
PLURAL = "modeldeployments"
INSTANCE_LABEL = "app.kubernetes.io/instance"
COMPONENTS = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kwok")

_HACK_VALUES: dict[str, str] = {}


def hack(name: str) -> str:
    """A value from hack/lib.sh (asked once per name)."""
    if name not in _HACK_VALUES:
        _HACK_VALUES[name] = hack_value(name)
    return _HACK_VALUES[name]


def cluster_dir() -> Path:
    return Path(hack("CLUSTER_DIR"))


def bench_dir() -> Path:
    """Where the JSON figures go: .cluster/bench/ (removed by hack/cluster-down.sh with the rest of the state)."""
    path = cluster_dir() / "bench"
    path.mkdir(parents=True, exist_ok=True)
    return path


def kubeconfig() -> Path:
    return cluster_dir() / "kubeconfig"


def kubectl_path() -> Path:
    return Path(hack("KUBERNETES_BIN")) / "kubectl"


def cluster() -> Cluster:
    return Cluster(kubeconfig=kubeconfig(), kubectl_path=kubectl_path(), started_here=False)


def log(message: str) -> None:
    print(f"{time.strftime('%H:%M:%S')} {message}", flush=True)


# --- the API client -------------------------------------------------------------------------------------------------


class ApiError(Exception):
    def __init__(self, status: int, method: str, path: str, body: str) -> None:
        super().__init__(f"{method} {path}: HTTP {status}: {body[:300]}")
        self.status = status


class Api:
    """Just enough of the Kubernetes API for the benchmarks: JSON requests and raw watch streams over one pool."""

    def __init__(self, pool_size: int = PARALLEL_THREADS + 8) -> None:
        configuration = kubernetes.client.Configuration()
        kubernetes.config.load_kube_config(config_file=str(kubeconfig()), client_configuration=configuration)
        host = urllib.parse.urlsplit(configuration.host).hostname
        if host != "127.0.0.1":
            raise SystemExit(f"refusing to benchmark {configuration.host}: only the local control plane on 127.0.0.1")
        self.base = str(configuration.host).rstrip("/")
        self.pool = urllib3.PoolManager(
            num_pools=2,
            maxsize=pool_size,
            block=True,
            cert_reqs="CERT_REQUIRED",
            ca_certs=configuration.ssl_ca_cert,
            cert_file=configuration.cert_file,
            key_file=configuration.key_file,
            retries=False,
        )

    def _url(self, path: str, query: dict[str, str] | None = None) -> str:
        return self.base + path + ("?" + urllib.parse.urlencode(query) if query else "")

    def request(
        self,
        method: str,
        path: str,
        body: Manifest | None = None,
        query: dict[str, str] | None = None,
        content_type: str = "application/json",
        timeout: float = 60.0,
    ) -> Manifest:
        headers = {"User-Agent": USER_AGENT, "Accept": "application/json", "Content-Type": content_type}
        response = self.pool.request(
            method,
            self._url(path, query),
            body=None if body is None else json.dumps(body).encode(),
            headers=headers,
            timeout=urllib3.Timeout(connect=10, read=timeout),
        )
        text = response.data.decode(errors="replace")
        if response.status >= 300:
            raise ApiError(response.status, method, path, text)
        return json.loads(text) if text else {}

    def get(self, path: str, query: dict[str, str] | None = None) -> Manifest | None:
        try:
            return self.request("GET", path, query=query)
        except ApiError as error:
            if error.status == 404:
                return None
            raise

    def apply(self, collection: str, body: Manifest) -> None:
        """Server-side apply of one object (forced, under the benchmark's field manager)."""
        path = f"{collection}/{body['metadata']['name']}"
        query = {"fieldManager": FIELD_MANAGER, "force": "true"}
        self.request("PATCH", path, body, query=query, content_type=APPLY_CONTENT_TYPE)

    def stream(self, path: str, query: dict[str, str], read_timeout: float) -> urllib3.BaseHTTPResponse:
        response = self.pool.request(
            "GET",
            self._url(path, query),
            headers={"User-Agent": USER_AGENT, "Accept": "application/json"},
            preload_content=False,
            timeout=urllib3.Timeout(connect=10, read=read_timeout),
        )
        if response.status >= 300:
            text = response.read().decode(errors="replace")
            response.release_conn()
            raise ApiError(response.status, "WATCH", path, text)
        return response


def deployments_path(namespace: str) -> str:
    return f"/apis/apps/v1/namespaces/{namespace}/deployments"


def resources_path(namespace: str) -> str:
    return f"/apis/{GROUP}/{VERSION}/namespaces/{namespace}/{PLURAL}"


# --- manifests ------------------------------------------------------------------------------------------------------


def bare_deployment(name: str, namespace: str, replicas: int = REPLICAS) -> Manifest:
    """A Deployment with nothing but a ready image: what the control plane alone does for one serving workload."""
    labels = {"app.kubernetes.io/name": name, "app.kubernetes.io/part-of": "modeldeploy-bench"}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": namespace, "labels": labels},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app.kubernetes.io/name": name}},
            "template": {
                "metadata": {"labels": labels},
                "spec": {"containers": [{"name": "model-server", "image": READY_IMAGE}]},
            },
        },
    }


def model_deployment(name: str, namespace: str, replicas: int = REPLICAS) -> Manifest:
    """The minimal ModelDeployment: one model version, `replicas` pods of a ready image."""
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "ModelDeployment",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "model": {"version": "1.0.0", "uri": f"file:///models/{name}/1.0.0/model.joblib"},
            "replicas": replicas,
            "runtime": {"image": READY_IMAGE},
        },
    }


def names(prefix: str, count: int) -> list[str]:
    return [f"{prefix}-{index:04d}" for index in range(count)]


# --- readiness ------------------------------------------------------------------------------------------------------


def _condition(body: Manifest, kind: str) -> str | None:
    for condition in (body.get("status") or {}).get("conditions") or []:
        if condition.get("type") == kind:
            return str(condition.get("status"))
    return None


def deployment_available(body: Manifest) -> bool:
    """Rolled out: the controller saw this generation, every replica is updated and available, Available=True."""
    status = body.get("status") or {}
    replicas = int((body.get("spec") or {}).get("replicas", 1))
    return (
        int(status.get("observedGeneration") or 0) >= int(body["metadata"].get("generation") or 0)
        and int(status.get("updatedReplicas") or 0) >= replicas
        and int(status.get("availableReplicas") or 0) >= replicas
        and _condition(body, "Available") == "True"
    )


def resource_ready(body: Manifest) -> bool:
    """The operator is done: phase Healthy, Ready=True, and the status describes the current generation."""
    status = body.get("status") or {}
    return (
        status.get("phase") == "Healthy"
        and _condition(body, "Ready") == "True"
        and status.get("observedGeneration") == body["metadata"].get("generation")
    )


def name_of(body: Manifest) -> str:
    return str(body["metadata"]["name"])


def instance_of(body: Manifest) -> str:
    """For a child of a ModelDeployment: the resource's name (its instance label); else the object's own name."""
    labels = body["metadata"].get("labels") or {}
    return str(labels.get(INSTANCE_LABEL) or body["metadata"]["name"])


# --- watches --------------------------------------------------------------------------------------------------------


class Tracker:
    """One watch stream on one collection, in a thread of its own.

    Records, at receipt (time.monotonic()), when each key was first seen ADDED and when it first satisfied
    `ready`. One list first (for the resourceVersion to watch from), then the watch; a stream that ends is resumed
    from the last resourceVersion seen, an expired one (410) from a new list.
    """

    def __init__(
        self,
        api: Api,
        path: str,
        ready: Callable[[Manifest], bool] | None = None,
        key: Callable[[Manifest], str] = name_of,
    ) -> None:
        self.api = api
        self.path = path
        self.ready_check = ready
        self.key = key
        self.added: dict[str, float] = {}
        self.ready: dict[str, float] = {}
        self.deleted: dict[str, float] = {}
        self.events = 0
        self.reconnects = 0
        self.errors: list[str] = []
        self._condition = threading.Condition()
        self._stopping = threading.Event()
        self._response: urllib3.BaseHTTPResponse | None = None
        self._thread = threading.Thread(target=self._run, name=f"watch {path}", daemon=True)
        self._resource_version = ""

    def start(self) -> Tracker:
        self._list()
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        response = self._response
        shutdown = getattr(response, "shutdown", None)
        if shutdown is not None:
            # Interrupts a read blocked in another thread (urllib3 >= 2.3).
            with contextlib.suppress(Exception):
                shutdown()
        self._thread.join(timeout=5)

    def _list(self) -> None:
        listing = self.api.request("GET", self.path)
        now = time.monotonic()
        self._resource_version = listing["metadata"]["resourceVersion"]
        for item in listing.get("items") or []:
            self._observe("LISTED", item, now)

    def _observe(self, kind: str, body: Manifest, now: float) -> None:
        key = self.key(body)
        with self._condition:
            self.events += 1
            if kind == "DELETED":
                self.deleted.setdefault(key, now)
            else:
                self.added.setdefault(key, now)
                if self.ready_check is not None and key not in self.ready and self.ready_check(body):
                    self.ready[key] = now
            self._condition.notify_all()

    def _run(self) -> None:
        while not self._stopping.is_set():
            try:
                self._watch_once()
            except Exception as error:
                if self._stopping.is_set():
                    return
                self.errors.append(repr(error)[:300])
                time.sleep(0.5)
            self.reconnects += 1

    def _watch_once(self) -> None:
        query = {
            "watch": "1",
            "resourceVersion": self._resource_version,
            "allowWatchBookmarks": "true",
            "timeoutSeconds": "290",
        }
        response = self.api.stream(self.path, query, read_timeout=330)
        self._response = response
        try:
            for line in _lines(response):
                now = time.monotonic()
                event = json.loads(line)
                kind = event.get("type")
                body = event.get("object") or {}
                if kind == "ERROR":
                    if body.get("code") == 410:
                        self._list()
                        return
                    raise RuntimeError(f"watch error: {body}")
                version = (body.get("metadata") or {}).get("resourceVersion")
                if version:
                    self._resource_version = version
                if kind in ("ADDED", "MODIFIED", "DELETED"):
                    self._observe(kind, body, now)
        finally:
            self._response = None
            response.release_conn()

    def wait(self, check: Callable[[], bool], timeout: float) -> bool:
        """Wait until `check()` (called under the tracker's lock) holds; False when the timeout passed."""
        with self._condition:
            return self._condition.wait_for(check, timeout=timeout)

    def wait_ready(self, count: int, timeout: float) -> bool:
        return self.wait(lambda: len(self.ready) >= count, timeout)

    def wait_added(self, key: str, timeout: float) -> bool:
        return self.wait(lambda: key in self.added, timeout)

    def wait_ready_key(self, key: str, timeout: float) -> bool:
        return self.wait(lambda: key in self.ready, timeout)

    def ready_count(self) -> int:
        with self._condition:
            return len(self.ready)

    def ready_times(self) -> dict[str, float]:
        with self._condition:
            return dict(self.ready)

    def added_times(self) -> dict[str, float]:
        with self._condition:
            return dict(self.added)


def _lines(response: urllib3.BaseHTTPResponse) -> Iterator[bytes]:
    """The newline-separated events of a watch stream, each as soon as its chunk arrives."""
    buffer = b""
    for chunk in response.stream(amt=None, decode_content=True):
        buffer += chunk
        while True:
            end = buffer.find(b"\n")
            if end < 0:
                break
            line, buffer = buffer[:end], buffer[end + 1 :]
            if line.strip():
                yield line


# --- namespaces -----------------------------------------------------------------------------------------------------


def create_namespace(api: Api, name: str) -> None:
    body = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": {"modeldeploy-bench": "1"}}}
    api.request("POST", "/api/v1/namespaces", body)
    # The ServiceAccount controller adds `default`; pods wait for it, so do the same before timing anything.
    deadline = time.monotonic() + 60
    while api.get(f"/api/v1/namespaces/{name}/serviceaccounts/default") is None:
        if time.monotonic() > deadline:
            raise SystemExit(f"namespace {name}: no default ServiceAccount after 60s")
        time.sleep(0.1)


def delete_namespace(api: Api, name: str, timeout: float = 600) -> tuple[float, bool]:
    """Delete a namespace and wait until it is gone. Returns (seconds, gone). Polls the namespace only."""
    started = time.monotonic()
    unreachable_since: float | None = None
    with contextlib.suppress(ApiError, urllib3.exceptions.HTTPError):
        api.request("DELETE", f"/api/v1/namespaces/{name}")
    while time.monotonic() - started < timeout:
        try:
            if api.get(f"/api/v1/namespaces/{name}") is None:
                return time.monotonic() - started, True
            unreachable_since = None
        except urllib3.exceptions.HTTPError as error:
            # The control plane went away (somebody ran cluster-down?): give up after a while, do not hang.
            unreachable_since = unreachable_since or time.monotonic()
            if time.monotonic() - unreachable_since > 15:
                log(f"  the API server does not answer ({type(error).__name__}); namespace {name} left as it is")
                break
        time.sleep(1.0)
    return time.monotonic() - started, False


def count_items(api: Api, path: str) -> int:
    listing = api.get(path, {"limit": "500"}) or {}
    remaining = int((listing.get("metadata") or {}).get("remainingItemCount") or 0)
    return len(listing.get("items") or []) + remaining


# --- parallel apply -------------------------------------------------------------------------------------------------


@dataclass
class ApplyResult:
    submitted_seconds: float
    errors: list[str] = field(default_factory=list)
    retries: int = 0


def apply_parallel(api: Api, collection: str, bodies: list[Manifest], threads: int = PARALLEL_THREADS) -> ApplyResult:
    """Server-side apply every body, `threads` requests in flight; retries 429/5xx and connection errors."""
    lock = threading.Lock()
    result = ApplyResult(submitted_seconds=0.0)
    started = time.monotonic()

    def one(body: Manifest) -> None:
        for attempt in range(6):
            try:
                api.apply(collection, body)
                return
            except (ApiError, urllib3.exceptions.HTTPError) as error:
                status = getattr(error, "status", 0)
                retryable = status in (0, 429, 500, 502, 503, 504) or not isinstance(error, ApiError)
                if not retryable or attempt == 5:
                    with lock:
                        result.errors.append(str(error)[:300])
                    return
                with lock:
                    result.retries += 1
                time.sleep(0.2 * (attempt + 1))

    with ThreadPoolExecutor(max_workers=threads, thread_name_prefix="apply") as pool:
        list(pool.map(one, bodies))
    result.submitted_seconds = time.monotonic() - started
    return result


def write_yaml_stream(path: Path, bodies: Iterable[Manifest]) -> None:
    """Many objects in one file, as `kubectl apply -f` reads them (JSON is YAML)."""
    path.write_text("".join("---\n" + json.dumps(body) + "\n" for body in bodies))


def kubectl(*args: str, timeout: float = 900) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(kubectl_path()), "--kubeconfig", str(kubeconfig()), *args],
        capture_output=True,
        text=True,
        check=False,
        timeout=timeout,
    )


@dataclass
class ScaleRun:
    """How long until `count` objects applied at once were all ready."""

    count: int
    seconds: float | None  # None: not all were ready before the deadline
    ready: int
    submitted_seconds: float
    errors: list[str]
    retries: int
    first_ready_seconds: float | None
    p50_ready_seconds: float | None

    def as_json(self) -> dict[str, Any]:
        return {
            "count": self.count,
            "seconds": self.seconds,
            "ready": self.ready,
            "submitted_seconds": round(self.submitted_seconds, 3),
            "first_ready_seconds": self.first_ready_seconds,
            "p50_ready_seconds": self.p50_ready_seconds,
            "apply_errors": len(self.errors),
            "apply_retries": self.retries,
        }


def timed_ready(
    tracker: Tracker, count: int, started: float, submit: Callable[[], ApplyResult], timeout: float
) -> ScaleRun:
    """Run `submit` (the tracker already watching), then wait until `count` objects are ready."""
    applied = submit()
    if applied.errors:
        log(f"  {len(applied.errors)} apply errors; first: {applied.errors[0]}")
    remaining = max(timeout - (time.monotonic() - started), 1.0)
    done = tracker.wait_ready(count, remaining)
    times = sorted(at - started for at in tracker.ready_times().values())
    return ScaleRun(
        count=count,
        seconds=round(times[count - 1], 3) if done and len(times) >= count else None,
        ready=len(times),
        submitted_seconds=applied.submitted_seconds,
        errors=applied.errors,
        retries=applied.retries,
        first_ready_seconds=round(times[0], 3) if times else None,
        p50_ready_seconds=round(statistics.median(times), 3) if times else None,
    )


def progress(tracker: Tracker, count: int, every: float = 10.0) -> threading.Event:
    """Log `ready/count` every `every` seconds until the returned event is set."""
    done = threading.Event()
    started = time.monotonic()

    def report() -> None:
        while not done.wait(every):
            log(f"  {tracker.ready_count()}/{count} ready after {time.monotonic() - started:.0f}s")

    threading.Thread(target=report, daemon=True).start()
    return done


def bare_parallel(api: Api, namespace: str, count: int, timeout: float) -> ScaleRun:
    """`count` bare Deployments applied by PARALLEL_THREADS threads; seconds until all are Available."""
    create_namespace(api, namespace)
    collection = deployments_path(namespace)
    tracker = Tracker(api, collection, ready=deployment_available).start()
    bodies = [bare_deployment(name, namespace) for name in names("d", count)]
    reporter = progress(tracker, count)
    try:
        started = time.monotonic()
        return timed_ready(tracker, count, started, lambda: apply_parallel(api, collection, bodies), timeout)
    finally:
        reporter.set()
        tracker.stop()


def cleanup_namespace(api: Api, namespace: str, timeout: float = 600) -> tuple[float, bool]:
    log(f"deleting namespace {namespace} and waiting until it is gone")
    seconds, gone = delete_namespace(api, namespace, timeout=timeout)
    if gone:
        log(f"  namespace {namespace} gone after {seconds:.1f}s")
    else:
        try:
            left = str(count_items(api, deployments_path(namespace)))
        except (ApiError, urllib3.exceptions.HTTPError):
            left = "unknown number of"
        log(f"  namespace {namespace} still there after {seconds:.0f}s ({left} Deployments left)")
    return seconds, gone


# --- the audit log --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class AuditMark:
    inode: int
    offset: int


class Audit(AuditLog):
    """The API server's audit log (tests/e2e AuditLog), read between two marks, across one rotation."""

    def mark(self) -> AuditMark:  # type: ignore[override]
        try:
            stat = self.path.stat()
        except FileNotFoundError:
            return AuditMark(0, 0)
        return AuditMark(stat.st_ino, stat.st_size)

    def between(self, start: AuditMark, end: AuditMark | None = None) -> Iterator[Manifest]:
        """Every audit event written after `start` (and before `end`, when given)."""
        end = end or self.mark()
        chunks: list[bytes] = []
        if end.inode != start.inode and start.inode:
            # Rotated (--audit-log-maxsize): the rest of the old file is the newest backup.
            backups = sorted(self.path.parent.glob("audit-*.log"), key=lambda path: path.stat().st_mtime)
            if backups:
                with backups[-1].open("rb") as old:
                    old.seek(start.offset)
                    chunks.append(old.read())
            begin = 0
        else:
            begin = start.offset
        with self.path.open("rb") as audit:
            audit.seek(begin)
            chunks.append(audit.read(max(end.offset - begin, 0)))
        for chunk in chunks:
            for line in chunk.splitlines():
                if line.strip():
                    with contextlib.suppress(ValueError):
                        yield json.loads(line)


def write_kind(event: Manifest) -> str:
    reference = event.get("objectRef") or {}
    resource = str(reference.get("resource") or "?")
    subresource = reference.get("subresource")
    kind = {
        "deployments": "Deployment",
        "services": "Service",
        "modeldeployments": "ModelDeployment",
        "events": "Event",
    }.get(resource, resource)
    return f"{kind}/{subresource}" if subresource else kind


@dataclass
class Writes:
    """Writes of the operator's user agents in some namespaces, from the audit log."""

    by_kind: Counter[str] = field(default_factory=Counter)
    by_verb: Counter[str] = field(default_factory=Counter)
    conflicts: int = 0
    errors: Counter[int] = field(default_factory=Counter)
    elsewhere: int = 0  # the same user agents, outside the namespaces asked about

    @property
    def total(self) -> int:
        return sum(self.by_kind.values())

    @property
    def without_events(self) -> int:
        return self.total - self.by_kind.get("Event", 0)

    def as_json(self) -> dict[str, Any]:
        return {
            "total": self.total,
            "without_events": self.without_events,
            "by_kind": dict(self.by_kind),
            "by_verb": dict(self.by_verb),
            "conflicts_409": self.conflicts,
            "error_codes": {str(code): count for code, count in self.errors.items()},
            "elsewhere": self.elsewhere,
        }


def operator_writes(events: Iterable[Manifest], namespaces: set[str]) -> Writes:
    writes = Writes()
    for event in events:
        if event.get("stage") not in (None, "ResponseComplete", "Panic"):
            continue
        if not str(event.get("userAgent", "")).startswith(OPERATOR_USER_AGENTS):
            continue
        if (event.get("objectRef") or {}).get("namespace") not in namespaces:
            writes.elsewhere += 1
            continue
        writes.by_kind[write_kind(event)] += 1
        writes.by_verb[str(event.get("verb"))] += 1
        code = int((event.get("responseStatus") or {}).get("code") or 0)
        if code == 409:
            writes.conflicts += 1
        if code >= 400:
            writes.errors[code] += 1
    return writes


# --- processes ------------------------------------------------------------------------------------------------------


def proc_status(pid: int) -> dict[str, int]:
    """VmHWM, VmRSS (KiB) of a process, from /proc/<pid>/status; empty when it is gone."""
    values: dict[str, int] = {}
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return values
    for line in text.splitlines():
        name, _, rest = line.partition(":")
        if name in ("VmHWM", "VmRSS"):
            values[name] = int(rest.split()[0])
    return values


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU time of a process so far."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text.rpartition(")")[2].split()
    ticks = int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15 of proc(5))
    return ticks / os.sysconf("SC_CLK_TCK")


def component_pids() -> dict[str, int]:
    pids: dict[str, int] = {}
    for name in COMPONENTS:
        with contextlib.suppress(OSError, ValueError):
            pids[name] = int((cluster_dir() / "pids" / f"{name}.pid").read_text().strip())
    return pids


def component_memory() -> dict[str, dict[str, float]]:
    """Peak (VmHWM) and current (VmRSS) resident memory of each control-plane process, in MiB."""
    memory: dict[str, dict[str, float]] = {}
    for name, pid in component_pids().items():
        status = proc_status(pid)
        if status:
            memory[name] = {
                "peak_mib": round(status.get("VmHWM", 0) / 1024, 1),
                "rss_mib": round(status.get("VmRSS", 0) / 1024, 1),
            }
    return memory


def print_component_memory(memory: dict[str, dict[str, float]]) -> None:
    print(f"  {'process':<26}{'peak RSS (VmHWM)':>18}{'RSS now':>12}")
    for name, values in memory.items():
        print(f"  {name:<26}{values['peak_mib']:>14.1f} MiB{values['rss_mib']:>8.1f} MiB")
    total = sum(values["peak_mib"] for values in memory.values())
    print(f"  {'sum of peaks':<26}{total:>14.1f} MiB")


def other_operators(mine: int | None = None) -> list[str]:
    """Other `modeldeploy run` processes on this machine: they would act on the benchmark's resources too."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) in (mine, os.getpid()):
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        words = [part.decode(errors="replace") for part in argv if part]
        if any(Path(word).name == "modeldeploy" for word in words[:2]) and "run" in words:
            found.append(f"pid {entry.name}: {' '.join(words)[:200]}")
    return found


class OtherOperatorsMonitor:
    """Looks for other `modeldeploy run` processes every second, in a thread, until stopped."""

    def __init__(self, mine: int | None = None) -> None:
        self.mine = mine
        self.seen: dict[str, str] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="other operators", daemon=True)

    def start(self) -> OtherOperatorsMonitor:
        self._thread.start()
        return self

    def stop(self) -> list[str]:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)
        return list(self.seen.values())

    def _run(self) -> None:
        while True:
            for line in other_operators(self.mine):
                self.seen.setdefault(line.partition(":")[0], f"{time.strftime('%H:%M:%S')} {line}")
            if self._stop.wait(1.0):
                return


class BenchOperator(OperatorProcess):
    """The operator as `modeldeploy run`, like tests/e2e's, but watching only the benchmark's namespaces.

    Watching only those leaves alone whatever other people's tests run on the same control plane at the time.
    """

    def __init__(self, log_path: Path, namespaces: list[str]) -> None:
        super().__init__(cluster(), log_path)
        self.namespaces = namespaces

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    def start(self) -> None:
        if self.running:
            return
        modeldeploy = Path(sys.executable).parent / "modeldeploy"
        command = [str(modeldeploy), "run", "--metrics-bind-address", f"127.0.0.1:{self.metrics_port}"]
        for namespace in self.namespaces:
            command += ["--namespace", namespace]
        with self.log_path.open("ab") as output:
            self.process = subprocess.Popen(
                command,
                env={**self.cluster.env(), **self.extra_env, "PYTHONUNBUFFERED": "1"},
                stdout=output,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + 30
        while self.metric("modeldeploy_queue_depth") is None:
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"the operator did not start; see {self.log_path}")
            time.sleep(0.1)

    def metric_lines(self, name: str) -> dict[str, float]:
        """Every sample of one metric, by its label set."""
        samples: dict[str, float] = {}
        for line in (self.metrics_text() or "").splitlines():
            if line.startswith(name + "{") or line.startswith(name + " "):
                labels, _, value = line.rpartition(" ")
                samples[labels[len(name) :] or "{}"] = float(value)
        return samples


def load_note() -> str:
    one, five, _ = os.getloadavg()
    return f"load average {one:.2f} (1 min), {five:.2f} (5 min) on {os.cpu_count()} CPUs"


# --- the report -----------------------------------------------------------------------------------------------------


@dataclass
class Row:
    figure: str
    value: str
    goal: str = ""
    met: bool | None = None  # None: no goal, or nothing to compare
    note: str = ""


@dataclass
class Report:
    title: str
    rows: list[Row] = field(default_factory=list)

    def add(self, figure: str, value: str, goal: str = "", met: bool | None = None, note: str = "") -> None:
        self.rows.append(Row(figure, value, goal, met, note))

    def short(self) -> list[Row]:
        return [row for row in self.rows if row.met is False]

    def print(self) -> None:
        width = max([len(row.figure) for row in self.rows] + [10])
        value_width = max([len(row.value) for row in self.rows] + [8])
        goal_width = max([len(row.goal) for row in self.rows] + [4])
        print()
        print(self.title)
        print("=" * len(self.title))
        print(f"{'figure':<{width}}  {'value':>{value_width}}  {'goal':<{goal_width}}  verdict")
        print(f"{'-' * width}  {'-' * value_width}  {'-' * goal_width}  -------")
        for row in self.rows:
            verdict = {True: "ok", False: "SHORT of goal", None: ""}[row.met]
            line = f"{row.figure:<{width}}  {row.value:>{value_width}}  {row.goal:<{goal_width}}  {verdict}"
            print(line.rstrip() + (f"  ({row.note})" if row.note else ""))
        short = self.short()
        print()
        if short:
            for row in short:
                print(f"SHORT of goal: {row.figure}: {row.value} (goal {row.goal})")
        else:
            print("All figures with a goal meet it.")


def seconds(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1f} s"


def percentile(values: list[float], fraction: float) -> float:
    """Nearest-rank percentile: the smallest sample with at least `fraction` of the samples at or below it."""
    ordered = sorted(values)
    rank = max(1, min(len(ordered), math.ceil(fraction * len(ordered))))
    return ordered[rank - 1]


def write_json(path: Path, figures: dict[str, Any]) -> None:
    path.write_text(json.dumps(figures, indent=2, sort_keys=False) + "\n")
    log(f"wrote {path.relative_to(REPO_ROOT) if path.is_relative_to(REPO_ROOT) else path}")
