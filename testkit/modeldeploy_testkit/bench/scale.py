"""Operator benchmarks on the local control plane (`make bench`): every figure printed beside its goal.

    .venv/bin/python -m modeldeploy_testkit.bench scale [--resources 1000] [--quick]

With the control plane up (`make cluster-up`), applies the CRD, then:

1. Yardstick: N bare Deployments of 2 replicas applied by 16 threads, until all are Available (same method as
   the `cluster` benchmark), in a namespace of its own that is deleted before the next step.
2. Scale: the operator (`modeldeploy run`, watching only the benchmark's namespaces) and N ModelDeployments of 2
   replicas applied the same way; seconds until all N are Ready, from a watch on their status. Goal <= 1.2x (1).
3. Reaction latency: new ModelDeployments created one at a time; for each, the time from its ADDED watch event to
   the ADDED watch event of its Deployment, both received by this process (two watch threads, time.monotonic()).
4. API writes per new resource until Ready (audit log: user agents modeldeploy/ and kopf/), by kind, and 409s.
5. API writes in an idle window after everything is Ready (60 s by default: the script waits on purpose).
6. The operator's peak resident memory (VmHWM) and CPU seconds; problems in its log.
Then deletes the namespaces, waits for them to go, stops the operator, writes .cluster/bench/operator.json and
runs the `runtime` benchmark.

--quick: 100 resources, 20 latency samples, a 10 s idle window: a couple of minutes.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

from modeldeploy_testkit.bench import options
from modeldeploy_testkit.bench.common import (
    FIELD_MANAGER,
    OtherOperatorsMonitor,
    Report,
    ScaleRun,
    Tracker,
    Writes,
    apply_parallel,
    bare_parallel,
    bench_api,
    bench_dir,
    bench_operator,
    cleanup_namespace,
    count_items,
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
    percentile,
    proc_status,
    progress,
    resource_ready,
    resources_path,
    seconds,
    timed_ready,
    write_json,
)
from modeldeploy_testkit.kubeapi import ApiError, KubeAPI
from modeldeploy_testkit.operator_process import AuditLog, OperatorProcess
from modeldeploy_testkit.scripts import REPO_ROOT, cluster_dir
from modeldeploy_testkit.waiting import wait_until

SCALE_RATIO_GOAL = 1.2
LATENCY_P50_GOAL_MS = 20.0
LATENCY_P99_GOAL_MS = 100.0
WRITES_PER_RESOURCE_GOAL = 6.0
IDLE_WRITES_GOAL = 0
MEMORY_GOAL_MIB = 100.0
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
)


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


def scale_run(
    api: KubeAPI, namespace: str, count: int, timeout: float, audit: AuditLog
) -> tuple[ScaleRun, Writes, float, dict[str, str]]:
    """N ModelDeployments applied by 16 threads; seconds until all are Ready, and the operator's writes meanwhile.

    A second watch, on the namespace's Deployments, tells when each resource's Deployment appeared and when it was
    Available: where the time goes between the apply and Ready.
    """
    collection = resources_path(namespace)
    tracker = Tracker(api, collection, ready=resource_ready).start()
    children = Tracker(api, deployments_path(namespace), ready=deployment_available, key=instance_of).start()
    bodies = [model_deployment(name, namespace) for name in names("m", count)]
    reporter = progress(tracker, count)
    mark = audit.mark()
    try:
        started = time.monotonic()
        run = timed_ready(tracker, count, started, lambda: apply_parallel(api, collection, bodies), timeout)
    finally:
        reporter.set()
        tracker.stop()
        children.stop()
    end = audit.mark()
    writes = operator_writes(audit.between(mark, end), {namespace})
    timeline = {
        "resource seen (ADDED)": spread([at - started for at in tracker.added_times().values()]),
        "its Deployment created (ADDED)": spread([at - started for at in children.added_times().values()]),
        "its Deployment Available": spread([at - started for at in children.ready_times().values()]),
        "resource Ready": spread([at - started for at in tracker.ready_times().values()]),
    }
    return run, writes, time.monotonic() - started, timeline


def latency_run(
    api: KubeAPI, namespace: str, samples: int, audit: AuditLog
) -> tuple[list[float], Writes, list[str], dict[str, float]]:
    """Create `samples` resources one at a time; milliseconds from each one's ADDED to its Deployment's ADDED."""
    collection = resources_path(namespace)
    resources = Tracker(api, collection, ready=resource_ready).start()
    children = Tracker(api, deployments_path(namespace), key=instance_of).start()
    latencies: list[float] = []
    problems: list[str] = []
    ready_seconds: dict[str, float] = {}
    mark = audit.mark()
    try:
        for name in names("lat", samples):
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
    end = audit.mark()
    return latencies, operator_writes(audit.between(mark, end), {namespace}), problems, ready_seconds


def writes_text(writes: Writes, resources: int) -> str:
    kinds = ", ".join(f"{kind} {count / resources:.2f}" for kind, count in sorted(writes.by_kind.items()))
    return kinds or "none"


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


def reconcile_durations(operator: OperatorProcess) -> str:
    """Mean duration of the operator's reconcile passes, from its histogram."""
    total = sum(operator.metric_lines("modeldeploy_reconcile_duration_seconds_sum").values())
    number = sum(operator.metric_lines("modeldeploy_reconcile_duration_seconds_count").values())
    return f"{number:.0f} passes, mean {total / number * 1000:.1f} ms" if number else ""


def writes_counter(operator: OperatorProcess) -> Counter[str]:
    """The operator's own count of its writes (modeldeploy_api_writes_total), by kind."""
    by_kind: Counter[str] = Counter()
    for labels, value in operator.metric_lines("modeldeploy_api_writes_total").items():
        kind = re.search(r'kind="([^"]*)"', labels)
        by_kind[kind.group(1) if kind else labels] += int(value)
    return by_kind


def own_count_note(delta: Counter[str], resources: int) -> str:
    without_events = sum(value for kind, value in delta.items() if kind != "Event")
    return f"operator's own counter: {without_events / resources:.2f}"


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


def main(argv: list[str] | None = None) -> int:
    parser = options("scale", __doc__)
    parser.add_argument("--resources", type=int, help="ModelDeployments (and bare Deployments) at once; default 1000")
    parser.add_argument("--quick", action="store_true", help="100 resources, 20 latency samples, 10 s idle window")
    parser.add_argument("--latency-samples", type=int, help="resources created one at a time (default 50)")
    parser.add_argument("--idle-seconds", type=float, help="the idle window (default 60)")
    parser.add_argument("--timeout", type=float, help="seconds to wait for all resources to be ready, per run")
    parser.add_argument("--no-runtime", action="store_true", help="do not run the runtime benchmark at the end")
    args = parser.parse_args(argv)
    count: int = args.resources or (100 if args.quick else 1000)
    samples: int = args.latency_samples or (20 if args.quick else 50)
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
    log(f"yardstick: {count} bare Deployments, 16 threads, namespace {yard_namespace}")
    try:
        yard = bare_parallel(api, yard_namespace, count, timeout)
        log(f"  all Available after {seconds(yard.seconds)} ({yard.ready}/{count})")
    finally:
        cleanup_namespace(api, yard_namespace)

    # 2. the operator
    log_path = cluster_dir() / "logs" / "operator-bench.log"
    log_path.write_bytes(b"")
    operator = bench_operator(log_path, [scale_namespace, latency_namespace])
    monitor = OtherOperatorsMonitor()
    audit = AuditLog()
    figures: dict[str, Any] = {"resources": count, "latency_samples": samples, "idle_seconds": idle}
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

        cpu_before = cpu_seconds(pid) or 0.0
        counted = writes_counter(operator)
        log(f"scale: {count} ModelDeployments, 16 threads, namespace {scale_namespace}")
        scale, scale_writes, scale_wall, timeline = scale_run(api, scale_namespace, count, timeout, audit)
        cpu_scale = (cpu_seconds(pid) or 0.0) - cpu_before
        scale_counted = writes_counter(operator) - counted
        log(f"  all Ready after {seconds(scale.seconds)} ({scale.ready}/{count})")
        if scale.seconds is None:
            log(f"  queue depth {operator.metric('modeldeploy_queue_depth')}; {count - scale.ready} not Ready")

        log(f"reaction latency: {samples} ModelDeployments one at a time, namespace {latency_namespace}")
        counted = writes_counter(operator)
        latencies, latency_writes, latency_problems, latency_ready = latency_run(api, latency_namespace, samples, audit)
        latency_counted = writes_counter(operator) - counted
        for problem in latency_problems:
            log(f"  {problem}")

        log(f"idle: waiting {idle:.0f} s on purpose, counting the operator's writes while nothing changes")
        time.sleep(2.0)
        idle_mark = audit.mark()
        idle_metric_before = writes_metric(operator)
        time.sleep(idle)
        idle_writes = operator_writes(audit.between(idle_mark), {scale_namespace, latency_namespace})
        idle_metric = writes_metric(operator) - idle_metric_before

        status = proc_status(pid)
        cpu_total = cpu_seconds(pid) or 0.0
        reconciles = operator.metric_lines("modeldeploy_reconcile_total")
        operator_histogram = reconcile_durations(operator)
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

    # --- the report ---------------------------------------------------------------------------------------------
    cluster_json = bench_dir() / "cluster.json"
    earlier = json.loads(cluster_json.read_text()) if cluster_json.exists() else {}
    report = Report(f"modeldeploy operator, {count} resources of 2 replicas ({load_note()})")

    ratio = scale.seconds / yard.seconds if scale.seconds and yard.seconds else None
    report.add(f"yardstick: {count} bare Deployments Available (this run)", seconds(yard.seconds))
    if earlier.get("bare_deployments_1000_parallel_seconds") and count == 1000:
        report.add(
            "yardstick from `make bench-cluster` (earlier)",
            seconds(earlier["bare_deployments_1000_parallel_seconds"]),
            note="for reference only",
        )
    report.add(
        f"scale: {count} ModelDeployments Ready",
        seconds(scale.seconds) if scale.seconds else f"{scale.ready}/{count} Ready at {timeout:.0f} s",
        f"<= {SCALE_RATIO_GOAL}x yardstick = {seconds(yard.seconds * SCALE_RATIO_GOAL if yard.seconds else None)}",
        ratio is not None and ratio <= SCALE_RATIO_GOAL,
        note=f"{ratio:.2f}x the yardstick" if ratio else "",
    )
    p50: float | None = None
    p99: float | None = None
    worst: float | None = None
    if latencies:
        p50, p99, worst = percentile(latencies, 0.5), percentile(latencies, 0.99), max(latencies)
        report.add(
            f"reaction latency p50 ({len(latencies)} samples)",
            f"{p50:.1f} ms",
            f"<= {LATENCY_P50_GOAL_MS:.0f} ms",
            p50 <= LATENCY_P50_GOAL_MS,
        )
        report.add(
            "reaction latency p99",
            f"{p99:.1f} ms",
            f"<= {LATENCY_P99_GOAL_MS:.0f} ms",
            p99 <= LATENCY_P99_GOAL_MS,
            note="nearest rank: the maximum, with fewer than 100 samples" if len(latencies) < 100 else "",
        )
        report.add("reaction latency max", f"{worst:.1f} ms")
        report.add("  references (same control plane)", "", note=REFERENCE_LATENCIES)
    else:
        report.add("reaction latency", "no samples", f"p50 <= {LATENCY_P50_GOAL_MS:.0f} ms", False)
    for label, writes, resources, own in (
        (f"scale run, {count} at once", scale_writes, count, scale_counted),
        (f"one at a time, {samples}", latency_writes, samples, latency_counted),
    ):
        per = writes.without_events / resources
        report.add(
            f"API writes per resource until Ready, no Events ({label})",
            f"{per:.2f}",
            f"<= {WRITES_PER_RESOURCE_GOAL:.0f}",
            per <= WRITES_PER_RESOURCE_GOAL,
            note=f"{own_count_note(own, resources)}; Seldon Core v1 ~{SELDON_WRITES_PER_RESOURCE}",
        )
        report.add(
            f"API writes per resource until Ready, with Events ({label})",
            f"{writes.total / resources:.2f}",
            note=writes_text(writes, resources),
        )
        report.add(f"409 Conflict answers ({label})", str(writes.conflicts), "0", writes.conflicts == 0)
        if writes.errors:
            report.add(f"other error answers ({label})", json.dumps(dict(writes.errors)), "none", False)
    report.add(
        f"API writes in {idle:.0f} s idle (audit log)",
        str(idle_writes.total),
        str(IDLE_WRITES_GOAL),
        idle_writes.total <= IDLE_WRITES_GOAL,
        note=f"operator's own counter: {idle_metric:.0f}" + (" [--quick window]" if idle < 60 else ""),
    )
    peak = status.get("VmHWM", 0) / 1024
    report.add(
        "operator peak resident memory (VmHWM)",
        f"{peak:.1f} MiB",
        f"<= {MEMORY_GOAL_MIB:.0f} MiB",
        bool(status) and peak <= MEMORY_GOAL_MIB,
        note=f"RSS at the end {status.get('VmRSS', 0) / 1024:.1f} MiB",
    )
    report.add(
        "operator CPU seconds (whole run; scale run)",
        f"{cpu_total:.1f} s; {cpu_scale:.1f} s",
        note=f"scale run lasted {scale_wall:.0f} s wall",
    )
    report.add(
        "operator log: lines that are not routine",
        str(problem_lines),
        "0",
        problem_lines == 0,
        note=f"{cleanup_problem_lines} more during cleanup" if cleanup_problem_lines else "",
    )
    report.print()

    if problems or cleanup_problems:
        print()
        print(f"Operator log ({log_path.relative_to(REPO_ROOT)}), lines that are not routine, by shape:")
        for shape, number in problems.most_common(15):
            print(f"  {number:>6} x {shape}")
        for shape, number in cleanup_problems.most_common(10):
            print(f"  {number:>6} x (cleanup) {shape}")
    print()
    print("Scale run timeline, seconds after the first apply (first / median / last, count):")
    for label, value in timeline.items():
        print(f"  {label:<32}{value}")
    if operator_histogram:
        print(f"  reconcile passes: {operator_histogram}")
    if scale.errors:
        print(f"\n{len(scale.errors)} ModelDeployments could not be applied; first: {scale.errors[0]}")
    print()
    print(f"Reconcile passes (modeldeploy_reconcile_total): {reconciles}")
    print(f"Writes by the operator's own counter (modeldeploy_api_writes_total): {api_writes_metric}")
    print(
        f"Writes in the scale run by kind: {dict(scale_writes.by_kind)}; by verb: {dict(scale_writes.by_verb)}; "
        f"outside the benchmark's namespaces: {scale_writes.elsewhere}"
    )
    if idle_writes.total:
        print(f"Idle-window writes by kind: {dict(idle_writes.by_kind)}")
    if latency_ready:
        ready_values = list(latency_ready.values())
        print(
            f"One-at-a-time resources, create to Ready: p50 {percentile(ready_values, 0.5) * 1000:.0f} ms, "
            f"max {max(ready_values) * 1000:.0f} ms"
        )
    if others:
        print("WARNING: other operators ran during this run; the audit-log write counts include theirs:")
        for line in others:
            print(f"  {line}")
    print("The machine has 2 cores and is shared: other work running at the same time makes these figures noisy.")

    figures.update(
        {
            "yardstick_bare_deployments_parallel_seconds": yard.seconds,
            "yardstick": yard.as_json(),
            "yardstick_from_cluster_json": earlier.get("bare_deployments_1000_parallel_seconds"),
            "scale_seconds": scale.seconds,
            "scale_ratio_to_yardstick": round(ratio, 3) if ratio else None,
            "scale": {**scale.as_json(), "timeline": timeline},
            "latency_ms": {
                "p50": round(p50, 2) if p50 is not None else None,
                "p99": round(p99, 2) if p99 is not None else None,
                "max": round(worst, 2) if worst is not None else None,
                "samples": [round(value, 2) for value in latencies],
                "problems": latency_problems,
            },
            "writes_per_resource": {
                "scale": {
                    "operator_counter": dict(scale_counted),
                    "without_events": round(scale_writes.without_events / count, 3),
                    "with_events": round(scale_writes.total / count, 3),
                    **scale_writes.as_json(),
                },
                "one_at_a_time": {
                    "operator_counter": dict(latency_counted),
                    "without_events": round(latency_writes.without_events / samples, 3),
                    "with_events": round(latency_writes.total / samples, 3),
                    **latency_writes.as_json(),
                },
            },
            "idle_writes": {**idle_writes.as_json(), "operator_counter": idle_metric},
            "operator_memory_mib": {"peak": round(peak, 1), "rss": round(status.get("VmRSS", 0) / 1024, 1)},
            "operator_cpu_seconds": {"total": round(cpu_total, 2), "scale_run": round(cpu_scale, 2)},
            "operator_reconciles": reconciles,
            "operator_log_problems": {"lines": problem_lines, "shapes": dict(problems.most_common(20))},
            "operator_log_problems_cleanup": {"lines": cleanup_problem_lines},
            "resources_left_before_cleanup": resources_left,
            "cleanup_seconds": {namespace: round(value[0], 1) for namespace, value in cleanup.items()},
            "short_of_goal": [row.figure for row in report.short()],
            "other_operators": others,
            "load": load_note(),
            "wall_seconds": round(time.monotonic() - began, 1),
        }
    )
    write_json(bench_dir() / "operator.json", figures)
    log(f"operator benchmarks took {time.monotonic() - began:.0f} s")

    if not args.no_runtime:
        print()
        run_runtime_benchmark()
    return 0
