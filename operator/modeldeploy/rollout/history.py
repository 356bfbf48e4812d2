"""status.history: what became of each revision, newest first, and what it says about which revisions to keep."""

from __future__ import annotations

from collections.abc import Sequence

from modeldeploy.api import models as api
from modeldeploy.rollout.decision import Situation


def retained_revisions(history: Sequence[api.HistoryEntry], keep: int) -> list[str]:
    """The most recent distinct revisions in history, newest first."""
    seen: list[str] = []
    for entry in history:
        if entry.revision not in seen:
            seen.append(entry.revision)
    return seen[:keep]


def recently_served(history: Sequence[api.HistoryEntry], window: int) -> list[str]:
    """Revisions that served (were promoted) most recently, newest first, at most `window` of them."""
    served: list[str] = []
    for entry in history:
        if entry.outcome == api.Outcome.PROMOTED and entry.revision not in served:
            served.append(entry.revision)
    return served[:window]


def may_fast_track(s: Situation, history: Sequence[api.HistoryEntry], revision: str) -> bool:
    """A revision goes out without steps only when it served recently (history says so) and its Deployment, owned by
    this resource, is still there (kept at zero for exactly this): history alone is what a status patch can write."""
    return revision in recently_served(history, s.spec.rollout.rollbackWindow) and s.evidenced(revision)
