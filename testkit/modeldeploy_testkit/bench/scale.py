"""Operator benchmarks on the local control plane (`make bench`): every figure printed beside its goal.

    .venv/bin/python -m modeldeploy_testkit.bench scale [--resources 1000] [--quick]

With the control plane up (`make cluster-up`), applies the CRD, then:

1. Yardstick: N bare Deployment + Service pairs (2 replicas, a ClusterIP Service selecting them: the children a
   served model minimally needs) applied by 16 threads, until every pair is ready: its Deployment Available and
   its Service's EndpointSlices listing 2 ready endpoints. In a namespace of its own, deleted before the next step.
2. The operator (`modeldeploy run`, watching only the benchmark's namespaces) and its memory at rest, with no
   resource, once it has settled. Goal <= 60 MiB.
3. Scale: N ModelDeployments of 2 replicas applied the same way; seconds until all N are Ready, from a watch on
   their status. Goal <= 1.3x (1). Then the operator's peak memory at N resources (VmHWM). Goal <= 100 MiB.
4. Reaction latency: new ModelDeployments created one at a time; for each, the time from its ADDED watch event to
   the ADDED watch event of its Deployment, both received by this process (two watch threads, time.monotonic()).
   Goals p50 <= 10 ms, p99 <= 30 ms. Where the time goes: the way from the API server's audit log, and the
   operator's stage histograms (hand-off, queue wait, thread hand-off, compute, API round trips) from its /metrics.
5. API writes per new resource until Ready (audit log: the operator's user agents, the benchmark's namespace), by
   kind and verb; children and status count toward the goal (<= 5), Events are shown apart; 409 Conflicts (0).
6. API writes in an idle window after everything is Ready (60 s by default: the script waits on purpose). Goal 0.
7. The operator's CPU seconds; problems in its log.
Then deletes the namespaces, waits for them to go, stops the operator, writes .cluster/bench/operator.json and
runs the `runtime` benchmark.

--quick: 100 resources, 20 latency samples, a 10 s idle window: a couple of minutes.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
import uuid
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from modeldeploy_testkit.bench import options
from modeldeploy_testkit.bench.common import (
    FIELD_MANAGER,
    OPERATOR_USER_AGENTS,
    USER_AGENT_PREFIX,
    CpuWindow,
    EndpointsTracker,
    OtherOperatorsMonitor,
    PairRun,
    Report,
    ScaleRun,
    Tracker,
    Writes,
    all_ready_seconds,
    apply_parallel,
    bare_pairs_parallel,
    bench_api,
    bench_dir,
    bench_operator,
    cleanup_namespace,
    count_items,
    cpu_by_process,
    cpu_lines,
    cpu_seconds,
    create_namespace,
    delete_namespace,
    deployment_available,
    deployments_path,
    instance_of,
    kubectl,
    load_note,
    log,
    model_deployment,
    names,
    operator_writes,
    other_operators,
    pair_ready_times,
    percentile,
    proc_status,
    progress,
    resource_ready,
    resources_path,
    seconds,
    timed_ready,
    write_json,
)
from modeldeploy_testkit.bench.stages import (
    PATH_STRETCHES,
    PathSample,
    Reading,
    Settling,
    StageFigure,
    between,
    operator_side_ms,
    path_medians,
    reaction_paths,
    read_stages,
    stage_figures,
)
from modeldeploy_testkit.kubeapi import ApiError, KubeAPI
from modeldeploy_testkit.operator_process import AuditLog, OperatorProcess
from modeldeploy_testkit.scripts import REPO_ROOT, cluster_dir
from modeldeploy_testkit.waiting import wait_until

SCALE_RATIO_GOAL = 1.3
LATENCY_P50_GOAL_MS = 10.0
LATENCY_P99_GOAL_MS = 30.0
WRITES_PER_RESOURCE_GOAL = 5.0  # Deployment, Service, PodDisruptionBudget (2 replicas), 2 status writes
CONFLICTS_GOAL = 0
IDLE_WRITES_GOAL = 0
MEMORY_GOAL_MIB = 100.0
REST_MEMORY_GOAL_MIB = 60.0
REFERENCE_LATENCIES = "Argo Rollouts p50 14 ms; Seldon Core v1 p50 136 ms; minimal kopf p50 35 ms (22 ms, short batch)"
SELDON_WRITES_PER_RESOURCE = 19
# Log lines of a healthy run; anything else in the operator's log is reported.
ROUTINE_LOG_LINES = (
    r"^Applied (Deployment|Service) ",
    r"^Scaled Deployment ",
    r"^Deleted Deployment ",
    r"^Status changed ",
    r"^Activity '[a-z_]+' succeeded\.",
    r"^Initial authentication has (been initiated|finished)\.",
    r"^Signal SIGTERM is received\. Operator is stopping\.",
    # Leader election's start and stop, and the health endpoint's address: every run of a leader logs them.
    r"^Serving health address=",
    r"^Waiting to lead ",
    r"^Became leader ",
    r"^Released the lease ",
    # The benchmark deletes its namespaces at the end; the operator learns of it from the watch or a refusal.
    r"^Namespace terminating ",
)
# The audit log is written just after each answer: wait this long before reading up to "now".
AUDIT_LAG_SECONDS = 1.0


def apply_crd() -> None:
    crds = str(REPO_ROOT / "crds")
    applied = kubectl("apply", "--server-side", "--force-conflicts", "--field-manager", "modeldeploy-bench", "-f", crds)
    if applied.returncode != 0:
        raise SystemExit(f"could not apply the CRD: {applied.stderr}")
    waited = kubectl("wait", "--for=condition=Established", "crd/modeldeployments.modeldeploy.io", "--timeout=60s")
    if waited.returncode != 0:
        raise SystemExit(f"the CRD is not Established: {waited.stderr}")


def wait_for_storage(api: KubeAPI, namespace: str) -> None:
    """Just after a CRD is created its storage may answer 429 for a while."""

    def answers() -> bool:
        try:
            api.list(resources_path(namespace))
        except ApiError:
            return False
        return True

    wait_until(answers, timeout=30, interval=0.2, what="the ModelDeployment storage to answer")


def spread(times: list[float]) -> str:
    """first / median / last of some seconds, or n/a."""
    if not times:
        return "n/a"
    ordered = sorted(times)
    return f"{ordered[0]:.1f} / {ordered[len(ordered) // 2]:.1f} / {ordered[-1]:.1f} s ({len(ordered)})"


def milliseconds(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f} ms"


def mib(kib: int | None) -> float | None:
    return None if kib is None else kib / 1024


def mib_text(kib: int | None) -> str:
    return "n/a" if kib is None else f"{kib / 1024:.1f} MiB"


# --- the runs ------------------------------------------------------------------------------------------------------


@dataclass
class ScaleResult:
    run: ScaleRun
    writes: Writes
    wall_seconds: float
    timeline: dict[str, str]
    with_endpoints_seconds: float | None  # every resource Ready and its Service `<name>` listing 2 ready endpoints
    stages: Reading


def scale_run(
    api: KubeAPI, namespace: str, count: int, timeout: float, audit: AuditLog, operator: OperatorProcess
) -> ScaleResult:
    """N ModelDeployments applied by 16 threads; seconds until all are Ready, and the operator's writes meanwhile.

    A second watch, on the namespace's Deployments, tells when each resource's Deployment appeared and when it was
    Available; a third, on its EndpointSlices, when each resource's Service `<name>` listed its 2 ready pods: where
    the time goes between the apply and Ready, and the same readiness as the yardstick's pairs.
    """
    collection = resources_path(namespace)
    tracker = Tracker(api, collection, ready=resource_ready).start()
    children = Tracker(api, deployments_path(namespace), ready=deployment_available, key=instance_of).start()
    endpoints = EndpointsTracker(api, namespace).start()
    resource_names = names("m", count)
    bodies = [model_deployment(name, namespace) for name in resource_names]
    reporter = progress(tracker, count)
    stages_before = read_stages(operator.metric_lines)
    mark = audit.mark()
    try:
        started = time.monotonic()
        run = timed_ready(tracker, count, started, lambda: apply_parallel(api, collection, bodies), timeout)
        end = audit.mark()
        stages = between(stages_before, read_stages(operator.metric_lines))
        wall_seconds = time.monotonic() - started
        if run.seconds is not None:
            # Each resource's Service `<name>` (its others have endpoints too, so count by name). They may come a
            # moment after the status says Ready; that is not in the goal's figure, only beside it.
            wanted = set(resource_names)
            endpoints.wait(lambda: wanted <= endpoints.ready.keys(), max(timeout - wall_seconds, 1.0))
    finally:
        reporter.set()
        tracker.stop()
        children.stop()
        endpoints.stop()
    writes = operator_writes(audit.between(mark, end), {namespace})
    ready_times = tracker.ready_times()
    endpoint_times = {name: at for name, at in endpoints.ready_times().items() if name in ready_times}
    timeline = {
        "resource seen (ADDED)": spread([at - started for at in tracker.added_times().values()]),
        "its Deployment created (ADDED)": spread([at - started for at in children.added_times().values()]),
        "its Deployment Available": spread([at - started for at in children.ready_times().values()]),
        "resource Ready": spread([at - started for at in ready_times.values()]),
        "its Service: 2 ready endpoints": spread([at - started for at in endpoint_times.values()]),
    }
    with_endpoints = all_ready_seconds(pair_ready_times(ready_times, endpoint_times), count, started)
    return ScaleResult(run, writes, wall_seconds, timeline, with_endpoints, stages)


@dataclass
class LatencyResult:
    latencies: list[float]
    writes: Writes
    problems: list[str]
    ready_seconds: dict[str, float]
    paths: dict[str, PathSample]
    stages: Reading


def latency_run(
    api: KubeAPI, namespace: str, samples: int, audit: AuditLog, operator: OperatorProcess
) -> LatencyResult:
    """Create `samples` resources one at a time; milliseconds from each one's ADDED to its Deployment's ADDED."""
    collection = resources_path(namespace)
    resources = Tracker(api, collection, ready=resource_ready).start()
    children = Tracker(api, deployments_path(namespace), key=instance_of).start()
    latencies: list[float] = []
    problems: list[str] = []
    ready_seconds: dict[str, float] = {}
    sample_names = names("lat", samples)
    stages_before = read_stages(operator.metric_lines)
    mark = audit.mark()
    try:
        for name in sample_names:
            created = time.monotonic()
            api.apply(collection, model_deployment(name, namespace), FIELD_MANAGER)
            if not children.wait_added(name, timeout=15):
                problems.append(f"{name}: no Deployment within 15 s")
                continue
            if not resources.wait_ready_key(name, timeout=30):
                problems.append(f"{name}: not Ready within 30 s")
            else:
                ready_seconds[name] = resources.ready_times()[name] - created
            seen = resources.added_times().get(name)
            child = children.added_times()[name]
            if seen is None:
                problems.append(f"{name}: its own ADDED event never arrived")
                continue
            latencies.append((child - seen) * 1000)
            time.sleep(0.1)  # spaced: each one meets an operator with nothing else to do
    finally:
        resources.stop()
        children.stop()
    stages = between(stages_before, read_stages(operator.metric_lines))
    time.sleep(AUDIT_LAG_SECONDS)
    events = list(audit.between(mark, audit.mark()))
    paths = reaction_paths(events, namespace, sample_names, USER_AGENT_PREFIX, OPERATOR_USER_AGENTS)
    seen_wall, child_wall = resources.added_wall_times(), children.added_wall_times()
    for name, path in paths.items():
        path.seen, path.child_seen = seen_wall.get(name), child_wall.get(name)
    return LatencyResult(latencies, operator_writes(events, {namespace}), problems, ready_seconds, paths, stages)


def memory_at_rest(pid: int, timeout: float = 20.0, interval: float = 0.5) -> tuple[dict[str, int], float, bool]:
    """The process's memory once its resident size has stopped moving (Settling), or at `timeout`: (VmRSS and VmHWM
    in KiB, seconds waited, settled)."""
    settling = Settling()
    started = time.monotonic()
    status = proc_status(pid)
    while status:
        if settling.add(status.get("VmRSS", 0)):
            return status, time.monotonic() - started, True
        if time.monotonic() - started >= timeout:
            break
        time.sleep(interval)
        status = proc_status(pid)
    return status, time.monotonic() - started, False


# --- the operator's log and metrics ---------------------------------------------------------------------------------


def log_problems(path: Path, start: int, end: int | None = None) -> tuple[Counter[str], int]:
    """Lines of the operator's log that are not routine, by shape (names and numbers blanked), and their total."""
    with path.open("rb") as handle:
        handle.seek(start)
        data = handle.read(None if end is None else max(end - start, 0))
    shapes: Counter[str] = Counter()
    for raw in data.decode(errors="replace").splitlines():
        line = raw.strip()
        if not line or any(re.search(pattern, line) for pattern in ROUTINE_LOG_LINES):
            continue
        shape = re.sub(r'(namespace|name)="[^"]*"', r'\1="…"', line)
        shape = re.sub(r"\b\d+(\.\d+)?s?\b", "N", shape)
        shapes[shape[:240]] += 1
    return shapes, sum(shapes.values())


def writes_metric(operator: OperatorProcess) -> float:
    return sum(operator.metric_lines("modeldeploy_api_writes_total").values())


def writes_counter(operator: OperatorProcess) -> Counter[str]:
    """The operator's own count of its writes (modeldeploy_api_writes_total), by verb and kind ("apply Service")."""
    by_write: Counter[str] = Counter()
    for labels, value in operator.metric_lines("modeldeploy_api_writes_total").items():
        verb = re.search(r'verb="([^"]*)"', labels)
        kind = re.search(r'kind="([^"]*)"', labels)
        by_write[f"{verb.group(1) if verb else '?'} {kind.group(1) if kind else labels}"] += int(value)
    return by_write


def counter_text(counted: Counter[str], resources: int) -> str:
    return ", ".join(f"{write} {value / resources:.2f}" for write, value in sorted(counted.items()) if value) or "none"


def counter_without_events(counted: Counter[str]) -> int:
    return sum(value for write, value in counted.items() if not write.endswith(" Event"))


def stage_lines(figures: list[StageFigure]) -> list[str]:
    lines = [f"  {'stage':<48}{'p50':>11}{'mean':>11}{'count':>9}"]
    for figure in figures:
        lines.append(
            f"  {figure.label:<48}{milliseconds(figure.p50_ms):>11}{milliseconds(figure.mean_ms):>11}{figure.count:>9}"
        )
    return lines


def run_runtime_benchmark() -> None:
    """The runtime's benchmark, in a process of its own (it loads scikit-learn and starts a model server)."""
    command = [sys.executable, "-m", "modeldeploy_testkit.bench", "runtime"]
    log("running the runtime benchmark")
    try:
        result = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=600, check=False)
    except subprocess.TimeoutExpired:
        log("the runtime benchmark did not finish within 600 s")
        return
    print(result.stdout, end="")
    if result.returncode != 0:
        print(result.stderr, end="")
        log(f"the runtime benchmark exited with {result.returncode}")


# --- the report ----------------------------------------------------------------------------------------------------


@dataclass
class Measurements:
    """Everything one run measured; the report and the JSON are made from it alone."""

    count: int
    samples: int
    idle: float
    timeout: float
    yard: PairRun
    scale: ScaleResult
    latency: LatencyResult
    scale_counted: Counter[str]  # the operator's own counter over the scale run ("apply Service" -> writes)
    latency_counted: Counter[str]
    idle_writes: Writes
    idle_metric: float
    rest: dict[str, int]  # VmRSS, VmHWM (KiB) at rest, before any resource
    rest_waited: float
    rest_settled: bool
    at_scale: dict[str, int]  # just after the scale run: N resources Ready
    at_end: dict[str, int]
    cpu_total: float
    cpu_scale: float
    cpu_windows: dict[str, CpuWindow]
    """CPU seconds by process while the yardstick ran and while the scale run did."""
    problem_lines: int
    cleanup_problem_lines: int
    load: str = ""

    @property
    def ratio(self) -> float | None:
        scale, yard = self.scale.run.seconds, self.yard.pairs.seconds
        return scale / yard if scale and yard else None

    def latency_percentiles(self) -> tuple[float, float, float] | None:
        """p50, p99 (nearest rank) and max of the reaction latency, ms."""
        values = self.latency.latencies
        return (percentile(values, 0.5), percentile(values, 0.99), max(values)) if values else None

    def write_runs(self) -> list[tuple[str, Writes, int, Counter[str]]]:
        return [
            (f"scale run, {self.count} at once", self.scale.writes, self.count, self.scale_counted),
            (f"one at a time, {self.samples}", self.latency.writes, self.samples, self.latency_counted),
        ]


def build_report(m: Measurements) -> Report:
    """The table of figures beside their goals."""
    report = Report(f"modeldeploy operator, {m.count} resources of 2 replicas ({m.load})")
    yard_seconds = m.yard.pairs.seconds
    run = m.scale.run
    ratio = m.ratio
    report.add(
        f"yardstick: {m.count} bare Deployment + Service pairs ready",
        seconds(yard_seconds) if yard_seconds else f"{m.yard.pairs.ready}/{m.count} ready at {m.timeout:.0f} s",
        note=(
            f"Deployments Available {seconds(m.yard.deployments_seconds)}, "
            f"Services with 2 ready endpoints {seconds(m.yard.endpoints_seconds)}"
        ),
    )
    report.add(
        f"scale: {m.count} ModelDeployments Ready",
        seconds(run.seconds) if run.seconds else f"{run.ready}/{m.count} Ready at {m.timeout:.0f} s",
        f"<= {SCALE_RATIO_GOAL}x yardstick = {seconds(yard_seconds * SCALE_RATIO_GOAL if yard_seconds else None)}",
        ratio is not None and ratio <= SCALE_RATIO_GOAL,
        note=f"{ratio:.2f}x the yardstick" if ratio else "no ratio: a run did not finish",
    )
    like_pairs = m.scale.with_endpoints_seconds
    report.add(
        "  ... and their Services with 2 ready endpoints",
        seconds(like_pairs),
        note=f"{like_pairs / yard_seconds:.2f}x the yardstick, readiness as the pairs'"
        if like_pairs and yard_seconds
        else "",
    )

    found = m.latency_percentiles()
    if found is not None:
        p50, p99, worst = found
        report.add(
            f"reaction latency p50 ({len(m.latency.latencies)} samples)",
            f"{p50:.1f} ms",
            f"<= {LATENCY_P50_GOAL_MS:.0f} ms",
            p50 <= LATENCY_P50_GOAL_MS,
        )
        report.add(
            "reaction latency p99",
            f"{p99:.1f} ms",
            f"<= {LATENCY_P99_GOAL_MS:.0f} ms",
            p99 <= LATENCY_P99_GOAL_MS,
            note="nearest rank: the maximum, with fewer than 100 samples" if len(m.latency.latencies) < 100 else "",
        )
        report.add("reaction latency max", f"{worst:.1f} ms")
        report.add("  references (same control plane)", "", note=REFERENCE_LATENCIES)
    else:
        report.add("reaction latency", "no samples", f"p50 <= {LATENCY_P50_GOAL_MS:.0f} ms", False)

    for label, writes, resources, own in m.write_runs():
        per = writes.without_events / resources
        report.add(
            f"operator writes per new resource, children + status ({label})",
            f"{per:.2f}",
            f"<= {WRITES_PER_RESOURCE_GOAL:.0f}",
            per <= WRITES_PER_RESOURCE_GOAL,
            note=(
                f"Events {writes.by_kind.get('Event', 0) / resources:.2f} more; operator's own counter "
                f"{counter_without_events(own) / resources:.2f}; Seldon Core v1 ~{SELDON_WRITES_PER_RESOURCE}"
            ),
        )
        report.add(
            f"409 Conflict answers ({label})",
            str(writes.conflicts),
            str(CONFLICTS_GOAL),
            writes.conflicts <= CONFLICTS_GOAL,
        )
        if writes.errors:
            report.add(f"other error answers ({label})", json.dumps(dict(writes.errors)), "none", False)
    report.add(
        f"operator writes in {m.idle:.0f} s idle (audit log)",
        str(m.idle_writes.total),
        str(IDLE_WRITES_GOAL),
        m.idle_writes.total <= IDLE_WRITES_GOAL,
        note=f"operator's own counter: {m.idle_metric:.0f}" + (" [--quick window]" if m.idle < 60 else ""),
    )
    rest_mib = mib(m.rest.get("VmRSS"))
    report.add(
        "operator memory at rest, no resource (VmRSS)",
        f"{rest_mib:.1f} MiB" if rest_mib is not None else "n/a",
        f"<= {REST_MEMORY_GOAL_MIB:.0f} MiB",
        rest_mib is not None and rest_mib <= REST_MEMORY_GOAL_MIB,
        note=f"{'settled' if m.rest_settled else 'NOT settled'} after {m.rest_waited:.1f} s; "
        f"peak so far {mib_text(m.rest.get('VmHWM'))}",
    )
    peak_mib = mib(m.at_scale.get("VmHWM"))
    report.add(
        f"operator peak memory at {m.count} resources (VmHWM)",
        f"{peak_mib:.1f} MiB" if peak_mib is not None else "n/a",
        f"<= {MEMORY_GOAL_MIB:.0f} MiB",
        peak_mib is not None and peak_mib <= MEMORY_GOAL_MIB,
        note=f"RSS then {mib_text(m.at_scale.get('VmRSS'))}; at the end (+{m.samples} resources, idle): "
        f"peak {mib_text(m.at_end.get('VmHWM'))}, RSS {mib_text(m.at_end.get('VmRSS'))}",
    )
    report.add(
        "operator CPU seconds (whole run; scale run)",
        f"{m.cpu_total:.1f} s; {m.cpu_scale:.1f} s",
        note=f"scale run lasted {m.scale.wall_seconds:.0f} s wall",
    )
    report.add(
        "operator log: lines that are not routine",
        str(m.problem_lines),
        "0",
        m.problem_lines == 0,
        note=f"{m.cleanup_problem_lines} more during cleanup" if m.cleanup_problem_lines else "",
    )
    return report


def detail_lines(m: Measurements) -> list[str]:
    """Below the table: where a reaction's time goes, and the writes per new resource by kind and verb."""
    latency_stages = stage_figures(m.latency.stages)
    medians = path_medians(m.latency.paths.values())
    operator_part = operator_side_ms(latency_stages)
    to_write = medians["stored -> operator's Deployment write received"]
    lines = [
        "",
        f"Where a reaction's time goes ({len(m.latency.latencies)} resources one at a time; medians):",
        "  the way, from the audit log (API server's timestamps) and this process's watches (time.time()):",
    ]
    lines += [f"    {label:<58}{milliseconds(medians[label]):>11}" for label in PATH_STRETCHES]
    lines.append(
        "  inside the operator, from its histograms over the same run (every event and pass, not the first only):"
    )
    lines += ["  " + line for line in stage_lines(latency_stages)]
    if to_write is not None and operator_part is not None:
        lines.append(
            f"  'stored -> operator's Deployment write received' less the operator's stages on the way (hand-off, "
            f"queue, thread, compute): {to_write - operator_part:.2f} ms, the watch delivering the event, kopf's "
            f"dispatch to the handler, and the write before the Deployment's (its Service, created first) "
            f"(approximate: medians do not add exactly, and compute is the median of every pass, a resource's first "
            f"one costing more)"
        )
    lines += [
        "",
        "CPU seconds by process, from the first apply until all were ready (/proc; the machine's cores are busy",
        "in both, so a run lasts as long as the work of all of them takes, and the difference is whose work it is):",
    ]
    lines += cpu_lines(m.cpu_windows, os.cpu_count() or 1)
    lines += ["", f"Inside the operator during the scale run ({m.count} at once):"]
    lines += stage_lines(stage_figures(m.scale.stages))
    for label, writes, resources, own in m.write_runs():
        lines += ["", f"Operator writes per new resource until Ready ({label}), audit log:"]
        lines += writes.table(resources)
        lines.append(
            "  (server-side apply, scale and status merge patch are all `patch` there); the operator's own counter: "
            + counter_text(own, resources)
        )
        if writes.elsewhere:
            lines.append(f"  outside the benchmark's namespaces: {writes.elsewhere}")
    if m.idle_writes.total:
        lines += ["", "Idle-window writes (total, not per resource):"]
        lines += m.idle_writes.table(1)
    lines += ["", "Scale run timeline, seconds after the first apply (first / median / last, count):"]
    lines += [f"  {label:<32}{value}" for label, value in m.scale.timeline.items()]
    if m.scale.run.errors:
        lines.append(f"{len(m.scale.run.errors)} ModelDeployments could not be applied; first: {m.scale.run.errors[0]}")
    if m.latency.ready_seconds:
        ready_values = list(m.latency.ready_seconds.values())
        lines.append(
            f"One-at-a-time resources, create to Ready: p50 {percentile(ready_values, 0.5) * 1000:.0f} ms, "
            f"max {max(ready_values) * 1000:.0f} ms"
        )
    return lines


def figures_json(m: Measurements, report: Report) -> dict[str, Any]:
    found = m.latency_percentiles()
    ratio = m.ratio
    return {
        "resources": m.count,
        "latency_samples": m.samples,
        "idle_seconds": m.idle,
        "goals": {
            "scale_ratio": SCALE_RATIO_GOAL,
            "latency_p50_ms": LATENCY_P50_GOAL_MS,
            "latency_p99_ms": LATENCY_P99_GOAL_MS,
            "writes_per_resource": WRITES_PER_RESOURCE_GOAL,
            "conflicts": CONFLICTS_GOAL,
            "idle_writes": IDLE_WRITES_GOAL,
            "memory_peak_mib": MEMORY_GOAL_MIB,
            "memory_at_rest_mib": REST_MEMORY_GOAL_MIB,
        },
        "yardstick_bare_pairs_parallel_seconds": m.yard.pairs.seconds,
        "yardstick": m.yard.as_json(),
        "scale_seconds": m.scale.run.seconds,
        "scale_ratio_to_yardstick": round(ratio, 3) if ratio else None,
        "scale_with_endpoints_seconds": m.scale.with_endpoints_seconds,
        "scale": {**m.scale.run.as_json(), "timeline": m.scale.timeline},
        "latency_ms": {
            "p50": round(found[0], 2) if found else None,
            "p99": round(found[1], 2) if found else None,
            "max": round(found[2], 2) if found else None,
            "samples": [round(value, 2) for value in m.latency.latencies],
            "problems": m.latency.problems,
        },
        "reaction_path_ms": {
            "medians": path_medians(m.latency.paths.values()),
            "samples": {name: path.stretches() for name, path in m.latency.paths.items()},
        },
        "stages_ms": {
            "one_at_a_time": [vars(figure) for figure in stage_figures(m.latency.stages)],
            "scale": [vars(figure) for figure in stage_figures(m.scale.stages)],
        },
        "writes_per_resource": {
            key: {
                **writes.as_json(),  # totals
                "per_resource_children_and_status": round(writes.without_events / resources, 3),
                "per_resource_with_events": round(writes.total / resources, 3),
                "operator_counter": dict(own),
            }
            for key, (_, writes, resources, own) in zip(("scale", "one_at_a_time"), m.write_runs(), strict=True)
        },
        "idle_writes": {**m.idle_writes.as_json(), "operator_counter": m.idle_metric},
        "operator_memory_mib": {
            "at_rest": {
                "rss": mib(m.rest.get("VmRSS")),
                "peak": mib(m.rest.get("VmHWM")),
                "settled": m.rest_settled,
                "waited_seconds": round(m.rest_waited, 1),
            },
            "at_scale": {"peak": mib(m.at_scale.get("VmHWM")), "rss": mib(m.at_scale.get("VmRSS"))},
            "at_end": {"peak": mib(m.at_end.get("VmHWM")), "rss": mib(m.at_end.get("VmRSS"))},
        },
        "operator_cpu_seconds": {"total": round(m.cpu_total, 2), "scale_run": round(m.cpu_scale, 2)},
        "cpu_seconds_by_process": {
            label: {"wall": round(window.wall, 1), **{k: round(v, 2) for k, v in window.seconds.items()}}
            for label, window in m.cpu_windows.items()
        },
        "operator_log_problems_cleanup": {"lines": m.cleanup_problem_lines},
        "short_of_goal": [row.figure for row in report.short()],
        "load": m.load,
    }


# --- the benchmark --------------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = options("scale", __doc__)
    parser.add_argument("--resources", type=int, help="ModelDeployments (and bare pairs) at once; default 1000")
    parser.add_argument("--quick", action="store_true", help="100 resources, 20 latency samples, 10 s idle window")
    parser.add_argument("--latency-samples", type=int, help="resources created one at a time (default 100)")
    parser.add_argument("--idle-seconds", type=float, help="the idle window (default 60)")
    parser.add_argument("--timeout", type=float, help="seconds to wait for all resources to be ready, per run")
    parser.add_argument("--no-runtime", action="store_true", help="do not run the runtime benchmark at the end")
    parser.add_argument(
        "--memtrace",
        action="store_true",
        help="run the operator under allocation tracing and write where its memory goes to "
        ".cluster/bench/memtrace.txt (slower: its timings and memory figures are not the operator's own)",
    )
    args = parser.parse_args(argv)
    count: int = args.resources or (100 if args.quick else 1000)
    samples: int = args.latency_samples or (20 if args.quick else 100)
    idle: float = args.idle_seconds if args.idle_seconds is not None else (10.0 if args.quick else 60.0)
    timeout: float = args.timeout or max(120.0, 0.45 * count)
    began = time.monotonic()

    log(f"bench: {count} resources, {samples} latency samples, {idle:.0f} s idle window; {load_note()}")
    api = bench_api()
    others = other_operators()
    if others:
        log("WARNING: other operators are running; they act on these resources too, so writes are not ours alone:")
        for line in others:
            log(f"  {line}")
    apply_crd()

    suffix = uuid.uuid4().hex[:6]
    yard_namespace = f"bench-yard-{suffix}"
    scale_namespace = f"bench-md-{suffix}"
    latency_namespace = f"bench-md-latency-{suffix}"

    # 1. the yardstick, in this run
    log(f"yardstick: {count} bare Deployment + Service pairs, 16 threads, namespace {yard_namespace}")
    try:
        yard_before, wall_before = cpu_by_process({"benchmark": os.getpid()}), time.monotonic()
        yard = bare_pairs_parallel(api, yard_namespace, count, timeout)
        cpu_yard = CpuWindow.between(
            yard_before, cpu_by_process({"benchmark": os.getpid()}), time.monotonic() - wall_before
        )
        log(
            f"  all ready after {seconds(yard.pairs.seconds)} ({yard.pairs.ready}/{count}; Deployments Available "
            f"{seconds(yard.deployments_seconds)}, Services' endpoints {seconds(yard.endpoints_seconds)})"
        )
    finally:
        cleanup_namespace(api, yard_namespace)

    # 2. the operator
    log_path = cluster_dir() / "logs" / "operator-bench.log"
    log_path.write_bytes(b"")
    memtrace_report = cluster_dir() / "bench" / "memtrace.txt" if args.memtrace else None
    if memtrace_report is not None:
        memtrace_report.parent.mkdir(parents=True, exist_ok=True)
        log(f"the operator runs under allocation tracing: figures below are slowed down; report {memtrace_report}")
    operator = bench_operator(log_path, [scale_namespace, latency_namespace], memtrace_report)
    monitor = OtherOperatorsMonitor()
    audit = AuditLog()
    try:
        create_namespace(api, scale_namespace)
        create_namespace(api, latency_namespace)
        wait_for_storage(api, scale_namespace)
        operator.start()
        pid = operator.pid
        assert pid is not None
        log(f"operator started (pid {pid}), log {log_path.relative_to(REPO_ROOT)}")
        monitor.mine = pid
        monitor.start()
        time.sleep(1.0)  # its watches are established after the metrics endpoint answers
        rest, rest_waited, rest_settled = memory_at_rest(pid)
        log(f"  at rest with no resource: RSS {mib_text(rest.get('VmRSS'))} after {rest_waited:.1f} s")

        cpu_before = cpu_seconds(pid) or 0.0
        counted = writes_counter(operator)
        log(f"scale: {count} ModelDeployments, 16 threads, namespace {scale_namespace}")
        processes = {"benchmark": os.getpid(), "operator": pid}
        all_before, wall_before = cpu_by_process(processes), time.monotonic()
        scale = scale_run(api, scale_namespace, count, timeout, audit, operator)
        cpu_scale = (cpu_seconds(pid) or 0.0) - cpu_before
        cpu_scale_run = CpuWindow.between(all_before, cpu_by_process(processes), time.monotonic() - wall_before)
        scale_counted = writes_counter(operator) - counted
        at_scale = proc_status(pid)
        log(f"  all Ready after {seconds(scale.run.seconds)} ({scale.run.ready}/{count})")
        if scale.run.seconds is None:
            log(f"  queue depth {operator.metric('modeldeploy_queue_depth')}; {count - scale.run.ready} not Ready")

        log(f"reaction latency: {samples} ModelDeployments one at a time, namespace {latency_namespace}")
        counted = writes_counter(operator)
        latency = latency_run(api, latency_namespace, samples, audit, operator)
        latency_counted = writes_counter(operator) - counted
        for problem in latency.problems:
            log(f"  {problem}")

        log(f"idle: waiting {idle:.0f} s on purpose, counting the operator's writes while nothing changes")
        time.sleep(2.0)
        idle_mark = audit.mark()
        idle_metric_before = writes_metric(operator)
        time.sleep(idle)
        idle_metric = writes_metric(operator) - idle_metric_before
        time.sleep(AUDIT_LAG_SECONDS)
        idle_writes = operator_writes(audit.between(idle_mark), {scale_namespace, latency_namespace})

        at_end = proc_status(pid)
        cpu_total = cpu_seconds(pid) or 0.0
        reconciles = operator.metric_lines("modeldeploy_reconcile_total")
        api_writes_metric = operator.metric_lines("modeldeploy_api_writes_total")
        log_end = log_path.stat().st_size
        problems, problem_lines = log_problems(log_path, 0, log_end)
        resources_left = count_items(api, resources_path(scale_namespace))
    finally:
        log("cleaning up: deleting the namespaces, then stopping the operator")
        for namespace in (scale_namespace, latency_namespace):
            delete_namespace(api, namespace, timeout=0)
        cleanup = {namespace: cleanup_namespace(api, namespace) for namespace in (scale_namespace, latency_namespace)}
        operator.stop()
        others += [line for line in monitor.stop() if line not in others]
    cleanup_problems, cleanup_problem_lines = log_problems(log_path, log_end)

    measured = Measurements(
        count=count,
        samples=samples,
        idle=idle,
        timeout=timeout,
        yard=yard,
        scale=scale,
        latency=latency,
        scale_counted=scale_counted,
        latency_counted=latency_counted,
        idle_writes=idle_writes,
        idle_metric=idle_metric,
        rest=rest,
        rest_waited=rest_waited,
        rest_settled=rest_settled,
        at_scale=at_scale,
        at_end=at_end,
        cpu_total=cpu_total,
        cpu_scale=cpu_scale,
        cpu_windows={"yardstick": cpu_yard, "scale run": cpu_scale_run},
        problem_lines=problem_lines,
        cleanup_problem_lines=cleanup_problem_lines,
        load=load_note(),
    )
    report = build_report(measured)
    report.print()
    for line in detail_lines(measured):
        print(line)
    if problems or cleanup_problems:
        print()
        print(f"Operator log ({log_path.relative_to(REPO_ROOT)}), lines that are not routine, by shape:")
        for shape, number in problems.most_common(15):
            print(f"  {number:>6} x {shape}")
        for shape, number in cleanup_problems.most_common(10):
            print(f"  {number:>6} x (cleanup) {shape}")
    print()
    print(f"Reconcile passes (modeldeploy_reconcile_total): {reconciles}")
    if others:
        print("WARNING: other operators ran during this run; the audit-log write counts include theirs:")
        for line in others:
            print(f"  {line}")
    print("The machine has 2 cores and is shared: other work running at the same time makes these figures noisy.")

    figures = figures_json(measured, report)
    figures.update(
        {
            "operator_reconciles": reconciles,
            "operator_api_writes_total": api_writes_metric,
            "operator_log_problems": {"lines": problem_lines, "shapes": dict(problems.most_common(20))},
            "resources_left_before_cleanup": resources_left,
            "cleanup_seconds": {namespace: round(value[0], 1) for namespace, value in cleanup.items()},
            "other_operators": others,
            "wall_seconds": round(time.monotonic() - began, 1),
        }
    )
    write_json(bench_dir() / "operator.json", figures)
    log(f"operator benchmarks took {time.monotonic() - began:.0f} s")

    if not args.no_runtime:
        print()
        run_runtime_benchmark()
    return 0
