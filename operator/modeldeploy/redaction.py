"""Secrets that travel inside URLs are masked in every log line the operator writes.

A spec's artifact URI may be a signed URL (S3's X-Amz-Signature, GCS's X-Goog-Signature, Azure's sig, tokens of
all kinds) and reaches the operator's logs inside API errors that quote a Deployment, or a traceback. The filter
below masks those values, and URI user info, in the rendered message and traceback of every record, whichever
library logged it. The runtime masks the same set (modeldeploy_runtime/redaction.py; tests/unit/test_contract.py
keeps the two alike).
"""

from __future__ import annotations

import logging
import re

REDACTED = "REDACTED"

# Query parameters whose value is a credential or a signature, compared case-insensitively.
SECRET_QUERY_PARAMETERS = (
    "x-amz-signature",
    "x-amz-credential",
    "x-amz-security-token",
    "x-goog-signature",
    "x-goog-credential",
    "signature",
    "sig",
    "token",
    "access_token",
    "api_key",
    "apikey",
    "key",
    "password",
    "secret",
    "client_secret",
    "code",
)

_QUERY = re.compile(
    r"(?P<lead>[?&;](?:" + "|".join(re.escape(p) for p in SECRET_QUERY_PARAMETERS) + r")=)[^&;#\s\"'<>]*",
    re.IGNORECASE,
)
_USERINFO = re.compile(r"(?P<lead>\b[a-z][a-z0-9+.-]*://)[^/?#@\s\"'<>]*@", re.IGNORECASE)


def redact(text: str) -> str:
    """`text` with signed query values and URI user info replaced by REDACTED."""
    text = _QUERY.sub(lambda m: m["lead"] + REDACTED, text)
    return _USERINFO.sub(lambda m: m["lead"] + REDACTED + "@", text)


class RedactingFilter(logging.Filter):
    """Renders a record's message (and traceback) once, masked, before any formatter sees it."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        masked = redact(message)
        if masked != message:
            record.msg, record.args = masked, None
        if record.exc_info and not record.exc_text:
            # Formatters use exc_text when it is set, so the traceback is rendered here, masked.
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        return True


def install(logger: logging.Logger | None = None) -> None:
    """Mask every record that reaches the handlers of `logger` (the root logger by default)."""
    target = logger or logging.getLogger()
    for handler in target.handlers:
        if not any(isinstance(existing, RedactingFilter) for existing in handler.filters):
            handler.addFilter(RedactingFilter())
