"""Smoke tests through whole passes: the in-memory API server (fake_cluster.py) holds the pods a kubelet would
report, and the smoke requests go for real to model servers on 127.0.0.1 (model_server.py) at those pods' IPs.

What must hold: until the round passed, the Service `<name>` never selects the canary (so no request reaches it
but the smoke requests); a good canary is admitted in the pass that judges its round, with the evidence on its
Deployment; a bad one is rolled back in that pass, with the case, the input and both outputs in status.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from typing import Any

import pytest

from modeldeploy.children import builders
from modeldeploy.config import OperatorConfig
from modeldeploy.kube.client import ApiError
from modeldeploy.rollout.smoke import SMOKE_PASSED_ANNOTATION

from .model_server import model_servers
from .test_reconcile import Harness, with_version

NAME = "fraud-detector"
SMOKE = {"cases": [{"name": "typical", "input": [[0.5, 1.0]], "expected": [[0.5]]}], "timeoutSeconds": 2}


def smoke_spec(port: int) -> dict[str, Any]:
    return {
        "model": {"version": "1.0.0", "uri": "s3://models/fraud/1.0.0/model.joblib"},
        "replicas": 2,
        "runtime": {"port": port},
        "rollout": {"steps": [{"setWeight": 50}, {"pause": {}}], "smokeTest": SMOKE},
    }


def add_pods(harness: Harness, version: str) -> str:
    """The Ready pods of a version's Deployment, as the kubelet would report them, all at 127.0.0.1."""
    [deployment] = [
        body
        for body in harness.cluster.of_kind("Deployment").values()
        if body["metadata"]["labels"].get(builders.LABEL_VERSION) == version
    ]
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    for index in range(int(deployment["spec"]["replicas"])):
        harness.cluster.add_pod(harness.key[0], f"{deployment['metadata']['name']}-{index}", labels, "127.0.0.1")
    return str(labels[builders.LABEL_REVISION])


def main_service_selectors(harness: Harness) -> list[dict[str, str]]:
    """The selector of every write of the Service `<name>`, in order."""
    return [
        body["spec"]["selector"]
        for what, body in harness.cluster.journal
        if what.endswith(f"Service/{NAME}") and body["kind"] == "Service"
    ]


@pytest.fixture
def served(config: OperatorConfig) -> Iterator[Any]:
    with model_servers() as start:

        def harness_for(behaviour: str) -> Harness:
            port = start(behaviour)
            harness = Harness(config, smoke_spec(port), name=NAME)
            harness.settle()
            harness.cluster.update_spec(harness.key, with_version(smoke_spec(port), "2.0.0"))
            harness.observe()
            return harness

        yield harness_for


def test_a_good_canary_is_admitted_in_the_pass_that_judges_its_round(served: Any) -> None:
    harness = served("echo")
    harness.run()  # the canary's Deployment: one pod for 50 % of 2, the stable keeps both
    harness.cluster.make_ready(harness.store)
    canary = add_pods(harness, "2.0.0")
    stable_selector = copy.deepcopy(main_service_selectors(harness)[-1])
    assert stable_selector.get(builders.LABEL_REVISION) != canary
    harness.run()
    status = harness.status
    assert status["canary"]["smokeTest"]["phase"] == "Passed", status
    assert status["canary"]["smokeTest"]["pods"] == [f"{NAME}-{canary}-0"]
    assert harness.cluster.reads["list Pod"] == 1
    deployment = harness.cluster.of_kind("Deployment")[f"{NAME}-{canary}"]
    assert deployment["metadata"]["annotations"][SMOKE_PASSED_ANNOTATION] == status["canary"]["since"]
    # Admitted: `<name>` now selects every serving pod; before, it never selected the canary.
    selectors = main_service_selectors(harness)
    assert builders.LABEL_REVISION not in selectors[-1]
    assert all(selector.get(builders.LABEL_REVISION) != canary for selector in selectors[:-1])
    assert "SmokeTestPassed" in [event.reason for event in harness.cluster.events]
    # The next passes ask no pod again.
    harness.cluster.make_ready(harness.store)
    harness.run()
    assert harness.cluster.reads["list Pod"] == 1


def test_a_canary_that_answers_wrong_is_rolled_back_without_ever_being_selected(served: Any) -> None:
    harness = served("shifted")
    harness.run()
    harness.cluster.make_ready(harness.store)
    canary = add_pods(harness, "2.0.0")
    harness.run()
    status = harness.status
    assert "canary" not in status
    assert status["aborted"]["reason"] == "SmokeTestFailed"
    message = status["aborted"]["message"]
    assert "case typical (input [0.5, 1]) on pod" in message
    assert "output 0 is 1.5, the reference 0.5" in message
    degraded = next(c for c in status["conditions"] if c["type"] == "Degraded")
    assert (degraded["status"], degraded["reason"]) == ("True", "SmokeTestFailed")
    assert harness.cluster.of_kind("Deployment")[f"{NAME}-{canary}"]["spec"]["replicas"] == 0
    assert all(selector.get(builders.LABEL_REVISION) != canary for selector in main_service_selectors(harness))
    warnings = [event for event in harness.cluster.events if event.type == "Warning"]
    assert "SmokeTestFailed" in [event.reason for event in warnings]


def test_a_smoke_test_that_cannot_list_the_pods_fails_rather_than_waits(served: Any) -> None:
    harness = served("echo")
    harness.run()
    harness.cluster.make_ready(harness.store)
    add_pods(harness, "2.0.0")
    body = '{"kind": "Status", "message": "pods is forbidden: cannot list resource \\"pods\\""}'
    harness.cluster.fail_next["list_pods"] = ApiError(403, "Forbidden", body)
    harness.run()
    status = harness.status
    assert status["aborted"]["reason"] == "SmokeTestFailed"
    assert "the canary's pods could not be listed: 403 pods is forbidden" in status["aborted"]["message"]


@pytest.mark.parametrize(
    ("data", "outcome"),
    [
        ({"cases.json": '[{"name": "low", "input": [[0.1, 1.0]], "expected": [[0.1]]}]'}, "Passed"),
        ({"other": "[]"}, "ConfigMap smoke-cases key cases.json: no such key in the ConfigMap's data"),
        (None, "ConfigMap smoke-cases key cases.json: no such ConfigMap"),
    ],
)
def test_cases_are_read_from_the_configmap_the_spec_names(
    config: OperatorConfig, data: dict[str, str] | None, outcome: str
) -> None:
    with model_servers() as start:
        port = start("echo")
        spec = smoke_spec(port)
        spec["rollout"]["smokeTest"] = {"casesFrom": {"name": "smoke-cases", "key": "cases.json"}}
        harness = Harness(config, spec, name=NAME)
        if data is not None:
            harness.cluster.add_configmap(harness.key[0], "smoke-cases", data)
        harness.settle()
        harness.cluster.update_spec(harness.key, with_version(spec, "2.0.0"))
        harness.observe()
        harness.run()
        harness.cluster.make_ready(harness.store)
        add_pods(harness, "2.0.0")
        harness.run()
    status = harness.status
    if outcome == "Passed":
        assert status["canary"]["smokeTest"]["phase"] == "Passed", status
    else:
        assert status["aborted"]["reason"] == "SmokeTestFailed"
        assert outcome in status["aborted"]["message"]
