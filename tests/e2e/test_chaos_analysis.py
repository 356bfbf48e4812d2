"""The short versions of two failure cases (modeldeploy_testkit.chaos): Prometheus faults during canary analysis
(R8, R11) and a soak of changing versions (R10). Each prints its table of figures and goals; a figure short of its
goal fails the test, with the table."""

from __future__ import annotations

import pytest

from modeldeploy_testkit.chaos.__main__ import run_short
from modeldeploy_testkit.chaos.common import CaseReport, table
from modeldeploy_testkit.operator_process import OperatorProcess
from modeldeploy_testkit.prometheus import Prometheus


@pytest.fixture
def operator_stopped(operator: OperatorProcess) -> None:
    """The session's operator watches every namespace: stopped while a case runs operators of its own (the
    `operator` fixture starts it again afterwards)."""
    operator.stop()


def check(report: CaseReport) -> None:
    assert report.ok, f"{report.case} short of its goals:\n{table([report])}"


@pytest.mark.slow
@pytest.mark.prometheus
@pytest.mark.usefixtures("crd", "operator_stopped")
def test_prometheus_faults_never_promote_a_canary_and_a_good_one_is_promoted_after(prometheus: Prometheus) -> None:
    check(run_short("R8"))


@pytest.mark.slow
@pytest.mark.usefixtures("crd", "operator_stopped")
def test_soak_of_changing_versions_converges_without_duplicates_or_lost_edits() -> None:
    check(run_short("R10"))
