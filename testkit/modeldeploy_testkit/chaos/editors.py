"""R5: concurrent spec edits during rollouts. Three writers, each a thread with its own client and field manager,
edit the same resources at once: one the model version (server-side apply of spec.model.version and uri), one the
replicas (merge patches), one the rollout (server-side apply of spec.rollout: steps, paused). Each writer's plan
(when, which resource, what value) is drawn from the run's seed before the threads start.

At the end every resource must converge to its spec as it finally is (no edit lost), and the operator must never
have written the spec: its only writes to ModelDeployments go to the status subresource (so Argo CD sees no drift).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any

from modeldeploy_testkit.chaos.common import (
    API_VERSION,
    ChaosRun,
    Figure,
    children_of,
    converged_figure,
    count_figure,
    log,
    lost_edits,
    model_deployment,
    resources_path,
    settled_duplicates,
    spread_figure,
    wait_converged,
)
from modeldeploy_testkit.kubeapi import ApiError, KubeAPI, Manifest
from modeldeploy_testkit.operator_process import OperatorProcess

CASE = "R5"
TITLE = "concurrent spec edits by three writers (server-side apply and merge patches) during rollouts"

CONVERGE_SECONDS = 120.0
OPERATOR_AGENTS = ("modeldeploy/", "kopf/")
STEP_PLANS: list[list[dict[str, Any]]] = [
    [{"setWeight": 50}],
    [{"setWeight": 25}, {"pause": {"duration": "2s"}}, {"setWeight": 50}],
    [{"setWeight": 34}, {"pause": {"duration": "1s"}}],
    [{"setWeight": 20}, {"setWeight": 40}, {"setWeight": 80}],
]


@dataclass(frozen=True)
class Edit:
    at: float  # seconds from the start of the edits
    name: str
    value: Any


@dataclass
class Writer:
    """One editor: its field manager, its plan and what it last wrote successfully, per resource."""

    role: str
    plan: list[Edit]
    written: dict[str, Any] = field(default_factory=dict)
    writes: int = 0
    conflicts: int = 0
    errors: list[str] = field(default_factory=list)

    @property
    def manager(self) -> str:
        return f"chaos-editor-{self.role}"

    def body(self, name: str, value: Any) -> tuple[Manifest, str]:
        """The write for `value`: (body, "apply" or "merge")."""
        if self.role == "version":
            model = {"version": value, "uri": f"file:///models/{name}/{value}/model.joblib"}
            return _applied(name, {"model": model}), "apply"
        if self.role == "replicas":
            return {"spec": {"replicas": value}}, "merge"
        steps, paused = value
        return _applied(name, {"rollout": {"steps": steps, "paused": paused}}), "apply"

    def write(self, api: KubeAPI, namespace: str, edit: Edit, force: bool) -> None:
        body, how = self.body(edit.name, edit.value)
        try:
            if how == "apply":
                api.apply(resources_path(namespace), body, self.manager, force=force)
            else:
                api.patch(resources_path(namespace, edit.name), body, params={"fieldManager": self.manager})
        except ApiError as error:
            if error.status == 409:
                # A conflict on a field only this manager owns: someone else wrote it.
                self.conflicts += 1
            self.errors.append(f"{edit.name}: {error}"[:200])
            return
        self.written[edit.name] = edit.value
        self.writes += 1

    def run(self, api: KubeAPI, namespace: str, start: float) -> None:
        for edit in self.plan:
            delay = start + edit.at - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            self.write(api, namespace, edit, force=False)


def _applied(name: str, spec: dict[str, Any]) -> Manifest:
    return {"apiVersion": API_VERSION, "kind": "ModelDeployment", "metadata": {"name": name}, "spec": spec}


def plan(run: ChaosRun, role: str, names: list[str], seconds: float) -> list[Edit]:
    edits: list[Edit] = []
    at = run.rng.uniform(0.0, 1.0)
    serial = 0
    while at < seconds:
        name = run.rng.choice(names)
        serial += 1
        value: Any
        if role == "version":
            value = f"{run.rng.randint(2, 9)}.{serial}.0"
        elif role == "replicas":
            value = run.rng.randint(1, 4)
        else:
            value = (run.rng.choice(STEP_PLANS), run.rng.random() < 0.25)
        edits.append(Edit(at, name, value))
        at += run.rng.uniform(0.3, 2.5)
    return edits


def spec_writes(run: ChaosRun, mark: Any, namespace: str) -> tuple[list[str], int]:
    """Operator writes to ModelDeployments other than their status subresource, and its status writes."""
    bad: list[str] = []
    status = 0
    for event in run.audit.between(mark):
        if not str(event.get("userAgent", "")).startswith(OPERATOR_AGENTS):
            continue
        reference = event.get("objectRef") or {}
        if reference.get("resource") != "modeldeployments" or reference.get("namespace") != namespace:
            continue
        if reference.get("subresource") == "status":
            status += 1
        else:
            bad.append(f"{event.get('verb')} {reference.get('name')} {reference.get('subresource') or ''}".strip())
    return bad, status


def run(run: ChaosRun) -> list[Figure]:
    namespace = run.namespace("r5")
    api = run.api
    count = 3 if run.short else 8
    seconds = 20.0 if run.short else 75.0
    names = [f"edit{index:02d}" for index in range(count)]
    roles = ("version", "replicas", "rollout")
    writers = [Writer(role, plan(run, role, names, seconds)) for role in roles]
    operator = OperatorProcess(
        run.cluster, run.directory / "operator-r5.log", namespaces=[namespace], extra_args=["--leader-elect=false"]
    )
    log(
        f"R5: {count} resources, {seconds:g} s of edits: "
        + ", ".join(f"{writer.manager} {len(writer.plan)} edits" for writer in writers)
    )
    mark = run.audit.mark()
    try:
        operator.start(lead=False)
        for name in names:
            body = model_deployment(name, "1.0.0", 2, {"strategy": "Canary", "steps": STEP_PLANS[0]})
            api.apply(resources_path(namespace), body, "chaos-editor-create")
        # Each writer takes its own fields over from the creator once (force); after that it applies without
        # force, so a conflict means someone else wrote one of its fields.
        for writer in writers:
            for name in names:
                # Values other than the creator's: a field applied with the value it has would be shared with
                # the creator, and the writer's next change of it would conflict with the creator's ownership.
                initial = {"version": "1.1.0", "replicas": 3, "rollout": (STEP_PLANS[1], False)}[writer.role]
                writer.write(api, namespace, Edit(0.0, name, initial), force=True)
        wait_converged(api, namespace, names, CONVERGE_SECONDS)
        start = time.monotonic() + 0.5
        threads = [
            threading.Thread(
                target=writer.run, args=(run.cluster.api(writer.manager), namespace, start), name=writer.manager
            )
            for writer in writers
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        # The rollout writer may have left a resource paused: its last word un-pauses everything, as a person
        # finishing their edits would.
        rollout_writer = writers[2]
        for name in names:
            steps = (rollout_writer.written.get(name) or (STEP_PLANS[0], False))[0]
            rollout_writer.write(api, namespace, Edit(seconds, name, (steps, False)), force=False)
        log(
            "R5 edits done: "
            + ", ".join(f"{w.role} {w.writes} writes, {w.conflicts} conflicts, {len(w.errors)} errors" for w in writers)
        )
        done = wait_converged(api, namespace, names, CONVERGE_SECONDS)
        time.sleep(1.0)  # the audit log is written just after the answer: let the last events land
        lost = lost_edits(api, namespace, writers[0].written)
        for body in api.list(resources_path(namespace))["items"]:
            name = body["metadata"]["name"]
            spec = body["spec"]
            if spec.get("replicas") != writers[1].written.get(name):
                lost.append(f"{name}: replicas {spec.get('replicas')}, last written {writers[1].written.get(name)}")
            steps, _ = rollout_writer.written.get(name) or (None, None)
            rollout = spec.get("rollout") or {}
            if rollout.get("steps") != steps or rollout.get("paused"):
                lost.append(f"{name}: rollout {rollout}, last written {steps}")
            status = body.get("status") or {}
            if (status.get("stable") or {}).get("replicas") != spec.get("replicas"):
                lost.append(f"{name}: serving {(status.get('stable') or {}).get('replicas')} of {spec.get('replicas')}")
        duplicates = settled_duplicates(api, namespace, 30.0)
        scaled = {name: count.scaled_deployments for name, count in children_of(api, namespace).items()}
        bad, status_writes = spec_writes(run, mark, namespace)
        conflicts_retried = _count(operator, "Status conflict, planning again")
    finally:
        operator.stop()
        run.cleanup(namespace)
    errors = [error for writer in writers for error in writer.errors]
    return [
        converged_figure(len(done), count),
        count_figure("lost spec edits", len(lost), note="; ".join(lost[:3])),
        count_figure(
            "operator writes to the spec", len(bad), note="; ".join(bad[:3]) or f"{status_writes} status writes"
        ),
        count_figure("duplicate children", duplicates, note=f"scaled Deployments {sorted(scaled.values())}"),
        count_figure("editor conflicts (someone wrote their fields)", sum(w.conflicts for w in writers)),
        count_figure("editor writes refused", len(errors), note="; ".join(errors[:2])),
        Figure(
            "status conflicts the operator re-planned",
            str(conflicts_retried),
            "(measured)",
            True,
            "from its log: a spec edit raced its status write",
        ),
        spread_figure("time to converge after the last edit", list(done.values()), CONVERGE_SECONDS / 2),
    ]


def _count(operator: OperatorProcess, text: str) -> int:
    return sum(1 for line in operator.log_path.read_text(errors="replace").splitlines() if text in line)
