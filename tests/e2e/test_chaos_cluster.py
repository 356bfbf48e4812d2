"""The short versions of the failure cases that disturb the control plane itself: a watch gap (R3), kube-apiserver
restarted mid-rollout (R4) and concurrent spec edits (R5). Each runs its own operator processes in its own namespace;
the session's operator watches every namespace, so it is stopped meanwhile (the `operator` fixture starts it again).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from modeldeploy_testkit.chaos.__main__ import run_short
from modeldeploy_testkit.chaos.common import table
from modeldeploy_testkit.cluster import Cluster, apiserver_ready
from modeldeploy_testkit.operator_process import OperatorProcess
from modeldeploy_testkit.waiting import wait_until

pytestmark = pytest.mark.slow


@pytest.fixture
def alone(cluster: Cluster, crd: None, operator: OperatorProcess) -> Iterator[None]:
    """The session's operator stopped for the test; the control plane answering again after it (R3 and R4 restart
    the API server)."""
    operator.stop()
    yield
    wait_until(apiserver_ready, timeout=60, what="the API server to be ready")
    wait_until(
        lambda: cluster.kubectl("get", "modeldeployments", "-A", check=False).returncode == 0,
        timeout=60,
        what="the ModelDeployment API to answer",
    )


@pytest.mark.usefixtures("alone")
@pytest.mark.parametrize("case", ["R3", "R4", "R5"])
def test_chaos_case_short(case: str) -> None:
    report = run_short(case)
    assert report.ok, "\n" + table([report])
