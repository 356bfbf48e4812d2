"""What the operator has seen of its resources and their children, fed by watch events and by its own writes.

reconcile() reads its snapshot of one resource instead of asking the API server: a pass with nothing to change
makes no API call at all, and a late watch event never undoes a newer write (resourceVersions are compared).
"""

from __future__ import annotations

import copy
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


def _newer_or_equal(candidate: Manifest, current: Manifest | None) -> bool:
    """Whether `candidate` is at least as new as `current`, so a late watch event cannot undo a newer write."""
    if current is None:
        return True
    new_version = candidate["metadata"].get("resourceVersion", "")
    old_version = current["metadata"].get("resourceVersion", "")
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


def slim(body: Manifest) -> Manifest:
    """The object without metadata.managedFields, which the operator never reads: on a Deployment they are often
    larger than everything else, and the Store holds every child of every resource."""
    metadata = body.get("metadata")
    if not isinstance(metadata, dict) or "managedFields" not in metadata:
        return body
    return {**body, "metadata": {key: value for key, value in metadata.items() if key != "managedFields"}}


class Store:
    """What the operator has seen of its resources and their children (less their managedFields). Thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._parents: dict[Key, Manifest] = {}
        self._children: dict[Key, Children] = {}

    def put_parent(self, body: Manifest) -> None:
        body = slim(body)
        key = key_of(body)
        with self._lock:
            if _newer_or_equal(body, self._parents.get(key)):
                self._parents[key] = body

    def remove_parent(self, key: Key) -> None:
        with self._lock:
            self._parents.pop(key, None)

    def forget(self, key: Key, resource_version: str | None = None) -> bool:
        """Drop a resource that is gone and everything seen of its children (garbage collection deletes them, and
        a watch gap may never report it). With `resource_version`, only if the Store still holds that version:
        a newer one means the resource was created again meanwhile."""
        with self._lock:
            current = self._parents.get(key)
            if current is None:
                return False
            if resource_version is not None and current["metadata"].get("resourceVersion") != resource_version:
                return False
            del self._parents[key]
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
                (key, str(body["metadata"].get("resourceVersion", "")))
                for key, body in self._parents.items()
                if key[0] == namespace
                and key[1] not in listed
                and _newer_or_equal({"metadata": {"resourceVersion": list_version}}, body)
            ]

    def put_child(self, body: Manifest) -> Key | None:
        key = owner_key(body)
        if key is None:
            return None
        body = slim(body)
        name = body["metadata"]["name"]
        with self._lock:
            existing = self._children.setdefault(key, Children()).of_kind(body["kind"])
            if _newer_or_equal(body, existing.get(name)):
                existing[name] = body
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
        with self._lock:
            parent = self._parents.get(key)
            children = self._children.get(key, Children())
            return copy.deepcopy(parent), Children(dict(children.deployments), dict(children.services))

    def keys(self) -> list[Key]:
        with self._lock:
            return list(self._parents)
