"""R4: kube-apiserver restarted at random moments of canary rollouts, while the operator runs as two replicas on one
Lease. A leader that cannot renew within its renew deadline exits (code 1, by design); like a Deployment would,
the case starts every process that exited again, as a standby.

Every rollout must still end on the spec as last written (no edit lost), with no duplicated child, and the audit
log must show no write by a replica at a moment another one held the Lease.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import requests

from modeldeploy_testkit.chaos.common import (
    LEASE_NAMESPACE,
    ChaosRun,
    Figure,
    acted_figure,
    audit_figure,
    converged_figure,
    count_figure,
    is_acted_on,
    is_converged,
    leadership_audit,
    log,
    lost_edits,
    model_deployment,
    resources_path,
    settled_duplicates,
    spread_figure,
)
from modeldeploy_testkit.cluster import apiserver_ready, restart_apiserver
from modeldeploy_testkit.kubeapi import ApiError, KubeAPI, Manifest
from modeldeploy_testkit.operator_process import OperatorProcess
from modeldeploy_testkit.waiting import wait_until

CASE = "R4"
TITLE = "kube-apiserver restarted mid-rollout, two operator replicas on one Lease"

# The wait for every resource to be Healthy after a restart: the operator's part (ACT_GOAL_SECONDS) plus the
# cluster's, whose controllers can lag by over a minute after a restart (docs/chaos.md, R3 and R4).
CONVERGE_SECONDS = 180.0
ACT_GOAL_SECONDS = 75.0
STEPS = [{"setWeight": 25}, {"pause": {"duration": "4s"}}, {"setWeight": 50}, {"pause": {"duration": "4s"}}]


def rollout() -> dict[str, object]:
    # A deadline well past a restart and a failover (lease 15 s): a rollback here would be the restart's doing.
    return {"strategy": "Canary", "steps": STEPS, "progressDeadlineSeconds": 300}


@dataclass
class Replicas:
    """The operator's replicas; one that exited is started again, as its Deployment would."""

    processes: list[OperatorProcess]
    leader_exits: list[str] = field(default_factory=list)  # lost the Lease: by design
    standby_exits: list[str] = field(default_factory=list)  # never led: a standby should outlive an API server

    def revive(self) -> None:
        for process in self.processes:
            if process.process is not None and process.process.poll() is not None:
                code = process.process.returncode
                text = process.log_path.read_bytes()[process.log_offset :].decode(errors="replace")
                led = "Became leader" in text
                last = next((line for line in reversed(text.splitlines()) if line.strip()), "")
                (self.leader_exits if led else self.standby_exits).append(
                    f"{process.log_path.name} exited {code}: {last[:120]}"
                )
                log(f"R4: {process.log_path.name} ({'leader' if led else 'standby'}) exited {code}; starting it again")
                process.process = None
                process.start(lead=False)

    def leader(self) -> OperatorProcess | None:
        return next((process for process in self.processes if process.running and process.leading()), None)


def converged_names(
    api: KubeAPI, namespace: str, expected: dict[str, str], done: Callable[[Manifest], bool] = is_converged
) -> set[str]:
    """Resources converged (or, with `done=is_acted_on`, acted on) on the version last written to their spec; none
    while the API cannot list them (just after a restart the CRD's storage answers 429 "storage is
    (re)initializing" for a while, /readyz or not)."""
    try:
        items = api.list(resources_path(namespace))["items"]
    except (ApiError, requests.RequestException):
        return set()
    return {
        body["metadata"]["name"]
        for body in items
        if done(body) and body["spec"]["model"]["version"] == expected.get(body["metadata"]["name"])
    }


def run(run: ChaosRun) -> list[Figure]:
    namespace = run.namespace("r4")
    api = run.api
    restarts = 1 if run.short else 3
    count = 4 if run.short else 8
    replicas = Replicas(run.operators(2, "r4", namespaces=[namespace]))
    lease = replicas.processes[0].lease_name
    assert lease is not None
    log(f"R4: 2 replicas on Lease {lease} (default timings: 15 s lease, 10 s renew deadline, 2 s retry)")
    names = [f"roll{index:02d}" for index in range(count)]
    expected: dict[str, str] = {}
    converge_times: list[float] = []
    act_times: list[float] = []
    changes_total = 0
    downtimes: list[float] = []
    converged_total = 0
    expected_total = 0
    # Marked before the replicas start: the audit judges a write by the Lease writes before it, and a mark taken
    # while one leads would see its first writes before its first renewal as a leaderless replica's.
    mark = run.audit.mark()
    try:
        replicas.processes[0].start(lead=True)
        replicas.processes[1].start(lead=False)
        for name in names:
            expected[name] = "1.0.0"
            api.create(resources_path(namespace), model_deployment(name, "1.0.0", run.rng.randint(2, 4), rollout()))
        wait_until(
            lambda: len(converged_names(api, namespace, expected)) == count,
            timeout=CONVERGE_SECONDS,
            interval=0.5,
            what="the first versions to converge",
        )
        audit_inode = run.audit.mark().inode
        for index in range(restarts):
            version = f"{index + 2}.0.0"
            edited = run.rng.sample(names, run.rng.randint(max(1, count // 2), count))
            for name in edited:
                api.patch(resources_path(namespace, name), {"spec": {"model": {"version": version}}})
                expected[name] = version
            # A random moment of the rollouts: before the first step is Ready, in a pause, or near the end.
            delay = run.rng.uniform(0.5, 12.0)
            deadline = time.monotonic() + delay
            while time.monotonic() < deadline:
                replicas.revive()
                time.sleep(0.2)
            leader = replicas.leader()
            log(
                f"R4 restart {index + 1}: {len(edited)} rollouts to {version}, API server restart {delay:.1f} s "
                f"after the edits (leader {leader.log_path.name if leader else 'none'})"
            )
            started = time.monotonic()
            restart_apiserver()
            downtimes.append(time.monotonic() - started)
            back = time.monotonic()
            done: dict[str, float] = {}
            acted: dict[str, float] = {}
            deadline = back + CONVERGE_SECONDS
            while len(done) < count and time.monotonic() < deadline:
                replicas.revive()
                for name in converged_names(api, namespace, expected) - set(done):
                    done[name] = time.monotonic() - back
                for name in converged_names(api, namespace, expected, is_acted_on) - set(acted):
                    acted[name] = time.monotonic() - back
                time.sleep(0.5)
            converge_times += [done[name] for name in edited if name in done]
            act_times += [acted[name] for name in edited if name in acted]  # converged is acted on too
            changes_total += len(edited)
            converged_total += len(done)
            expected_total += count
            if len(done) < count:
                log(f"R4 restart {index + 1}: not converged: {sorted(set(names) - set(done))}")
        time.sleep(1.0)  # the audit log is written just after the answer: let the last events land
        leadership = leadership_audit(run.audit, mark, lease, namespaces={namespace})
        same_audit_file = run.audit.mark().inode == audit_inode
        duplicates = settled_duplicates(api, namespace, 30.0)
        lost = lost_edits(api, namespace, expected)
    finally:
        for process in replicas.processes:
            process.stop()
        # Whatever happened, the control plane is left answering for whoever comes next.
        wait_until(apiserver_ready, timeout=60, what="the API server to be ready")
        api.delete(f"/apis/coordination.k8s.io/v1/namespaces/{LEASE_NAMESPACE}/leases/{lease}")
        run.cleanup(namespace)
    return [
        converged_figure(converged_total, expected_total, f"{count} resources after each of {restarts} restart(s)"),
        count_figure("duplicate children", duplicates),
        count_figure("lost spec edits", len(lost), note="; ".join(lost[:3])),
        audit_figure(leadership),
        acted_figure(
            "operator acted on each edit after the API server is back", act_times, changes_total, ACT_GOAL_SECONDS
        ),
        spread_figure("edits Healthy after the API server is back (pods Ready)", converge_times),
        spread_figure("API server downtime", downtimes, 60.0),
        Figure(
            "leader exits (renew deadline passed)",
            str(len(replicas.leader_exits)),
            "(measured)",
            True,
            "by design; started again as standbys. " + "; ".join(replicas.leader_exits[:2]),
        ),
        count_figure("standby exits", len(replicas.standby_exits), note="; ".join(replicas.standby_exits[:2])),
        Figure(
            "audit log kept across the restarts",
            "yes" if same_audit_file else "rotated",
            "yes",
            True,
            "" if same_audit_file else "read across the rotation",
        ),
    ]
