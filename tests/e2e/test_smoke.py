"""Smoke tests end to end: real model servers on the node agent's node, the real operator asking their pod IPs,
and the load generator sending through the Service `<name>` the whole time, following its EndpointSlices as
kube-proxy would.

Version 1.0.0 (the echo model: each row's first feature) serves; 2.0.0 rolls out with `spec.rollout.smokeTest`.
What must hold: a canary whose answers differ from the expected values, or from the stable's, is rolled back with
reason SmokeTestFailed before any request of the load generator reaches it; one that answers too slowly fails with
a message saying so; a good one passes and goes on to its steps.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from modeldeploy_testkit.agent_pods import Artifact, healthy, model_deployment
from modeldeploy_testkit.cluster import Cluster
from modeldeploy_testkit.custom_models import ECHO_FIRST_FEATURE, SHIFTED_OUTPUTS, SLOW_ANSWERS, write_custom_model
from modeldeploy_testkit.resources import apply, patch_spec, wait_for_status
from modeldeploy_testkit.traffic import SteadyTraffic

pytestmark = [pytest.mark.nodeagent, pytest.mark.usefixtures("operator", "node_agent"), pytest.mark.timeout(600)]

NAME = "smoked"
PAYLOAD: dict[str, Any] = {"data": {"ndarray": [[0.25, 1.0]]}}
EXPECTED_CASES = [
    {"name": "low", "input": [[0.1, 1.0]], "expected": [[0.1]]},
    {"name": "two-rows", "input": [[0.5, 2.0], [0.9, 3.0]], "expected": [[0.5], [0.9]]},
]
TIMEOUT = 240.0


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Artifact]:
    directory: Path = tmp_path_factory.mktemp("smoke-models")
    return {
        "echo": write_custom_model(directory, "echo", ECHO_FIRST_FEATURE),
        "shifted": write_custom_model(directory, "shifted", SHIFTED_OUTPUTS),
        "slow": write_custom_model(directory, "slow", SLOW_ANSWERS),
    }


def serve(cluster: Cluster, namespace: str, echo: Artifact, smoke_test: dict[str, Any]) -> None:
    rollout = {"steps": [{"setWeight": 50}, {"pause": {}}], "progressDeadlineSeconds": 180, "smokeTest": smoke_test}
    apply(cluster, namespace, model_deployment(NAME, echo, "1.0.0", 2, rollout))
    wait_for_status(cluster, namespace, NAME, healthy("1.0.0", 2), timeout=TIMEOUT, what="1.0.0 Healthy")


def roll_out(cluster: Cluster, namespace: str, artifact: Artifact) -> None:
    patch_spec(
        cluster, namespace, NAME, {"model": {"version": "2.0.0", "uri": artifact.uri, "sha256": artifact.sha256}}
    )


def rolled_back(status: dict[str, Any]) -> bool:
    return status.get("phase") == "Degraded" and (status.get("aborted") or {}).get("version") == "2.0.0"


@pytest.mark.parametrize(
    ("model", "smoke_test", "failure"),
    [
        ("shifted", {"cases": EXPECTED_CASES}, "output 0 is 0.55, the reference 0.1"),
        ("shifted", {"cases": [{"name": "same", "input": [[0.3, 1.0]]}], "compareTo": "Stable"}, "output 0 is 0.65"),
        ("slow", {"cases": EXPECTED_CASES, "timeoutSeconds": 2}, "no answer within 2 s"),
    ],
    ids=["expected", "stable", "timeout"],
)
def test_a_bad_canary_is_rolled_back_before_any_user_request_reaches_it(
    cluster: Cluster,
    namespace: str,
    models: dict[str, Artifact],
    model: str,
    smoke_test: dict[str, Any],
    failure: str,
) -> None:
    serve(cluster, namespace, models["echo"], smoke_test)
    with SteadyTraffic(cluster, namespace, NAME, payload=PAYLOAD) as traffic:
        roll_out(cluster, namespace, models[model])
        final = wait_for_status(cluster, namespace, NAME, rolled_back, timeout=TIMEOUT, what="the rollback")
    print(f"  {final['aborted']['message']}")
    assert final["aborted"]["reason"] == "SmokeTestFailed"
    assert failure in final["aborted"]["message"]
    answered = traffic.answered()
    assert answered.get("2.0.0", 0) == 0, traffic.summary()  # no user request reached the canary
    assert answered.get("1.0.0", 0) > 0, traffic.summary()
    assert traffic.errors() == 0, traffic.summary()


def test_a_good_canary_passes_its_smoke_test_and_takes_its_step(
    cluster: Cluster, namespace: str, models: dict[str, Artifact]
) -> None:
    serve(cluster, namespace, models["echo"], {"cases": EXPECTED_CASES})
    with SteadyTraffic(cluster, namespace, NAME, payload=PAYLOAD) as traffic:
        roll_out(cluster, namespace, models["echo"])
        paused = wait_for_status(
            cluster,
            namespace,
            NAME,
            lambda s: s.get("phase") == "Paused" and s.get("currentStepIndex") == 1,
            timeout=TIMEOUT,
            what="the pause after 50 %",
        )
        verdict = paused["canary"]["smokeTest"]
        assert (verdict["phase"], verdict["failures"]) == ("Passed", 0)
        assert verdict["requests"] == 2 * len(verdict["pods"])  # every case on every pod asked
        passed_at = verdict["time"]
        # Once admitted, the canary takes its share of the traffic.
        wait_for_status(
            cluster,
            namespace,
            NAME,
            lambda s: (s.get("canary") or {}).get("actualWeight") == 50,
            timeout=60,
            what="50 % actual weight",
        )
    print(f"  smoke test passed at {passed_at} on {verdict['pods']}; answers {dict(traffic.answered())}")
    assert traffic.answered().get("2.0.0", 0) > 0, traffic.summary()
    assert traffic.errors() == 0, traffic.summary()
