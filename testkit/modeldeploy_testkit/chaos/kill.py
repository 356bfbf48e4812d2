"""R1: the leader is killed (SIGKILL) at random moments during canary rollouts, specs are edited while no replica
leads, and once the leader is stopped (SIGSTOP) for longer than its lease and let go on: it must exit, not write.

Two replicas on one Lease, restarted by a supervisor after a short random delay when they end, as a Deployment
restarts a pod's container. The lease settings are shorter than the defaults so that 30 rollouts fit in minutes;
R6 measures failover with the defaults.
"""

from __future__ import annotations

import functools
import os
import signal
import subprocess
import threading
import time
from collections.abc import Sequence
from datetime import UTC, datetime

from modeldeploy_testkit.chaos.common import (
    LEASE_NAMESPACE,
    OPERATOR_USER_AGENT,
    ChaosRun,
    Figure,
    audit_figure,
    converged_figure,
    count_figure,
    leadership_audit,
    log,
    lost_edits,
    model_deployment,
    resources_path,
    settled_duplicates,
    spread_figure,
    wait_converged,
)
from modeldeploy_testkit.kubeapi import resource_path
from modeldeploy_testkit.operator_process import AuditLog, AuditMark, OperatorProcess
from modeldeploy_testkit.waiting import wait_until

CASE = "R1"
TITLE = "leader SIGKILLed at random moments during canary rollouts; edits while none leads; SIGSTOP past the lease"

LEASE_DURATION = 5.0
RENEW_DEADLINE = 3.5
RETRY_PERIOD = 0.5
ELECTION_ARGS = [
    f"--leader-elect-lease-duration={LEASE_DURATION:g}",
    f"--leader-elect-renew-deadline={RENEW_DEADLINE:g}",
    f"--leader-elect-retry-period={RETRY_PERIOD:g}",
]
CANARY = {
    "strategy": "Canary",
    "steps": [{"setWeight": 25}, {"pause": {"duration": "2s"}}, {"setWeight": 50}, {"pause": {"duration": "2s"}}],
}
REPLICAS = 2
EDITS_PER_ROUND = 2
# A rollout takes ~10 s; after a kill the standby waits out the lease, and the killed replica comes back.
CONVERGE_GOAL = 45.0
TAKEOVER_TIMEOUT = LEASE_DURATION + 4 * RETRY_PERIOD + 20  # + a restart when the standby was down as well


class Supervisor:
    """Starts a replica again, a short random delay after it ended, as a Deployment's kubelet does. The delays are
    drawn from the run's rng before the thread starts, so a seed repeats them."""

    def __init__(self, processes: Sequence[OperatorProcess], delays: list[float]) -> None:
        self.processes = list(processes)
        self.delays = list(delays)
        self.expected: set[int] = set()  # pids this case ended on purpose
        self.unexpected: list[str] = []  # exits it did not cause
        self.failed_starts: list[str] = []
        self.restarts = 0
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._loop, name="chaos-supervisor", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self.stopping.set()
        self.thread.join(timeout=60)

    def expect_end(self, process: OperatorProcess) -> int:
        """Its pid, noted as ended on purpose before the case signals it."""
        assert process.process is not None
        self.expected.add(process.process.pid)
        return process.process.pid

    def _next_delay(self) -> float:
        return self.delays.pop(0) if self.delays else 1.0

    def _loop(self) -> None:
        due: dict[int, float] = {}
        while not self.stopping.wait(0.1):
            for index, process in enumerate(self.processes):
                popen = process.process
                if popen is not None and popen.poll() is None:
                    continue
                if popen is not None:
                    if popen.pid not in self.expected:
                        self.unexpected.append(f"pid {popen.pid} exited with {popen.returncode}")
                        log(f"R1: replica {index} (pid {popen.pid}) exited by itself with {popen.returncode}")
                    process.process = None
                    due[index] = time.monotonic() + self._next_delay()
                due.setdefault(index, time.monotonic() + self._next_delay())
                if time.monotonic() < due[index] or self.stopping.is_set():
                    continue
                del due[index]
                try:
                    process.start(lead=False)
                    self.restarts += 1
                except AssertionError as error:
                    # Killed while starting, or it failed: it is started again after another delay.
                    self.failed_starts.append(str(error))


def leader_of(processes: Sequence[OperatorProcess]) -> OperatorProcess | None:
    for process in processes:
        if process.running and process.leading():
            return process
    return None


def none_leads(processes: Sequence[OperatorProcess]) -> bool:
    return all(not (process.running and process.leading()) for process in processes)


def writes_after(audit: AuditLog, mark: AuditMark, identity: str, since: datetime) -> list[str]:
    """Writes by one replica the API server received after `since`: any verb on any object but a failed Lease
    attempt (its renew loop may try once more before it exits; the Lease's resourceVersion refuses it)."""
    found = []
    for event in audit.between(mark):
        agent = str(event.get("userAgent", ""))
        if not agent.startswith(OPERATOR_USER_AGENT) or not agent.endswith(f"({identity})"):
            continue
        received = datetime.fromisoformat(str(event["requestReceivedTimestamp"]).replace("Z", "+00:00"))
        if received <= since:
            continue
        reference = event.get("objectRef") or {}
        code = int((event.get("responseStatus") or {}).get("code") or 0)
        if reference.get("resource") == "leases" and not 200 <= code < 300:
            continue
        found.append(f"{event.get('verb')} {reference.get('resource')}/{reference.get('name')} ({code})")
    return found


def run(run: ChaosRun) -> list[Figure]:
    rollouts = 5 if run.short else 30
    rounds = -(-rollouts // EDITS_PER_ROUND)
    stop_round = run.rng.randrange(rounds)
    log(
        f"R1 settings: lease duration {LEASE_DURATION:g} s, renew deadline {RENEW_DEADLINE:g} s, retry period "
        f"{RETRY_PERIOD:g} s; {rollouts} rollouts in {rounds} rounds, SIGSTOP in round {stop_round + 1}"
    )
    run.cluster.install_crd()
    namespace = run.namespace("r1")
    names = [f"model-{index}" for index in range(3 if run.short else 6)]
    processes = run.operators(2, "r1", namespaces=[namespace], extra_args=ELECTION_ARGS)
    lease = processes[0].lease_name
    assert lease is not None
    supervisor = Supervisor(processes, [run.rng.uniform(0.2, 2.0) for _ in range(4 * rounds + 10)])
    versions = dict.fromkeys(names, 0)
    last_written: dict[str, str] = {}
    last_edit_at: dict[str, float] = {}
    mark = run.audit.mark()

    def edit(name: str) -> None:
        versions[name] += 1
        version = f"1.{versions[name]}.0"
        model = {"version": version, "uri": f"file:///models/{name}/{version}/model.joblib"}
        run.api.patch(resources_path(namespace, name), {"spec": {"model": model}})
        last_written[name] = version
        last_edit_at[name] = time.monotonic()

    kills = 0
    window_edits = 0
    converge_samples: list[float] = []
    stop_exit: int | None = None
    stop_writes: list[str] = []
    stopped_identity = ""
    try:
        for name in names:
            run.api.create(resources_path(namespace), model_deployment(name, "1.0.0", REPLICAS, CANARY))
            last_written[name] = "1.0.0"
        processes[0].start(lead=True)
        processes[1].start(lead=False)
        supervisor.start()
        wait_converged(run.api, namespace, names, timeout=60)
        for round_index in range(rounds):
            # A leader and a standby that is up, as two replicas of a Deployment normally are.
            leader = wait_until(
                lambda: leader_of(processes) if all(p.running for p in processes) else None,
                timeout=TAKEOVER_TIMEOUT,
                what="a leader and a running standby",
            )
            count = min(EDITS_PER_ROUND, rollouts - round_index * EDITS_PER_ROUND)
            edited = run.rng.sample(names, count)
            for name in edited:
                edit(name)
            # A random moment: before the canary starts, in a step, in a pause or after the promotion.
            time.sleep(run.rng.uniform(0.0, 8.0))
            identity = leader.identity() or "?"
            pid = supervisor.expect_end(leader)
            stopping = round_index == stop_round
            os.kill(pid, signal.SIGSTOP if stopping else signal.SIGKILL)
            signalled_at = time.monotonic()
            log(f"R1 round {round_index + 1}: {'SIGSTOP' if stopping else 'SIGKILL'} leader {identity} (pid {pid})")
            # While no replica leads: spec edits, which the next leader must not lose.
            others = [process for process in processes if process is not leader]
            for name in run.rng.sample(names, run.rng.randint(1, 2)):
                if none_leads(others):
                    edit(name)
                    edited.append(name)
                    window_edits += 1 if none_leads(others) else 0
            new_leader = wait_until(
                functools.partial(leader_of, others),
                timeout=TAKEOVER_TIMEOUT,
                what="the standby to lead",
            )
            log(f"R1 round {round_index + 1}: {new_leader.identity()} leads {time.monotonic() - signalled_at:.1f} s on")
            if stopping:
                assert leader.process is not None
                popen: subprocess.Popen[bytes] = leader.process
                stopped_identity = identity
                time.sleep(run.rng.uniform(0.5, 2.0))  # stopped a little longer still, past the takeover
                continued_at = datetime.now(UTC)
                os.kill(pid, signal.SIGCONT)
                try:
                    stop_exit = popen.wait(timeout=RENEW_DEADLINE + 10)
                except subprocess.TimeoutExpired:
                    popen.kill()
                log(f"R1: the stopped leader, continued, exited with {stop_exit}")
                stop_writes = writes_after(run.audit, mark, identity, continued_at)
            else:
                kills += 1
            started = time.monotonic()
            done = wait_converged(run.api, namespace, set(edited), timeout=120)
            converge_samples += [started + seconds - last_edit_at[name] for name, seconds in done.items()]
        converged = wait_converged(run.api, namespace, names, timeout=60 if run.short else 120)
        lost = lost_edits(run.api, namespace, last_written)
        duplicates = settled_duplicates(run.api, namespace, timeout=30)
    finally:
        supervisor.stop()
        for process in processes:
            if process.process is not None:
                process.process.send_signal(signal.SIGCONT)
            process.stop()
        run.cleanup(namespace)
        run.api.delete(resource_path("coordination.k8s.io/v1", "leases", LEASE_NAMESPACE, lease))
    audit = leadership_audit(run.audit, mark, lease, LEASE_NAMESPACE, namespaces=[namespace])
    missing = sorted(set(names) - set(converged))
    return [
        converged_figure(len(converged), len(names), "not converged: " + ", ".join(missing) if missing else ""),
        count_figure("lost spec edits", len(lost), note="; ".join(lost[:3])),
        count_figure("duplicate children", duplicates),
        audit_figure(audit),
        spread_figure("time to converge after an edit", converge_samples, CONVERGE_GOAL),
        Figure("leaders killed (SIGKILL)", str(kills), f">= {rounds - 1}", kills >= rounds - 1),
        Figure(
            "spec edits while no replica led",
            str(window_edits),
            f">= {rounds}",
            window_edits >= rounds,
            f"{rollouts} rollouts, {sum(versions.values())} edits in all",
        ),
        Figure(
            "SIGSTOP past the lease: exit code",
            str(stop_exit),
            "1, no write after SIGCONT",
            stop_exit == 1 and not stop_writes,
            "; ".join(stop_writes[:3]) or f"{stopped_identity} stopped in round {stop_round + 1}",
        ),
        count_figure(
            "exits the case did not cause",
            len(supervisor.unexpected),
            note="; ".join(supervisor.unexpected[:3]) or f"{supervisor.restarts} restarts",
        ),
    ]
