"""Which write records an Event: the decisions client-go's event recorder makes, without its I/O.

An Event that repeats (same object, type, reason and message) within the aggregation window is counted on the Event
it repeats (count and lastTimestamp), not written as a new object; a burst of Events of one reason with many
different messages for one object collapses into one "(combined from similar events)" Event. The client
(kube/client.py) sends what `EventCorrelator.observe` decides; this module only keeps the cache and decides, so every
rule is a table test.

Not thread-safe: the client calls it under its lock.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from dataclasses import dataclass, field
from datetime import datetime, timedelta

AGGREGATION_WINDOW = timedelta(minutes=10)
"""A repeat this soon after the last occurrence is counted on the same Event (client-go: 10 minutes)."""
SIMILAR_LIMIT = 10
"""The distinct message, per object, type and reason within the window, that is combined instead of written on its
own (client-go: 10)."""
CACHE_SIZE = 4096
"""Series and similar-message records kept, each; the least recently used is forgotten first."""
COMBINED_PREFIX = "(combined from similar events): "
NAME_LENGTH = 253
"""Event names are DNS subdomains."""
SUFFIX_LENGTH = 16


@dataclass(frozen=True)
class InvolvedObject:
    """The object an Event is about, as far as the cache tells objects apart: a resource deleted and created again
    under its name has another uid, and its Events start afresh."""

    namespace: str
    name: str
    uid: str = ""


@dataclass(frozen=True)
class EventWrite:
    """What the client sends: with `create`, a new Event named `name` carrying every field; else a patch of its
    count and lastTimestamp (and of its message when `combined`, whose message is the latest one)."""

    create: bool
    name: str
    involved: InvolvedObject
    type: str
    reason: str
    message: str
    count: int
    first_timestamp: datetime
    last_timestamp: datetime
    combined: bool = False


_SeriesKey = tuple[str, str, str, str, str, bytes | None]
"""namespace, name, uid, type, reason, and the message's digest (None for the combined series)."""
_SimilarKey = tuple[str, str, str, str, str]


@dataclass(slots=True)
class _Series:
    name: str
    count: int
    first: datetime
    last: datetime


@dataclass(slots=True)
class _Similar:
    last: datetime
    messages: set[bytes] = field(default_factory=set)
    """Digests of the distinct messages that got Events of their own, at most SIMILAR_LIMIT - 1."""


def _digest(text: str) -> bytes:
    # A digest rather than the message: a few thousand records of messages up to 1 KiB each would cost megabytes.
    return hashlib.blake2b(text.encode(), digest_size=16).digest()


def event_name(involved: InvolvedObject, type_: str, reason: str, message: str, first: datetime) -> str:
    """`<object name>.<16 hex digits>`, from the series' key and its first occurrence: known before the Event is
    created (a lost answer cannot leave a second copy), and new for each series, so that a series started after the
    window never collides with an older Event of the same message that the API server still keeps."""
    source = "\n".join((involved.namespace, involved.name, involved.uid, type_, reason, message, first.isoformat()))
    suffix = hashlib.blake2b(source.encode(), digest_size=SUFFIX_LENGTH // 2).hexdigest()
    prefix = involved.name[: NAME_LENGTH - SUFFIX_LENGTH - 1].rstrip(".-") or "event"
    return f"{prefix}.{suffix}"


class EventCorrelator:
    """Decides, for each Event the operator records, whether it is a new Event or a repeat of one already written."""

    def __init__(
        self,
        *,
        window: timedelta = AGGREGATION_WINDOW,
        similar_limit: int = SIMILAR_LIMIT,
        max_entries: int = CACHE_SIZE,
    ) -> None:
        if similar_limit < 1 or max_entries < 1:
            raise ValueError("the similar-event limit and the cache size must be positive")
        self.window = window
        self.similar_limit = similar_limit
        self.max_entries = max_entries
        self._series: OrderedDict[_SeriesKey, _Series] = OrderedDict()
        self._similar: OrderedDict[_SimilarKey, _Similar] = OrderedDict()

    def __len__(self) -> int:
        """Series held (each is at most one Event object)."""
        return len(self._series)

    def observe(self, involved: InvolvedObject, type_: str, reason: str, message: str, now: datetime) -> EventWrite:
        """Record one occurrence at `now` and say how to write it."""
        similar_key: _SimilarKey = (involved.namespace, involved.name, involved.uid, type_, reason)
        digest = _digest(message)
        combined = not self._own_event_allowed(similar_key, digest, now)
        if combined:
            message = COMBINED_PREFIX + message
        series_key: _SeriesKey = (*similar_key, None if combined else digest)
        series = self._series.get(series_key)
        if series is not None and now - series.last <= self.window:
            series.count += 1
            series.last = now
            self._series.move_to_end(series_key)
            create = False
        else:
            name = event_name(involved, type_, reason, message, now)
            series = _Series(name=name, count=1, first=now, last=now)
            self._put(self._series, series_key, series)
            create = True
        return EventWrite(
            create=create,
            name=series.name,
            involved=involved,
            type=type_,
            reason=reason,
            message=message,
            count=series.count,
            first_timestamp=series.first,
            last_timestamp=series.last,
            combined=combined,
        )

    def _own_event_allowed(self, key: _SimilarKey, digest: bytes, now: datetime) -> bool:
        """Whether this message gets (or keeps) an Event of its own: the first SIMILAR_LIMIT - 1 distinct messages of
        a reason within the window do; from the SIMILAR_LIMIT-th on, new messages go to the combined Event. The
        window slides: it ends AGGREGATION_WINDOW after the last Event of that reason."""
        similar = self._similar.get(key)
        if similar is None or now - similar.last > self.window:
            similar = _Similar(last=now)
            self._put(self._similar, key, similar)
        else:
            similar.last = now
            self._similar.move_to_end(key)
        if digest in similar.messages:
            return True
        if len(similar.messages) + 1 >= self.similar_limit:
            return False
        similar.messages.add(digest)
        return True

    def _put[K, V](self, cache: OrderedDict[K, V], key: K, value: V) -> None:
        cache[key] = value
        cache.move_to_end(key)
        while len(cache) > self.max_entries:
            cache.popitem(last=False)
