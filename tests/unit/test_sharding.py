"""Shards: operators that each own the ModelDeployments a label selector selects. Against the in-memory API
server, with watches that send each shard what the API server would: every child (a selector cannot name an
owner), the resources its selector selects, and DELETED (with the object as it last matched) for one that stops
matching."""

from __future__ import annotations

import asyncio
import copy
import logging
from collections import Counter
from typing import Any, cast

import kopf
import pytest
from kopf._cogs.structs.references import Resource

from modeldeploy.api import models as api
from modeldeploy.api.selectors import labels_of, parse_selector
from modeldeploy.cli.main import main as cli_main
from modeldeploy.config import OperatorConfig
from modeldeploy.controller.queue import Controller
from modeldeploy.controller.store import Key, Manifest, Store
from modeldeploy.kube.client import ApiError, Kube

from .fake_cluster import FakeCluster
from .test_reconcile import SPEC

SHARD = "modeldeploy.io/shard"
IMMEDIATE = {**SPEC, "rollout": {"strategy": "Immediate"}}


def version(spec: dict[str, Any], number: str) -> dict[str, Any]:
    changed = copy.deepcopy(spec)
    changed["model"]["version"] = number
    changed["model"]["uri"] = f"s3://models/fraud/{number}/model.joblib"
    return changed


class Shards:
    """Two shards on one cluster (`a`: shard=a, `b`: shard in (b)), and the watches between them."""

    def __init__(self, config: OperatorConfig) -> None:
        self.cluster = FakeCluster()
        self.config = config
        self.a = self.start("modeldeploy.io/shard=a")
        self.b = self.start("modeldeploy.io/shard in (b)")
        self.sent: dict[int, dict[Key, Manifest]] = {id(self.a): {}, id(self.b): {}}
        self.sent_children: dict[int, dict[tuple[str, str, str], Manifest]] = {id(self.a): {}, id(self.b): {}}

    def start(self, selector: str) -> Controller:
        return Controller(cast(Kube, self.cluster), self.config, shard=parse_selector(selector))

    def restart_a(self) -> Controller:
        self.a = self.start("modeldeploy.io/shard=a")
        self.sent[id(self.a)] = {}
        self.sent_children[id(self.a)] = {}
        return self.a

    def send_resources(self, controller: Controller, event: str | None = "MODIFIED") -> None:
        assert controller.shard is not None
        sent = self.sent[id(controller)]
        for (kind, namespace, name), body in list(self.cluster.objects.items()):
            if kind != api.KIND:
                continue
            key = (namespace, name)
            previous = sent.get(key)
            if controller.shard.matches(labels_of(body)):
                if previous is None or previous["metadata"]["resourceVersion"] != body["metadata"]["resourceVersion"]:
                    first = "ADDED" if event is not None else None
                    controller.observe_resource(event if previous is not None else first, copy.deepcopy(body))
                    sent[key] = copy.deepcopy(body)
            elif previous is not None:
                gone = copy.deepcopy(previous)
                gone["metadata"]["resourceVersion"] = body["metadata"]["resourceVersion"]
                controller.observe_resource("DELETED", gone)
                del sent[key]

    def send_children(self, controller: Controller, event: str | None = "MODIFIED") -> None:
        """Children that changed since the last call (all of them for a list, `event` None), and DELETED for those
        gone: a child's watch sends nothing while it does not change."""
        sent = self.sent_children[id(controller)]
        for object_key, body in list(self.cluster.objects.items()):
            if object_key[0] == api.KIND:
                continue
            previous = sent.get(object_key)
            if (
                event is None
                or previous is None
                or previous["metadata"]["resourceVersion"] != body["metadata"]["resourceVersion"]
            ):
                controller.observe_child(
                    event if previous is not None or event is None else "ADDED", copy.deepcopy(body)
                )
                sent[object_key] = copy.deepcopy(body)
        for object_key in [object_key for object_key in sent if object_key not in self.cluster.objects]:
            controller.observe_child("DELETED", sent.pop(object_key))

    def watch(self) -> None:
        for controller in (self.a, self.b):
            self.send_resources(controller)
            self.send_children(controller)

    async def converge(self, controller: Controller, key: Key, limit: int = 12) -> None:
        """Passes of `controller`, with pods made ready and the watches delivered between them, until one writes
        nothing."""
        for _ in range(limit):
            self.watch()
            before = Counter(self.cluster.writes)
            await controller._reconcile(key)
            if self.cluster.writes == before:
                return
            self.cluster.make_ready(Store())
        raise AssertionError(f"{key} did not converge")

    async def pass_writes(self, controller: Controller, key: Key) -> Counter[str]:
        before = Counter(self.cluster.writes)
        await controller._reconcile(key)
        return self.cluster.writes - before

    def children_of(self, name: str) -> dict[tuple[str, str], str]:
        """Every child of `name` in the cluster, by kind and name, with its resourceVersion."""
        return {
            (kind, child): str(body["metadata"]["resourceVersion"])
            for (kind, _, child), body in self.cluster.objects.items()
            if kind != api.KIND and child.startswith(name)
        }

    async def stop(self) -> None:
        await self.a.queue.stop()
        await self.b.queue.stop()


ADOPTION_LISTS = Counter(
    {"list Deployment": 1, "list Service": 1, "list PodDisruptionBudget": 1, "list HorizontalPodAutoscaler": 1}
)
"""One list per kind of child when a resource joins a shard."""


def held_children(controller: Controller, key: Key) -> int:
    _, children = controller.store.snapshot(key)
    return len(children.deployments) + len(children.services)


def test_each_shard_reconciles_only_its_own_and_keeps_no_child_of_another(config: OperatorConfig) -> None:
    async def scenario() -> None:
        shards = Shards(config)
        alpha = shards.cluster.create_resource(IMMEDIATE, name="alpha", labels={SHARD: "a"})
        bravo = shards.cluster.create_resource(IMMEDIATE, name="bravo", labels={SHARD: "b"})
        nobody = shards.cluster.create_resource(IMMEDIATE, name="charlie", labels={SHARD: "c"})
        await shards.converge(shards.a, alpha)
        await shards.converge(shards.b, bravo)
        shards.watch()
        assert shards.cluster.status(alpha)["phase"] == "Healthy"
        assert shards.cluster.status(bravo)["phase"] == "Healthy"
        assert shards.a.store.keys() == [alpha]
        assert shards.b.store.keys() == [bravo]
        # Each was sent the other's children and kept none of them.
        assert (
            held_children(shards.a, alpha) == held_children(shards.b, bravo) == 2
        )  # a Deployment and the Service at rest
        assert held_children(shards.a, bravo) == held_children(shards.b, alpha) == 0
        # A pass for a resource a shard does not hold does nothing at all.
        assert await shards.pass_writes(shards.a, bravo) == Counter()
        assert await shards.pass_writes(shards.b, alpha) == Counter()
        # Nobody's resource (no shard selects it) is left alone.
        assert await shards.pass_writes(shards.a, nobody) == Counter()
        assert shards.cluster.resource(nobody).get("status") is None
        assert shards.children_of("charlie") == {}
        await shards.stop()

    asyncio.run(scenario())


def test_a_resource_relabelled_to_another_shard_mid_rollout_is_let_go_by_one_and_adopted_by_the_other(
    config: OperatorConfig, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="modeldeploy.controller")

    async def scenario() -> None:
        shards = Shards(config)
        alpha = shards.cluster.create_resource(SPEC, name="alpha", labels={SHARD: "a"})
        await shards.converge(shards.a, alpha)
        shards.cluster.update_spec(alpha, version(SPEC, "2.0.0"))
        await shards.converge(shards.a, alpha)  # the canary at 50 %, paused for 30 s
        paused = shards.cluster.status(alpha)
        assert (paused["phase"], paused["canary"]["actualWeight"]) == ("Paused", 50)
        children = shards.children_of("alpha")
        assert len(children) == 6, "two revisions' Deployments, three Services, the disruption budget"

        shards.cluster.relabel(alpha, {SHARD: "b"})
        shards.watch()
        # The old shard forgets it and its children, and deletes nothing.
        assert shards.a.store.keys() == []
        assert held_children(shards.a, alpha) == 0
        assert shards.children_of("alpha") == children
        assert await shards.pass_writes(shards.a, alpha) == Counter()
        # The new shard lists its children once (their events went by unkept) and finds the rollout as it was:
        # without them it would see no canary and write a status that says so.
        reads = Counter(shards.cluster.reads)
        writes = await shards.pass_writes(shards.b, alpha)
        assert shards.cluster.reads - reads == ADOPTION_LISTS
        assert writes == Counter()
        assert held_children(shards.b, alpha) == 5
        assert shards.cluster.status(alpha) == paused
        assert await shards.pass_writes(shards.b, alpha) == Counter()
        assert shards.cluster.reads - reads == ADOPTION_LISTS, "once"

        # It rolls out the next version there, and the old shard writes nothing for it.
        shards.cluster.update_spec(alpha, version(IMMEDIATE, "3.0.0"))
        await shards.converge(shards.b, alpha)
        assert shards.cluster.status(alpha)["stable"]["version"] == "3.0.0"
        shards.watch()
        assert await shards.pass_writes(shards.a, alpha) == Counter()
        assert shards.a.store.keys() == []
        await shards.stop()

    asyncio.run(scenario())
    assert 'Resource left the shard namespace="models" name="alpha" selector="modeldeploy.io/shard=a"' in caplog.text
    assert 'Adopted namespace="models" name="alpha" deployments=2 services=3' in caplog.text


def test_a_new_resource_is_not_adopted(config: OperatorConfig) -> None:
    """No status: nobody reconciled it, so it has no children to list."""

    async def scenario() -> None:
        shards = Shards(config)
        alpha = shards.cluster.create_resource(IMMEDIATE, name="alpha", labels={SHARD: "a"})
        await shards.converge(shards.a, alpha)
        assert shards.cluster.reads["list Deployment"] == shards.cluster.reads["list Service"] == 0
        await shards.stop()

    asyncio.run(scenario())


def test_a_pass_that_finds_its_resource_relabelled_away_writes_no_status_and_lets_it_go(
    config: OperatorConfig,
) -> None:
    """The relabelling comes between the watch event and the status write: the write is fenced by the version the
    pass decided from, so it is refused, and the read that follows shows the resource is another shard's. The
    pass's child writes have gone out by then (the new shard sees them and carries on from them)."""

    async def scenario() -> None:
        shards = Shards(config)
        alpha = shards.cluster.create_resource(IMMEDIATE, name="alpha", labels={SHARD: "a"})
        await shards.converge(shards.a, alpha)
        shards.cluster.update_spec(alpha, version(IMMEDIATE, "2.0.0"))
        shards.send_resources(shards.a)
        shards.a.queue.add_after(alpha, 60.0)
        shards.cluster.relabel(alpha, {SHARD: "b"})  # a's watch has not said so yet
        writes = await shards.pass_writes(shards.a, alpha)
        assert writes["patch ModelDeployment/status"] == 1
        assert shards.cluster.conflicts == 1
        assert shards.cluster.status(alpha)["stable"]["version"] == "1.0.0", "no status written by the old shard"
        assert shards.a.store.keys() == []
        assert alpha not in shards.a.queue._timers
        # Its watch event, when it comes, changes nothing; the new shard finishes the rollout.
        shards.watch()
        await shards.converge(shards.b, alpha)
        assert shards.cluster.status(alpha)["stable"]["version"] == "2.0.0"
        assert shards.a.store.keys() == []
        await shards.stop()

    asyncio.run(scenario())


def test_a_late_answer_to_a_write_does_not_bring_back_a_resource_that_went() -> None:
    store = Store()
    body: Manifest = {"metadata": {"namespace": "models", "name": "alpha", "uid": "u", "resourceVersion": "5"}}
    key = ("models", "alpha")
    assert store.put_parent(body)
    store.gone(key, "7")  # relabelled away (or deleted) at 7
    assert not store.put_parent(body), "the answer to a status write made at 5 arrives after the DELETED at 7"
    assert not store.put_parent({"metadata": {**body["metadata"], "resourceVersion": "7"}})
    assert not store.holds(key)
    assert store.put_parent({"metadata": {**body["metadata"], "resourceVersion": "9"}}), "back in (or created again)"
    assert store.holds(key)


def test_the_store_refuses_a_resource_the_shard_does_not_select_and_drops_what_it_held() -> None:
    selector = parse_selector("modeldeploy.io/shard=a")
    store = Store(admits=lambda body: selector.matches(labels_of(body)))
    metadata = {"namespace": "models", "name": "alpha", "uid": "u", "resourceVersion": "5", "labels": {SHARD: "a"}}
    child: Manifest = {
        "kind": "Deployment",
        "metadata": {
            "namespace": "models",
            "name": "alpha-r1",
            "resourceVersion": "6",
            "ownerReferences": [{"controller": True, "kind": api.KIND, "apiVersion": api.API_VERSION, "name": "alpha"}],
        },
    }
    assert store.put_parent({"metadata": metadata})
    store.put_child(child)
    moved = {"metadata": {**metadata, "resourceVersion": "8", "labels": {SHARD: "b"}}}
    older = {"metadata": {**metadata, "resourceVersion": "4", "labels": {SHARD: "b"}}}
    assert store.put_parent(older), "an older copy changes nothing: the newer one is held"
    assert not store.put_parent(moved)
    assert not store.holds(("models", "alpha"))
    assert store.snapshot(("models", "alpha"))[1].deployments == {}


def test_the_comparison_with_a_list_drops_a_resource_relabelled_away_during_a_watch_gap(config: OperatorConfig) -> None:
    async def scenario() -> None:
        shards = Shards(config)
        alpha = shards.cluster.create_resource(IMMEDIATE, name="alpha", labels={SHARD: "a"})
        kept = shards.cluster.create_resource(IMMEDIATE, name="kept", labels={SHARD: "a"})
        await shards.converge(shards.a, alpha)
        shards.cluster.relabel(alpha, {SHARD: "b"})  # no event: the watch was down
        assert await shards.a.sweep() == [alpha]
        assert shards.a.store.keys() == [kept]
        await shards.stop()

    asyncio.run(scenario())


def test_a_restarted_shard_keeps_the_children_of_what_it_listed_whatever_order_the_watches_deliver_in(
    config: OperatorConfig,
) -> None:
    async def scenario() -> None:
        shards = Shards(config)
        alpha = shards.cluster.create_resource(IMMEDIATE, name="alpha", labels={SHARD: "a"})
        bravo = shards.cluster.create_resource(IMMEDIATE, name="bravo", labels={SHARD: "b"})
        await shards.converge(shards.a, alpha)
        await shards.converge(shards.b, bravo)
        restarted = shards.restart_a()
        reads = Counter(shards.cluster.reads)
        await restarted.prime([])
        assert shards.cluster.reads - reads == Counter({"list ModelDeployment": 1}), "one list for the cluster"
        # The children's list comes first, then the resources' (kopf reports listed objects with no type).
        shards.send_children(restarted, event=None)
        assert held_children(restarted, alpha) == 2
        assert held_children(restarted, bravo) == 0
        shards.send_resources(restarted, event=None)
        assert await shards.pass_writes(restarted, alpha) == Counter()
        assert shards.cluster.reads["list Deployment"] == reads["list Deployment"], "nothing to adopt"
        await shards.stop()
        await restarted.queue.stop()

    asyncio.run(scenario())


def test_children_kept_for_a_resource_that_never_came_go_at_the_first_comparison(config: OperatorConfig) -> None:
    async def scenario() -> None:
        shards = Shards(config)
        alpha = shards.cluster.create_resource(IMMEDIATE, name="alpha", labels={SHARD: "a"})
        await shards.converge(shards.a, alpha)
        restarted = shards.restart_a()
        await restarted.prime([])
        shards.cluster.relabel(alpha, {SHARD: "b"})  # between the shard's list and its watches
        shards.send_children(restarted, event=None)
        shards.send_resources(restarted, event=None)
        assert held_children(restarted, alpha) == 2
        await restarted.sweep()
        assert held_children(restarted, alpha) == 0
        shards.send_children(restarted)
        assert held_children(restarted, alpha) == 0, "no longer expected"
        await shards.stop()
        await restarted.queue.stop()

    asyncio.run(scenario())


def test_a_shard_whose_list_failed_adopts_each_resource_instead(
    config: OperatorConfig, caplog: pytest.LogCaptureFixture
) -> None:
    async def scenario() -> None:
        shards = Shards(config)
        alpha = shards.cluster.create_resource(IMMEDIATE, name="alpha", labels={SHARD: "a"})
        await shards.converge(shards.a, alpha)
        restarted = shards.restart_a()
        shards.cluster.fail_next["list_resource_keys"] = ApiError(403, "Forbidden", "{}")
        await restarted.prime(["models"])
        shards.send_children(restarted, event=None)
        assert held_children(restarted, alpha) == 0, "not known to be this shard's yet"
        shards.send_resources(restarted, event=None)
        reads = Counter(shards.cluster.reads)
        assert await shards.pass_writes(restarted, alpha) == Counter()
        assert shards.cluster.reads - reads == ADOPTION_LISTS
        await shards.stop()
        await restarted.queue.stop()

    asyncio.run(scenario())
    assert 'Shard list failed namespace="models" selector="modeldeploy.io/shard=a"' in caplog.text


def test_the_startup_handler_filters_the_watches_on_the_server_and_primes_the_shard(
    config: OperatorConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    from modeldeploy import main

    cluster = FakeCluster()
    cluster.create_resource(IMMEDIATE, name="alpha", namespace="team-a", labels={SHARD: "a"})
    cluster.create_resource(IMMEDIATE, name="bravo", namespace="team-a", labels={SHARD: "b"})
    monkeypatch.setattr(main, "load_settings", lambda: None)
    monkeypatch.setattr(main, "Kube", lambda *_, **__: cluster)

    # The handlers as kopf calls them: with keyword arguments, of which they take only what they name.
    configure = cast(Any, main.configure)
    stop = cast(Any, main.stop)

    async def scenario(memo: kopf.Memo) -> tuple[kopf.OperatorSettings, Controller]:
        settings = kopf.OperatorSettings()
        await configure(settings=settings, memo=memo)
        controller: Controller = memo["controller"]
        await stop(memo=memo)
        return settings, controller

    def selectors(settings: kopf.OperatorSettings, group: str, version: str, plural: str) -> list[str]:
        return list(settings.watching.label_selectors.collect(Resource(group, version, plural)))

    settings, controller = asyncio.run(
        scenario(kopf.Memo(shard=parse_selector("modeldeploy.io/shard = a"), namespaces=["team-a"]))
    )
    assert selectors(settings, api.GROUP, api.VERSION, api.PLURAL) == ["modeldeploy.io/shard=a"]
    assert selectors(settings, "apps", "v1", "deployments") == ["app.kubernetes.io/managed-by=modeldeploy"]
    assert selectors(settings, "", "v1", "services") == ["app.kubernetes.io/managed-by=modeldeploy"]
    assert selectors(settings, "", "v1", "namespaces") == []
    assert str(controller.shard) == "modeldeploy.io/shard=a"
    assert controller._expected == {("team-a", "alpha")}

    settings, controller = asyncio.run(scenario(kopf.Memo()))
    assert selectors(settings, api.GROUP, api.VERSION, api.PLURAL) == []
    assert selectors(settings, "apps", "v1", "deployments") == ["app.kubernetes.io/managed-by=modeldeploy"]
    assert controller.shard is None


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (
            ["--shard-selector", "shard in ()"],
            "argument --shard-selector: 'shard in ()': the set of 'shard in' is empty",
        ),
        (["--shard-selector", " "], "an empty selector selects every resource"),
        (["--shard-selector", "shard=a"], "--shard-selector needs --leader-elect-lease-name"),
    ],
)
def test_a_wrong_shard_is_refused_at_start(argv: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        cli_main(["run", *argv])
    assert exited.value.code == 2
    assert message in capsys.readouterr().err


def test_a_shard_without_leader_election_needs_no_lease() -> None:
    from modeldeploy.cli import main as cli

    parser = cli.build_parser()
    args = parser.parse_args(["run", "--shard-selector", "tier in (gold)", "--leader-elect=false"])
    cli._check_run(parser, args)
    args = parser.parse_args(["run", "--shard-selector", "tier in (gold)", "--leader-elect-lease-name", "md-gold"])
    cli._check_run(parser, args)
    assert str(args.shard_selector) == "tier in (gold)"
    assert parser.parse_args(["run"]).leader_elect_lease_name is None, "the default Lease is named where it is used"
