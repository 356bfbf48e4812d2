"""Where the API server is and how to prove who we are: the kubeconfig's current context, or the pod's service account.

Read without the `kubernetes` package, whose import alone costs ~30 MiB of resident memory. The one exception is a
kubeconfig user whose credentials come from a plugin (`exec` or `auth-provider`: EKS, GKE, AKS, OIDC...): only the
package knows how to run those, so for them it is imported, lazily, and pays that memory.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import os
import ssl
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

DEFAULT_NAMESPACE = "default"
SERVICE_ACCOUNT_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")
TOKEN_REREAD_SECONDS = 60.0
"""How long a token read from a file is used before the file is read again: kubelet rotates bound service-account
tokens in place, well before they expire."""


class KubeconfigError(Exception):
    """Neither the kubeconfig nor the in-cluster environment says how to reach the API server."""


@dataclass(frozen=True)
class ConnectionSettings:
    """How to reach the API server and authenticate, as one kubeconfig context (or the service account) says."""

    server: str
    """Base URL, e.g. https://127.0.0.1:6443 (possibly with a path prefix)."""
    ca_file: str | None = None
    ca_data: str | None = field(default=None, repr=False)
    """PEM text; at most one of ca_file and ca_data is set. Neither: the system's trusted CAs."""
    client_cert_file: str | None = None
    client_cert_data: str | None = field(default=None, repr=False)
    client_key_file: str | None = None
    client_key_data: str | None = field(default=None, repr=False)
    token: str | None = field(default=None, repr=False)
    token_file: str | None = None
    """Read again every TOKEN_REREAD_SECONDS and after a 401; wins over `token`, as in client-go."""
    insecure: bool = False
    """insecure-skip-tls-verify: the server's certificate is not checked at all."""
    namespace: str = DEFAULT_NAMESPACE
    plugin_kubeconfig: str | None = None
    """Set when the credentials came from an exec or auth-provider plugin (through the kubernetes package): the
    kubeconfig to load again for fresh credentials once the server rejects these."""

    def ssl_context(self) -> ssl.SSLContext:
        """Verifies the server against ca_file/ca_data (or the system's CAs) and presents the client certificate."""
        context = ssl.create_default_context(cafile=self.ca_file, cadata=self.ca_data)
        if self.insecure:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        if self.client_cert_file or self.client_cert_data:
            with (
                _as_file(self.client_cert_file, self.client_cert_data) as certificate,
                _as_file(self.client_key_file, self.client_key_data) as key,
            ):
                if certificate is None:
                    raise KubeconfigError("a client key without a client certificate")
                context.load_cert_chain(certificate, key)
        return context


@contextlib.contextmanager
def _as_file(path: str | None, data: str | None) -> Iterator[str | None]:
    """`path`, or `data` in a private temporary file (mode 0600) that is removed again once loaded: ssl can only
    load a client certificate and key from files."""
    if data is None:
        yield path
        return
    descriptor, name = tempfile.mkstemp(prefix="modeldeploy-", suffix=".pem")
    try:
        with os.fdopen(descriptor, "w") as handle:
            handle.write(data)
        yield name
    finally:
        os.unlink(name)


# --- where the settings come from -------------------------------------------------------------------------------------


def kubeconfig_path(env: Mapping[str, str] | None = None) -> Path:
    """The first file named by $KUBECONFIG, else ~/.kube/config. kubectl merges every file of a KUBECONFIG list;
    the operator and its plugin read only the first, which is enough for the one context they use."""
    env = os.environ if env is None else env
    for entry in env.get("KUBECONFIG", "").split(os.pathsep):
        if entry:
            return Path(entry).expanduser()
    return Path("~/.kube/config").expanduser()


def load_settings(
    env: Mapping[str, str] | None = None, service_account_dir: Path = SERVICE_ACCOUNT_DIR
) -> ConnectionSettings:
    """The kubeconfig's current context when the kubeconfig file exists, else the pod's service account."""
    env = os.environ if env is None else env
    path = kubeconfig_path(env)
    if path.is_file():
        return settings_from_kubeconfig(path)
    if env.get("KUBERNETES_SERVICE_HOST"):
        return in_cluster_settings(env, service_account_dir)
    raise KubeconfigError(f"no kubeconfig at {path}, and not in a cluster (KUBERNETES_SERVICE_HOST is not set)")


def current_namespace(env: Mapping[str, str] | None = None, service_account_dir: Path = SERVICE_ACCOUNT_DIR) -> str:
    """The namespace kubectl would use: the current context's, or the service account's; "default" without either.
    Never runs a credential plugin."""
    env = os.environ if env is None else env
    path = kubeconfig_path(env)
    try:
        if path.is_file():
            return _current_context(_read(path), path).namespace
        if env.get("KUBERNETES_SERVICE_HOST"):
            return _service_account_namespace(service_account_dir)
    except (KubeconfigError, OSError):
        pass
    return DEFAULT_NAMESPACE


def in_cluster_settings(env: Mapping[str, str], service_account_dir: Path = SERVICE_ACCOUNT_DIR) -> ConnectionSettings:
    host = env["KUBERNETES_SERVICE_HOST"]
    port = env.get("KUBERNETES_SERVICE_PORT") or "443"
    token_file = service_account_dir / "token"
    if not token_file.is_file():
        raise KubeconfigError(
            f"in a cluster, but there is no service-account token at {token_file} (automountServiceAccountToken?)"
        )
    return ConnectionSettings(
        server=f"https://[{host}]:{port}" if ":" in host else f"https://{host}:{port}",
        ca_file=str(service_account_dir / "ca.crt"),
        token_file=str(token_file),
        namespace=_service_account_namespace(service_account_dir),
    )


def _service_account_namespace(service_account_dir: Path) -> str:
    try:
        return (service_account_dir / "namespace").read_text().strip() or DEFAULT_NAMESPACE
    except OSError:
        return DEFAULT_NAMESPACE


@dataclass(frozen=True)
class _Context:
    cluster: Mapping[str, Any]
    user: Mapping[str, Any]
    namespace: str


def _read(path: Path) -> Mapping[str, Any]:
    try:
        document = yaml.safe_load(path.read_text())
    except yaml.YAMLError as error:
        raise KubeconfigError(f"{path} is not valid YAML: {error}") from error
    if not isinstance(document, Mapping):
        raise KubeconfigError(f"{path} is not a kubeconfig (no mapping at the top)")
    return document


def _named(document: Mapping[str, Any], section: str, name: str, path: Path) -> Mapping[str, Any]:
    """The body of the entry `name` of a kubeconfig list such as `clusters`, under its inner key (`cluster`)."""
    inner = section[:-1]
    for entry in document.get(section) or []:
        if isinstance(entry, Mapping) and entry.get("name") == name:
            body = entry.get(inner) or {}
            if not isinstance(body, Mapping):
                raise KubeconfigError(f"{path}: {inner} {name!r} is not a mapping")
            return body
    raise KubeconfigError(f"{path}: the current context names {inner} {name!r}, which is not in {section}")


def _current_context(document: Mapping[str, Any], path: Path) -> _Context:
    name = document.get("current-context")
    if not name:
        raise KubeconfigError(f"{path} has no current-context (kubectl config use-context NAME sets one)")
    context = _named(document, "contexts", str(name), path)
    cluster_name = context.get("cluster")
    if not cluster_name:
        raise KubeconfigError(f"{path}: context {name!r} names no cluster")
    user_name = context.get("user")
    return _Context(
        cluster=_named(document, "clusters", str(cluster_name), path),
        # A context without a user connects anonymously.
        user=_named(document, "users", str(user_name), path) if user_name else {},
        namespace=str(context.get("namespace") or DEFAULT_NAMESPACE),
    )


def _file_or_data(section: Mapping[str, Any], key: str, base: Path, path: Path) -> tuple[str | None, str | None]:
    """(file, data) of a kubeconfig pair such as certificate-authority / certificate-authority-data. The data,
    base64 in the kubeconfig, comes back as text and wins over the file (as in kubectl); a relative file is relative
    to the kubeconfig's directory."""
    data = section.get(f"{key}-data")
    if data:
        try:
            return None, base64.b64decode(str(data), validate=True).decode()
        except (binascii.Error, UnicodeDecodeError) as error:
            raise KubeconfigError(f"{path}: {key}-data is not base64 of PEM text") from error
    name = section.get(key)
    if name:
        return str(base / Path(str(name)).expanduser()), None
    return None, None


def settings_from_kubeconfig(path: Path) -> ConnectionSettings:
    document = _read(path)
    context = _current_context(document, path)
    user = context.user
    if user.get("exec") or user.get("auth-provider"):
        return settings_from_plugin(path, context.namespace)
    cluster = context.cluster
    server = cluster.get("server")
    if not server:
        raise KubeconfigError(f"{path}: the current context's cluster has no server")
    base = path.parent
    ca_file, ca_data = _file_or_data(cluster, "certificate-authority", base, path)
    cert_file, cert_data = _file_or_data(user, "client-certificate", base, path)
    key_file, key_data = _file_or_data(user, "client-key", base, path)
    if bool(cert_file or cert_data) != bool(key_file or key_data):
        raise KubeconfigError(f"{path}: the user has a client certificate without its key, or a key without one")
    token_file = user.get("tokenFile")
    return ConnectionSettings(
        server=str(server),
        ca_file=ca_file,
        ca_data=ca_data,
        client_cert_file=cert_file,
        client_cert_data=cert_data,
        client_key_file=key_file,
        client_key_data=key_data,
        token=str(user["token"]) if user.get("token") else None,
        token_file=str(base / Path(str(token_file)).expanduser()) if token_file else None,
        insecure=bool(cluster.get("insecure-skip-tls-verify")),
        namespace=context.namespace,
    )


def settings_from_plugin(path: Path, namespace: str) -> ConnectionSettings:
    """Credentials from an exec or auth-provider plugin, obtained by the kubernetes package's own loader.

    This imports the kubernetes package (~30 MiB of resident memory, more once its models load): the price of cloud
    kubeconfigs (EKS, GKE, AKS, OIDC), whose plugins only it knows how to run. Every other kubeconfig is read above
    without it. Its loader writes any -data to temporary files of its own, removed when the process exits.
    """
    import kubernetes.client
    import kubernetes.config

    configuration = kubernetes.client.Configuration()
    try:
        kubernetes.config.load_kube_config(config_file=str(path), client_configuration=configuration)
    except kubernetes.config.ConfigException as error:
        raise KubeconfigError(f"{path}: {error}") from error
    # The client keeps the token as an Authorization value, "Bearer <token>"; the key's name changed in 36.0.1.
    header = configuration.get_api_key_with_prefix("BearerToken") or configuration.get_api_key_with_prefix(
        "authorization"
    )
    scheme, _, credential = str(header or "").partition(" ")
    token = credential if credential and scheme.lower() == "bearer" else (header or None)
    return ConnectionSettings(
        server=str(configuration.host),
        ca_file=configuration.ssl_ca_cert or None,
        client_cert_file=configuration.cert_file or None,
        client_key_file=configuration.key_file or None,
        token=token,
        insecure=not configuration.verify_ssl,
        namespace=namespace,
        plugin_kubeconfig=str(path),
    )


# --- the token to send ------------------------------------------------------------------------------------------------


class BearerToken:
    """The token of one set of settings, kept current. Thread-safe.

    A token file is read again every TOKEN_REREAD_SECONDS (bound service-account tokens rotate in place) and at once
    after the server answered 401; a plugin's credentials are fetched again after a 401 (they expire: EKS tokens
    after 15 minutes). A static token stays as it is.
    """

    def __init__(self, settings: ConnectionSettings, clock: Callable[[], float] = time.monotonic) -> None:
        self._settings = settings
        self._clock = clock
        self._lock = threading.Lock()
        self._token = settings.token
        self._read_at: float | None = None
        self._stale = False

    def value(self) -> str | None:
        with self._lock:
            if self._settings.token_file:
                due = self._read_at is None or self._clock() - self._read_at >= TOKEN_REREAD_SECONDS
                if due or self._stale:
                    self._token = Path(self._settings.token_file).read_text().strip()
                    self._read_at = self._clock()
            elif self._settings.plugin_kubeconfig and self._stale:
                self._token = settings_from_plugin(
                    Path(self._settings.plugin_kubeconfig), self._settings.namespace
                ).token
            self._stale = False
            return self._token

    def rejected(self) -> None:
        """The API server answered 401 Unauthorized: fetch the token again before the next request."""
        with self._lock:
            self._stale = True
