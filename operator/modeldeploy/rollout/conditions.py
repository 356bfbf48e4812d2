"""Kubernetes-style conditions on a ModelDeployment's status.

Shared by the rollout status and by the reconciler's status for a spec it cannot parse, so both keep the same
rules: a condition's lastTransitionTime moves only when its status flips, and the conditions keep one order.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from modeldeploy.api import models as api
from modeldeploy.api.times import format_time

CONDITION_ORDER = [str(kind) for kind in api.ConditionType]


def set_condition(
    conditions: Sequence[api.Condition],
    kind: api.ConditionType,
    status: bool,
    reason: str,
    message: str,
    *,
    generation: int,
    now: datetime,
) -> list[api.Condition]:
    """Conditions with `kind` set; lastTransitionTime moves only when the status flips."""
    value = "True" if status else "False"
    previous = next((c for c in conditions if c.type == kind), None)
    since = previous.lastTransitionTime if previous is not None and previous.status == value else format_time(now)
    updated = api.Condition(
        type=str(kind),
        status=value,
        reason=reason,
        message=message,
        lastTransitionTime=since,
        observedGeneration=generation,
    )
    return [c for c in conditions if c.type != kind] + [updated]


def sorted_conditions(conditions: Sequence[api.Condition]) -> list[api.Condition]:
    """In api.ConditionType order, then any others (a newer operator's) as they came: the same status always
    serializes the same, so an unchanged one is never written again."""
    return sorted(
        conditions, key=lambda c: CONDITION_ORDER.index(c.type) if c.type in CONDITION_ORDER else len(CONDITION_ORDER)
    )
