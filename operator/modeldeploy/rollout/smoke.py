"""The smoke gate (spec.rollout.smokeTest): a canary takes no traffic, mirrored or not, until every pod of its
first traffic step has answered every case well; one bad answer rolls it back (reason SmokeTestFailed).

While gated, the canary runs the pods its first traffic step asks for (at least one), the serving revision keeps
all of its own, the route holds 0 % and no mirror, and the Service `<name>` selects the serving revision alone, so
no request reaches a canary pod but the smoke requests (see steps.advance, planner._replicas and _weigh).

The round itself is I/O (modeldeploy.analysis.smoke_client), run by the controller once smoke_due() says so; its
verdicts reach the planner as an analysis.smoke.SmokeRound. A verdict of Passed in status counts only if the
canary's Deployment carries SMOKE_PASSED_ANNOTATION, which the operator writes in the pass that judges the round
(see trust.py): a status patch alone cannot let a canary skip its smoke test.
"""

from __future__ import annotations

from collections.abc import Mapping

from modeldeploy.analysis import smoke
from modeldeploy.api import models as api
from modeldeploy.rollout.decision import ObservedRevision

SMOKE_TEST_FAILED = "SmokeTestFailed"
SMOKE_PASSED_ANNOTATION = "modeldeploy.io/smoke-test-passed"
"""On the canary's Deployment, once its smoke test passed: the `since` of the rollout it passed in, the evidence
behind status.canary.smokeTest Passed (a later rollout of the same revision starts with another `since`)."""


def gated(spec: api.RolloutSpec, canary: api.CanaryStatus | None) -> bool:
    """The canary may not take traffic yet: a smoke test is asked for and has not Passed. A fast-tracked return to
    a revision that served recently skips it, as it skips the steps."""
    if spec.smokeTest is None or canary is None or canary.fastTrack:
        return False
    return canary.smokeTest is None or canary.smokeTest.phase != api.SmokeTestPhase.PASSED


def evidence(canary: api.CanaryStatus | None) -> tuple[str, str] | None:
    """(revision, since) to write on the canary's Deployment once its smoke test passed in this rollout."""
    if canary is None or canary.smokeTest is None or canary.smokeTest.phase != api.SmokeTestPhase.PASSED:
        return None
    return canary.revision, canary.since or ""


def smoke_due(resource: api.ModelDeployment, desired: str, observed: Mapping[str, ObservedRevision]) -> bool:
    """A round should run now: the canary the spec asks for is gated, and its Deployment has every pod it asks for
    Ready (at least one), so that every pod that will first take traffic is asked."""
    canary = resource.status.canary
    if canary is None or canary.revision != desired or not gated(resource.spec.rollout, canary):
        return False
    seen = observed.get(canary.revision)
    return seen is not None and seen.replicas > 0 and seen.settled(seen.replicas)


def round_status(round_: smoke.SmokeRound, now: str) -> api.SmokeTestStatus:
    failures = sum(not verdict.passed for verdict in round_.verdicts)
    return api.SmokeTestStatus(
        phase=str(api.SmokeTestPhase.PASSED if round_.passed else api.SmokeTestPhase.FAILED),
        requests=len(round_.verdicts),
        failures=failures,
        pods=list(round_.pods),
        lastFailure=round_.first_failure,
        time=now,
    )
