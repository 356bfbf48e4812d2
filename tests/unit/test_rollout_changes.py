"""changes.status_change(): which differences between the stored status and a pass's status are worth a write.

One row per field (or part of one): the stored status is a canary rolling out, the computed one differs from it
in that one place, and the table says whether that is no change, counts only, or meaningful.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import pytest

from modeldeploy.api import models as api
from modeldeploy.rollout.changes import StatusChange, status_change, written_form

STORED: dict[str, Any] = {
    "observedGeneration": 2,
    "phase": "Paused",
    "message": "canary 2.0.0 at 25% (desired 25%, step 2/4); 1.0.0 serving; paused until promoted",
    "model": "fraud",
    "url": "http://fraud.models.svc.cluster.local:80",
    "conditions": [
        {
            "type": "Ready",
            "status": "False",
            "reason": "Paused",
            "message": "canary 2.0.0 at 25% (desired 25%, step 2/4); 1.0.0 serving; paused until promoted",
            "lastTransitionTime": "2026-12-01T12:00:00.000000Z",
            "observedGeneration": 2,
        },
        {
            "type": "Available",
            "status": "True",
            "reason": "MinimumReplicasAvailable",
            "message": "3/4 replicas of fraud 1.0.0 ready",
            "lastTransitionTime": "2026-12-01T11:00:00.000000Z",
            "observedGeneration": 2,
        },
    ],
    "stable": {
        "version": "1.0.0",
        "revision": "aaaa1111",
        "replicas": 3,
        "readyReplicas": 3,
        "since": "2026-12-01T11:00:00.000000Z",
        "readyAt": "2026-12-01T11:01:00.000000Z",
    },
    "canary": {
        "version": "2.0.0",
        "revision": "bbbb2222",
        "replicas": 1,
        "readyReplicas": 1,
        "desiredWeight": 25,
        "actualWeight": 25,
        "since": "2026-12-01T12:00:00.000000Z",
    },
    "currentStepIndex": 1,
    "stepStartedAt": "2026-12-01T12:01:00.000000Z",
    "pause": {"reason": "PromotionRequired", "startedAt": "2026-12-01T12:01:00.000000Z"},
    "acknowledged": {"promote": "p-1"},
    "history": [
        {
            "revision": "aaaa1111",
            "version": "1.0.0",
            "outcome": "Promoted",
            "reason": "FirstRevision",
            "time": "2026-12-01T11:00:00.000000Z",
        }
    ],
}


Edit = Callable[[dict[str, Any]], None]


def condition(kind: str) -> Callable[[dict[str, Any]], dict[str, Any]]:
    return lambda status: next(c for c in status["conditions"] if c["type"] == kind)


def setting(*path: Any, value: Any) -> Edit:
    """An edit that sets the field at `path` (a callable step picks a condition)."""

    def edit(status: dict[str, Any]) -> None:
        target = status
        for step in path[:-1]:
            target = step(target) if callable(step) else target[step]
        target[path[-1]] = value

    return edit


def removing(*path: str) -> Edit:
    def edit(status: dict[str, Any]) -> None:
        target = status
        for step in path[:-1]:
            target = target[step]
        del target[path[-1]]

    return edit


def both(*edits: Edit) -> Edit:
    def edit(status: dict[str, Any]) -> None:
        for one in edits:
            one(status)

    return edit


READY, AVAILABLE = condition("Ready"), condition("Available")
DEGRADED = {
    "type": "Degraded",
    "status": "False",
    "reason": "AsExpected",
    "message": "No problems found",
    "lastTransitionTime": "2026-12-01T12:00:00.000000Z",
    "observedGeneration": 2,
}
NONE, COUNTS, MEANINGFUL = StatusChange.NONE, StatusChange.COUNTS, StatusChange.MEANINGFUL

CASES: list[tuple[str, Edit, StatusChange]] = [
    ("nothing", lambda status: None, NONE),
    # Counts, and what follows from them alone.
    ("a stable pod Ready", setting("stable", "readyReplicas", value=4), COUNTS),
    ("a stable pod no longer Ready", setting("stable", "readyReplicas", value=2), COUNTS),
    ("a canary pod Ready", setting("canary", "readyReplicas", value=2), COUNTS),
    ("the canary's share of ready pods", setting("canary", "actualWeight", value=20), COUNTS),
    (
        "counts quoted in the messages",
        both(
            setting("stable", "readyReplicas", value=4),
            setting("canary", "actualWeight", value=20),
            setting(AVAILABLE, "message", value="4/4 replicas of fraud 1.0.0 ready"),
            setting(
                "message", value="canary 2.0.0 at 20% (desired 25%, step 2/4); 1.0.0 serving; paused until promoted"
            ),
            setting(
                READY,
                "message",
                value="canary 2.0.0 at 20% (desired 25%, step 2/4); 1.0.0 serving; paused until promoted",
            ),
        ),
        COUNTS,
    ),
    ("a transition time alone", setting(AVAILABLE, "lastTransitionTime", value="2026-12-01T12:30:00.000000Z"), COUNTS),
    # What conditions, decisions and people act on.
    ("a condition flips", setting(AVAILABLE, "status", value="False"), MEANINGFUL),
    ("a condition's reason", setting(READY, "reason", value="Progressing"), MEANINGFUL),
    ("a condition's generation", setting(READY, "observedGeneration", value=3), MEANINGFUL),
    ("a condition more", setting("conditions", value=[*STORED["conditions"], DEGRADED]), MEANINGFUL),
    (
        "a message reworded",
        setting(
            "message", value="canary 2.0.0 at 25% (desired 25%, step 2/4); 1.0.0 serving; paused by spec.rollout.paused"
        ),
        MEANINGFUL,
    ),
    (
        "a condition's message reworded",
        setting(READY, "message", value="waiting for a Successful measurement"),
        MEANINGFUL,
    ),
    ("the phase", setting("phase", value="Progressing"), MEANINGFUL),
    ("the generation observed", setting("observedGeneration", value=3), MEANINGFUL),
    ("the model's name", setting("model", value="fraud-v2"), MEANINGFUL),
    ("the url", setting("url", value="http://other.models.svc.cluster.local:80"), MEANINGFUL),
    ("the stable's version", setting("stable", "version", value="1.0.1"), MEANINGFUL),
    ("the stable's revision", setting("stable", "revision", value="cccc3333"), MEANINGFUL),
    ("the replicas the stable asks for", setting("stable", "replicas", value=2), MEANINGFUL),
    ("the stable first all Ready", setting("stable", "readyAt", value="2026-12-01T12:05:00.000000Z"), MEANINGFUL),
    ("the replicas the canary asks for", setting("canary", "replicas", value=2), MEANINGFUL),
    ("the weight the step asks for", setting("canary", "desiredWeight", value=50), MEANINGFUL),
    ("a fast track", setting("canary", "fastTrack", value=True), MEANINGFUL),
    ("the canary ends", removing("canary"), MEANINGFUL),
    ("the step", setting("currentStepIndex", value=2), MEANINGFUL),
    ("the step's start", setting("stepStartedAt", value="2026-12-01T12:02:00.000000Z"), MEANINGFUL),
    ("the pause ends", removing("pause"), MEANINGFUL),
    ("a request acted on", setting("acknowledged", "promote", value="p-2"), MEANINGFUL),
    (
        "a rollback recorded",
        setting(
            "aborted",
            value={
                "revision": "bbbb2222",
                "version": "2.0.0",
                "reason": "Aborted",
                "message": "aborted on request",
                "time": "2026-12-01T12:10:00.000000Z",
            },
        ),
        MEANINGFUL,
    ),
    (
        "a measurement",
        setting(
            "analysis", value={"revision": "bbbb2222", "phase": "Running", "lastMeasuredAt": "2026-12-01T12:09:00Z"}
        ),
        MEANINGFUL,
    ),
    ("the artifact", setting("artifact", value={"revision": "bbbb2222", "verified": True}), MEANINGFUL),
    ("history", setting("history", value=[]), MEANINGFUL),
    (
        "counts with a meaningful change",
        both(setting("stable", "readyReplicas", value=4), setting("phase", value="Progressing")),
        MEANINGFUL,
    ),
]


@pytest.mark.parametrize(("edit", "expected"), [case[1:] for case in CASES], ids=[case[0] for case in CASES])
def test_status_change(edit: Edit, expected: StatusChange) -> None:
    computed = copy.deepcopy(STORED)
    edit(computed)
    stored = api.ModelDeploymentStatus.model_validate(STORED)
    assert status_change(stored, api.ModelDeploymentStatus.model_validate(computed)) == expected


def test_commands_are_never_part_of_a_change() -> None:
    """status.commands is written by people; a request the operator has not acted on yet changes nothing it writes."""
    stored = api.ModelDeploymentStatus.model_validate(STORED)
    requested = api.ModelDeploymentStatus.model_validate({**STORED, "commands": {"promote": {"id": "p-2"}}})
    assert status_change(stored, requested) == StatusChange.NONE
    assert status_change(requested, stored) == StatusChange.NONE
    assert "commands" not in written_form(requested)


def test_a_first_status_is_meaningful() -> None:
    empty = api.ModelDeploymentStatus()
    assert status_change(empty, api.ModelDeploymentStatus.model_validate(STORED)) == StatusChange.MEANINGFUL
