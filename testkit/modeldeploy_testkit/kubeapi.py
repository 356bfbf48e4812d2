"""The kit's Kubernetes REST client, on `requests`: plain dicts in and out, one session per thread.

Everything in the kit talks to the API server through it: the node agent, the load generator, the tests' watches
and the benchmarks. get, list, create, patch (merge, strategic merge, server-side apply), delete, and watch streams
that another thread can close at any moment. Only API servers on loopback are accepted: the tooling of this
repository never talks to anything else.
"""

from __future__ import annotations

import base64
import contextlib
import ipaddress
import json
import tempfile
import threading
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import requests
import yaml

Manifest = dict[str, Any]

MERGE_PATCH = "application/merge-patch+json"
STRATEGIC_PATCH = "application/strategic-merge-patch+json"
APPLY_PATCH = "application/apply-patch+yaml"


class ApiError(Exception):
    def __init__(self, status: int, method: str, path: str, body: str) -> None:
        super().__init__(f"{method} {path}: HTTP {status}: {body[:500]}")
        self.status = status
        self.body = body


def _loopback_only(server: str) -> None:
    host = urllib.parse.urlsplit(server).hostname or ""
    if host == "localhost":
        return
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        raise SystemExit(f"refusing API server {server}: only loopback addresses are allowed") from None
    if not address.is_loopback:
        raise SystemExit(f"refusing API server {server}: only loopback addresses are allowed")


def _material(entry: dict[str, Any], key: str, base: Path, scratch: Path) -> str | None:
    """A file path for `key` (a path relative to the kubeconfig) or `key-data` (base64, written to scratch)."""
    if entry.get(key):
        path = Path(str(entry[key]))
        return str(path if path.is_absolute() else base / path)
    data = entry.get(f"{key}-data")
    if not data:
        return None
    target = scratch / key
    target.write_bytes(base64.b64decode(data))
    return str(target)


def _has_inline(*entries: dict[str, Any]) -> bool:
    return any(key.endswith("-data") for entry in entries for key in entry)


class WatchStream:
    """One open watch request. Iterating yields its events ({type, object}) until the server ends the stream; an
    ERROR event is raised as ApiError. close() may be called from another thread: it ends a read blocked there."""

    def __init__(self, response: requests.Response, path: str) -> None:
        self._response = response
        self._path = path

    def __iter__(self) -> Iterator[Manifest]:
        for line in self._response.iter_lines():
            if not line:
                continue
            event: Manifest = json.loads(line)
            if event.get("type") == "ERROR":
                status = event.get("object") or {}
                raise ApiError(int(status.get("code") or 500), "WATCH", self._path, json.dumps(status))
            yield event

    def close(self) -> None:
        # Shutting the socket down wakes a reader blocked in another thread; closing alone would wait for it.
        shutdown = getattr(self._response.raw, "shutdown", None)
        if shutdown is not None:
            with contextlib.suppress(Exception):
                shutdown()
        self._response.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.close()


class KubeAPI:
    def __init__(self, kubeconfig: Path, user_agent: str, timeout: float = 30) -> None:
        config = yaml.safe_load(kubeconfig.read_text())
        context_name = config.get("current-context")
        context = next(c["context"] for c in config["contexts"] if c["name"] == context_name)
        cluster = next(c["cluster"] for c in config["clusters"] if c["name"] == context["cluster"])
        user: dict[str, Any] = next(
            (u["user"] for u in config.get("users", []) if u["name"] == context.get("user")), {}
        )
        self.server = str(cluster["server"]).rstrip("/")
        _loopback_only(self.server)
        base = kubeconfig.resolve().parent
        # Inline credentials (`*-data`) are written to a private directory, since requests wants files.
        self._scratch = Path(tempfile.mkdtemp(prefix="kubeapi-")) if _has_inline(cluster, user) else base
        self._verify: str | bool = _material(cluster, "certificate-authority", base, self._scratch) or True
        cert = _material(user, "client-certificate", base, self._scratch)
        key = _material(user, "client-key", base, self._scratch)
        self._cert = (cert, key) if cert and key else None
        self._headers = {"User-Agent": user_agent, "Accept": "application/json"}
        if user.get("token"):
            self._headers["Authorization"] = f"Bearer {user['token']}"
        self._timeout = timeout
        self._local = threading.local()

    def _session(self) -> requests.Session:
        session: requests.Session | None = getattr(self._local, "session", None)
        if session is None:
            session = requests.Session()
            # Neither proxies nor CA bundles from the environment: the API server is on loopback, with its own CA.
            session.trust_env = False
            session.verify = self._verify
            if self._cert:
                session.cert = self._cert
            session.headers.update(self._headers)
            self._local.session = session
        return session

    def request(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, Any] | None = None,
        body: Any = None,
        content_type: str = "application/json",
        timeout: float | None = None,
    ) -> Any:
        data = None
        headers = {}
        if body is not None:
            data = json.dumps(body)
            headers["Content-Type"] = content_type
        response = self._session().request(
            method, self.server + path, params=params, data=data, headers=headers, timeout=timeout or self._timeout
        )
        if response.status_code >= 400:
            raise ApiError(response.status_code, method, path, response.text)
        return response.json() if response.content else None

    def get(self, path: str, params: dict[str, Any] | None = None) -> Manifest | None:
        """The object, or None when it does not exist."""
        try:
            result: Manifest = self.request("GET", path, params=params)
        except ApiError as error:
            if error.status == 404:
                return None
            raise
        return result

    def list(self, path: str, params: dict[str, Any] | None = None) -> Manifest:
        result: Manifest = self.request("GET", path, params=params)
        return result

    def create(self, path: str, body: Manifest) -> Manifest:
        result: Manifest = self.request("POST", path, body=body)
        return result

    def patch(
        self, path: str, body: Manifest, content_type: str = MERGE_PATCH, params: dict[str, Any] | None = None
    ) -> Manifest:
        result: Manifest = self.request("PATCH", path, body=body, content_type=content_type, params=params)
        return result

    def delete(self, path: str, body: Manifest | None = None) -> Manifest | None:
        try:
            result: Manifest | None = self.request("DELETE", path, body=body)
        except ApiError as error:
            if error.status == 404:
                return None
            raise
        return result

    def apply(self, collection: str, body: Manifest, field_manager: str, force: bool = True) -> Manifest:
        """Server-side apply of one object of `collection` (its name from the body), as `field_manager`."""
        params = {"fieldManager": field_manager, "force": "true" if force else "false"}
        return self.patch(f"{collection}/{body['metadata']['name']}", body, APPLY_PATCH, params)

    def open_watch(self, path: str, params: dict[str, Any], timeout_seconds: int = 60) -> WatchStream:
        """A watch of `path` that the server ends after `timeout_seconds`; bookmarks are asked for."""
        query = {**params, "watch": "true", "timeoutSeconds": str(timeout_seconds), "allowWatchBookmarks": "true"}
        response = self._session().get(self.server + path, params=query, stream=True, timeout=(5, timeout_seconds + 15))
        if response.status_code >= 400:
            text = response.text
            response.close()
            raise ApiError(response.status_code, "WATCH", path, text)
        return WatchStream(response, path)

    def watch(self, path: str, params: dict[str, Any], timeout_seconds: int = 60) -> Iterator[Manifest]:
        """Watch events ({type, object}) until the server ends the stream; an ERROR event is raised as ApiError."""
        with self.open_watch(path, params, timeout_seconds) as stream:
            yield from stream


def resource_path(
    api_version: str,
    plural: str,
    namespace: str | None = None,
    name: str | None = None,
    subresource: str | None = None,
) -> str:
    """The REST path of a collection (no name) or of one object: `v1` is the core group, `group/version` any other."""
    path = f"/api/{api_version}" if "/" not in api_version else f"/apis/{api_version}"
    if namespace:
        path += f"/namespaces/{namespace}"
    path += f"/{plural}"
    if name:
        path += f"/{name}"
    if subresource:
        path += f"/{subresource}"
    return path


def pods_path(namespace: str | None = None, name: str | None = None, subresource: str | None = None) -> str:
    return resource_path("v1", "pods", namespace, name, subresource)
