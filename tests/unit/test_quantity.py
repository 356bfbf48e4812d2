"""parse_quantity(): Kubernetes resource quantities as exact Decimals, and everything else refused."""

from __future__ import annotations

from decimal import Decimal

import pytest

from modeldeploy.api.quantity import parse_quantity


@pytest.mark.parametrize(
    ("text", "amount"),
    [
        pytest.param("0", "0", id="zero"),
        pytest.param("1", "1", id="plain"),
        pytest.param("250", "250", id="plain-digits"),
        pytest.param("0.5", "0.5", id="decimal"),
        pytest.param(".5", "0.5", id="no-integer-part"),
        pytest.param("5.", "5", id="no-fraction-digits"),
        pytest.param("+3", "3", id="plus-sign"),
        pytest.param("-3", "-3", id="minus-sign"),
        pytest.param("-.5m", "-0.0005", id="minus-fraction-milli"),
        pytest.param("100n", "0.0000001", id="nano"),
        pytest.param("3u", "0.000003", id="micro"),
        pytest.param("250m", "0.25", id="milli"),
        pytest.param("1000m", "1", id="milli-whole"),
        pytest.param("2k", "2000", id="kilo"),
        pytest.param("1M", "1000000", id="mega"),
        pytest.param("1G", "1000000000", id="giga"),
        pytest.param("1T", "1000000000000", id="tera"),
        pytest.param("1P", "1000000000000000", id="peta"),
        pytest.param("1E", "1000000000000000000", id="exa-is-a-suffix-alone"),
        pytest.param("1Ki", "1024", id="kibi"),
        pytest.param("1.5Ki", "1536", id="kibi-fraction"),
        pytest.param("1Mi", "1048576", id="mebi"),
        pytest.param("1Gi", "1073741824", id="gibi"),
        pytest.param("1Ti", "1099511627776", id="tebi"),
        pytest.param("1Pi", "1125899906842624", id="pebi"),
        pytest.param("1Ei", "1152921504606846976", id="exbi"),
        pytest.param("1e3", "1000", id="exponent"),
        pytest.param("1E3", "1000", id="exponent-capital"),
        pytest.param("1e+3", "1000", id="exponent-plus"),
        pytest.param("5e-3", "0.005", id="exponent-negative"),
        pytest.param("1.5e2", "150", id="exponent-on-a-decimal"),
        pytest.param(
            "123456789012345678901234567890Ei", "142335986942043633765524427376410106750713200640", id="exact"
        ),
    ],
)
def test_quantities(text: str, amount: str) -> None:
    assert parse_quantity(text) == Decimal(amount)


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("", id="empty"),
        pytest.param(" 1", id="leading-space"),
        pytest.param("1 ", id="trailing-space"),
        pytest.param("1 Gi", id="inner-space"),
        pytest.param(".", id="only-a-point"),
        pytest.param("+", id="only-a-sign"),
        pytest.param("+-1", id="two-signs"),
        pytest.param("1.2.3", id="two-points"),
        pytest.param("Gi", id="no-number"),
        pytest.param("1K", id="capital-k"),
        pytest.param("1gi", id="lower-case-binary"),
        pytest.param("1KiB", id="bytes-unit"),
        pytest.param("1mm", id="two-suffixes"),
        pytest.param("1e", id="exponent-without-digits"),
        pytest.param("1e1.5", id="fractional-exponent"),
        pytest.param("1e3k", id="exponent-and-suffix"),
        pytest.param("0x10", id="hexadecimal"),
        pytest.param("\u0661", id="non-ascii-digit"),
        pytest.param("NaN", id="nan"),
        pytest.param("Infinity", id="infinity"),
    ],
)
def test_not_quantities(text: str) -> None:
    with pytest.raises(ValueError, match="not a quantity"):
        parse_quantity(text)


def test_integers_are_quantities_and_booleans_are_not() -> None:
    assert parse_quantity(3) == Decimal(3)
    with pytest.raises(ValueError, match="not a quantity"):
        parse_quantity(True)


@pytest.mark.parametrize(
    ("left", "right"),
    [("1", "1000m"), ("1Gi", "1024Mi"), ("0.5", "500m"), ("1k", "1e3"), ("2", 2), ("1Ki", 1024)],
)
def test_equal_amounts_in_different_forms(left: str | int, right: str | int) -> None:
    assert parse_quantity(left) == parse_quantity(right)
