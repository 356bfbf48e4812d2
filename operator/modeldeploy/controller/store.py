"""What the operator has seen of its resources and their children, fed by watch events and by its own writes.

reconcile() reads its snapshot of one resource instead of asking the API server: a pass with nothing to change
makes no API call at all, and a late watch event never undoes a newer write (resourceVersions are compared).

Objects are held as compact JSON, packed with zlib, not as dicts: a Deployment decoded into Python objects takes
several times the memory of its JSON, the Store holds every child of every resource (old revisions included), and
a pass decodes only the few objects of one resource. Decoding also gives each pass its own copy, as a deep copy did
before.
"""

from __future__ import annotations

import json
import threading
import time
import zlib
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from modeldeploy.api import models as api
from modeldeploy.api.times import parse_time

Manifest = dict[str, Any]
Key = tuple[str, str]  # (namespace, name) of a ModelDeployment


def key_of(body: Manifest) -> Key:
    return body["metadata"]["namespace"], body["metadata"]["name"]


def owner_key(child: Manifest) -> Key | None:
    """The ModelDeployment that controls a child, from its controller owner reference."""
    for reference in child["metadata"].get("ownerReferences") or []:
        if (
            reference.get("controller")
            and reference.get("kind") == api.KIND
            and reference.get("apiVersion", "").startswith(api.GROUP + "/")
        ):
            return child["metadata"]["namespace"], reference["name"]
    return None


TOMBSTONES_KEPT = 4096
"""Resources whose going (a DELETED event) the Store remembers, most recent first, so that an older copy arriving
after it (the answer to a write that was in flight) does not bring the resource back."""


def _strictly_newer(new_version: str, old_version: str) -> bool:
    if new_version.isdigit() and old_version.isdigit():
        return int(new_version) > int(old_version)
    return True


def _newer_or_equal(new_version: str, current: _Packed | None) -> bool:
    """Whether `new_version` is at least as new as `current`, so a late watch event cannot undo a newer write."""
    if current is None:
        return True
    old_version = current.resource_version
    if new_version.isdigit() and old_version.isdigit():
        # Opaque by contract, but etcd's are increasing integers; anything else is taken as newer.
        return int(new_version) >= int(old_version)
    return True


@dataclass
class Children:
    deployments: dict[str, Manifest] = field(default_factory=dict)
    services: dict[str, Manifest] = field(default_factory=dict)
    http_routes: dict[str, Manifest] = field(default_factory=dict)
    virtual_services: dict[str, Manifest] = field(default_factory=dict)
    disruption_budgets: dict[str, Manifest] = field(default_factory=dict)
    autoscalers: dict[str, Manifest] = field(default_factory=dict)

    def of_kind(self, kind: str) -> dict[str, Manifest]:
        found: dict[str, Manifest] = _of_kind(self, kind)
        return found


def _of_kind(children: Any, kind: str) -> Any:
    """The name -> object map of `kind` in Children or _PackedChildren (the same fields)."""
    if kind == "Deployment":
        return children.deployments
    if kind == "Service":
        return children.services
    if kind == "HTTPRoute":
        return children.http_routes
    if kind == "VirtualService":
        return children.virtual_services
    if kind == "PodDisruptionBudget":
        return children.disruption_budgets
    if kind == "HorizontalPodAutoscaler":
        return children.autoscalers
    raise ValueError(f"not a kind of child: {kind}")


PACK_LEVEL = 1
"""zlib's fastest level: a Deployment's 3.8 KB of JSON packs into 1.5 KB (a ModelDeployment's 1.2 KB into 0.6) in
tens of microseconds, and unpacks in less. At 1,000 resources the Store held 6-7 MiB of JSON; packed, under 3."""


@dataclass(frozen=True, slots=True)
class _Packed:
    """One object as the Store holds it: its resourceVersion, to compare without decoding, and its JSON, packed."""

    resource_version: str
    data: bytes

    @classmethod
    def of(cls, body: Manifest) -> _Packed:
        version = str(body["metadata"].get("resourceVersion", ""))
        text = json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()
        return cls(version, zlib.compress(text, PACK_LEVEL))

    def body(self) -> Manifest:
        decoded: Manifest = json.loads(zlib.decompress(self.data))
        return decoded


@dataclass
class _PackedChildren:
    deployments: dict[str, _Packed] = field(default_factory=dict)
    services: dict[str, _Packed] = field(default_factory=dict)
    http_routes: dict[str, _Packed] = field(default_factory=dict)
    virtual_services: dict[str, _Packed] = field(default_factory=dict)
    disruption_budgets: dict[str, _Packed] = field(default_factory=dict)
    autoscalers: dict[str, _Packed] = field(default_factory=dict)

    def of_kind(self, kind: str) -> dict[str, _Packed]:
        packed: dict[str, _Packed] = _of_kind(self, kind)
        return packed


REFUSAL_MARK_SECONDS = 600.0
"""How long a namespace learned from a refusal (403 "being terminated") is held as terminating at most, in case
the signs that it was created again (below) were missed: the next refused write learns it again."""


@dataclass(frozen=True, slots=True)
class _Terminating:
    """A namespace being deleted: by the uid the namespace watch showed, or (uid None) learned at `since` from the
    API server refusing a write because of it, and held until `until` at most (on the Store's clock)."""

    uid: str | None
    since: datetime | None = None
    until: float | None = None


LAST_APPLIED = "kubectl.kubernetes.io/last-applied-configuration"


def slim(body: Manifest) -> Manifest:
    """The object without what the operator never reads and can be larger than the rest: metadata.managedFields (on
    a Deployment often larger than everything else) and the annotation in which client-side `kubectl apply` keeps a
    second copy of the whole object. The Store holds every child of every resource."""
    metadata = body.get("metadata")
    if not isinstance(metadata, dict):
        return body
    annotations = metadata.get("annotations")
    last_applied = isinstance(annotations, dict) and LAST_APPLIED in annotations
    if "managedFields" not in metadata and not last_applied:
        return body
    slimmed = {key: value for key, value in metadata.items() if key != "managedFields"}
    if last_applied:
        assert isinstance(annotations, dict)
        slimmed["annotations"] = {key: value for key, value in annotations.items() if key != LAST_APPLIED}
    return {**body, "metadata": slimmed}


class Store:
    """What the operator has seen of its resources and their children (less their managedFields), as compact JSON.
    Thread-safe.

    `admits`, when given, says which resources are this operator's (a shard's label selector): one that is not, at a
    version at least as new as what is held, is dropped with its children instead of stored, wherever it comes from
    (a watch event, the read after a conflict)."""

    def __init__(
        self, clock: Callable[[], float] = time.monotonic, admits: Callable[[Manifest], bool] | None = None
    ) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._parents: dict[Key, _Packed] = {}
        self._children: dict[Key, _PackedChildren] = {}
        self._uids: dict[Key, str] = {}
        self._counts_behind: dict[Key, datetime] = {}
        self._terminating: dict[str, _Terminating] = {}
        self._admits = admits
        self._tombstones: OrderedDict[Key, str] = OrderedDict()
        self._lost_children: set[Key] = set()

    def put_parent(self, body: Manifest) -> bool:
        """Hold `body` unless what is held is newer, the resource went at a version at least as new, or it is not
        this operator's (then it is dropped). Whether it is held now."""
        packed = _Packed.of(slim(body))
        key = key_of(body)
        uid = str(body["metadata"].get("uid", ""))
        admitted = self._admits is None or self._admits(body)
        with self._lock:
            current = self._parents.get(key)
            if not _newer_or_equal(packed.resource_version, current):
                return current is not None
            tombstone = self._tombstones.get(key)
            if tombstone is not None and not _strictly_newer(packed.resource_version, tombstone):
                return False
            if not admitted:
                self._drop(key)
                return False
            self._tombstones.pop(key, None)
            self._parents[key] = packed
            mark = self._terminating.get(key[0])
            if mark is not None and mark.uid is None and _created_after(body, mark.since):
                # A namespace being deleted takes no new object: this one is in a namespace created again.
                del self._terminating[key[0]]
            if current is not None and self._uids.get(key) != uid:
                # Deleted and created again: what the Store holds of the predecessor's children may be gone
                # already (a watch gap reports no deletion). Its children that still exist come back with their
                # next watch event; a pass reads by name any child it needs before it writes.
                self._children.pop(key, None)
            self._uids[key] = uid
        return True

    def _drop(self, key: Key) -> None:
        # Under the lock.
        self._parents.pop(key, None)
        self._uids.pop(key, None)
        self._children.pop(key, None)
        self._counts_behind.pop(key, None)
        self._lost_children.discard(key)
        self._after_removal(key[0])

    def gone(self, key: Key, resource_version: str) -> None:
        """The watch says the resource went at `resource_version`: deleted, or out of this shard's selector (the API
        server reports an object that stops matching a watch's selector as DELETED, at the version of that change).
        It is dropped with everything seen of its children (garbage collection deletes them, or another shard owns
        them now), and a copy of it no newer than that version is refused from now on."""
        with self._lock:
            self._drop(key)
            if resource_version:
                self._tombstones[key] = resource_version
                self._tombstones.move_to_end(key)
                while len(self._tombstones) > TOMBSTONES_KEPT:
                    self._tombstones.popitem(last=False)

    def holds(self, key: Key) -> bool:
        """Whether the resource itself is held (not merely children that name it as their owner)."""
        with self._lock:
            return key in self._parents

    def drop_orphans(self, keep: set[Key] | frozenset[Key] = frozenset()) -> list[Key]:
        """Forget the children of owners the Store does not hold (but those in `keep`): another shard's, or a
        deleted resource's whose own deletion events a watch gap swallowed. The owners, sorted."""
        with self._lock:
            orphans = sorted(owner for owner in self._children if owner not in self._parents and owner not in keep)
            for owner in orphans:
                del self._children[owner]
        return orphans

    def remove_parent(self, key: Key) -> None:
        with self._lock:
            self._parents.pop(key, None)
            self._uids.pop(key, None)
            self._counts_behind.pop(key, None)
            self._after_removal(key[0])

    def forget(self, key: Key, resource_version: str | None = None) -> bool:
        """Drop a resource that is gone and everything seen of its children (garbage collection deletes them, and
        a watch gap may never report it). With `resource_version`, only if the Store still holds that version:
        a newer one means the resource was created again meanwhile."""
        with self._lock:
            current = self._parents.get(key)
            if current is None:
                return False
            if resource_version is not None and current.resource_version != resource_version:
                return False
            del self._parents[key]
            self._uids.pop(key, None)
            self._children.pop(key, None)
            self._counts_behind.pop(key, None)
            self._after_removal(key[0])
            return True

    def namespaces(self) -> set[str]:
        with self._lock:
            return {namespace for namespace, _ in self._parents}

    def absent(self, namespace: str, listed: set[str], list_version: str) -> list[tuple[Key, str]]:
        """Resources of `namespace` the Store holds that a list made at `list_version` no longer shows: gone during
        a watch gap. One the Store holds at a newer version than the list (created after it) is not absent. Each
        with the resourceVersion held, for forget()."""
        with self._lock:
            return [
                (key, packed.resource_version)
                for key, packed in self._parents.items()
                if key[0] == namespace and key[1] not in listed and _newer_or_equal(list_version, packed)
            ]

    def put_child(self, body: Manifest) -> Key | None:
        key = owner_key(body)
        if key is None:
            return None
        packed = _Packed.of(slim(body))
        name = body["metadata"]["name"]
        with self._lock:
            existing = self._children.setdefault(key, _PackedChildren()).of_kind(body["kind"])
            if _newer_or_equal(packed.resource_version, existing.get(name)):
                existing[name] = packed
        return key

    def remove_child(self, body: Manifest) -> Key | None:
        key = owner_key(body)
        if key is None:
            return None
        with self._lock:
            children = self._children.get(key)
            if children is not None:
                children.of_kind(body["kind"]).pop(body["metadata"]["name"], None)
        return key

    def child_deleted(self, body: Manifest) -> Key | None:
        """A watch says a child was deleted: removed, and its owner marked, so that the next pass that would create
        a child first asks the API server whether the owner still exists. Garbage collection deletes the children
        of a resource deleted during a watch gap, and those deletions come while the Store may still hold it."""
        key = self.remove_child(body)
        if key is not None:
            with self._lock:
                self._lost_children.add(key)
        return key

    def children_lost(self, key: Key) -> bool:
        with self._lock:
            return key in self._lost_children

    def owner_confirmed(self, key: Key) -> None:
        with self._lock:
            self._lost_children.discard(key)

    def snapshot(self, key: Key) -> tuple[Manifest | None, Children]:
        """The resource and its children as last seen, decoded: copies the pass may change."""
        with self._lock:
            parent = self._parents.get(key)
            children = self._children.get(key, _PackedChildren())
            deployments = dict(children.deployments)
            services = dict(children.services)
            http_routes = dict(children.http_routes)
            virtual_services = dict(children.virtual_services)
            disruption_budgets = dict(children.disruption_budgets)
            autoscalers = dict(children.autoscalers)
        # Decoded outside the lock: the packed objects are immutable, and decoding is the slow part.
        return (
            parent.body() if parent is not None else None,
            Children(
                {name: packed.body() for name, packed in deployments.items()},
                {name: packed.body() for name, packed in services.items()},
                {name: packed.body() for name, packed in http_routes.items()},
                {name: packed.body() for name, packed in virtual_services.items()},
                {name: packed.body() for name, packed in disruption_budgets.items()},
                {name: packed.body() for name, packed in autoscalers.items()},
            ),
        )

    def keys(self) -> list[Key]:
        with self._lock:
            return list(self._parents)

    def keys_in(self, namespace: str) -> list[Key]:
        with self._lock:
            return [key for key in self._parents if key[0] == namespace]

    # --- status counts not written yet (see rollout/changes.py) -----------------------------------------------

    def counts_behind(self, key: Key, now: datetime) -> datetime:
        """Since when the resource's status on the API server has differed from the computed one only in counts:
        `now` if it has not until this pass."""
        with self._lock:
            return self._counts_behind.setdefault(key, now)

    def counts_behind_since(self, key: Key) -> datetime | None:
        with self._lock:
            return self._counts_behind.get(key)

    def counts_written(self, key: Key) -> None:
        """The status on the API server holds the counts (written, or equal again): nothing is waiting."""
        with self._lock:
            self._counts_behind.pop(key, None)

    # --- namespaces being deleted ---------------------------------------------------------------------------------

    def namespace_terminating(self, namespace: str) -> bool:
        """Whether `namespace` is being deleted, as far as the operator knows: nothing is written there."""
        with self._lock:
            mark = self._terminating.get(namespace)
            if mark is None:
                return False
            if self._expired(mark):
                del self._terminating[namespace]
                return False
            return True

    def observe_namespace(self, name: str, uid: str, *, terminating: bool, gone: bool = False) -> bool:
        """What the namespace watch shows of one namespace; True when this is the news that it is being deleted.

        A namespace gone, or shown without a deletionTimestamp (created again under its name, with another uid),
        is writable again."""
        with self._lock:
            current = self._terminating.get(name)
            if gone or not terminating:
                self._terminating.pop(name, None)
                return False
            self._terminating[name] = _Terminating(uid)
            return current is None or current.uid != uid

    def namespace_refused(self, namespace: str, now: datetime) -> bool:
        """A write refused because `namespace` is being deleted (403 "being terminated"); True when that is news.

        Without a namespace watch nothing says when the namespace is gone and created again, so the mark is
        dropped on the signs of it: the Store holds no resource of the namespace any more (deleting a namespace
        deletes them all, and nothing is created in it meanwhile), or a resource created after the mark shows up;
        at the latest after REFUSAL_MARK_SECONDS."""
        with self._lock:
            mark = self._terminating.get(namespace)
            if mark is not None and not self._expired(mark):
                return False
            self._terminating[namespace] = _Terminating(None, now, self._clock() + REFUSAL_MARK_SECONDS)
            return True

    def _expired(self, mark: _Terminating) -> bool:
        return mark.until is not None and self._clock() > mark.until

    def _after_removal(self, namespace: str) -> None:
        # Under the lock.
        mark = self._terminating.get(namespace)
        if mark is not None and mark.uid is None and not any(key[0] == namespace for key in self._parents):
            del self._terminating[namespace]


def _created_after(body: Manifest, moment: datetime | None) -> bool:
    """Whether the object's creationTimestamp (whole seconds, from the API server's clock) is past `moment`."""
    created = body["metadata"].get("creationTimestamp")
    if moment is None or not isinstance(created, str):
        return False
    try:
        return parse_time(created) > moment
    except (ValueError, TypeError):  # not a time, or one without a zone
        return False
