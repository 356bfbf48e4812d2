"""Watching a collection of the API server: list it, then follow its watch stream, in a thread of its own.

One loop for every watcher of the kit (tests and benchmarks): what each does with an event is its own handler; the
list, the resume from the last resourceVersion, the new list after a 410 (expired) and the retries are here.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Self

from modeldeploy_testkit.kubeapi import ApiError, KubeAPI, Manifest, WatchStream, resource_path

# A failed request is tried again after this long: the API server may be restarting, or briefly too busy.
RETRY_SECONDS = 0.2


class CollectionWatch:
    """Every object of one collection and every change to it, handed to `on_event(kind, body)` as it arrives.

    start() lists the collection in the calling thread (each item arrives as ADDED) before the watch begins in a
    thread of its own, so a caller that acts after start() sees everything that follows. Events come in the order
    received: ADDED, MODIFIED and DELETED (bookmarks only move the resourceVersion on). A stream that the server
    ends is resumed from the last resourceVersion seen; an expired one (410) is listed again, from now. stop() ends
    a read blocked in the thread at once.
    """

    def __init__(
        self,
        api: KubeAPI,
        path: str,
        on_event: Callable[[str, Manifest], None],
        params: dict[str, str] | None = None,
        timeout_seconds: int = 60,
    ) -> None:
        self.api = api
        self.path = path
        self.params = params or {}
        self.on_event = on_event
        self.timeout_seconds = timeout_seconds
        self.errors: list[str] = []
        self.reconnects = 0
        self._version = ""
        self._stream: WatchStream | None = None
        self._stream_lock = threading.Lock()
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"watch {path}", daemon=True)

    def start(self) -> Self:
        self._list()
        self._thread.start()
        return self

    def stop(self, timeout: float = 15) -> None:
        self._stopping.set()
        with self._stream_lock:
            stream = self._stream
        if stream is not None:
            stream.close()
        if self._thread.is_alive():
            self._thread.join(timeout=timeout)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.stop()

    def _list(self) -> None:
        listing = self.api.list(self.path, self.params)
        for item in listing.get("items") or []:
            self.on_event("ADDED", item)
        self._version = str(listing["metadata"]["resourceVersion"])

    def _run(self) -> None:
        while not self._stopping.is_set():
            try:
                if not self._version:
                    self._list()
                self._follow()
            except ApiError as error:
                if error.status == 410:
                    self._version = ""  # expired: list again, from now
                    continue
                self._failed(error)
            except Exception as error:
                # Connection errors, a stream closed under a read by stop(), a handler that failed on one object: the
                # watch outlives them all (it is resumed from the last resourceVersion), and keeps what they were.
                self._failed(error)
            self.reconnects += 1

    def _follow(self) -> None:
        stream = self.api.open_watch(self.path, {**self.params, "resourceVersion": self._version}, self.timeout_seconds)
        with self._stream_lock:
            self._stream = stream
        if self._stopping.is_set():  # stop() came between the request and now: it could not close this stream
            stream.close()
            return
        try:
            for event in stream:
                body = event.get("object") or {}
                version = (body.get("metadata") or {}).get("resourceVersion")
                if version:
                    self._version = str(version)
                if event.get("type") in ("ADDED", "MODIFIED", "DELETED"):
                    self.on_event(str(event["type"]), body)
                if self._stopping.is_set():
                    return
        finally:
            with self._stream_lock:
                self._stream = None
            stream.close()

    def _failed(self, error: Exception) -> None:
        if self._stopping.is_set():
            return
        self.errors.append(repr(error)[:300])
        self._stopping.wait(RETRY_SECONDS)


@dataclass(frozen=True)
class Seen:
    """One event as it arrived."""

    at: float
    """time.time() on arrival: comparable with timestamps other processes of this machine wrote."""
    received: float
    """time.monotonic() on arrival: for durations measured in this process."""
    kind: str
    body: Manifest


class EventLog(CollectionWatch):
    """A CollectionWatch that keeps every event, stamped on arrival, and lets a caller wait for one."""

    def __init__(
        self, api: KubeAPI, path: str, params: dict[str, str] | None = None, timeout_seconds: int = 60
    ) -> None:
        super().__init__(api, path, self._record, params, timeout_seconds)
        self._events: list[Seen] = []
        self._changed = threading.Condition()

    def _record(self, kind: str, body: Manifest) -> None:
        seen = Seen(time.time(), time.monotonic(), kind, body)
        with self._changed:
            self._events.append(seen)
            self._changed.notify_all()

    def all(self) -> list[Seen]:
        with self._changed:
            return list(self._events)

    def since(self, at: float) -> list[Seen]:
        """The events that arrived at or after `at` (time.time())."""
        return [event for event in self.all() if event.at >= at]

    def wait_for(self, check: Callable[[Manifest], Any], timeout: float, after: float = 0.0) -> Seen:
        """The first event received at or after `after` (time.monotonic()) whose object satisfies `check`; waits
        for it until `timeout` seconds have passed, then raises TimeoutError."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                for seen in self._events:
                    if seen.received >= after and seen.kind != "DELETED" and check(seen.body):
                        return seen
                left = deadline - time.monotonic()
                if left <= 0:
                    last = self._events[-1].body.get("status") if self._events else None
                    raise TimeoutError(f"timed out; last status: {json.dumps(last)[:400]}")
                self._changed.wait(left)


@dataclass(frozen=True)
class StatusSnapshot:
    at: float
    """Local wall-clock time (time.time()) the watch event arrived."""
    status: dict[str, Any]


class StatusHistory(EventLog):
    """Every status of one ModelDeployment as a watch delivered it (list first, then watch from there).

    Status keeps only the newest measurements; the history of writes keeps all of them, and every step the rollout
    went through, with the operator's own timestamps.
    """

    def __init__(self, api: KubeAPI, namespace: str, name: str) -> None:
        path = resource_path("modeldeploy.io/v1alpha1", "modeldeployments", namespace)
        super().__init__(api, path, {"fieldSelector": f"metadata.name={name}"}, timeout_seconds=5)

    def statuses(self) -> list[StatusSnapshot]:
        return [StatusSnapshot(e.at, dict(e.body.get("status") or {})) for e in self.all() if e.kind != "DELETED"]

    def first(self, check: Callable[[dict[str, Any]], bool]) -> StatusSnapshot | None:
        """The first status seen that satisfies `check`."""
        return next((snapshot for snapshot in self.statuses() if check(snapshot.status)), None)
