"""What the operator has seen of its resources and their children, fed by watch events and by its own writes.

reconcile() reads its snapshot of one resource instead of asking the API server: a pass with nothing to change
makes no API call at all, and a late watch event never undoes a newer write (resourceVersions are compared).

Objects are held as compact JSON, not as dicts: a Deployment decoded into Python objects takes several times the
memory of its JSON, the Store holds every child of every resource (old revisions included), and a pass decodes
only the few objects of one resource. Decoding also gives each pass its own copy, as a deep copy did before.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from typing import Any

from modeldeploy.api import models as api

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

    def of_kind(self, kind: str) -> dict[str, Manifest]:
        return self.deployments if kind == "Deployment" else self.services


@dataclass(frozen=True, slots=True)
class _Packed:
    """One object as the Store holds it: its resourceVersion, to compare without decoding, and its JSON."""

    resource_version: str
    data: bytes

    @classmethod
    def of(cls, body: Manifest) -> _Packed:
        version = str(body["metadata"].get("resourceVersion", ""))
        return cls(version, json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode())

    def body(self) -> Manifest:
        decoded: Manifest = json.loads(self.data)
        return decoded


@dataclass
class _PackedChildren:
    deployments: dict[str, _Packed] = field(default_factory=dict)
    services: dict[str, _Packed] = field(default_factory=dict)

    def of_kind(self, kind: str) -> dict[str, _Packed]:
        return self.deployments if kind == "Deployment" else self.services


def slim(body: Manifest) -> Manifest:
    """The object without metadata.managedFields, which the operator never reads: on a Deployment they are often
    larger than everything else, and the Store holds every child of every resource."""
    metadata = body.get("metadata")
    if not isinstance(metadata, dict) or "managedFields" not in metadata:
        return body
    return {**body, "metadata": {key: value for key, value in metadata.items() if key != "managedFields"}}


class Store:
    """What the operator has seen of its resources and their children (less their managedFields), as compact JSON.
    Thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._parents: dict[Key, _Packed] = {}
        self._children: dict[Key, _PackedChildren] = {}
        self._uids: dict[Key, str] = {}

    def put_parent(self, body: Manifest) -> None:
        packed = _Packed.of(slim(body))
        key = key_of(body)
        uid = str(body["metadata"].get("uid", ""))
        with self._lock:
            current = self._parents.get(key)
            if not _newer_or_equal(packed.resource_version, current):
                return
            self._parents[key] = packed
            if current is not None and self._uids.get(key) != uid:
                # Deleted and created again: what the Store holds of the predecessor's children may be gone
                # already (a watch gap reports no deletion). Its children that still exist come back with their
                # next watch event; a pass reads by name any child it needs before it writes.
                self._children.pop(key, None)
            self._uids[key] = uid

    def remove_parent(self, key: Key) -> None:
        with self._lock:
            self._parents.pop(key, None)
            self._uids.pop(key, None)

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

    def snapshot(self, key: Key) -> tuple[Manifest | None, Children]:
        """The resource and its children as last seen, decoded: copies the pass may change."""
        with self._lock:
            parent = self._parents.get(key)
            children = self._children.get(key, _PackedChildren())
            deployments = dict(children.deployments)
            services = dict(children.services)
        # Decoded outside the lock: the packed objects are immutable, and decoding is the slow part.
        return (
            parent.body() if parent is not None else None,
            Children(
                {name: packed.body() for name, packed in deployments.items()},
                {name: packed.body() for name, packed in services.items()},
            ),
        )

    def keys(self) -> list[Key]:
        with self._lock:
            return list(self._parents)
