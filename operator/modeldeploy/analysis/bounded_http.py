"""One HTTP POST to a server the operator does not trust, bounded by a wall-clock deadline and a size limit.

Prometheus (at an address users choose) and model pods (running artifacts users choose) answer the analysis. A
request here
- ends by its deadline, whatever the server does: name resolution, connecting, a server that accepts and stays
  silent, or one that sends a byte a second (a timeout per socket read would let it hold a worker for ever, and
  the operator has only a few, `MODELDEPLOY_WORKERS`, for the whole cluster);
- follows no redirect and uses no proxy from the environment;
- reads at most `max_bytes`;
- raises an ExchangeError (one of the kinds below) for anything that is not an answer, and nothing else.
"""

from __future__ import annotations

import contextlib
import http.client
import socket
import ssl
import threading
import time
from dataclasses import dataclass

from modeldeploy.config import UrlPrefix

USER_AGENT = "modeldeploy/0.1.0"
CHUNK_BYTES = 64 * 1024


@dataclass(frozen=True)
class Reply:
    status: int
    reason: str
    location: str
    body: bytes


class ExchangeError(Exception):
    """No answer to judge."""


class DeadlineError(ExchangeError):
    """Nothing complete came back by the deadline."""


class TooLargeError(ExchangeError):
    def __init__(self, declared: int | None) -> None:
        super().__init__(declared)
        self.declared = declared
        """The Content-Length the server announced, when it did."""


class UnreachableError(ExchangeError):
    """Connecting, sending or reading failed (the message says how)."""


def post(
    target: UrlPrefix, path: str, body: bytes, *, content_type: str, timeout: float, max_bytes: int, name: str
) -> Reply:
    """POST `body` to `path` on `target` within `timeout` seconds of wall-clock time, the whole answer read."""
    exchange = _Exchange(target, path, body, content_type, time.monotonic() + timeout, max_bytes)
    thread = threading.Thread(target=exchange.run, name=name, daemon=True)
    thread.start()
    thread.join(max(exchange.deadline - time.monotonic(), 0.0))
    if thread.is_alive():
        exchange.abandon()
        raise DeadlineError()
    error = exchange.error
    if isinstance(error, ExchangeError):
        raise error
    if isinstance(error, TimeoutError):
        raise DeadlineError()
    if isinstance(error, OSError | http.client.HTTPException):
        raise UnreachableError(describe(error))
    if error is not None:
        raise ExchangeError(describe(error))
    assert exchange.reply is not None
    return exchange.reply


def describe(error: BaseException) -> str:
    text = str(error)
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


class _Exchange:
    """One request and its answer, run in a thread of its own so that the caller can leave at the deadline.

    Socket timeouts bound each read, not the whole: the caller waits for the thread until the deadline, then shuts
    the socket down, which ends a read in progress at once (name resolution cannot be interrupted; the thread ends
    with it, alone)."""

    def __init__(
        self, target: UrlPrefix, path: str, body: bytes, content_type: str, deadline: float, max_bytes: int
    ) -> None:
        self.target = target
        self.path = path
        self.body = body
        self.content_type = content_type
        self.deadline = deadline
        self.max_bytes = max_bytes
        self.reply: Reply | None = None
        self.error: BaseException | None = None
        self._lock = threading.Lock()
        self._connection: http.client.HTTPConnection | None = None
        self._abandoned = False

    def _left(self) -> float:
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("deadline reached")
        return left

    def run(self) -> None:
        try:
            self.reply = self._talk()
        except BaseException as error:  # handed to the caller, which raises the matching ExchangeError
            self.error = error
        finally:
            with self._lock:
                connection, self._connection = self._connection, None
            if connection is not None:
                connection.close()

    def abandon(self) -> None:
        with self._lock:
            self._abandoned = True
            connection = self._connection
        sock = connection.sock if connection is not None else None
        if sock is not None:
            # Already closed (OSError): the thread is ending anyway.
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def _talk(self) -> Reply:
        host, port = self.target.host, self.target.port
        connection: http.client.HTTPConnection
        if self.target.scheme == "https":
            connection = http.client.HTTPSConnection(
                host, port, timeout=self._left(), context=ssl.create_default_context()
            )
        else:
            connection = http.client.HTTPConnection(host, port, timeout=self._left())
        with self._lock:
            if self._abandoned:
                raise TimeoutError("deadline reached")
            self._connection = connection
        connection.connect()
        if self._abandoned:
            raise TimeoutError("deadline reached")
        connection.request(
            "POST",
            self.path,
            body=self.body,
            headers={"Content-Type": self.content_type, "Accept": "application/json", "User-Agent": USER_AGENT},
        )
        response = connection.getresponse()
        declared = response.getheader("Content-Length")
        if declared is not None and declared.strip().isdigit() and int(declared) > self.max_bytes:
            raise TooLargeError(int(declared))
        chunks: list[bytes] = []
        size = 0
        while True:
            # One socket read per chunk, each with what is left as its timeout: the thread ends by the deadline
            # on its own too (headers are read by http.client in one go; there, only the caller's wait bounds it).
            if connection.sock is not None:
                connection.sock.settimeout(self._left())
            chunk = response.read1(min(CHUNK_BYTES, self.max_bytes + 1 - size))
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
            if size > self.max_bytes:
                raise TooLargeError(None)
        return Reply(response.status, response.reason, response.getheader("Location") or "", b"".join(chunks))
