"""WorkQueue: de-duplication, one pass at a time per key, delayed adds and retries. Real asyncio, short delays."""

from __future__ import annotations

import asyncio
import logging
import random
from collections import Counter
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

import pytest
import urllib3

from modeldeploy.controller.queue import Backoff, WorkQueue
from modeldeploy.controller.reconcile import ERROR_RECHECK_SECONDS
from modeldeploy.controller.store import Key
from modeldeploy.kube.client import ApiError

A: Key = ("ns", "a")
B: Key = ("ns", "b")
SENTINEL: Key = ("ns", "sentinel")
TIMEOUT = 2.0

Handler = Callable[[Key], Awaitable[float | None]]


def run(test: Callable[[], Coroutine[Any, Any, None]]) -> None:
    asyncio.run(asyncio.wait_for(test(), timeout=5.0))


class Recorder:
    """A handler that counts passes per key and lets a test wait for the n-th pass of a key."""

    def __init__(self, behaviour: Handler | None = None) -> None:
        self.calls: Counter[Key] = Counter()
        self.order: list[Key] = []
        self._behaviour = behaviour
        self._changed = asyncio.Event()

    async def __call__(self, key: Key) -> float | None:
        self.calls[key] += 1
        self.order.append(key)
        self._changed.set()
        if self._behaviour is not None:
            return await self._behaviour(key)
        return None

    async def wait_for(self, key: Key, count: int = 1, limit: float = TIMEOUT) -> None:
        async def reached() -> None:
            while self.calls[key] < count:
                self._changed.clear()
                await self._changed.wait()

        await asyncio.wait_for(reached(), limit)


async def drained(queue: WorkQueue, recorder: Recorder) -> None:
    """Wait until a key added now has been handled. With one worker, everything queued before it ran first."""
    before = recorder.calls[SENTINEL]
    queue.add(SENTINEL)
    await recorder.wait_for(SENTINEL, before + 1)


def test_key_added_many_times_while_queued_runs_once() -> None:
    async def scenario() -> None:
        recorder = Recorder()
        queue = WorkQueue(recorder, workers=1)
        for _ in range(5):
            queue.add(A)
            queue.add(B)
        assert queue.depth == 2
        queue.start()
        try:
            await drained(queue, recorder)
            assert recorder.calls == Counter({A: 1, B: 1, SENTINEL: 1})
            assert recorder.order == [A, B, SENTINEL]
        finally:
            await queue.stop()

    run(scenario)


def test_key_added_while_processing_runs_exactly_once_more() -> None:
    async def scenario() -> None:
        started = asyncio.Event()
        release = asyncio.Event()

        async def behaviour(key: Key) -> None:
            if key == A and recorder.calls[A] == 1:
                started.set()
                await release.wait()

        recorder = Recorder(behaviour)
        queue = WorkQueue(recorder, workers=1)
        queue.start()
        try:
            queue.add(A)
            await asyncio.wait_for(started.wait(), TIMEOUT)
            for _ in range(5):
                queue.add(A)
            # Re-added while it runs: not queued behind itself.
            assert queue.depth == 0
            release.set()
            await recorder.wait_for(A, 2)
            await drained(queue, recorder)
            assert recorder.calls[A] == 2
        finally:
            await queue.stop()

    run(scenario)


def test_a_key_is_never_processed_by_two_workers_at_once() -> None:
    async def scenario() -> None:
        active: Counter[Key] = Counter()
        most: Counter[Key] = Counter()
        overall = {"now": 0, "most": 0}

        async def behaviour(key: Key) -> None:
            active[key] += 1
            overall["now"] += 1
            most[key] = max(most[key], active[key])
            overall["most"] = max(overall["most"], overall["now"])
            try:
                await asyncio.sleep(0.005)
            finally:
                active[key] -= 1
                overall["now"] -= 1

        recorder = Recorder(behaviour)
        queue = WorkQueue(recorder, workers=4)
        queue.start()
        try:
            for _ in range(20):
                queue.add(A)
                queue.add(B)
                await asyncio.sleep(0.002)
            await recorder.wait_for(A, 2)
            await recorder.wait_for(B, 2)
        finally:
            await queue.stop()
        assert most[A] == 1
        assert most[B] == 1
        # The workers did run in parallel, just never on the same key.
        assert overall["most"] == 2

    run(scenario)


def test_add_after_fires_after_the_delay() -> None:
    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        fired: dict[Key, float] = {}

        async def behaviour(key: Key) -> None:
            fired[key] = loop.time()

        recorder = Recorder(behaviour)
        queue = WorkQueue(recorder, workers=2)
        queue.start()
        try:
            start = loop.time()
            queue.add_after(A, 0.05)
            queue.add_after(B, -1.0)  # a deadline already past runs at once
            await recorder.wait_for(A)
            await recorder.wait_for(B)
            assert fired[A] - start >= 0.05 - 0.005
            assert fired[B] - start < 0.05
            assert recorder.calls == Counter({A: 1, B: 1})
        finally:
            await queue.stop()

    run(scenario)


@pytest.mark.parametrize("order", ["earlier-second", "earlier-first"])
def test_the_earlier_add_after_wins(order: str) -> None:
    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        recorder = Recorder()
        queue = WorkQueue(recorder, workers=1)
        queue.start()
        try:
            start = loop.time()
            delays = [0.3, 0.05] if order == "earlier-second" else [0.05, 0.3]
            for delay in delays:
                queue.add_after(A, delay)
            await recorder.wait_for(A, limit=0.25)
            assert loop.time() - start < 0.3
            # The later timer was dropped: waiting past it brings no second pass.
            with pytest.raises(TimeoutError):
                await recorder.wait_for(A, 2, limit=0.35)
            assert recorder.calls[A] == 1
        finally:
            await queue.stop()

    run(scenario)


def test_requeue_after_from_the_handler_runs_the_key_again() -> None:
    async def scenario() -> None:
        async def behaviour(key: Key) -> float | None:
            return 0.02 if recorder.calls[key] < 3 else None

        recorder = Recorder(behaviour)
        queue = WorkQueue(recorder, workers=1, backoff=fast())
        queue.start()
        try:
            queue.add(A)
            await recorder.wait_for(A, 3)
            with pytest.raises(TimeoutError):
                await recorder.wait_for(A, 4, limit=0.1)
        finally:
            await queue.stop()

    run(scenario)


class Highest(random.Random):
    """The top of every jitter range, so that delays are the backoff's ceilings."""

    def uniform(self, a: float, b: float) -> float:
        return b


def fast() -> Backoff:
    return Backoff(base=0.01, cap=0.03, rng=Highest())


def test_a_failing_handler_is_retried_with_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    async def scenario() -> None:
        failures_left = {A: 4}
        delays: list[float] = []

        async def behaviour(key: Key) -> None:
            if failures_left[key] > 0:
                failures_left[key] -= 1
                raise RuntimeError("boom")

        recorder = Recorder(behaviour)
        queue = WorkQueue(recorder, workers=1, backoff=fast())
        original = queue.add_after

        def add_after(key: Key, delay: float) -> None:
            delays.append(delay)
            original(key, delay)

        monkeypatch.setattr(queue, "add_after", add_after)
        queue.start()
        try:
            queue.add(A)
            await recorder.wait_for(A, 5)
            # Backoff grows per consecutive failure and stays at the last delay.
            assert delays == pytest.approx([0.01, 0.02, 0.03, 0.03])
            # A success resets it: the next failure waits the first delay again.
            failures_left[A] = 1
            queue.add(A)
            await recorder.wait_for(A, 7)
            assert delays == pytest.approx([0.01, 0.02, 0.03, 0.03, 0.01])
        finally:
            await queue.stop()

    run(scenario)


def test_forget_cancels_a_pending_retry() -> None:
    async def scenario() -> None:
        recorder = Recorder()
        queue = WorkQueue(recorder, workers=1)
        queue.start()
        try:
            queue.add_after(A, 0.05)
            queue.forget(A)
            queue.add_after(B, 0.1)
            await recorder.wait_for(B)
            assert recorder.calls[A] == 0
        finally:
            await queue.stop()

    run(scenario)


def test_a_namespace_being_deleted_is_not_retried(monkeypatch: pytest.MonkeyPatch) -> None:
    terminating = (
        '{"kind":"Status","status":"Failure","message":"deployments.apps \\"a\\" is forbidden: unable to create new '
        'content in namespace ns because it is being terminated","reason":"Forbidden","code":403}'
    )

    async def scenario() -> None:
        async def behaviour(key: Key) -> None:
            raise ApiError(403, "Forbidden", terminating)

        recorder = Recorder(behaviour)
        queue = WorkQueue(recorder, workers=1, backoff=fast())
        queue.start()
        try:
            queue.add(A)
            await recorder.wait_for(A, 1)
            with pytest.raises(TimeoutError):
                await recorder.wait_for(A, 2, limit=0.1)
        finally:
            await queue.stop()

    run(scenario)


def test_other_forbidden_answers_are_retried(monkeypatch: pytest.MonkeyPatch) -> None:

    async def scenario() -> None:
        async def behaviour(key: Key) -> None:
            raise ApiError(403, "Forbidden", '{"message":"deployments.apps is forbidden: User cannot patch resource"}')

        recorder = Recorder(behaviour)
        queue = WorkQueue(recorder, workers=1, backoff=fast())
        queue.start()
        try:
            queue.add(A)
            await recorder.wait_for(A, 3)
        finally:
            await queue.stop()

    run(scenario)


def test_backoff_is_jittered_capped_and_never_immediate() -> None:
    backoff = Backoff(base=0.2, cap=60.0, rng=random.Random(7))
    for failures in range(40):
        ceiling = min(60.0, 0.2 * 2**failures)
        delays = [backoff.delay(failures) for _ in range(20)]
        assert all(ceiling / 2 <= delay <= ceiling for delay in delays)
    assert len({Backoff(rng=random.Random(seed)).delay(5) for seed in range(10)}) == 10, "spread, not in step"


async def delays_after(error: Exception, monkeypatch: pytest.MonkeyPatch, passes: int = 1) -> list[float]:
    """The delays the queue asks for after `passes` passes that fail with `error`."""
    delays: list[float] = []

    async def behaviour(key: Key) -> None:
        raise error

    recorder = Recorder(behaviour)
    queue = WorkQueue(recorder, workers=1, backoff=fast())
    asked = asyncio.Event()

    def add_after(key: Key, delay: float) -> None:
        delays.append(delay)
        asked.set()

    monkeypatch.setattr(queue, "add_after", add_after)
    queue.start()
    try:
        for _ in range(passes):
            asked.clear()
            queue.add(A)
            await asyncio.wait_for(asked.wait(), TIMEOUT)
    finally:
        await queue.stop()
    return delays


@pytest.mark.parametrize(
    "error",
    [
        ApiError(500, "Internal Server Error", '{"message": "etcd timeout"}'),
        ApiError(503, "Service Unavailable", "{}"),
        ApiError(429, "Too Many Requests", "{}"),
        urllib3.exceptions.ReadTimeoutError(None, "/", "read timed out"),  # type: ignore[arg-type]
        urllib3.exceptions.ProtocolError("Connection aborted.", ConnectionResetError(104, "reset by peer")),
        urllib3.exceptions.NewConnectionError(None, "Connection refused"),  # type: ignore[arg-type]
    ],
    ids=["500", "503", "429", "timeout", "reset", "refused"],
)
def test_transient_errors_back_off_with_one_line_and_no_traceback(
    error: Exception, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    async def scenario() -> None:
        with caplog.at_level(logging.WARNING, logger="modeldeploy.controller"):
            delays = await delays_after(error, monkeypatch, passes=3)
        assert delays == pytest.approx([0.01, 0.02, 0.03])
        failed = [record for record in caplog.records if record.name == "modeldeploy.controller"]
        assert len(failed) == 3
        assert all(record.exc_info is None for record in failed)

    run(scenario)


def test_retry_after_is_honoured() -> None:
    async def scenario() -> None:
        monkeypatch = pytest.MonkeyPatch()
        try:
            delays = await delays_after(ApiError(429, "Too Many Requests", "{}", retry_after=7.0), monkeypatch)
        finally:
            monkeypatch.undo()
        assert delays == [7.0]

    run(scenario)


@pytest.mark.parametrize("status", [400, 413, 422])
def test_permanent_errors_are_looked_at_again_slowly(status: int, monkeypatch: pytest.MonkeyPatch) -> None:
    async def scenario() -> None:
        delays = await delays_after(ApiError(status, "Refused", '{"message": "no"}'), monkeypatch, passes=2)
        assert delays == [ERROR_RECHECK_SECONDS, ERROR_RECHECK_SECONDS]

    run(scenario)


def test_an_unexpected_error_has_one_traceback_per_distinct_error(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    async def scenario() -> None:
        with caplog.at_level(logging.WARNING, logger="modeldeploy.controller"):
            await delays_after(RuntimeError("boom"), monkeypatch, passes=3)
        tracebacks = [record for record in caplog.records if record.exc_info is not None]
        assert len(tracebacks) == 1

    run(scenario)
