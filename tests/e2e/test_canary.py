"""Canary rollouts on the local control plane: steps, pauses, promote/abort/retry, rollback by editing the spec."""

from __future__ import annotations

import json
from typing import Any

import pytest

from modeldeploy_testkit.cluster import CRASHLOOP_IMAGE, Cluster
from modeldeploy_testkit.operator_process import OperatorProcess
from modeldeploy_testkit.resources import (
    apply,
    deployments,
    get,
    mdep,
    model_deployment,
    patch_spec,
    ready_pods_by_revision,
    wait_for_status,
)
from modeldeploy_testkit.waiting import wait_until

pytestmark = pytest.mark.usefixtures("operator")


def canary(name: str, steps: list[dict[str, Any]], replicas: int = 4, version: str = "1.0.0") -> dict[str, Any]:
    rollout = {"strategy": "Canary", "steps": steps, "progressDeadlineSeconds": 60}
    return model_deployment(name, version, replicas, rollout, uri=f"file:///models/{name}/{version}")


def bump(cluster: Cluster, namespace: str, name: str, version: str, **runtime: Any) -> None:
    spec: dict[str, Any] = {"model": {"version": version, "uri": f"file:///models/{name}/{version}"}}
    if runtime:
        spec["runtime"] = runtime
    patch_spec(cluster, namespace, name, spec)


def paused_at(step: int) -> Any:
    return lambda s: s.get("phase") == "Paused" and s.get("currentStepIndex") == step


def test_version_bump_walks_every_step_with_pods_matching_the_weight(cluster: Cluster, namespace: str) -> None:
    steps = [{"setWeight": 25}, {"pause": {"duration": "3s"}}, {"setWeight": 50}, {"pause": {"duration": "3s"}}]
    apply(cluster, namespace, canary("walk", steps))
    first = wait_for_status(cluster, namespace, "walk", lambda s: s.get("phase") == "Healthy")
    bump(cluster, namespace, "walk", "2.0.0")
    for pause_step, weight in ((1, 25), (3, 50)):
        status = wait_for_status(
            cluster, namespace, "walk", paused_at(pause_step), what=f"the pause at step {pause_step}"
        )
        assert status["canary"]["desiredWeight"] == weight
        assert status["canary"]["actualWeight"] == weight
        assert "paused until" in status["message"]
        pods = ready_pods_by_revision(cluster, namespace)
        assert pods == {
            status["stable"]["revision"]: 4 * (100 - weight) // 100,
            status["canary"]["revision"]: 4 * weight // 100,
        }
    done = wait_for_status(
        cluster, namespace, "walk", lambda s: s.get("phase") == "Healthy" and s["stable"]["version"] == "2.0.0"
    )
    assert done.get("canary") is None
    assert done["history"][0]["outcome"] == "Promoted"
    found = deployments(cluster, namespace)
    assert found[f"walk-{first['stable']['revision']}"]["spec"]["replicas"] == 0
    assert found[f"walk-{done['stable']['revision']}"]["spec"]["replicas"] == 4


def test_open_pause_waits_for_promote_and_full_promote_skips_ahead(cluster: Cluster, namespace: str) -> None:
    steps = [{"setWeight": 25}, {"pause": {}}, {"setWeight": 50}, {"pause": {}}, {"setWeight": 75}]
    apply(cluster, namespace, canary("gate", steps))
    wait_for_status(cluster, namespace, "gate", lambda s: s.get("phase") == "Healthy")
    bump(cluster, namespace, "gate", "2.0.0")
    waiting = wait_for_status(cluster, namespace, "gate", paused_at(1))
    assert waiting["pause"]["reason"] == "PromotionRequired"
    view = mdep(cluster, namespace, "status", "gate").stdout
    assert "▶ 2. pause: until promoted" in view
    assert "✔ 1. setWeight: 25%" in view
    assert "`promote`" in view

    mdep(cluster, namespace, "promote", "gate")
    wait_for_status(cluster, namespace, "gate", paused_at(3), what="the second open pause")
    mdep(cluster, namespace, "promote", "gate", "--full")
    done = wait_for_status(
        cluster, namespace, "gate", lambda s: s.get("phase") == "Healthy" and s["stable"]["version"] == "2.0.0"
    )
    reasons = [e["reason"] for e in get(cluster, "events", "-n", namespace)["items"]]
    assert "PauseEnded" in reasons
    assert "PromotedFully" in reasons
    assert done["acknowledged"]["promote"]


def test_abort_returns_all_traffic_to_stable_and_retry_tries_again(cluster: Cluster, namespace: str) -> None:
    apply(cluster, namespace, canary("brake", [{"setWeight": 50}, {"pause": {}}]))
    before = wait_for_status(cluster, namespace, "brake", lambda s: s.get("phase") == "Healthy")
    bump(cluster, namespace, "brake", "2.0.0")
    wait_for_status(cluster, namespace, "brake", paused_at(1))
    mdep(cluster, namespace, "abort", "brake")
    aborted = wait_for_status(cluster, namespace, "brake", lambda s: s.get("phase") == "Degraded")
    degraded = next(c for c in aborted["conditions"] if c["type"] == "Degraded")
    assert degraded["reason"] == "Aborted"
    assert aborted["aborted"]["version"] == "2.0.0"
    stable = before["stable"]["revision"]
    wait_until(
        lambda: ready_pods_by_revision(cluster, namespace) == {stable: 4},
        timeout=30,
        what="all pods to be stable ones",
    )
    # The spec still names 2.0.0: it is not retried by itself...
    assert deployments(cluster, namespace)[f"brake-{aborted['aborted']['revision']}"]["spec"]["replicas"] == 0
    # ...until asked.
    mdep(cluster, namespace, "retry", "brake")
    retried = wait_for_status(cluster, namespace, "brake", paused_at(1), what="the retried canary at its pause")
    assert retried["canary"]["version"] == "2.0.0"
    assert retried.get("aborted") is None


def test_spec_revert_mid_canary_and_after_promotion(cluster: Cluster, namespace: str) -> None:
    steps = [{"setWeight": 50}, {"pause": {}}]
    apply(cluster, namespace, canary("revert", steps))
    before = wait_for_status(cluster, namespace, "revert", lambda s: s.get("phase") == "Healthy")
    bump(cluster, namespace, "revert", "2.0.0")
    wait_for_status(cluster, namespace, "revert", paused_at(1))
    # Mid-canary: back to the serving version stops the canary at once.
    bump(cluster, namespace, "revert", "1.0.0")
    reverted = wait_for_status(
        cluster, namespace, "revert", lambda s: s.get("phase") == "Healthy" and not s.get("canary")
    )
    assert reverted["stable"]["revision"] == before["stable"]["revision"]
    assert reverted["history"][0]["outcome"] == "RolledBack"
    assert reverted["history"][0]["reason"] == "SpecReverted"
    wait_until(
        lambda: ready_pods_by_revision(cluster, namespace) == {before["stable"]["revision"]: 4},
        timeout=30,
        what="the canary pods to go",
    )

    # After a promotion: returning to the previous version is fast-tracked, with no steps and no pause.
    bump(cluster, namespace, "revert", "3.0.0")
    wait_for_status(cluster, namespace, "revert", paused_at(1))
    mdep(cluster, namespace, "promote", "revert")
    wait_for_status(
        cluster, namespace, "revert", lambda s: s.get("phase") == "Healthy" and s["stable"]["version"] == "3.0.0"
    )
    bump(cluster, namespace, "revert", "1.0.0")
    back = wait_for_status(
        cluster, namespace, "revert", lambda s: s.get("phase") == "Healthy" and s["stable"]["version"] == "1.0.0"
    )
    assert back["stable"]["revision"] == before["stable"]["revision"]
    started = [e for e in get(cluster, "events", "-n", namespace)["items"] if e["reason"] == "RolloutStarted"]
    assert any("at once" in e["message"] and "1.0.0" in e["message"] for e in started)


def test_paused_spec_freezes_and_resumes(cluster: Cluster, namespace: str) -> None:
    steps = [{"setWeight": 25}, {"setWeight": 50}, {"pause": {}}]
    body = canary("freeze", steps)
    apply(cluster, namespace, body)
    wait_for_status(cluster, namespace, "freeze", lambda s: s.get("phase") == "Healthy")
    patch_spec(cluster, namespace, "freeze", {"rollout": {"paused": True}, "model": {"version": "2.0.0"}})
    frozen = wait_for_status(cluster, namespace, "freeze", lambda s: s.get("phase") == "Paused")
    assert frozen["pause"]["reason"] == "SpecPaused"
    assert frozen["currentStepIndex"] == 0
    assert frozen["canary"]["desiredWeight"] == 25
    patch_spec(cluster, namespace, "freeze", {"rollout": {"paused": False}})
    resumed = wait_for_status(cluster, namespace, "freeze", paused_at(2), what="the open pause after resuming")
    assert resumed["canary"]["actualWeight"] == 50


def test_restarted_operator_resumes_the_same_step_and_pause_end(
    cluster: Cluster, namespace: str, operator: OperatorProcess
) -> None:
    apply(
        cluster,
        namespace,
        canary("resume", [{"setWeight": 25}, {"pause": {"duration": "8s"}}, {"setWeight": 50}, {"pause": {}}]),
    )
    wait_for_status(cluster, namespace, "resume", lambda s: s.get("phase") == "Healthy")
    bump(cluster, namespace, "resume", "2.0.0")
    paused = wait_for_status(cluster, namespace, "resume", paused_at(1))
    operator.kill()
    operator.start()
    after = wait_for_status(cluster, namespace, "resume", paused_at(3), timeout=60, what="the step after the pause")
    # The pause kept its end time; the next step started when the pause was due to end.
    assert after["stepStartedAt"] >= paused["pause"]["endsAt"]
    started_after = after["stepStartedAt"]
    assert started_after[:19] == paused["pause"]["endsAt"][:19] or after["currentStepIndex"] == 3
    names = sorted(deployments(cluster, namespace))
    assert len(names) == 2, names


def test_canary_that_never_gets_ready_is_aborted_at_its_deadline(cluster: Cluster, namespace: str) -> None:
    body = canary("doomed", [{"setWeight": 50}, {"pause": {}}])
    body["spec"]["rollout"]["progressDeadlineSeconds"] = 10
    apply(cluster, namespace, body)
    wait_for_status(cluster, namespace, "doomed", lambda s: s.get("phase") == "Healthy")
    bump(cluster, namespace, "doomed", "2.0.0", image=CRASHLOOP_IMAGE)
    degraded = wait_for_status(cluster, namespace, "doomed", lambda s: s.get("phase") == "Degraded", timeout=40)
    assert degraded["aborted"]["reason"] == "ProgressDeadlineExceeded"
    assert json.dumps(degraded["stable"]["readyReplicas"]) == "4"
