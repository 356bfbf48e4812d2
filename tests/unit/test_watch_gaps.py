"""Watch gaps: a re-list reports no DELETED for what went meanwhile, so the Store is compared with a list of the
resources, and a 404 on a resource's status write ends its work. Against the in-memory API server."""

from __future__ import annotations

import asyncio
import copy
from collections import Counter
from typing import cast

import pytest

from modeldeploy.config import OperatorConfig
from modeldeploy.controller import queue as queue_module
from modeldeploy.controller.queue import Controller
from modeldeploy.controller.store import Store
from modeldeploy.kube.client import ApiError, Kube

from .fake_cluster import FakeCluster
from .test_reconcile import SPEC


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
