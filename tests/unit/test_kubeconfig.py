"""The connection settings: kubeconfig files (paths, data, tokens, plugins), the in-cluster account, kopf's login."""

from __future__ import annotations

import base64
import json
import ssl
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from modeldeploy.kube import config as kubeconfig
from modeldeploy.kube.config import (
    BearerToken,
    ConnectionSettings,
    KubeconfigError,
    current_namespace,
    kubeconfig_path,
    load_settings,
    settings_from_kubeconfig,
)

from .tls import Pki

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
    assert BearerToken(settings).value() == "from-file"


def test_a_token_file_wins_over_a_token(tmp_path: Path) -> None:
    (tmp_path / "token").write_text("from-file")
    settings = settings_from_kubeconfig(
        write_kubeconfig(tmp_path / "config", user={"token": "inline", "tokenFile": "token"})
    )
    assert BearerToken(settings).value() == "from-file"


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


def test_kubeconfig_path_takes_the_first_file_of_the_list(tmp_path: Path) -> None:
    env = {"KUBECONFIG": f"::{tmp_path / 'a'}:{tmp_path / 'b'}", "HOME": str(tmp_path)}
    assert kubeconfig_path(env) == tmp_path / "a"


def test_kubeconfig_path_defaults_to_the_home_directory(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    assert kubeconfig_path({}) == tmp_path / ".kube" / "config"


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
    assert BearerToken(settings).value() == "sa-token"
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


# --- credential plugins -----------------------------------------------------------------------------------------------


def exec_plugin(directory: Path) -> dict[str, Any]:
    """An exec plugin that answers "token-1", then "token-2"... (one more each time it runs)."""
    script = directory / "plugin.py"
    script.write_text(
        "import json, pathlib\n"
        f"counter = pathlib.Path({str(directory / 'runs')!r})\n"
        "runs = int(counter.read_text()) + 1 if counter.exists() else 1\n"
        "counter.write_text(str(runs))\n"
        "print(json.dumps({'apiVersion': 'client.authentication.k8s.io/v1beta1', 'kind': 'ExecCredential',\n"
        "                  'status': {'token': f'token-{runs}'}}))\n"
    )
    return {
        "exec": {
            "apiVersion": "client.authentication.k8s.io/v1beta1",
            "command": sys.executable,
            "args": [str(script)],
            "interactiveMode": "Never",
        }
    }


def test_an_exec_user_falls_back_to_the_kubernetes_package(tmp_path: Path, pki: Pki) -> None:
    path = write_kubeconfig(
        tmp_path / "config",
        cluster={"server": SERVER, "certificate-authority": str(pki.ca_cert)},
        user=exec_plugin(tmp_path),
        namespace="team-c",
    )
    settings = settings_from_kubeconfig(path)
    assert settings.server == SERVER
    assert settings.token == "token-1"
    assert settings.ca_file == str(pki.ca_cert)
    assert (settings.namespace, settings.plugin_kubeconfig) == ("team-c", str(path))
    assert current_namespace({"KUBECONFIG": str(path)}) == "team-c"
    assert (tmp_path / "runs").read_text() == "1"  # current_namespace() did not run the plugin

    token = BearerToken(settings)
    assert token.value() == "token-1"
    token.rejected()  # a 401: the plugin's token expired
    assert token.value() == "token-2"


def test_an_auth_provider_user_falls_back_too(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[Path, str]] = []

    def fallback(path: Path, namespace: str) -> ConnectionSettings:
        calls.append((path, namespace))
        return ConnectionSettings(server=SERVER, token="from-provider", plugin_kubeconfig=str(path))

    monkeypatch.setattr(kubeconfig, "settings_from_plugin", fallback)
    path = write_kubeconfig(tmp_path / "config", user={"auth-provider": {"name": "oidc", "config": {}}})
    assert settings_from_kubeconfig(path).token == "from-provider"
    assert calls == [(path, "default")]


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
    token = BearerToken(ConnectionSettings(server=SERVER, token_file=str(token_file)), clock=clock)
    assert token.value() == "one"
    token_file.write_text("two")
    clock.now += 59
    assert token.value() == "one"
    clock.now += 1
    assert token.value() == "two"
    token_file.write_text("three")
    token.rejected()
    assert token.value() == "three"


def test_a_static_token_stays(tmp_path: Path) -> None:
    token = BearerToken(ConnectionSettings(server=SERVER, token="fixed"))
    token.rejected()
    assert token.value() == "fixed"


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


def test_kopf_has_one_login_and_it_is_ours() -> None:
    import kopf

    from modeldeploy import main

    handlers = kopf.get_default_registry()._activities.get_all_handlers()
    logins = [handler.fn for handler in handlers if str(handler.activity.value) == "authentication"]
    assert logins == [main.login]


def test_the_operator_imports_no_kubernetes_client(tmp_path: Path) -> None:
    """In a fresh interpreter (other tests import the package): importing the operator's modules, logging in and
    making the client import neither `kubernetes` nor kopf's other client libraries."""
    path = write_kubeconfig(tmp_path / "config", user={"token": "t"})
    code = (
        "import json, sys\n"
        "import modeldeploy.main, modeldeploy.controller.queue, modeldeploy.controller.reconcile\n"
        "import modeldeploy.kube.client, modeldeploy.cli.main\n"
        "from modeldeploy.kube.client import Kube\n"
        "from modeldeploy.kube.config import load_settings\n"
        "modeldeploy.main.login()\n"
        "Kube(load_settings(), pool_size=1)\n"
        "clients = ('kubernetes', 'kubernetes_asyncio', 'pykube')\n"
        "print(json.dumps(sorted(name for name in sys.modules if name.split('.')[0] in clients)))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        env={"KUBECONFIG": str(path), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == []
    # The check itself works: the package is importable once kopf is loaded.
    check = subprocess.run(
        [sys.executable, "-c", "import modeldeploy.main, kubernetes.client, sys; print('kubernetes' in sys.modules)"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert check.stdout.strip() == "True", check.stderr
