"""kopf as the operator uses it: logging in from our own settings, through one login handler only.

The operator needs no Kubernetes client library: it talks to the API server through kube/client.py and reads
kubeconfigs itself (kube/config.py), and the package declares none, so kopf finds none to import. kopf's default
registry would still add a fallback login through such a library wherever one happens to be installed beside the
operator; a plain registry has none, so main.py's login handler is the only way in, with the same settings as
kube/client.py.

Import kopf from here (`from modeldeploy.kube.kopf_login import kopf`), never directly, in the operator's modules.
"""

from __future__ import annotations

import base64
import dataclasses
import ssl
import urllib.parse
from datetime import UTC, datetime
from typing import Any

import kopf

from modeldeploy.kube.config import ConnectionSettings, Credentials, KubeconfigError

__all__ = ["NoDiffBase", "connection_info", "kopf"]

kopf.set_default_registry(kopf.OperatorRegistry())


class NoDiffBase(kopf.DiffBaseStorage):
    """A diff base that is never kept. kopf builds one for every watch event (a deep copy of the whole object,
    status and managedFields included) to tell its create/update handlers what changed; the operator has only
    event handlers, which read nothing of it, and the copies were a few percent of its CPU in a burst."""

    def build(self, *, body: kopf.Body, extra_fields: Any = None) -> kopf.BodyEssence:
        return kopf.BodyEssence()

    def fetch(self, *, body: kopf.Body) -> kopf.BodyEssence | None:
        return None

    def store(self, *, body: kopf.Body, patch: kopf.Patch, essence: kopf.BodyEssence) -> None:
        return None


def connection_info(settings: ConnectionSettings) -> kopf.ConnectionInfo:
    """The same server, credentials, proxy and server name as kube/client.py's, for kopf's watches.

    A token file is read now, and an exec plugin run now; kopf calls its login handler again when the server answers
    401, and when the plugin's credential expires (`expiration`), which reads or runs them again.
    """
    credential = Credentials(settings).current()
    if settings.proxy_url:
        _check_proxy_for_kopf(settings.proxy_url, credential.token)
    from_plugin = credential.client_cert_data is not None
    expiration = None if credential.expires_at is None else datetime.fromtimestamp(credential.expires_at, UTC)
    fields: dict[str, Any] = {
        "server": settings.server,
        "ca_path": settings.ca_file,
        "ca_data": _base64(settings.ca_data),
        "insecure": settings.insecure,
        "token": credential.token,
        "certificate_path": None if from_plugin else settings.client_cert_file,
        "certificate_data": _base64(credential.client_cert_data if from_plugin else settings.client_cert_data),
        "private_key_path": None if from_plugin else settings.client_key_file,
        "private_key_data": _base64(credential.client_key_data if from_plugin else settings.client_key_data),
        "default_namespace": settings.namespace,
        "proxy_url": settings.proxy_url,
        "expiration": expiration,
    }
    if settings.tls_server_name:
        return ServerNameConnectionInfo(ssl_context=settings.ssl_context(credential), **fields)
    return kopf.ConnectionInfo(**fields)


def _check_proxy_for_kopf(proxy_url: str, token: str | None) -> None:
    """What kopf's HTTP client (aiohttp) cannot do safely through a proxy: refused here, with the reason, rather than
    found out from the proxy's logs."""
    if token:
        # kopf gives aiohttp the Authorization header as a session default, and aiohttp copies session defaults into
        # the CONNECT request, where it turns Authorization into Proxy-Authorization: the bearer token would go to the
        # proxy. Client certificates are not affected (they go end to end, inside the tunnel).
        raise KubeconfigError(
            "the cluster's proxy-url cannot be used with a bearer token for kopf's watches: kopf's HTTP client would "
            "send the token to the proxy as well; use client-certificate credentials with this proxy, or no proxy"
        )
    if urllib.parse.urlsplit(proxy_url).username is not None:
        raise KubeconfigError(
            "the cluster's proxy-url has a user and password, which kopf's HTTP client does not send to the proxy"
        )


@dataclasses.dataclass(frozen=True, kw_only=True)
class ServerNameConnectionInfo(kopf.ConnectionInfo):
    """kopf's ConnectionInfo, whose SSL context is ours: kopf has no field for tls-server-name, and builds its
    aiohttp connector from `as_ssl_context()`, so the name comes in with the context (see ServerNameContext)."""

    ssl_context: ssl.SSLContext = dataclasses.field(compare=False, repr=False)

    def as_ssl_context(self) -> ssl.SSLContext:
        return self.ssl_context


def _base64(pem: str | None) -> str | None:
    # kopf takes PEM text only when it starts with "-----BEGIN "; base64 of the text is taken whatever it holds.
    return None if pem is None else base64.b64encode(pem.encode()).decode()
