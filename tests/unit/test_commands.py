"""`kubectl mdep status` reads at a glance; command requests are unique and carry what the operator needs."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from modeldeploy.cli.commands import PLAIN_KUBECTL, command_body, render_status

NOW = datetime(2026, 5, 4, 12, 0, 0, tzinfo=UTC)


def resource(status: dict[str, Any], steps: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    return {
        "apiVersion": "modeldeploy.io/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": {"name": "fraud", "namespace": "ml", "generation": 2},
        "spec": {
            "model": {"version": "1.5.0", "uri": "s3://m/1.5.0"},
            "replicas": 4,
            "rollout": {"steps": steps or [{"setWeight": 25}, {"pause": {"duration": "30s"}}, {"setWeight": 50}]},
        },
        "status": {"observedGeneration": 2, **status},
    }


def test_status_marks_the_current_step_and_shows_both_tracks() -> None:
    text = render_status(
        resource(
            {
                "phase": "Paused",
                "message": "canary 1.5.0 at 25%",
                "stable": {"version": "1.4.0", "revision": "r111", "replicas": 3, "readyReplicas": 3},
                "canary": {
                    "version": "1.5.0",
                    "revision": "r222",
                    "replicas": 1,
                    "readyReplicas": 1,
                    "desiredWeight": 25,
                    "actualWeight": 25,
                },
                "currentStepIndex": 1,
                "pause": {"reason": "PauseStep", "startedAt": "2026-05-04T11:59:50Z", "endsAt": "2026-05-04T12:00:20Z"},
            }
        ),
        now=NOW,
    )
    lines = text.splitlines()
    assert "  ✔ 1. setWeight: 25%" in lines
    assert "  ▶ 2. pause: 30s   ends 12:00:20Z, 20s left" in lines
    assert "    3. setWeight: 50%" in lines
    assert any(line.split()[:4] == ["stable", "1.4.0", "r111", "3/3"] and line.endswith("75%") for line in lines)
    assert any(line.split()[:5] == ["canary", "1.5.0", "r222", "1/1", "25%"] for line in lines)
    assert "Waiting for: the pause to end in 20s" in lines
    assert lines[3] == "Phase:       ॥ Paused"


def test_status_of_an_aborted_rollout_says_what_it_waits_for() -> None:
    text = render_status(
        resource(
            {
                "phase": "Degraded",
                "stable": {"version": "1.4.0", "revision": "r111", "replicas": 4, "readyReplicas": 4},
                "aborted": {
                    "revision": "r222",
                    "version": "1.5.0",
                    "reason": "Aborted",
                    "time": "2026-05-04T11:00:00Z",
                },
            }
        ),
        now=NOW,
    )
    assert "Waiting for: a spec change or `retry` (1.5.0 was rolled back: Aborted)" in text
    assert "✖ Degraded" in text


def test_status_notices_a_spec_not_yet_observed() -> None:
    body = resource({"phase": "Healthy", "stable": {"version": "1.4.0", "revision": "r111"}})
    body["metadata"]["generation"] = 3
    assert "status not yet updated for the latest spec" in render_status(body, now=NOW)


def test_each_request_has_a_fresh_id() -> None:
    first, second = command_body(now=NOW), command_body(full=True, now=NOW)
    assert first["id"] != second["id"]
    assert "full" not in first
    assert second["full"] is True
    assert first["requestedAt"] == "2026-05-04T12:00:00.000000Z"


def test_plain_kubectl_one_liner_writes_the_status_subresource() -> None:
    assert "--subresource=status" in PLAIN_KUBECTL
    assert '"commands":{"COMMAND":{"id":' in PLAIN_KUBECTL


def test_status_shows_the_analysis_and_what_it_waits_for() -> None:
    measurement = {"phase": "Successful", "value": 0.9975, "message": "ok", "time": "2026-05-04T11:59:55Z"}
    text = render_status(
        resource(
            {
                "phase": "Progressing",
                "stable": {"version": "1.4.0", "revision": "r111", "replicas": 3, "readyReplicas": 3},
                "canary": {"version": "1.5.0", "revision": "r222", "replicas": 1, "readyReplicas": 1},
                "currentStepIndex": 0,
                "analysis": {
                    "revision": "r222",
                    "version": "1.5.0",
                    "phase": "Running",
                    "message": "latest: success-rate Successful, agreement Inconclusive",
                    "nextMeasurementAt": "2026-05-04T12:00:05Z",
                    "metrics": [
                        {"name": "success-rate", "phase": "Successful", "successful": 2, "measurements": [measurement]},
                        {"name": "agreement", "phase": "Inconclusive", "inconclusive": 1},
                    ],
                },
            }
        ),
        now=NOW,
    )
    lines = text.splitlines()
    assert "Analysis:    Running (1.5.0): latest: success-rate Successful, agreement Inconclusive" in lines
    assert [line.split() for line in lines if line.startswith("  success-rate") or line.startswith("  agreement")] == [
        ["success-rate", "Successful", "0.9975", "2", "0", "0", "0"],
        ["agreement", "Inconclusive", "-", "0", "0", "1", "0"],
    ]
    assert "Waiting for: Successful measurements of every metric (next in 5s)" in lines


def test_status_of_an_inconclusive_analysis_asks_for_a_decision() -> None:
    body = resource(
        {
            "phase": "Paused",
            "stable": {"version": "1.4.0", "revision": "r111", "replicas": 3, "readyReplicas": 3},
            "canary": {"version": "1.5.0", "revision": "r222", "replicas": 1, "readyReplicas": 1},
            "currentStepIndex": 0,
            "pause": {"reason": "AnalysisInconclusive", "startedAt": "2026-05-04T11:59:50Z"},
        }
    )
    assert (
        "Waiting for: `promote` to go on measuring, or `abort` (the analysis was inconclusive)"
        in render_status(body, now=NOW).splitlines()
    )


def test_status_names_a_mirror_step() -> None:
    body = resource(
        {
            "phase": "Paused",
            "currentStepIndex": 1,
            "stable": {"version": "1.4.0", "revision": "r111"},
            "canary": {"version": "1.5.0", "revision": "r222", "replicas": 4, "readyReplicas": 4},
        },
        steps=[{"setMirror": {}}, {"pause": {}}, {"setWeight": 5}],
    )
    body["spec"]["trafficRouting"] = {"gatewayAPI": {"parentRefs": [{"name": "public"}]}}
    lines = render_status(body, now=NOW).splitlines()
    assert "  ✔ 1. setMirror: a copy of every request, no answers" in lines
    assert "  ▶ 2. pause: until promoted" in lines
    assert "    3. setWeight: 5%" in lines
