"""The control plane's own yardstick (`make bench-cluster`).

    .venv/bin/python -m modeldeploy_testkit.bench cluster [--count 1000] [--skip-up]

1. Warm `cluster-up`: testkit/scripts/cluster-down.sh, then cluster-up.sh timed, with the binaries already cached.
   This STOPS the running control plane (and anything recorded in .cluster/pids/); --skip-up leaves it alone.
2. 1,000 bare Deployments of 2 replicas until all are Available, in a fresh namespace each time, two ways: one
   `kubectl apply --server-side` of a file holding all of them (serial), and 16 client threads doing server-side
   apply (parallel). A watch on the namespace's Deployments records when each one first becomes Available.
3. Peak resident memory of etcd, kube-apiserver, kube-controller-manager, kube-scheduler and kwok.

Prints a table and writes .cluster/bench/cluster.json, which the `scale` benchmark shows beside its own figures.
"""

from __future__ import annotations

import os
import re
import subprocess
import time
import uuid
from typing import Any

from modeldeploy_testkit.bench import options
from modeldeploy_testkit.bench.common import (
    Report,
    ScaleRun,
    Tracker,
    bare_deployment,
    bare_parallel,
    bench_api,
    bench_dir,
    cleanup_namespace,
    component_memory,
    create_namespace,
    deployment_available,
    deployments_path,
    kubectl,
    load_note,
    log,
    names,
    other_operators,
    print_component_memory,
    progress,
    seconds,
    write_json,
    write_yaml_stream,
)
from modeldeploy_testkit.kubeapi import KubeAPI
from modeldeploy_testkit.scripts import SCRIPTS, script_value

CLUSTER_UP_GOAL_SECONDS = 15.0


def warm_cluster_up() -> dict[str, Any]:
    """Stop the control plane, then time starting it again from the cached binaries."""
    for binary in ("kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubectl"):
        if not os.access(os.path.join(script_value("KUBERNETES_BIN"), binary), os.X_OK):
            raise SystemExit(f"{binary} is not built: run `make tools` first (this measures a warm start)")
    others = other_operators()
    if others:
        log("note: operators are running and will lose their API server for a while:\n  " + "\n  ".join(others))
    log("stopping the control plane (cluster-down.sh)")
    down = subprocess.run([str(SCRIPTS / "cluster-down.sh")], capture_output=True, text=True, check=False)
    if down.returncode != 0:
        raise SystemExit(f"cluster-down.sh failed:\n{down.stderr}")
    log("starting it again, timed (cluster-up.sh)")
    started = time.monotonic()
    up = subprocess.run([str(SCRIPTS / "cluster-up.sh")], capture_output=True, text=True, check=False)
    elapsed = time.monotonic() - started
    if up.returncode != 0:
        raise SystemExit(f"cluster-up.sh failed after {elapsed:.1f}s:\n{up.stderr}")
    reported = re.search(r"cluster ready in (\d+) ms", up.stderr)
    log(f"  cluster-up.sh took {elapsed:.1f}s")
    return {
        "seconds": round(elapsed, 2),
        "script_reported_seconds": int(reported.group(1)) / 1000 if reported else None,
    }


def bare_serial(api: KubeAPI, namespace: str, count: int, timeout: float) -> tuple[ScaleRun, float]:
    """One `kubectl apply --server-side -f` of a file with `count` Deployments; seconds until all are Available."""
    create_namespace(api, namespace)
    path = bench_dir() / f"bare-deployments-{count}.yaml"
    write_yaml_stream(path, (bare_deployment(name, namespace) for name in names("d", count)))
    tracker = Tracker(api, deployments_path(namespace), ready=deployment_available).start()
    reporter = progress(tracker, count)
    try:
        started = time.monotonic()
        applied = kubectl("apply", "--server-side", "--field-manager", "modeldeploy-bench", "-f", str(path))
        kubectl_seconds = time.monotonic() - started
        if applied.returncode != 0:
            log(f"  kubectl apply failed ({applied.returncode}): {applied.stderr.strip()[:500]}")
        log(f"  kubectl apply returned after {kubectl_seconds:.1f}s")
        done = tracker.wait_ready(count, max(timeout - kubectl_seconds, 1.0))
        times = sorted(at - started for at in tracker.ready_times().values())
        run = ScaleRun(
            count=count,
            seconds=round(times[count - 1], 3) if done and len(times) >= count else None,
            ready=len(times),
            submitted_seconds=kubectl_seconds,
            errors=[applied.stderr.strip()[:300]] if applied.returncode != 0 else [],
            retries=0,
            first_ready_seconds=round(times[0], 3) if times else None,
            p50_ready_seconds=round(times[len(times) // 2], 3) if times else None,
        )
        return run, kubectl_seconds
    finally:
        reporter.set()
        tracker.stop()
        path.unlink(missing_ok=True)


def main(argv: list[str] | None = None) -> int:
    parser = options("cluster", __doc__)
    parser.add_argument("--count", type=int, default=1000, help="bare Deployments per run (default 1000)")
    parser.add_argument("--timeout", type=float, default=600, help="seconds to wait for all Available, per run")
    parser.add_argument(
        "--skip-up", action="store_true", help="do not stop and restart the control plane (no cluster-up figure)"
    )
    args = parser.parse_args(argv)
    count: int = args.count

    log(f"bench-cluster: {load_note()}")
    up = None if args.skip_up else warm_cluster_up()

    api = bench_api()
    suffix = uuid.uuid4().hex[:6]
    serial_namespace = f"bench-bare-serial-{suffix}"
    parallel_namespace = f"bench-bare-parallel-{suffix}"

    log(f"{count} bare Deployments, serial: one kubectl apply --server-side of one file (namespace {serial_namespace})")
    try:
        serial, kubectl_seconds = bare_serial(api, serial_namespace, count, args.timeout)
        log(f"  all Available after {seconds(serial.seconds)} ({serial.ready}/{count})")
    finally:
        serial_cleanup, serial_gone = cleanup_namespace(api, serial_namespace)

    log(f"{count} bare Deployments, parallel: 16 threads of server-side apply (namespace {parallel_namespace})")
    try:
        parallel = bare_parallel(api, parallel_namespace, count, args.timeout)
        log(f"  all Available after {seconds(parallel.seconds)} ({parallel.ready}/{count})")
    finally:
        parallel_cleanup, parallel_gone = cleanup_namespace(api, parallel_namespace)

    memory = component_memory()

    report = Report(f"Local control plane, {count} bare Deployments of 2 replicas ({load_note()})")
    if up is not None:
        report.add(
            "warm cluster-up (cluster-down, then cluster-up timed)",
            seconds(up["seconds"]),
            f"<= {CLUSTER_UP_GOAL_SECONDS:.0f} s",
            up["seconds"] <= CLUSTER_UP_GOAL_SECONDS,
        )
    else:
        report.add("warm cluster-up", "skipped", note="--skip-up")
    report.add(
        f"{count} Deployments Available, serial kubectl apply",
        seconds(serial.seconds),
        note=f"kubectl returned after {kubectl_seconds:.1f}s; {serial.ready}/{count} Available",
    )
    report.add(
        f"{count} Deployments Available, 16 parallel threads",
        seconds(parallel.seconds),
        note=f"all applied after {parallel.submitted_seconds:.1f}s; {parallel.ready}/{count} Available",
    )
    report.add(
        "namespace deletion after each run (serial, parallel)",
        f"{serial_cleanup:.0f} s, {parallel_cleanup:.0f} s",
        note="" if serial_gone and parallel_gone else "a namespace was NOT gone at the deadline",
    )
    report.print()
    print()
    print("Peak resident memory of the control plane since cluster-up (VmHWM, /proc/<pid>/status):")
    print_component_memory(memory)
    print()
    print("The machine is shared: other work running at the same time makes these figures noisy.")

    write_json(
        bench_dir() / "cluster.json",
        {
            "cluster_up_seconds": up["seconds"] if up else None,
            "bare_deployments_1000_serial_seconds": serial.seconds if count == 1000 else None,
            "bare_deployments_1000_parallel_seconds": parallel.seconds if count == 1000 else None,
            "count": count,
            "serial": {**serial.as_json(), "kubectl_seconds": round(kubectl_seconds, 3)},
            "parallel": parallel.as_json(),
            "cluster_up": up,
            "namespace_deletion_seconds": {"serial": round(serial_cleanup, 1), "parallel": round(parallel_cleanup, 1)},
            "memory_mib": memory,
            "load": load_note(),
            "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        },
    )
    return 0
