"""R3: a watch gap. The operator is frozen (SIGSTOP); the API server is restarted, which closes every watch; then
resources are deleted, created, re-created under the same name and edited, and etcd is compacted, so that the
watches cannot resume where they were (410 Gone: their resourceVersion is compacted away) and must list again.
Then SIGCONT.

kopf resumes a watch that merely ended from its last resourceVersion and lists again only on 410, and whatever the
API server sent before the restart waits in the frozen process's socket buffer: changes made before the restart, or
a restart alone, leave no gap.

Afterwards a deleted resource must get no child again (no operator write of its Deployments or Services after its
deletion, none of them left in a list), a 404 on its status ends its work (no retries), and everything else
converges. The operator runs as one process with `--leader-elect=false`, so the freeze cannot cost it a lease, and
with `--verbose`, so that kopf logs each watch it restarts.
"""

from __future__ import annotations

import json
import re
import signal
import time
import urllib.request
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from typing import Any

import requests

from modeldeploy_testkit.chaos.common import (
    INSTANCE_LABEL,
    ChaosRun,
    Figure,
    acted_figure,
    converged_figure,
    count_figure,
    follow_progress,
    log,
    model_deployment,
    resources_path,
    settled_duplicates,
    spread_figure,
    wait_converged,
)
from modeldeploy_testkit.cluster import restart_apiserver
from modeldeploy_testkit.kubeapi import ApiError, KubeAPI, Manifest, resource_path
from modeldeploy_testkit.operator_process import AuditLog, AuditMark, OperatorProcess
from modeldeploy_testkit.scripts import script_value
from modeldeploy_testkit.waiting import wait_until

CASE = "R3"
TITLE = "watch gap: operator frozen while resources go and come, API server restarted, etcd compacted"

# The wait for every resource to be Healthy again after a gap: the operator's own part (ACT_GOAL_SECONDS) plus the
# cluster's, which after an API server restart and a compaction can lag by over a minute (docs/chaos.md, R3).
CONVERGE_SECONDS = 180.0
ACT_GOAL_SECONDS = 60.0
OPERATOR_AGENTS = ("modeldeploy/", "kopf/")
# kopf's debug line when a watch cannot resume (410) and lists again.
RELIST_LINE = "Restarting the watch-stream for modeldeployments"


@dataclass
class Gap:
    """What one frozen interval did."""

    deleted: dict[str, datetime] = field(default_factory=dict)  # name -> when its deletion returned
    recreated: set[str] = field(default_factory=set)  # deleted, then created again under the same name
    created: set[str] = field(default_factory=set)
    edited: set[str] = field(default_factory=set)


def rollout_for(run: ChaosRun) -> dict[str, Any]:
    # The default progress deadline (600 s): a shorter one lets a slow ReplicaSet controller after the restart roll
    # an edit back, which is the spec's will but hides whether the edit converges.
    if run.rng.random() < 0.5:
        return {"strategy": "Immediate"}
    return {"strategy": "Canary", "steps": [{"setWeight": 50}]}


def compact_etcd() -> int:
    """Compact etcd up to its current revision (through its JSON gateway): a watch resuming from an older
    resourceVersion gets 410 Gone and must list again. The API server compacts every 5 minutes anyway."""
    base = f"http://127.0.0.1:{script_value('ETCD_CLIENT_PORT')}/v3/kv"
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))

    def post(path: str, body: dict[str, Any]) -> dict[str, Any]:
        request = urllib.request.Request(
            f"{base}/{path}", data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
        )
        with opener.open(request, timeout=10) as response:
            answer: dict[str, Any] = json.loads(response.read())
            return answer

    revision = int(post("range", {"key": "AA=="})["header"]["revision"])
    post("compaction", {"revision": str(revision)})
    return revision


def child_names(name: str) -> re.Pattern[str]:
    """Names of the children of ModelDeployment `name`: Deployments `<name>-r<hash>`, Services `<name>`,
    `<name>-stable`, `<name>-canary`."""
    return re.compile(rf"^{re.escape(name)}(-r[0-9a-f]+|-stable|-canary)?$")


def children_listed(api: KubeAPI, namespace: str, names: set[str]) -> dict[str, list[Manifest]]:
    """Deployments and Services (not being deleted) labelled as children of one of `names`."""
    found: dict[str, list[Manifest]] = {}
    for api_version, plural in (("apps/v1", "deployments"), ("v1", "services")):
        for item in api.list(resource_path(api_version, plural, namespace))["items"]:
            owner = (item["metadata"].get("labels") or {}).get(INSTANCE_LABEL)
            if owner in names and not item["metadata"].get("deletionTimestamp"):
                found.setdefault(owner, []).append(item)
    return found


def _when(event: dict[str, Any], key: str) -> datetime:
    return datetime.fromisoformat(str(event[key]).replace("Z", "+00:00"))


@dataclass(frozen=True)
class AfterDeletion:
    child_writes: list[str]  # operator writes of a deleted parent's children after its deletion (not deletes)
    status_404: int  # status writes for a deleted parent the API server answered 404
    other_writes: list[str]  # any other operator write naming a deleted parent after its deletion
    collected: list[str] = field(default_factory=list)  # deletes of such children: orphans the operator collected


def writes_after_deletion(audit: AuditLog, mark: AuditMark, namespace: str, gap: Gap) -> AfterDeletion:
    child_writes: list[str] = []
    collected: list[str] = []
    other: list[str] = []
    status_404 = 0
    patterns = {name: child_names(name) for name in gap.deleted if name not in gap.recreated}
    for event in audit.between(mark):
        if not str(event.get("userAgent", "")).startswith(OPERATOR_AGENTS):
            continue
        reference = event.get("objectRef") or {}
        if reference.get("namespace") != namespace:
            continue
        resource, name = reference.get("resource"), str(reference.get("name") or "")
        received = _when(event, "requestReceivedTimestamp")
        code = int((event.get("responseStatus") or {}).get("code") or 0)
        where = f"{event.get('verb')} {resource}/{name} -> {code} at {received.time()}"
        if resource in ("deployments", "services"):
            for parent, pattern in patterns.items():
                if pattern.match(name) and received > gap.deleted[parent]:
                    (collected if event.get("verb") == "delete" else child_writes).append(where)
        elif resource == "modeldeployments" and name in patterns and received > gap.deleted[name]:
            if reference.get("subresource") == "status" and code == 404:
                status_404 += 1
            else:
                other.append(where)
    return AfterDeletion(child_writes, status_404, other, collected)


def answering(api: KubeAPI, namespace: str) -> bool:
    """Whether ModelDeployments can be listed: just after a restart the CRD's storage answers 429 for a while."""
    try:
        api.list(resources_path(namespace))
    except (ApiError, requests.RequestException):
        return False
    return True


def absent(api: KubeAPI, namespace: str, name: str) -> bool:
    return api.get(resources_path(namespace, name)) is None


def log_since(operator: OperatorProcess, offset: int) -> str:
    return operator.log_path.read_bytes()[offset:].decode(errors="replace")


def run(run: ChaosRun) -> list[Figure]:
    namespace = run.namespace("r3")
    api = run.api
    rounds = 1 if run.short else 3
    initial = 6 if run.short else 14
    operator = OperatorProcess(
        run.cluster,
        run.directory / "operator-r3.log",
        namespaces=[namespace],
        extra_args=["--leader-elect=false", "--verbose"],
    )
    log(
        f"R3: one operator process, --leader-elect=false (a freeze cannot cost it a lease), --namespace {namespace}, "
        f"--verbose; {rounds} gap(s), {initial} resources to start with"
    )
    serial = 0
    live: dict[str, Manifest] = {}
    all_deleted: set[str] = set()
    converge_times: list[float] = []
    act_times: list[float] = []
    changes_total = 0
    downtimes: list[float] = []
    expected_total = 0
    converged_total = 0
    held_total = 0
    relists_seen = 0
    gone_total = 0
    gone_seen = 0
    child_writes: list[str] = []
    collected: list[str] = []
    other_writes: list[str] = []
    status_404 = 0
    retries_404: list[str] = []
    dead_owned: list[str] = []

    def new_body(name: str) -> Manifest:
        return model_deployment(name, f"1.{run.rng.randrange(100)}.0", run.rng.randint(1, 3), rollout_for(run))

    def create(name: str) -> None:
        body = new_body(name)
        api.create(resources_path(namespace), body)
        live[name] = body

    try:
        operator.start(lead=False)
        for _ in range(initial):
            serial += 1
            create(f"w{serial:03d}")
        done = wait_converged(api, namespace, live, CONVERGE_SECONDS)
        if len(done) != len(live):
            raise AssertionError(f"the first resources did not converge: {sorted(set(live) - set(done))}")
        assert operator.process is not None
        for index in range(rounds):
            gap = Gap()
            names = sorted(live)
            deleted = run.rng.sample(names, max(2, len(names) // 3))
            survivors = [name for name in names if name not in deleted]
            edited = run.rng.sample(survivors, max(1, len(survivors) // 3))
            recreated = run.rng.sample(deleted, max(1, len(deleted) // 3))
            fresh = run.rng.randint(2, 4)
            mark = run.audit.mark()
            offset = operator.log_path.stat().st_size
            operator.process.send_signal(signal.SIGSTOP)
            try:
                # First the restart, which closes every watch, then the changes: events sent before the close
                # would wait in the frozen process's socket buffer and reach it after SIGCONT, no gap at all.
                started = time.monotonic()
                restart_apiserver()
                downtimes.append(time.monotonic() - started)
                wait_until(partial(answering, api, namespace), timeout=60, what="the ModelDeployment API to answer")
                for name in deleted:
                    api.delete(resources_path(namespace, name))
                    wait_until(partial(absent, api, namespace, name), timeout=30, what=f"{name} to be gone")
                    gap.deleted[name] = datetime.now(UTC)
                    del live[name]
                for name in recreated:
                    create(name)
                    gap.recreated.add(name)
                for name in edited:
                    version = f"2.{run.rng.randrange(100)}.{index}"
                    api.patch(resources_path(namespace, name), {"spec": {"model": {"version": version}}})
                    live[name]["spec"]["model"]["version"] = version
                    gap.edited.add(name)
                for _ in range(fresh):
                    serial += 1
                    create(f"w{serial:03d}")
                    gap.created.add(f"w{serial:03d}")
                revision = compact_etcd()
            finally:
                operator.process.send_signal(signal.SIGCONT)
            log(
                f"R3 gap {index + 1}: deleted {sorted(gap.deleted)} (re-created {sorted(gap.recreated)}), created "
                f"{sorted(gap.created)}, edited {sorted(gap.edited)}, all after the API server restart "
                f"({downtimes[-1]:.1f} s); "
                f"etcd compacted at {revision}; SIGCONT"
            )
            all_deleted |= set(gap.deleted) - gap.recreated
            progress = follow_progress(api, namespace, live, CONVERGE_SECONDS)
            done = progress.converged
            changed = gap.edited | gap.created | gap.recreated
            converge_times += [seconds for name, seconds in done.items() if name in changed]
            held = held_for_collection(api, namespace, gap.recreated - set(done))
            held_total += len(held)
            # A re-created resource held back by design is no change the operator acts on yet.
            acting = changed - held
            act_times += [seconds for name, seconds in progress.acted.items() if name in acting]
            changes_total += len(acting)
            expected_total += len(live) - len(held)
            converged_total += len(done)
            if len(done) != len(live):
                stuck = set(live) - set(done)
                listed = {
                    owner: sorted(child["metadata"]["name"] for child in children)
                    for owner, children in children_listed(api, namespace, stuck).items()
                }
                log(f"R3 gap {index + 1}: not converged: {sorted(stuck)}; their children listed now: {listed}")
            # The re-list: kopf says so when it restarts a watch; the Store's comparison with a list after it drops
            # what went meanwhile.
            try:
                wait_until(partial(relisted, operator, offset), timeout=30, what="the re-list in the log")
                relists_seen += 1
            except AssertionError:
                log(f"R3 gap {index + 1}: no re-list in the operator's log")
            gone = [name for name in gap.deleted if name not in gap.recreated]
            try:
                wait_until(
                    partial(all_gone, operator, offset, gone),
                    timeout=30,
                    what="the deleted resources to be dropped",
                )
            except AssertionError:
                log(f"R3 gap {index + 1}: not every deleted resource was reported gone")
            gone_total += len(gone)
            gone_seen += sum(1 for name in gone if all_gone(operator, offset, [name]))
            text = log_since(operator, offset)
            retries_404 += [
                line
                for line in text.splitlines()
                if "status=404" in line and any(f'name="{name}"' in line for name in gone)
            ]
            # Garbage collection removes the children of the deleted; anything the operator applied again would
            # also go, but the audit log keeps its writes.
            leftover: dict[str, list[Manifest]] = {}

            def no_leftover(gone: list[str] = gone) -> bool:
                nonlocal leftover
                leftover = children_listed(api, namespace, set(gone))
                return not leftover

            try:
                wait_until(no_leftover, timeout=60, interval=1.0, what="the children of deleted resources to go")
            except AssertionError:
                log(f"R3 gap {index + 1}: children of deleted resources left: {sorted(leftover)}")
            uids = {
                body["metadata"]["name"]: body["metadata"]["uid"]
                for body in api.list(resources_path(namespace))["items"]
            }
            for owner, children in children_listed(api, namespace, gap.recreated - held).items():
                for child in children:
                    owners = {ref.get("uid") for ref in child["metadata"].get("ownerReferences") or []}
                    if uids.get(owner) not in owners:
                        dead_owned.append(str(child["metadata"]["name"]))
            time.sleep(1.0)  # the audit log is written just after the answer: let the last events land
            found = writes_after_deletion(run.audit, mark, namespace, gap)
            child_writes += found.child_writes
            collected += found.collected
            other_writes += found.other_writes
            status_404 += found.status_404
        leftover_all = children_listed(api, namespace, all_deleted)
        duplicates = settled_duplicates(api, namespace, 30.0)
    finally:
        if operator.process is not None and operator.running:
            operator.process.send_signal(signal.SIGCONT)
        operator.stop()
        run.cleanup(namespace)
    deleted_count = len(all_deleted)
    return [
        converged_figure(converged_total, expected_total, "survivors, edited, new and re-created, summed over gaps"),
        Figure(
            "watch re-listed after the gap",
            f"{relists_seen}/{rounds}",
            f"{rounds}/{rounds}",
            relists_seen == rounds,
            "kopf's 'Restarting the watch-stream' after etcd compaction and the API server restart",
        ),
        Figure(
            "deleted parents reported gone",
            f"{gone_seen}/{gone_total}",
            f"{gone_total}/{gone_total}",
            gone_seen == gone_total,
            "'Resource gone' in the log: by the list after the re-list, or by a 404 on status",
        ),
        count_figure("children re-applied for deleted parents", len(child_writes), note="; ".join(child_writes[:3])),
        count_figure(
            "children of deleted parents left",
            sum(len(children) for children in leftover_all.values()),
            note=", ".join(sorted(leftover_all)),
        ),
        count_figure("children owned by a dead parent", len(dead_owned), note="; ".join(dead_owned[:3])),
        Figure(
            "orphans the operator deleted",
            str(len(collected)),
            "(measured)",
            True,
            "children of deleted parents that garbage collection missed in the gap, deleted by the operator "
            "after its grace period; " + "; ".join(collected[:2]),
        ),
        Figure(
            "re-created, held until garbage collection frees the names",
            str(held_total),
            "(measured)",
            True,
            "Degraded ChildConflict by design while the predecessor's children exist; after the gap the garbage "
            "collector may not remove them (it missed the deletion too), and the operator never takes them over",
        ),
        count_figure(
            "status writes answered 404",
            status_404,
            goal=max(deleted_count, 1),
            note="one per deleted parent at most: the 404 ends its work",
        ),
        count_figure("404 retries in the operator's log", len(retries_404), note="; ".join(retries_404[:2])),
        count_figure("other writes for deleted parents", len(other_writes), note="; ".join(other_writes[:3])),
        count_figure("duplicate children", duplicates),
        acted_figure("operator acted on each change after SIGCONT", act_times, changes_total, ACT_GOAL_SECONDS),
        spread_figure("changes Healthy after SIGCONT (pods Ready)", converge_times),
        spread_figure("API server restart (frozen operator)", downtimes),
    ]


def held_for_collection(api: KubeAPI, namespace: str, names: set[str]) -> set[str]:
    """Re-created resources that stand back, as designed, from children their predecessor (same name, another
    uid) still has: Degraded with reason ChildConflict, and such a child listed."""
    if not names:
        return set()
    held = set()
    bodies = {body["metadata"]["name"]: body for body in api.list(resources_path(namespace))["items"]}
    listed = children_listed(api, namespace, names)
    for name in names:
        body = bodies.get(name)
        if body is None:
            continue
        conditions = (body.get("status") or {}).get("conditions") or []
        conflict = any(c.get("type") == "Degraded" and c.get("reason") == "ChildConflict" for c in conditions)
        uid = body["metadata"]["uid"]
        foreign = any(
            uid not in {ref.get("uid") for ref in child["metadata"].get("ownerReferences") or []}
            for child in listed.get(name, [])
        )
        if conflict and foreign:
            held.add(name)
    return held


def relisted(operator: OperatorProcess, offset: int) -> bool:
    return RELIST_LINE in log_since(operator, offset)


def all_gone(operator: OperatorProcess, offset: int, names: list[str]) -> bool:
    """Whether the operator logged each of `names` as gone (by a 404 or by the comparison with a list)."""
    lines = [line for line in log_since(operator, offset).splitlines() if "Resource gone" in line]
    return all(any(f'name="{name}"' in line for line in lines) for name in names)
