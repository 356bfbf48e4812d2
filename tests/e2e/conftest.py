"""Session fixtures for end-to-end tests on the local control plane (hack/cluster-up.sh).

The control plane is started once per session, or reused when a healthy one is already running. A cluster the
session started is stopped at the end, unless MODELDEPLOY_KEEP_CLUSTER=1 asks to keep it for the next run.
"""

from __future__ import annotations

import os
import re
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.cluster import Cluster, hack_value, start_cluster, stop_cluster

# Session fixtures of the tests that run model servers as processes, registered here once: imported into each test
# module instead, a session fixture would be set up once per module.
from tests.e2e.nodeagent import node_agent, prometheus  # noqa: F401
from tests.e2e.operator_process import OperatorProcess


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/e2e/" in str(item.path).replace(os.sep, "/"):
            item.add_marker(pytest.mark.e2e)


@pytest.fixture(scope="session")
def cluster() -> Iterator[Cluster]:
    started = start_cluster()
    yield started
    if started.started_here and os.environ.get("MODELDEPLOY_KEEP_CLUSTER") != "1":
        stop_cluster()


@pytest.fixture(scope="session")
def crd(cluster: Cluster) -> None:
    """The ModelDeployment CRD from crds/, applied and Established."""
    cluster.install_crd()


@pytest.fixture
def namespace(cluster: Cluster, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh namespace for one test, deleted afterwards (without waiting for it to go)."""
    stem = re.sub(r"[^a-z0-9-]+", "-", request.node.name.lower()).strip("-")[:40].strip("-")
    name = f"{stem}-{uuid.uuid4().hex[:6]}"
    cluster.kubectl("create", "namespace", name)
    yield name
    cluster.kubectl("delete", "namespace", name, "--wait=false", check=False)


@pytest.fixture(scope="session")
def operator_process(cluster: Cluster, crd: None) -> Iterator[OperatorProcess]:
    """One operator for the session, started as `modeldeploy run` against the local control plane."""
    cluster_dir = Path(hack_value("CLUSTER_DIR"))
    demo_pid = cluster_dir / "pids" / "operator-demo.pid"
    if demo_pid.exists():
        # Two operators on one cluster would both act on the tests' resources.
        print(f"stopping the operator that `make demo` left running ({demo_pid})")
        subprocess.run(["kill", "-TERM", demo_pid.read_text().strip()], check=False)
        demo_pid.unlink()
    log_path = cluster_dir / "logs" / "operator-e2e.log"
    process = OperatorProcess(cluster, log_path)
    process.start()
    yield process
    process.stop()


@pytest.fixture
def operator(operator_process: OperatorProcess) -> Iterator[OperatorProcess]:
    """The session's operator, running at the start of the test (a test that stops it gets it restarted)."""
    operator_process.start()
    yield operator_process
    operator_process.start()
