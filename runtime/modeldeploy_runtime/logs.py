"""Kubernetes-style log lines: a klog header, a quoted message, then key=value pairs.

    I1127 09:25:26.123456    4242 loading.py:88] "Loaded model" model="iris" version="1.2.0" seconds=0.41

The same shape as the control plane's own components, so one grep or one log query works across both.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time

from modeldeploy_runtime.redaction import redact

_LEVEL_LETTERS = {logging.DEBUG: "D", logging.INFO: "I", logging.WARNING: "W", logging.ERROR: "E"}
LOG_LEVEL_ENV = "SELDON_LOG_LEVEL"


def format_value(value: object) -> str:
    """Strings are JSON-quoted so spaces, quotes and newlines inside them never break a line apart."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if value is None:
        return "null"
    return json.dumps(str(value))


def kv(message: str, **fields: object) -> str:
    """Render a structured message: `"Loaded model" model="iris" seconds=0.41`."""
    parts = [json.dumps(message)]
    parts.extend(f"{key}={format_value(value)}" for key, value in fields.items())
    return " ".join(parts)


class KlogFormatter(logging.Formatter):
    """klog's header, with the process id where klog puts a thread id: the server runs several processes.

    Signed query strings and URI user info are masked (see redaction.py)."""

    def format(self, record: logging.LogRecord) -> str:
        letter = _LEVEL_LETTERS.get(record.levelno, "E" if record.levelno > logging.ERROR else "I")
        seconds = time.localtime(record.created)
        micros = int((record.created % 1) * 1_000_000)
        header = (
            f"{letter}{time.strftime('%m%d %H:%M:%S', seconds)}.{micros:06d} {record.process:>7} "
            f"{record.filename}:{record.lineno}]"
        )
        line = f"{header} {record.getMessage()}"
        if record.exc_info:
            line = f"{line}\n{self.formatException(record.exc_info)}"
        # Every line, whoever logged it: a library's error message may quote a signed URL too.
        return redact(line)


def configure_logging(level: str | None = None) -> None:
    """Route every logger through one stderr handler; seldon's later basicConfig call then changes nothing."""
    chosen = (level or os.environ.get(LOG_LEVEL_ENV) or "INFO").upper()
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(KlogFormatter())
    root = logging.getLogger()
    for existing in list(root.handlers):
        root.removeHandler(existing)
    root.addHandler(handler)
    root.setLevel(getattr(logging, chosen, logging.INFO))
