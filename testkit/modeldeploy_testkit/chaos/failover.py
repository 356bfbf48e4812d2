"""R6: how long two replicas go without a leader when the leader is killed (SIGKILL: the standby waits out the
lease) and when it is stopped gracefully (SIGTERM: it releases the Lease), with the default lease settings.

The replicas authenticate as the Helm chart's ServiceAccount: the chart is installed into a fresh release
namespace (watching one workload namespace, its Lease in the release namespace as the chart's Deployment has it),
and each replica gets a kubeconfig with a token of that account, as its pod would. The chart's own Deployment pods
land on kwok's fake nodes and never run. A canary rollout is in flight at every failover and must end Healthy.

Failover is measured from the signal until the Lease names the standby, and until the standby's modeldeploy_leader
gauge says 1 (it is set just after the Lease write, when the controller starts), both polled every 0.1 s.
"""

from __future__ import annotations

import signal
import subprocess
import time
import uuid
from pathlib import Path

import yaml

from modeldeploy_testkit.chaos.common import (
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
from modeldeploy_testkit.scripts import REPO_ROOT, script_value
from modeldeploy_testkit.waiting import wait_until

CASE = "R6"
TITLE = "failover time after SIGKILL and SIGTERM, two replicas as the chart's ServiceAccount"

CHART = REPO_ROOT / "helm/modeldeploy"
# The operator's defaults, which this case does not override.
LEASE_DURATION = 15.0
RETRY_PERIOD = 2.0
KILL_GOAL = LEASE_DURATION + 2.0
STOP_GOAL = 2.0
# The short version (in `make test`, beside the rest of the suite) holds a graceful stop to what proves the Lease was
# released rather than left to expire; the 2 s goal is a speed goal, judged by `make chaos` on a machine left to it.
SHORT_STOP_BOUND = LEASE_DURATION / 2
CANARY = {
    "strategy": "Canary",
    "steps": [{"setWeight": 25}, {"pause": {"duration": "2s"}}, {"setWeight": 50}, {"pause": {"duration": "2s"}}],
}
MODEL = "failover"


class Helm:
    """The pinned helm binary against the run's cluster, with config and cache of its own."""

    def __init__(self, run: ChaosRun, home: Path) -> None:
        self.path = Path(script_value("HELM_BIN")) / "helm"
        self.env = {
            **run.cluster.env(),
            "HELM_CACHE_HOME": str(home / "cache"),
            "HELM_CONFIG_HOME": str(home / "config"),
            "HELM_DATA_HOME": str(home / "data"),
        }

    def __call__(self, *args: str) -> str:
        result = subprocess.run(
            [str(self.path), *args], env=self.env, capture_output=True, text=True, check=False, timeout=300
        )
        if result.returncode != 0:
            raise RuntimeError(f"helm {' '.join(args[:2])} failed ({result.returncode}): {result.stderr.strip()}")
        return result.stdout


def service_account_of(helm: Helm, release: str, namespace: str) -> str:
    manifest = helm("get", "manifest", release, "--namespace", namespace)
    [account] = [doc for doc in yaml.safe_load_all(manifest) if doc and doc["kind"] == "ServiceAccount"]
    return str(account["metadata"]["name"])


def _identity(user_agent: str) -> str:
    return user_agent.rsplit("(", 1)[1].rstrip(")") if user_agent.endswith(")") else ""


def writers(audit: AuditLog, mark: AuditMark, namespace: str) -> tuple[int, dict[str, set[str]]]:
    """Operator writes to `namespace`: how many, and the authenticated users each replica (identity) wrote as."""
    count = 0
    users: dict[str, set[str]] = {}
    for event in audit.between(mark):
        agent = str(event.get("userAgent", ""))
        if not agent.startswith(OPERATOR_USER_AGENT) or (event.get("objectRef") or {}).get("namespace") != namespace:
            continue
        count += 1
        users.setdefault(_identity(agent), set()).add(str((event.get("user") or {}).get("username")))
    return count, users


def failover(
    run: ChaosRun, lease_path: str, leader: OperatorProcess, standby: OperatorProcess, how: signal.Signals
) -> tuple[float, float, int | None]:
    """Signal the leader; seconds until the Lease names the standby and until its gauge says it leads, and the
    leader's exit code."""
    identity = standby.identity()
    assert leader.process is not None
    assert identity
    process = leader.process
    seen: dict[str, float] = {}

    def both() -> bool:
        elapsed = time.monotonic() - started
        if "lease" not in seen:
            lease = run.api.get(lease_path) or {}
            if (lease.get("spec") or {}).get("holderIdentity") == identity:
                seen["lease"] = elapsed
        if "gauge" not in seen and standby.leading():
            seen["gauge"] = time.monotonic() - started
        return len(seen) == 2

    started = time.monotonic()
    process.send_signal(how)
    wait_until(both, timeout=LEASE_DURATION + 3 * RETRY_PERIOD + 10, interval=0.1, what="the standby to lead")
    try:
        code: int | None = process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        code = None
    leader.kill()
    return seen["lease"], seen["gauge"], code


def run(run: ChaosRun) -> list[Figure]:
    cycles = 1 if run.short else 5
    log(
        f"R6 settings: the defaults (lease duration {LEASE_DURATION:g} s, renew deadline 10 s, retry period "
        f"{RETRY_PERIOD:g} s); {cycles} SIGKILL and {cycles} SIGTERM failovers"
    )
    run.cluster.install_crd()
    helm = Helm(run, run.directory / "helm")
    release_namespace = run.namespace("r6-release")
    workload = run.namespace("r6")
    release = f"r6-{uuid.uuid4().hex[:6]}"
    installed = False
    processes: list[OperatorProcess] = []
    lease_path = ""
    mark = run.audit.mark()
    kill_lease: list[float] = []
    kill_gauge: list[float] = []
    stop_lease: list[float] = []
    stop_gauge: list[float] = []
    stop_codes: list[int | None] = []
    rollouts: dict[str, bool] = {}
    last_written = {MODEL: "1.0.0"}
    user = ""
    try:
        # The CRD stays the cluster's (the suite applied it); the release watches the workload namespace only, so
        # its status policy binds there alone.
        helm(
            "install", release, str(CHART), "--namespace", release_namespace,
            "--set", "crds.enabled=false", "--set", f"watch.namespaces={{{workload}}}",
        )  # fmt: skip
        installed = True
        account = service_account_of(helm, release, release_namespace)
        user = f"system:serviceaccount:{release_namespace}:{account}"
        log(f"R6: release {release} in {release_namespace}; the replicas are {user}")
        processes = run.operators(
            2, "r6", namespaces=[workload], extra_args=[f"--leader-elect-namespace={release_namespace}"]
        )
        for index, process in enumerate(processes):
            kubeconfig = run.cluster.token_kubeconfig(account, release_namespace, run.directory / f"r6-{index}.yaml")
            process.extra_env = {"KUBECONFIG": str(kubeconfig)}
        assert processes[0].lease_name is not None
        lease_path = resource_path("coordination.k8s.io/v1", "leases", release_namespace, processes[0].lease_name)
        processes[0].start(lead=True)
        processes[1].start(lead=False)
        run.api.create(resources_path(workload), model_deployment(MODEL, "1.0.0", 2, CANARY))
        rollouts["1.0.0"] = bool(wait_converged(run.api, workload, [MODEL], timeout=60))

        def canary_running() -> bool:
            body = run.api.get(resources_path(workload, MODEL)) or {}
            status = body.get("status") or {}
            return status.get("observedGeneration") == body["metadata"]["generation"] and bool(status.get("canary"))

        plan: list[tuple[signal.Signals, list[float], list[float]]] = []
        for _ in range(cycles):
            plan += [(signal.SIGKILL, kill_lease, kill_gauge), (signal.SIGTERM, stop_lease, stop_gauge)]
        for index, (how, by_lease, by_gauge) in enumerate(plan):
            leader = wait_until(lambda: next((p for p in processes if p.leading()), None), timeout=30, what="a leader")
            standby = next(p for p in processes if p is not leader)
            version = f"1.{index + 1}.0"
            model = {"version": version, "uri": f"file:///models/{MODEL}/{version}/model.joblib"}
            run.api.patch(resources_path(workload, MODEL), {"spec": {"model": model}})
            last_written[MODEL] = version
            wait_until(canary_running, timeout=30, interval=0.2, what="the canary to start")
            time.sleep(run.rng.uniform(0.0, RETRY_PERIOD))  # anywhere between two renewals
            lease_seconds, gauge_seconds, code = failover(run, lease_path, leader, standby, how)
            log(
                f"R6: {how.name}: the Lease names the standby after {lease_seconds:.1f} s, "
                f"its gauge says so after {gauge_seconds:.1f} s"
            )
            by_lease.append(lease_seconds)
            by_gauge.append(gauge_seconds)
            if how == signal.SIGTERM:
                stop_codes.append(code)
            rollouts[version] = bool(wait_converged(run.api, workload, [MODEL], timeout=90))
            if index < len(plan) - 1:
                leader.start(lead=False)  # its pod's container, started again: a standby now
        lost = lost_edits(run.api, workload, last_written)
        duplicates = settled_duplicates(run.api, workload, timeout=30)
    finally:
        for process in processes:
            process.stop()
        if installed:
            helm("uninstall", release, "--namespace", release_namespace)
        run.cleanup(workload, release_namespace)
    assert processes[0].lease_name is not None
    audit = leadership_audit(run.audit, mark, processes[0].lease_name, release_namespace, namespaces=[workload])
    count, users = writers(run.audit, mark, workload)
    as_account = [identity for identity, names in users.items() if names == {user}]
    others = sorted(f"{identity}: {', '.join(sorted(names))}" for identity, names in users.items() if names != {user})
    healthy = sum(rollouts.values())
    stop_goal = SHORT_STOP_BOUND if run.short else STOP_GOAL
    return [
        spread_figure("failover after SIGKILL (Lease holder)", kill_lease, KILL_GOAL),
        spread_figure("failover after SIGKILL (leader gauge)", kill_gauge, KILL_GOAL),
        spread_figure("failover after SIGTERM (Lease holder)", stop_lease, stop_goal),
        spread_figure("failover after SIGTERM (leader gauge)", stop_gauge, stop_goal),
        Figure("SIGTERM exit codes", ",".join(str(code) for code in stop_codes), "0", all(c == 0 for c in stop_codes)),
        converged_figure(healthy, len(rollouts), "rollouts Healthy, each across a failover but the first"),
        Figure(
            "replicas writing as the chart's ServiceAccount",
            f"{len(as_account)} ({count} writes)",
            ">= 2, every write",
            len(as_account) >= 2 and not others,
            "; ".join(others[:3]) or user,
        ),
        audit_figure(audit),
        count_figure("lost spec edits", len(lost), note="; ".join(lost)),
        count_figure("duplicate children", duplicates),
    ]
