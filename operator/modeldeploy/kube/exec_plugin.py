"""Credentials from a kubeconfig's `exec` plugin (client.authentication.k8s.io v1 and v1beta1), run as kubectl runs it.

The plugin is a program named in the kubeconfig (aws, gke-gcloud-auth-plugin, kubelogin...). It is run with
KUBERNETES_EXEC_INFO in its environment and prints an ExecCredential: a bearer token, or a client certificate and
key, and when they expire. Its output is untrusted input: the run is bounded in time and in size, and everything it
prints is checked before use. The operator never has a terminal to lend a plugin, so plugins that need one fail.
"""

from __future__ import annotations

import contextlib
import json
import os
import selectors
import signal
import subprocess
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import IO, Any

API_VERSIONS = ("client.authentication.k8s.io/v1", "client.authentication.k8s.io/v1beta1")
INTERACTIVE_MODES = ("Never", "IfAvailable", "Always")
TIMEOUT_SECONDS = 60.0
"""The longest a plugin may run. kubectl waits for ever; an operator must not hang on a plugin that does."""
OUTPUT_LIMIT_BYTES = 1024 * 1024
"""The most a plugin may print on stdout: an ExecCredential with a certificate chain is a few KiB."""
STDERR_KEPT_BYTES = 4096
"""How much of what a plugin prints on stderr is kept (its end), to say why it failed."""


class ExecPluginError(Exception):
    """The plugin could not be run, failed, or printed something that is not a usable ExecCredential."""


@dataclass(frozen=True)
class ExecPlugin:
    """A kubeconfig user's `exec` section, with what KUBERNETES_EXEC_INFO tells the plugin."""

    api_version: str
    command: str
    """As the kubeconfig names it: looked up on PATH, or a path (a relative one already made relative to the
    kubeconfig's directory)."""
    args: tuple[str, ...] = ()
    env: tuple[tuple[str, str], ...] = field(default=(), repr=False)
    install_hint: str | None = None
    interactive_mode: str = "IfAvailable"
    cluster: Mapping[str, Any] | None = field(default=None, repr=False)
    """spec.cluster of KUBERNETES_EXEC_INFO, set only when the kubeconfig asks for provideClusterInfo."""


@dataclass(frozen=True)
class Credential:
    """What the client presents to the API server: a bearer token and/or a client certificate and key (PEM)."""

    token: str | None = field(default=None, repr=False)
    client_cert_data: str | None = field(default=None, repr=False)
    client_key_data: str | None = field(default=None, repr=False)
    expires_at: float | None = None
    """Seconds since the epoch after which the plugin must be run again; None: until the server rejects it."""

    def expired(self, now: float) -> bool:
        return self.expires_at is not None and now >= self.expires_at


def check(plugin: ExecPlugin) -> None:
    """What kubectl refuses before running anything: an unknown apiVersion or interactiveMode, or a plugin that
    needs a terminal."""
    if plugin.api_version not in API_VERSIONS:
        raise ExecPluginError(
            f"exec apiVersion {plugin.api_version!r} is not supported (one of {', '.join(API_VERSIONS)}; "
            "v1alpha1 was removed from kubectl in 1.24)"
        )
    if plugin.interactive_mode not in INTERACTIVE_MODES:
        raise ExecPluginError(
            f"exec interactiveMode {plugin.interactive_mode!r} is not one of {', '.join(INTERACTIVE_MODES)}"
        )
    if plugin.interactive_mode == "Always":
        raise ExecPluginError(
            f"exec plugin {plugin.command!r} has interactiveMode Always: it needs a terminal, and the operator runs "
            "without one (use a plugin mode or credentials that work unattended)"
        )


def exec_info(plugin: ExecPlugin) -> str:
    """KUBERNETES_EXEC_INFO: the ExecCredential the plugin is handed, with spec.cluster if it asked for it."""
    spec: dict[str, Any] = {"interactive": False}
    if plugin.cluster is not None:
        spec["cluster"] = dict(plugin.cluster)
    return json.dumps({"apiVersion": plugin.api_version, "kind": "ExecCredential", "spec": spec})


def run(plugin: ExecPlugin, timeout: float = TIMEOUT_SECONDS, limit: int = OUTPUT_LIMIT_BYTES) -> Credential:
    """Run the plugin once and return the credential it printed."""
    check(plugin)
    env = {**os.environ, **dict(plugin.env), "KUBERNETES_EXEC_INFO": exec_info(plugin)}
    try:
        returncode, stdout, stderr = _run_bounded([plugin.command, *plugin.args], env, timeout, limit)
    except FileNotFoundError as error:
        hint = f": {plugin.install_hint.strip()}" if plugin.install_hint else ""
        raise ExecPluginError(f"exec plugin {plugin.command!r} was not found{hint}") from error
    except OSError as error:  # not executable, not a program (no #! line)...
        raise ExecPluginError(f"exec plugin {plugin.command!r} cannot be run: {error.strerror}") from error
    if returncode != 0:
        said = stderr.decode(errors="replace").strip()
        raise ExecPluginError(
            f"exec plugin {plugin.command!r} exited with {returncode}" + (f": {said}" if said else "")
        )
    return parse(plugin, stdout)


def parse(plugin: ExecPlugin, output: bytes) -> Credential:
    """The ExecCredential a plugin printed, checked field by field."""
    where = f"exec plugin {plugin.command!r}"
    try:
        document = json.loads(output)
    except ValueError as error:
        raise ExecPluginError(f"{where} did not print an ExecCredential (not JSON: {error})") from error
    if not isinstance(document, dict) or document.get("kind") != "ExecCredential":
        raise ExecPluginError(f"{where} did not print an ExecCredential (no kind ExecCredential)")
    if document.get("apiVersion") != plugin.api_version:
        raise ExecPluginError(
            f"{where} answered apiVersion {document.get('apiVersion')!r}, the kubeconfig asked for "
            f"{plugin.api_version!r}"
        )
    status = document.get("status")
    if not isinstance(status, dict):
        raise ExecPluginError(f"{where} printed an ExecCredential without a status")
    token = _text(status, "token", where)
    certificate = _text(status, "clientCertificateData", where)
    key = _text(status, "clientKeyData", where)
    if bool(certificate) != bool(key):
        raise ExecPluginError(f"{where} printed clientCertificateData without clientKeyData, or the other way round")
    if not token and not certificate:
        raise ExecPluginError(f"{where} printed neither a token nor a client certificate")
    return Credential(
        token=token or None,
        client_cert_data=certificate or None,
        client_key_data=key or None,
        expires_at=_expiration(status.get("expirationTimestamp"), where),
    )


def _text(status: Mapping[str, Any], key: str, where: str) -> str | None:
    value = status.get(key)
    if value is None or isinstance(value, str):
        return value
    raise ExecPluginError(f"{where}: status.{key} is not a string")


def _expiration(value: object, where: str) -> float | None:
    if value is None:
        return None
    try:
        # RFC 3339, as Go writes it; fromisoformat takes the "Z" since Python 3.11.
        moment = datetime.fromisoformat(str(value))
    except ValueError as error:
        raise ExecPluginError(f"{where}: status.expirationTimestamp {value!r} is not an RFC 3339 time") from error
    if moment.tzinfo is None:
        raise ExecPluginError(f"{where}: status.expirationTimestamp {value!r} has no time zone")
    return moment.timestamp()


def _run_bounded(argv: list[str], env: Mapping[str, str], timeout: float, limit: int) -> tuple[int, bytes, bytes]:
    """Run `argv` without a terminal or stdin; its exit code, stdout and the end of its stderr.

    The plugin and anything it started are killed (the whole process group) once `timeout` seconds have passed or
    stdout exceeds `limit` bytes. Both pipes are read as they fill, so a plugin that writes a lot to one of them
    cannot block on it.
    """
    process = subprocess.Popen(
        argv,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=dict(env),
        start_new_session=True,  # its own process group, so that a timeout ends its children too
    )
    assert process.stdout is not None
    assert process.stderr is not None
    deadline = time.monotonic() + timeout
    stdout = bytearray()
    stderr = bytearray()
    try:
        with selectors.DefaultSelector() as selector:
            selector.register(process.stdout, selectors.EVENT_READ, stdout)
            selector.register(process.stderr, selectors.EVENT_READ, stderr)
            while selector.get_map():
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise ExecPluginError(f"exec plugin {argv[0]!r} did not finish within {timeout:g}s")
                for key, _ in selector.select(remaining):
                    pipe: IO[bytes] = key.fileobj  # type: ignore[assignment]
                    chunk = os.read(pipe.fileno(), 65536)
                    if not chunk:
                        selector.unregister(pipe)
                        continue
                    buffer: bytearray = key.data
                    buffer.extend(chunk)
                    if buffer is stdout and len(stdout) > limit:
                        raise ExecPluginError(f"exec plugin {argv[0]!r} printed more than {limit} bytes")
                    if buffer is stderr and len(stderr) > STDERR_KEPT_BYTES:
                        del stderr[:-STDERR_KEPT_BYTES]
        try:
            returncode = process.wait(max(deadline - time.monotonic(), 0.001))
        except subprocess.TimeoutExpired:
            raise ExecPluginError(f"exec plugin {argv[0]!r} did not finish within {timeout:g}s") from None
    except BaseException:
        _kill(process)
        raise
    finally:
        process.stdout.close()
        process.stderr.close()
    return returncode, bytes(stdout), bytes(stderr)


def _kill(process: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()
