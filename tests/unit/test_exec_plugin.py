"""exec credential plugins, run natively: what the kubeconfig says, what the plugin is handed, what it may answer, and
how the client and kopf's login use the credential. Each plugin is a small Python script written by the test."""

from __future__ import annotations

import base64
import json
import ssl
import sys
import textwrap
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from modeldeploy.kube import exec_plugin
from modeldeploy.kube.client import ApiError, Kube
from modeldeploy.kube.config import ConnectionSettings, Credentials, KubeconfigError, settings_from_kubeconfig
from modeldeploy.kube.exec_plugin import Credential, ExecPlugin, ExecPluginError

from .tls import FakeApiServer, Pki, Recorded, Reply, server_tls

V1 = "client.authentication.k8s.io/v1"
V1BETA1 = "client.authentication.k8s.io/v1beta1"
SERVER = "https://127.0.0.1:6443"


def write_plugin(path: Path, body: str) -> Path:
    """An executable Python script at `path`. It counts its runs in `<path>.runs` and has `json`, `os`, `sys` and
    `runs` at hand."""
    path.parent.mkdir(parents=True, exist_ok=True)
    prelude = (
        f"#!{sys.executable}\n"
        "import json, os, pathlib, sys\n"
        f"counter = pathlib.Path({str(path) + '.runs'!r})\n"
        "runs = int(counter.read_text()) + 1 if counter.exists() else 1\n"
        "counter.write_text(str(runs))\n"
    )
    path.write_text(prelude + textwrap.dedent(body))
    path.chmod(0o755)
    return path


def runs(plugin: Path) -> int:
    counter = Path(str(plugin) + ".runs")
    return int(counter.read_text()) if counter.exists() else 0


def token_plugin(path: Path, api_version: str = V1, expiration: str | None = None) -> Path:
    """Answers token-1, token-2... (one more each run), with the given expirationTimestamp."""
    status = "{'token': f'token-{runs}'" + (f", 'expirationTimestamp': {expiration!r}" if expiration else "") + "}"
    return write_plugin(
        path, f"print(json.dumps({{'apiVersion': {api_version!r}, 'kind': 'ExecCredential', 'status': {status}}}))\n"
    )


def kubeconfig(path: Path, exec_section: dict[str, Any], cluster: dict[str, Any] | None = None) -> Path:
    document = {
        "clusters": [{"name": "c", "cluster": cluster or {"server": SERVER}}],
        "users": [{"name": "u", "user": {"exec": exec_section}}],
        "contexts": [{"name": "work", "context": {"cluster": "c", "user": "u", "namespace": "team-x"}}],
        "current-context": "work",
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(document))
    return path


def plugin_of(command: Path | str, **fields: Any) -> ExecPlugin:
    return ExecPlugin(api_version=V1, command=str(command), interactive_mode="Never", **fields)


# --- the kubeconfig's exec section ------------------------------------------------------------------------------------


def test_the_exec_section_is_read_and_nothing_runs_yet(tmp_path: Path) -> None:
    plugin = token_plugin(tmp_path / "bin" / "plugin")
    path = kubeconfig(
        tmp_path / "config",
        {
            "apiVersion": V1,
            "command": str(plugin),
            "args": ["get-token", "--cluster", "prod"],
            "env": [{"name": "AWS_PROFILE", "value": "ops"}],
            "installHint": "install it",
            "interactiveMode": "IfAvailable",
        },
    )
    settings = settings_from_kubeconfig(path)
    assert settings.exec_plugin == ExecPlugin(
        api_version=V1,
        command=str(plugin),
        args=("get-token", "--cluster", "prod"),
        env=(("AWS_PROFILE", "ops"),),
        install_hint="install it",
        interactive_mode="IfAvailable",
    )
    assert settings.namespace == "team-x"
    assert runs(plugin) == 0


def test_a_relative_command_with_a_separator_is_relative_to_the_kubeconfig(tmp_path: Path) -> None:
    path = kubeconfig(
        tmp_path / "kube" / "config", {"apiVersion": V1, "command": "bin/plugin", "interactiveMode": "Never"}
    )
    bare = kubeconfig(tmp_path / "other" / "config", {"apiVersion": V1, "command": "aws", "interactiveMode": "Never"})
    assert settings_from_kubeconfig(path).exec_plugin == plugin_of(tmp_path / "kube" / "bin" / "plugin")
    assert settings_from_kubeconfig(bare).exec_plugin == plugin_of("aws")  # looked up on PATH when run


@pytest.mark.parametrize(
    ("section", "message"),
    [
        ({"apiVersion": V1, "command": "p"}, "has no interactiveMode, which client.authentication.k8s.io/v1 requires"),
        ({"apiVersion": V1, "command": "p", "interactiveMode": "Always"}, "needs a terminal"),
        ({"apiVersion": V1, "command": "p", "interactiveMode": "Sometimes"}, "'Sometimes' is not one of"),
        ({"apiVersion": "client.authentication.k8s.io/v1alpha1", "command": "p"}, "removed from kubectl in 1.24"),
        ({"apiVersion": V1, "interactiveMode": "Never"}, "has no command"),
        ({"apiVersion": V1, "command": "p", "interactiveMode": "Never", "env": [{"value": "x"}]}, "without a name"),
        ({"apiVersion": V1, "command": "p", "interactiveMode": "Never", "args": "--all"}, "args that are not a list"),
    ],
)
def test_what_kubectl_refuses_before_running_anything(tmp_path: Path, section: dict[str, Any], message: str) -> None:
    with pytest.raises(KubeconfigError, match=message):
        settings_from_kubeconfig(kubeconfig(tmp_path / "config", section))


def test_v1beta1_defaults_to_if_available(tmp_path: Path) -> None:
    path = kubeconfig(tmp_path / "config", {"apiVersion": V1BETA1, "command": "p"})
    plugin = settings_from_kubeconfig(path).exec_plugin
    assert plugin is not None
    assert plugin.interactive_mode == "IfAvailable"


# --- running it -------------------------------------------------------------------------------------------------------


def test_args_env_and_exec_info_reach_the_plugin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FROM_THE_OPERATOR", "inherited")
    plugin = write_plugin(
        tmp_path / "plugin",
        """
        seen = {"args": sys.argv[1:], "env": [os.environ.get(n) for n in ("AWS_PROFILE", "FROM_THE_OPERATOR")],
                "info": json.loads(os.environ["KUBERNETES_EXEC_INFO"]), "stdin": sys.stdin.read()}
        print(json.dumps({"apiVersion": seen["info"]["apiVersion"], "kind": "ExecCredential",
                          "status": {"token": json.dumps(seen)}}))
        """,
    )
    credential = exec_plugin.run(plugin_of(plugin, args=("get-token", "a b"), env=(("AWS_PROFILE", "ops"),)))
    assert credential.token is not None
    assert json.loads(credential.token) == {
        "args": ["get-token", "a b"],
        "env": ["ops", "inherited"],
        # No spec.cluster without provideClusterInfo; never interactive.
        "info": {"apiVersion": V1, "kind": "ExecCredential", "spec": {"interactive": False}},
        "stdin": "",
    }
    assert credential.expires_at is None


def test_provide_cluster_info_hands_over_the_cluster(tmp_path: Path, pki: Pki) -> None:
    plugin = write_plugin(
        tmp_path / "plugin",
        """
        info = os.environ["KUBERNETES_EXEC_INFO"]
        print(json.dumps({"apiVersion": json.loads(info)["apiVersion"], "kind": "ExecCredential",
                          "status": {"token": info}}))
        """,
    )
    cluster = {
        "server": "https://10.1.2.3:6443",
        "certificate-authority": str(pki.ca_cert),
        "tls-server-name": "api.internal",
        "proxy-url": "http://proxy.internal:3128",
        "extensions": [
            {"name": "client.authentication.k8s.io/exec", "extension": {"audience": "prod"}},
            {"name": "something-else", "extension": {"ignored": True}},
        ],
    }
    section = {"apiVersion": V1BETA1, "command": str(plugin), "provideClusterInfo": True}
    settings = settings_from_kubeconfig(kubeconfig(tmp_path / "config", section, cluster))
    token = Credentials(settings).token()
    assert token is not None
    assert json.loads(token) == {
        "apiVersion": V1BETA1,
        "kind": "ExecCredential",
        "spec": {
            "interactive": False,
            "cluster": {
                "server": "https://10.1.2.3:6443",
                "tls-server-name": "api.internal",
                "certificate-authority-data": base64.b64encode(pki.ca_cert.read_bytes()).decode(),
                "proxy-url": "http://proxy.internal:3128",
                "config": {"audience": "prod"},
            },
        },
    }


def test_a_missing_command_says_how_to_install_it(tmp_path: Path) -> None:
    plugin = plugin_of(tmp_path / "nowhere", install_hint="Install it with: brew install the-plugin\n")
    with pytest.raises(ExecPluginError, match=r"nowhere' was not found: Install it with: brew install the-plugin$"):
        exec_plugin.run(plugin)
    with pytest.raises(ExecPluginError, match=r"'no-such-plugin-anywhere' was not found$"):
        exec_plugin.run(plugin_of("no-such-plugin-anywhere"))


def test_a_command_that_cannot_be_run(tmp_path: Path) -> None:
    (tmp_path / "not-executable").write_text("#!/bin/sh\n")
    with pytest.raises(ExecPluginError, match="cannot be run: Permission denied"):
        exec_plugin.run(plugin_of(tmp_path / "not-executable"))
    (tmp_path / "not-a-program").write_text("no #! line\n")
    (tmp_path / "not-a-program").chmod(0o755)
    with pytest.raises(ExecPluginError, match="not-a-program' cannot be run: Exec format error"):
        exec_plugin.run(plugin_of(tmp_path / "not-a-program"))


def test_a_failing_plugin_says_what_it_printed_on_stderr(tmp_path: Path) -> None:
    plugin = write_plugin(
        tmp_path / "plugin", "sys.stderr.write('x' * 100000 + 'token expired, run: login')\nsys.exit(3)\n"
    )
    with pytest.raises(ExecPluginError) as raised:
        exec_plugin.run(plugin_of(plugin))
    message = str(raised.value)
    assert "exited with 3: " in message
    assert message.endswith("token expired, run: login")
    assert len(message) < exec_plugin.STDERR_KEPT_BYTES + 200  # the end of stderr only


def test_a_plugin_that_hangs_is_killed_with_its_children(tmp_path: Path) -> None:
    plugin = write_plugin(
        tmp_path / "plugin",
        """
        import subprocess, time
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
        pathlib.Path(str(counter) + ".child").write_text(str(child.pid))
        time.sleep(60)
        """,
    )
    with pytest.raises(ExecPluginError, match="did not finish within 1s"):
        exec_plugin.run(plugin_of(plugin), timeout=1)
    child = int(Path(str(plugin) + ".runs.child").read_text())
    deadline = time.monotonic() + 5
    while not _gone(child):
        assert time.monotonic() < deadline, "the plugin's child outlived it"
        time.sleep(0.02)


def _gone(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return True
    return state == "Z"  # killed, not yet reaped by its new parent


def test_a_plugin_that_prints_too_much_is_stopped(tmp_path: Path) -> None:
    plugin = write_plugin(tmp_path / "plugin", "while True:\n    sys.stdout.write('x' * 65536)\n")
    with pytest.raises(ExecPluginError, match="printed more than 1000 bytes"):
        exec_plugin.run(plugin_of(plugin), limit=1000)


@pytest.mark.parametrize(
    ("output", "message"),
    [
        ("not json", "did not print an ExecCredential \\(not JSON"),
        ('{"kind": "Secret"}', "no kind ExecCredential"),
        (
            f'{{"kind": "ExecCredential", "apiVersion": "{V1BETA1}"}}',
            f"answered apiVersion '{V1BETA1}'.*asked for '{V1}'",
        ),
        (f'{{"kind": "ExecCredential", "apiVersion": "{V1}"}}', "without a status"),
        (f'{{"kind": "ExecCredential", "apiVersion": "{V1}", "status": {{}}}}', "neither a token nor a client"),
        (
            f'{{"kind": "ExecCredential", "apiVersion": "{V1}", "status": {{"clientCertificateData": "c"}}}}',
            "clientCertificateData without clientKeyData",
        ),
        (
            f'{{"kind": "ExecCredential", "apiVersion": "{V1}", "status": {{"token": 5}}}}',
            "status.token is not a string",
        ),
        (
            f'{{"kind": "ExecCredential", "apiVersion": "{V1}", "status": {{"token": "t", '
            '"expirationTimestamp": "soon"}}',
            "'soon' is not an RFC 3339 time",
        ),
        (
            f'{{"kind": "ExecCredential", "apiVersion": "{V1}", "status": {{"token": "t", '
            '"expirationTimestamp": "2030-01-01T00:00:00"}}',
            "has no time zone",
        ),
    ],
)
def test_what_a_plugin_may_not_answer(output: str, message: str) -> None:
    with pytest.raises(ExecPluginError, match=message):
        exec_plugin.parse(plugin_of("p"), output.encode())


def test_an_expiration_timestamp_is_read() -> None:
    output = json.dumps(
        {
            "apiVersion": V1,
            "kind": "ExecCredential",
            "status": {"token": "t", "expirationTimestamp": "2030-01-02T03:04:05Z"},
        }
    )
    credential = exec_plugin.parse(plugin_of("p"), output.encode())
    assert credential.expires_at == datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC).timestamp()
    assert not credential.expired(credential.expires_at - 1)
    assert credential.expired(credential.expires_at)


# --- kept current -----------------------------------------------------------------------------------------------------


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_the_plugin_runs_again_once_its_credential_expired(tmp_path: Path) -> None:
    expiry = datetime(2030, 1, 1, tzinfo=UTC)
    plugin = token_plugin(tmp_path / "plugin", expiration="2030-01-01T00:00:00Z")
    clock = Clock(expiry.timestamp() - 60)
    credentials = Credentials(ConnectionSettings(server=SERVER, exec_plugin=plugin_of(plugin)), clock=clock)
    assert credentials.token() == "token-1"
    clock.now += 59
    assert credentials.token() == "token-1"
    assert runs(plugin) == 1
    clock.now += 1
    assert credentials.token() == "token-2"
    assert credentials.current().expires_at == expiry.timestamp()


def test_without_an_expiration_it_runs_again_only_after_a_401(tmp_path: Path) -> None:
    plugin = token_plugin(tmp_path / "plugin")
    credentials = Credentials(ConnectionSettings(server=SERVER, exec_plugin=plugin_of(plugin)))
    assert [credentials.token() for _ in range(3)] == ["token-1"] * 3
    credentials.rejected()
    assert credentials.token() == "token-2"
    assert runs(plugin) == 2


def test_a_plugin_token_wins_over_a_static_one(tmp_path: Path) -> None:
    settings = ConnectionSettings(server=SERVER, token="static", exec_plugin=plugin_of(token_plugin(tmp_path / "p")))
    assert Credentials(settings).token() == "token-1"


# --- through the client -----------------------------------------------------------------------------------------------


@pytest.fixture
def server() -> Iterator[FakeApiServer]:
    fake = FakeApiServer().start()
    yield fake
    fake.stop()


def test_the_client_runs_the_plugin_again_after_a_401(tmp_path: Path, server: FakeApiServer) -> None:
    def reply(request: Recorded) -> Reply:
        if request.headers.get("authorization") == "Bearer token-2":
            return 200, {"kind": "ModelDeployment"}
        return 401, {"kind": "Status", "code": 401, "message": "Unauthorized"}

    server.reply = reply
    plugin = token_plugin(tmp_path / "plugin")
    kube = Kube(ConnectionSettings(server=server.url, exec_plugin=plugin_of(plugin)), pool_size=1)
    assert runs(plugin) == 0  # not before the first request
    with pytest.raises(ApiError) as raised:
        kube.get_resource("ns", "web")
    assert raised.value.status == 401
    assert kube.get_resource("ns", "web") == {"kind": "ModelDeployment"}
    assert [r.headers["authorization"] for r in server.requests] == ["Bearer token-1", "Bearer token-2"]


def certificate_plugin(path: Path, pki: Pki) -> Path:
    """Answers the test PKI's client certificate and key, with a token naming the run."""
    status = {"clientCertificateData": pki.client_cert.read_text(), "clientKeyData": pki.client_key.read_text()}
    return write_plugin(
        path,
        f"status = {status!r}\nstatus['token'] = f'run-{{runs}}'\n"
        f"print(json.dumps({{'apiVersion': {V1!r}, 'kind': 'ExecCredential', 'status': status}}))\n",
    )


def test_a_client_certificate_from_the_plugin(tmp_path: Path, pki: Pki) -> None:
    fake = FakeApiServer(tls=server_tls(pki)).start()  # requires a client certificate
    try:
        statuses = iter([401, 200, 200])
        fake.reply = lambda request: (next(statuses), {"kind": "ModelDeployment"})
        plugin = certificate_plugin(tmp_path / "plugin", pki)
        settings = ConnectionSettings(server=fake.url, ca_file=str(pki.ca_cert), exec_plugin=plugin_of(plugin))
        kube = Kube(settings, pool_size=1)
        with pytest.raises(ApiError):
            kube.get_resource("ns", "web")
        kube.get_resource("ns", "web")
        kube.get_resource("ns", "web")
        subjects = [
            dict(item[0] for item in (r.client_certificate or {})["subject"])["commonName"] for r in fake.requests
        ]
        assert subjects == ["tester"] * 3
        assert [r.headers["authorization"] for r in fake.requests] == ["Bearer run-1", "Bearer run-2", "Bearer run-2"]
    finally:
        fake.stop()


def test_a_plugin_failure_is_the_requests_error(tmp_path: Path, server: FakeApiServer) -> None:
    plugin = write_plugin(tmp_path / "plugin", "sys.exit('no credentials configured')\n")
    kube = Kube(ConnectionSettings(server=server.url, exec_plugin=plugin_of(plugin)), pool_size=1)
    with pytest.raises(ExecPluginError, match="exited with 1: no credentials configured"):
        kube.get_resource("ns", "web")
    assert server.requests == []


# --- kopf's login -----------------------------------------------------------------------------------------------------


def test_kopf_gets_the_plugins_token_and_its_expiration(tmp_path: Path) -> None:
    from modeldeploy.kube.kopf_login import connection_info

    plugin = token_plugin(tmp_path / "plugin", expiration="2030-01-01T00:00:00Z")
    info = connection_info(ConnectionSettings(server=SERVER, exec_plugin=plugin_of(plugin), namespace="team-x"))
    assert (info.token, info.default_namespace) == ("token-1", "team-x")
    assert info.expiration == datetime(2030, 1, 1, tzinfo=UTC)
    # kopf calls its login again after a 401 or once expired: the plugin runs again.
    assert connection_info(ConnectionSettings(server=SERVER, exec_plugin=plugin_of(plugin))).token == "token-2"


def test_kopf_gets_the_plugins_client_certificate(tmp_path: Path, pki: Pki) -> None:
    from modeldeploy.kube.kopf_login import connection_info

    settings = ConnectionSettings(
        server=SERVER,
        ca_file=str(pki.ca_cert),
        client_cert_file="/replaced/by/the/plugin.crt",
        client_key_file="/replaced/by/the/plugin.key",
        exec_plugin=plugin_of(certificate_plugin(tmp_path / "plugin", pki)),
    )
    info = connection_info(settings)
    assert (info.certificate_path, info.private_key_path) == (None, None)
    assert base64.b64decode(info.certificate_data or "").decode() == pki.client_cert.read_text()
    assert base64.b64decode(info.private_key_data or "").decode() == pki.client_key.read_text()
    assert info.as_ssl_context().verify_mode == ssl.CERT_REQUIRED


def test_credential_repr_hides_secrets() -> None:
    credential = Credential(token="s3cr3t", client_cert_data="CERT", client_key_data="KEY", expires_at=1.0)
    assert "s3cr3t" not in repr(credential)
    assert "KEY" not in repr(credential)
