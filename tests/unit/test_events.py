"""kube/events.py: which Event each occurrence is written to, as client-go's recorder decides (count, window,
similar messages combined, a bounded cache)."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import pytest

from modeldeploy.kube.events import (
    COMBINED_PREFIX,
    SIMILAR_LIMIT,
    EventCorrelator,
    InvolvedObject,
    event_name,
)

START = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
WEB = InvolvedObject("models", "web", "uid-1")
AGAIN = InvolvedObject("models", "web", "uid-2")  # the same name, deleted and created again
OTHER = InvolvedObject("models", "api", "uid-3")

Occurrence = tuple[float, InvolvedObject, str, str]
"""Seconds after START, the object, the reason and the message (type Warning throughout, but where a test says)."""
Written = tuple[str, str, int]
"""create or patch, which Event (a, b, c... in order of creation; "+" when it is the combined one) and its count."""


def run(occurrences: list[Occurrence], correlator: EventCorrelator | None = None) -> list[Written]:
    correlator = correlator if correlator is not None else EventCorrelator()
    labels: dict[str, str] = {}
    written = []
    for seconds, involved, reason, message in occurrences:
        write = correlator.observe(involved, "Warning", reason, message, START + timedelta(seconds=seconds))
        assert not (write.create and write.name in labels), "a new series has a new name"
        label = labels.setdefault(write.name, "abcdefghijklmnopqrstuvwxyz"[len(labels)])
        written.append(("create" if write.create else "patch", label + ("+" if write.combined else ""), write.count))
    return written


def conflict(seconds: float, involved: InvolvedObject = WEB, message: str = "Service/web is taken") -> Occurrence:
    return (seconds, involved, "ChildConflict", message)


@pytest.mark.parametrize(
    ("occurrences", "expected"),
    [
        pytest.param([conflict(0)], [("create", "a", 1)], id="first"),
        pytest.param(
            [conflict(0), conflict(30), conflict(60)],
            [("create", "a", 1), ("patch", "a", 2), ("patch", "a", 3)],
            id="repeats-counted",
        ),
        pytest.param(
            [conflict(0), conflict(300), conflict(900), conflict(1500)],
            [("create", "a", 1), ("patch", "a", 2), ("patch", "a", 3), ("patch", "a", 4)],
            id="window-slides-from-the-last-occurrence",
        ),
        pytest.param([conflict(0), conflict(600)], [("create", "a", 1), ("patch", "a", 2)], id="window-inclusive"),
        pytest.param(
            [conflict(0), conflict(601), conflict(602)],
            [("create", "a", 1), ("create", "b", 1), ("patch", "b", 2)],
            id="after-the-window-a-new-event",
        ),
        pytest.param(
            [conflict(0), conflict(1, message="Deployment/web-x is taken"), conflict(2)],
            [("create", "a", 1), ("create", "b", 1), ("patch", "a", 2)],
            id="another-message",
        ),
        pytest.param(
            [conflict(0), conflict(1, AGAIN), conflict(2, OTHER), conflict(3, AGAIN)],
            [("create", "a", 1), ("create", "b", 1), ("create", "c", 1), ("patch", "b", 2)],
            id="other-objects",
        ),
        pytest.param(
            [conflict(0), (1, WEB, "ReconcileError", "Service/web is taken")],
            [("create", "a", 1), ("create", "b", 1)],
            id="another-reason",
        ),
    ],
)
def test_which_event_an_occurrence_goes_to(occurrences: list[Occurrence], expected: list[Written]) -> None:
    assert run(occurrences) == expected


def measurement(seconds: float, n: int, involved: InvolvedObject = WEB) -> Occurrence:
    return (seconds, involved, "AnalysisMeasurementFailed", f"latency: 0.{n:02d} is above max 0.05")


OWN = SIMILAR_LIMIT - 1
"""Distinct messages of one reason that get Events of their own within the window."""
FIRST_OWN = [("create", chr(ord("a") + n), 1) for n in range(OWN)]
NEXT = chr(ord("a") + OWN)
COMBINED = NEXT + "+"


@pytest.mark.parametrize(
    ("occurrences", "expected"),
    [
        pytest.param(
            [measurement(n, n) for n in range(OWN)],
            FIRST_OWN,
            id="under-the-limit-each-its-own",
        ),
        pytest.param(
            [measurement(n, n) for n in range(OWN + 3)],
            [*FIRST_OWN, ("create", COMBINED, 1), ("patch", COMBINED, 2), ("patch", COMBINED, 3)],
            id="past-it-combined",
        ),
        pytest.param(
            [*(measurement(n, n) for n in range(OWN + 1)), measurement(100, 0)],
            [*FIRST_OWN, ("create", COMBINED, 1), ("patch", "a", 2)],
            id="a-message-with-its-own-event-keeps-it",
        ),
        pytest.param(
            [*(measurement(n, n) for n in range(OWN)), measurement(100, OWN, OTHER)],
            [*FIRST_OWN, ("create", NEXT, 1)],
            id="counted-per-object",
        ),
        pytest.param(
            [*(measurement(n, n) for n in range(OWN)), measurement(OWN + 601, OWN)],
            [*FIRST_OWN, ("create", NEXT, 1)],
            id="a-quiet-window-starts-afresh",
        ),
        pytest.param(
            [*(measurement(n * 300, n) for n in range(OWN + 1))],
            [*FIRST_OWN, ("create", COMBINED, 1)],
            id="the-window-slides",
        ),
    ],
)
def test_many_messages_of_one_reason_are_combined(occurrences: list[Occurrence], expected: list[Written]) -> None:
    assert run(occurrences) == expected


def test_the_combined_event_carries_the_latest_message() -> None:
    correlator = EventCorrelator(similar_limit=2)
    first = correlator.observe(WEB, "Warning", "AnalysisMeasurementFailed", "latency: 0.06", START)
    combined = correlator.observe(WEB, "Warning", "AnalysisMeasurementFailed", "latency: 0.07", START)
    latest = correlator.observe(WEB, "Warning", "AnalysisMeasurementFailed", "latency: 0.08", START)
    assert (first.combined, first.message) == (False, "latency: 0.06")
    assert (combined.create, combined.combined, combined.message) == (True, True, COMBINED_PREFIX + "latency: 0.07")
    assert (latest.create, latest.name, latest.count) == (False, combined.name, 2)
    assert latest.message == COMBINED_PREFIX + "latency: 0.08"


def test_a_patch_carries_the_series_first_and_last_time() -> None:
    correlator = EventCorrelator()
    correlator.observe(WEB, "Normal", "PhaseHealthy", "2/2 ready", START)
    write = correlator.observe(WEB, "Normal", "PhaseHealthy", "2/2 ready", START + timedelta(minutes=3))
    assert (write.first_timestamp, write.last_timestamp) == (START, START + timedelta(minutes=3))
    assert (write.type, write.reason, write.involved) == ("Normal", "PhaseHealthy", WEB)


def test_the_cache_forgets_the_least_recently_used() -> None:
    correlator = EventCorrelator(max_entries=2)
    occurrences: list[Occurrence] = [(n, WEB, reason, "m") for n, reason in enumerate(("A", "B", "A", "C", "A", "B"))]
    # A, used again before C came, stays; B, the least recent, made room for C and starts a new Event.
    assert run(occurrences, correlator) == [
        ("create", "a", 1),
        ("create", "b", 1),
        ("patch", "a", 2),
        ("create", "c", 1),
        ("patch", "a", 3),
        ("create", "d", 1),
    ]
    assert len(correlator) == 2


def test_the_cache_stays_bounded_under_many_objects() -> None:
    correlator = EventCorrelator(max_entries=100)
    for n in range(1000):
        correlator.observe(InvolvedObject("models", f"web-{n}", f"uid-{n}"), "Normal", "PhaseHealthy", "m", START)
    assert len(correlator) == 100
    assert len(correlator._similar) == 100


def test_event_names_are_valid_and_new_for_each_series() -> None:
    name = event_name(WEB, "Warning", "ChildConflict", "m", START)
    assert re.fullmatch(r"web\.[0-9a-f]{16}", name)
    assert name == event_name(WEB, "Warning", "ChildConflict", "m", START), "deterministic"
    assert name != event_name(WEB, "Warning", "ChildConflict", "m", START + timedelta(seconds=1))
    assert name != event_name(AGAIN, "Warning", "ChildConflict", "m", START)
    long = event_name(InvolvedObject("models", "a" * 235 + "-" + "b" * 30), "Normal", "X", "m", START)
    assert len(long) <= 253
    assert re.fullmatch(r"a{235}\.[0-9a-f]{16}", long), "cut where it stays a valid name"


def test_limits_must_be_positive() -> None:
    with pytest.raises(ValueError, match="positive"):
        EventCorrelator(similar_limit=0)
    with pytest.raises(ValueError, match="positive"):
        EventCorrelator(max_entries=0)
