"""A throwaway PKI made with openssl (which the local control plane needs anyway), and a fake API server.

The fake answers HTTP or HTTPS on 127.0.0.1, records every request and replies with what a test tells it: enough to
see exactly what kube.py sends and how it takes the answers, without a control plane.
"""

from __future__ import annotations

import json
import shutil
import ssl
import subprocess
import threading
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest


@dataclass(frozen=True)
class Pki:
    ca_cert: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    stranger_ca_cert: Path
    """A CA that signed nothing here: a client that trusts only it must refuse the server."""


NEW_KEY = "-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes"  # EC: made in milliseconds


def _openssl(command: str, cwd: Path) -> None:
    """openssl with `command` split on spaces (no argument here has one)."""
    result = subprocess.run(["openssl", *command.split()], cwd=cwd, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise AssertionError(f"openssl {command} failed:\n{result.stderr}")


def _certificate(directory: Path, name: str, subject: str, extensions: str) -> None:
    """`name`.crt and `name`.key, signed by ca.crt, with the given X.509v3 extensions."""
    _openssl(f"req -new {NEW_KEY} -keyout {name}.key -out {name}.csr -subj {subject}", directory)
    (directory / f"{name}.ext").write_text(extensions + "\n")
    signed_by_ca = "-CA ca.crt -CAkey ca.key -CAcreateserial"
    _openssl(f"x509 -req -in {name}.csr {signed_by_ca} -out {name}.crt -days 2 -extfile {name}.ext", directory)


def make_pki(directory: Path) -> Pki:
    if shutil.which("openssl") is None:
        pytest.fail("openssl is not on PATH (the local control plane needs it too)", pytrace=False)
    for ca in ("ca", "stranger-ca"):
        _openssl(f"req -x509 {NEW_KEY} -keyout {ca}.key -out {ca}.crt -days 2 -subj /CN={ca}", directory)
    _certificate(directory, "server", "/CN=127.0.0.1", "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth")
    _certificate(directory, "client", "/CN=tester", "extendedKeyUsage=clientAuth")
    return Pki(
        ca_cert=directory / "ca.crt",
        server_cert=directory / "server.crt",
        server_key=directory / "server.key",
        client_cert=directory / "client.crt",
        client_key=directory / "client.key",
        stranger_ca_cert=directory / "stranger-ca.crt",
    )


@dataclass
class Recorded:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes
    client_certificate: dict[str, Any] | None = None

    def json(self) -> Any:
        return json.loads(self.body)


Reply = tuple[int, Any]
"""Status and JSON body (None: no body)."""


def echo(request: Recorded) -> Reply:
    return 200, {"kind": "Echo", "method": request.method, "path": request.path}


@dataclass
class FakeApiServer:
    tls: ssl.SSLContext | None = None
    reply: Callable[[Recorded], Reply] = echo
    requests: list[Recorded] = field(default_factory=list)
    _server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        assert self._server is not None
        scheme = "https" if self.tls else "http"
        return f"{scheme}://127.0.0.1:{self._server.server_address[1]}"

    def start(self) -> FakeApiServer:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as the API server: the client's pool reuses connections

            def _handle(self) -> None:
                split = urllib.parse.urlsplit(self.path)
                length = int(self.headers.get("Content-Length") or 0)
                peer = self.connection.getpeercert() if isinstance(self.connection, ssl.SSLSocket) else None
                request = Recorded(
                    method=self.command,
                    path=split.path,
                    query=dict(urllib.parse.parse_qsl(split.query)),
                    headers={key.lower(): value for key, value in self.headers.items()},
                    body=self.rfile.read(length),
                    client_certificate=peer or None,
                )
                fake.requests.append(request)
                status, body = fake.reply(request)
                data = b"" if body is None else json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_PATCH = do_DELETE = do_PUT = _handle  # noqa: N815

            def log_message(self, format: str, *args: Any) -> None:
                pass

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        server.daemon_threads = True
        if self.tls is not None:
            server.socket = self.tls.wrap_socket(server.socket, server_side=True)
        self._server = server

        def serve() -> None:
            server.serve_forever(poll_interval=0.02)  # stop() waits for the next poll

        threading.Thread(target=serve, name="fake-apiserver", daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()


def server_tls(pki: Pki, require_client_certificate: bool = True) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(pki.server_cert, pki.server_key)
    context.load_verify_locations(pki.ca_cert)
    context.verify_mode = ssl.CERT_REQUIRED if require_client_certificate else ssl.CERT_NONE
    return context
