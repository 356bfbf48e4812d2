"""Kubernetes resource quantities ("500m", "1.5Gi", "1e3") as exact numbers, so that equal amounts compare equal.

The grammar is apimachinery's: an optionally signed decimal number, then one suffix at most, either binary (Ki Mi Gi
Ti Pi Ei), decimal (n u m k M G T P E) or a decimal exponent (e or E and a signed integer). "1E" is 10^18, "1E3" is
1000; nothing else (no spaces, no "K", no "1e") is a quantity.
"""

from __future__ import annotations

import decimal
import re
from decimal import Decimal

_QUANTITY = re.compile(
    r"(?P<number>[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+))"
    r"(?:(?P<suffix>[KMGTPE]i|[numkMGTPE])|[eE](?P<exponent>[+-]?[0-9]+))?"
)
_BINARY_POWERS = {"Ki": 1, "Mi": 2, "Gi": 3, "Ti": 4, "Pi": 5, "Ei": 6}
_DECIMAL_EXPONENTS = {"n": -9, "u": -6, "m": -3, "k": 3, "M": 6, "G": 9, "T": 12, "P": 15, "E": 18}
# Enough digits that no quantity anyone writes is rounded (the default context keeps 28).
_EXACT = decimal.Context(prec=80)


def parse_quantity(value: str | int) -> Decimal:
    """The amount a quantity stands for; ValueError when `value` is not a quantity."""
    if isinstance(value, bool):
        raise ValueError(f"not a quantity: {value!r}")
    if isinstance(value, int):
        return Decimal(value)
    match = _QUANTITY.fullmatch(value)
    if match is None:
        raise ValueError(f"not a quantity: {value!r}")
    number = Decimal(match["number"])
    suffix = match["suffix"]
    if suffix in _BINARY_POWERS:
        return _EXACT.multiply(number, Decimal(1024) ** _BINARY_POWERS[suffix])
    exponent = _DECIMAL_EXPONENTS[suffix] if suffix else int(match["exponent"] or 0)
    return number.scaleb(exponent, _EXACT)
