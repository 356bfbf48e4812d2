"""Secrets that travel inside URLs are masked before any text leaves the process (log lines, health answers).

Signed URLs carry their credential in the query string (S3's X-Amz-Signature, GCS's X-Goog-Signature, Azure's
sig, tokens of all kinds), and a URI may hold user:password@. Whoever reads the logs must not be able to fetch the
artifact, so those values are replaced wherever they appear in a text, whatever produced it.
"""

from __future__ import annotations

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
# scheme://user[:password]@host: everything between :// and the last @ before the host's end.
_USERINFO = re.compile(r"(?P<lead>\b[a-z][a-z0-9+.-]*://)[^/?#@\s\"'<>]*@", re.IGNORECASE)


def redact(text: str) -> str:
    """`text` with signed query values and URI user info replaced by REDACTED."""
    text = _QUERY.sub(lambda m: m["lead"] + REDACTED, text)
    return _USERINFO.sub(lambda m: m["lead"] + REDACTED + "@", text)
