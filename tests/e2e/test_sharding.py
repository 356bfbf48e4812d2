"""Two shards side by side: two operator processes, each with its own label selector (--shard-selector) and its own
Lease, each reconciling only the ModelDeployments it selects and writing nothing else; then one resource is
relabelled from one shard to the other in the middle of a canary, and the other shard takes it over from where it
stood (docs/scaling.md)."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from modeldeploy_testkit.cluster import Cluster
from modeldeploy_testkit.operator_process import OPERATOR_USER_AGENT, AuditLog, AuditMark, OperatorProcess
from modeldeploy_testkit.resources import (
    apply,
    deployments,
    mdep,
    model_deployment,
    patch_spec,
    status_of,
    wait_for_status,
)
from modeldeploy_testkit.scripts import cluster_dir
from modeldeploy_testkit.waiting import wait_until

SHARD = "modeldeploy.io/shard"
LEASE_NAMESPACE = "default"  # the admin kubeconfig's context names none: the operator's default
NAMES = ("alpha", "bravo", "charlie")  # none a prefix of another: an object's name tells whose it is


@dataclass
class Shard:
    operator: OperatorProcess
    value: str  # the label value it selects
    lease: str

    @property
    def identity(self) -> str:
        identity = self.operator.identity()
        assert identity, "a leading operator names its identity in modeldeploy_leader"
        return identity

    def holds(self, namespace: str, name: str) -> bool:
        """Whether it reports the resource in its metrics (it has a series for every resource its Store holds)."""
        return any(
            f'namespace="{namespace}"' in labels and f'name="{name}"' in labels
            for labels in self.operator.metric_lines("modeldeploy_resource_info")
        )

    def log(self) -> str:
        return self.operator.log_path.read_bytes()[self.operator.log_offset :].decode(errors="replace")


@pytest.fixture
def shards(cluster: Cluster, operator: OperatorProcess) -> Iterator[tuple[Shard, Shard]]:
    """Two shards with selectors of the two syntaxes, values unique to this run (other tests' resources never
    match); the session's operator is stopped meanwhile, since it acts on every resource."""
    operator.stop()
    run = uuid.uuid4().hex[:6]
    logs = cluster_dir() / "logs"
    made = []
    for letter, selector in (("a", f"{SHARD}=a-{run}"), ("b", f"{SHARD} in (b-{run})")):
        lease = f"modeldeploy-shard-{letter}-{run}"
        process = OperatorProcess(
            cluster, logs / f"operator-shard-{letter}.log", lease_name=lease, extra_args=["--shard-selector", selector]
        )
        made.append(Shard(process, f"{letter}-{run}", lease))
    first, second = made
    try:
        first.operator.start(lead=True)
        second.operator.start(lead=True)
        yield first, second
    finally:
        for shard in made:
            shard.operator.stop()
            cluster.kubectl("delete", "lease", shard.lease, "-n", LEASE_NAMESPACE, "--ignore-not-found", check=False)


def labelled(name: str, shard_value: str, rollout: dict[str, Any]) -> dict[str, Any]:
    body = model_deployment(name, "1.0.0", 2, rollout, uri=f"file:///models/{name}/1.0.0")
    body["metadata"]["labels"] = {SHARD: shard_value}
    return body


def writes(audit: AuditLog, mark: AuditMark, namespace: str) -> list[tuple[str, str]]:
    """(user agent, object name) of every write by an operator (its client's agent or kopf's) in `namespace` since
    `mark`; the audit log keeps write verbs only."""
    found = []
    for event in audit.between(mark):
        reference = event.get("objectRef") or {}
        agent = str(event.get("userAgent", ""))
        if reference.get("namespace") == namespace and agent.startswith((OPERATOR_USER_AGENT, "kopf/")):
            found.append((agent, str(reference.get("name") or "")))
    return found


def by(found: list[tuple[str, str]], shard: Shard) -> set[str]:
    """Which resources' objects (by name) a shard wrote; "" for objects named only after the write (Events)."""
    owners = set()
    for agent, name in found:
        if f"({shard.identity})" in agent:
            owners.add(next((owner for owner in NAMES if name.startswith(owner)), ""))
    return owners


def test_two_shards_side_by_side_and_a_resource_moved_between_them_mid_rollout(
    cluster: Cluster, namespace: str, shards: tuple[Shard, Shard]
) -> None:
    first, second = shards
    assert first.identity != second.identity
    audit = AuditLog()
    mark = audit.mark()

    # One resource for each shard, one for none: both reach Healthy, each written by its own shard only.
    immediate = {"strategy": "Immediate"}
    apply(cluster, namespace, labelled("alpha", first.value, {"strategy": "Canary", "steps": [{"setWeight": 50}]}))
    apply(cluster, namespace, labelled("bravo", second.value, immediate))
    apply(cluster, namespace, labelled("charlie", f"c-{first.value}", immediate))
    for name in ("alpha", "bravo"):
        wait_for_status(cluster, namespace, name, lambda s: s.get("phase") == "Healthy", timeout=90)
    time.sleep(2.0)  # the last status writes and Events reach the audit log
    found = writes(audit, mark, namespace)
    assert by(found, first) - {""} == {"alpha"}, found
    assert by(found, second) - {""} == {"bravo"}, found
    assert not [write for write in found if write[0].startswith("kopf/")], "kopf itself writes nothing"
    assert not [name for _, name in found if name.startswith("charlie")], "no shard selects charlie"
    assert [name for name in NAMES if first.holds(namespace, name)] == ["alpha"]
    assert [name for name in NAMES if second.holds(namespace, name)] == ["bravo"]

    # alpha rolls out 2.0.0 on its shard, up to an open pause with the canary at half the pods.
    patch_spec(
        cluster,
        namespace,
        "alpha",
        {
            "model": {"version": "2.0.0", "uri": "file:///models/alpha/2.0.0"},
            "rollout": {"steps": [{"setWeight": 50}, {"pause": {}}]},
        },
    )
    wait_for_status(
        cluster,
        namespace,
        "alpha",
        lambda s: s.get("phase") == "Paused" and (s.get("canary") or {}).get("actualWeight") == 50,
        timeout=90,
        what="alpha's canary paused at 50 %",
    )
    time.sleep(2.0)  # its shard's last writes for the pause are in
    standing = status_of(cluster, namespace, "alpha")
    children = {name: body["metadata"]["uid"] for name, body in deployments(cluster, namespace).items()}
    alpha_children = {name: uid for name, uid in children.items() if name.startswith("alpha-")}
    assert len(alpha_children) == 2, children

    # Relabelled to the other shard: the first lets it go (its watch reports it DELETED), the second adopts it.
    moved = audit.mark()
    cluster.kubectl("label", "mdep", "alpha", "-n", namespace, f"{SHARD}={second.value}", "--overwrite")
    wait_until(
        lambda: second.holds(namespace, "alpha") and not first.holds(namespace, "alpha"),
        timeout=30,
        what="alpha to change shards",
    )
    assert f'Resource left the shard namespace="{namespace}" name="alpha"' in first.log()
    adopted = f'Adopted namespace="{namespace}" name="alpha" deployments=2 services=3'
    wait_until(lambda: adopted in second.log(), timeout=30, what="the second shard to adopt alpha")
    time.sleep(3.0)  # time enough for a wrong pass to write something
    # Nothing was written on the way: the canary stands where it stood, with the same Deployments.
    assert status_of(cluster, namespace, "alpha") == standing
    assert writes(audit, moved, namespace) == [], "adopting a resource as it stands writes nothing"

    # The second shard carries the rollout on: promoted past the open pause, it finishes it.
    mdep(cluster, namespace, "promote", "alpha", "--full")
    done = wait_for_status(
        cluster,
        namespace,
        "alpha",
        lambda s: s.get("phase") == "Healthy" and s["stable"]["version"] == "2.0.0",
        timeout=90,
        what="alpha's 2.0.0 promoted by the second shard",
    )
    assert [entry["outcome"] for entry in done["history"]][:1] == ["Promoted"]
    time.sleep(2.0)
    after = writes(audit, moved, namespace)
    assert by(after, second) - {""} == {"alpha"}, after
    assert by(after, first) == set(), "the first shard wrote nothing after the move"
    now = {name: body["metadata"]["uid"] for name, body in deployments(cluster, namespace).items()}
    assert all(now.get(name) == uid for name, uid in alpha_children.items()), "the same Deployments carried on"
    assert not [name for name in now if name.startswith("charlie")]
