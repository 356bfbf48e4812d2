"""Status written by someone else: whole passes (reconcile() against fake_cluster.py) after a hostile status write.

Whatever was written, the pass does not fail, the serving revision's Deployment keeps its pods (never deleted,
never scaled down), a canary still walks its steps, and every repair is a Warning Event with reason StatusRepaired
that the next pass does not repeat (the repaired status was written). The rules are in rollout/trust.py.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest

from modeldeploy.api import models as api
from modeldeploy.api.times import parse_time
from modeldeploy.children import builders
from modeldeploy.config import OperatorConfig
from modeldeploy.controller.store import Store

from .test_reconcile import SPEC, STATUS_WRITE, Harness, with_version

Status = dict[str, Any]
Change = Callable[[Status], None]
REPAIRED = "StatusRepaired"
FORGED = "rforged000"
"""A well-formed revision no Deployment has."""
BAD_TIMES = ["not a time", "2026-13-45T00:00:00Z", "2026-12-01T12:00:00", "9999-12-31T23:59:59Z"]
ANALYSED_STEPS: list[dict[str, Any]] = [{"setWeight": 50}, {"pause": {"duration": "10m"}}]
ANALYSIS = {"interval": "10s", "metrics": [{"name": "success-rate", "builtin": "successRate", "min": 0.99}]}


def analysed(version: str) -> dict[str, Any]:
    spec = with_version(SPEC, version)
    spec["rollout"] = {"steps": ANALYSED_STEPS, "analysis": ANALYSIS}
    return spec


def revision_for(h: Harness, spec: dict[str, Any]) -> str:
    body = {key: value for key, value in h.cluster.resource(h.key).items() if key != "status"}
    return builders.revision_of(api.ModelDeployment.model_validate({**body, "spec": spec}), h.config)


def deployments(h: Harness) -> dict[str, tuple[int, int]]:
    """Each revision's Deployment: (replicas asked for, Ready)."""
    return {
        body["metadata"]["labels"][builders.LABEL_REVISION]: (
            int(body["spec"]["replicas"]),
            int((body.get("status") or {}).get("readyReplicas") or 0),
        )
        for body in h.cluster.of_kind("Deployment").values()
    }


def repaired(h: Harness, since: int) -> list[str]:
    events = [event for event in h.cluster.events[since:] if event.reason == REPAIRED]
    assert all(event.type == "Warning" for event in events)
    return [event.message for event in events]


def without_stable_service(h: Harness) -> None:
    """The Service that names the serving revision gone (deleted by someone, or not seen yet): <name>-stable during a
    rollout, <name> at rest (when <name>-stable does not exist). The Deployments are the only evidence."""
    name = f"{h.key[1]}-stable" if h.status.get("canary") else h.key[1]
    service = h.cluster.objects.pop(("Service", h.key[0], name))
    h.store.remove_child(service)


def serving(config: OperatorConfig, spec: dict[str, Any] = SPEC) -> Harness:
    """1.0 Healthy: its Deployment asks for 2 pods, both Ready."""
    h = Harness(config, spec)
    h.settle()
    assert h.status["phase"] == "Healthy"
    return h


def rolling(config: OperatorConfig, spec: dict[str, Any] = SPEC, bumped: dict[str, Any] | None = None) -> Harness:
    """1.0 serving and 2.0 at its pause (step 1 of 2, 50%): one pod each, both Ready."""
    h = serving(config, spec)
    h.cluster.update_spec(h.key, bumped or with_version(spec, "2.0.0"))
    h.observe()
    for _ in range(10):
        h.run(timedelta(seconds=11))
        h.cluster.make_ready(h.store)
        if h.status.get("currentStepIndex") == 1:
            break
    assert (h.status["currentStepIndex"], h.status["phase"]) == (1, "Paused"), h.status["message"]
    return h


def rolling_analysed(config: OperatorConfig) -> Harness:
    """As rolling(), with the canary measured every 10 s during a 10-minute pause."""
    h = rolling(config, analysed("1.0.0"), analysed("2.0.0"))
    assert h.status["analysis"]["phase"] == "Running"
    assert h.status["analysis"]["metrics"][0]["measurements"], "measured once at least"
    return h


def forged_pass(
    h: Harness,
    change: Change | None = None,
    *,
    status: Any = None,
    spec: dict[str, Any] | None = None,
) -> list[str]:
    """Someone writes status (`change` applied to the stored one, or a whole `status`), the spec may change, and a
    pass runs; then one more. Checks what must hold whatever was written; returns the repairs of the first pass."""
    serving_revision = h.status["stable"]["revision"]
    floor = deployments(h)[serving_revision][1]
    forged = copy.deepcopy(h.status) if status is None else status
    if change is not None:
        change(forged)
    h.cluster.replace_status(h.key, forged)
    if spec is not None:
        h.cluster.update_spec(h.key, spec)
    h.observe()
    posted = len(h.cluster.events)
    writes = h.run(timedelta(seconds=1))
    messages = repaired(h, posted)
    assert writes[STATUS_WRITE] == 1, "the repaired status is written"
    for _ in range(2):
        asked, _ = deployments(h).get(serving_revision, (0, 0))
        assert asked >= floor, f"the serving revision went from {floor} Ready pods to {asked} asked for"
        assert h.status["stable"]["revision"] == serving_revision
        posted = len(h.cluster.events)
        h.run(timedelta(seconds=1))
        assert repaired(h, posted) == [], "a repaired status is not repaired again"
    return messages


def assert_steps_held(h: Harness, canary_pods: int = 1) -> None:
    """The canary has not gone past its pause: 1.0 serves, the canary keeps its 50% share."""
    status = h.status
    assert status["stable"]["version"] == "1.0.0"
    assert status["canary"]["version"] == "2.0.0"
    assert status["currentStepIndex"] <= 1
    assert deployments(h)[status["canary"]["revision"]][0] <= canary_pods


def mentions(messages: list[str], field: str) -> bool:
    return any(message.startswith(f"status.{field}") for message in messages)


# ---------------------------------------------------------------------------------------------------------------
# Times


TIME_FIELDS: list[tuple[tuple[str | int, ...], str]] = [
    (("stepStartedAt",), "stepStartedAt"),
    (("pause", "startedAt"), "pause.startedAt"),
    (("pause", "endsAt"), "pause.endsAt"),
    (("canary", "since"), "canary.since"),
    (("stable", "since"), "stable.since"),
    (("stable", "readyAt"), "stable.readyAt"),
    (("analysis", "startedAt"), "analysis.startedAt"),
    (("analysis", "lastMeasuredAt"), "analysis.lastMeasuredAt"),
    (("analysis", "nextMeasurementAt"), "analysis.nextMeasurementAt"),
    (("analysis", "metrics", 0, "measurements", 0, "time"), "analysis.metrics['success-rate'].measurements"),
    (("history", 0, "time"), "history"),
    (("conditions", 0, "lastTransitionTime"), "conditions[Ready].lastTransitionTime"),
]


def set_at(status: Status, path: tuple[str | int, ...], value: Any) -> None:
    target: Any = status
    for part in path[:-1]:
        target = target[part]
    target[path[-1]] = value


def get_at(status: Status, path: tuple[str | int, ...]) -> Any:
    """The value at `path`, or None when a repair removed it (or what held it)."""
    target: Any = status
    for part in path:
        if isinstance(part, str) and part not in target:
            return None
        if isinstance(part, int) and part >= len(target):
            return None
        target = target[part]
    return target


BAD_TIME_CASES = [
    pytest.param(path, field, value, id=f"{field}-{value}")
    for path, field in TIME_FIELDS
    for value in BAD_TIMES
    # A timed pause ends in the future: that is no fault (the planner writes its end anew from the step's start).
    if not (field == "pause.endsAt" and value.startswith("9999"))
]


@pytest.mark.parametrize(("path", "field", "value"), BAD_TIME_CASES)
def test_a_bad_time_is_repaired_and_holds_the_rollout(
    config: OperatorConfig, path: tuple[str | int, ...], field: str, value: str
) -> None:
    h = rolling_analysed(config)
    messages = forged_pass(h, lambda status: set_at(status, path, value))
    assert mentions(messages, field), messages
    repaired_value = get_at(h.status, path) if field != "history" else None
    if isinstance(repaired_value, str):
        assert parse_time(repaired_value).tzinfo is not None
    assert_steps_held(h)


def test_a_bad_time_of_an_aborted_revision_is_repaired(config: OperatorConfig) -> None:
    h = rolling(config)
    h.cluster.replace_status(h.key, {**h.status, "commands": {"abort": {"id": "abort-1"}}})
    h.observe()
    h.run(timedelta(seconds=1))
    assert h.status["aborted"]["reason"] == "Aborted"
    messages = forged_pass(h, lambda status: set_at(status, ("aborted", "time"), "yesterday"))
    assert mentions(messages, "aborted.time"), messages
    assert h.status["phase"] == "Degraded"


# ---------------------------------------------------------------------------------------------------------------
# Revisions


def forge_stable(revision: str, *, history: list[Any] | None = None) -> Change:
    def change(status: Status) -> None:
        status["stable"]["revision"] = revision
        if history is not None:
            status["history"] = history

    return change


@pytest.mark.parametrize("service", [True, False], ids=["stable-service", "no-stable-service"])
@pytest.mark.parametrize("bumped", [False, True], ids=["same-spec", "version-bumped"])
def test_an_unknown_stable_revision_with_empty_history_keeps_the_serving_deployment(
    config: OperatorConfig, service: bool, bumped: bool
) -> None:
    h = serving(config)
    if not service:
        without_stable_service(h)
    v2 = with_version(SPEC, "2.0.0")
    messages = forged_pass(h, forge_stable(FORGED, history=[]), spec=v2 if bumped else None)
    assert mentions(messages, "stable"), messages
    assert h.status["stable"]["version"] == "1.0.0"
    assert [entry["reason"] for entry in h.status["history"]] == [REPAIRED]
    if bumped:
        # The new version is a canary at its first step, as after any version change.
        assert h.status["canary"]["version"] == "2.0.0"
        assert h.status["canary"]["fastTrack"] is False
        assert h.status["currentStepIndex"] <= 1
    else:
        assert h.status["phase"] == "Healthy"
        assert deployments(h) == {h.status["stable"]["revision"]: (2, 2)}


@pytest.mark.parametrize("rolling_out", [False, True], ids=["at-rest", "rolling-out"])
def test_the_service_that_names_the_serving_revision_is_the_evidence(config: OperatorConfig, rolling_out: bool) -> None:
    """`<name>-stable` while a rollout is in progress; at rest, when it does not exist, `<name>` itself."""
    h = rolling(config) if rolling_out else serving(config)
    name = f"{h.key[1]}-stable" if rolling_out else h.key[1]
    serving_revision = h.status["stable"]["revision"]
    messages = forged_pass(h, forge_stable(FORGED))
    assert any(f"but Service {name} selects revision {serving_revision}" in message for message in messages), messages


@pytest.mark.parametrize("service", [True, False], ids=["stable-service", "no-stable-service"])
def test_a_canary_written_as_the_stable_revision_is_not_promoted(config: OperatorConfig, service: bool) -> None:
    h = rolling(config)
    if not service:
        without_stable_service(h)

    def promote_by_hand(status: Status) -> None:
        canary = status.pop("canary")
        status["stable"] = {"version": canary["version"], "revision": canary["revision"]}
        for name in ("currentStepIndex", "stepStartedAt", "pause"):
            status.pop(name)

    messages = forged_pass(h, promote_by_hand)
    assert mentions(messages, "stable"), messages
    assert_steps_held(h)


@pytest.mark.parametrize("bumped", [False, True], ids=["same-spec", "version-bumped"])
@pytest.mark.parametrize("whole", ["empty", "not-an-object", "unreadable-stable"])
def test_a_status_wiped_or_unreadable_keeps_the_serving_deployment(
    config: OperatorConfig, whole: str, bumped: bool
) -> None:
    h = serving(config)
    forged: Any = {"empty": {}, "not-an-object": "gone", "unreadable-stable": {"stable": {"revision": 12}}}[whole]
    messages = forged_pass(h, status=forged, spec=with_version(SPEC, "2.0.0") if bumped else None)
    # An empty status with the spec's own revision serving is a first visit, with the same outcome: nothing to repair.
    assert bool(messages) == (whole != "empty" or bumped), messages
    assert h.status["stable"]["version"] == "1.0.0"
    if bumped:
        assert h.status["currentStepIndex"] <= 1
        assert h.status["canary"]["fastTrack"] is False


@pytest.mark.parametrize("forged", [False, True], ids=["status-as-written", "stable-removed"])
def test_a_pass_before_the_store_has_seen_any_deployment_redirects_nothing(
    config: OperatorConfig, forged: bool
) -> None:
    h = rolling(config)
    before = deployments(h)
    stable = h.status["stable"]["revision"]
    if forged:
        status = copy.deepcopy(h.status)
        del status["stable"]
        h.cluster.replace_status(h.key, status)
    # A restarted operator: the resource's watch event came first, its children's have not yet.
    h.store = Store()
    h.observe()
    posted = len(h.cluster.events)
    h.run(timedelta(seconds=1))
    assert mentions(repaired(h, posted), "stable") == forged
    service = h.cluster.objects[("Service", h.key[0], f"{h.key[1]}-stable")]
    assert service["spec"]["selector"][builders.LABEL_REVISION] == stable, "the stable Service still selects 1.0"
    assert deployments(h) == before
    # The children's events arrive: nothing more to repair, the rollout holds at its pause.
    for kind in ("Deployment", "Service"):
        for body in h.cluster.of_kind(kind).values():
            h.store.put_child(copy.deepcopy(body))
    posted = len(h.cluster.events)
    h.run(timedelta(seconds=1))
    assert repaired(h, posted) == []
    assert h.status["stable"]["revision"] == stable
    assert_steps_held(h)
    assert deployments(h)[stable][0] >= before[stable][1]


ROLLING_FORGERIES: dict[str, tuple[Change, str]] = {
    "step-index-negative": (lambda status: status.update(currentStepIndex=-1), "currentStepIndex"),
    "step-index-huge": (lambda status: status.update(currentStepIndex=10**9), "currentStepIndex"),
    "step-index-final": (lambda status: status.update(currentStepIndex=2), "currentStepIndex"),
    "step-index-missing": (lambda status: status.pop("currentStepIndex"), "currentStepIndex"),
    "step-index-unreadable": (lambda status: status.update(currentStepIndex="soon"), "currentStepIndex"),
    "step-start-missing": (lambda status: status.pop("stepStartedAt"), "stepStartedAt"),
    "fast-track": (lambda status: status["canary"].update(fastTrack=True), "canary.fastTrack"),
    "canary-unknown-revision": (lambda status: status["canary"].update(revision=FORGED), "canary"),
    "canary-is-the-stable-one": (
        lambda status: status["canary"].update(revision=status["stable"]["revision"]),
        "canary",
    ),
    "canary-wrong-version": (lambda status: status["canary"].update(version="9.9.9"), "canary.version"),
    "stable-unknown-revision": (forge_stable(FORGED), "stable"),
    "stable-wrong-version": (lambda status: status["stable"].update(version="0.0.1"), "stable.version"),
    "pause-unknown-reason": (lambda status: status["pause"].update(reason="Lunch"), "pause"),
    "pause-without-canary-step": (
        lambda status: status.update(currentStepIndex=0),
        "pause",
    ),
}


@pytest.mark.parametrize("name", list(ROLLING_FORGERIES))
def test_a_forged_rollout_state_is_repaired_and_skips_no_step(config: OperatorConfig, name: str) -> None:
    change, field = ROLLING_FORGERIES[name]
    h = rolling(config)
    messages = forged_pass(h, change)
    assert mentions(messages, field), messages
    assert_steps_held(h)


def test_a_step_index_forged_ahead_cannot_raise_the_weight(config: OperatorConfig) -> None:
    steps: list[dict[str, Any]] = [{"setWeight": 25}, {"pause": {}}, {"setWeight": 75}, {"pause": {}}]
    spec = {**SPEC, "replicas": 4, "rollout": {"steps": steps}}
    h = rolling(config, spec)
    canary = h.status["canary"]["revision"]
    assert deployments(h)[canary] == (1, 1)
    for index in (2, 3, 4):
        messages = forged_pass(h, lambda status, index=index: status.update(currentStepIndex=index))
        assert mentions(messages, "currentStepIndex"), messages
        assert h.status["currentStepIndex"] == 1, "back to the open pause at 25%, which only a promote ends"
        assert deployments(h)[canary][0] == 1
        assert h.status["stable"]["version"] == "1.0.0"


# ---------------------------------------------------------------------------------------------------------------
# History


def entry(revision: str, outcome: str = "Promoted", *, version: str = "1.0.0", time: str) -> dict[str, Any]:
    return {"revision": revision, "version": version, "outcome": outcome, "reason": "RevisionReady", "time": time}


HISTORY_FORGERIES: dict[str, Callable[[list[Any]], list[Any]]] = {
    "unknown-outcome": lambda history: [{**history[0], "outcome": "Blessed"}, *history],
    "duplicated": lambda history: history * 3,
    "not-a-revision": lambda history: [entry("../../etc", time="2026-12-01T12:00:01.000000Z"), *history],
    "revisions-that-do-not-exist": lambda history: [
        entry("rghost0001", "Superseded", time="2026-12-01T12:00:02.000000Z"),
        entry("rghost0002", "RolledBack", time="2026-12-01T12:00:01.000000Z"),
        *history,
    ],
    "too-many": lambda history: [
        {**history[0], "time": f"2026-12-01T11:{minute:02d}:00.000000Z"} for minute in range(59, 19, -1)
    ],
}


@pytest.mark.parametrize("name", list(HISTORY_FORGERIES))
def test_a_forged_history_is_repaired(config: OperatorConfig, name: str) -> None:
    h = serving(config)
    forge = HISTORY_FORGERIES[name]
    messages = forged_pass(h, lambda status: status.update(history=forge(status["history"])))
    assert mentions(messages, "history"), messages
    history = h.status["history"]
    assert 1 <= len(history) <= h.config.history_limit
    assert len({tuple(sorted(item.items())) for item in history}) == len(history)
    assert all(item["outcome"] in {str(outcome) for outcome in api.Outcome} for item in history)
    assert h.status["phase"] == "Healthy"


@pytest.mark.parametrize("where", ["newest", "below-the-serving-one"])
def test_a_forged_promotion_in_history_then_a_version_bump_walks_every_step(config: OperatorConfig, where: str) -> None:
    h = serving(config)
    v2 = with_version(SPEC, "2.0.0")
    forged = entry(revision_for(h, v2), version="2.0.0", time="2026-12-01T11:00:00.000000Z")

    def change(status: Status) -> None:
        status["history"].insert(0 if where == "newest" else 1, forged)

    messages = forged_pass(h, change, spec=v2)
    if where == "newest":
        assert mentions(messages, "history"), messages
    # Below the serving revision's promotion the entry is no evidence either: no Deployment of 2.0 to return to.
    assert h.status["canary"]["fastTrack"] is False
    assert h.status["stable"]["version"] == "1.0.0"
    # The canary goes to its 50% step and waits out the 30 s pause; 1.0 serves throughout.
    for _ in range(3):
        h.cluster.make_ready(h.store)
        h.run(timedelta(seconds=5))
    assert (h.status["phase"], h.status["currentStepIndex"]) == ("Paused", 1)
    assert h.status["stable"]["version"] == "1.0.0"
    h.settle()
    assert h.status["stable"]["version"] == "2.0.0"
    reasons = [event.reason for event in h.cluster.events]
    assert reasons.index("PhasePaused") < reasons.index("Promoted")


def test_a_return_to_a_served_revision_is_still_fast_tracked(config: OperatorConfig) -> None:
    h = serving(config)
    h.cluster.update_spec(h.key, with_version(SPEC, "2.0.0"))
    h.observe()
    h.settle()
    assert h.status["stable"]["version"] == "2.0.0"
    h.cluster.update_spec(h.key, SPEC)
    h.observe()
    h.run()
    assert h.status["canary"]["fastTrack"] is True, "1.0's Deployment was kept for this return"
    assert repaired(h, 0) == []


# ---------------------------------------------------------------------------------------------------------------
# Analysis


ANALYSIS_FORGERIES: dict[str, tuple[Change, str]] = {
    "unknown-phase": (lambda status: status["analysis"].update(phase="Blessed"), "analysis.phase"),
    "pending-after-start": (lambda status: status["analysis"].update(phase="Pending"), "analysis.phase"),
    "next-measurement-missing": (
        lambda status: status["analysis"].pop("nextMeasurementAt"),
        "analysis.nextMeasurementAt",
    ),
    "negative-failures": (
        lambda status: status["analysis"]["metrics"][0].update(failed=-100),
        "analysis.metrics['success-rate'].failed",
    ),
    "consecutive-errors-beyond-errors": (
        lambda status: status["analysis"]["metrics"][0].update(consecutiveErrors=99),
        "analysis.metrics['success-rate'].consecutiveErrors",
    ),
    "measurement-unknown-phase": (
        lambda status: status["analysis"]["metrics"][0]["measurements"][0].update(phase="Great"),
        "analysis.metrics['success-rate'].measurements",
    ),
}


@pytest.mark.parametrize("name", list(ANALYSIS_FORGERIES))
def test_a_forged_analysis_is_repaired_and_measuring_goes_on(config: OperatorConfig, name: str) -> None:
    change, field = ANALYSIS_FORGERIES[name]
    h = rolling_analysed(config)
    messages = forged_pass(h, change)
    assert mentions(messages, field), messages
    assert_steps_held(h)
    queried = len(h.queried)
    for _ in range(3):
        h.run(timedelta(seconds=11))
    assert len(h.queried) > queried, "the canary is measured again"
    assert h.status["analysis"]["phase"] == "Running"
