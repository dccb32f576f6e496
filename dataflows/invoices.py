"""The pure logic of the analytics: reading an invoice event, summing a 5-second window, a customer's running
total, and the output and dead-letter records, all in integer cents. No Bytewax and no Kafka here."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal, InvalidOperation

from shopmesh.invoices import iso_millis
from shopmesh.money import MAX_CENTS, format_cents

WINDOW = timedelta(seconds=5)
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
#: Invoice ids a customer's running total remembers, to count an event published twice only once. Billing's
#: outbox publishes at least once: a repeat follows the original closely, so a short memory is enough.
REMEMBERED_IDS = 1000
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
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as error:
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
    if value >= Decimal(MAX_CENTS) / 100:  # before quantize, which fails on huge exponents
        raise BadInvoice(f"amount is too large: {amount}")
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


def window_start(window_id: int) -> datetime:
    """The start of a window, numbered as Bytewax numbers tumbling windows aligned to the epoch: window n holds
    the moments from n * 5 s to (n + 1) * 5 s after 1970-01-01T00:00:00Z."""
    return EPOCH + window_id * WINDOW


@dataclass
class WindowSum:
    """The invoices of one window so far: their total, their count, and their ids, so that an event published
    twice is counted once."""

    total_cents: int = 0
    count: int = 0
    invoice_ids: set[str] = field(default_factory=set)

    def add(self, invoice: ParsedInvoice) -> WindowSum:
        if invoice.invoice_id not in self.invoice_ids:
            self.invoice_ids.add(invoice.invoice_id)
            self.total_cents += invoice.amount_cents
            self.count += 1
        return self

    def merge(self, other: WindowSum) -> WindowSum:
        """Bytewax asks every window operator how to merge; tumbling windows never do, which is why the other
        window's invoices are taken as distinct from these."""
        self.total_cents += other.total_cents
        self.count += other.count
        self.invoice_ids |= other.invoice_ids
        return self


@dataclass
class RunningTotal:
    """A customer's total since the first invoice, and the ids of their latest invoices."""

    total_cents: int = 0
    count: int = 0
    updated_at: datetime = EPOCH
    recent_ids: dict[str, None] = field(default_factory=dict)

    def add(self, invoice: ParsedInvoice) -> bool:
        """Count the invoice; False when it was counted already."""
        if invoice.invoice_id in self.recent_ids:
            return False
        self.recent_ids[invoice.invoice_id] = None
        if len(self.recent_ids) > REMEMBERED_IDS:
            del self.recent_ids[next(iter(self.recent_ids))]
        self.total_cents += invoice.amount_cents
        self.count += 1
        self.updated_at = max(self.updated_at, invoice.issued_at)
        return True


def window_total(start: datetime, total_cents: int, count: int) -> bytes:
    return json.dumps({"window_start": iso_millis(start), "window_end": iso_millis(start + WINDOW),
                       "total": format_cents(total_cents), "count": count}).encode()


def customer_total(customer_name: str, total_cents: int, count: int, updated_at: datetime) -> bytes:
    return json.dumps({"customer_name": customer_name, "total": format_cents(total_cents), "count": count,
                       "updated_at": iso_millis(updated_at)}).encode()


def dead_letter(reason: str, raw: bytes, topic: str, partition: int, offset: int) -> bytes:
    return json.dumps({"error": reason, "raw": raw.decode("utf-8", errors="replace"), "topic": topic,
                       "partition": partition, "offset": offset}).encode()
