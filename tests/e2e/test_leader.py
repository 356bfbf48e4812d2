"""Two operator processes with the same settings and one Lease: one leads, the other stands by and takes over when
the leader is killed or stopped, and a rollout goes on where it was."""

from __future__ import annotations

import json
import signal
import time
import uuid
from collections.abc import Iterator

import pytest

from modeldeploy_testkit.cluster import Cluster
from modeldeploy_testkit.operator_process import AuditLog, AuditMark, OperatorProcess
from modeldeploy_testkit.resources import get, model_deployment, status_of, wait_for_status
from modeldeploy_testkit.scripts import cluster_dir
from modeldeploy_testkit.waiting import wait_until

LEASE_NAMESPACE = "default"  # the admin kubeconfig's context has none: the operator's default
LEASE_DURATION = 15.0
RETRY_PERIOD = 2.0


@pytest.fixture
def pair(cluster: Cluster, operator: OperatorProcess) -> Iterator[tuple[OperatorProcess, OperatorProcess]]:
    """Two processes on one Lease; the session's operator is stopped meanwhile (it would act on the resources)."""
    operator.stop()
    lease = f"modeldeploy-leader-{uuid.uuid4().hex[:6]}"
    logs = cluster_dir() / "logs"
    first = OperatorProcess(cluster, logs / "operator-leader-a.log", lease_name=lease)
    second = OperatorProcess(cluster, logs / "operator-leader-b.log", lease_name=lease)
    try:
        yield first, second
    finally:
        first.stop()
        second.stop()
        cluster.kubectl("delete", "lease", lease, "-n", LEASE_NAMESPACE, "--ignore-not-found", check=False)


def holder(cluster: Cluster, operator: OperatorProcess) -> str:
    assert operator.lease_name is not None
    lease = get(cluster, "lease", operator.lease_name, "-n", LEASE_NAMESPACE)
    return str(lease["spec"].get("holderIdentity") or "")


def takeover_seconds(standby: OperatorProcess, since: float, timeout: float) -> float:
    """Seconds from `since` until `standby` leads, polled every 0.1 s."""
    wait_until(standby.leading, timeout=timeout, interval=0.1, what="the standby to lead")
    return time.monotonic() - since


def log_text(operator: OperatorProcess) -> str:
    """Its log since it was last started."""
    return operator.log_path.read_bytes()[operator.log_offset :].decode(errors="replace")


def writes_by(audit: AuditLog, mark: AuditMark, operator_identity: str, namespace: str) -> list[dict[str, object]]:
    return [
        event
        for event in audit.between(mark)
        if f"({operator_identity})" in str(event.get("userAgent", ""))
        and (event.get("objectRef") or {}).get("namespace") == namespace
    ]


def assert_health(operator: OperatorProcess, role: str, identity: str, holder: str) -> None:
    """Its /healthz answers 200 and its /readyz 200 with its role, identity and the holder it observed."""
    assert operator.health("/healthz") == (200, "ok\n")
    answer = operator.health("/readyz")
    assert answer is not None
    status, body = answer
    assert status == 200, body
    assert json.loads(body) == {"role": role, "identity": identity, "holder": holder}


def roll_to(cluster: Cluster, namespace: str, body: dict[str, object], version: str) -> None:
    body["spec"]["model"]["version"] = version  # type: ignore[index]
    cluster.kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(body))
    wait_for_status(
        cluster,
        namespace,
        "leader",
        lambda s: s.get("phase") == "Healthy" and (s.get("stable") or {}).get("version") == version,
        timeout=90,
        what=f"version {version} to be stable",
    )


def test_one_replica_leads_and_the_other_takes_over_after_a_kill_and_after_a_graceful_stop(
    cluster: Cluster,
    namespace: str,
    pair: tuple[OperatorProcess, OperatorProcess],
) -> None:
    first, second = pair
    audit = AuditLog()
    first.start(lead=True)
    second.start(lead=False)
    first_identity, second_identity = first.identity(), second.identity()
    assert first_identity
    assert second_identity
    assert first_identity != second_identity
    time.sleep(2 * RETRY_PERIOD)  # the standby has tried at least once meanwhile
    assert first.leading()
    assert not second.leading()
    assert holder(cluster, first) == first_identity

    # The leader rolls out; the standby writes nothing (its only writes are Lease attempts, elsewhere).
    mark = audit.mark()
    body = model_deployment("leader", "1.0.0", 2, {"strategy": "Immediate"}, uri="file:///m")
    cluster.kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(body))
    wait_for_status(cluster, namespace, "leader", lambda s: s.get("phase") == "Healthy", timeout=90)
    assert writes_by(audit, mark, first_identity, namespace), "the leader's writes name it in the user agent"
    assert writes_by(audit, mark, second_identity, namespace) == []
    assert "Became leader" in log_text(first)
    assert "Became leader" not in log_text(second)
    assert f'Standing by namespace="{LEASE_NAMESPACE}"' in log_text(second)
    assert f'holder="{first_identity}"' in log_text(second)
    # Both answer their probes: the standby is live and Ready too, and /readyz says which one leads.
    assert_health(first, "leader", first_identity, holder=first_identity)
    assert_health(second, "standby", second_identity, holder=first_identity)

    # SIGKILL: no release; the standby waits out the lease as it observed it.
    killed_at = time.monotonic()
    first.kill()
    after_kill = takeover_seconds(second, killed_at, timeout=LEASE_DURATION + 3 * RETRY_PERIOD + 5)
    print(f"takeover after SIGKILL: {after_kill:.1f} s (lease duration {LEASE_DURATION:g} s)")
    # The standby wakes when the Lease it observed expires, not at its next retry: at most the lease duration plus
    # the retry period in which it saw the last renewal, plus 1 s for this test's polling, the write and a busy host.
    assert after_kill <= LEASE_DURATION + RETRY_PERIOD + 1
    assert holder(cluster, second) == second_identity
    assert_health(second, "leader", second_identity, holder=second_identity)
    # The rollout state is intact, and the new leader carries on from it.
    assert status_of(cluster, namespace, "leader")["stable"]["version"] == "1.0.0"
    roll_to(cluster, namespace, body, "1.1.0")
    history = [entry["outcome"] for entry in status_of(cluster, namespace, "leader")["history"]]
    assert history == ["Promoted", "Promoted"], history

    # The killed one comes back as a standby; a graceful stop of the leader releases the Lease at once.
    first.start(lead=False)
    first_identity = first.identity()
    assert first_identity
    time.sleep(RETRY_PERIOD)
    assert not first.leading()
    assert second.process is not None
    stopped_at = time.monotonic()
    second.process.send_signal(signal.SIGTERM)
    after_stop = takeover_seconds(first, stopped_at, timeout=LEASE_DURATION)
    assert second.process.wait(timeout=20) == 0
    print(f"takeover after SIGTERM: {after_stop:.1f} s")
    assert after_stop <= RETRY_PERIOD + 2
    assert "Released the lease" in log_text(second)
    roll_to(cluster, namespace, body, "1.2.0")
    assert writes_by(audit, mark, first_identity, namespace)


def test_a_leader_paused_past_its_lease_exits_instead_of_writing(
    cluster: Cluster, namespace: str, pair: tuple[OperatorProcess, OperatorProcess]
) -> None:
    first, second = pair
    first.start(lead=True)
    second.start(lead=False)
    assert first.process is not None
    first.process.send_signal(signal.SIGSTOP)
    try:
        wait_until(second.leading, timeout=LEASE_DURATION + 3 * RETRY_PERIOD + 5, what="the standby to lead")
    finally:
        first.process.send_signal(signal.SIGCONT)
    # Its renew deadline passed while it was stopped: it ends (exit code 1) rather than going on as a leader.
    assert first.process.wait(timeout=10) == 1
    assert "Lost leadership" in log_text(first)
    assert holder(cluster, second) == second.identity()
