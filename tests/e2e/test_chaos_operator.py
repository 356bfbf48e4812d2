"""The short versions of the failure suite's operator cases (`python -m modeldeploy_testkit.chaos R1 R6 --short`):
the leader killed during canary rollouts, and failover between two replicas running as the chart's ServiceAccount.

Each case starts operator processes of its own; the session's operator is stopped meanwhile, since it watches every
namespace and would act on the case's resources too (the `operator` fixture starts it again afterwards).
"""

from __future__ import annotations

import pytest

from modeldeploy_testkit.chaos.__main__ import run_short
from modeldeploy_testkit.chaos.common import table
from modeldeploy_testkit.operator_process import OperatorProcess

pytestmark = pytest.mark.slow


@pytest.fixture
def alone(operator: OperatorProcess) -> None:
    """No operator but the case's own."""
    operator.stop()


def test_r1_leader_killed_during_rollouts_loses_no_edit_and_no_replica_writes_without_the_lease(alone: None) -> None:
    report = run_short("R1")
    assert report.ok, "\n" + table([report])


def test_r6_replicas_as_the_charts_service_account_fail_over_within_the_lease_after_a_kill(alone: None) -> None:
    report = run_short("R6")
    assert report.ok, "\n" + table([report])
