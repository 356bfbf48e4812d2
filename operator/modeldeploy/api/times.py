"""Times and durations as status and spec write them."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta


def format_time(moment: datetime) -> str:
    # Microseconds: timed decisions (deadlines, pauses, measurements) resume exactly after a restart.
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_time(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


_DURATION = re.compile(r"^([0-9]+)(s|m|h)?$")


def parse_duration(text: str) -> timedelta:
    """'30s', '5m', '1h' or a bare number of seconds (the forms admission accepts)."""
    match = _DURATION.match(text)
    if match is None:
        raise ValueError(f"not a duration: {text!r}")
    number, unit = int(match.group(1)), match.group(2) or "s"
    return timedelta(seconds=number * {"s": 1, "m": 60, "h": 3600}[unit])
