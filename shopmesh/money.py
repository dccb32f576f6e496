"""Money as integer cents: parsed from and written as decimal strings, never through binary floating point."""

from __future__ import annotations

from decimal import Decimal, InvalidOperation

from shopmesh.errors import InvalidArgument

#: Upper bound of one price or amount: enough for a shop, far from int64's limit in any sum.
MAX_CENTS = 10**13


def parse_cents(text: str, field: str) -> int:
    """'12.5' -> 1250. Rejects what is not a plain, non-negative decimal with at most two decimals."""
    cleaned = text.strip()
    try:
        value = Decimal(cleaned)
    except InvalidOperation:
        raise InvalidArgument(field, f"must be a decimal number such as \"12.50\", not {text!r}") from None
    if not value.is_finite() or "e" in cleaned.lower():
        raise InvalidArgument(field, f"must be a plain decimal number such as \"12.50\", not {text!r}")
    if value < 0:
        raise InvalidArgument(field, f"must not be negative, got {text!r}")
    if value != value.quantize(Decimal("0.01")):
        raise InvalidArgument(field, f"must have at most two decimals, got {text!r}")
    cents = int(value * 100)
    if cents >= MAX_CENTS:
        raise InvalidArgument(field, f"is too large, got {text!r}")
    return cents


def format_cents(cents: int) -> str:
    """1250 -> '12.50'."""
    sign = "-" if cents < 0 else ""
    whole, fraction = divmod(abs(cents), 100)
    return f"{sign}{whole}.{fraction:02d}"
