"""Shared by the benchmarks: every one applies objects, watches them and times them the same way.

Parallel server-side apply through the kit's API client (modeldeploy_testkit.kubeapi); watches that record when
each object first appears and first becomes ready (a Service: when its EndpointSlices list its pods as ready
endpoints); the yardstick of bare Deployment + Service pairs; the API server's audit log; memory and CPU of local
processes; and the printed table of figures beside their goals.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import statistics
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests

from modeldeploy_testkit.cluster import READY_IMAGE, Cluster, local_cluster
from modeldeploy_testkit.kubeapi import ApiError, KubeAPI, Manifest, resource_path
from modeldeploy_testkit.operator_process import OperatorProcess
from modeldeploy_testkit.scripts import REPO_ROOT, cluster_dir, script_value
from modeldeploy_testkit.waiting import wait_until
from modeldeploy_testkit.watches import CollectionWatch

USER_AGENT_PREFIX = "bench/"
USER_AGENT = f"{USER_AGENT_PREFIX}0.1.0 (modeldeploy_testkit.bench)"
FIELD_MANAGER = "modeldeploy-bench"
APPLY_CONTENT_TYPE = "application/apply-patch+yaml"
PARALLEL_THREADS = 16
REPLICAS = 2
OPERATOR_USER_AGENTS = ("modeldeploy/", "kopf/")
API_VERSION = "modeldeploy.io/v1alpha1"
INSTANCE_LABEL = "app.kubernetes.io/instance"
SERVICE_NAME_LABEL = "kubernetes.io/service-name"
SERVICE_PORT = 8080
COMPONENTS = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kwok")

# Requests wait this long for an answer: under a thousand parallel applies the API server takes its time.
REQUEST_TIMEOUT_SECONDS = 60.0


def bench_dir() -> Path:
    """Where the JSON figures go: .cluster/bench/ (removed by cluster-down.sh with the rest of the state)."""
    path = cluster_dir() / "bench"
    path.mkdir(parents=True, exist_ok=True)
    return path


def kubeconfig() -> Path:
    return cluster_dir() / "kubeconfig"


def kubectl_path() -> Path:
    return Path(script_value("KUBERNETES_BIN")) / "kubectl"


def cluster() -> Cluster:
    return local_cluster()


def bench_api() -> KubeAPI:
    """The benchmarks' client: the kubeconfig's credentials, a connection per thread, their own user agent."""
    return KubeAPI(kubeconfig(), USER_AGENT, REQUEST_TIMEOUT_SECONDS)


def log(message: str) -> None:
    print(f"{time.strftime('%H:%M:%S')} {message}", flush=True)


def deployments_path(namespace: str) -> str:
    return resource_path("apps/v1", "deployments", namespace)


def resources_path(namespace: str) -> str:
    return resource_path(API_VERSION, "modeldeployments", namespace)


def services_path(namespace: str) -> str:
    return resource_path("v1", "services", namespace)


def endpoint_slices_path(namespace: str) -> str:
    return resource_path("discovery.k8s.io/v1", "endpointslices", namespace)


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


def bare_service(name: str, namespace: str) -> Manifest:
    """A ClusterIP Service selecting the pods of bare_deployment(name): the other child a served model needs."""
    labels = {"app.kubernetes.io/name": name, "app.kubernetes.io/part-of": "modeldeploy-bench"}
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": namespace, "labels": labels},
        "spec": {
            "type": "ClusterIP",
            "selector": {"app.kubernetes.io/name": name},
            "ports": [{"name": "http", "port": SERVICE_PORT, "targetPort": SERVICE_PORT, "protocol": "TCP"}],
        },
    }


def model_deployment(name: str, namespace: str, replicas: int = REPLICAS) -> Manifest:
    """The minimal ModelDeployment: one model version, `replicas` pods of a ready image."""
    return {
        "apiVersion": API_VERSION,
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


def ready_endpoints(endpoint_slice: Manifest) -> int:
    """Endpoints of one EndpointSlice that take traffic. A `ready` condition left unset counts as ready, as the
    EndpointSlice API says consumers should read it; the endpoint slice controller always sets it."""
    return sum(
        1
        for endpoint in endpoint_slice.get("endpoints") or []
        if (endpoint.get("conditions") or {}).get("ready") is not False
    )


def service_of(endpoint_slice: Manifest) -> str:
    """The Service an EndpointSlice belongs to (its kubernetes.io/service-name label); "" when it names none."""
    return str((endpoint_slice["metadata"].get("labels") or {}).get(SERVICE_NAME_LABEL) or "")


class EndpointCounts:
    """Ready endpoints per Service, summed over its EndpointSlices (a Service may have several), from watch events."""

    def __init__(self) -> None:
        self._by_slice: dict[str, dict[str, int]] = {}

    def observe(self, kind: str, endpoint_slice: Manifest) -> int:
        """Take one event into account; the Service's ready endpoints after it."""
        service = service_of(endpoint_slice)
        slices = self._by_slice.setdefault(service, {})
        name = str(endpoint_slice["metadata"]["name"])
        if kind == "DELETED":
            slices.pop(name, None)
        else:
            slices[name] = ready_endpoints(endpoint_slice)
        return sum(slices.values())


def pair_ready_times(deployments: dict[str, float], services: dict[str, float]) -> dict[str, float]:
    """When each bare pair was first ready: its Deployment Available and its Service listing the ready endpoints.
    Both only grow in a run where nothing is deleted, so a pair is ready from the later of the two moments."""
    return {name: max(at, services[name]) for name, at in deployments.items() if name in services}


def all_ready_seconds(times: dict[str, float], count: int, started: float) -> float | None:
    """Seconds from `started` until `count` objects were ready; None when fewer were."""
    ordered = sorted(at - started for at in times.values())
    return round(ordered[count - 1], 3) if count and len(ordered) >= count else None


def name_of(body: Manifest) -> str:
    return str(body["metadata"]["name"])


def instance_of(body: Manifest) -> str:
    """For a child of a ModelDeployment: the resource's name (its instance label); else the object's own name."""
    labels = body["metadata"].get("labels") or {}
    return str(labels.get(INSTANCE_LABEL) or body["metadata"]["name"])


# --- watches --------------------------------------------------------------------------------------------------------


class Tracker:
    """One watch on one collection (modeldeploy_testkit.watches), in a thread of its own.

    Records, at receipt (time.monotonic()), when each key was first seen ADDED and when it first satisfied
    `ready`. One list first (for the resourceVersion to watch from), then the watch; a stream that ends is resumed
    from the last resourceVersion seen, an expired one (410) from a new list.
    """

    def __init__(
        self,
        api: KubeAPI,
        path: str,
        ready: Callable[[Manifest], bool] | None = None,
        key: Callable[[Manifest], str] = name_of,
    ) -> None:
        self.path = path
        self.ready_check = ready
        self.key = key
        self.added: dict[str, float] = {}
        self.added_wall: dict[str, float] = {}  # time.time() of the same receipts: comparable with the audit log
        self.ready: dict[str, float] = {}
        self.deleted: dict[str, float] = {}
        self.events = 0
        self._condition = threading.Condition()
        # The server ends each stream after this long; it is resumed at once.
        self._watch = CollectionWatch(api, path, self._observe, timeout_seconds=290)

    @property
    def errors(self) -> list[str]:
        return self._watch.errors

    @property
    def reconnects(self) -> int:
        return self._watch.reconnects

    def start(self) -> Tracker:
        self._watch.start()
        return self

    def stop(self) -> None:
        self._watch.stop(timeout=5)

    def _observe(self, kind: str, body: Manifest) -> None:
        now, wall = time.monotonic(), time.time()
        key = self.key(body)
        with self._condition:
            self.events += 1
            if kind == "DELETED":
                self.deleted.setdefault(key, now)
            else:
                self.added.setdefault(key, now)
                self.added_wall.setdefault(key, wall)
                if self.ready_check is not None and key not in self.ready and self.ready_check(body):
                    self.ready[key] = now
            self._condition.notify_all()

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

    def added_wall_times(self) -> dict[str, float]:
        with self._condition:
            return dict(self.added_wall)


class EndpointsTracker(Tracker):
    """A watch on a namespace's EndpointSlices, keyed by Service: when each Service first listed `wanted` ready
    endpoints over all its slices (`ready` of the Tracker)."""

    def __init__(self, api: KubeAPI, namespace: str, wanted: int = REPLICAS) -> None:
        self.wanted = wanted
        self.counts = EndpointCounts()
        super().__init__(api, endpoint_slices_path(namespace), key=service_of)

    def _observe(self, kind: str, body: Manifest) -> None:
        now, wall = time.monotonic(), time.time()
        key = self.key(body)
        with self._condition:
            self.events += 1
            ready = self.counts.observe(kind, body)
            if kind != "DELETED":
                self.added.setdefault(key, now)
                self.added_wall.setdefault(key, wall)
            if key not in self.ready and ready >= self.wanted:
                self.ready[key] = now
            self._condition.notify_all()


# --- namespaces -----------------------------------------------------------------------------------------------------


def create_namespace(api: KubeAPI, name: str) -> None:
    body = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": {"modeldeploy-bench": "1"}}}
    api.create("/api/v1/namespaces", body)
    # The ServiceAccount controller adds `default`; pods wait for it, so do the same before timing anything.
    account = f"/api/v1/namespaces/{name}/serviceaccounts/default"
    wait_until(lambda: api.get(account) is not None, timeout=60, what=f"the default ServiceAccount of namespace {name}")


def delete_namespace(api: KubeAPI, name: str, timeout: float = 600) -> tuple[float, bool]:
    """Delete a namespace and wait until it is gone. Returns (seconds, gone). Polls the namespace only."""
    started = time.monotonic()
    unreachable_since: float | None = None
    with contextlib.suppress(ApiError, requests.RequestException):
        api.delete(f"/api/v1/namespaces/{name}")
    while time.monotonic() - started < timeout:
        try:
            if api.get(f"/api/v1/namespaces/{name}") is None:
                return time.monotonic() - started, True
            unreachable_since = None
        except requests.RequestException as error:
            # The control plane went away (somebody ran cluster-down?): give up after a while, do not hang.
            unreachable_since = unreachable_since or time.monotonic()
            if time.monotonic() - unreachable_since > 15:
                log(f"  the API server does not answer ({type(error).__name__}); namespace {name} left as it is")
                break
        time.sleep(1.0)
    return time.monotonic() - started, False


def count_items(api: KubeAPI, path: str) -> int:
    listing = api.get(path, {"limit": "500"}) or {}
    remaining = int((listing.get("metadata") or {}).get("remainingItemCount") or 0)
    return len(listing.get("items") or []) + remaining


# --- parallel apply -------------------------------------------------------------------------------------------------


@dataclass
class ApplyResult:
    submitted_seconds: float
    errors: list[str] = field(default_factory=list)
    retries: int = 0


def apply_parallel(
    api: KubeAPI, collection: str, bodies: list[Manifest], threads: int = PARALLEL_THREADS
) -> ApplyResult:
    """Server-side apply every body, `threads` requests in flight; retries 429/5xx and connection errors."""
    return apply_groups(api, [[(collection, body)] for body in bodies], threads)


def apply_groups(
    api: KubeAPI, groups: list[list[tuple[str, Manifest]]], threads: int = PARALLEL_THREADS
) -> ApplyResult:
    """Server-side apply every group, `threads` groups at a time, the objects of one group one after the other in
    one thread (a bare pair: its Deployment, then its Service, as `kubectl apply` of the pair's file sends them).
    Each object is (collection, body); 429/5xx answers and connection errors are retried."""
    lock = threading.Lock()
    result = ApplyResult(submitted_seconds=0.0)
    started = time.monotonic()

    def one(collection: str, body: Manifest) -> None:
        for attempt in range(6):
            try:
                api.apply(collection, body, FIELD_MANAGER)
                return
            except (ApiError, requests.RequestException) as error:
                status = getattr(error, "status", 0)
                retryable = status in (0, 429, 500, 502, 503, 504) or not isinstance(error, ApiError)
                if not retryable or attempt == 5:
                    with lock:
                        result.errors.append(str(error)[:300])
                    return
                with lock:
                    result.retries += 1
                time.sleep(0.2 * (attempt + 1))

    def group(objects: list[tuple[str, Manifest]]) -> None:
        for collection, body in objects:
            one(collection, body)

    with ThreadPoolExecutor(max_workers=threads, thread_name_prefix="apply") as pool:
        list(pool.map(group, groups))
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


def bare_parallel(api: KubeAPI, namespace: str, count: int, timeout: float) -> ScaleRun:
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


@dataclass
class PairRun:
    """The yardstick: `count` bare Deployment + Service pairs applied at once, until every pair was ready."""

    pairs: ScaleRun
    deployments_seconds: float | None  # every Deployment Available, endpoints aside
    endpoints_seconds: float | None  # every Service listing its ready endpoints, Deployments aside

    def as_json(self) -> dict[str, Any]:
        return {
            **self.pairs.as_json(),
            "deployments_available_seconds": self.deployments_seconds,
            "service_endpoints_ready_seconds": self.endpoints_seconds,
        }


def bare_pairs_parallel(api: KubeAPI, namespace: str, count: int, timeout: float) -> PairRun:
    """`count` bare Deployment + Service pairs applied by PARALLEL_THREADS threads (each pair's Deployment, then its
    Service); seconds until every pair was ready: its Deployment Available and its Service's EndpointSlices listing
    REPLICAS ready endpoints, both seen by watches."""
    create_namespace(api, namespace)
    deployments = deployments_path(namespace)
    services = services_path(namespace)
    deployment_tracker = Tracker(api, deployments, ready=deployment_available).start()
    endpoint_tracker = EndpointsTracker(api, namespace).start()
    groups = [
        [(deployments, bare_deployment(name, namespace)), (services, bare_service(name, namespace))]
        for name in names("d", count)
    ]
    reporter = progress(deployment_tracker, count)
    try:
        started = time.monotonic()
        applied = apply_groups(api, groups)
        if applied.errors:
            log(f"  {len(applied.errors)} apply errors; first: {applied.errors[0]}")
        deadline = started + timeout
        deployment_tracker.wait_ready(count, max(deadline - time.monotonic(), 1.0))
        endpoint_tracker.wait_ready(count, max(deadline - time.monotonic(), 1.0))
        deployment_times = deployment_tracker.ready_times()
        endpoint_times = endpoint_tracker.ready_times()
    finally:
        reporter.set()
        deployment_tracker.stop()
        endpoint_tracker.stop()
    pair_times = pair_ready_times(deployment_times, endpoint_times)
    times = sorted(at - started for at in pair_times.values())
    run = ScaleRun(
        count=count,
        seconds=all_ready_seconds(pair_times, count, started),
        ready=len(times),
        submitted_seconds=applied.submitted_seconds,
        errors=applied.errors,
        retries=applied.retries,
        first_ready_seconds=round(times[0], 3) if times else None,
        p50_ready_seconds=round(statistics.median(times), 3) if times else None,
    )
    return PairRun(
        run,
        all_ready_seconds(deployment_times, count, started),
        all_ready_seconds(endpoint_times, count, started),
    )


def cleanup_namespace(api: KubeAPI, namespace: str, timeout: float = 600) -> tuple[float, bool]:
    log(f"deleting namespace {namespace} and waiting until it is gone")
    seconds, gone = delete_namespace(api, namespace, timeout=timeout)
    if gone:
        log(f"  namespace {namespace} gone after {seconds:.1f}s")
    else:
        try:
            left = str(count_items(api, deployments_path(namespace)))
        except (ApiError, requests.RequestException):
            left = "unknown number of"
        log(f"  namespace {namespace} still there after {seconds:.0f}s ({left} Deployments left)")
    return seconds, gone


# --- the audit log --------------------------------------------------------------------------------------------------


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


# The rows and columns of the table of writes per resource. Server-side apply, scale and status merge patches are
# all `patch` to the audit log (it keeps no content type); the operator's own counter tells them apart.
WRITE_KINDS = ("Deployment", "Service", "ModelDeployment/status", "Event")
AUDIT_VERBS = ("create", "update", "patch", "delete")


@dataclass
class Writes:
    """Writes of the operator's user agents in some namespaces, from the audit log."""

    by_kind: Counter[str] = field(default_factory=Counter)
    by_verb: Counter[str] = field(default_factory=Counter)
    by_verb_kind: Counter[tuple[str, str]] = field(default_factory=Counter)
    conflicts: int = 0
    errors: Counter[int] = field(default_factory=Counter)
    elsewhere: int = 0  # the same user agents, outside the namespaces asked about

    @property
    def total(self) -> int:
        return sum(self.by_kind.values())

    @property
    def without_events(self) -> int:
        """Children and status: the writes the goal counts."""
        return self.total - self.by_kind.get("Event", 0)

    def table(self, resources: int) -> list[str]:
        """Writes per resource, a row per kind and a column per verb, as printed lines."""
        kinds = list(WRITE_KINDS) + sorted(kind for kind in self.by_kind if kind not in WRITE_KINDS)
        verbs = list(AUDIT_VERBS) + sorted(verb for verb in self.by_verb if verb not in AUDIT_VERBS)
        lines = [f"  {'kind':<24}" + "".join(f"{verb:>9}" for verb in verbs) + f"{'total':>9}"]
        for kind in kinds:
            cells = [self.by_verb_kind.get((verb, kind), 0) / max(resources, 1) for verb in verbs]
            total = self.by_kind.get(kind, 0) / max(resources, 1)
            lines.append(f"  {kind:<24}" + "".join(f"{cell:>9.2f}" for cell in cells) + f"{total:>9.2f}")
        return lines

    def as_json(self) -> dict[str, Any]:
        return {
            "total": self.total,
            "without_events": self.without_events,
            "by_kind": dict(self.by_kind),
            "by_verb": dict(self.by_verb),
            "by_verb_and_kind": {f"{verb} {kind}": count for (verb, kind), count in sorted(self.by_verb_kind.items())},
            "conflicts_409": self.conflicts,
            "error_codes": {str(code): count for code, count in self.errors.items()},
            "elsewhere": self.elsewhere,
        }


def operator_writes(events: Iterable[Manifest], namespaces: set[str]) -> Writes:
    """The writes of the operator's user agents (its own client's and kopf's) to objects in `namespaces`: one per
    audit event of a completed request (the policy records write verbs only, from ResponseComplete on)."""
    writes = Writes()
    for event in events:
        if event.get("stage") not in (None, "ResponseComplete", "Panic"):
            continue
        if not str(event.get("userAgent", "")).startswith(OPERATOR_USER_AGENTS):
            continue
        if (event.get("objectRef") or {}).get("namespace") not in namespaces:
            writes.elsewhere += 1
            continue
        kind, verb = write_kind(event), str(event.get("verb"))
        writes.by_kind[kind] += 1
        writes.by_verb[verb] += 1
        writes.by_verb_kind[(verb, kind)] += 1
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


def cpu_by_process(others: dict[str, int] | None = None) -> dict[str, float]:
    """CPU seconds so far of each control-plane process, and of `others` (name -> pid)."""
    pids = {**component_pids(), **(others or {})}
    return {name: seconds for name, pid in pids.items() if (seconds := cpu_seconds(pid)) is not None}


@dataclass
class CpuWindow:
    """The CPU seconds each process spent over one stretch of wall time: on a machine whose cores are all busy, the
    stretch lasts as long as the work of all of them takes, so this says whose work made it long."""

    wall: float
    seconds: dict[str, float]

    @classmethod
    def between(cls, before: dict[str, float], after: dict[str, float], wall: float) -> CpuWindow:
        return cls(wall, {name: after[name] - before.get(name, 0.0) for name in after})

    @property
    def total(self) -> float:
        return sum(self.seconds.values())


def cpu_lines(windows: dict[str, CpuWindow], cores: int) -> list[str]:
    """A table: CPU seconds by process (rows) in each window (columns), with the totals and the machine's capacity."""
    names = sorted({name for window in windows.values() for name in window.seconds})
    header = f"  {'process':<26}" + "".join(f"{label:>14}" for label in windows)
    lines = [header]
    for name in names:
        lines.append(f"  {name:<26}" + "".join(f"{w.seconds.get(name, 0.0):>13.1f}s" for w in windows.values()))
    lines.append(f"  {'all of them':<26}" + "".join(f"{w.total:>13.1f}s" for w in windows.values()))
    lines.append(
        f"  {f'capacity ({cores} cores x wall)':<26}" + "".join(f"{w.wall * cores:>13.1f}s" for w in windows.values())
    )
    return lines


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


def bench_operator(log_path: Path, namespaces: list[str], memtrace_report: Path | None = None) -> OperatorProcess:
    """The operator as `modeldeploy run`, like the end-to-end tests', but watching only the benchmark's namespaces.

    Watching only those leaves alone whatever other people's tests run on the same control plane at the time.
    """
    return OperatorProcess(cluster(), log_path, namespaces=namespaces, memtrace_report=memtrace_report)


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
