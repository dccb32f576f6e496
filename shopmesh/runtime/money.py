"""Money as integer cents: parsed from and written as decimal strings, never through binary floating point."""

from __future__ import annotations

import re

from shopmesh.runtime.errors import InvalidArgument, shown

#: Upper bound of one price or amount: enough for a shop, far from int64's limit in any sum.
MAX_CENTS = 10**13
#: Plain ASCII decimals only: no sign, exponent, digit separator ("1_000") or non-ASCII digit ("١٢٣"), which
#: Python's Decimal and int would all accept. The length bound keeps any parse cheap.
_DECIMAL = re.compile(r"(?P<whole>[0-9]{1,30})(?:\.(?P<fraction>[0-9]{1,30}))?", re.ASCII)


def parse_cents(text: str, field: str) -> int:
    """'12.5' -> 1250. Rejects what is not a plain, non-negative ASCII decimal with at most two decimals."""
    cleaned = text.strip(" \t")
    match = _DECIMAL.fullmatch(cleaned)
    if match is None:
        if cleaned.startswith("-") and _DECIMAL.fullmatch(cleaned[1:]):
            raise InvalidArgument(field, f"must not be negative, got {shown(text)}")
        raise InvalidArgument(field, f"must be a plain decimal number such as \"12.50\", not {shown(text)}")
    fraction = (match["fraction"] or "").rstrip("0")
    if len(fraction) > 2:
        raise InvalidArgument(field, f"must have at most two decimals, got {shown(text)}")
    cents = int(match["whole"]) * 100 + int(fraction.ljust(2, "0"))
    if cents >= MAX_CENTS:
        raise InvalidArgument(field, f"is too large: at most {format_cents(MAX_CENTS - 1)}, got {shown(text)}")
    return cents


def format_cents(cents: int) -> str:
    """1250 -> '12.50'."""
    sign = "-" if cents < 0 else ""
    whole, fraction = divmod(abs(cents), 100)
    return f"{sign}{whole}.{fraction:02d}"
