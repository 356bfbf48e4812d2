"""Session fixtures for end-to-end tests on the local control plane (testkit/scripts/cluster-up.sh).

The control plane is started once per session, or reused when a healthy one is already running. A cluster the
session started is stopped at the end, unless MODELDEPLOY_KEEP_CLUSTER=1 asks to keep it for the next run; so are
the node agent and Prometheus, which only the tests that run model servers as processes ask for, and the gateway
(Contour and Envoy), which only the gateway tests ask for.
"""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
from collections.abc import Callable, Generator, Iterator

import pytest

from modeldeploy_testkit.agent_pods import NodeAgent, start_node_agent, stop_node_agent
from modeldeploy_testkit.cluster import Cluster, scratch_namespace, start_cluster, stop_cluster
from modeldeploy_testkit.gateway import (
    Gateway,
    ToolsUnavailableError,
    ensure_tools,
    install_crds,
    start_gateway,
    stop_gateway,
)
from modeldeploy_testkit.operator_process import OperatorProcess
from modeldeploy_testkit.prometheus import Prometheus, start_prometheus, stop_prometheus
from modeldeploy_testkit.scripts import StartError, cluster_dir, keep_running


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/e2e/" in str(item.path).replace(os.sep, "/"):
            item.add_marker(pytest.mark.e2e)


OPERATOR_LOG_LINES_ON_FAILURE = 60


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """A failed end-to-end test shows the operator's last log lines about its namespace: CI keeps only what pytest
    prints, and the cluster's logs are gone with the clean clone."""
    report: pytest.TestReport = yield
    namespace = getattr(item, "funcargs", {}).get("namespace")
    if report.failed and isinstance(namespace, str):
        log = cluster_dir() / "logs" / "operator-e2e.log"
        with contextlib.suppress(OSError):
            quoted = f'namespace="{namespace}"'
            lines = [line for line in log.read_text(errors="replace").splitlines() if quoted in line]
            tail = lines[-OPERATOR_LOG_LINES_ON_FAILURE:]
            report.sections.append((f"operator log, last {len(tail)} lines about {namespace}", "\n".join(tail)))
    return report


@pytest.fixture(scope="session")
def cluster() -> Iterator[Cluster]:
    started = start_cluster()
    yield started
    if started.started_here and not keep_running():
        stop_cluster()


@pytest.fixture(scope="session")
def crd(cluster: Cluster) -> None:
    """The ModelDeployment CRD from crds/, applied and Established."""
    cluster.install_crd()


@pytest.fixture
def namespace(cluster: Cluster, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh namespace for one test, deleted afterwards (without waiting for it to go)."""
    stem = re.sub(r"[^a-z0-9-]+", "-", request.node.name.lower()).strip("-")[:40].strip("-")
    with scratch_namespace(cluster, stem) as name:
        yield name


@pytest.fixture(scope="session")
def traffic_routers(cluster: Cluster, crd: None) -> str:
    """The routers the session's operator uses (MODELDEPLOY_TRAFFIC_ROUTERS): both, once the Gateway API's and
    Istio's CRDs are installed (a watch of a resource that does not exist would fail); none when those cannot be
    fetched here, and then the routing tests skip, saying why."""
    try:
        install_crds()
    except ToolsUnavailableError as error:
        print(f"\nthe operator runs without routers, the routing tests will skip: {error}")
        return ""
    return "gatewayAPI,istio"


@pytest.fixture
def route_crds(traffic_routers: str) -> None:
    if not traffic_routers:
        pytest.skip("the Gateway API and Istio CRDs could not be fetched here (see the start of the session)")


@pytest.fixture(scope="session")
def operator_process(cluster: Cluster, crd: None, traffic_routers: str) -> Iterator[OperatorProcess]:
    """One operator for the session, started as `modeldeploy run` against the local control plane."""
    demo_pid = cluster_dir() / "pids" / "operator-demo.pid"
    if demo_pid.exists():
        # Two operators on one cluster would both act on the tests' resources.
        print(f"stopping the operator that `make demo` left running ({demo_pid})")
        subprocess.run(["kill", "-TERM", demo_pid.read_text().strip()], check=False)
        demo_pid.unlink()
    process = OperatorProcess(
        cluster,
        cluster_dir() / "logs" / "operator-e2e.log",
        extra_env={"MODELDEPLOY_TRAFFIC_ROUTERS": traffic_routers},
    )
    process.start()
    yield process
    process.stop()


@pytest.fixture
def operator(operator_process: OperatorProcess) -> Iterator[OperatorProcess]:
    """The session's operator, running at the start of the test (a test that stops it gets it restarted)."""
    operator_process.start()
    yield operator_process
    operator_process.start()


# Session fixtures of the tests that run model servers as processes. Here, not in the test modules: imported into
# each module, a session fixture would be set up once per module.


def started_for_the_session[T](start: Callable[[], tuple[T, bool]], stop: Callable[[], None], what: str) -> Iterator[T]:
    """What `start` gave (the running one, or one it started), stopped at the end when the session started it."""
    try:
        running, started_here = start()
    except StartError as error:
        pytest.fail(f"{what} could not start: {error}")
    yield running
    if started_here and not keep_running():
        stop()


@pytest.fixture(scope="session")
def node_agent(cluster: Cluster) -> Iterator[NodeAgent]:
    """The node agent with node agent-node-0 Ready: the running one, or one started for the session."""
    if os.geteuid() != 0:
        pytest.fail("the node agent needs root (network namespaces, veth pairs); run these tests as root")
    yield from started_for_the_session(start_node_agent, stop_node_agent, "the node agent")


@pytest.fixture(scope="session")
def prometheus(cluster: Cluster) -> Iterator[Prometheus]:
    """Prometheus from testkit/scripts/prometheus-up.sh: the running one, or one started for the session."""
    yield from started_for_the_session(start_prometheus, stop_prometheus, "Prometheus")


def skip_without_tools(what: str, error: ToolsUnavailableError) -> None:
    """The one case where a test of the kit's own tools skips rather than fails: they cannot be built here. Said on
    the terminal at once, and in pytest's summary (-ra)."""
    print(f"\nskipping {what}: {error}")
    pytest.skip(f"{what}: the tools cannot be built or fetched here: {error}")


@pytest.fixture(scope="session")
def gateway(cluster: Cluster, request: pytest.FixtureRequest) -> Iterator[Gateway]:
    """Contour and Envoy from testkit/scripts/gateway-up.sh, with the Gateway they serve: the running ones, or ones
    started for the session, Contour built first when it is not cached (2-5 minutes with warm Go caches)."""
    # A build takes minutes: its progress goes to the terminal even when pytest captures output.
    capture = request.config.pluginmanager.getplugin("capturemanager")
    try:
        with capture.global_and_fixture_disabled() if capture else contextlib.nullcontext():
            ensure_tools()
    except ToolsUnavailableError as error:
        skip_without_tools("the gateway tests", error)
    yield from started_for_the_session(start_gateway, stop_gateway, "the gateway (Contour and Envoy)")


@pytest.fixture(scope="session")
def gateway_crds(cluster: Cluster) -> None:
    """The gateway's CRDs (Gateway API experimental channel, Contour's, Istio's) installed and Established, nothing
    started: for tests of the APIs alone."""
    try:
        install_crds()
    except ToolsUnavailableError as error:
        skip_without_tools("the gateway API tests", error)
    except StartError as error:
        pytest.fail(f"the gateway's CRDs could not be installed: {error}")
