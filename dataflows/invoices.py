"""The pure logic of the analytics: reading an invoice event, aligning it to its 5-second window, and the
output and dead-letter records, all in integer cents."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal, InvalidOperation

from shopmesh.invoices import iso_millis
from shopmesh.money import format_cents

WINDOW = timedelta(seconds=5)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_FIELDS = ("invoice_id", "customer_name", "amount", "issued_at")


class BadInvoice(ValueError):
    """An event that cannot be counted; the message is the reason written to the dead-letter topic."""


@dataclass(frozen=True)
class ParsedInvoice:
    invoice_id: str
    customer_name: str
    amount_cents: int
    issued_at: datetime


def parse(raw: bytes) -> ParsedInvoice:
    """An invoice event of the contract, or BadInvoice naming what is wrong."""
    try:
        # parse_float keeps a JSON number such as 123.45 exact: it never becomes a binary float.
        event = json.loads(raw, parse_float=Decimal)
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise BadInvoice(f"not JSON: {error}") from None
    if not isinstance(event, dict):
        raise BadInvoice("not a JSON object")
    missing = [name for name in _FIELDS if name not in event]
    if missing:
        raise BadInvoice(f"missing field {missing[0]}")
    for name in ("invoice_id", "customer_name"):
        if not isinstance(event[name], str) or not event[name].strip():
            raise BadInvoice(f"{name} must be a non-empty string")
    return ParsedInvoice(event["invoice_id"], event["customer_name"], _cents(event["amount"]),
                         _moment(event["issued_at"]))


def _cents(amount) -> int:
    if isinstance(amount, bool) or not isinstance(amount, (int, Decimal, str)):
        raise BadInvoice(f"amount must be a number or a numeric string, not {json.dumps(amount, default=str)}")
    try:
        value = Decimal(amount.strip() if isinstance(amount, str) else amount)
    except InvalidOperation:
        raise BadInvoice(f"amount is not numeric: {amount!r}") from None
    if not value.is_finite():
        raise BadInvoice(f"amount is not a finite number: {amount!r}")
    if value < 0:
        raise BadInvoice(f"amount is negative: {amount}")
    if value != value.quantize(Decimal("0.01")):
        raise BadInvoice(f"amount has more than two decimals: {amount}")
    return int(value * 100)


def _moment(text) -> datetime:
    if not isinstance(text, str):
        raise BadInvoice("issued_at must be an ISO 8601 string")
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise BadInvoice(f"issued_at is not an ISO 8601 timestamp: {text!r}") from None
    if moment.tzinfo is None:
        raise BadInvoice(f"issued_at has no time zone: {text!r}")
    return moment.astimezone(UTC)


def window_start(moment: datetime) -> datetime:
    """The start of the 5-second window holding moment, windows aligned to multiples of 5 s since the epoch."""
    return moment - (moment - _EPOCH) % WINDOW


def window_total(start: datetime, total_cents: int, count: int) -> bytes:
    return json.dumps({"window_start": iso_millis(start), "window_end": iso_millis(start + WINDOW),
                       "total": format_cents(total_cents), "count": count}).encode()


def customer_total(customer_name: str, total_cents: int, count: int, updated_at: datetime) -> bytes:
    return json.dumps({"customer_name": customer_name, "total": format_cents(total_cents), "count": count,
                       "updated_at": iso_millis(updated_at)}).encode()


def dead_letter(reason: str, raw: bytes, topic: str, partition: int, offset: int) -> bytes:
    return json.dumps({"error": reason, "raw": raw.decode("utf-8", errors="replace"), "topic": topic,
                       "partition": partition, "offset": offset}).encode()
