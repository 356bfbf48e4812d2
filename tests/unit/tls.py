"""A throwaway PKI made with openssl (which the local control plane needs anyway), a fake API server and a proxy.

The fake answers HTTP or HTTPS on 127.0.0.1, records every request and replies with what a test tells it: enough to
see exactly what kube/client.py sends and how it takes the answers, without a control plane. The proxy tunnels
CONNECT requests (over plain TCP or TLS) and counts them.
"""

from __future__ import annotations

import json
import selectors
import shutil
import socket
import socketserver
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
    named_server_cert: Path
    """For SERVER_NAME only (no IP address): a client reaching it by IP must be told the name (tls-server-name)."""
    named_server_key: Path


SERVER_NAME = "api.modeldeploy.test"
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
    named = f"subjectAltName=DNS:{SERVER_NAME}\nextendedKeyUsage=serverAuth"
    _certificate(directory, "named-server", f"/CN={SERVER_NAME}", named)
    return Pki(
        ca_cert=directory / "ca.crt",
        server_cert=directory / "server.crt",
        server_key=directory / "server.key",
        client_cert=directory / "client.crt",
        client_key=directory / "client.key",
        stranger_ca_cert=directory / "stranger-ca.crt",
        named_server_cert=directory / "named-server.crt",
        named_server_key=directory / "named-server.key",
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
    headers: dict[str, str] = field(default_factory=dict)
    """Headers sent with every answer (Retry-After, say)."""
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
                for name, value in fake.headers.items():
                    self.send_header(name, value)
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


def server_tls(pki: Pki, require_client_certificate: bool = True, named: bool = False) -> ssl.SSLContext:
    """The server's side of TLS: its certificate for 127.0.0.1, or (named) for SERVER_NAME only."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    if named:
        context.load_cert_chain(pki.named_server_cert, pki.named_server_key)
    else:
        context.load_cert_chain(pki.server_cert, pki.server_key)
    context.load_verify_locations(pki.ca_cert)
    context.verify_mode = ssl.CERT_REQUIRED if require_client_certificate else ssl.CERT_NONE
    return context


@dataclass
class ConnectProxy:
    """An HTTP proxy on 127.0.0.1 that only tunnels (CONNECT), as proxies in front of API servers do, over plain TCP
    or (with `tls`) TLS. It records each tunnel's target and Proxy-Authorization header."""

    tls: ssl.SSLContext | None = None
    tunnels: list[tuple[str, str | None]] = field(default_factory=list)
    _server: socketserver.ThreadingTCPServer | None = None

    @property
    def url(self) -> str:
        assert self._server is not None
        scheme = "https" if self.tls else "http"
        return f"{scheme}://127.0.0.1:{self._server.server_address[1]}"

    def start(self) -> ConnectProxy:
        proxy = self

        class Handler(socketserver.StreamRequestHandler):
            rbufsize = 0  # unbuffered: nothing the client sends after the CONNECT request is held back here

            def handle(self) -> None:
                request_line = self.rfile.readline(65537).decode("latin-1").split()
                headers: dict[str, str] = {}
                while (line := self.rfile.readline(65537).decode("latin-1")) not in ("\r\n", "\n", ""):
                    name, _, value = line.partition(":")
                    headers[name.strip().lower()] = value.strip()
                if len(request_line) != 3 or request_line[0] != "CONNECT":
                    self.wfile.write(b"HTTP/1.1 405 Method Not Allowed\r\nContent-Length: 0\r\n\r\n")
                    return
                target = request_line[1]
                proxy.tunnels.append((target, headers.get("proxy-authorization")))
                host, _, port = target.rpartition(":")
                with socket.create_connection((host, int(port)), timeout=10) as upstream:
                    self.wfile.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
                    self.wfile.flush()
                    _relay(self.connection, upstream)

        server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler)
        server.daemon_threads = True
        if self.tls is not None:
            server.socket = self.tls.wrap_socket(server.socket, server_side=True)
        self._server = server
        threading.Thread(target=server.serve_forever, args=(0.02,), name="connect-proxy", daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()


def _relay(client: socket.socket, upstream: socket.socket) -> None:
    """Copy bytes both ways until either side closes."""
    with selectors.DefaultSelector() as selector:
        selector.register(client, selectors.EVENT_READ, upstream)
        selector.register(upstream, selectors.EVENT_READ, client)
        while True:
            for key, _ in selector.select(timeout=30):
                source: socket.socket = key.fileobj  # type: ignore[assignment]
                # A TLS socket (an https proxy) may hold decrypted bytes beyond what select() sees: read them all.
                chunk = source.recv(65536)
                if not chunk:
                    return
                key.data.sendall(chunk)
                while isinstance(source, ssl.SSLSocket) and source.pending():
                    key.data.sendall(source.recv(source.pending()))
