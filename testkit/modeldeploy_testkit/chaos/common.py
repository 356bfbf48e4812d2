"""Shared by the failure cases: the run's context (seed, short or full), figures with their goals, the checks that
every case ends with (converged, no duplicate children, no lost edit, no write by a non-leader), and the table.

A case is a module of this package with `CASE` (its name, e.g. "R1"), `TITLE` and `run(run: ChaosRun) ->
list[Figure]`. It draws every random choice from `run.rng`, so that a printed seed repeats it.
"""

from __future__ import annotations

import json
import math
import random
import statistics
import time
import uuid
from collections.abc import Collection, Iterable, Iterator, Mapping
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from modeldeploy_testkit.cluster import Cluster, local_cluster
from modeldeploy_testkit.kubeapi import KubeAPI, Manifest, resource_path
from modeldeploy_testkit.operator_process import AuditLog, AuditMark, OperatorProcess
from modeldeploy_testkit.scripts import cluster_dir

USER_AGENT = "chaos/0.1.0 (modeldeploy_testkit.chaos)"
FIELD_MANAGER = "modeldeploy-chaos"
API_VERSION = "modeldeploy.io/v1alpha1"
INSTANCE_LABEL = "app.kubernetes.io/instance"
REVISION_LABEL = "modeldeploy.io/revision"
OPERATOR_USER_AGENT = "modeldeploy/"
# kopf's own requests: the operator configures it to write nothing, so any such write is a finding.
KOPF_USER_AGENT = "kopf/"
LEASE_NAMESPACE = "default"  # the admin kubeconfig's context names none: the operator's default


def log(message: str) -> None:
    print(f"{time.strftime('%H:%M:%S')} {message}", flush=True)


def chaos_dir() -> Path:
    """Logs and JSON figures: .cluster/chaos/ (removed by cluster-down.sh with the rest of the state)."""
    path = cluster_dir() / "chaos"
    path.mkdir(parents=True, exist_ok=True)
    return path


@dataclass(frozen=True)
class Figure:
    """One measured figure beside its goal; `ok` says whether the goal was met, `note` what fell short or why."""

    name: str
    value: str
    goal: str
    ok: bool
    note: str = ""


def count_figure(name: str, count: int, goal: int = 0, note: str = "") -> Figure:
    """A count whose goal is at most `goal` (0 for duplicates, lost edits, non-leader writes)."""
    return Figure(name, str(count), f"<= {goal}" if goal else "0", count <= goal, note)


def converged_figure(converged: int, total: int, note: str = "") -> Figure:
    return Figure("converged", f"{converged}/{total}", f"{total}/{total}", converged == total, note)


def seconds_figure(name: str, seconds: float, limit: float, note: str = "") -> Figure:
    return Figure(name, f"{seconds:.1f} s", f"<= {limit:g} s", seconds <= limit, note)


def spread_figure(name: str, samples: list[float], limit: float | None = None) -> Figure:
    """p50 and max of durations in seconds; a goal on the max when `limit` is given, else informational."""
    if not samples:
        return Figure(name, "no samples", "" if limit is None else f"max <= {limit:g} s", False, "nothing measured")
    ordered = sorted(samples)
    p50 = statistics.median(ordered)
    value = f"p50 {p50:.1f} s, max {ordered[-1]:.1f} s (n={len(ordered)})"
    if limit is None:
        return Figure(name, value, "(measured)", True)
    return Figure(name, value, f"max <= {limit:g} s", ordered[-1] <= limit)


@dataclass
class CaseReport:
    case: str
    title: str
    seed: int
    short: bool
    seconds: float
    figures: list[Figure] = field(default_factory=list)
    error: str = ""

    @property
    def ok(self) -> bool:
        return not self.error and all(figure.ok for figure in self.figures)


@dataclass
class ChaosRun:
    """What a case gets: the cluster, a client, the run's randomness and size, and where to put logs."""

    cluster: Cluster
    api: KubeAPI
    seed: int
    short: bool
    rng: random.Random
    audit: AuditLog
    directory: Path

    def namespace(self, stem: str) -> str:
        """A fresh namespace, left for the case to delete (cleanup() does it)."""
        name = f"chaos-{stem}-{uuid.uuid4().hex[:6]}"
        self.api.create("/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})
        return name

    def cleanup(self, *namespaces: str) -> None:
        for name in namespaces:
            self.api.delete(f"/api/v1/namespaces/{name}")

    def operators(self, count: int, stem: str, **options: Any) -> list[OperatorProcess]:
        """`count` operator processes (not started) with the same settings and one Lease, as replicas of the chart's
        Deployment; their logs in this run's directory."""
        lease = f"chaos-{stem}-{uuid.uuid4().hex[:6]}"
        return [
            OperatorProcess(self.cluster, self.directory / f"operator-{stem}-{index}.log", lease_name=lease, **options)
            for index in range(count)
        ]


def new_run(seed: int | None, short: bool) -> ChaosRun:
    chosen = seed if seed is not None else random.SystemRandom().randrange(1, 2**31)
    cluster = local_cluster()
    directory = chaos_dir() / time.strftime("%Y%m%d-%H%M%S")
    directory.mkdir(parents=True, exist_ok=True)
    return ChaosRun(
        cluster=cluster,
        api=cluster.api(USER_AGENT, timeout=60),
        seed=chosen,
        short=short,
        rng=random.Random(chosen),
        audit=AuditLog(),
        directory=directory,
    )


# --- what every case checks at its end ------------------------------------------------------------------------------


def resources_path(namespace: str, name: str | None = None) -> str:
    return resource_path(API_VERSION, "modeldeployments", namespace, name)


def model_deployment(name: str, version: str, replicas: int, rollout: dict[str, Any]) -> Manifest:
    return {
        "apiVersion": API_VERSION,
        "kind": "ModelDeployment",
        "metadata": {"name": name},
        "spec": {
            "model": {"version": version, "uri": f"file:///models/{name}/{version}/model.joblib"},
            "replicas": replicas,
            "runtime": {"image": "modeldeploy.test/model-server:latest"},
            "rollout": rollout,
        },
    }


def is_converged(body: Manifest) -> bool:
    """The operator is done with the spec as it is now: status of this generation, Healthy, no canary, and the
    serving version is the spec's (so no edit was lost)."""
    status = body.get("status") or {}
    spec_version = ((body.get("spec") or {}).get("model") or {}).get("version")
    return (
        status.get("observedGeneration") == body["metadata"].get("generation")
        and status.get("phase") == "Healthy"
        and (status.get("stable") or {}).get("version") == spec_version
        and not status.get("canary")
    )


def is_acted_on(body: Manifest) -> bool:
    """The operator has acted on the spec as it is now: a status of this generation that names the spec's version
    as the stable or the canary revision. A pass writes status after the children, so the new revision's Deployment
    and Services exist by then; whether its pods are Ready is the cluster's part, measured by is_converged."""
    status = body.get("status") or {}
    spec_version = ((body.get("spec") or {}).get("model") or {}).get("version")
    named = {(status.get(track) or {}).get("version") for track in ("stable", "canary")}
    return status.get("observedGeneration") == body["metadata"].get("generation") and spec_version in named


def acted_figure(name: str, samples: list[float], expected: int, limit: float) -> Figure:
    """How long the operator took to act on every change (is_acted_on): p50 and max, and every change acted on."""
    figure = spread_figure(name, samples, limit)
    if len(samples) == expected:
        return figure
    return Figure(name, figure.value, figure.goal, False, f"acted on {len(samples)} of {expected} changes")


@dataclass(frozen=True)
class ChildrenCount:
    """What one ModelDeployment owns right now, beyond what its converged state needs."""

    name: str
    scaled_deployments: int  # Deployments with replicas > 0: exactly 1 once converged
    extra_pods: int  # live pods beyond spec.replicas


def children_of(api: KubeAPI, namespace: str) -> dict[str, ChildrenCount]:
    """Per ModelDeployment of `namespace`: its Deployments still scaled up and its pods beyond spec.replicas.
    Both are 0 extra when nothing was duplicated."""
    resources = api.list(resources_path(namespace))["items"]
    deployments = api.list(resource_path("apps/v1", "deployments", namespace))["items"]
    pods = api.list(resource_path("v1", "pods", namespace))["items"]
    counts: dict[str, ChildrenCount] = {}
    for resource in resources:
        name = resource["metadata"]["name"]
        replicas = int(resource["spec"].get("replicas", 1))
        scaled = [
            d
            for d in deployments
            if (d["metadata"].get("labels") or {}).get(INSTANCE_LABEL) == name and int(d["spec"].get("replicas", 0)) > 0
        ]
        live = [
            p
            for p in pods
            if (p["metadata"].get("labels") or {}).get(INSTANCE_LABEL) == name
            and not p["metadata"].get("deletionTimestamp")
        ]
        counts[name] = ChildrenCount(name, len(scaled), max(0, len(live) - replicas))
    return counts


def duplicate_children(api: KubeAPI, namespace: str) -> int:
    """Deployments scaled up beyond the one a converged resource serves from, plus pods beyond spec.replicas."""
    return sum(
        max(0, count.scaled_deployments - 1) + count.extra_pods for count in children_of(api, namespace).values()
    )


def settled_duplicates(api: KubeAPI, namespace: str, timeout: float) -> int:
    """duplicate_children once it is 0, or its count when the deadline passes: right after a promotion the old pods
    are being deleted, which is not a duplicate."""
    deadline = time.monotonic() + timeout
    while True:
        count = duplicate_children(api, namespace)
        if count == 0 or time.monotonic() > deadline:
            return count
        time.sleep(1.0)


def lost_edits(api: KubeAPI, namespace: str, last_written: Mapping[str, str]) -> list[str]:
    """Resources where the version last written to the spec was lost: the spec carries another one, or the status is
    settled (this generation, Healthy, no canary) on another one. One not settled yet is not counted here: that is
    wait_converged's figure."""
    lost: list[str] = []
    for name, version in last_written.items():
        body = api.get(resources_path(namespace, name))
        if body is None:
            lost.append(f"{name}: gone (last written {version})")
            continue
        spec_version = ((body.get("spec") or {}).get("model") or {}).get("version")
        status = body.get("status") or {}
        stable = (status.get("stable") or {}).get("version")
        settled = (
            status.get("observedGeneration") == body["metadata"].get("generation")
            and status.get("phase") == "Healthy"
            and not status.get("canary")
        )
        if spec_version != version:
            lost.append(f"{name}: spec says {spec_version}, last written {version}")
        elif settled and stable != version:
            lost.append(f"{name}: settled on {stable}, last written {version}")
    return lost


@dataclass(frozen=True)
class Progress:
    """When each resource was first seen acted on (is_acted_on) and converged (is_converged), in seconds."""

    acted: dict[str, float]
    converged: dict[str, float]


def follow_progress(api: KubeAPI, namespace: str, names: Iterable[str], timeout: float) -> Progress:
    """Poll until every named resource is converged or the deadline passes, noting when each was first acted on
    and first converged, in seconds from the call. A resource missing from the answer is neither."""
    wanted = set(names)
    started = time.monotonic()
    progress = Progress({}, {})
    while True:
        for body in api.list(resources_path(namespace))["items"]:
            name = body["metadata"]["name"]
            if name not in wanted:
                continue
            now = time.monotonic() - started
            if name not in progress.converged and is_converged(body):
                progress.converged[name] = now
            if name not in progress.acted and (name in progress.converged or is_acted_on(body)):
                progress.acted[name] = now
        if len(progress.converged) == len(wanted) or time.monotonic() - started > timeout:
            return progress
        time.sleep(0.5)


def wait_converged(api: KubeAPI, namespace: str, names: Iterable[str], timeout: float) -> dict[str, float]:
    """Poll until every named resource is converged (is_converged) or the deadline passes; when each first was,
    in seconds from the call. A resource missing from the answer is not converged."""
    return follow_progress(api, namespace, names, timeout).converged


# --- writes by a non-leader, from the API server's audit log -------------------------------------------------------


def _identity(user_agent: str) -> str:
    """`modeldeploy/0.1.0 (host_suffix)` -> `host_suffix`; "" when the agent names none."""
    if "(" in user_agent and user_agent.endswith(")"):
        return user_agent.rsplit("(", 1)[1][:-1]
    return ""


def _when(event: dict[str, Any], key: str) -> datetime:
    return datetime.fromisoformat(str(event[key]).replace("Z", "+00:00"))


@dataclass(frozen=True)
class LeadershipAudit:
    """Every operator write between two marks, each judged against who held the Lease when the API server got it."""

    writes: int
    by_non_leader: list[str]
    unattributed: int  # operator writes whose user agent names no replica (kopf's): it is set to write none
    holders: tuple[str, ...] = ()  # the replicas that held the Lease, in the order they took it

    @property
    def violations(self) -> int:
        return len(self.by_non_leader) + self.unattributed


def leadership_audit(
    audit: AuditLog,
    mark: AuditMark,
    lease_name: str,
    lease_namespace: str = LEASE_NAMESPACE,
    namespaces: Collection[str] | None = None,
) -> LeadershipAudit:
    """Who led when: the last replica whose write of the Lease succeeded (create or update, 2xx, by completion
    time). A write (any verb but the Lease's own, any answer) by a replica at a moment another one held the Lease is
    a write by a non-leader. Releases are successful writes too, after which the releasing replica writes nothing
    (the audit log keeps metadata only, so a release cannot be told from a renewal).

    `namespaces`: judge only writes to objects in these (the case's), since other operators on the shared control
    plane (another Lease, other namespaces) write too; their user agent looks the same."""
    events = list(audit.between(mark))
    lease_writes: list[tuple[datetime, str]] = []
    writes: list[tuple[datetime, str, str]] = []
    unattributed = 0
    for event in events:
        agent = str(event.get("userAgent", ""))
        reference = event.get("objectRef") or {}
        is_lease = reference.get("resource") == "leases"
        if namespaces is not None and not is_lease and reference.get("namespace") not in namespaces:
            continue
        if agent.startswith(KOPF_USER_AGENT):
            unattributed += 1
            continue
        if not agent.startswith(OPERATOR_USER_AGENT):
            continue
        identity = _identity(agent)
        if is_lease:
            if reference.get("name") != lease_name or reference.get("namespace") != lease_namespace:
                continue
            code = int((event.get("responseStatus") or {}).get("code") or 0)
            if 200 <= code < 300:
                lease_writes.append((_when(event, "stageTimestamp"), identity))
            continue
        where = f"{event.get('verb')} {reference.get('resource')} {reference.get('namespace')}/{reference.get('name')}"
        writes.append((_when(event, "requestReceivedTimestamp"), identity, where))
    lease_writes.sort()
    holders: list[str] = []
    for _, writer in lease_writes:
        if not holders or holders[-1] != writer:
            holders.append(writer)
    by_non_leader: list[str] = []
    for received, identity, where in writes:
        holder = ""
        for completed, writer in lease_writes:
            if completed > received:
                break
            holder = writer
        if holder != identity:
            by_non_leader.append(f"{received.isoformat()} {identity or '?'} {where} (leader: {holder or 'none'})")
    return LeadershipAudit(len(writes), by_non_leader, unattributed, tuple(holders))


# Lines of an operator's log that say something failed: a pass, a measurement, or anything with a traceback.
ERROR_LOG_MARKERS = ("Traceback", "Reconcile failed", "Measuring failed")


def errors_figure(operator: OperatorProcess) -> Figure:
    """Failed reconciles, by the operator's own metric and by the error lines of its log; the goal is none."""
    failed = int(operator.metric("modeldeploy_reconcile_total", 'outcome="error"') or 0.0)
    lines = [
        line
        for line in operator.log_path.read_text(errors="replace").splitlines()
        if any(marker in line for marker in ERROR_LOG_MARKERS)
    ]
    note = f"failed reconciles {failed} (its metric), error lines in its log {len(lines)}"
    return count_figure(
        "reconcile errors", max(failed, len(lines)), note=note + (f": {lines[0][:150]}" if lines else "")
    )


def audit_figure(result: LeadershipAudit) -> Figure:
    note = "; ".join(result.by_non_leader[:3])
    if result.unattributed:
        note = f"{result.unattributed} writes by kopf's own client. {note}"
    return Figure(
        "writes by a non-leader", f"{result.violations} of {result.writes}", "0", result.violations == 0, note
    )


# --- the table ------------------------------------------------------------------------------------------------------


def table(reports: list[CaseReport]) -> str:
    rows = [("case", "figure", "value", "goal", "ok", "note")]
    for report in reports:
        head = f"{report.case} (seed {report.seed}{', short' if report.short else ''}, {report.seconds:.0f} s)"
        if report.error:
            rows.append((head, "error", "", "", "FAIL", report.error))
        for index, figure in enumerate(report.figures):
            rows.append(
                (
                    head if index == 0 else "",
                    figure.name,
                    figure.value,
                    figure.goal,
                    "ok" if figure.ok else "FAIL",
                    figure.note,
                )
            )
    widths = [max(len(row[column]) for row in rows) for column in range(5)]
    lines = []
    for row in rows:
        lines.append("  ".join(cell.ljust(width) for cell, width in zip(row[:5], widths, strict=True)) + "  " + row[5])
    return "\n".join(line.rstrip() for line in lines)


def save(reports: list[CaseReport], directory: Path) -> Path:
    path = directory / "figures.json"
    path.write_text(json.dumps([asdict(report) for report in reports], indent=2))
    return path


def percent(part: float, whole: float) -> float:
    return math.inf if whole == 0 else 100.0 * part / whole


def chunks[T](items: list[T], size: int) -> Iterator[list[T]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]
