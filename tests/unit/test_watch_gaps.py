"""Watch gaps: a re-list reports no DELETED for what went meanwhile, so the Store is compared with a list of the
resources, and a 404 on a resource's status write ends its work. Against the in-memory API server."""

from __future__ import annotations

import asyncio
import copy
from collections import Counter
from typing import cast

import pytest

from modeldeploy.children.builders import LABEL_MANAGED_BY, MANAGED_BY
from modeldeploy.config import OperatorConfig
from modeldeploy.controller import orphans
from modeldeploy.controller import queue as queue_module
from modeldeploy.controller.queue import Controller
from modeldeploy.controller.reconcile import reconcile
from modeldeploy.controller.store import Key, Store
from modeldeploy.kube.client import ApiError, Kube

from .fake_cluster import FakeCluster
from .test_reconcile import SPEC, START


def controller_of(cluster: FakeCluster, config: OperatorConfig) -> Controller:
    return Controller(cast(Kube, cluster), config)


def listed(cluster: FakeCluster, controller: Controller) -> None:
    """What a (re-)list shows the controller: every resource the cluster holds, with no event type."""
    for (kind, _, _), body in list(cluster.objects.items()):
        if kind == "ModelDeployment":
            controller.observe_resource(None, copy.deepcopy(body))


def test_a_resource_deleted_during_a_watch_gap_is_dropped_with_its_work(config: OperatorConfig) -> None:
    async def scenario() -> None:
        cluster = FakeCluster()
        kept = cluster.create_resource(SPEC, name="kept")
        gone = cluster.create_resource(SPEC, name="gone")
        other = cluster.create_resource(SPEC, name="other", namespace="team-b")
        controller = controller_of(cluster, config)
        listed(cluster, controller)
        controller.queue.add_after(gone, 60.0)
        cluster.delete_resource(gone)
        # The re-list after the gap shows what is left, and nothing says `gone` went.
        listed(cluster, controller)
        assert await controller.sweep() == [gone]
        assert sorted(controller.store.keys()) == sorted([kept, other])
        assert gone not in controller.queue._timers
        # A pass for it (already queued) finds nothing to do and writes nothing.
        assert await controller._reconcile(gone) is None
        assert cluster.writes == Counter()
        assert cluster.reads["list ModelDeployment"] == 2, "one metadata list per namespace"
        await controller.queue.stop()

    asyncio.run(scenario())


def test_a_resource_created_after_the_list_is_kept() -> None:
    store = Store()
    cluster = FakeCluster()
    key = cluster.create_resource(SPEC)
    list_version, items = cluster.list_resource_versions("models")
    store.put_parent(copy.deepcopy(cluster.resource(key)))
    assert store.absent("models", set(items), list_version) == []
    late = cluster.create_resource(SPEC, name="late")
    store.put_parent(copy.deepcopy(cluster.resource(late)))
    assert store.absent("models", set(items), list_version) == []
    cluster.delete_resource(late)
    list_version, items = cluster.list_resource_versions("models")
    assert [key for key, _ in store.absent("models", set(items), list_version)] == [late]


def test_a_404_on_the_status_write_ends_the_work_and_children_are_not_applied_again(config: OperatorConfig) -> None:
    async def scenario() -> None:
        cluster = FakeCluster()
        key = cluster.create_resource(SPEC)
        controller = controller_of(cluster, config)
        controller.observe_resource("ADDED", copy.deepcopy(cluster.resource(key)))
        cluster.delete_resource(key)
        assert await controller._reconcile(key) is None  # no error: nothing to retry
        applied = cluster.writes["apply Deployment"]
        assert controller.store.snapshot(key)[0] is None
        assert key not in controller.queue._timers
        assert await controller._reconcile(key) is None
        assert cluster.writes["apply Deployment"] == applied
        await controller.queue.stop()

    asyncio.run(scenario())


def test_a_failed_list_drops_nothing(config: OperatorConfig) -> None:
    async def scenario() -> None:
        cluster = FakeCluster()
        key = cluster.create_resource(SPEC)
        controller = controller_of(cluster, config)
        listed(cluster, controller)
        cluster.delete_resource(key)
        cluster.fail_next["list_resource_versions"] = ApiError(503, "Service Unavailable", "{}")
        assert await controller.sweep() == []
        assert controller.store.keys() == [key]
        assert await controller.sweep() == [key]
        await controller.queue.stop()

    asyncio.run(scenario())


def test_a_relist_starts_the_comparison_by_itself(config: OperatorConfig, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(queue_module, "RELIST_SETTLE_SECONDS", 0.01)

    async def scenario() -> None:
        cluster = FakeCluster()
        key = cluster.create_resource(SPEC)
        gone = cluster.create_resource(SPEC, name="gone")
        controller = controller_of(cluster, config)
        listed(cluster, controller)
        cluster.delete_resource(gone)
        listed(cluster, controller)  # kopf's re-list: objects with no event type
        for _ in range(200):
            if controller.store.keys() == [key]:
                break
            await asyncio.sleep(0.01)
        assert controller.store.keys() == [key]
        await controller.queue.stop()

    asyncio.run(scenario())


# --- children that garbage collection missed ------------------------------------------------------------------------


def children_of(cluster: FakeCluster, name: str) -> list[str]:
    return sorted(
        f"{kind}/{child}"
        for (kind, _, child), body in cluster.objects.items()
        if kind in orphans.CHILD_KINDS
        and any(ref.get("name") == name for ref in body["metadata"].get("ownerReferences") or [])
    )


def served(cluster: FakeCluster, config: OperatorConfig, name: str) -> Key:
    """A resource whose first pass made its children."""
    key = cluster.create_resource(SPEC, name=name)
    store = Store()
    store.put_parent(copy.deepcopy(cluster.resource(key)))
    reconcile(cluster, store, config, key, START)
    assert children_of(cluster, name)
    return key


def test_children_of_a_deleted_resource_are_orphans_and_of_a_live_one_not(config: OperatorConfig) -> None:
    cluster = FakeCluster()
    served(cluster, config, "kept")
    gone = served(cluster, config, "gone")
    cluster.delete_resource_only(gone)
    found = orphans.find(cluster, "models")
    assert sorted(f"{child['kind']}/{child['metadata']['name']}" for child in found) == children_of(cluster, "gone")
    deleted = orphans.collect(cluster, "models", found)
    assert len(deleted) == len(found)
    assert children_of(cluster, "gone") == []
    assert children_of(cluster, "kept") != []
    assert orphans.find(cluster, "models") == []


def test_a_predecessors_children_are_orphans_once_the_name_has_another_uid(config: OperatorConfig) -> None:
    cluster = FakeCluster()
    key = served(cluster, config, "again")
    before = children_of(cluster, "again")
    # Deleted and created again under the name during the gap: the collector saw one object change.
    cluster.delete_resource_only(key)
    cluster.create_resource(SPEC, name="again")
    cluster.resource(key)["metadata"]["uid"] = "uid-again-2"
    found = orphans.find(cluster, "models")
    assert sorted(f"{child['kind']}/{child['metadata']['name']}" for child in found) == before
    orphans.collect(cluster, "models", found)
    assert children_of(cluster, "again") == []


def test_collection_spares_what_changed_since_it_looked(config: OperatorConfig) -> None:
    cluster = FakeCluster()
    gone = served(cluster, config, "gone")
    cluster.delete_resource_only(gone)
    found = orphans.find(cluster, "models")
    # Meanwhile the resource is back (the same uid: the list was behind) and one child is another object now.
    cluster.create_resource(SPEC, name="gone")
    assert orphans.collect(cluster, "models", found) == []
    cluster.delete_resource_only(gone)
    service = cluster.objects[("Service", "models", "gone")]
    service["metadata"]["uid"] = "uid-someone-elses"
    deleted = orphans.collect(cluster, "models", found)
    assert ("Service", "gone") not in {(child["kind"], child["metadata"]["name"]) for child in deleted}
    assert ("Service", "models", "gone") in cluster.objects, "created under the name since: never deleted"


def test_objects_without_our_controller_are_never_orphans() -> None:
    cluster = FakeCluster()
    labels = {LABEL_MANAGED_BY: MANAGED_BY}
    cluster.add_foreign(
        {"kind": "Service", "metadata": {"name": "plain", "namespace": "models", "uid": "u-1", "labels": labels}}
    )
    cluster.add_foreign(
        {
            "kind": "Service",
            "metadata": {
                "name": "other",
                "namespace": "models",
                "uid": "u-2",
                "labels": labels,
                "ownerReferences": [
                    {"apiVersion": "v1", "kind": "ConfigMap", "name": "x", "uid": "u-3", "controller": True}
                ],
            },
        }
    )
    assert orphans.find(cluster, "models") == []


def test_a_relist_collects_the_orphans_after_the_grace_period(
    config: OperatorConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(queue_module, "RELIST_SETTLE_SECONDS", 0.01)
    monkeypatch.setattr(orphans, "ORPHAN_GRACE_SECONDS", 0.05)

    async def scenario() -> None:
        cluster = FakeCluster()
        served(cluster, config, "kept")
        gone = served(cluster, config, "gone")
        controller = controller_of(cluster, config)
        listed(cluster, controller)
        cluster.delete_resource_only(gone)
        listed(cluster, controller)  # the re-list after the gap
        for _ in range(300):
            if not children_of(cluster, "gone"):
                break
            await asyncio.sleep(0.01)
        assert children_of(cluster, "gone") == []
        assert children_of(cluster, "kept") != []
        await controller.queue.stop()

    asyncio.run(scenario())


def test_watch_events_alone_do_not_look_for_orphans(config: OperatorConfig) -> None:
    async def scenario() -> None:
        cluster = FakeCluster()
        key = served(cluster, config, "one")
        controller = controller_of(cluster, config)
        controller.observe_resource("ADDED", copy.deepcopy(cluster.resource(key)))
        await controller.sweep()
        assert cluster.reads["list Deployment"] == 0, "no list of children without a re-list"
        await controller.queue.stop()

    asyncio.run(scenario())


def test_children_collected_for_a_resource_deleted_in_the_gap_are_not_created_again(config: OperatorConfig) -> None:
    async def scenario() -> None:
        cluster = FakeCluster()
        controller = controller_of(cluster, config)
        key = cluster.create_resource(SPEC, name="gone")
        controller.observe_resource("ADDED", copy.deepcopy(cluster.resource(key)))
        await controller._reconcile(key)
        for (kind, _, _), body in list(cluster.objects.items()):
            if kind in ("Deployment", "Service"):
                controller.observe_child("ADDED", copy.deepcopy(body))
        children = [copy.deepcopy(body) for (kind, _, _), body in cluster.objects.items() if kind != "ModelDeployment"]
        # Deleted during the gap; the collector's deletions of its children are what the watch shows first.
        cluster.delete_resource(key)
        before = Counter(cluster.writes)
        for child in children:
            controller.observe_child("DELETED", child)
        assert await controller._reconcile(key) is None
        assert cluster.writes == before, "no child created again for a resource that is gone"
        assert controller.store.keys() == []
        assert cluster.reads["get ModelDeployment"] == 1
        await controller.queue.stop()

    asyncio.run(scenario())


def test_a_child_deleted_by_someone_is_created_again_after_one_read_of_its_owner(config: OperatorConfig) -> None:
    async def scenario() -> None:
        cluster = FakeCluster()
        controller = controller_of(cluster, config)
        key = cluster.create_resource(SPEC, name="kept")
        controller.observe_resource("ADDED", copy.deepcopy(cluster.resource(key)))
        await controller._reconcile(key)
        [(name, deployment)] = [(n, b) for (kind, _, n), b in cluster.objects.items() if kind == "Deployment"]
        controller.observe_child("ADDED", copy.deepcopy(deployment))
        del cluster.objects[("Deployment", "models", name)]
        controller.observe_child("DELETED", copy.deepcopy(deployment))
        await controller._reconcile(key)
        assert ("Deployment", "models", name) in cluster.objects
        assert cluster.reads["get ModelDeployment"] == 1
        assert not controller.store.children_lost(key), "confirmed once, not at every pass"
        await controller.queue.stop()

    asyncio.run(scenario())
