"""When reconcile() writes status: at once for a meaningful change, later (once) for ready counts alone, never for
a resource whose namespace is being deleted. Whole passes against the in-memory API server (fake_cluster.py)."""

from __future__ import annotations

import asyncio
import copy
from collections import Counter
from datetime import timedelta
from typing import Any, cast

import pytest

from modeldeploy.children import builders
from modeldeploy.config import OperatorConfig
from modeldeploy.controller.queue import Controller
from modeldeploy.controller.reconcile import reconcile
from modeldeploy.controller.store import REFUSAL_MARK_SECONDS, Store
from modeldeploy.kube.client import ApiError, Kube
from modeldeploy.rollout.changes import COUNTS_LAG_SECONDS

from .fake_cluster import FakeCluster
from .test_reconcile import START, STATUS_WRITE, Harness, with_version

FOUR: dict[str, Any] = {
    "model": {"version": "1.0.0", "uri": "s3://models/fraud/1.0.0/model.joblib"},
    "replicas": 4,
    "rollout": {"steps": [{"setWeight": 25}, {"pause": {}}]},
}


class Passes(Harness):
    """The reconcile harness, with the requeue each pass asks for and pods made Ready one at a time."""

    requeue: float | None = None

    def run(self, advance: timedelta = timedelta(0)) -> Counter[str]:
        self.now += advance
        before = Counter(self.cluster.writes)
        self.requeue = reconcile(self.cluster, self.store, self.config, self.key, self.now, self.queriers)
        return self.cluster.writes - before

    def set_ready(self, revision: str, ready: int) -> None:
        """The revision's Deployment shows `ready` Ready pods (its controller caught up), as its watch event would."""
        for body in self.cluster.of_kind("Deployment").values():
            if body["metadata"]["labels"][builders.LABEL_REVISION] == revision:
                body["status"] = {
                    "observedGeneration": body["metadata"]["generation"],
                    "replicas": body["spec"]["replicas"],
                    "readyReplicas": ready,
                }
                body["metadata"]["resourceVersion"] = self.cluster._next_version()
                self.store.put_child(copy.deepcopy(body))
                return
        raise AssertionError(f"no Deployment of revision {revision}")

    def stable(self) -> dict[str, Any]:
        return cast(dict[str, Any], self.status["stable"])

    def condition(self, kind: str) -> str:
        return str(next(c["status"] for c in self.status["conditions"] if c["type"] == kind))


@pytest.fixture
def passes(config: OperatorConfig) -> Passes:
    return Passes(config, FOUR)


def test_ready_counts_alone_are_written_once_after_the_quiet_period(passes: Passes) -> None:
    passes.run()
    passes.run()  # sees the Deployment it created: the replicas it asks for go into status
    revision = passes.stable()["revision"]
    assert passes.condition("Available") == "False"

    # The first Ready pod flips Available: written at once.
    passes.set_ready(revision, 1)
    assert passes.run(timedelta(seconds=1))[STATUS_WRITE] == 1
    assert passes.condition("Available") == "True"
    assert passes.stable()["readyReplicas"] == 1

    # More pods Ready change nothing but counts (and the counts in the messages): no write, a look again later.
    passes.set_ready(revision, 2)
    assert passes.run(timedelta(seconds=1)) == Counter()
    assert passes.requeue == COUNTS_LAG_SECONDS
    passes.set_ready(revision, 3)
    assert passes.run(timedelta(seconds=10)) == Counter()
    assert passes.requeue == pytest.approx(COUNTS_LAG_SECONDS - 10)
    assert passes.stable()["readyReplicas"] == 1

    # The quiet period is over: the counts are written once, by themselves.
    assert passes.run(timedelta(seconds=20)) == Counter({STATUS_WRITE: 1})
    assert passes.stable()["readyReplicas"] == 3
    assert "3/4 replicas" in passes.status["message"]
    assert passes.run(timedelta(seconds=31)) == Counter()
    assert passes.run(timedelta(seconds=31)) == Counter()
    assert passes.store.counts_behind_since(passes.key) is None

    # The last pod settles the revision: Healthy, written at once.
    passes.set_ready(revision, 4)
    assert passes.run(timedelta(seconds=1))[STATUS_WRITE] == 1
    assert passes.status["phase"] == "Healthy"
    assert passes.stable()["readyReplicas"] == 4


def test_a_meaningful_write_carries_the_counts_waiting(passes: Passes) -> None:
    passes.run()
    passes.run()
    revision = passes.stable()["revision"]
    passes.set_ready(revision, 1)
    passes.run(timedelta(seconds=1))
    passes.set_ready(revision, 3)
    assert passes.run(timedelta(seconds=1)) == Counter()
    # A spec change (one that leaves the children as they are) is written at once, with the counts as they are now.
    passes.cluster.update_spec(passes.key, {**FOUR, "rollout": {**FOUR["rollout"], "progressDeadlineSeconds": 900}})
    passes.observe()
    assert passes.run(timedelta(seconds=1))[STATUS_WRITE] == 1
    assert passes.stable()["readyReplicas"] == 3
    # Nothing is left waiting.
    assert passes.run(timedelta(seconds=COUNTS_LAG_SECONDS + 1)) == Counter()


def test_a_count_that_flips_ready_is_written_at_once(passes: Passes) -> None:
    passes.settle()
    assert passes.status["phase"] == "Healthy"
    assert passes.condition("Ready") == "True"
    passes.set_ready(passes.stable()["revision"], 3)
    assert passes.run(timedelta(seconds=1))[STATUS_WRITE] == 1
    assert passes.condition("Ready") == "False"
    assert passes.status["phase"] == "Progressing"
    assert passes.stable()["readyReplicas"] == 3


def test_a_pod_ready_again_mid_rollout_writes_nothing(passes: Passes) -> None:
    passes.settle()
    passes.cluster.update_spec(passes.key, with_version(FOUR, "2.0.0"))
    passes.observe()
    passes.settle()
    assert passes.status["phase"] == "Paused"
    assert passes.status["pause"]["reason"] == "PromotionRequired"
    stable = passes.stable()
    assert (stable["replicas"], stable["readyReplicas"], passes.status["canary"]["actualWeight"]) == (3, 3, 25)
    written = passes.cluster.writes[STATUS_WRITE]

    # A stable pod is lost and comes back within the quiet period: the weight moves, nothing else does.
    passes.set_ready(stable["revision"], 2)
    assert passes.run(timedelta(seconds=1)) == Counter()
    passes.set_ready(stable["revision"], 3)
    assert passes.run(timedelta(seconds=5)) == Counter()
    # Back as stored: nothing waits any more.
    assert passes.run(timedelta(seconds=COUNTS_LAG_SECONDS)) == Counter()
    assert passes.cluster.writes[STATUS_WRITE] == written


# --- namespaces being deleted ------------------------------------------------------------------------------------


def test_nothing_is_written_in_a_namespace_being_deleted(passes: Passes) -> None:
    passes.settle()
    passes.cluster.update_spec(passes.key, with_version(FOUR, "2.0.0"))
    passes.observe()
    assert passes.store.observe_namespace("models", "uid-ns-1", terminating=True)
    before = Counter(passes.cluster.writes)
    assert passes.run(timedelta(seconds=1)) == Counter()
    assert passes.requeue is None
    assert passes.cluster.writes == before
    # Deleted and created again under the same name (its ADDED event shows no deletionTimestamp): writable again.
    passes.store.observe_namespace("models", "uid-ns-2", terminating=False)
    assert passes.run(timedelta(seconds=1))[STATUS_WRITE] == 1


def test_the_namespace_watch_marks_by_uid_and_clears_on_deletion() -> None:
    store = Store()
    assert store.observe_namespace("team", "uid-1", terminating=True)
    assert not store.observe_namespace("team", "uid-1", terminating=True), "no news the second time"
    assert store.namespace_terminating("team")
    assert not store.namespace_terminating("other")
    store.observe_namespace("team", "uid-1", terminating=True, gone=True)
    assert not store.namespace_terminating("team")
    assert store.observe_namespace("team", "uid-2", terminating=True), "another namespace of that name"


def resource(name: str, namespace: str, created: str) -> dict[str, Any]:
    return {
        "metadata": {
            "name": name,
            "namespace": namespace,
            "uid": f"uid-{name}",
            "resourceVersion": "5",
            "creationTimestamp": created,
        }
    }


def test_a_refusal_mark_ends_when_the_namespace_is_emptied_or_created_again() -> None:
    clock = [1000.0]
    store = Store(clock=lambda: clock[0])
    store.put_parent(resource("a", "team", "2026-12-01T11:00:00Z"))
    store.put_parent(resource("b", "team", "2026-12-01T11:00:00Z"))
    assert store.namespace_refused("team", START)
    assert not store.namespace_refused("team", START), "no news the second time"
    store.remove_parent(("team", "a"))
    assert store.namespace_terminating("team")
    store.forget(("team", "b"))
    assert not store.namespace_terminating("team"), "every resource of it went with it"

    # A resource created after the refusal cannot be in the namespace that refused: it was created again.
    store.put_parent(resource("c", "team", "2026-12-01T11:00:00Z"))
    store.namespace_refused("team", START)
    store.put_parent(resource("c", "team", "2026-12-01T11:00:00Z"))
    assert store.namespace_terminating("team")
    store.put_parent(resource("d", "team", "2026-12-01T12:00:01Z"))
    assert not store.namespace_terminating("team")

    # And at the latest after REFUSAL_MARK_SECONDS.
    store.namespace_refused("team", START)
    clock[0] += REFUSAL_MARK_SECONDS
    assert store.namespace_terminating("team")
    clock[0] += 1
    assert not store.namespace_terminating("team")
    assert store.namespace_refused("team", START), "learned again from the next refusal"
    clock[0] += REFUSAL_MARK_SECONDS + 1
    assert store.namespace_refused("team", START), "an expired mark is no mark"


def two_resources(config: OperatorConfig) -> tuple[FakeCluster, Controller, list[tuple[str, str]]]:
    """Two Healthy resources in `models`, each with a new version in its spec that no pass has seen yet."""
    cluster = FakeCluster()
    controller = Controller(cast(Kube, cluster), config)
    cluster.on_namespace_terminating = controller.namespace_refused
    keys = [cluster.create_resource(FOUR, name=name) for name in ("first", "second")]
    for key in keys:
        controller.store.put_parent(copy.deepcopy(cluster.resource(key)))
        for _ in range(4):
            reconcile(cluster, controller.store, config, key, START)
            cluster.make_ready(controller.store)
        assert cluster.status(key)["phase"] == "Healthy"
        cluster.update_spec(key, with_version(FOUR, "2.0.0"))
        controller.store.put_parent(copy.deepcopy(cluster.resource(key)))
    return cluster, controller, keys


def test_without_a_namespace_watch_a_refused_event_stops_the_writes(config: OperatorConfig) -> None:
    async def scenario() -> None:
        cluster, controller, (first, second) = two_resources(config)
        cluster.terminating.add("models")
        before = Counter(cluster.writes)
        # The first resource's pass: `first` (an existing Service) is widened for the rollout, then the create of
        # `first-stable` is refused at once; the status patch would not be.
        with pytest.raises(ApiError):
            await controller._reconcile(first)
        assert controller.store.namespace_terminating("models")
        assert cluster.writes - before == Counter({"apply Service": 2})
        assert await controller._reconcile(second) is None
        assert cluster.writes - before == Counter({"apply Service": 2})
        await controller.queue.stop()

    asyncio.run(scenario())


def test_a_refused_event_alone_teaches_it_too(config: OperatorConfig) -> None:
    cluster, controller, (first, second) = two_resources(config)
    for key in (first, second):
        cluster.update_spec(key, {**FOUR, "replicas": 3})  # only scales: no create, a status write and an Event
        controller.store.put_parent(copy.deepcopy(cluster.resource(key)))
    cluster.terminating.add("models")
    before = Counter(cluster.writes)
    reconcile(cluster, controller.store, config, first, START)
    # What the API server let through went through; the refused Event says the namespace is going.
    assert (cluster.writes - before)[STATUS_WRITE] == 1
    assert (cluster.writes - before)["create Event"] >= 1
    assert controller.store.namespace_terminating("models")
    before = Counter(cluster.writes)
    assert reconcile(cluster, controller.store, config, second, START) is None
    assert cluster.writes == before

    # The namespace goes with its resources and is created again: its new resources are written.
    controller.observe_resource("DELETED", cluster.resource(first))
    controller.observe_resource("DELETED", cluster.resource(second))
    cluster.terminating.clear()
    assert not controller.store.namespace_terminating("models")
    fresh = cluster.create_resource(FOUR, name="fresh")
    controller.store.put_parent(copy.deepcopy(cluster.resource(fresh)))
    reconcile(cluster, controller.store, config, fresh, START)
    assert cluster.status(fresh)["observedGeneration"] == 1


def test_with_a_namespace_watch_refusals_are_left_to_it(config: OperatorConfig) -> None:
    cluster, controller, (first, _) = two_resources(config)
    controller.namespaces_watched = True
    cluster.terminating.add("models")
    with pytest.raises(ApiError):
        reconcile(cluster, controller.store, config, first, START)
    assert not controller.store.namespace_terminating("models")


def test_a_namespace_event_drops_the_work_of_its_resources(config: OperatorConfig) -> None:
    async def scenario() -> None:
        cluster = FakeCluster()
        doomed = cluster.create_resource(FOUR, name="doomed")
        other = cluster.create_resource(FOUR, name="other", namespace="team-b")
        controller = Controller(cast(Kube, cluster), config)
        controller.namespaces_watched = True
        for key in (doomed, other):
            controller.observe_resource(None, copy.deepcopy(cluster.resource(key)))
            controller.queue.add_after(key, 60.0)
        namespace = {"metadata": {"name": "models", "uid": "uid-ns-1"}, "status": {"phase": "Active"}}
        controller.observe_namespace(None, namespace)
        assert not controller.store.namespace_terminating("models")
        namespace["metadata"]["deletionTimestamp"] = "2026-12-01T12:00:00Z"
        controller.observe_namespace("MODIFIED", namespace)
        assert controller.store.namespace_terminating("models")
        assert doomed not in controller.queue._timers
        assert other in controller.queue._timers
        # A pass already queued finds nothing to write.
        assert await controller._reconcile(doomed) is None
        assert cluster.writes == Counter()
        # Gone, then created again: writable again.
        controller.observe_namespace("DELETED", namespace)
        assert not controller.store.namespace_terminating("models")
        controller.observe_namespace(
            "MODIFIED", {"metadata": {"name": "models", "uid": "u"}, "status": {"phase": "Terminating"}}
        )
        assert controller.store.namespace_terminating("models"), "the phase says so too"
        controller.observe_namespace("ADDED", {"metadata": {"name": "models", "uid": "uid-ns-2"}})
        assert not controller.store.namespace_terminating("models")
        await controller.queue.stop()

    asyncio.run(scenario())


def test_the_namespaces_being_deleted_are_known_before_the_first_pass(config: OperatorConfig) -> None:
    cluster = FakeCluster()
    cluster.create_resource(FOUR, name="live")
    cluster.terminating.add("going")
    controller = Controller(cast(Kube, cluster), config)
    controller.load_namespaces()
    assert controller.store.namespace_terminating("going")
    assert not controller.store.namespace_terminating("models")
