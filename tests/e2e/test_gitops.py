"""GitOps end to end: a real Argo CD (v2.14, testkit/scripts/argocd-up.sh) syncs ModelDeployments from a git repository.

Argo CD runs beside the local control plane with our health check in argocd-cm; each test commits its own
directory of the repository, creates an Application for it (automated sync) and follows the Application's sync
and health together with the ModelDeployment it syncs. After every commit the test annotates the Application
for a hard refresh, as a git webhook would, instead of waiting for Argo CD's polling.

Argo CD is started by a session fixture when it is not running, and built first when it is not cached (6+
minutes). When it cannot be built or started the tests fail and say why; they never pass without running.
"""

from __future__ import annotations

import contextlib
import json
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from modeldeploy_testkit.argocd import AppState, ArgoCD, GitRepo, model_deployment, start_argocd, stop_argocd
from modeldeploy_testkit.cluster import CRASHLOOP_IMAGE, Cluster
from modeldeploy_testkit.resources import mdep, ready_pods_by_revision
from modeldeploy_testkit.scripts import StartError, keep_running
from modeldeploy_testkit.waiting import wait_until

# The first test's setup may build Argo CD (6+ minutes, more with cold Go caches) before anything runs.
pytestmark = [pytest.mark.gitops, pytest.mark.usefixtures("operator"), pytest.mark.timeout(1800)]

NAME = "scorer"
TIMED_STEPS = [{"setWeight": 50}, {"pause": {"duration": "5s"}}]
OPEN_STEPS = [{"setWeight": 50}, {"pause": {}}]


@pytest.fixture(scope="session")
def argocd(cluster: Cluster, crd: None, request: pytest.FixtureRequest) -> Iterator[ArgoCD]:
    # A build takes minutes: its progress goes to the terminal even when pytest captures output.
    capture = request.config.pluginmanager.getplugin("capturemanager")
    try:
        with capture.global_and_fixture_disabled() if capture else contextlib.nullcontext():
            started = start_argocd()
    except StartError as error:
        pytest.fail(f"Argo CD could not be started: {error}")
    yield ArgoCD.from_env(cluster)
    if started and not keep_running():
        stop_argocd()


@pytest.fixture
def repo(argocd: ArgoCD) -> Iterator[GitRepo]:
    working_copy = GitRepo(argocd.git_url)
    yield working_copy
    working_copy.remove()


@dataclass
class Seen:
    at: float
    app: AppState
    generation: int
    status: dict[str, Any]

    @property
    def observed(self) -> bool:
        return self.status.get("observedGeneration") == self.generation

    @property
    def ready(self) -> bool:
        conditions = self.status.get("conditions") or []
        return self.observed and any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)

    @property
    def stable_version(self) -> str:
        return str((self.status.get("stable") or {}).get("version", ""))

    @property
    def canary(self) -> dict[str, Any] | None:
        return self.status.get("canary")

    def __str__(self) -> str:
        return f"{self.app} | mdep phase={self.status.get('phase')} observed={self.observed}"


@dataclass
class GitOpsApp:
    """One Application syncing apps/<namespace>/ into the test's namespace, and everything seen of it."""

    argocd: ArgoCD
    repo: GitRepo
    namespace: str
    name: str
    seen: list[Seen] = field(default_factory=list)

    def __post_init__(self) -> None:
        # One client for the whole test: reading both objects every 50 ms should cost no new connections.
        self.api = self.argocd.cluster.api()

    @property
    def path(self) -> str:
        return f"apps/{self.namespace}"

    def commit(self, body: dict[str, Any], message: str) -> str:
        self.repo.write(f"{self.path}/{NAME}.yaml", [body])
        return self.repo.commit(message)

    def refresh(self) -> float:
        """Hard refresh, as a git webhook would ask; returns when it was asked (monotonic clock)."""
        asked = time.monotonic()
        self.argocd.hard_refresh(self.name, self.api)
        return asked

    def read(self) -> Seen:
        app, body = self.argocd.read(self.name, self.namespace, NAME, self.api)
        seen = Seen(time.monotonic(), app, body["metadata"]["generation"], body.get("status") or {})
        if not self.seen or str(self.seen[-1]) != str(seen):
            self.seen.append(seen)
            print(f"  {seen.at:.2f} {seen}")
        return seen

    def until(self, check: Callable[[Seen], bool], what: str, timeout: float = 90) -> Seen:
        last: list[Seen] = []

        def poll() -> Seen | None:
            seen = self.read()
            last[:] = [seen]
            return seen if check(seen) else None

        try:
            return wait_until(poll, timeout=timeout, interval=0.05, what=what)
        except AssertionError as error:
            raise AssertionError(f"{error}\nlast seen: {last[0] if last else None}") from None

    def since(self, at: float) -> list[Seen]:
        """Every change seen from `at` on."""
        return [s for s in self.seen if s.at >= at]

    def in_force_since(self, at: float) -> list[Seen]:
        """Every state in force from `at` on: the one seen last before it, and each change after it."""
        return [s for s in self.seen if s.at < at][-1:] + self.since(at)


@pytest.fixture
def app(argocd: ArgoCD, repo: GitRepo, namespace: str) -> Iterator[GitOpsApp]:
    gitops = GitOpsApp(argocd, repo, namespace, f"gitops-{uuid.uuid4().hex[:8]}")
    yield gitops
    argocd.delete_application(gitops.name)


def synced_at(revision: str) -> Callable[[Seen], bool]:
    return lambda s: s.app.sync == "Synced" and s.app.revision == revision


def healthy_on(revision: str, version: str) -> Callable[[Seen], bool]:
    def check(s: Seen) -> bool:
        return synced_at(revision)(s) and s.app.health == "Healthy" and s.stable_version == version and not s.canary

    return check


def assert_synced_throughout(seen: list[Seen], revision: str) -> None:
    """Nothing the operator wrote (status, children) made the Application OutOfSync after it synced `revision`."""
    assert seen, "nothing seen"
    drifted = [str(s) for s in seen if not synced_at(revision)(s)]
    assert not drifted, "the Application left Synced:\n" + "\n".join(drifted)


def deploy(app: GitOpsApp, steps: list[dict[str, Any]]) -> tuple[str, Seen]:
    """Commits version 1.0.0, creates the Application and waits for Synced and Healthy."""
    first = app.commit(model_deployment(NAME, "1.0.0", steps), f"{NAME} 1.0.0")
    app.argocd.create_application(app.name, app.path, app.namespace)
    healthy = app.until(healthy_on(first, "1.0.0"), "the first sync to be Synced and Healthy")
    return first, healthy


def test_application_syncs_a_model_deployment_and_is_healthy_once_it_is_ready(app: GitOpsApp) -> None:
    first, healthy = deploy(app, TIMED_STEPS)
    after_sync = [s for s in app.seen if s.generation > 0]
    # Until our resource is Ready, Argo CD calls the application Progressing, never Healthy.
    assert any(s.app.health == "Progressing" for s in after_sync), [str(s) for s in after_sync]
    early = [str(s) for s in after_sync if s.app.health == "Healthy" and not s.ready]
    assert not early, "Healthy before the ModelDeployment was Ready:\n" + "\n".join(early)
    assert healthy.ready
    assert healthy.status["stable"]["readyReplicas"] == 4
    assert healthy.app.resource_health == "Healthy"
    app.until(lambda s: s.app.resource_message == s.status["message"], "Argo CD to show the status's message")
    # It stays so: nothing the operator writes later is a difference from git.
    settled = time.monotonic()
    app.until(lambda s: s.at - settled > 3, "3 s of watching")
    assert_synced_throughout(app.in_force_since(settled), first)
    assert all(s.app.health == "Healthy" for s in app.in_force_since(settled))


def test_version_bump_is_progressing_suspended_at_the_pause_and_healthy_after_promote(
    app: GitOpsApp, cluster: Cluster
) -> None:
    deploy(app, OPEN_STEPS)
    bump = app.commit(model_deployment(NAME, "2.0.0", OPEN_STEPS), f"{NAME} 2.0.0")
    app.refresh()
    synced = app.until(synced_at(bump), "the bump to be synced")
    suspended = app.until(lambda s: s.app.health == "Suspended", "Suspended at the open pause")
    assert suspended.status["phase"] == "Paused"
    assert suspended.status["canary"]["version"] == "2.0.0"
    # The pause holds it there: the stable revision gives up its pods until the weight is met, and stays so.
    # Argo CD follows: the message it shows is the status's own.
    paused = app.until(
        lambda s: (s.canary or {}).get("actualWeight") == 50 and s.app.resource_message == s.status["message"],
        "50% of ready pods on the canary, as Argo CD shows it",
    )
    assert paused.app.health == "Suspended"
    # On the way there: the new revision rolling out is Progressing, never Healthy.
    on_the_way = [s for s in app.since(synced.at) if s.at < suspended.at]
    assert any(s.app.health == "Progressing" for s in on_the_way), [str(s) for s in on_the_way]
    assert not [s for s in on_the_way if s.app.health == "Healthy" and synced_at(bump)(s)]

    mdep(cluster, app.namespace, "promote", NAME)
    promoted = app.until(healthy_on(bump, "2.0.0"), "Healthy on 2.0.0 after promote")
    assert promoted.ready

    # Abort is the other command: Degraded (as the status says), still Synced with git.
    committed = time.monotonic()
    third = app.commit(model_deployment(NAME, "3.0.0", OPEN_STEPS), f"{NAME} 3.0.0")
    app.refresh()
    resynced = app.until(synced_at(third), "the second bump to be synced")
    app.until(lambda s: s.app.health == "Suspended", "Suspended on 3.0.0")
    mdep(cluster, app.namespace, "abort", NAME)
    aborted = app.until(lambda s: s.app.health == "Degraded", "Degraded after abort")
    assert aborted.status["aborted"]["version"] == "3.0.0"
    app.until(lambda s: s.app.resource_message == s.status["message"], "Argo CD to show the abort's message")

    # A hard refresh compares everything with git again: the operator's writes are no difference.
    asked = app.refresh()
    app.until(lambda s: s.at - asked > 3, "3 s after a hard refresh")
    assert_synced_throughout([s for s in app.since(synced.at) if s.at < committed], bump)
    assert_synced_throughout(app.since(resynced.at), third)


def test_git_revert_mid_canary_returns_to_all_stable_and_healthy(app: GitOpsApp, cluster: Cluster) -> None:
    _, before = deploy(app, OPEN_STEPS)
    stable = before.status["stable"]["revision"]
    bump = app.commit(model_deployment(NAME, "2.0.0", OPEN_STEPS), f"{NAME} 2.0.0")
    app.refresh()
    app.until(lambda s: synced_at(bump)(s) and s.app.health == "Suspended", "the canary at its pause")

    revert = app.repo.revert(bump)
    asked = app.refresh()
    done = app.until(healthy_on(revert, "1.0.0"), "the revert to be synced, all stable and Healthy")
    seconds = done.at - asked
    print(f"\ngit revert + hard refresh -> Synced, 100% stable and Healthy: {seconds:.2f} s")
    assert done.status["stable"]["revision"] == stable
    assert done.status["history"][0]["outcome"] == "RolledBack"
    assert done.status["history"][0]["reason"] == "SpecReverted"
    wait_until(
        lambda: ready_pods_by_revision(cluster, app.namespace) == {stable: 4},
        timeout=30,
        what="only the stable revision's 4 pods to be ready",
    )
    assert_synced_throughout(app.since(done.at), revert)
    # Generous on a loaded 2-core machine; the gitops benchmark holds the goal (1.5 s).
    assert seconds < 15


def test_failed_revision_is_degraded_with_our_message(app: GitOpsApp) -> None:
    deploy(app, TIMED_STEPS)
    broken = model_deployment(NAME, "2.0.0", TIMED_STEPS, image=CRASHLOOP_IMAGE, deadline_seconds=10)
    bad = app.commit(broken, f"{NAME} 2.0.0 (never gets Ready)")
    app.refresh()
    degraded = app.until(
        lambda s: synced_at(bad)(s) and s.app.health == "Degraded", "Degraded after the deadline", timeout=60
    )
    message = degraded.app.resource_message
    assert message == degraded.status["message"]
    assert "did not get Ready within 10s" in message
    assert "rolled back" in message
    assert degraded.stable_version == "1.0.0"
    condition = next(c for c in degraded.status["conditions"] if c["type"] == "Degraded")
    assert condition["reason"] == "ProgressDeadlineExceeded"


def routed(version: str) -> dict[str, Any]:
    body = model_deployment(NAME, version, OPEN_STEPS)
    body["spec"]["trafficRouting"] = {"istio": {"hosts": [f"{NAME}.example.com"]}}
    return body


@pytest.mark.usefixtures("route_crds")
def test_a_rollout_behind_a_router_stays_synced(app: GitOpsApp, cluster: Cluster) -> None:
    """The VirtualService is the operator's (owned by the resource, not in git): its weights moving during the
    rollout are no difference from git. No Istio control plane runs here; the object is what is checked."""
    first = app.commit(routed("1.0.0"), f"{NAME} 1.0.0 behind Istio")
    app.argocd.create_application(app.name, app.path, app.namespace)
    app.until(healthy_on(first, "1.0.0"), "the first sync to be Synced and Healthy")
    bump = app.commit(routed("2.0.0"), f"{NAME} 2.0.0 behind Istio")
    app.refresh()
    synced = app.until(synced_at(bump), "the bump to be synced")
    paused = app.until(
        lambda s: s.app.health == "Suspended" and (s.canary or {}).get("actualWeight") == 50, "Suspended at 50 %"
    )
    route = cluster.kubectl("get", "virtualservices.networking.istio.io", NAME, "-n", app.namespace, "-o", "json")
    weights = [entry["weight"] for entry in json.loads(route.stdout)["spec"]["http"][0]["route"]]
    assert weights == [50, 50]
    assert paused.status["stable"]["readyReplicas"] == 4  # behind a router the stable keeps every pod
    mdep(cluster, app.namespace, "promote", NAME)
    app.until(healthy_on(bump, "2.0.0"), "Healthy on 2.0.0 after promote")
    asked = app.refresh()
    app.until(lambda s: s.at - asked > 3, "3 s after a hard refresh")
    assert_synced_throughout(app.since(synced.at), bump)


def autoscaled(version: str) -> dict[str, Any]:
    """As in git with spec.autoscaling: no spec.replicas (the autoscaler owns the count), a CPU request."""
    body = model_deployment(NAME, version, OPEN_STEPS)
    del body["spec"]["replicas"]
    body["spec"]["runtime"] = {**body["spec"].get("runtime", {}), "resources": {"requests": {"cpu": "100m"}}}
    body["spec"]["autoscaling"] = {"minReplicas": 3, "maxReplicas": 6}
    return body


def test_an_autoscaled_rollout_stays_synced_while_the_autoscaler_sets_the_replicas(
    app: GitOpsApp, cluster: Cluster
) -> None:
    """spec.autoscaling in git, spec.replicas not: the HPA the operator owns writes spec.replicas through the scale
    subresource, and Argo CD sees no difference from git, without any ignoreDifferences."""
    first = app.commit(autoscaled("1.0.0"), f"{NAME} 1.0.0, autoscaled")
    app.argocd.create_application(app.name, app.path, app.namespace)
    synced = app.until(synced_at(first), "the first sync")
    scaled = app.until(
        lambda s: healthy_on(first, "1.0.0")(s) and s.status["stable"]["readyReplicas"] == 3,
        "Healthy with the autoscaler's 3 pods",
    )
    resource = json.loads(cluster.kubectl("get", "mdep", NAME, "-n", app.namespace, "-o", "json").stdout)
    assert resource["spec"]["replicas"] == 3, "set by the autoscaler through the scale subresource"
    hpa = json.loads(cluster.kubectl("get", "hpa", NAME, "-n", app.namespace, "-o", "json").stdout)
    assert hpa["metadata"]["ownerReferences"][0]["name"] == NAME
    assert_synced_throughout(app.since(scaled.at), first)

    bump = app.commit(autoscaled("2.0.0"), f"{NAME} 2.0.0, autoscaled")
    app.refresh()
    bumped = app.until(synced_at(bump), "the bump to be synced")
    app.until(lambda s: s.app.health == "Suspended" and (s.canary or {}).get("actualWeight") is not None, "Suspended")
    mdep(cluster, app.namespace, "promote", NAME)
    app.until(lambda s: healthy_on(bump, "2.0.0")(s) and s.status["stable"]["readyReplicas"] == 3, "Healthy on 2.0.0")
    asked = app.refresh()
    app.until(lambda s: s.at - asked > 3, "3 s after a hard refresh")
    assert_synced_throughout(app.since(bumped.at), bump)
    assert synced.app.sync == "Synced"
