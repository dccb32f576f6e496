"""The pure logic of the analytics: reading an invoice event, summing a 5-second window, a customer's running
total, and the output and dead-letter records, all in integer cents. No Bytewax and no Kafka here."""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal, InvalidOperation

from shopmesh.runtime.invoices import iso_millis
from shopmesh.runtime.money import MAX_CENTS, format_cents

WINDOW = timedelta(seconds=5)
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
#: Invoice ids a customer's running total remembers, to count an event published twice only once. Billing's
#: outbox publishes at least once: a repeat follows the original closely, so a short memory is enough.
REMEMBERED_IDS = 1000
_FIELDS = ("invoice_id", "customer_name", "amount", "issued_at")
#: One decoder for every message (json.loads with parse_float builds a new one per call); parse_float keeps a
#: JSON number such as 123.45 exact: it never becomes a binary float.
_DECODER = json.JSONDecoder(parse_float=Decimal)
#: Bounds of what is counted: ids and names as the services bound them, so no state or record grows with input.
MAX_INVOICE_ID = 64
MAX_CUSTOMER_NAME = 200
#: How much of an unreadable message a dead letter carries: records stay far below Kafka's message size limit.
MAX_DEAD_LETTER_RAW = 16 * 1024
MAX_DEAD_LETTER_KEY = 1024


class BadInvoice(ValueError):
    """An event that cannot be counted; the message is the reason written to the dead-letter topic."""


@dataclass(frozen=True)
class ParsedInvoice:
    invoice_id: str
    customer_name: str
    amount_cents: int
    issued_at: datetime


def parse(raw: bytes, now: datetime | None = None, max_skew: timedelta = timedelta(minutes=5)) -> ParsedInvoice:
    """An invoice event of the contract, or BadInvoice naming what is wrong. Whatever the bytes, nothing else is
    raised: one message must never stop a dataflow.

    An invoice issued more than max_skew after now (the dataflow's clock) is refused as `future`: counted, it
    would move the windows' event clock ahead and make every current invoice late."""
    try:
        # As json.loads reads bytes: UTF-8, -16 or -32 by their first bytes. An object that starts "{" with no NUL
        # in its first four bytes is UTF-8 by json.detect_encoding's own rules, asked of nearly every message.
        encoding = "utf-8" if raw[:1] == b"{" and b"\x00" not in raw[:4] else json.detect_encoding(raw)
        event = _DECODER.decode(raw.decode(encoding, "surrogatepass"))
    except (ValueError, RecursionError) as error:
        # ValueError covers bad UTF-8, bad JSON, and integers past Python's digit limit for int().
        raise BadInvoice(f"not JSON: {_short(str(error))}") from None
    if not isinstance(event, dict):
        raise BadInvoice("not a JSON object")
    missing = [name for name in _FIELDS if name not in event]
    if missing:
        raise BadInvoice(f"missing field {missing[0]}")
    for name, limit in (("invoice_id", MAX_INVOICE_ID), ("customer_name", MAX_CUSTOMER_NAME)):
        if not isinstance(event[name], str) or not event[name].strip():
            raise BadInvoice(f"{name} must be a non-empty string")
        if len(event[name]) > limit:
            raise BadInvoice(f"{name} is longer than {limit} characters")
    issued_at = _moment(event["issued_at"])
    if issued_at > (now or datetime.now(UTC)) + max_skew:
        raise BadInvoice(f"future: issued_at {iso_millis(issued_at)} is more than {max_skew.total_seconds():g} s "
                         "ahead of the dataflow's clock")
    return ParsedInvoice(event["invoice_id"], event["customer_name"], _cents(event["amount"]), issued_at)


def _short(text: str, limit: int = 200) -> str:
    return text if len(text) <= limit else f"{text[:limit]}…"


def _cents(amount) -> int:
    if isinstance(amount, bool) or not isinstance(amount, (int, Decimal, str)):
        raise BadInvoice(f"amount must be a number or a numeric string, not {_short(json.dumps(amount, default=str))}")
    if isinstance(amount, str) and len(amount) > 40:
        raise BadInvoice(f"amount is not numeric: a string of {len(amount)} characters")
    try:
        value = Decimal(amount.strip() if isinstance(amount, str) else amount)
    except InvalidOperation:
        raise BadInvoice(f"amount is not numeric: {amount!r}") from None
    if not value.is_finite():
        raise BadInvoice(f"amount is not a finite number: {amount!r}")
    if value < 0:
        raise BadInvoice(f"amount is negative: {_short(str(amount))}")
    if value >= Decimal(MAX_CENTS) / 100:  # before quantize, which fails on huge exponents
        raise BadInvoice(f"amount is too large: {_short(str(amount))}")
    if value != value.quantize(Decimal("0.01")):
        raise BadInvoice(f"amount has more than two decimals: {_short(str(amount))}")
    return int(value * 100)


def _moment(text) -> datetime:
    if not isinstance(text, str):
        raise BadInvoice("issued_at must be an ISO 8601 string")
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise BadInvoice(f"issued_at is not an ISO 8601 timestamp: {_short(repr(text))}") from None
    if moment.tzinfo is None:
        raise BadInvoice(f"issued_at has no time zone: {_short(repr(text))}")
    try:
        # An offset can push a moment past year 9999 or before year 1, which datetime cannot hold.
        moment = moment.astimezone(UTC)
    except (OverflowError, ValueError):
        raise BadInvoice(f"issued_at is out of range: {_short(repr(text))}") from None
    if moment < EPOCH:
        raise BadInvoice(f"issued_at is before 1970: {_short(repr(text))}")
    return moment


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

    def __deepcopy__(self, memo: dict) -> RunningTotal:
        # Bytewax deep-copies the state at every snapshot: the ids are strings, so a copy of the dict is enough,
        # and many times cheaper than copying each key.
        return RunningTotal(self.total_cents, self.count, self.updated_at, dict(self.recent_ids))

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
    # Written out by hand, the name as JSON once per customer: json.dumps of the whole record was a third of the
    # dataflow's time. The same bytes as json.dumps of the dict (a unit test says so).
    return (f'{{"customer_name": {_json_string(customer_name)}, "total": "{format_cents(total_cents)}", '
            f'"count": {count}, "updated_at": "{iso_millis(updated_at)}"}}').encode()


@functools.lru_cache(maxsize=4096)
def _json_string(text: str) -> str:
    return json.dumps(text)


def dead_letter(reason: str, raw: bytes, topic: str, partition: int, offset: int) -> bytes:
    """The dead-letter record of a message. A longer message than MAX_DEAD_LETTER_RAW is cut to that many bytes
    and its full size given as raw_bytes; topic, partition and offset still find it whole."""
    record = {"error": reason, "raw": raw[:MAX_DEAD_LETTER_RAW].decode("utf-8", errors="replace"), "topic": topic,
              "partition": partition, "offset": offset}
    if len(raw) > MAX_DEAD_LETTER_RAW:
        record["raw_bytes"] = len(raw)
    return json.dumps(record).encode()


def dead_letter_key(key: bytes | None) -> bytes | None:
    """The dead letter is keyed as the message was, cut to MAX_DEAD_LETTER_KEY bytes."""
    return key[:MAX_DEAD_LETTER_KEY] if key is not None else None
