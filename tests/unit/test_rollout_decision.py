"""The planner's small pure pieces, as tables: a step's weight, when a weight is in place, which revisions history
keeps, which requests are pending, and the Decision's own helpers (it is never changed in place)."""

from __future__ import annotations

from typing import Any

import pytest

from modeldeploy.api import models as api
from modeldeploy.rollout.decision import Decision, Event, ObservedRevision, effective_steps, pending
from modeldeploy.rollout.history import recently_served, retained_revisions
from modeldeploy.rollout.steps import stable_gave_way, target_weight
from modeldeploy.traffic.routers import Split

STEPS = [
    api.CanaryStep.model_validate(step)
    for step in [{"setWeight": 20}, {"pause": {"duration": "60s"}}, {"setWeight": 50}, {"pause": {}}]
]
STABLE = api.TrackStatus(version="1.0", revision="ra1")


@pytest.mark.parametrize(
    ("steps", "step_index", "weight"),
    [
        (STEPS, 0, 20),
        (STEPS, 1, 20),  # a pause keeps the weight before it
        (STEPS, 2, 50),
        (STEPS, 3, 50),
        (STEPS, 4, 100),  # past every step: the final scale-up
        (STEPS, 9, 100),
        ([], 0, 100),  # Immediate: no steps at all
        (STEPS[1:2], 0, 0),  # a pause before any weight: no traffic yet
    ],
)
def test_target_weight(steps: list[api.CanaryStep], step_index: int, weight: int) -> None:
    assert target_weight(steps, step_index) == weight


@pytest.mark.parametrize(
    ("stable", "target", "gave_way"),
    [
        (None, Split(2, 1), False),  # no Deployment seen yet
        (ObservedRevision("ra1", "1.0", replicas=2, ready_replicas=2), Split(2, 1), True),
        (ObservedRevision("ra1", "1.0", replicas=2, ready_replicas=1), Split(2, 1), True),
        (ObservedRevision("ra1", "1.0", replicas=3, ready_replicas=3), Split(2, 1), False),  # not scaled down yet
        (ObservedRevision("ra1", "1.0", replicas=2, ready_replicas=3), Split(2, 1), False),  # a pod still going
        # Its controller has not seen the scale-down: the counts may be stale.
        (ObservedRevision("ra1", "1.0", replicas=2, ready_replicas=2, up_to_date=False), Split(2, 1), False),
    ],
)
def test_stable_gave_way(stable: ObservedRevision | None, target: Split, gave_way: bool) -> None:
    assert stable_gave_way(stable, target) is gave_way


@pytest.mark.parametrize(
    ("observed", "replicas", "settled"),
    [
        (ObservedRevision("ra1", "1.0", replicas=3, ready_replicas=3), 3, True),
        (ObservedRevision("ra1", "1.0", replicas=3, ready_replicas=2), 3, False),
        (ObservedRevision("ra1", "1.0", replicas=4, ready_replicas=4), 3, False),  # not at the spec's count
        (ObservedRevision("ra1", "1.0", replicas=3, ready_replicas=3, up_to_date=False), 3, False),
        (ObservedRevision("ra1", "1.0", replicas=0, ready_replicas=0), 0, True),
    ],
)
def test_observed_revision_settled(observed: ObservedRevision, replicas: int, settled: bool) -> None:
    assert observed.settled(replicas) is settled


def entry(revision: str, outcome: api.Outcome) -> api.HistoryEntry:
    return api.HistoryEntry(revision=revision, version=revision, outcome=str(outcome), time="2025-03-01T12:00:00Z")


PROMOTED, ROLLED_BACK = api.Outcome.PROMOTED, api.Outcome.ROLLED_BACK
HISTORY = [entry("c", PROMOTED), entry("d", ROLLED_BACK), entry("b", PROMOTED), entry("c", ROLLED_BACK)]


@pytest.mark.parametrize(
    ("keep", "retained"),
    [(0, []), (1, ["c"]), (2, ["c", "d"]), (3, ["c", "d", "b"]), (9, ["c", "d", "b"])],
)
def test_retained_revisions_are_the_latest_distinct_ones(keep: int, retained: list[str]) -> None:
    assert retained_revisions(HISTORY, keep) == retained


@pytest.mark.parametrize(("window", "served"), [(0, []), (1, ["c"]), (2, ["c", "b"]), (5, ["c", "b"])])
def test_recently_served_counts_only_promotions(window: int, served: list[str]) -> None:
    assert recently_served(HISTORY, window) == served


@pytest.mark.parametrize(
    ("commands", "acknowledged", "name", "found"),
    [
        (None, {}, "promote", None),
        ({"promote": {"id": "p1"}}, {}, "promote", "p1"),
        ({"promote": {"id": "p1"}}, {"promote": "p1"}, "promote", None),  # acted on already
        ({"promote": {"id": "p2"}}, {"promote": "p1"}, "promote", "p2"),  # a new request
        ({"promote": {"id": ""}}, {}, "promote", None),  # no id, no request
        ({"promote": {"id": "p1"}}, {}, "abort", None),
        ({"abort": {"id": "a1"}, "retry": {"id": "r1"}}, {"abort": "a1"}, "retry", "r1"),
    ],
)
def test_pending(commands: dict[str, Any] | None, acknowledged: dict[str, str], name: str, found: str | None) -> None:
    parsed = api.Commands.model_validate(commands) if commands is not None else None
    command = pending(parsed, api.Acknowledged.model_validate(acknowledged), name)
    assert (command.id if command is not None else None) == found


@pytest.mark.parametrize(
    ("strategy", "steps"),
    [("Canary", STEPS), ("Immediate", [])],
)
def test_effective_steps(strategy: str, steps: list[api.CanaryStep]) -> None:
    rollout = api.RolloutSpec.model_validate({"strategy": strategy, "steps": [s.model_dump() for s in STEPS]})
    assert effective_steps(rollout) == steps


@pytest.mark.parametrize(
    ("waits", "requeue_after"),
    [([], None), ([30.0], 30.0), ([30.0, 5.0, 60.0], 5.0), ([0.0, 10.0], 0.0)],
)
def test_waking_in_keeps_the_earliest_timer(waits: list[float], requeue_after: float | None) -> None:
    decision = Decision(stable=STABLE)
    for seconds in waits:
        decision = decision.waking_in(seconds)
    assert decision.requeue_after == requeue_after


def test_decision_steps_return_a_new_decision_and_leave_the_old_one_as_it_was() -> None:
    before = Decision(stable=STABLE)
    after = before.with_event("Normal", "Something", "happened").acknowledging("promote", api.Command(id="p1"))

    assert after.events == (Event("Normal", "Something", "happened"),)
    assert after.acknowledged.promote == "p1"
    assert before.events == ()
    assert before.acknowledged.promote == ""
    with pytest.raises(AttributeError):
        before.events = ()  # type: ignore[misc]
