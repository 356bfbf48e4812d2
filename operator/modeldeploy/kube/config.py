"""Where the API server is and how to prove who we are: the kubeconfig's current context, or the pod's service account.

Read without the `kubernetes` package, whose import alone costs ~30 MiB of resident memory, and covering what kubectl
reads for one context: a KUBECONFIG list of files merged as kubectl merges them, certificates and keys by file or
data, tokens and token files, tls-server-name, proxy-url (http and https proxies) and exec credential plugins.
auth-provider users are refused: kubectl itself dropped them in 1.26.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import dataclasses
import os
import ssl
import tempfile
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from modeldeploy.kube import exec_plugin
from modeldeploy.kube.exec_plugin import Credential, ExecPlugin

DEFAULT_NAMESPACE = "default"
SERVICE_ACCOUNT_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")
TOKEN_REREAD_SECONDS = 60.0
"""How long a token read from a file is used before the file is read again: kubelet rotates bound service-account
tokens in place, well before they expire."""
PROXY_SCHEMES = ("http", "https")
EXEC_CLUSTER_EXTENSION = "client.authentication.k8s.io/exec"
"""The cluster extension whose content an exec plugin receives as spec.cluster.config."""


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
    tls_server_name: str | None = None
    """The name sent for SNI and checked against the server's certificate instead of the host of `server`."""
    proxy_url: str | None = None
    """An http:// or https:// proxy that the connection is tunnelled through (CONNECT)."""
    exec_plugin: ExecPlugin | None = None
    """Credentials come from this plugin, run again when they expire and after a 401; they win over token and
    client certificate."""
    namespace: str = DEFAULT_NAMESPACE

    def ssl_context(self, credential: Credential | None = None) -> ssl.SSLContext:
        """Verifies the server against ca_file/ca_data (or the system's CAs), as tls_server_name if set, and presents
        the client certificate: the credential's (from an exec plugin) if it has one, else the settings'."""
        context = ServerNameContext(ssl.PROTOCOL_TLS_CLIENT)
        context.server_name = self.tls_server_name
        if self.ca_file or self.ca_data:
            context.load_verify_locations(cafile=self.ca_file, cadata=self.ca_data)
        else:
            context.load_default_certs()
        if self.insecure:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        if credential is not None and credential.client_cert_data:
            _load_client_certificate(context, None, credential.client_cert_data, None, credential.client_key_data)
        elif self.client_cert_file or self.client_cert_data:
            _load_client_certificate(
                context, self.client_cert_file, self.client_cert_data, self.client_key_file, self.client_key_data
            )
        return context

    def proxy_ssl_context(self) -> ssl.SSLContext:
        """For an https:// proxy: the system's CAs and the cluster's CA (client-go checks the proxy with the
        cluster's TLS settings; a proxy with a public certificate passes too). insecure-skip-tls-verify applies to
        the proxy as well, as in client-go."""
        context = ssl.create_default_context()
        if self.ca_file or self.ca_data:
            context.load_verify_locations(cafile=self.ca_file, cadata=self.ca_data)
        if self.insecure:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        return context


class ServerNameContext(ssl.SSLContext):
    """An SSL context that, when `server_name` is set, sends it for SNI and checks the certificate against it,
    whatever host the caller connects to. Both urllib3 and asyncio (kopf's aiohttp) hand the host they connect to
    down to wrap_socket or wrap_bio, so this is the one place where tls-server-name takes effect for both."""

    server_name: str | None = None

    def wrap_socket(self, sock: Any, *args: Any, **kwargs: Any) -> ssl.SSLSocket:
        if self.server_name is not None:
            if len(args) >= 4:  # server_side, do_handshake_on_connect, suppress_ragged_eofs, server_hostname
                args = (*args[:3], self.server_name, *args[4:])
            else:
                kwargs["server_hostname"] = self.server_name
        return super().wrap_socket(sock, *args, **kwargs)

    def wrap_bio(self, incoming: ssl.MemoryBIO, outgoing: ssl.MemoryBIO, *args: Any, **kwargs: Any) -> ssl.SSLObject:
        if self.server_name is not None:
            if len(args) >= 2:  # server_side, server_hostname, session given by position
                args = (args[0], self.server_name, *args[2:])
            else:
                kwargs["server_hostname"] = self.server_name
        return super().wrap_bio(incoming, outgoing, *args, **kwargs)


def _load_client_certificate(
    context: ssl.SSLContext, cert_file: str | None, cert_data: str | None, key_file: str | None, key_data: str | None
) -> None:
    with _as_file(cert_file, cert_data) as certificate, _as_file(key_file, key_data) as key:
        if certificate is None:
            raise KubeconfigError("a client key without a client certificate")
        context.load_cert_chain(certificate, key)


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


# --- which files ------------------------------------------------------------------------------------------------------


def kubeconfig_paths(env: Mapping[str, str] | None = None) -> list[Path]:
    """The files of $KUBECONFIG (a list separated by os.pathsep, empty entries ignored), else ~/.kube/config."""
    env = os.environ if env is None else env
    paths = [Path(entry).expanduser() for entry in env.get("KUBECONFIG", "").split(os.pathsep) if entry]
    return paths or [Path("~/.kube/config").expanduser()]


def load_settings(
    env: Mapping[str, str] | None = None, service_account_dir: Path = SERVICE_ACCOUNT_DIR
) -> ConnectionSettings:
    """The kubeconfig's current context when a kubeconfig file exists, else the pod's service account."""
    env = os.environ if env is None else env
    paths = kubeconfig_paths(env)
    existing = [path for path in paths if path.is_file()]
    if existing:
        return settings_from_kubeconfig(*existing)
    if env.get("KUBERNETES_SERVICE_HOST"):
        return in_cluster_settings(env, service_account_dir)
    named = ", ".join(str(path) for path in paths)
    raise KubeconfigError(f"no kubeconfig at {named}, and not in a cluster (KUBERNETES_SERVICE_HOST is not set)")


def current_namespace(env: Mapping[str, str] | None = None, service_account_dir: Path = SERVICE_ACCOUNT_DIR) -> str:
    """The namespace kubectl would use: the current context's, or the service account's; "default" without either.
    Never runs a credential plugin."""
    env = os.environ if env is None else env
    existing = [path for path in kubeconfig_paths(env) if path.is_file()]
    try:
        if existing:
            return _current_context(Kubeconfig.read(existing)).namespace
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


# --- the kubeconfig, merged -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Named:
    """One entry of a kubeconfig's clusters, users or contexts, and the file it came from: relative paths in it are
    relative to that file's directory."""

    body: Mapping[str, Any]
    source: Path


@dataclass(frozen=True)
class Kubeconfig:
    """One or more kubeconfig files merged as kubectl merges a KUBECONFIG list: for each cluster, user and context
    name the first file that defines it wins, and so does the first file that sets current-context."""

    sources: tuple[Path, ...]
    clusters: Mapping[str, Named]
    users: Mapping[str, Named]
    contexts: Mapping[str, Named]
    current_context: str | None

    @classmethod
    def read(cls, paths: Sequence[Path]) -> Kubeconfig:
        sections: dict[str, dict[str, Named]] = {"clusters": {}, "users": {}, "contexts": {}}
        current: str | None = None
        for path in paths:
            document = _read(path)
            for section, entries in sections.items():
                inner = section[:-1]
                for entry in document.get(section) or []:
                    if not isinstance(entry, Mapping) or not entry.get("name"):
                        continue
                    name = str(entry["name"])
                    body = entry.get(inner) or {}
                    if not isinstance(body, Mapping):
                        raise KubeconfigError(f"{path}: {inner} {name!r} is not a mapping")
                    entries.setdefault(name, Named(body, path))
            if not current and document.get("current-context"):
                current = str(document["current-context"])
        return cls(tuple(paths), sections["clusters"], sections["users"], sections["contexts"], current)

    @property
    def where(self) -> str:
        """The files, for messages."""
        return (
            str(self.sources[0])
            if len(self.sources) == 1
            else f"the kubeconfig files {', '.join(map(str, self.sources))}"
        )


def _read(path: Path) -> Mapping[str, Any]:
    try:
        document = yaml.safe_load(path.read_text())
    except yaml.YAMLError as error:
        raise KubeconfigError(f"{path} is not valid YAML: {error}") from error
    if document is None:
        return {}  # an empty file: kubectl takes it as an empty config
    if not isinstance(document, Mapping):
        raise KubeconfigError(f"{path} is not a kubeconfig (no mapping at the top)")
    return document


@dataclass(frozen=True)
class _Context:
    cluster: Named
    user: Named | None
    namespace: str


def _current_context(config: Kubeconfig) -> _Context:
    name = config.current_context
    if not name:
        raise KubeconfigError(f"{config.where} has no current-context (kubectl config use-context NAME sets one)")
    context = _lookup(config, config.contexts, "context", name, "the current-context")
    cluster_name = context.body.get("cluster")
    if not cluster_name:
        raise KubeconfigError(f"{context.source}: context {name!r} names no cluster")
    user_name = context.body.get("user")
    named_by = f"context {name!r}"
    return _Context(
        cluster=_lookup(config, config.clusters, "cluster", str(cluster_name), named_by),
        # A context without a user connects anonymously.
        user=_lookup(config, config.users, "user", str(user_name), named_by) if user_name else None,
        namespace=str(context.body.get("namespace") or DEFAULT_NAMESPACE),
    )


def _lookup(config: Kubeconfig, entries: Mapping[str, Named], inner: str, name: str, named_by: str) -> Named:
    try:
        return entries[name]
    except KeyError:
        raise KubeconfigError(f"{config.where}: {named_by} names {inner} {name!r}, which is not in {inner}s") from None


def _file_or_data(entry: Named, key: str) -> tuple[str | None, str | None]:
    """(file, data) of a kubeconfig pair such as certificate-authority / certificate-authority-data. The data,
    base64 in the kubeconfig, comes back as text and wins over the file (as in kubectl); a relative file is relative
    to the directory of the kubeconfig file that defined the entry."""
    data = entry.body.get(f"{key}-data")
    if data:
        try:
            return None, base64.b64decode(str(data), validate=True).decode()
        except (binascii.Error, UnicodeDecodeError) as error:
            raise KubeconfigError(f"{entry.source}: {key}-data is not base64 of PEM text") from error
    name = entry.body.get(key)
    if name:
        return _relative(entry, str(name)), None
    return None, None


def _relative(entry: Named, name: str) -> str:
    return str(entry.source.parent / Path(name).expanduser())


def settings_from_kubeconfig(*paths: Path) -> ConnectionSettings:
    """The current context of the kubeconfig files `paths`, merged (see Kubeconfig)."""
    context = _current_context(Kubeconfig.read(paths))
    cluster = context.cluster
    user = context.user or Named({}, cluster.source)
    if user.body.get("auth-provider"):
        provider = user.body["auth-provider"]
        name = provider.get("name") if isinstance(provider, Mapping) else None
        raise KubeconfigError(
            f"{user.source}: the user's credentials come from auth-provider {name or ''!r}, which kubectl removed "
            "in 1.26: use an exec credential plugin instead (gke-gcloud-auth-plugin, kubelogin for Azure and OIDC)"
        )
    server = cluster.body.get("server")
    if not server:
        raise KubeconfigError(f"{cluster.source}: the current context's cluster has no server")
    ca_file, ca_data = _file_or_data(cluster, "certificate-authority")
    cert_file, cert_data = _file_or_data(user, "client-certificate")
    key_file, key_data = _file_or_data(user, "client-key")
    if bool(cert_file or cert_data) != bool(key_file or key_data):
        raise KubeconfigError(f"{user.source}: the user has a client certificate without its key, or a key without one")
    token_file = user.body.get("tokenFile")
    settings = ConnectionSettings(
        server=str(server),
        ca_file=ca_file,
        ca_data=ca_data,
        client_cert_file=cert_file,
        client_cert_data=cert_data,
        client_key_file=key_file,
        client_key_data=key_data,
        token=str(user.body["token"]) if user.body.get("token") else None,
        token_file=_relative(user, str(token_file)) if token_file else None,
        insecure=bool(cluster.body.get("insecure-skip-tls-verify")),
        tls_server_name=str(cluster.body["tls-server-name"]) if cluster.body.get("tls-server-name") else None,
        proxy_url=_proxy_url(cluster),
        namespace=context.namespace,
    )
    if user.body.get("exec"):
        settings = _with_exec_plugin(settings, user, cluster)
    return settings


def _proxy_url(cluster: Named) -> str | None:
    value = cluster.body.get("proxy-url")
    if not value:
        return None
    scheme = urllib.parse.urlsplit(str(value)).scheme.lower()
    if scheme not in PROXY_SCHEMES:
        raise KubeconfigError(
            f"{cluster.source}: the cluster's proxy-url {_without_password(str(value))!r} is not supported: only "
            "http:// and https:// proxies are (socks5 is not)"
        )
    return str(value)


def _without_password(url: str) -> str:
    parts = urllib.parse.urlsplit(url)
    if parts.password is None:
        return url
    return parts._replace(netloc=parts.netloc.replace(f":{parts.password}@", ":***@", 1)).geturl()


def _with_exec_plugin(settings: ConnectionSettings, user: Named, cluster: Named) -> ConnectionSettings:
    """The settings with the user's exec section, checked as kubectl checks it before running anything."""
    section = user.body["exec"]
    where = f"{user.source}: the user's exec"
    if not isinstance(section, Mapping):
        raise KubeconfigError(f"{where} is not a mapping")
    command = str(section.get("command") or "")
    if not command:
        raise KubeconfigError(f"{where} has no command")
    # As in client-go: a command with a path separator is a path, relative to the kubeconfig; a bare name is
    # looked up on PATH when run.
    if os.sep in command and not os.path.isabs(command):
        command = _relative(user, command)
    api_version = str(section.get("apiVersion") or "")
    mode = section.get("interactiveMode")
    if not mode:
        if api_version == "client.authentication.k8s.io/v1":
            raise KubeconfigError(f"{where} has no interactiveMode, which client.authentication.k8s.io/v1 requires")
        mode = "IfAvailable"  # v1beta1's default
    args = section.get("args") or []
    if not isinstance(args, list):
        raise KubeconfigError(f"{where} has args that are not a list")
    env = []
    for variable in section.get("env") or []:
        if not isinstance(variable, Mapping) or not variable.get("name"):
            raise KubeconfigError(f"{where} has an env entry without a name")
        env.append((str(variable["name"]), str(variable.get("value") or "")))
    plugin = ExecPlugin(
        api_version=api_version,
        command=command,
        args=tuple(str(arg) for arg in args),
        env=tuple(env),
        install_hint=str(section["installHint"]) if section.get("installHint") else None,
        interactive_mode=str(mode),
        cluster=_exec_cluster(settings, cluster) if section.get("provideClusterInfo") else None,
    )
    try:
        exec_plugin.check(plugin)
    except exec_plugin.ExecPluginError as error:
        raise KubeconfigError(f"{user.source}: {error}") from error
    return dataclasses.replace(settings, exec_plugin=plugin)


def _exec_cluster(settings: ConnectionSettings, cluster: Named) -> dict[str, Any]:
    """spec.cluster of KUBERNETES_EXEC_INFO (provideClusterInfo), with client-go's field names."""
    info: dict[str, Any] = {"server": settings.server}
    if settings.tls_server_name:
        info["tls-server-name"] = settings.tls_server_name
    if settings.insecure:
        info["insecure-skip-tls-verify"] = True
    ca = settings.ca_data.encode() if settings.ca_data else None
    if ca is None and settings.ca_file:
        try:
            ca = Path(settings.ca_file).read_bytes()
        except OSError as error:
            raise KubeconfigError(f"{cluster.source}: cannot read certificate-authority {settings.ca_file}") from error
    if ca:
        info["certificate-authority-data"] = base64.b64encode(ca).decode()
    if settings.proxy_url:
        info["proxy-url"] = settings.proxy_url
    if cluster.body.get("disable-compression"):
        info["disable-compression"] = True
    for extension in cluster.body.get("extensions") or []:
        if isinstance(extension, Mapping) and extension.get("name") == EXEC_CLUSTER_EXTENSION:
            info["config"] = extension.get("extension")
    return info


# --- what to present --------------------------------------------------------------------------------------------------


class Credentials:
    """The token (and, from an exec plugin, the client certificate) of one set of settings, kept current.
    Thread-safe; a plugin runs once at a time.

    A token file is read again every TOKEN_REREAD_SECONDS (bound service-account tokens rotate in place) and at once
    after the server answered 401. An exec plugin is run when first needed, again once its credential has expired,
    and after a 401. A static token stays as it is.
    """

    def __init__(
        self,
        settings: ConnectionSettings,
        clock: Callable[[], float] = time.time,
        run_plugin: Callable[[ExecPlugin], Credential] = exec_plugin.run,
    ) -> None:
        self._settings = settings
        self._clock = clock
        self._run_plugin = run_plugin
        self._lock = threading.Lock()
        self._token = settings.token
        self._read_at: float | None = None
        self._from_plugin: Credential | None = None
        self._stale = False

    def current(self) -> Credential:
        """What to present now. Raises ExecPluginError when the plugin fails."""
        with self._lock:
            settings = self._settings
            if settings.token_file:
                due = self._read_at is None or self._clock() - self._read_at >= TOKEN_REREAD_SECONDS
                if due or self._stale:
                    self._token = Path(settings.token_file).read_text().strip()
                    self._read_at = self._clock()
            plugin = self._from_plugin
            if settings.exec_plugin is not None and (plugin is None or self._stale or plugin.expired(self._clock())):
                plugin = self._from_plugin = self._run_plugin(settings.exec_plugin)
            self._stale = False
            if plugin is None:
                return Credential(token=self._token)
            return Credential(
                token=plugin.token or self._token,
                client_cert_data=plugin.client_cert_data,
                client_key_data=plugin.client_key_data,
                expires_at=plugin.expires_at,
            )

    def token(self) -> str | None:
        return self.current().token

    def rejected(self) -> None:
        """The API server answered 401 Unauthorized: fetch the credentials again before the next request."""
        with self._lock:
            self._stale = True
