"""The Services of a ModelDeployment through whole passes: `<name>` alone at rest, `<name>-stable` and `<name>-canary`
beside it only while a rollout is in progress.

At rest the Service `<name>` selects the serving revision's pods. A pass that starts a rollout creates the two
revision Services and widens `<name>` to both revisions before any canary pod is asked for; a pass that ends one
(promoted, aborted, rolled back, reverted) points `<name>` at the serving revision and then deletes the two, if they
are this resource's own (by uid): a same-name Service of anyone else is never deleted.
"""

from __future__ import annotations

import copy
from collections import Counter
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest

from modeldeploy.api import models as api
from modeldeploy.children import builders
from modeldeploy.config import OperatorConfig
from modeldeploy.controller.store import Manifest
from modeldeploy.kube.client import ApiError

from .test_reconcile import SPEC, STATUS_WRITE, Harness, with_version
from .test_reconcile_ownership import service as foreign_service

NAME = "fraud-detector"
STABLE_SERVICE, CANARY_SERVICE = f"{NAME}-stable", f"{NAME}-canary"
REVISION = builders.LABEL_REVISION


@pytest.fixture
def harness(config: OperatorConfig) -> Harness:
    h = Harness(config)
    h.settle()
    return h


def services(h: Harness) -> dict[str, Manifest]:
    """The Services this resource owns."""
    uid = h.cluster.resource(h.key)["metadata"]["uid"]
    return {
        name: body
        for name, body in h.cluster.of_kind("Service").items()
        if any(ref.get("uid") == uid for ref in body["metadata"].get("ownerReferences") or [])
    }


def selector(h: Harness, name: str = NAME) -> dict[str, str]:
    found: dict[str, str] = services(h)[name]["spec"]["selector"]
    return found


def asked(h: Harness) -> dict[str, int]:
    """Revisions whose Deployment is asked for pods, and how many."""
    return {
        body["metadata"]["labels"][REVISION]: int(body["spec"]["replicas"])
        for body in h.cluster.of_kind("Deployment").values()
        if int(body["spec"]["replicas"]) > 0
    }


def assert_traffic_is_right(h: Harness) -> None:
    """After any pass: while a canary rolls out, three Services, `<name>` over both revisions and one per revision;
    at rest `<name>` alone, over the serving revision, and no other revision asked for a pod."""
    status = h.status
    stable = status["stable"]["revision"]
    if status.get("canary"):
        assert set(services(h)) == {NAME, STABLE_SERVICE, CANARY_SERVICE}
        assert REVISION not in selector(h)
        assert selector(h, STABLE_SERVICE)[REVISION] == stable
        assert selector(h, CANARY_SERVICE)[REVISION] == status["canary"]["revision"]
    else:
        assert set(services(h)) == {NAME}
        assert selector(h)[REVISION] == stable
        assert set(asked(h)) <= {stable}, "a revision asked for pods that the Service does not select"


def passes(h: Harness, *, ready: bool = True, advance: timedelta = timedelta(seconds=31), limit: int = 40) -> None:
    """Passes until two in a row write nothing, each checked; pods made ready before each unless `ready` is False.
    Two, because a pass that finds only ready counts changed writes them a pass later (COUNTS_LAG_SECONDS)."""
    quiet = 0
    for _ in range(limit):
        if ready:
            h.cluster.make_ready(h.store)
        writes = h.run(advance)
        assert_traffic_is_right(h)
        quiet = 0 if writes else quiet + 1
        if quiet == 2:
            return
    raise AssertionError("no quiet pass")


def roll_to_the_pause(h: Harness, spec: dict[str, Any] | None = None) -> None:
    """2.0 rolling out, at its 30 s pause with half the pods."""
    h.cluster.update_spec(h.key, spec or with_version(SPEC, "2.0.0"))
    h.observe()
    for _ in range(10):
        h.run(timedelta(seconds=5))
        assert_traffic_is_right(h)
        h.cluster.make_ready(h.store)
        if h.status.get("currentStepIndex") == 1:
            return
    raise AssertionError(h.status.get("message"))


class Calls:
    """The writes of the cluster, in order: (verb, kind, name)."""

    def __init__(self, h: Harness) -> None:
        self.made: list[tuple[str, str, str]] = []
        cluster = h.cluster
        apply, scale = cluster.apply, cluster.scale_deployment
        delete_deployment, delete_service = cluster.delete_deployment, cluster.delete_service

        def applying(manifest: Manifest, *, force: bool = True, create_only: bool = False) -> Manifest:
            self.made.append(("apply", manifest["kind"], manifest["metadata"]["name"]))
            return apply(manifest, force=force, create_only=create_only)

        def scaling(namespace: str, name: str, replicas: int) -> Manifest:
            self.made.append(("scale", "Deployment", name))
            return scale(namespace, name, replicas)

        def deleting_deployment(namespace: str, name: str) -> None:
            self.made.append(("delete", "Deployment", name))
            delete_deployment(namespace, name)

        def deleting_service(namespace: str, name: str, uid: str | None = None) -> None:
            self.made.append(("delete", "Service", name))
            delete_service(namespace, name, uid)

        cluster.apply = applying  # type: ignore[method-assign]
        cluster.scale_deployment = scaling  # type: ignore[method-assign]
        cluster.delete_deployment = deleting_deployment  # type: ignore[method-assign]
        cluster.delete_service = deleting_service  # type: ignore[method-assign]


# ---------------------------------------------------------------------------------------------------------------
# At rest, and the start of a rollout


def test_at_rest_one_service_over_the_serving_revision(harness: Harness) -> None:
    assert set(services(harness)) == {NAME}
    assert selector(harness)[REVISION] == harness.status["stable"]["revision"]
    assert harness.status["url"].startswith(f"http://{NAME}.models.svc.")
    assert harness.run(timedelta(hours=1)) == Counter()


def test_a_rollout_creates_its_services_before_the_canary_is_asked_for_a_pod(harness: Harness) -> None:
    calls = Calls(harness)
    harness.cluster.update_spec(harness.key, with_version(SPEC, "2.0.0"))
    harness.observe()
    writes = harness.run(timedelta(seconds=5))
    assert writes["apply Service"] == 3
    assert_traffic_is_right(harness)
    canary = harness.status["canary"]["revision"]
    assert calls.made == [
        ("apply", "Service", NAME),
        ("apply", "Service", STABLE_SERVICE),
        ("apply", "Service", CANARY_SERVICE),
        ("apply", "Deployment", f"{NAME}-{canary}"),
    ]
    # The rollout goes on with the Services as they are: no Service is written again until it ends.
    calls.made.clear()
    passes(harness)
    assert harness.status["stable"]["revision"] == canary
    applied_services = [call for call in calls.made if call[:2] == ("apply", "Service")]
    assert applied_services == [("apply", "Service", NAME)], "only <name>, pointed at the promoted revision"


# ---------------------------------------------------------------------------------------------------------------
# The end of a rollout


def promote(h: Harness) -> None:
    passes(h)


def abort(h: Harness) -> None:
    h.cluster.replace_status(h.key, {**h.status, "commands": {"abort": {"id": "abort-1"}}})
    h.observe()


def revert(h: Harness) -> None:
    h.cluster.update_spec(h.key, SPEC)
    h.observe()


def miss_the_deadline(h: Harness) -> None:
    """A newer spec whose pods never get Ready, past its progress deadline."""
    h.cluster.update_spec(h.key, with_version(SPEC, "3.0.0"))
    h.observe()
    passes(h, ready=False, advance=timedelta(seconds=10))
    assert h.status.get("canary"), "still rolling out, its pods not Ready"
    h.run(timedelta(seconds=601))


def supersede_then_promote(h: Harness) -> None:
    h.cluster.update_spec(h.key, with_version(SPEC, "3.0.0"))
    h.observe()
    h.run(timedelta(seconds=1))
    assert_traffic_is_right(h)
    assert h.status["canary"]["version"] == "3.0.0"
    passes(h)


ENDS: dict[str, tuple[Callable[[Harness], None], str]] = {
    "promoted": (promote, "2.0.0"),
    "aborted": (abort, "1.0.0"),
    "spec-reverted": (revert, "1.0.0"),
    "deadline-missed": (miss_the_deadline, "1.0.0"),
    "superseded-then-promoted": (supersede_then_promote, "3.0.0"),
}


@pytest.mark.parametrize("end", list(ENDS))
def test_the_end_of_a_rollout_deletes_its_services_after_pointing_the_service_at_the_stable(
    harness: Harness, end: str
) -> None:
    act, serving = ENDS[end]
    roll_to_the_pause(harness)
    calls = Calls(harness)
    act(harness)
    passes(harness)
    assert harness.status["stable"]["version"] == serving
    assert not harness.status.get("canary")
    assert set(services(harness)) == {NAME}
    assert selector(harness)[REVISION] == harness.status["stable"]["revision"]
    # <name> is pointed at the serving revision before the two go, and they go once each.
    pointed = calls.made.index(("apply", "Service", NAME))
    deleted = [index for index, call in enumerate(calls.made) if call[:2] == ("delete", "Service")]
    assert [calls.made[index][2] for index in deleted] == [CANARY_SERVICE, STABLE_SERVICE]
    assert pointed < min(deleted)
    # The Store forgot them: the next passes write nothing, and read nothing either.
    _, children = harness.store.snapshot(harness.key)
    assert set(children.services) == {NAME}
    reads = Counter(harness.cluster.reads)
    assert harness.run(timedelta(minutes=1)) == Counter()
    assert harness.cluster.reads == reads
    assert not [event for event in harness.cluster.events if event.reason == "StatusRepaired"]


def test_a_rollout_after_a_rollout_creates_the_services_again(harness: Harness) -> None:
    roll_to_the_pause(harness)
    promote(harness)
    roll_to_the_pause(harness, with_version(SPEC, "3.0.0"))
    assert set(services(harness)) == {NAME, STABLE_SERVICE, CANARY_SERVICE}
    promote(harness)
    assert harness.status["stable"]["version"] == "3.0.0"
    assert set(services(harness)) == {NAME}


@pytest.mark.parametrize("failing", [CANARY_SERVICE, STABLE_SERVICE])
def test_a_failed_deletion_ends_the_pass_and_the_next_one_finishes_without_repairs(
    harness: Harness, failing: str
) -> None:
    """Status is written only once the Services are gone, and `<name>-stable` goes last: until then it still names
    the revision that served, so the next pass decides the same promotion again from a status that agrees with it."""
    roll_to_the_pause(harness)
    cluster = harness.cluster
    delete_service = cluster.delete_service

    def failing_once(namespace: str, name: str, uid: str | None = None) -> None:
        if name == failing:
            cluster.delete_service = delete_service  # type: ignore[method-assign]
            raise ApiError(500, "Internal Server Error", '{"message": "etcd"}')
        delete_service(namespace, name, uid)

    cluster.delete_service = failing_once  # type: ignore[method-assign]

    def until_the_deletion_fails() -> None:
        for _ in range(10):
            harness.run(timedelta(seconds=31))
            harness.cluster.make_ready(harness.store)

    with pytest.raises(ApiError):
        until_the_deletion_fails()
    assert harness.status["canary"]["version"] == "2.0.0", "no status claims the end before the Services are gone"
    assert selector(harness)[REVISION] == harness.status["canary"]["revision"], "<name> points at 2.0 already"
    assert selector(harness, STABLE_SERVICE)[REVISION] == harness.status["stable"]["revision"]
    passes(harness)
    assert harness.status["stable"]["version"] == "2.0.0"
    assert set(services(harness)) == {NAME}
    assert not [event for event in harness.cluster.events if event.reason == "StatusRepaired"]


# ---------------------------------------------------------------------------------------------------------------
# Only this resource's own Services are deleted


def test_someone_elses_canary_service_is_left_alone_at_rest_and_a_conflict_when_a_rollout_starts(
    harness: Harness,
) -> None:
    theirs = harness.cluster.add_foreign(foreign_service(CANARY_SERVICE))
    harness.observe()
    assert harness.run(timedelta(minutes=1)) == Counter(), "at rest the name is not one of this resource's"
    harness.cluster.update_spec(harness.key, with_version(SPEC, "2.0.0"))
    harness.observe()
    harness.run(timedelta(seconds=5))
    degraded = next(c for c in harness.status["conditions"] if c["type"] == "Degraded")
    assert (degraded["status"], degraded["reason"]) == ("True", "ChildConflict")
    assert f"Service/{CANARY_SERVICE} (no controller)" in degraded["message"]
    assert harness.cluster.objects[("Service", "models", CANARY_SERVICE)] == theirs
    assert harness.cluster.writes["delete Service"] == 0
    # Taken back to the serving version: at rest again, the object is still theirs and untouched.
    harness.cluster.update_spec(harness.key, SPEC)
    harness.observe()
    passes(harness, advance=timedelta(seconds=31))
    assert harness.status["phase"] == "Healthy"
    assert harness.cluster.objects[("Service", "models", CANARY_SERVICE)] == theirs
    assert harness.cluster.writes["delete Service"] == 0


def test_a_revision_service_of_an_earlier_resource_of_the_same_name_is_left_to_garbage_collection(
    harness: Harness,
) -> None:
    """Labelled and controlled by a ModelDeployment of this name, so the watches file it under this resource; but by
    another uid: not this resource's to delete."""
    resource = api.ModelDeployment.model_validate(
        {k: v for k, v in harness.cluster.resource(harness.key).items() if k != "status"}
    )
    earlier = builders.build_service(resource, "canary", harness.status["stable"]["revision"])
    earlier["metadata"]["ownerReferences"][0]["uid"] = "uid-earlier"
    body = harness.cluster.add_foreign(earlier)
    harness.store.put_child(copy.deepcopy(body))  # as its watch event would
    assert harness.run(timedelta(minutes=1)) == Counter()
    assert harness.cluster.objects[("Service", "models", CANARY_SERVICE)] == body


def test_a_service_made_again_under_the_name_since_the_store_saw_ours_is_not_deleted(harness: Harness) -> None:
    """The Store holds our canary Service, but someone deleted it and made their own under the name (the watches
    have not shown it yet): the deletion carries the uid of ours, the API server refuses it, theirs stays."""
    roll_to_the_pause(harness)
    del harness.cluster.objects[("Service", "models", CANARY_SERVICE)]
    theirs = harness.cluster.add_foreign(foreign_service(CANARY_SERVICE))
    harness.cluster.replace_status(harness.key, {**harness.status, "commands": {"abort": {"id": "abort-1"}}})
    harness.observe()
    writes = harness.run(timedelta(seconds=1))
    assert writes["delete Service"] == 2
    assert writes[STATUS_WRITE] == 1
    assert harness.status["aborted"]["reason"] == "Aborted"
    assert harness.cluster.objects[("Service", "models", CANARY_SERVICE)] == theirs
    assert ("Service", "models", STABLE_SERVICE) not in harness.cluster.objects
    _, children = harness.store.snapshot(harness.key)
    assert set(children.services) == {NAME}, "the Store forgets the copy of an object that no longer exists"
    deletions = harness.cluster.writes["delete Service"]
    passes(harness)
    assert harness.cluster.writes["delete Service"] == deletions
    assert harness.cluster.objects[("Service", "models", CANARY_SERVICE)] == theirs


def test_a_revision_service_already_gone_is_forgotten(harness: Harness) -> None:
    roll_to_the_pause(harness)
    # Deleted by someone; the watch event has not arrived.
    del harness.cluster.objects[("Service", "models", STABLE_SERVICE)]
    harness.cluster.replace_status(harness.key, {**harness.status, "commands": {"abort": {"id": "abort-1"}}})
    harness.observe()
    writes = harness.run(timedelta(seconds=1))
    assert writes["delete Service"] == 2
    assert set(services(harness)) == {NAME}
    _, children = harness.store.snapshot(harness.key)
    assert set(children.services) == {NAME}
    deletions = harness.cluster.writes["delete Service"]
    passes(harness)
    assert harness.cluster.writes["delete Service"] == deletions


def test_the_services_an_earlier_operator_left_at_rest_are_tidied_in_one_pass(config: OperatorConfig) -> None:
    """An operator before this layout kept three Services at rest, `<name>` over every revision: the first pass
    points `<name>` at the serving revision and deletes the other two, with nothing to repair; then it is quiet."""
    h = Harness(config)
    h.settle()
    resource = api.ModelDeployment.model_validate({k: v for k, v in h.cluster.resource(h.key).items() if k != "status"})
    stable = h.status["stable"]["revision"]
    for old in builders.build_services(resource, stable, stable):  # <name> over both, -stable and -canary on stable
        h.store.put_child(h.cluster.apply(old))
    assert REVISION not in selector(h)
    writes = h.run(timedelta(minutes=1))
    assert writes == Counter({"apply Service": 1, "delete Service": 2})
    assert_traffic_is_right(h)
    assert h.run(timedelta(minutes=1)) == Counter()
    assert not [event for event in h.cluster.events if event.reason == "StatusRepaired"]
