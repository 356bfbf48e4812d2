"""The connection settings: kubeconfig files (paths, data, tokens, merged lists, server name, proxy), the in-cluster
account, kopf's login. Exec plugins have their own tests (test_exec_plugin.py)."""

from __future__ import annotations

import asyncio
import base64
import importlib.util
import json
import os
import ssl
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from modeldeploy.kube.config import (
    ConnectionSettings,
    Credentials,
    KubeconfigError,
    current_namespace,
    kubeconfig_paths,
    load_settings,
    settings_from_kubeconfig,
)

from .tls import SERVER_NAME, ConnectProxy, FakeApiServer, Pki, server_tls

SERVER = "https://127.0.0.1:6443"


def b64(path: Path) -> str:
    return base64.b64encode(path.read_bytes()).decode()


def write_kubeconfig(
    path: Path,
    cluster: dict[str, Any] | None = None,
    user: dict[str, Any] | None = None,
    namespace: str | None = None,
    current: str | None = "work",
) -> Path:
    context: dict[str, Any] = {"cluster": "c", "user": "u"}
    if namespace:
        context["namespace"] = namespace
    document: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {"name": "other", "cluster": {"server": "https://elsewhere"}},
            {"name": "c", "cluster": cluster or {"server": SERVER}},
        ],
        "users": [{"name": "u", "user": user or {}}],
        "contexts": [{"name": "work", "context": context}],
    }
    if current is not None:
        document["current-context"] = current
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(document))
    return path


# --- kubeconfig files -------------------------------------------------------------------------------------------------


def test_certificates_by_path(tmp_path: Path, pki: Pki) -> None:
    path = write_kubeconfig(
        tmp_path / "config",
        cluster={"server": SERVER, "certificate-authority": str(pki.ca_cert)},
        user={"client-certificate": str(pki.client_cert), "client-key": str(pki.client_key)},
        namespace="team-a",
    )
    assert settings_from_kubeconfig(path) == ConnectionSettings(
        server=SERVER,
        ca_file=str(pki.ca_cert),
        client_cert_file=str(pki.client_cert),
        client_key_file=str(pki.client_key),
        namespace="team-a",
    )


def test_relative_paths_are_relative_to_the_kubeconfig(tmp_path: Path) -> None:
    path = write_kubeconfig(
        tmp_path / "configs" / "config",
        cluster={"server": SERVER, "certificate-authority": "pki/ca.crt"},
        user={"client-certificate": "pki/me.crt", "client-key": "../keys/me.key", "tokenFile": "token"},
    )
    settings = settings_from_kubeconfig(path)
    assert settings.ca_file == str(tmp_path / "configs" / "pki" / "ca.crt")
    assert settings.client_cert_file == str(tmp_path / "configs" / "pki" / "me.crt")
    assert settings.client_key_file == str(tmp_path / "configs" / ".." / "keys" / "me.key")
    assert settings.token_file == str(tmp_path / "configs" / "token")


def test_certificates_by_data(tmp_path: Path, pki: Pki) -> None:
    path = write_kubeconfig(
        tmp_path / "config",
        cluster={"server": SERVER, "certificate-authority-data": b64(pki.ca_cert)},
        user={"client-certificate-data": b64(pki.client_cert), "client-key-data": b64(pki.client_key)},
    )
    settings = settings_from_kubeconfig(path)
    assert settings.ca_data == pki.ca_cert.read_text()
    assert settings.client_cert_data == pki.client_cert.read_text()
    assert settings.client_key_data == pki.client_key.read_text()
    assert (settings.ca_file, settings.client_cert_file, settings.client_key_file) == (None, None, None)
    assert settings.namespace == "default"
    # Usable as they are: the client certificate and key load into an SSL context.
    assert settings.ssl_context().verify_mode == ssl.CERT_REQUIRED


def test_data_wins_over_a_file(tmp_path: Path, pki: Pki) -> None:
    cluster = {"server": SERVER, "certificate-authority": "missing.crt", "certificate-authority-data": b64(pki.ca_cert)}
    settings = settings_from_kubeconfig(write_kubeconfig(tmp_path / "config", cluster=cluster))
    assert (settings.ca_file, settings.ca_data) == (None, pki.ca_cert.read_text())


def test_data_that_is_not_base64_is_an_error(tmp_path: Path) -> None:
    path = write_kubeconfig(
        tmp_path / "config", cluster={"server": SERVER, "certificate-authority-data": "not base64!"}
    )
    with pytest.raises(KubeconfigError, match="certificate-authority-data is not base64"):
        settings_from_kubeconfig(path)


def test_a_certificate_without_its_key_is_an_error(tmp_path: Path, pki: Pki) -> None:
    path = write_kubeconfig(tmp_path / "config", user={"client-certificate": str(pki.client_cert)})
    with pytest.raises(KubeconfigError, match="without its key"):
        settings_from_kubeconfig(path)


def test_token_and_insecure(tmp_path: Path) -> None:
    path = write_kubeconfig(
        tmp_path / "config", cluster={"server": SERVER, "insecure-skip-tls-verify": True}, user={"token": "abc"}
    )
    settings = settings_from_kubeconfig(path)
    assert (settings.token, settings.token_file, settings.insecure) == ("abc", None, True)
    assert "abc" not in repr(settings)  # never in a log line
    context = settings.ssl_context()
    assert (context.verify_mode, context.check_hostname) == (ssl.CERT_NONE, False)


def test_token_file(tmp_path: Path) -> None:
    (tmp_path / "token").write_text("from-file\n")
    path = write_kubeconfig(tmp_path / "config", user={"tokenFile": str(tmp_path / "token")})
    settings = settings_from_kubeconfig(path)
    assert settings.token_file == str(tmp_path / "token")
    assert Credentials(settings).token() == "from-file"


def test_a_token_file_wins_over_a_token(tmp_path: Path) -> None:
    (tmp_path / "token").write_text("from-file")
    settings = settings_from_kubeconfig(
        write_kubeconfig(tmp_path / "config", user={"token": "inline", "tokenFile": "token"})
    )
    assert Credentials(settings).token() == "from-file"


def test_a_context_without_a_user_is_anonymous(tmp_path: Path) -> None:
    path = tmp_path / "config"
    path.write_text(
        yaml.safe_dump(
            {
                "clusters": [{"name": "c", "cluster": {"server": SERVER}}],
                "contexts": [{"name": "anon", "context": {"cluster": "c"}}],
                "current-context": "anon",
            }
        )
    )
    assert settings_from_kubeconfig(path) == ConnectionSettings(server=SERVER)


def test_missing_current_context_is_a_clear_error(tmp_path: Path) -> None:
    path = write_kubeconfig(tmp_path / "config", current=None)
    with pytest.raises(KubeconfigError, match=r"config has no current-context \(kubectl config use-context"):
        settings_from_kubeconfig(path)


@pytest.mark.parametrize(
    ("current", "message"),
    [("nowhere", "names context 'nowhere', which is not in contexts"), ("", "has no current-context")],
)
def test_a_current_context_that_is_not_there(tmp_path: Path, current: str, message: str) -> None:
    with pytest.raises(KubeconfigError, match=message):
        settings_from_kubeconfig(write_kubeconfig(tmp_path / "config", current=current))


def test_a_cluster_without_server_is_an_error(tmp_path: Path) -> None:
    path = write_kubeconfig(tmp_path / "config", cluster={"certificate-authority": "ca.crt"})
    with pytest.raises(KubeconfigError, match="has no server"):
        settings_from_kubeconfig(path)


def test_not_yaml_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "config"
    path.write_text("clusters: [\n")
    with pytest.raises(KubeconfigError, match="not valid YAML"):
        settings_from_kubeconfig(path)


# --- which kubeconfig, or the in-cluster account ----------------------------------------------------------------------


def test_kubeconfig_paths_are_the_list_without_empty_entries(tmp_path: Path) -> None:
    env = {"KUBECONFIG": f"::{tmp_path / 'a'}::{tmp_path / 'b'}:", "HOME": str(tmp_path)}
    assert kubeconfig_paths(env) == [tmp_path / "a", tmp_path / "b"]


@pytest.mark.parametrize("value", [None, "", "::"])
def test_kubeconfig_paths_default_to_the_home_directory(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, value: str | None
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    env = {} if value is None else {"KUBECONFIG": value}
    assert kubeconfig_paths(env) == [tmp_path / ".kube" / "config"]


def service_account(directory: Path, namespace: str | None = "operators") -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "token").write_text("sa-token\n")
    (directory / "ca.crt").write_text("")
    if namespace is not None:
        (directory / "namespace").write_text(namespace)
    return directory


def test_in_cluster_without_a_kubeconfig(tmp_path: Path) -> None:
    accounts = service_account(tmp_path / "sa")
    env = {
        "KUBECONFIG": str(tmp_path / "absent"),
        "KUBERNETES_SERVICE_HOST": "10.0.0.1",
        "KUBERNETES_SERVICE_PORT": "443",
    }
    settings = load_settings(env, service_account_dir=accounts)
    assert settings == ConnectionSettings(
        server="https://10.0.0.1:443",
        ca_file=str(accounts / "ca.crt"),
        token_file=str(accounts / "token"),
        namespace="operators",
    )
    assert Credentials(settings).token() == "sa-token"
    assert current_namespace(env, service_account_dir=accounts) == "operators"


def test_in_cluster_over_ipv6(tmp_path: Path) -> None:
    env = {
        "KUBECONFIG": str(tmp_path / "absent"),
        "KUBERNETES_SERVICE_HOST": "fd00::1",
        "KUBERNETES_SERVICE_PORT": "6443",
    }
    settings = load_settings(env, service_account_dir=service_account(tmp_path / "sa", namespace=None))
    assert (settings.server, settings.namespace) == ("https://[fd00::1]:6443", "default")


def test_in_cluster_without_a_token_is_an_error(tmp_path: Path) -> None:
    env = {"KUBECONFIG": str(tmp_path / "absent"), "KUBERNETES_SERVICE_HOST": "10.0.0.1"}
    with pytest.raises(KubeconfigError, match="no service-account token"):
        load_settings(env, service_account_dir=tmp_path / "nothing")


def test_a_kubeconfig_wins_over_the_in_cluster_account(tmp_path: Path) -> None:
    path = write_kubeconfig(tmp_path / "config", user={"token": "t"})
    env = {"KUBECONFIG": str(path), "KUBERNETES_SERVICE_HOST": "10.0.0.1"}
    assert load_settings(env, service_account_dir=service_account(tmp_path / "sa")).server == SERVER


def test_neither_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(KubeconfigError, match=r"no kubeconfig at .*absent, and not in a cluster"):
        load_settings({"KUBECONFIG": str(tmp_path / "absent")})


def test_current_namespace(tmp_path: Path) -> None:
    with_namespace = write_kubeconfig(tmp_path / "a", namespace="team-b")
    without = write_kubeconfig(tmp_path / "b")
    broken = write_kubeconfig(tmp_path / "c", current=None)
    assert current_namespace({"KUBECONFIG": str(with_namespace)}) == "team-b"
    assert current_namespace({"KUBECONFIG": str(without)}) == "default"
    assert current_namespace({"KUBECONFIG": str(broken)}) == "default"
    assert current_namespace({"KUBECONFIG": str(tmp_path / "absent")}) == "default"


# --- a KUBECONFIG list, merged as kubectl merges it -------------------------------------------------------------------


def write_yaml(path: Path, document: dict[str, Any]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(document))
    return path


def listed(*paths: Path) -> dict[str, str]:
    return {"KUBECONFIG": os.pathsep.join(str(path) for path in paths)}


def test_the_first_file_that_defines_a_name_wins(tmp_path: Path) -> None:
    first = write_yaml(
        tmp_path / "first",
        {
            "clusters": [{"name": "c", "cluster": {"server": "https://first:6443"}}],
            "contexts": [{"name": "work", "context": {"cluster": "c", "user": "u", "namespace": "from-first"}}],
        },
    )
    second = write_yaml(
        tmp_path / "second",
        {
            "clusters": [{"name": "c", "cluster": {"server": "https://second:6443"}}],
            "users": [{"name": "u", "user": {"token": "from-second"}}],
            "contexts": [{"name": "work", "context": {"cluster": "c", "user": "u", "namespace": "from-second"}}],
            "current-context": "work",
        },
    )
    settings = load_settings(listed(first, second))
    # The cluster and the context of the first file, the user of the second (the first has none by that name),
    # and the current-context of the second (the first sets none).
    assert (settings.server, settings.namespace, settings.token) == ("https://first:6443", "from-first", "from-second")
    assert current_namespace(listed(first, second)) == "from-first"
    # The other order: the second's definitions win.
    assert load_settings(listed(second, first)).server == "https://second:6443"


def test_the_current_context_of_the_first_file_that_sets_one(tmp_path: Path) -> None:
    clusters = [{"name": "a", "cluster": {"server": "https://a"}}, {"name": "b", "cluster": {"server": "https://b"}}]
    contexts = [{"name": "a", "context": {"cluster": "a"}}, {"name": "b", "context": {"cluster": "b"}}]
    unset = write_yaml(tmp_path / "unset", {"clusters": clusters, "contexts": contexts, "current-context": ""})
    to_b = write_yaml(tmp_path / "to-b", {"current-context": "b"})
    to_a = write_yaml(tmp_path / "to-a", {"current-context": "a"})
    assert load_settings(listed(unset, to_b, to_a)).server == "https://b"
    assert load_settings(listed(to_a, unset, to_b)).server == "https://a"


def test_missing_files_and_empty_entries_in_the_list_are_skipped(tmp_path: Path) -> None:
    path = write_kubeconfig(tmp_path / "config", user={"token": "t"}, namespace="team-e")
    env = {"KUBECONFIG": os.pathsep.join(["", str(tmp_path / "missing"), "", str(path), ""])}
    assert load_settings(env).server == SERVER
    assert current_namespace(env) == "team-e"


def test_a_list_of_missing_files_is_no_kubeconfig(tmp_path: Path) -> None:
    env = listed(tmp_path / "one", tmp_path / "two")
    with pytest.raises(KubeconfigError, match=r"no kubeconfig at .*one, .*two, and not in a cluster"):
        load_settings(env)
    env["KUBERNETES_SERVICE_HOST"] = "10.0.0.1"
    assert load_settings(env, service_account_dir=service_account(tmp_path / "sa")).server == "https://10.0.0.1:443"


def test_relative_paths_are_relative_to_the_file_that_defined_them(tmp_path: Path) -> None:
    clusters = write_yaml(
        tmp_path / "clusters" / "config",
        {"clusters": [{"name": "c", "cluster": {"server": SERVER, "certificate-authority": "ca.crt"}}]},
    )
    users = write_yaml(
        tmp_path / "users" / "config",
        {
            "users": [{"name": "u", "user": {"client-certificate": "me.crt", "client-key": "me.key"}}],
            "contexts": [{"name": "work", "context": {"cluster": "c", "user": "u"}}],
            "current-context": "work",
        },
    )
    settings = load_settings(listed(users, clusters))
    assert settings.ca_file == str(tmp_path / "clusters" / "ca.crt")
    assert (settings.client_cert_file, settings.client_key_file) == (
        str(tmp_path / "users" / "me.crt"),
        str(tmp_path / "users" / "me.key"),
    )


def test_an_empty_file_in_the_list_is_an_empty_config(tmp_path: Path) -> None:
    (tmp_path / "empty").write_text("")
    path = write_kubeconfig(tmp_path / "config")
    assert load_settings(listed(tmp_path / "empty", path)).server == SERVER


def test_a_name_missing_from_every_file_names_the_files(tmp_path: Path) -> None:
    first = write_yaml(tmp_path / "first", {"contexts": [{"name": "work", "context": {"cluster": "gone"}}]})
    second = write_yaml(tmp_path / "second", {"current-context": "work"})
    with pytest.raises(KubeconfigError, match=r"files .*first, .*second: context 'work' names cluster 'gone'"):
        load_settings(listed(first, second))


def test_a_broken_file_in_the_list_is_an_error(tmp_path: Path) -> None:
    path = write_kubeconfig(tmp_path / "config")
    (tmp_path / "broken").write_text("clusters: [\n")
    with pytest.raises(KubeconfigError, match="broken is not valid YAML"):
        load_settings(listed(path, tmp_path / "broken"))


# --- tls-server-name and proxy-url ------------------------------------------------------------------------------------


def test_tls_server_name_and_proxy_url(tmp_path: Path) -> None:
    cluster = {"server": SERVER, "tls-server-name": "api.internal", "proxy-url": "http://proxy.internal:3128"}
    settings = settings_from_kubeconfig(write_kubeconfig(tmp_path / "config", cluster=cluster))
    assert (settings.tls_server_name, settings.proxy_url) == ("api.internal", "http://proxy.internal:3128")


@pytest.mark.parametrize("proxy", ["socks5://user:hunter2@proxy:1080", "socks5h://proxy:1080", "ftp://proxy"])
def test_a_proxy_other_than_http_or_https_is_refused(tmp_path: Path, proxy: str) -> None:
    path = write_kubeconfig(tmp_path / "config", cluster={"server": SERVER, "proxy-url": proxy})
    with pytest.raises(
        KubeconfigError, match=r"the cluster's proxy-url .* is not supported: only http:// and https://"
    ):
        settings_from_kubeconfig(path)
    with pytest.raises(KubeconfigError) as raised:
        settings_from_kubeconfig(path)
    assert "hunter2" not in str(raised.value)


# --- auth-provider ----------------------------------------------------------------------------------------------------


def test_an_auth_provider_user_is_refused_with_what_to_do_instead(tmp_path: Path) -> None:
    path = write_kubeconfig(tmp_path / "config", user={"auth-provider": {"name": "oidc", "config": {}}})
    with pytest.raises(KubeconfigError) as raised:
        settings_from_kubeconfig(path)
    message = str(raised.value)
    assert "auth-provider 'oidc'" in message
    assert "removed in 1.26" in message
    assert "use an exec credential plugin" in message
    # Only the credentials are refused: the namespace is still read.
    assert current_namespace({"KUBECONFIG": str(path)}) == "default"


# --- the token, kept current ------------------------------------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_token_file_is_read_again_after_a_minute_or_a_401(tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("one")
    clock = Clock()
    token = Credentials(ConnectionSettings(server=SERVER, token_file=str(token_file)), clock=clock)
    assert token.token() == "one"
    token_file.write_text("two")
    clock.now += 59
    assert token.token() == "one"
    clock.now += 1
    assert token.token() == "two"
    token_file.write_text("three")
    token.rejected()
    assert token.token() == "three"


def test_a_static_token_stays(tmp_path: Path) -> None:
    token = Credentials(ConnectionSettings(server=SERVER, token="fixed"))
    token.rejected()
    assert token.token() == "fixed"


# --- kopf's login -----------------------------------------------------------------------------------------------------


def test_kopf_gets_the_same_connection(tmp_path: Path, pki: Pki) -> None:
    from modeldeploy.kube.kopf_login import connection_info

    (tmp_path / "token").write_text("tok\n")
    settings = ConnectionSettings(
        server=SERVER,
        ca_data=pki.ca_cert.read_text(),
        client_cert_data=pki.client_cert.read_text(),
        client_key_file=str(pki.client_key),
        token_file=str(tmp_path / "token"),
        namespace="team-d",
    )
    info = connection_info(settings)
    assert (info.server, info.token, info.default_namespace, info.insecure) == (SERVER, "tok", "team-d", False)
    assert (info.ca_path, info.certificate_path, info.private_key_path) == (None, None, str(pki.client_key))
    assert info.as_http_headers() == {"Authorization": "Bearer tok"}
    assert base64.b64decode(info.ca_data or "").decode() == pki.ca_cert.read_text()
    # kopf builds its own SSL context from them: the CA and the client certificate load.
    assert info.as_ssl_context().verify_mode == ssl.CERT_REQUIRED


def _kopf_get(info: Any) -> int:
    """One GET through the aiohttp session kopf itself builds from a login's ConnectionInfo."""
    from kopf._cogs.clients.auth import APIContext

    async def get() -> int:
        context = APIContext(info)
        try:
            async with context.session.get(info.server + "/version") as response:
                return response.status
        finally:
            await context.close()

    return asyncio.run(get())


def test_kopf_connects_with_the_tls_server_name(pki: Pki) -> None:
    import aiohttp

    from modeldeploy.kube.kopf_login import connection_info

    fake = FakeApiServer(tls=server_tls(pki, require_client_certificate=False, named=True)).start()
    try:
        named = ConnectionSettings(server=fake.url, ca_file=str(pki.ca_cert), tls_server_name=SERVER_NAME)
        assert _kopf_get(connection_info(named)) == 200
        unnamed = ConnectionSettings(server=fake.url, ca_file=str(pki.ca_cert))
        with pytest.raises(aiohttp.ClientConnectorCertificateError):
            _kopf_get(connection_info(unnamed))
        assert len(fake.requests) == 1
    finally:
        fake.stop()


def test_kopf_goes_through_the_proxy(pki: Pki) -> None:
    from modeldeploy.kube.kopf_login import connection_info

    fake = FakeApiServer(tls=server_tls(pki)).start()
    proxy = ConnectProxy().start()
    try:
        settings = ConnectionSettings(
            server=fake.url,
            ca_file=str(pki.ca_cert),
            client_cert_file=str(pki.client_cert),
            client_key_file=str(pki.client_key),
            proxy_url=proxy.url,
        )
        info = connection_info(settings)
        assert info.proxy_url == proxy.url
        assert _kopf_get(info) == 200
        assert proxy.tunnels == [(fake.url.removeprefix("https://"), None)]
        assert fake.requests[0].client_certificate is not None
    finally:
        proxy.stop()
        fake.stop()


def test_kopf_would_hand_a_bearer_token_to_the_proxy_so_that_is_refused(pki: Pki) -> None:
    """The reason for the refusal, shown: given a ConnectionInfo with a token and a proxy, kopf's aiohttp session
    sends the token to the proxy in the CONNECT request."""
    from modeldeploy.kube.kopf_login import connection_info, kopf

    fake = FakeApiServer(tls=server_tls(pki, require_client_certificate=False)).start()
    proxy = ConnectProxy().start()
    try:
        leaky = kopf.ConnectionInfo(server=fake.url, ca_path=str(pki.ca_cert), token="t", proxy_url=proxy.url)
        assert _kopf_get(leaky) == 200
        assert proxy.tunnels == [(fake.url.removeprefix("https://"), "Bearer t")]

        settings = ConnectionSettings(server=fake.url, ca_file=str(pki.ca_cert), token="t", proxy_url=proxy.url)
        with pytest.raises(KubeconfigError, match="would send the token to the proxy as well"):
            connection_info(settings)
        with_password = ConnectionSettings(server=fake.url, proxy_url=proxy.url.replace("//", "//me:pw@"))
        with pytest.raises(KubeconfigError, match="user and password, which kopf's HTTP client does not send"):
            connection_info(with_password)
    finally:
        proxy.stop()
        fake.stop()


def test_kopf_has_one_login_and_it_is_ours() -> None:
    import kopf

    from modeldeploy import main

    handlers = kopf.get_default_registry()._activities.get_all_handlers()
    logins = [handler.fn for handler in handlers if str(handler.activity.value) == "authentication"]
    assert logins == [main.login]


@pytest.mark.parametrize("credentials", ["token", "exec"])
def test_the_operator_imports_no_kubernetes_client(tmp_path: Path, credentials: str) -> None:
    """In a fresh interpreter (other tests import the package): importing the operator's modules, logging in (which
    runs an exec plugin) and making the client import neither `kubernetes` nor kopf's other client libraries."""
    user: dict[str, Any] = {"token": "t"}
    if credentials == "exec":
        plugin = tmp_path / "plugin.py"
        plugin.write_text(
            "import json\nprint(json.dumps({'apiVersion': 'client.authentication.k8s.io/v1', "
            "'kind': 'ExecCredential', 'status': {'token': 'from-plugin'}}))\n"
        )
        v1 = "client.authentication.k8s.io/v1"
        user = {
            "exec": {"apiVersion": v1, "command": sys.executable, "args": [str(plugin)], "interactiveMode": "Never"}
        }
    path = write_kubeconfig(tmp_path / "config", user=user)
    code = (
        "import json, sys\n"
        "import modeldeploy.main, modeldeploy.controller.queue, modeldeploy.controller.reconcile\n"
        "import modeldeploy.kube.client, modeldeploy.cli.main\n"
        "from modeldeploy.kube.client import Kube\n"
        "from modeldeploy.kube.config import load_settings\n"
        "token = modeldeploy.main.login().token\n"
        "Kube(load_settings(), pool_size=1)\n"
        "clients = ('kubernetes', 'kubernetes_asyncio', 'pykube')\n"
        "print(json.dumps([token, sorted(name for name in sys.modules if name.split('.')[0] in clients)]))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        env={"KUBECONFIG": str(path), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == ["from-plugin" if credentials == "exec" else "t", []]
    # No client library is installed beside the operator at all: none of its dependencies brings one, so kopf
    # cannot import one either (a dependency that brought one back would cost ~30 MiB and fail here).
    missing = [name for name in ("kubernetes", "kubernetes_asyncio", "pykube") if importlib.util.find_spec(name)]
    assert missing == []
