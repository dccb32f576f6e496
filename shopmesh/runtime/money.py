"""Money as integer cents: parsed from and written as decimal strings, never through binary floating point."""

from __future__ import annotations

import re
from decimal import Decimal

from shopmesh.runtime.errors import InvalidArgument, shown

#: Upper bound of one price or amount: enough for a shop, far from int64's limit in any sum.
MAX_CENTS = 10**13
#: Plain ASCII decimals only: no sign, exponent, digit separator ("1_000") or non-ASCII digit ("١٢٣"), which
#: Python's Decimal and int would all accept. The length bound keeps any parse cheap.
_DECIMAL = re.compile(r"(?P<whole>[0-9]{1,30})(?:\.(?P<fraction>[0-9]{1,30}))?", re.ASCII)
_NOT_FINITE = ("nan", "snan", "inf", "infinity")


class BadAmount(ValueError):
    """An amount that is not money; the message says what is wrong, to follow the field's name."""


def to_cents(amount: int | Decimal | str) -> int:
    """The one parser of money: 12, Decimal('12.5') or '12.5' -> 1250.

    A string must be a plain, non-negative ASCII decimal ('12.50'); a number (an int, or a Decimal as JSON numbers
    are read) must be finite and non-negative. Either has at most two decimals and stays below MAX_CENTS."""
    if isinstance(amount, str):
        cleaned = amount.strip(" \t")
        match = _DECIMAL.fullmatch(cleaned)
        if match is None:
            if cleaned.startswith("-") and _DECIMAL.fullmatch(cleaned[1:]):
                raise BadAmount(f"is negative: {shown(amount)}")
            kind = "is not a finite number" if cleaned.lower().lstrip("+-") in _NOT_FINITE else "is not numeric"
            raise BadAmount(f'{kind}: a plain decimal number such as "12.50" is wanted, not {shown(amount)}')
        fraction = (match["fraction"] or "").rstrip("0")
        if len(fraction) > 2:
            raise BadAmount(f"has more than two decimals: {shown(amount)}")
        cents = int(match["whole"]) * 100 + int(fraction.ljust(2, "0"))
    elif isinstance(amount, (int, Decimal)) and not isinstance(amount, bool):
        value = Decimal(amount)
        if not value.is_finite():
            raise BadAmount(f"is not a finite number: {amount}")
        if value < 0:
            raise BadAmount(f"is negative: {shown(str(amount))}")
        if value >= Decimal(MAX_CENTS) / 100:  # before quantize, which fails on huge exponents
            raise BadAmount(f"is too large: at most {format_cents(MAX_CENTS - 1)}, got {shown(str(amount))}")
        if value != value.quantize(Decimal("0.01")):
            raise BadAmount(f"has more than two decimals: {shown(str(amount))}")
        cents = int(value * 100)
    else:
        raise BadAmount(f"must be a number or a numeric string, not {type(amount).__name__}")
    if cents >= MAX_CENTS:
        raise BadAmount(f"is too large: at most {format_cents(MAX_CENTS - 1)}, got {shown(str(amount))}")
    return cents


def parse_cents(text: str, field: str) -> int:
    """A price or amount of a request, as to_cents reads it, or InvalidArgument naming the field."""
    try:
        return to_cents(text)
    except BadAmount as error:
        raise InvalidArgument(field, str(error)) from None


def format_cents(cents: int) -> str:
    """1250 -> '12.50'."""
    sign = "-" if cents < 0 else ""
    whole, fraction = divmod(abs(cents), 100)
    return f"{sign}{whole}.{fraction:02d}"
