"""R10: a soak. Many ModelDeployments whose versions keep changing for a long time, under one operator process.

Full size: 1,000 ModelDeployments of one replica for 30 minutes; every minute the version of a random 10 % of them
changes (the choice from the run's seed). Short (`--short`, the e2e test): 50 for about a minute, a change every
15 s. A developer can size the full run down with two environment variables (the short run ignores them):

    MODELDEPLOY_CHAOS_SOAK_MINUTES=5 MODELDEPLOY_CHAOS_SOAK_COUNT=200 .venv/bin/python -m modeldeploy_testkit.chaos R10

One operator process (`modeldeploy run`, leader election as by default, a Lease of its own) watches only the
case's namespace. The pods are kwok's: the image modeldeploy.test/model-server:latest is Ready by itself. The
rollout strategy is Immediate: a soak is about what hours of changes do to the operator (memory, lost edits,
duplicates), not about canary steps, whose pauses would make each change last minutes and measure the steps'
durations instead; R8 and the canary tests cover the steps.

Before the clock starts, every resource changes version a few times (the warm-up), until what the operator keeps
of it on purpose has its steady size: old revisions scaled to zero and history entries, both capped (the operator
runs with MODELDEPLOY_RETAINED_REVISIONS=3 and MODELDEPLOY_HISTORY_LIMIT=3). Growth after that is what a soak is
for: memory the operator should not hold.

Figures: every resource converged to its last written version within a deadline after the last change; no
duplicate children (Deployments scaled up, pods beyond spec.replicas); no lost spec edit (spec and serving
version are the last written ones); the operator's resident memory (VmRSS, /proc/<pid>/status, every 30 s; every
5 s in the short run) grows less than 10 % between minute 5 and the end (short: between 20 % and 100 % of the
run, informational); no reconcile error (its modeldeploy_reconcile_total{outcome="error"} and its log); and the
time from each version change to convergence, from a watch. The namespace is deleted at the end, and waited for.
"""

from __future__ import annotations

import contextlib
import math
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import requests

from modeldeploy_testkit.bench.common import delete_namespace, proc_status
from modeldeploy_testkit.chaos.common import (
    FIELD_MANAGER,
    ChaosRun,
    Figure,
    converged_figure,
    count_figure,
    errors_figure,
    is_converged,
    log,
    lost_edits,
    model_deployment,
    percent,
    resources_path,
    settled_duplicates,
    spread_figure,
    wait_converged,
)
from modeldeploy_testkit.kubeapi import ApiError, KubeAPI, Manifest, resource_path
from modeldeploy_testkit.operator_process import OperatorProcess
from modeldeploy_testkit.waiting import wait_until
from modeldeploy_testkit.watches import CollectionWatch

CASE = "R10"
TITLE = "soak: versions changing every minute under one operator, memory and lost edits"

MINUTES_VARIABLE = "MODELDEPLOY_CHAOS_SOAK_MINUTES"
COUNT_VARIABLE = "MODELDEPLOY_CHAOS_SOAK_COUNT"
REPLICAS = 1
CHANGED_SHARE = 0.10
THREADS = 16
MEMORY_GROWTH_GOAL_PERCENT = 10.0
# A version change is a new Deployment whose one kwok pod is Ready at once, then the old one scaled to zero.
CONVERGE_GOAL_SECONDS = 60.0
# What the operator keeps per resource is capped: old revisions (MODELDEPLOY_RETAINED_REVISIONS, scaled to zero) and
# history entries (MODELDEPLOY_HISTORY_LIMIT). One more warm-up round than either cap fills both before the soak.
RETAINED_REVISIONS = 3
HISTORY_LIMIT = 3
WARMUP_ROUNDS = max(RETAINED_REVISIONS, HISTORY_LIMIT) + 1


@dataclass(frozen=True)
class SoakSize:
    count: int
    seconds: float
    change_every: float
    sample_every: float
    baseline_fraction: float  # where the memory baseline is taken, as a share of the run
    settle_seconds: float  # the deadline to converge, after the first apply and after the last change


def soak_size(short: bool) -> SoakSize:
    if short:
        return SoakSize(50, 60.0, 15.0, 5.0, 0.2, 120.0)
    minutes = float(os.environ.get(MINUTES_VARIABLE) or 30)
    count = int(os.environ.get(COUNT_VARIABLE) or 1000)
    return SoakSize(count, minutes * 60, 60.0, 30.0, 5 / 30, max(300.0, 0.6 * count))


@dataclass(frozen=True)
class Sample:
    seconds: float  # into the soak
    rss_kib: int  # the operator's VmRSS
    deployments: int  # in the namespace (every revision kept, scaled up or not)


@dataclass
class Changes:
    """What the case wrote, and when each change was first seen converged through the watch."""

    written: dict[str, str] = field(default_factory=dict)  # name -> the last version written
    pending: dict[str, tuple[str, float]] = field(default_factory=dict)  # name -> (version, written at)
    converge_seconds: list[float] = field(default_factory=list)
    superseded: int = 0  # changed again before the previous change converged
    lock: threading.Lock = field(default_factory=threading.Lock)

    def observe(self, kind: str, body: Manifest) -> None:
        if kind == "DELETED":
            return
        now = time.monotonic()
        name = str(body["metadata"]["name"])
        with self.lock:
            waiting = self.pending.get(name)
            version = ((body.get("spec") or {}).get("model") or {}).get("version")
            if waiting is not None and version == waiting[0] and is_converged(body):
                self.converge_seconds.append(now - waiting[1])
                del self.pending[name]

    def change(self, name: str, version: str) -> None:
        with self.lock:
            if name in self.pending:
                self.superseded += 1
            self.written[name] = version
            self.pending[name] = (version, time.monotonic())


def settle(api: KubeAPI, namespace: str, names: list[str], changes: Changes, timeout: float) -> dict[str, float]:
    """Wait until the watch has seen every change converge (cheap: no list of a thousand objects twice a second),
    then judge from a list, which is the figure's authority (wait_converged), with what is left of the deadline."""
    started = time.monotonic()

    def nothing_pending() -> bool:
        with changes.lock:
            return not changes.pending

    with contextlib.suppress(AssertionError):
        wait_until(nothing_pending, timeout=timeout, interval=1.0, what="every change to converge")
    left = max(10.0, timeout - (time.monotonic() - started))
    return wait_converged(api, namespace, names, left)


def count_of(api: KubeAPI, collection: str) -> int:
    """How many objects a collection holds, from a list of one (the server counts the rest); -1 without an answer."""
    try:
        listing = api.get(collection, {"limit": "1"}) or {}
    except (ApiError, requests.RequestException):
        return -1
    return len(listing.get("items") or []) + int((listing.get("metadata") or {}).get("remainingItemCount") or 0)


def version_of(number: int) -> str:
    return f"1.{number}.0"


def run(run: ChaosRun) -> list[Figure]:
    size = soak_size(run.short)
    run.cluster.install_crd()  # a fresh control plane has none yet; applying it again changes nothing
    api = run.api
    namespace = run.namespace("soak")
    names = [f"soak-{index:04d}" for index in range(size.count)]
    log(
        f"{size.count} ModelDeployments (Immediate, {REPLICAS} replica), {size.seconds / 60:g} min, "
        f"{CHANGED_SHARE:.0%} changed every {size.change_every:g} s, namespace {namespace}"
    )
    # Pods wait for the ServiceAccount controller's `default`; so does the case, before timing anything.
    account = f"/api/v1/namespaces/{namespace}/serviceaccounts/default"
    wait_until(lambda: api.get(account) is not None, timeout=60, what=f"the default ServiceAccount of {namespace}")
    operator = OperatorProcess(
        run.cluster,
        run.directory / "operator-soak.log",
        namespaces=[namespace],
        extra_env={
            "MODELDEPLOY_RETAINED_REVISIONS": str(RETAINED_REVISIONS),
            "MODELDEPLOY_HISTORY_LIMIT": str(HISTORY_LIMIT),
        },
    )
    changes = Changes()
    watch = CollectionWatch(api, resources_path(namespace), changes.observe, timeout_seconds=290)
    collection = resources_path(namespace)
    deployments = resource_path("apps/v1", "deployments", namespace)
    numbers = dict.fromkeys(names, 0)
    try:
        operator.start()
        pid = operator.pid
        assert pid is not None
        log(f"operator pid {pid}, log {operator.log_path.name}")
        watch.start()

        def write(name: str) -> None:
            version = version_of(numbers[name])
            body = model_deployment(name, version, REPLICAS, {"strategy": "Immediate"})
            changes.change(name, version)
            api.apply(collection, body, FIELD_MANAGER)

        started = time.monotonic()
        with ThreadPoolExecutor(max_workers=THREADS, thread_name_prefix="soak") as pool:
            list(pool.map(write, names))
            log(f"applied {size.count} in {time.monotonic() - started:.0f} s; waiting for them to converge")
            first = settle(api, namespace, names, changes, size.settle_seconds)
            log(f"  {len(first)}/{size.count} converged after {time.monotonic() - started:.0f} s")
            # Warm-up: every resource changes version until what the operator keeps of it has its steady size
            # (old revisions kept scaled to zero, history entries, both capped). The soak then looks for growth
            # that should not be there, not for state it keeps on purpose.
            for warm_round in range(WARMUP_ROUNDS):
                for name in names:
                    numbers[name] += 1
                list(pool.map(write, names))
                warmed = settle(api, namespace, names, changes, size.settle_seconds)
                log(
                    f"  warm-up {warm_round + 1}/{WARMUP_ROUNDS}: {len(warmed)}/{size.count} converged after "
                    f"{time.monotonic() - started:.0f} s; {count_of(api, deployments)} Deployments"
                )
            with changes.lock:
                # The first rollout and the warm-up are not the soak's changes: their times are not in the figure.
                changes.converge_seconds.clear()
                changes.pending.clear()

            samples: list[Sample] = []
            soak_started = time.monotonic()
            next_change = soak_started + size.change_every
            next_sample = soak_started
            end = soak_started + size.seconds
            rounds = 0
            while True:
                now = time.monotonic()
                if now >= next_sample:
                    rss = proc_status(pid).get("VmRSS")
                    if rss is None:
                        raise AssertionError(f"the operator (pid {pid}) is gone; see {operator.log_path}")
                    samples.append(Sample(now - soak_started, rss, count_of(api, deployments)))
                    next_sample += size.sample_every
                if now >= end:
                    break
                if now >= next_change:
                    with changes.lock:
                        pending = len(changes.pending)
                    chosen = run.rng.sample(names, max(1, round(CHANGED_SHARE * size.count)))
                    for name in chosen:
                        numbers[name] += 1
                    list(pool.map(write, chosen))
                    rounds += 1
                    log(
                        f"  {now - soak_started:.0f} s: changed {len(chosen)} versions (round {rounds}); before it "
                        f"{pending} earlier changes were not converged yet; RSS {samples[-1].rss_kib / 1024:.1f} MiB"
                    )
                    next_change += size.change_every
                # A clock: the next change or sample is due then, whatever the cluster does.
                time.sleep(max(0.0, min(next_change, next_sample, end) - time.monotonic()))

        log(f"last change done; waiting up to {size.settle_seconds:.0f} s for every resource to converge")
        settle_started = time.monotonic()
        done = settle(api, namespace, names, changes, size.settle_seconds)
        settled_in = time.monotonic() - settle_started
        with changes.lock:
            unconverged_changes = len(changes.pending)
            converge_seconds = list(changes.converge_seconds)
            superseded = changes.superseded
        duplicates = settled_duplicates(api, namespace, timeout=60)
        lost = lost_edits(api, namespace, changes.written)
        errors = errors_figure(operator)
    finally:
        watch.stop()
        log(f"deleting namespace {namespace} and waiting until it is gone")
        cleanup_seconds, gone = delete_namespace(api, namespace, timeout=size.settle_seconds * 2)
        operator.stop()

    return [
        converged_figure(len(done), size.count, note=f"{settled_in:.0f} s after the last change, {rounds} rounds"),
        count_figure("duplicate children", duplicates),
        count_figure("lost spec edits", len(lost), note="; ".join(lost[:3])),
        memory_figure(samples, size, run.short),
        errors,
        converge_figure(converge_seconds, unconverged_changes, superseded),
        Figure(
            "namespace deleted",
            f"{cleanup_seconds:.0f} s" if gone else "still there",
            f"gone within {size.settle_seconds * 2:.0f} s",
            gone,
        ),
    ]


def converge_figure(samples: list[float], unconverged: int, superseded: int) -> Figure:
    figure = spread_figure("version change to converged", samples, CONVERGE_GOAL_SECONDS)
    note = f"{superseded} changed again before converging" if superseded else ""
    if unconverged:
        note = f"{unconverged} never seen converged; {note}".rstrip("; ")
    return Figure(figure.name, figure.value, figure.goal, figure.ok and not unconverged, note)


def memory_figure(samples: list[Sample], size: SoakSize, short: bool) -> Figure:
    """Growth of VmRSS from the sample nearest `baseline_fraction` of the run to the last one. The note says how
    many Deployments the namespace held at both (old revisions are kept, scaled to zero, so the operator's cache of
    them grows with the changes: growth beside them is not necessarily a leak)."""
    name = "operator memory growth (VmRSS)"
    goal = f"< {MEMORY_GROWTH_GOAL_PERCENT:g} %" + (" (informational)" if short else "")
    if len(samples) < 2:
        return Figure(name, "too few samples", goal, short, f"{len(samples)} samples")
    baseline_at = size.baseline_fraction * size.seconds
    base = min(samples, key=lambda sample: abs(sample.seconds - baseline_at))
    last = samples[-1]
    growth = percent(last.rss_kib - base.rss_kib, base.rss_kib)
    peak = max(sample.rss_kib for sample in samples)
    value = f"{growth:+.1f} %" if math.isfinite(growth) else "n/a"
    note = (
        f"{base.rss_kib / 1024:.1f} MiB at {base.seconds:.0f} s -> {last.rss_kib / 1024:.1f} MiB at "
        f"{last.seconds:.0f} s; peak {peak / 1024:.1f} MiB; {len(samples)} samples; Deployments in the namespace "
        f"{base.deployments} -> {last.deployments}"
    )
    return Figure(name, value, goal, short or growth < MEMORY_GROWTH_GOAL_PERCENT, note)
