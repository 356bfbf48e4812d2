"""A namespace being deleted takes its ModelDeployments with it: the operator writes nothing more for them.

The API server refuses only creates in a namespace being deleted; status patches and applies to existing objects
go through, for objects about to disappear. The audit log says what the operator sent after the namespace got its
deletionTimestamp.
"""

from __future__ import annotations

import time
from datetime import datetime
from typing import Any

from modeldeploy_testkit.cluster import Cluster, scratch_namespace
from modeldeploy_testkit.operator_process import OPERATOR_USER_AGENT, AuditLog, OperatorProcess
from modeldeploy_testkit.resources import apply, model_deployment, wait_for_status
from modeldeploy_testkit.waiting import wait_until

RESOURCES = 4


def _when(event: dict[str, Any], key: str) -> datetime:
    return datetime.fromisoformat(str(event[key]).replace("Z", "+00:00"))


def _describe(event: dict[str, Any]) -> str:
    reference = event.get("objectRef") or {}
    what = "/".join(
        str(part) for part in (reference.get("resource"), reference.get("name"), reference.get("subresource")) if part
    )
    code = (event.get("responseStatus") or {}).get("code")
    return f"{event.get('verb')} {what} -> {code} at {event.get('requestReceivedTimestamp')}"


def test_nothing_is_written_for_the_resources_of_a_namespace_being_deleted(
    cluster: Cluster, operator: OperatorProcess
) -> None:
    with scratch_namespace(cluster, "doomed") as namespace:
        names = [f"doomed-{index}" for index in range(RESOURCES)]
        for name in names:
            apply(cluster, namespace, model_deployment(name, "1.0.0", 2, {"strategy": "Immediate"}))
        for name in names:
            wait_for_status(cluster, namespace, name, lambda s: s.get("phase") == "Healthy", what=f"{name} Healthy")
        wait_until(lambda: operator.metric("modeldeploy_queue_depth") == 0, timeout=30, what="an empty queue")
        audit = AuditLog()
        mark = audit.mark()

        cluster.kubectl("delete", "namespace", namespace, "--wait=false")
        wait_until(
            lambda: cluster.kubectl("get", "namespace", namespace, check=False).returncode != 0,
            timeout=180,
            what="the namespace to be gone",
        )
        time.sleep(1.0)  # the audit log is written just after the answer: let the last events land

    events = list(audit.between(mark))
    # The first delete of the namespace is ours; the namespace controller deletes it again once it is empty.
    deletion, *_ = [
        event
        for event in events
        if event.get("verb") == "delete"
        and (event.get("objectRef") or {}).get("resource") == "namespaces"
        and (event.get("objectRef") or {}).get("name") == namespace
        and not str(event.get("userAgent", "")).startswith(OPERATOR_USER_AGENT)
    ]
    # The deletionTimestamp is set by the time the delete is answered.
    terminating_since = _when(deletion, "stageTimestamp")
    after = [
        event
        for event in events
        if str(event.get("userAgent", "")).startswith(OPERATOR_USER_AGENT)
        and (event.get("objectRef") or {}).get("namespace") == namespace
        and _when(event, "requestReceivedTimestamp") > terminating_since
    ]
    status_writes = [
        event
        for event in after
        if (event.get("objectRef") or {}).get("resource") == "modeldeployments"
        and (event.get("objectRef") or {}).get("subresource") == "status"
    ]
    assert status_writes == [], [_describe(event) for event in status_writes]
    # Nor any other write: children (applies would be refused as creates, or go through onto objects being
    # deleted) and Events.
    assert after == [], [_describe(event) for event in after]
