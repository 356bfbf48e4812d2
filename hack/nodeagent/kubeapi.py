"""A minimal Kubernetes REST client on `requests`: plain dicts in and out, list and watch, one session per thread.

Only API servers on loopback are accepted: the tooling of this repository never talks to anything else.
"""

from __future__ import annotations

import base64
import ipaddress
import json
import tempfile
import threading
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

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


class KubeAPI:
    def __init__(self, kubeconfig: Path, user_agent: str) -> None:
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
        timeout: float = 30,
    ) -> Any:
        data = None
        headers = {}
        if body is not None:
            data = json.dumps(body)
            headers["Content-Type"] = content_type
        response = self._session().request(
            method, self.server + path, params=params, data=data, headers=headers, timeout=timeout
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

    def watch(self, path: str, params: dict[str, Any], timeout_seconds: int = 60) -> Iterator[Manifest]:
        """Watch events ({type, object}) until the server ends the stream; an ERROR event is raised as ApiError."""
        query = {**params, "watch": "true", "timeoutSeconds": str(timeout_seconds), "allowWatchBookmarks": "true"}
        with self._session().get(
            self.server + path, params=query, stream=True, timeout=(5, timeout_seconds + 15)
        ) as response:
            if response.status_code >= 400:
                raise ApiError(response.status_code, "WATCH", path, response.text)
            for line in response.iter_lines():
                if not line:
                    continue
                event: Manifest = json.loads(line)
                if event.get("type") == "ERROR":
                    status = event.get("object") or {}
                    raise ApiError(int(status.get("code") or 500), "WATCH", path, json.dumps(status))
                yield event


def pods_path(namespace: str | None = None, name: str | None = None, subresource: str | None = None) -> str:
    path = f"/api/v1/namespaces/{namespace}/pods" if namespace else "/api/v1/pods"
    if name:
        path += f"/{name}"
    if subresource:
        path += f"/{subresource}"
    return path
