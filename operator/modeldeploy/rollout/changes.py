"""Whether a status a pass computed is worth a write: how it differs from the status the API server holds.

Ready-pod counts move one pod at a time. Written as they move, a Deployment of 40 pods coming up costs 40 status
writes (and 40 watch events to every client that watches the resource), while nothing a person or a tool acts on has
changed. So the differences are sorted:

- MEANINGFUL: anything a decision, a condition, `kubectl wait`, Argo CD or a person acts on. Written at once, and
  the counts go with it: the status written is the whole status the pass computed.
- COUNTS: only the ready counts and what follows from them alone (each track's readyReplicas, the canary's
  actualWeight, the numbers in the messages that quote them). The controller writes these later, once they have
  lasted COUNTS_LAG_SECONDS, unless a meaningful write carries them first: the READY and WEIGHT columns of
  `kubectl get` lag by at most that much, and a burst of pods becoming ready costs one write.
- NONE: nothing differs; nothing is written.

Field by field, a difference is MEANINGFUL in: observedGeneration, phase, model, url, the conditions' type, status,
reason and observedGeneration, each track's version, revision, replicas asked for (the Deployment's spec), since,
readyAt, desiredWeight and fastTrack, whether the canary exists, currentStepIndex, stepStartedAt, pause, aborted,
acknowledged, analysis, artifact and history. A count is never meaningful by itself; what a count causes is: the
first Ready pod flips Available, the last one of a settled revision makes it Healthy (and sets readyAt), a weight
reached ends a step, and each of those is a field above.

The messages (status.message and each condition's) quote counts ("3/4 replicas of fraud 1.4.0 ready", "canary at
25%"), so they are compared with their numbers masked: a message that differs only in its numbers is a COUNTS
difference; any other wording change is MEANINGFUL. What the numbers of a message say that is not a count (a
version, a step, a weight asked for, a pause's end) is a field of its own, compared above.

A condition's lastTransitionTime is not compared: it moves only when the condition's status flips, which is.
status.commands belongs to the people who write it and is never part of what the operator writes.
"""

from __future__ import annotations

import re
from enum import StrEnum
from typing import Any

from modeldeploy.api import models as api

COUNTS_LAG_SECONDS = 30.0
"""How long a COUNTS difference may wait for a meaningful write to carry it before it is written by itself."""

_NUMBER = re.compile(r"\d+")


class StatusChange(StrEnum):
    NONE = "None"
    COUNTS = "Counts"
    MEANINGFUL = "Meaningful"


def status_change(stored: api.ModelDeploymentStatus, computed: api.ModelDeploymentStatus) -> StatusChange:
    """How `computed` (a pass's status) differs from `stored` (the API server's, as last seen)."""
    if written_form(stored) == written_form(computed):
        return StatusChange.NONE
    if _meaning(stored) != _meaning(computed):
        return StatusChange.MEANINGFUL
    return StatusChange.COUNTS


def written_form(status: api.ModelDeploymentStatus) -> dict[str, Any]:
    """The status as the operator writes it. Requests in status.commands belong to the people who make them; the
    operator only reads them."""
    return status.model_dump(mode="json", exclude={"commands"})


def _meaning(status: api.ModelDeploymentStatus) -> dict[str, Any]:
    """The written form less the counts: what a MEANINGFUL difference is a difference in."""
    meaning = written_form(status)
    meaning["message"] = _without_numbers(meaning.get("message") or "")
    meaning["conditions"] = [
        {
            **{key: value for key, value in condition.items() if key != "lastTransitionTime"},
            "message": _without_numbers(condition.get("message") or ""),
        }
        for condition in meaning.get("conditions") or []
    ]
    for name in ("stable", "canary"):
        track = meaning.get(name)
        if isinstance(track, dict):
            track.pop("readyReplicas", None)
            track.pop("actualWeight", None)  # the canary's share of the ready pods: a count too
    return meaning


def _without_numbers(message: str) -> str:
    return _NUMBER.sub("#", message)
