"""No takeover, on the local control plane: objects that hold a child's name and are not the ModelDeployment's stay
exactly as they were, and the resource says so; the API server enforces who may set blockOwnerDeletion. The names
`<name>-stable` and `<name>-canary` are children only while a rollout is in progress, and the operator deletes only
its own when one ends."""

from __future__ import annotations

import json
from typing import Any

import pytest

from modeldeploy_testkit.cluster import READY_IMAGE, Cluster, scratch_namespace
from modeldeploy_testkit.resources import apply, get, model_deployment, wait_for_status
from modeldeploy_testkit.waiting import wait_until

pytestmark = pytest.mark.usefixtures("operator")


def healthy(status: dict[str, Any]) -> bool:
    return status.get("phase") == "Healthy"


def conflict(status: dict[str, Any]) -> bool:
    conditions: list[dict[str, Any]] = status.get("conditions") or []
    return any(c["type"] == "Degraded" and c.get("reason") == "ChildConflict" for c in conditions)


def test_a_service_and_a_deployment_of_a_childs_name_survive_untouched(cluster: Cluster, namespace: str) -> None:
    body = model_deployment("taken", "1.0.0", 1, {"strategy": "Immediate"}, uri="file:///m")
    # The revision hashes the pod template, which holds the resource's name but not its namespace: learnt elsewhere.
    with scratch_namespace(cluster, "ownership-probe") as probe:
        apply(cluster, probe, body)
        revision = wait_for_status(cluster, probe, "taken", healthy)["stable"]["revision"]

    cluster.kubectl("create", "service", "clusterip", "taken", "--tcp=80:8080", "-n", namespace)
    cluster.kubectl("create", "deployment", f"taken-{revision}", f"--image={READY_IMAGE}", "-n", namespace)
    theirs = {
        ("service", "taken"): get(cluster, "service", "taken", "-n", namespace),
        ("deployment", f"taken-{revision}"): get(cluster, "deployment", f"taken-{revision}", "-n", namespace),
    }
    apply(cluster, namespace, body)
    status = wait_for_status(cluster, namespace, "taken", conflict, what="status to say ChildConflict")
    assert status["phase"] == "Degraded"
    assert "Service/taken (no controller)" in status["message"]
    assert f"Deployment/taken-{revision} (no controller)" in status["message"]
    ready = next(c for c in status["conditions"] if c["type"] == "Ready")
    assert (ready["status"], ready["reason"]) == ("False", "ChildConflict")
    reasons = [event["reason"] for event in get(cluster, "events", "-n", namespace)["items"]]
    assert "ChildConflict" in reasons

    def conflict_events() -> list[dict[str, Any]]:
        items = get(cluster, "events", "-n", namespace)["items"]
        return [event for event in items if event["reason"] == "ChildConflict"]

    # The look again 30 s later finds the same conflict: counted on the same Event, not a new one.
    wait_until(
        lambda: any(event.get("count", 1) >= 2 for event in conflict_events()),
        timeout=90,
        interval=2,
        what="the ChildConflict Event to count a retry",
    )
    [event] = conflict_events()
    assert event["lastTimestamp"] >= event["firstTimestamp"], event

    for (kind, name), before in theirs.items():
        after = get(cluster, kind, name, "-n", namespace)
        assert after["metadata"]["resourceVersion"] == before["metadata"]["resourceVersion"], f"{kind}/{name} changed"
        assert "ownerReferences" not in after["metadata"]
        managers = {entry["manager"] for entry in after["metadata"].get("managedFields") or []}
        assert "modeldeploy" not in managers
    # Nor was any other child written while a name was taken.
    services = {s["metadata"]["name"] for s in get(cluster, "services", "-n", namespace)["items"]}
    assert services == {"taken"}
    deployments = {d["metadata"]["name"] for d in get(cluster, "deployments", "-n", namespace)["items"]}
    assert deployments == {f"taken-{revision}"}

    # Once the names are free, the rollout carries on (the operator looks again every 30 s).
    cluster.kubectl("delete", "service", "taken", "-n", namespace)
    cluster.kubectl("delete", "deployment", f"taken-{revision}", "-n", namespace)
    done = wait_for_status(cluster, namespace, "taken", healthy, timeout=90, what="the rollout once the names are free")
    assert done["stable"]["revision"] == revision
    uid = get(cluster, "mdep", "taken", "-n", namespace)["metadata"]["uid"]
    service = get(cluster, "service", "taken", "-n", namespace)
    assert service["metadata"]["ownerReferences"][0]["uid"] == uid


def test_someone_elses_canary_service_blocks_a_rollout_and_is_never_deleted(cluster: Cluster, namespace: str) -> None:
    """At rest `guest-canary` is no child of `guest`: a Service someone makes under that name is left alone. When a
    rollout starts it is a conflict (nothing written), and once it is gone the rollout creates its own Services and
    deletes them (its own, by uid) when it ends."""
    body = model_deployment("guest", "1.0.0", 1, {"strategy": "Immediate"}, uri="file:///m")
    apply(cluster, namespace, body)
    before = wait_for_status(cluster, namespace, "guest", healthy)
    cluster.kubectl("create", "service", "clusterip", "guest-canary", "--tcp=80:8080", "-n", namespace)
    theirs = get(cluster, "service", "guest-canary", "-n", namespace)

    body["spec"]["model"]["version"] = "2.0.0"
    apply(cluster, namespace, body)
    status = wait_for_status(cluster, namespace, "guest", conflict, what="status to say ChildConflict")
    assert "Service/guest-canary (no controller)" in status["message"]
    assert status["stable"]["revision"] == before["stable"]["revision"]
    after = get(cluster, "service", "guest-canary", "-n", namespace)
    assert after["metadata"]["resourceVersion"] == theirs["metadata"]["resourceVersion"]
    services = {s["metadata"]["name"] for s in get(cluster, "services", "-n", namespace)["items"]}
    assert services == {"guest", "guest-canary"}, "no Service of the rollout while a name is taken"
    assert len(get(cluster, "deployments", "-n", namespace)["items"]) == 1, "nor its Deployment"

    cluster.kubectl("delete", "service", "guest-canary", "-n", namespace)
    done = wait_for_status(
        cluster,
        namespace,
        "guest",
        lambda s: healthy(s) and (s.get("stable") or {}).get("version") == "2.0.0",
        timeout=90,
        what="the rollout once the name is free",
    )
    services = {s["metadata"]["name"] for s in get(cluster, "services", "-n", namespace)["items"]}
    assert services == {"guest"}, "the rollout's own Services are deleted when it ends"
    selector = get(cluster, "service", "guest", "-n", namespace)["spec"]["selector"]
    assert selector["modeldeploy.io/revision"] == done["stable"]["revision"]
    events = get(cluster, "events", "-n", namespace, "--field-selector", "involvedObject.name=guest")["items"]
    assert not [event for event in events if event["reason"] == "StatusRepaired"]


def test_blocking_owner_deletion_needs_the_right_to_update_the_owners_finalizers(
    cluster: Cluster, namespace: str
) -> None:
    """OwnerReferencesPermissionEnforcement runs on the local control plane (testkit/scripts/cluster-up.sh), so the
    install tests that run the operator as the chart's ServiceAccount prove its RBAC is enough for every child."""
    apply(cluster, namespace, model_deployment("owner", "1.0.0", 1, {"strategy": "Immediate"}, uri="file:///m"))
    uid = get(cluster, "mdep", "owner", "-n", namespace)["metadata"]["uid"]
    user = f"someone-{namespace}"
    cluster.kubectl("create", "role", "services", "--verb=create", "--resource=services", "-n", namespace)
    cluster.kubectl("create", "rolebinding", "services", "--role=services", f"--user={user}", "-n", namespace)
    reference = {
        "apiVersion": "modeldeploy.io/v1alpha1",
        "kind": "ModelDeployment",
        "name": "owner",
        "uid": uid,
        "controller": True,
        "blockOwnerDeletion": True,
    }
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "blocking", "namespace": namespace, "ownerReferences": [reference]},
        "spec": {"ports": [{"port": 80}]},
    }

    def create() -> Any:
        return cluster.kubectl("create", "-f", "-", f"--as={user}", input=json.dumps(service), check=False)

    # The RoleBinding is in effect once the user may create Services without an owner reference.
    plain = {**service, "metadata": {"name": "plain", "namespace": namespace}}
    wait_until(
        lambda: (
            cluster.kubectl("create", "-f", "-", f"--as={user}", input=json.dumps(plain), check=False).returncode == 0
        ),
        timeout=30,
        what="the user's RoleBinding to take effect",
    )
    refused = create()
    assert refused.returncode != 0
    assert "cannot set blockOwnerDeletion" in refused.stderr, refused.stderr
