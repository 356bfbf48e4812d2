"""The pure helpers of reconcile: contains(), same_service(), observed_revisions(), serving_revision(), owner_key()
and the Store."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from modeldeploy.children import builders
from modeldeploy.config import OperatorConfig
from modeldeploy.controller.reconcile import contains, observed_revisions, same_service, serving_revision
from modeldeploy.controller.store import LAST_APPLIED, Children, Store, owner_key
from modeldeploy.rollout import plan as rollout

from .conftest import NAME, NAMESPACE, ResourceFactory

Manifest = dict[str, Any]

# ---------------------------------------------------------------------------------------------------------------
# contains(actual, desired)


@pytest.mark.parametrize(
    ("actual", "desired", "expected"),
    [
        pytest.param({"a": 1}, {"a": 1}, True, id="equal-dicts"),
        pytest.param({"a": 1, "b": 2}, {"a": 1}, True, id="extra-key-tolerated"),
        pytest.param({"a": 1}, {"a": 1, "b": 2}, False, id="missing-key"),
        pytest.param({"a": 2}, {"a": 1}, False, id="different-value"),
        pytest.param({"a": {"b": 1, "c": 2}}, {"a": {"b": 1}}, True, id="nested-subset"),
        pytest.param({"a": {"c": 2}}, {"a": {"b": 1}}, False, id="nested-missing"),
        pytest.param({}, {}, True, id="empty-in-empty"),
        pytest.param({"a": 1}, {}, True, id="empty-desired"),
        pytest.param({"emptyDir": {"medium": ""}}, {"emptyDir": {}}, True, id="empty-dict-value"),
        pytest.param({"a": None}, {"a": {}}, False, id="none-is-not-a-dict"),
        pytest.param({"a": [1, 2]}, {"a": [1, 2]}, True, id="equal-lists"),
        pytest.param({"a": [1, 2, 3]}, {"a": [1, 2]}, False, id="longer-list"),
        pytest.param({"a": [1]}, {"a": [1, 2]}, False, id="shorter-list"),
        pytest.param({"a": [2, 1]}, {"a": [1, 2]}, False, id="list-order"),
        pytest.param([{"n": "x", "extra": 1}, {"n": "y"}], [{"n": "x"}, {"n": "y"}], True, id="list-of-subsets"),
        pytest.param([{"n": "y"}, {"n": "x"}], [{"n": "x"}, {"n": "y"}], False, id="list-of-dicts-order"),
        pytest.param({"a": "x"}, {"a": ["x"]}, False, id="scalar-is-not-a-list"),
        pytest.param({"a": ["x"]}, {"a": "x"}, False, id="list-is-not-a-scalar"),
        pytest.param("x", "x", True, id="equal-strings"),
        pytest.param(3, 3, True, id="equal-ints"),
        pytest.param("3", 3, False, id="string-is-not-int"),
        pytest.param(None, None, True, id="none"),
        pytest.param(False, False, True, id="false"),
        pytest.param(None, False, False, id="none-is-not-false"),
        pytest.param({"limits": {"cpu": "1"}}, {"limits": {"cpu": "1000m"}}, True, id="quantity-canonical-form"),
        pytest.param({"requests": {"memory": "1Gi"}}, {"requests": {"memory": "1024Mi"}}, True, id="quantity-units"),
        pytest.param({"limits": {"cpu": "2"}}, {"limits": {"cpu": "1000m"}}, False, id="quantity-differs"),
        pytest.param({"limits": {"cpu": "1"}}, {"limits": {"cpu": "x"}}, False, id="quantity-unparsable"),
        pytest.param({"env": {"value": "1"}}, {"env": {"value": "1000m"}}, False, id="not-a-quantity-field"),
    ],
)
def test_contains(actual: Any, desired: Any, expected: bool) -> None:
    assert contains(actual, desired) is expected


def server_view(manifest: Manifest) -> Manifest:
    """`manifest` as the API server returns it: the same fields plus defaults and bookkeeping."""
    stored = copy.deepcopy(manifest)
    stored["metadata"].update(
        uid="9b0e", resourceVersion="4711", generation=2, creationTimestamp="2025-03-01T12:00:00Z", managedFields=[]
    )
    stored["metadata"]["ownerReferences"][0]["extra"] = "ignored"
    stored["status"] = {"observedGeneration": 2, "replicas": 2, "readyReplicas": 2}
    spec = stored["spec"]
    spec["strategy"]["rollingUpdate"]["extra"] = 1
    pod = spec["template"]["spec"]
    pod.update(restartPolicy="Always", dnsPolicy="ClusterFirst", terminationGracePeriodSeconds=30)
    container = pod["containers"][0]
    container.update(terminationMessagePath="/dev/termination-log", imagePullPolicy="IfNotPresent")
    container["readinessProbe"]["httpGet"]["scheme"] = "HTTP"
    container["readinessProbe"]["successThreshold"] = 1
    container["livenessProbe"]["httpGet"]["scheme"] = "HTTP"
    pod["volumes"][0]["emptyDir"]["medium"] = ""
    return stored


def test_built_deployment_is_contained_in_the_server_view(
    make_resource: ResourceFactory, config: OperatorConfig
) -> None:
    resource = make_resource({"model": {"sha256": "b" * 64}, "runtime": {"env": [{"name": "A", "value": "1"}]}})
    revision = builders.revision_of(resource, config)
    desired = builders.build_deployment(resource, revision, 2, config)
    stored = server_view(desired)
    assert contains(stored, desired)

    scaled = copy.deepcopy(stored)
    scaled["spec"]["replicas"] = 3
    assert not contains(scaled, desired)

    missing_env = copy.deepcopy(stored)
    missing_env["spec"]["template"]["spec"]["containers"][0]["env"].pop()
    assert not contains(missing_env, desired)

    extra_env = copy.deepcopy(stored)
    extra_env["spec"]["template"]["spec"]["containers"][0]["env"].append({"name": "B", "value": "2"})
    assert not contains(extra_env, desired)

    no_labels = copy.deepcopy(stored)
    del no_labels["metadata"]["labels"][builders.LABEL_REVISION]
    assert not contains(no_labels, desired)


def test_built_service_is_contained_in_the_server_view(make_resource: ResourceFactory) -> None:
    desired = builders.build_service(make_resource(), "stable", "rabc000000")
    stored = copy.deepcopy(desired)
    stored["metadata"]["resourceVersion"] = "12"
    stored["spec"].update(clusterIP="10.0.0.7", clusterIPs=["10.0.0.7"], sessionAffinity="None")
    assert contains(stored, desired)
    stored["spec"]["selector"][builders.LABEL_REVISION] = "rother0000"
    assert not contains(stored, desired)


@pytest.mark.parametrize(
    ("stored", "desired", "same"),
    [
        pytest.param("rabc000000", "rabc000000", True, id="same-revision"),
        pytest.param("rabc000000", "rother0000", False, id="other-revision"),
        pytest.param(None, "rabc000000", False, id="narrowed-to-a-revision"),
        pytest.param("rabc000000", None, False, id="widened-to-every-revision"),
        pytest.param(None, None, True, id="every-revision"),
    ],
)
def test_same_service_compares_the_revision_key_both_ways(
    make_resource: ResourceFactory, stored: str | None, desired: str | None, same: bool
) -> None:
    """contains() tolerates keys the server adds; a revision key left over from what we applied before is no such
    key: `<name>` drops it when a rollout starts, and every pass would otherwise leave the Service as it was."""
    resource = make_resource()
    current = builders.build_service(resource, "", stored)
    current["spec"].update(clusterIP="10.0.0.7", sessionAffinity="None")
    assert same_service(current, builders.build_service(resource, "", desired)) is same


def owned_service(resource_uid: str, suffix: str, revision: str | None, make_resource: ResourceFactory) -> Manifest:
    service = builders.build_service(make_resource(), suffix, revision)
    service["metadata"]["ownerReferences"][0]["uid"] = resource_uid
    return service


@pytest.mark.parametrize(
    ("present", "expected"),
    [
        pytest.param({}, None, id="no-service"),
        pytest.param({"": ("ours", "rstable000")}, ("rstable000", NAME), id="at-rest-the-service-names-it"),
        pytest.param({"": ("ours", None)}, None, id="the-service-over-every-revision-names-none"),
        pytest.param(
            {"": ("ours", None), "stable": ("ours", "rstable000"), "canary": ("ours", "rcanary000")},
            ("rstable000", f"{NAME}-stable"),
            id="rolling-out-the-stable-service-names-it",
        ),
        pytest.param(
            {"": ("ours", "rnewer0000"), "stable": ("ours", "rstable000")},
            ("rstable000", f"{NAME}-stable"),
            id="the-stable-service-first-while-it-exists",
        ),
        pytest.param(
            {"": ("ours", "rstable000"), "stable": ("earlier", "rolder0000")},
            ("rstable000", NAME),
            id="a-stable-service-not-ours-is-no-evidence",
        ),
        pytest.param({"": ("earlier", "rolder0000")}, None, id="a-service-not-ours-is-no-evidence"),
    ],
)
def test_serving_revision(
    make_resource: ResourceFactory,
    present: dict[str, tuple[str, str | None]],
    expected: tuple[str, str] | None,
) -> None:
    resource = make_resource()
    uids = {"ours": str(resource.metadata["uid"]), "earlier": "uid-earlier"}
    children = Children()
    for suffix, (owner, revision) in present.items():
        service = owned_service(uids[owner], suffix, revision, make_resource)
        children.services[service["metadata"]["name"]] = service
    found = serving_revision(children, resource)
    assert (None if found is None else (found.revision, found.service)) == expected


# ---------------------------------------------------------------------------------------------------------------
# observed_revisions()


def deployment(
    name: str,
    labels: dict[str, str] | None,
    *,
    replicas: int | None = 3,
    generation: int | None = 2,
    status: dict[str, Any] | None = None,
) -> Manifest:
    metadata: dict[str, Any] = {"name": name, "namespace": NAMESPACE}
    if labels is not None:
        metadata["labels"] = labels
    if generation is not None:
        metadata["generation"] = generation
    spec: dict[str, Any] = {} if replicas is None else {"replicas": replicas}
    body: Manifest = {"kind": "Deployment", "metadata": metadata, "spec": spec}
    if status is not None:
        body["status"] = status
    return body


def rev_labels(revision: str, version: str = "1.0") -> dict[str, str]:
    return {builders.LABEL_REVISION: revision, builders.LABEL_VERSION: version, builders.LABEL_INSTANCE: NAME}


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        pytest.param(
            deployment("a", rev_labels("ra", "1.0"), status={"observedGeneration": 2, "readyReplicas": 2}),
            rollout.ObservedRevision("ra", "1.0", replicas=3, ready_replicas=2, up_to_date=True),
            id="caught-up",
        ),
        pytest.param(
            deployment("a", rev_labels("ra", "1.0"), status={"observedGeneration": 1, "readyReplicas": 3}),
            rollout.ObservedRevision("ra", "1.0", replicas=3, ready_replicas=3, up_to_date=False),
            id="behind",
        ),
        pytest.param(
            deployment("a", rev_labels("ra", "1.0"), status={"observedGeneration": 5, "readyReplicas": 1}),
            rollout.ObservedRevision("ra", "1.0", replicas=3, ready_replicas=1, up_to_date=True),
            id="ahead",
        ),
        pytest.param(
            deployment("a", rev_labels("ra", "2.0"), status=None),
            rollout.ObservedRevision("ra", "2.0", replicas=3, ready_replicas=0, up_to_date=False),
            id="no-status-yet",
        ),
        pytest.param(
            deployment("a", rev_labels("ra"), replicas=0, status={"observedGeneration": 2, "readyReplicas": None}),
            rollout.ObservedRevision("ra", "1.0", replicas=0, ready_replicas=0, up_to_date=True),
            id="scaled-to-zero",
        ),
        pytest.param(
            deployment("a", rev_labels("ra"), replicas=None, generation=None, status={}),
            rollout.ObservedRevision("ra", "1.0", replicas=0, ready_replicas=0, up_to_date=True),
            id="sparse",
        ),
        pytest.param(
            deployment("a", {builders.LABEL_REVISION: "ra"}, status={"observedGeneration": 2, "readyReplicas": 3}),
            rollout.ObservedRevision("ra", "", replicas=3, ready_replicas=3, up_to_date=True),
            id="no-version-label",
        ),
    ],
)
def test_observed_revision(body: Manifest, expected: rollout.ObservedRevision) -> None:
    assert observed_revisions(Children(deployments={"a": body})) == {expected.revision: expected}


def test_observed_revisions_skips_deployments_without_a_revision_label() -> None:
    children = Children(
        deployments={
            "a": deployment("a", rev_labels("ra"), status={"observedGeneration": 2, "readyReplicas": 3}),
            "b": deployment("b", rev_labels("rb", "2.0"), status={"observedGeneration": 2, "readyReplicas": 1}),
            "c": deployment("c", {builders.LABEL_INSTANCE: NAME}),
            "d": deployment("d", None),
            "e": deployment("e", {builders.LABEL_REVISION: ""}),
        }
    )
    observed = observed_revisions(children)
    assert set(observed) == {"ra", "rb"}
    assert observed["rb"].version == "2.0"
    assert observed["rb"].ready_replicas == 1


def test_observed_revisions_of_a_built_deployment(make_resource: ResourceFactory, config: OperatorConfig) -> None:
    resource = make_resource({"model": {"version": "3.1"}})
    revision = builders.revision_of(resource, config)
    body = builders.build_deployment(resource, revision, 4, config)
    body["metadata"]["generation"] = 1
    body["status"] = {"observedGeneration": 1, "readyReplicas": 4}
    [(key, observed)] = observed_revisions(Children(deployments={body["metadata"]["name"]: body})).items()
    assert key == revision
    assert observed == rollout.ObservedRevision(revision, "3.1", replicas=4, ready_replicas=4, up_to_date=True)


# ---------------------------------------------------------------------------------------------------------------
# owner_key()


def owned(*references: dict[str, Any], namespace: str = NAMESPACE) -> Manifest:
    return {
        "kind": "Deployment",
        "metadata": {"name": "child", "namespace": namespace, "ownerReferences": list(references)},
    }


def ref(**overrides: Any) -> dict[str, Any]:
    return {
        "apiVersion": "modeldeploy.io/v1alpha1",
        "kind": "ModelDeployment",
        "name": NAME,
        "uid": "u",
        "controller": True,
        "blockOwnerDeletion": True,
        **overrides,
    }


@pytest.mark.parametrize(
    ("child", "expected"),
    [
        pytest.param(owned(ref()), (NAMESPACE, NAME), id="controller"),
        pytest.param(owned(ref(apiVersion="modeldeploy.io/v1")), (NAMESPACE, NAME), id="other-version"),
        pytest.param(owned(ref(), namespace="team-b"), ("team-b", NAME), id="child-namespace"),
        pytest.param(owned(ref(controller=False)), None, id="not-controller"),
        pytest.param(owned({k: v for k, v in ref().items() if k != "controller"}), None, id="controller-absent"),
        pytest.param(owned(ref(kind="Deployment")), None, id="other-kind"),
        pytest.param(owned(ref(apiVersion="other.io/v1alpha1")), None, id="other-group"),
        pytest.param(owned(ref(apiVersion="modeldeploy.io.evil/v1")), None, id="group-prefix"),
        pytest.param(owned(ref(apiVersion="x.modeldeploy.io/v1")), None, id="subdomain-group"),
        pytest.param(owned(ref(apiVersion="v1")), None, id="core-group"),
        pytest.param(owned({k: v for k, v in ref().items() if k != "apiVersion"}), None, id="no-api-version"),
        pytest.param(owned(), None, id="no-references"),
        pytest.param({"kind": "Service", "metadata": {"name": "c", "namespace": NAMESPACE}}, None, id="no-field"),
        pytest.param(
            {"kind": "Service", "metadata": {"name": "c", "namespace": NAMESPACE, "ownerReferences": None}},
            None,
            id="null-field",
        ),
        pytest.param(
            owned(ref(name="other", controller=False), ref(kind="ReplicaSet", name="rs"), ref(name="mine")),
            (NAMESPACE, "mine"),
            id="picks-the-controller-among-several",
        ),
    ],
)
def test_owner_key(child: Manifest, expected: tuple[str, str] | None) -> None:
    assert owner_key(child) == expected


def test_owner_key_of_built_children(make_resource: ResourceFactory, config: OperatorConfig) -> None:
    resource = make_resource()
    children = [
        builders.build_deployment(resource, "rabc000000", 1, config),
        *builders.build_services(resource, "rabc000000", "rabc000000"),
    ]
    assert {owner_key(child) for child in children} == {(NAMESPACE, NAME)}


# ---------------------------------------------------------------------------------------------------------------
# Store


def parent(resource_version: str, marker: str = "", name: str = NAME) -> Manifest:
    return {
        "kind": "ModelDeployment",
        "metadata": {"name": name, "namespace": NAMESPACE, "resourceVersion": resource_version},
        "spec": {"marker": marker},
    }


def child(kind: str, name: str, resource_version: str, marker: str = "") -> Manifest:
    body = owned(ref())
    body["kind"] = kind
    body["metadata"].update(name=name, resourceVersion=resource_version)
    body["spec"] = {"marker": marker}
    return body


KEY = (NAMESPACE, NAME)


@pytest.mark.parametrize(
    ("first", "second", "kept"),
    [
        pytest.param("5", "7", "second", id="newer-replaces"),
        pytest.param("7", "5", "first", id="older-ignored"),
        pytest.param("7", "7", "second", id="equal-replaces"),
        pytest.param("9", "10", "second", id="numeric-not-lexical"),
        pytest.param("10", "9", "first", id="numeric-not-lexical-older"),
        pytest.param("7", "opaque", "second", id="opaque-taken-as-newer"),
        pytest.param("7", "", "second", id="missing-taken-as-newer"),
    ],
)
def test_store_parent_versions(first: str, second: str, kept: str) -> None:
    store = Store()
    store.put_parent(parent(first, marker="first"))
    store.put_parent(parent(second, marker="second"))
    body, _ = store.snapshot(KEY)
    assert body is not None
    assert body["spec"]["marker"] == kept


def test_store_children_ignore_older_versions() -> None:
    store = Store()
    assert store.put_child(child("Deployment", "d", "20", marker="new")) == KEY
    assert store.put_child(child("Deployment", "d", "19", marker="old")) == KEY
    assert store.put_child(child("Service", "s", "3")) == KEY
    _, children = store.snapshot(KEY)
    assert children.deployments["d"]["spec"]["marker"] == "new"
    assert set(children.deployments) == {"d"}
    assert set(children.services) == {"s"}


def test_store_ignores_children_it_does_not_own() -> None:
    store = Store()
    stranger = child("Deployment", "d", "1")
    stranger["metadata"]["ownerReferences"] = [ref(kind="StatefulSet")]
    assert store.put_child(stranger) is None
    assert store.remove_child(stranger) is None
    _, children = store.snapshot(KEY)
    assert children.deployments == {}


def test_store_removes() -> None:
    store = Store()
    store.put_parent(parent("1"))
    store.put_child(child("Deployment", "d", "1"))
    store.put_child(child("Service", "s", "1"))
    assert store.keys() == [KEY]
    assert store.remove_child(child("Deployment", "d", "2")) == KEY
    _, children = store.snapshot(KEY)
    assert children.deployments == {}
    assert set(children.services) == {"s"}
    store.remove_parent(KEY)
    store.remove_parent(KEY)  # twice is fine
    assert store.keys() == []
    body, _ = store.snapshot(KEY)
    assert body is None


def test_store_snapshot_is_a_copy() -> None:
    store = Store()
    store.put_parent(parent("1", marker="original"))
    store.put_child(child("Deployment", "d", "1"))
    body, children = store.snapshot(KEY)
    assert body is not None
    body["spec"]["marker"] = "changed"
    body["metadata"]["resourceVersion"] = "999"
    children.deployments.clear()
    children.services["x"] = {}
    again, children_again = store.snapshot(KEY)
    assert again is not None
    assert again["spec"]["marker"] == "original"
    assert again["metadata"]["resourceVersion"] == "1"
    assert set(children_again.deployments) == {"d"}
    assert children_again.services == {}


def test_store_snapshot_of_an_unknown_key() -> None:
    body, children = Store().snapshot(("nowhere", "nothing"))
    assert body is None
    assert children.deployments == {}
    assert children.services == {}


def test_the_store_keeps_no_managed_fields() -> None:
    store = Store()
    fields = [{"manager": "modeldeploy", "operation": "Apply", "fieldsV1": {"f:spec": {}}}]
    parent = {"metadata": {"namespace": "ns", "name": "a", "resourceVersion": "5", "managedFields": fields}}
    store.put_parent(parent)
    child = {
        "kind": "Deployment",
        "metadata": {
            "namespace": "ns",
            "name": "a-r1",
            "resourceVersion": "6",
            "managedFields": fields,
            "ownerReferences": [
                {"controller": True, "kind": "ModelDeployment", "apiVersion": "modeldeploy.io/v1alpha1", "name": "a"}
            ],
        },
        "spec": {"replicas": 1},
    }
    assert store.put_child(child) == ("ns", "a")
    stored_parent, children = store.snapshot(("ns", "a"))
    assert stored_parent == {"metadata": {"namespace": "ns", "name": "a", "resourceVersion": "5"}}
    assert "managedFields" not in children.deployments["a-r1"]["metadata"]
    assert children.deployments["a-r1"]["spec"] == {"replicas": 1}
    assert parent["metadata"]["managedFields"] == fields, "the caller's object is left as it was"


def test_the_store_keeps_no_copy_that_client_side_kubectl_apply_left() -> None:
    store = Store()
    annotations = {LAST_APPLIED: '{"spec": "a second copy of everything"}', "team": "fraud"}
    parent = {"metadata": {"namespace": "ns", "name": "a", "resourceVersion": "5", "annotations": annotations}}
    store.put_parent(parent)
    stored_parent, _ = store.snapshot(("ns", "a"))
    assert stored_parent["metadata"]["annotations"] == {"team": "fraud"}
    assert LAST_APPLIED in parent["metadata"]["annotations"], "the caller's object is left as it was"
