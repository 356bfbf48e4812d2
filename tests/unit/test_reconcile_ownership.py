"""No takeover: a pass never writes an object it does not own, whether the watches show it or not.

A child's name can be taken by an unlabelled object the Store never sees (a Service someone made by hand), by a
labelled one of another owner, or by the child of an earlier ModelDeployment of the same name (another uid). In
every case the resource is Degraded ChildConflict naming the object, no child is written, and the object is the same
afterwards; once the name is free, the next pass carries on. The names `<name>-stable` and `<name>-canary` are
children only while a rollout is in progress: an object that holds one at rest is left alone, and is a conflict when
a rollout starts. Nor is it ever deleted when a rollout ends: only this resource's own Services are.
"""

from __future__ import annotations

import copy
from datetime import timedelta
from typing import Any

import pytest

from modeldeploy.api import models as api
from modeldeploy.children import builders
from modeldeploy.config import OperatorConfig
from modeldeploy.controller.reconcile import CONFLICT_RECHECK_SECONDS, reconcile
from modeldeploy.controller.store import Manifest

from .test_reconcile import STATUS_WRITE, Harness, with_version

NAME = "fraud-detector"


@pytest.fixture
def harness(config: OperatorConfig) -> Harness:
    return Harness(config)


def service(name: str, **metadata: Any) -> Manifest:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": "models", **metadata},
        "spec": {"selector": {"app": "someone-elses"}, "ports": [{"port": 80}]},
    }


def deployment(name: str, **metadata: Any) -> Manifest:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": "models", **metadata},
        "spec": {"replicas": 1, "template": {"spec": {"containers": [{"name": "app", "image": "theirs"}]}}},
    }


def revision(harness: Harness) -> str:
    resource = api.ModelDeployment.model_validate(harness.cluster.resource(harness.key))
    return builders.revision_of(resource, harness.config)


def condition(status: dict[str, Any], kind: str) -> dict[str, Any]:
    return next(c for c in status["conditions"] if c["type"] == kind)


def test_an_unlabelled_service_is_never_taken_over(harness: Harness) -> None:
    theirs = harness.cluster.add_foreign(service(NAME))
    writes = harness.run()
    assert harness.cluster.objects[("Service", "models", NAME)] == theirs
    # No child at all: the pass stands back before its first write.
    assert writes == {STATUS_WRITE: 1, "create Event": 1}
    assert not harness.cluster.of_kind("Deployment")
    status = harness.status
    assert status["phase"] == "Degraded"
    degraded = condition(status, "Degraded")
    assert (degraded["status"], degraded["reason"]) == ("True", "ChildConflict")
    assert f"Service/{NAME} (no controller)" in degraded["message"]
    assert condition(status, "Ready")["status"] == "False"
    assert status["message"] == degraded["message"]
    [event] = harness.cluster.events
    assert (event.type, event.reason) == ("Warning", "ChildConflict")
    # A first pass reads nothing before it writes: the create of `<name>` was refused (nothing written), and then
    # every name the Store lacks was read once, so that the message names all that are taken.
    assert harness.cluster.refused == {"apply Service": 1}
    assert harness.cluster.reads == {"get Deployment": 1, "get Service": 2, "get PodDisruptionBudget": 1}

    # The same conflict at each look again: status is not written again, and each retry is counted on the one
    # Event (a patch of its count), not a new Event object per attempt.
    for count in (2, 3, 4):
        harness.observe()
        assert harness.run(timedelta(seconds=CONFLICT_RECHECK_SECONDS)) == {"patch Event": 1}
        assert list(harness.cluster.event_counts.values()) == [count]
    requeue = reconcile(harness.cluster, harness.store, harness.config, harness.key, harness.now, harness.queriers)
    assert requeue == CONFLICT_RECHECK_SECONDS


def test_a_deployment_named_like_a_revision_and_its_services_survive_untouched(harness: Harness) -> None:
    name = f"{NAME}-{revision(harness)}"
    theirs = [
        harness.cluster.add_foreign(deployment(name)),
        harness.cluster.add_foreign(service(NAME, ownerReferences=[{"kind": "Deployment", "name": "web",
                                                                     "uid": "u", "controller": True}])),
    ]  # fmt: skip
    harness.run()
    assert harness.cluster.objects[("Deployment", "models", name)] == theirs[0]
    assert harness.cluster.objects[("Service", "models", NAME)] == theirs[1]
    assert not {key for key in harness.cluster.objects if key[0] == "Service" and key[2] != NAME}
    message = harness.status["message"]
    assert f"Service/{NAME} (controlled by Deployment/web)" in message
    assert f"Deployment/{name} (no controller)" in message
    assert "exist and are not this ModelDeployment's" in message


def test_a_labelled_child_of_another_resource_is_not_ours_either(harness: Harness) -> None:
    """ModelDeployment `fraud-detector-canary` owns Service `fraud-detector-canary`, the name `fraud-detector` wants
    for its canary Service while it rolls out: the watches file it under the other resource, and the same field
    manager would take it over without a conflict."""
    cluster, store = harness.cluster, harness.store
    spec = cluster.resource(harness.key)["spec"]
    other = cluster.create_resource(spec, name=f"{NAME}-canary")
    store.put_parent(copy.deepcopy(cluster.resource(other)))
    reconcile(cluster, store, harness.config, other, harness.now, harness.queriers)
    theirs = copy.deepcopy(cluster.objects[("Service", "models", f"{NAME}-canary")])
    store.put_child(copy.deepcopy(theirs))  # as its watch event would
    harness.settle()
    assert harness.status["phase"] == "Healthy", "at rest the name is not one of this resource's children"
    harness.cluster.update_spec(harness.key, with_version(spec, "2.0.0"))
    harness.observe()
    harness.run()
    assert cluster.objects[("Service", "models", f"{NAME}-canary")] == theirs
    assert f"Service/{NAME}-canary (controlled by ModelDeployment/{NAME}-canary)" in harness.status["message"]


def test_children_of_an_earlier_resource_of_the_same_name_are_left_to_garbage_collection(harness: Harness) -> None:
    harness.settle()
    children = {key: copy.deepcopy(body) for key, body in harness.cluster.objects.items() if key[0] != api.KIND}
    # Deleted and created again before garbage collection ran: a new uid, the old children still there.
    resource = harness.cluster.resource(harness.key)
    resource["metadata"]["uid"] = "uid-second"
    resource.pop("status")
    harness.observe()
    writes = harness.run()
    assert {key: body for key, body in harness.cluster.objects.items() if key[0] != api.KIND} == children
    assert set(writes) == {STATUS_WRITE, "create Event"}
    assert "(an earlier ModelDeployment of this name)" in harness.status["message"]


def test_what_a_restarted_operator_finds_by_name_and_owns_is_carried_on(harness: Harness) -> None:
    """The Store may lack this resource's own children (the watches have not listed them yet): read, they are
    recognised by uid and not written again."""
    harness.settle()
    harness.store.__init__()  # type: ignore[misc]  # a fresh Store, as after a restart
    harness.observe()
    children = {key: copy.deepcopy(body) for key, body in harness.cluster.objects.items() if key[0] != api.KIND}
    writes = harness.run()
    assert not [write for write in writes if write.split()[0] in {"apply", "scale", "delete"}]
    assert {key: body for key, body in harness.cluster.objects.items() if key[0] != api.KIND} == children
    # The Store held nothing of the resource: each create was refused (the name is held), and the holder read once.
    assert harness.cluster.refused == {"apply Service": 1, "apply Deployment": 1, "apply PodDisruptionBudget": 1}
    assert harness.cluster.reads["get Service"] == 1


def test_once_the_name_is_free_the_rollout_carries_on(harness: Harness) -> None:
    harness.settle()
    harness.cluster.add_foreign(service(f"{NAME}-stable"))
    harness.cluster.update_spec(harness.key, with_version(harness.cluster.resource(harness.key)["spec"], "2.0.0"))
    harness.observe()
    harness.run()
    assert harness.status["phase"] == "Degraded"
    assert not harness.status.get("canary"), "nothing the planner decided was carried out"
    assert len(harness.cluster.of_kind("Deployment")) == 1, "no canary Deployment while a Service name is taken"
    del harness.cluster.objects[("Service", "models", f"{NAME}-stable")]
    harness.cluster.foreign.clear()
    harness.observe()
    harness.settle(advance=timedelta(seconds=CONFLICT_RECHECK_SECONDS))
    assert harness.status["phase"] == "Healthy"
    assert harness.status["stable"]["version"] == "2.0.0"
    assert condition(harness.status, "Degraded")["status"] == "False"
    assert set(harness.cluster.of_kind("Service")) == {NAME}, "the rollout's Services went with it"
    owners = {
        body["metadata"]["ownerReferences"][0]["uid"]
        for key, body in harness.cluster.objects.items()
        if key[0] != api.KIND
    }
    assert owners == {"uid-fraud-detector"}


def test_a_name_that_is_held_when_its_child_is_created_is_never_taken_over(harness: Harness) -> None:
    """A first pass reads nothing before its writes: each create carries a resourceVersion no object has, so a name
    held by anyone is refused with 409 Conflict and nothing is written onto it. Here the holder is gone again by
    the time it is read: the pass fails (and is retried), and the retry creates the child."""
    cluster = harness.cluster
    cluster.add_foreign(service(NAME))
    original_get = cluster.get_child

    def holder_deleted_meanwhile(kind: str, namespace: str, name: str) -> Manifest | None:
        cluster.objects.pop((kind, namespace, name), None)
        cluster.foreign.discard((kind, namespace, name))
        return original_get(kind, namespace, name)

    cluster.get_child = holder_deleted_meanwhile  # type: ignore[method-assign]
    with pytest.raises(Exception, match="409"):
        harness.run()
    cluster.get_child = original_get  # type: ignore[method-assign]
    assert cluster.refused == {"apply Service": 1}
    assert ("Service", "models", NAME) not in cluster.objects
    harness.run()
    assert cluster.objects[("Service", "models", NAME)]["metadata"]["ownerReferences"][0]["uid"] == "uid-fraud-detector"


def test_a_resource_created_again_during_a_watch_gap_takes_its_names_once_the_old_children_are_gone(
    harness: Harness,
) -> None:
    """Deleted and created again while the watches were away: garbage collection removed the predecessor's children,
    and a re-list reports no deletion. What the Store held of them is not a conflict: the new resource rolls out."""
    harness.settle()
    stale = {key: copy.deepcopy(body) for key, body in harness.cluster.objects.items() if key[0] != api.KIND}
    for key in stale:
        del harness.cluster.objects[key]
    resource = harness.cluster.resource(harness.key)
    resource["metadata"]["uid"] = "uid-second"
    resource.pop("status")
    harness.observe()
    harness.settle()
    assert harness.status["phase"] == "Healthy"
    owners = {
        body["metadata"]["ownerReferences"][0]["uid"]
        for key, body in harness.cluster.objects.items()
        if key[0] != api.KIND
    }
    assert owners == {"uid-second"}


def test_a_stale_child_of_another_owner_in_the_store_is_read_again_before_it_is_called_a_conflict(
    harness: Harness,
) -> None:
    """The Store may hold a child that is gone (its deletion fell into a watch gap): the name is free if the API
    server says so, and the Store forgets the stale copy."""
    harness.settle()
    ours = harness.cluster.objects[("Service", "models", NAME)]
    stale = copy.deepcopy(ours)
    stale["metadata"]["ownerReferences"][0]["uid"] = "uid-earlier"
    stale["metadata"]["resourceVersion"] = str(int(ours["metadata"]["resourceVersion"]) + 1000)
    harness.store.put_child(stale)
    writes = harness.run()
    assert not [write for write in writes if write.split()[0] in {"apply", "scale", "delete"}]
    assert harness.status["phase"] == "Healthy"
    _, children = harness.store.snapshot(harness.key)
    assert children.services[NAME]["metadata"]["ownerReferences"][0]["uid"] != "uid-earlier"
