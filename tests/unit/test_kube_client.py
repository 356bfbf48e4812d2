"""kube/client.py against a fake API server: what it sends, how it takes answers and errors, TLS, server names,
proxies and tokens."""

from __future__ import annotations

import base64
import logging
import re
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import urllib3

from modeldeploy.kube import client
from modeldeploy.kube.client import (
    USER_AGENT,
    ApiError,
    Kube,
    namespace_of,
    namespace_terminating,
    permanent,
    retry_after_seconds,
    transient,
)
from modeldeploy.kube.config import ConnectionSettings
from modeldeploy.kube.events import COMBINED_PREFIX, SIMILAR_LIMIT, EventCorrelator

from .tls import SERVER_NAME, ConnectProxy, FakeApiServer, Pki, Recorded, server_tls

TOKEN = "s3cr3t-token"
TERMINATING = (
    '{"kind":"Status","apiVersion":"v1","status":"Failure","message":"events \\"x.1\\" is forbidden: unable to create '
    'new content in namespace ns because it is being terminated","reason":"Forbidden","code":403}'
)


def status_body(code: int, message: str, reason: str = "") -> dict[str, Any]:
    return {
        "kind": "Status",
        "apiVersion": "v1",
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    }


@pytest.fixture
def server() -> Iterator[FakeApiServer]:
    fake = FakeApiServer().start()
    yield fake
    fake.stop()


@pytest.fixture
def kube(server: FakeApiServer) -> Kube:
    return Kube(ConnectionSettings(server=server.url, token=TOKEN), pool_size=2)


def deployment(name: str = "web-r1") -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": "ns"},
        "spec": {"replicas": 2},
    }


def test_apply_is_a_forced_server_side_apply_under_our_field_manager(
    kube: Kube, server: FakeApiServer, caplog: pytest.LogCaptureFixture
) -> None:
    server.reply = lambda request: (200, {**request.json(), "status": {"replicas": 2}})
    caplog.set_level(logging.INFO, logger="modeldeploy.kube")
    result = kube.apply(deployment())
    [request] = server.requests
    assert request.method == "PATCH"
    assert request.path == "/apis/apps/v1/namespaces/ns/deployments/web-r1"
    assert request.query == {"fieldManager": "modeldeploy", "force": "true"}
    assert request.headers["content-type"] == "application/apply-patch+yaml"
    assert request.headers["user-agent"] == USER_AGENT == "modeldeploy/0.1.0"
    assert request.headers["authorization"] == f"Bearer {TOKEN}"
    assert request.headers["accept"] == "application/json"
    assert request.json() == deployment()
    assert result == {**deployment(), "status": {"replicas": 2}}
    assert kube.writes == {"apply Deployment": 1}
    assert caplog.messages == ['Applied Deployment namespace="ns" name="web-r1"']


def test_apply_without_force_creates_and_a_conflict_is_an_api_error(kube: Kube, server: FakeApiServer) -> None:
    message = 'Apply failed with 1 conflict: conflict with "kubectl-create": .spec.replicas'
    server.reply = lambda request: (409, status_body(409, message, "Conflict"))
    with pytest.raises(ApiError) as raised:
        kube.apply(deployment(), force=False)
    [request] = server.requests
    assert request.query == {"fieldManager": "modeldeploy"}
    assert raised.value.status == 409
    assert kube.writes == {"apply Deployment": 1}


def test_get_child_reads_any_object_of_that_name_and_none_when_there_is_none(kube: Kube, server: FakeApiServer) -> None:
    found = {"apiVersion": "v1", "metadata": {"name": "web-canary", "namespace": "ns"}}
    server.reply = lambda request: (200, found)
    assert kube.get_child("Service", "ns", "web-canary") == {"kind": "Service", **found}
    assert (server.requests[0].method, server.requests[0].path) == ("GET", "/api/v1/namespaces/ns/services/web-canary")
    server.reply = lambda request: (404, status_body(404, 'services "web-canary" not found', "NotFound"))
    assert kube.get_child("Service", "ns", "web-canary") is None
    server.reply = lambda request: (403, status_body(403, "forbidden", "Forbidden"))
    with pytest.raises(ApiError):
        kube.get_child("Deployment", "ns", "web-r1")
    assert kube.writes == {}


def test_apply_of_a_service(kube: Kube, server: FakeApiServer) -> None:
    service = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web", "namespace": "ns"}}
    kube.apply(service)
    assert server.requests[0].path == "/api/v1/namespaces/ns/services/web"
    assert kube.writes == {"apply Service": 1}


def test_scale_is_a_merge_patch_of_the_replicas(
    kube: Kube, server: FakeApiServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="modeldeploy.kube")
    kube.scale_deployment("ns", "web-r1", 0)
    [request] = server.requests
    assert (request.method, request.path) == ("PATCH", "/apis/apps/v1/namespaces/ns/deployments/web-r1")
    assert request.query == {"fieldManager": "modeldeploy"}
    assert request.headers["content-type"] == "application/merge-patch+json"
    assert request.json() == {"spec": {"replicas": 0}}
    assert kube.writes == {"scale Deployment": 1}
    assert caplog.messages == ['Scaled Deployment namespace="ns" name="web-r1" replicas="0"']


def test_delete_propagates_in_the_background_and_a_missing_deployment_is_deleted_already(
    kube: Kube, server: FakeApiServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="modeldeploy.kube")
    server.reply = lambda request: (404, status_body(404, 'deployments.apps "web-r1" not found', "NotFound"))
    kube.delete_deployment("ns", "web-r1")
    [request] = server.requests
    assert (request.method, request.path) == ("DELETE", "/apis/apps/v1/namespaces/ns/deployments/web-r1")
    assert request.query == {"propagationPolicy": "Background"}
    assert kube.writes == {"delete Deployment": 1}
    assert caplog.messages == ['Deleted Deployment namespace="ns" name="web-r1"']


def test_delete_service_names_the_uid_it_may_delete_and_a_missing_one_is_deleted_already(
    kube: Kube, server: FakeApiServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="modeldeploy.kube")
    kube.delete_service("ns", "web-canary", uid="3f1e-uid")
    server.reply = lambda request: (404, status_body(404, 'services "web-canary" not found', "NotFound"))
    kube.delete_service("ns", "web-canary")
    first, second = server.requests
    assert (first.method, first.path) == ("DELETE", "/api/v1/namespaces/ns/services/web-canary")
    assert first.query == {"propagationPolicy": "Background"}
    assert first.json() == {"apiVersion": "v1", "kind": "DeleteOptions", "preconditions": {"uid": "3f1e-uid"}}
    assert second.body == b""
    assert kube.writes == {"delete Service": 2}
    assert caplog.messages == ['Deleted Service namespace="ns" name="web-canary"'] * 2


def test_delete_service_of_another_uid_is_a_conflict(kube: Kube, server: FakeApiServer) -> None:
    message = "Precondition failed: UID in precondition: 3f1e-uid, UID in object meta: 9a0b-uid"
    server.reply = lambda request: (409, status_body(409, message, "Conflict"))
    with pytest.raises(ApiError) as raised:
        kube.delete_service("ns", "web-canary", uid="3f1e-uid")
    assert raised.value.status == 409


@pytest.mark.parametrize(("code", "deleted"), [(200, True), (404, False), (409, False)])
def test_delete_child_is_fenced_by_the_childs_uid(kube: Kube, server: FakeApiServer, code: int, deleted: bool) -> None:
    server.reply = lambda request: (code, status_body(code, "answer") if code >= 400 else {})
    assert kube.delete_child("Service", "ns", "web-canary", "u-7") is deleted
    [request] = server.requests
    assert (request.method, request.path) == ("DELETE", "/api/v1/namespaces/ns/services/web-canary")
    assert request.json() == {
        "apiVersion": "v1",
        "kind": "DeleteOptions",
        "preconditions": {"uid": "u-7"},
        "propagationPolicy": "Background",
    }
    assert kube.writes == {"delete Service": 1}


def test_children_and_resource_uids_are_listed_as_metadata(kube: Kube, server: FakeApiServer) -> None:
    items = [{"metadata": {"name": "web", "uid": "u-1"}}, "garbage"]
    server.reply = lambda request: (200, {"kind": "PartialObjectMetadataList", "items": items})
    assert kube.list_child_metadata("Deployment", "ns") == [
        {"kind": "Deployment", "metadata": {"name": "web", "uid": "u-1"}}
    ]
    assert kube.list_resource_uids("ns") == {"web": "u-1"}
    children, resources = server.requests
    assert (children.path, children.query) == (
        "/apis/apps/v1/namespaces/ns/deployments",
        {"labelSelector": "app.kubernetes.io/managed-by=modeldeploy"},
    )
    assert resources.path == "/apis/modeldeploy.io/v1alpha1/namespaces/ns/modeldeployments"
    assert all(r.headers["accept"].startswith("application/json;as=PartialObjectMetadataList") for r in server.requests)
    assert kube.writes == {}


def test_delete_raises_other_errors(kube: Kube, server: FakeApiServer) -> None:
    server.reply = lambda request: (500, status_body(500, "etcdserver: request timed out"))
    with pytest.raises(ApiError) as raised:
        kube.delete_deployment("ns", "web-r1")
    assert raised.value.status == 500


def test_get_resource_and_a_missing_one(kube: Kube, server: FakeApiServer) -> None:
    body = {"kind": "ModelDeployment", "metadata": {"name": "web"}}
    server.reply = lambda request: (200, body) if request.path.endswith("/web") else (404, status_body(404, "gone"))
    assert kube.get_resource("ns", "web") == body
    assert kube.get_resource("ns", "other") is None
    assert server.requests[0].path == "/apis/modeldeploy.io/v1alpha1/namespaces/ns/modeldeployments/web"


def test_lists_of_resources_ask_for_metadata_only_and_pass_a_shard_s_selector(
    kube: Kube, server: FakeApiServer
) -> None:
    items = [{"metadata": {"namespace": "ns", "name": "web", "resourceVersion": "7"}}]
    server.reply = lambda request: (200, {"metadata": {"resourceVersion": "9"}, "items": items})
    assert kube.list_resource_versions("ns") == ("9", {"web": "7"})
    assert kube.list_resource_versions("ns", label_selector="modeldeploy.io/shard=a") == ("9", {"web": "7"})
    assert kube.list_resource_keys(None, "tier in (gold)") == {("ns", "web")}
    assert kube.list_resource_keys("ns") == {("ns", "web")}
    paths = [(request.path, request.query) for request in server.requests]
    assert paths == [
        ("/apis/modeldeploy.io/v1alpha1/namespaces/ns/modeldeployments", {}),
        ("/apis/modeldeploy.io/v1alpha1/namespaces/ns/modeldeployments", {"labelSelector": "modeldeploy.io/shard=a"}),
        ("/apis/modeldeploy.io/v1alpha1/modeldeployments", {"labelSelector": "tier in (gold)"}),
        ("/apis/modeldeploy.io/v1alpha1/namespaces/ns/modeldeployments", {}),
    ]
    assert all("as=PartialObjectMetadataList" in request.headers["accept"] for request in server.requests)


def test_list_children_by_label_selector_gives_each_its_kind(kube: Kube, server: FakeApiServer) -> None:
    server.reply = lambda request: (200, {"items": [{"metadata": {"name": "web-r1"}}]})
    assert kube.list_children("Deployment", "ns", "app.kubernetes.io/instance=web") == [
        {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web-r1"}}
    ]
    assert kube.list_children("Service", "ns", "a=b")[0] | {"metadata": {}} == {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {},
    }
    assert [(request.path, request.query) for request in server.requests] == [
        ("/apis/apps/v1/namespaces/ns/deployments", {"labelSelector": "app.kubernetes.io/instance=web"}),
        ("/api/v1/namespaces/ns/services", {"labelSelector": "a=b"}),
    ]


def test_get_resource_raises_other_errors(kube: Kube, server: FakeApiServer) -> None:
    server.reply = lambda request: (403, status_body(403, "modeldeployments is forbidden: no", "Forbidden"))
    with pytest.raises(ApiError) as raised:
        kube.get_resource("ns", "web")
    assert (raised.value.status, raised.value.reason) == (403, "Forbidden")
    assert "modeldeployments is forbidden: no" in str(raised.value)


def test_patch_status_is_a_merge_patch_of_the_status_subresource(kube: Kube, server: FakeApiServer) -> None:
    server.reply = lambda request: (200, {"kind": "ModelDeployment", **request.json()})
    result = kube.patch_status("ns", "web", {"phase": "Healthy", "canary": None})
    [request] = server.requests
    assert (request.method, request.path) == (
        "PATCH",
        "/apis/modeldeploy.io/v1alpha1/namespaces/ns/modeldeployments/web/status",
    )
    assert request.headers["content-type"] == "application/merge-patch+json"
    assert request.json() == {"status": {"phase": "Healthy", "canary": None}}
    assert "fieldManager" not in request.query
    assert result == {"kind": "ModelDeployment", "status": {"phase": "Healthy", "canary": None}}
    assert kube.writes == {"patch ModelDeployment/status": 1}


def test_request_command_writes_status_commands(kube: Kube, server: FakeApiServer) -> None:
    kube.request_command("ns", "web", "promote", {"id": "1", "full": True})
    assert server.requests[0].json() == {"status": {"commands": {"promote": {"id": "1", "full": True}}}}


def test_post_event(kube: Kube, server: FakeApiServer) -> None:
    resource = {"metadata": {"name": "web", "namespace": "ns", "uid": "u-1", "resourceVersion": "42"}}
    kube.post_event(resource, "Warning", "AnalysisFailed", "x" * 2000)
    [request] = server.requests
    assert (request.method, request.path) == ("POST", "/api/v1/namespaces/ns/events")
    assert request.headers["content-type"] == "application/json"
    event = request.json()
    assert event["firstTimestamp"] == event["lastTimestamp"]
    assert event["firstTimestamp"].endswith("Z")
    del event["firstTimestamp"], event["lastTimestamp"]
    name = event["metadata"]["name"]
    assert re.fullmatch(r"web\.[0-9a-f]{16}", name), name
    assert event == {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"name": name, "namespace": "ns"},
        "involvedObject": {
            "apiVersion": "modeldeploy.io/v1alpha1",
            "kind": "ModelDeployment",
            "name": "web",
            "namespace": "ns",
            "uid": "u-1",
            "resourceVersion": "42",
        },
        "reason": "AnalysisFailed",
        "message": "x" * 1024,
        "type": "Warning",
        "source": {"component": "modeldeploy"},
        "reportingComponent": "modeldeploy.io/operator",
        "reportingInstance": "modeldeploy",
        "count": 1,
    }
    assert kube.writes == {"create Event": 1}


def test_an_event_of_a_resource_without_uid_leaves_the_field_out(kube: Kube, server: FakeApiServer) -> None:
    kube.post_event({"metadata": {"name": "web", "namespace": "ns"}}, "Normal", "Created", "m")
    assert "uid" not in server.requests[0].json()["involvedObject"]


def test_an_event_that_cannot_be_recorded_is_logged_not_raised(
    kube: Kube, server: FakeApiServer, caplog: pytest.LogCaptureFixture
) -> None:
    server.reply = lambda request: (403, status_body(403, "events is forbidden", "Forbidden"))
    caplog.set_level(logging.DEBUG, logger="modeldeploy.kube")
    kube.post_event({"metadata": {"name": "web", "namespace": "ns"}}, "Normal", "Created", "m")
    assert [(r.levelno, r.getMessage()) for r in caplog.records] == [
        (logging.WARNING, 'Could not record Event reason="Created" status="403"')
    ]


def test_an_event_in_a_terminating_namespace_is_only_a_debug_line(
    kube: Kube, server: FakeApiServer, caplog: pytest.LogCaptureFixture
) -> None:
    server.reply = lambda request: (403, TERMINATING)
    caplog.set_level(logging.DEBUG, logger="modeldeploy.kube")
    kube.post_event({"metadata": {"name": "web", "namespace": "ns"}}, "Normal", "Created", "m")
    assert [r.levelno for r in caplog.records] == [logging.DEBUG]


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now


WEB = {"metadata": {"name": "web", "namespace": "ns", "uid": "u-1", "resourceVersion": "42"}}


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def recorder(server: FakeApiServer, clock: Clock) -> Kube:
    """A client whose Events are stamped by a clock the test moves."""
    return Kube(ConnectionSettings(server=server.url), pool_size=1, clock=clock)


def test_a_repeated_event_is_counted_on_the_first_one(recorder: Kube, server: FakeApiServer, clock: Clock) -> None:
    recorder.post_event(WEB, "Warning", "ChildConflict", "Service/web is not ours")
    for _ in range(2):
        clock.now += timedelta(seconds=30)
        recorder.post_event(WEB, "Warning", "ChildConflict", "Service/web is not ours")
    create, *patches = server.requests
    name = create.json()["metadata"]["name"]
    assert (create.method, create.json()["count"]) == ("POST", 1)
    assert create.json()["firstTimestamp"] == create.json()["lastTimestamp"] == "2025-03-01T12:00:00Z"
    assert [(p.method, p.path, p.headers["content-type"], p.json()) for p in patches] == [
        (
            "PATCH",
            f"/api/v1/namespaces/ns/events/{name}",
            "application/merge-patch+json",
            {"count": count, "lastTimestamp": f"2025-03-01T12:0{minute}:{second}Z"},
        )
        for count, minute, second in ((2, 0, 30), (3, 1, "00"))
    ]
    assert recorder.writes == {"create Event": 1, "patch Event": 2}


def test_a_repeat_of_an_expired_event_creates_it_again_with_its_count(
    recorder: Kube, server: FakeApiServer, clock: Clock
) -> None:
    recorder.post_event(WEB, "Warning", "ReconcileError", "refused")
    clock.now += timedelta(minutes=5)
    recorder.post_event(WEB, "Warning", "ReconcileError", "refused")
    gone = status_body(404, "not found", "NotFound")
    server.reply = lambda request: (404, gone) if request.method == "PATCH" else (200, request.json())
    clock.now += timedelta(minutes=5)
    recorder.post_event(WEB, "Warning", "ReconcileError", "refused")
    assert [request.method for request in server.requests] == ["POST", "PATCH", "PATCH", "POST"]
    first, again = server.requests[0].json(), server.requests[-1].json()
    assert again["metadata"] == first["metadata"]
    assert (again["count"], again["firstTimestamp"], again["lastTimestamp"]) == (
        3,
        "2025-03-01T12:00:00Z",
        "2025-03-01T12:10:00Z",
    )
    assert recorder.writes == {"create Event": 2, "patch Event": 2}


def test_a_repeat_after_the_window_is_a_new_event(recorder: Kube, server: FakeApiServer, clock: Clock) -> None:
    recorder.post_event(WEB, "Warning", "ReconcileError", "refused")
    clock.now += timedelta(minutes=10, seconds=1)
    recorder.post_event(WEB, "Warning", "ReconcileError", "refused")
    first, second = (request.json() for request in server.requests)
    assert [request.method for request in server.requests] == ["POST", "POST"]
    assert first["metadata"]["name"] != second["metadata"]["name"]
    assert second["count"] == 1


def test_events_of_other_objects_reasons_or_messages_are_apart(recorder: Kube, server: FakeApiServer) -> None:
    other = {"metadata": {"name": "web", "namespace": "ns", "uid": "u-2"}}  # deleted and created again
    recorder.post_event(WEB, "Normal", "PhaseHealthy", "2/2 ready")
    recorder.post_event(other, "Normal", "PhaseHealthy", "2/2 ready")
    recorder.post_event(WEB, "Normal", "PhaseProgressing", "2/2 ready")
    recorder.post_event(WEB, "Normal", "PhaseHealthy", "1/2 ready")
    recorder.post_event(WEB, "Warning", "PhaseHealthy", "2/2 ready")
    assert [request.method for request in server.requests] == ["POST"] * 5
    assert len({request.json()["metadata"]["name"] for request in server.requests}) == 5


def test_many_messages_of_one_reason_are_combined(recorder: Kube, server: FakeApiServer) -> None:
    for n in range(SIMILAR_LIMIT + 1):
        recorder.post_event(WEB, "Warning", "AnalysisMeasurementFailed", f"latency: {n} is above max 0.05")
    own = server.requests[: SIMILAR_LIMIT - 1]
    combined, repeat = server.requests[SIMILAR_LIMIT - 1 :]
    assert [request.method for request in own] == ["POST"] * (SIMILAR_LIMIT - 1)
    assert combined.method == "POST"
    assert combined.json()["message"] == f"{COMBINED_PREFIX}latency: {SIMILAR_LIMIT - 1} is above max 0.05"
    assert repeat.method == "PATCH"
    assert repeat.path.endswith("/" + combined.json()["metadata"]["name"])
    assert repeat.json() == {
        "count": 2,
        "lastTimestamp": combined.json()["lastTimestamp"],
        "message": f"{COMBINED_PREFIX}latency: {SIMILAR_LIMIT} is above max 0.05",
    }


def test_the_event_cache_is_bounded(server: FakeApiServer, clock: Clock) -> None:
    kube = Kube(ConnectionSettings(server=server.url), pool_size=1, clock=clock, events=EventCorrelator(max_entries=2))
    for reason in ("A", "B", "C", "A"):
        kube.post_event(WEB, "Normal", reason, "m")
    # A was forgotten to make room for C: its repeat is a new Event.
    assert [request.method for request in server.requests] == ["POST"] * 4


def test_an_event_that_cannot_be_sent_is_logged_not_raised(
    server: FakeApiServer, caplog: pytest.LogCaptureFixture
) -> None:
    kube = Kube(ConnectionSettings(server=server.url), pool_size=1)
    server.stop()  # nothing listens any more: the connection is refused
    caplog.set_level(logging.WARNING, logger="modeldeploy.kube")
    kube.post_event(WEB, "Normal", "Promoted", "done")
    [record] = caplog.records
    assert record.getMessage().startswith('Could not record Event reason="Promoted" error="')
    assert kube.writes == {"create Event": 1}


def test_a_refusal_for_a_namespace_being_deleted_is_told_whatever_the_caller_does(
    kube: Kube, server: FakeApiServer
) -> None:
    told: list[str] = []
    kube.on_namespace_terminating = told.append
    server.reply = lambda request: (403, TERMINATING)
    kube.post_event({"metadata": {"name": "web", "namespace": "ns"}}, "Normal", "Created", "m")  # not raised
    with pytest.raises(ApiError):
        kube.apply(deployment())
    assert told == ["ns", "ns"]
    # Any other refusal is not news about the namespace.
    server.reply = lambda request: (403, status_body(403, "deployments.apps is forbidden", "Forbidden"))
    with pytest.raises(ApiError):
        kube.apply(deployment())
    assert told == ["ns", "ns"]


def test_namespace_of_a_path() -> None:
    assert namespace_of("/api/v1/namespaces/ns/events") == "ns"
    assert namespace_of("/apis/apps/v1/namespaces/team-a/deployments/web") == "team-a"
    assert namespace_of("/apis/modeldeploy.io/v1alpha1/namespaces/a%2Fb/modeldeployments/x/status") == "a/b"
    assert namespace_of("/api/v1/namespaces") is None
    assert namespace_of("/api/v1/namespaces/ns") is None  # the namespace itself is in none
    assert namespace_of("/apis/coordination.k8s.io/v1/leases") is None


def test_namespace_metadata_is_listed_as_partial_objects(kube: Kube, server: FakeApiServer) -> None:
    live = {"name": "a", "uid": "u-a"}
    going = {"name": "b", "uid": "u-b", "deletionTimestamp": "2026-12-01T12:00:00Z"}
    items: list[Any] = [{"metadata": live}, {"metadata": going}, "garbage"]
    server.reply = lambda request: (200, {"kind": "PartialObjectMetadataList", "items": items})
    assert kube.list_namespace_metadata() == [live, going]
    [request] = server.requests
    assert (request.method, request.path) == ("GET", "/api/v1/namespaces")
    assert request.headers["accept"].startswith("application/json;as=PartialObjectMetadataList")
    assert kube.writes == {}


def test_api_error_carries_status_reason_and_body(kube: Kube, server: FakeApiServer) -> None:
    conflict = status_body(409, 'Apply failed with 1 conflict: conflict with "kubectl"', "Conflict")
    server.reply = lambda request: (409, conflict)
    with pytest.raises(ApiError) as raised:
        kube.apply(deployment())
    error = raised.value
    assert (error.status, error.reason) == (409, "Conflict")
    assert '"reason": "Conflict"' in error.body
    assert str(error) == '(409) Conflict: Apply failed with 1 conflict: conflict with "kubectl"'
    assert not namespace_terminating(error)
    assert kube.writes == {"apply Deployment": 1}  # counted when sent, answered or not


def test_namespace_terminating() -> None:
    assert namespace_terminating(ApiError(403, "Forbidden", TERMINATING))
    assert not namespace_terminating(ApiError(403, "Forbidden", '{"message":"deployments.apps is forbidden"}'))
    assert not namespace_terminating(ApiError(409, "Conflict", TERMINATING))


def test_an_error_body_that_is_not_json_is_kept_as_text() -> None:
    error = ApiError(502, "Bad Gateway", "<html>upstream</html>")
    assert str(error) == "(502) Bad Gateway: <html>upstream</html>"


def test_writes_are_not_retried(kube: Kube, server: FakeApiServer) -> None:
    server.reply = lambda request: (503, status_body(503, "unavailable"))
    with pytest.raises(ApiError):
        kube.scale_deployment("ns", "web-r1", 1)
    assert len(server.requests) == 1


def test_the_write_fence_stops_a_write_before_it_is_sent(
    kube: Kube, server: FakeApiServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    def refuse() -> None:
        raise RuntimeError("not the leader")

    monkeypatch.setattr(client, "WRITE_FENCE", refuse)
    writes: list[Callable[[], object]] = [
        lambda: kube.apply(deployment()),
        lambda: kube.scale_deployment("ns", "web-r1", 1),
        lambda: kube.delete_deployment("ns", "web-r1"),
        lambda: kube.delete_service("ns", "web-canary", uid="3f1e-uid"),
        lambda: kube.patch_status("ns", "web", {"phase": "Healthy"}),
        lambda: kube.post_event({"metadata": {"name": "web", "namespace": "ns"}}, "Normal", "Promoted", "done"),
    ]
    for write in writes:
        with pytest.raises(RuntimeError, match="not the leader"):
            write()
    assert kube.get_resource("ns", "web") is not None  # reads are not fenced
    assert [request.method for request in server.requests] == ["GET"]
    assert sum(kube.writes.values()) == 0


def test_proxy_settings_in_the_environment_are_ignored(server: FakeApiServer, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy", "ALL_PROXY"):
        monkeypatch.setenv(name, "http://127.0.0.1:9")  # the discard port: nothing answers there
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    kube = Kube(ConnectionSettings(server=server.url), pool_size=1)
    assert kube.get_resource("ns", "web") is not None


def test_no_token_no_authorization_header(server: FakeApiServer) -> None:
    Kube(ConnectionSettings(server=server.url), pool_size=1).get_resource("ns", "web")
    assert "authorization" not in server.requests[0].headers


def test_a_token_file_is_read_again_after_a_401(server: FakeApiServer, tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("old\n")
    server.reply = lambda request: (
        (200, {"kind": "ModelDeployment"})
        if request.headers.get("authorization") == "Bearer new"
        else (401, status_body(401, "Unauthorized", "Unauthorized"))
    )
    kube = Kube(ConnectionSettings(server=server.url, token_file=str(token_file)), pool_size=1)
    with pytest.raises(ApiError) as raised:
        kube.get_resource("ns", "web")
    assert raised.value.status == 401
    token_file.write_text("new\n")  # rotated, as kubelet does in place
    assert kube.get_resource("ns", "web") == {"kind": "ModelDeployment"}
    assert [r.headers["authorization"] for r in server.requests] == ["Bearer old", "Bearer new"]


def test_a_server_path_prefix_is_kept(server: FakeApiServer) -> None:
    kube = Kube(ConnectionSettings(server=server.url + "/k8s/clusters/c-1/"), pool_size=1)
    kube.get_resource("ns", "web")
    assert (
        server.requests[0].path == "/k8s/clusters/c-1/apis/modeldeploy.io/v1alpha1/namespaces/ns/modeldeployments/web"
    )


# --- TLS ------------------------------------------------------------------------------------------------------------


@pytest.fixture
def tls_server(pki: Pki) -> Iterator[FakeApiServer]:
    fake = FakeApiServer(tls=server_tls(pki)).start()
    yield fake
    fake.stop()


def _subject(request: Recorded) -> str:
    assert request.client_certificate is not None
    return str(dict(item[0] for item in request.client_certificate["subject"])["commonName"])


def test_tls_with_files(tls_server: FakeApiServer, pki: Pki) -> None:
    settings = ConnectionSettings(
        server=tls_server.url,
        ca_file=str(pki.ca_cert),
        client_cert_file=str(pki.client_cert),
        client_key_file=str(pki.client_key),
    )
    assert Kube(settings, pool_size=1).get_resource("ns", "web") is not None
    assert _subject(tls_server.requests[0]) == "tester"


def test_tls_with_data(tls_server: FakeApiServer, pki: Pki, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("tempfile.tempdir", str(tmp_path))
    settings = ConnectionSettings(
        server=tls_server.url,
        ca_data=pki.ca_cert.read_text(),
        client_cert_data=pki.client_cert.read_text(),
        client_key_data=pki.client_key.read_text(),
    )
    assert Kube(settings, pool_size=1).get_resource("ns", "web") is not None
    assert _subject(tls_server.requests[0]) == "tester"
    assert list(tmp_path.iterdir()) == []  # the key written for ssl to load is gone again


def test_a_server_signed_by_another_ca_is_refused(tls_server: FakeApiServer, pki: Pki) -> None:
    settings = ConnectionSettings(server=tls_server.url, ca_file=str(pki.stranger_ca_cert))
    with pytest.raises(urllib3.exceptions.SSLError):
        Kube(settings, pool_size=1).get_resource("ns", "web")
    assert tls_server.requests == []


def test_insecure_skips_verification(pki: Pki) -> None:
    fake = FakeApiServer(tls=server_tls(pki, require_client_certificate=False)).start()
    try:
        settings = ConnectionSettings(server=fake.url, ca_file=str(pki.stranger_ca_cert), insecure=True)
        with pytest.warns(urllib3.exceptions.InsecureRequestWarning):
            assert Kube(settings, pool_size=1).get_resource("ns", "web") is not None
    finally:
        fake.stop()


# --- tls-server-name ------------------------------------------------------------------------------------------------


@pytest.fixture
def named_server(pki: Pki) -> Iterator[FakeApiServer]:
    """A server whose certificate names only SERVER_NAME, reached by IP (its url is https://127.0.0.1:port)."""
    fake = FakeApiServer(tls=server_tls(pki, require_client_certificate=False, named=True)).start()
    yield fake
    fake.stop()


def test_tls_server_name_is_the_name_checked_when_connecting_by_ip(named_server: FakeApiServer, pki: Pki) -> None:
    settings = ConnectionSettings(server=named_server.url, ca_file=str(pki.ca_cert), tls_server_name=SERVER_NAME)
    assert Kube(settings, pool_size=1).get_resource("ns", "web") is not None
    assert len(named_server.requests) == 1


def test_without_tls_server_name_the_ip_does_not_match_the_certificate(named_server: FakeApiServer, pki: Pki) -> None:
    settings = ConnectionSettings(server=named_server.url, ca_file=str(pki.ca_cert))
    with pytest.raises(urllib3.exceptions.SSLError, match="IP address mismatch"):
        Kube(settings, pool_size=1).get_resource("ns", "web")
    wrong = ConnectionSettings(server=named_server.url, ca_file=str(pki.ca_cert), tls_server_name="other.test")
    with pytest.raises(urllib3.exceptions.SSLError, match="Hostname mismatch"):
        Kube(wrong, pool_size=1).get_resource("ns", "web")
    assert named_server.requests == []


# --- proxy-url ------------------------------------------------------------------------------------------------------


@pytest.fixture
def proxy() -> Iterator[ConnectProxy]:
    tunnel = ConnectProxy().start()
    yield tunnel
    tunnel.stop()


def test_an_http_proxy_tunnels_to_the_server(tls_server: FakeApiServer, proxy: ConnectProxy, pki: Pki) -> None:
    settings = ConnectionSettings(
        server=tls_server.url,
        ca_file=str(pki.ca_cert),
        client_cert_file=str(pki.client_cert),
        client_key_file=str(pki.client_key),
        token=TOKEN,
        proxy_url=proxy.url,
    )
    kube = Kube(settings, pool_size=1)
    for _ in range(3):
        assert kube.get_resource("ns", "web") is not None
    # One tunnel, kept open and reused; TLS and the client certificate go end to end through it.
    assert proxy.tunnels == [(tls_server.url.removeprefix("https://"), None)]
    assert len(tls_server.requests) == 3
    assert _subject(tls_server.requests[0]) == "tester"
    assert tls_server.requests[0].headers["authorization"] == f"Bearer {TOKEN}"


def test_the_proxy_url_credentials_go_to_the_proxy_only(
    tls_server: FakeApiServer, proxy: ConnectProxy, pki: Pki
) -> None:
    url = proxy.url.replace("http://", "http://me:p%40ss@")
    settings = ConnectionSettings(
        server=tls_server.url,
        ca_file=str(pki.ca_cert),
        client_cert_file=str(pki.client_cert),
        client_key_file=str(pki.client_key),
        proxy_url=url,
    )
    Kube(settings, pool_size=1).get_resource("ns", "web")
    [(_, authorization)] = proxy.tunnels
    assert authorization == "Basic " + base64.b64encode(b"me:p@ss").decode()
    assert "proxy-authorization" not in tls_server.requests[0].headers


def test_an_https_proxy_is_checked_against_the_cluster_ca(tls_server: FakeApiServer, pki: Pki) -> None:
    tunnel = ConnectProxy(tls=server_tls(pki, require_client_certificate=False)).start()
    try:
        settings = ConnectionSettings(
            server=tls_server.url,
            ca_file=str(pki.ca_cert),
            client_cert_file=str(pki.client_cert),
            client_key_file=str(pki.client_key),
            proxy_url=tunnel.url,
        )
        assert Kube(settings, pool_size=1).get_resource("ns", "web") is not None
        assert len(tunnel.tunnels) == 1
        assert _subject(tls_server.requests[0]) == "tester"
    finally:
        tunnel.stop()


def test_a_proxy_and_tls_server_name_together(named_server: FakeApiServer, proxy: ConnectProxy, pki: Pki) -> None:
    settings = ConnectionSettings(
        server=named_server.url, ca_file=str(pki.ca_cert), tls_server_name=SERVER_NAME, proxy_url=proxy.url
    )
    assert Kube(settings, pool_size=1).get_resource("ns", "web") is not None
    # The tunnel goes to the server's address; only TLS inside it uses the name.
    assert proxy.tunnels == [(named_server.url.removeprefix("https://"), None)]


def test_a_fenced_status_write_carries_the_resource_version(kube: Kube, server: FakeApiServer) -> None:
    server.reply = lambda request: (200, {"kind": "ModelDeployment", **request.json()})
    kube.patch_status("ns", "web", {"phase": "Healthy"}, resource_version="1234")
    assert server.requests[0].json() == {"metadata": {"resourceVersion": "1234"}, "status": {"phase": "Healthy"}}


def test_the_resource_list_asks_for_metadata_only(kube: Kube, server: FakeApiServer) -> None:
    answer = {
        "kind": "PartialObjectMetadataList",
        "metadata": {"resourceVersion": "900"},
        "items": [{"metadata": {"name": "web", "resourceVersion": "850"}}],
    }
    server.reply = lambda request: (200, answer)
    assert kube.list_resource_versions("ns") == ("900", {"web": "850"})
    [request] = server.requests
    assert request.path == "/apis/modeldeploy.io/v1alpha1/namespaces/ns/modeldeployments"
    assert request.headers["accept"] == "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1"


def test_retry_after_is_read_from_the_answer(kube: Kube, server: FakeApiServer) -> None:
    server.reply = lambda request: (429, status_body(429, "too many requests", "TooManyRequests"))
    server.headers = {"Retry-After": "3"}
    with pytest.raises(ApiError) as raised:
        kube.scale_deployment("ns", "web-r1", 1)
    assert raised.value.retry_after == 3.0
    assert transient(raised.value)


@pytest.mark.parametrize(("value", "seconds"), [(None, None), ("2", 2.0), (" 10 ", 10.0), ("soon", None), ("-1", None)])
def test_retry_after_seconds(value: str | None, seconds: float | None) -> None:
    assert retry_after_seconds(value) == seconds


@pytest.mark.parametrize(
    ("error", "is_transient", "is_permanent"),
    [
        (ApiError(500, "Internal Server Error", "{}"), True, False),
        (ApiError(504, "Gateway Timeout", "{}"), True, False),
        (ApiError(429, "Too Many Requests", "{}"), True, False),
        (ApiError(422, "Unprocessable Entity", "{}"), False, True),
        (ApiError(413, "Request Entity Too Large", "{}"), False, True),
        (ApiError(400, "Bad Request", "{}"), False, True),
        (ApiError(409, "Conflict", "{}"), False, False),
        (ApiError(403, "Forbidden", "{}"), False, False),
        (urllib3.exceptions.ProtocolError("Connection aborted."), True, False),
        (ValueError("bug"), False, False),
    ],
)
def test_errors_are_classified(error: Exception, is_transient: bool, is_permanent: bool) -> None:
    assert (transient(error), permanent(error)) == (is_transient, is_permanent)


def test_a_refused_connection_is_transient() -> None:
    kube = Kube(ConnectionSettings(server="http://127.0.0.1:9", token=TOKEN), pool_size=1)
    with pytest.raises(urllib3.exceptions.HTTPError) as raised:
        kube.get_resource("ns", "web")
    assert transient(raised.value)
