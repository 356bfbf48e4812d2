"""GitOps benchmark: how fast a `git revert` of a model version brings the serving version back, through Argo CD.

Run from the repository root with the local control plane up (`make bench` does both):
    .venv/bin/python -m modeldeploy_testkit.bench gitops [--samples N]

Argo CD (v2.14, testkit/scripts/argocd-up.sh) is started beside the control plane when it is not running, and
built first when it is not cached (6+ minutes). One Application syncs a ModelDeployment (4 replicas, steps 50% then
an open pause) from the local git repository. Each sample commits a new version, waits for the canary at its pause
(Argo CD: Suspended), then pushes `git revert` of that commit and annotates the Application for a hard refresh,
as a git webhook would. Timed from the start of `git revert` (the refresh is sent once it is pushed):
- pushed: the revert is committed and pushed;
- Synced: Argo CD has applied the revert commit;
- stable: the ModelDeployment's status is Healthy on the serving version with no canary (its pods all Ready,
  the canary scaled to zero), for the reverted spec;
- Healthy: the Application is Synced to the revert commit and Healthy, which is what a person watching Argo CD
  sees. Goal: <= 1.5 s (Argo CD alone takes ~0.9 s from commit + refresh to Synced on this machine).
"""

from __future__ import annotations

import statistics
import time
import uuid
from collections.abc import Callable
from typing import Any

from modeldeploy_testkit.argocd import AppState, ArgoCD, GitRepo, model_deployment, start_argocd
from modeldeploy_testkit.bench import options
from modeldeploy_testkit.bench.common import bench_dir, write_json
from modeldeploy_testkit.cluster import Cluster, scratch_namespace, start_cluster
from modeldeploy_testkit.operator_process import running_operator
from modeldeploy_testkit.resources import serving_only
from modeldeploy_testkit.scripts import cluster_dir

GOAL_MS = 1500.0
NAME = "reverted"
STEPS: list[dict[str, Any]] = [{"setWeight": 50}, {"pause": {}}]
POLL_SECONDS = 0.02
Check = Callable[[AppState, dict[str, Any]], bool]


class Follow:
    """Reads the Application and the ModelDeployment every 20 ms and notes when each condition first held."""

    def __init__(self, argocd: ArgoCD, app: str, namespace: str) -> None:
        self.argocd, self.app, self.namespace = argocd, app, namespace
        self.api = argocd.cluster.api()

    def read(self) -> tuple[AppState, dict[str, Any]]:
        return self.argocd.read(self.app, self.namespace, NAME, self.api)

    def until(self, checks: dict[str, Check], timeout: float = 120) -> dict[str, float]:
        first: dict[str, float] = {}
        deadline = time.monotonic() + timeout
        last: tuple[AppState, dict[str, Any]] | None = None
        while len(first) < len(checks):
            last = self.read()
            now = time.monotonic()
            for label, check in checks.items():
                if label not in first and check(*last):
                    first[label] = now
            if now > deadline:
                raise TimeoutError(f"waiting for {sorted(set(checks) - set(first))}; last: {last[0]}")
            time.sleep(POLL_SECONDS)
        return first


def stable_on(version: str) -> Check:
    return lambda _, body: serving_only(version)(body)


def suspended_at(revision: str) -> Check:
    return lambda app, _: app.revision == revision and app.health == "Suspended"


def synced_to(revision: str) -> Check:
    return lambda app, _: app.sync == "Synced" and app.revision == revision


def healthy_at(revision: str, version: str) -> Check:
    """Argo CD Synced to `revision` and Healthy, and the resource all stable on `version`."""
    return lambda app, body: (
        synced_to(revision)(app, body) and app.health == "Healthy" and stable_on(version)(app, body)
    )


def revert_times(argocd: ArgoCD, namespace: str, samples: int) -> dict[str, list[float]]:
    repo = GitRepo(argocd.git_url)
    app = f"bench-gitops-{uuid.uuid4().hex[:6]}"
    path = f"bench/{namespace}"
    figures: dict[str, list[float]] = {"pushed_ms": [], "synced_ms": [], "stable_ms": [], "healthy_ms": []}
    try:
        repo.write(f"{path}/{NAME}.yaml", [model_deployment(NAME, "1.0.0", STEPS)])
        first = repo.commit("bench: 1.0.0")
        argocd.create_application(app, path, namespace)
        follow = Follow(argocd, app, namespace)
        follow.until({"ready": lambda a, b: a.revision == first and a.health == "Healthy" and stable_on("1.0.0")(a, b)})
        for index in range(samples):
            version = f"2.0.{index}"
            repo.write(f"{path}/{NAME}.yaml", [model_deployment(NAME, version, STEPS)])
            bump = repo.commit(f"bench: {version}")
            argocd.hard_refresh(app, follow.api)
            follow.until({"paused": suspended_at(bump)})
            started = time.monotonic()
            revert = repo.revert(bump)
            pushed = time.monotonic()
            argocd.hard_refresh(app, follow.api)
            first_seen = follow.until(
                {"synced": synced_to(revert), "stable": stable_on("1.0.0"), "healthy": healthy_at(revert, "1.0.0")}
            )
            figures["pushed_ms"].append((pushed - started) * 1000)
            for label, at in first_seen.items():
                figures[f"{label}_ms"].append((at - started) * 1000)
            print(
                f"  sample {index + 1}: pushed {figures['pushed_ms'][-1]:.0f} ms, "
                f"synced {figures['synced_ms'][-1]:.0f} ms, stable {figures['stable_ms'][-1]:.0f} ms, "
                f"Healthy in Argo CD {figures['healthy_ms'][-1]:.0f} ms"
            )
        return figures
    finally:
        argocd.delete_application(app)
        repo.remove()


def describe(values: list[float]) -> str:
    if not values:
        return "no samples"
    return f"median {statistics.median(values):.0f} ms, worst {max(values):.0f} ms, n={len(values)}"


def main(argv: list[str] | None = None) -> int:
    parser = options("gitops", __doc__)
    parser.add_argument("--samples", type=int, default=5, help="reverts to time (default 5)")
    args = parser.parse_args(argv)

    cluster: Cluster = start_cluster(with_crd=True)
    start_argocd()
    argocd = ArgoCD.from_env(cluster)
    log_path = cluster_dir() / "logs" / "operator-bench-gitops.log"
    with scratch_namespace(cluster, "bench-gitops") as namespace, running_operator(cluster, log_path):
        figures = revert_times(argocd, namespace, args.samples)

    worst = max(figures["healthy_ms"], default=float("inf"))
    print()
    print("GitOps benchmark (Argo CD v2.14, git revert of a version mid-canary + hard refresh; one run, noisy)")
    print(f"  git revert -> committed and pushed:                    {describe(figures['pushed_ms'])}")
    print(f"  git revert -> Argo CD Synced to the revert commit:     {describe(figures['synced_ms'])}")
    print(f"  git revert -> ModelDeployment Healthy, 100% stable:    {describe(figures['stable_ms'])}")
    print(f"  git revert -> Application Synced and Healthy (the end): {describe(figures['healthy_ms'])}")
    print(f"    goal: <= {GOAL_MS:.0f} ms (Argo CD alone: ~0.9 s from commit + refresh to Synced)")
    if worst > GOAL_MS:
        print(f"    SHORT of goal: worst {worst:.0f} ms")
    write_json(bench_dir() / "gitops.json", figures)
    return 0
