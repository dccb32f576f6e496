"""Property-based tests (Hypothesis) of the dataflows' parsing and windows: whatever the bytes on FACTURATION,
parse answers an invoice or BadInvoice, never anything else; the sums are exact; every record written, dead
letters included, is JSON of bounded size."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dataflows.totals import (
    EPOCH,
    MAX_DEAD_LETTER_RAW,
    RunningTotal,
    WindowSum,
    customer_total,
    dead_letter,
    dead_letter_key,
    window_total,
)
from shopmesh.runtime.invoices import BadInvoice, Invoice, parse
from shopmesh.runtime.money import MAX_CENTS

NOW = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
#: A Kafka record the broker takes by default is at most about 1 MB; dead letters stay far below.
RECORD_BOUND = 64 * 1024

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=12,
)
timestamps = st.one_of(
    st.datetimes(timezones=st.timezones()).map(lambda moment: moment.isoformat()),
    st.text(max_size=40),
    json_values,
)
amounts = st.one_of(
    st.integers(),
    st.decimals(allow_nan=True, allow_infinity=True).map(str),
    st.text(max_size=30),
    st.floats(),
    json_values,
)


def _parse_or_bad(raw: bytes) -> Invoice | BadInvoice:
    try:
        return parse(raw, now=NOW)
    except BadInvoice as reason:
        return reason


@settings(max_examples=500)
@given(st.binary(max_size=2000))
def test_any_bytes_are_an_invoice_or_a_reason(raw):
    result = _parse_or_bad(raw)
    assert isinstance(result, (Invoice, BadInvoice))
    record = dead_letter(str(result), raw, "FACTURATION", 0, 0) if isinstance(result, BadInvoice) else b""
    assert len(record) < RECORD_BOUND
    if record:
        json.loads(record)


@settings(max_examples=500)
@given(
    st.fixed_dictionaries(
        {},
        optional={
            "invoice_id": st.one_of(st.text(max_size=80), json_values),
            "customer_name": st.one_of(st.text(max_size=250), json_values),
            "amount": amounts,
            "issued_at": timestamps,
        },
    ),
    st.dictionaries(st.text(max_size=5), json_values, max_size=3),
)
def test_any_json_object_is_an_invoice_or_a_reason(fields, extra):
    raw = json.dumps({**extra, **fields}, default=str).encode()
    result = _parse_or_bad(raw)
    if isinstance(result, Invoice):
        assert 0 <= result.amount_cents < MAX_CENTS
        assert EPOCH <= result.issued_at <= NOW + timedelta(minutes=5)
        assert result.issued_at.tzinfo is not None
        assert 0 < len(result.invoice_id) <= 64 and 0 < len(result.customer_name) <= 200


@given(
    st.integers(min_value=0, max_value=MAX_CENTS - 1),
    st.datetimes(min_value=datetime(1970, 1, 1), max_value=datetime(2026, 11, 30, 12, 4)),
)
def test_a_contract_invoice_reads_back_exactly(cents, moment):
    issued = moment.replace(tzinfo=UTC)
    raw = json.dumps(
        {"invoice_id": "i", "customer_name": "Imane", "amount": Decimal(cents) / 100, "issued_at": issued.isoformat()},
        default=str,
    ).encode()
    invoice = parse(raw, now=NOW)
    assert invoice.amount_cents == cents and invoice.issued_at == issued


@pytest.mark.parametrize(
    "raw, reason",
    [
        # Python refuses to turn more than 4,300 digits into an int: the message is still only a bad invoice.
        (
            b'{"invoice_id": "a", "customer_name": "C", "amount": '
            + b"9" * 5000
            + b', "issued_at": "2026-01-01T00:00:00Z"}',
            "not JSON",
        ),
        (
            b'{"invoice_id": "a", "customer_name": "C", "amount": 1, "issued_at": "9999-12-31T23:59:59-23:59"}',
            "issued_at is out of range",
        ),
        (
            b'{"invoice_id": "a", "customer_name": "C", "amount": 1, "issued_at": "0001-01-01T00:00:00+01:00"}',
            "issued_at is out of range",
        ),
        (b'{"invoice_id": "a", "customer_name": "C", "amount": 1, "issued_at": "2999-01-01T00:00:00Z"}', "future"),
        (b'{"invoice_id": "a", "customer_name": "C", "amount": 1, "issued_at": "1969-12-31T23:59:59Z"}', "before 1970"),
        (b'{"invoice_id": "a", "customer_name": "C", "amount": 1e-999999999, "issued_at": "2026-01-01T00:00:00Z"}', ""),
        (b"[" * 100_000, "not JSON"),
    ],
)
def test_the_poison_messages_seen_are_bad_invoices(raw, reason):
    result = _parse_or_bad(raw)
    assert isinstance(result, BadInvoice), result
    assert str(result).startswith(reason) or reason in str(result)


def test_an_invoice_a_little_ahead_of_the_clock_is_counted_and_further_is_future():
    def at(moment: datetime) -> bytes:
        return json.dumps(
            {"invoice_id": "a", "customer_name": "C", "amount": 1, "issued_at": moment.isoformat()}
        ).encode()

    assert parse(at(NOW + timedelta(seconds=299)), now=NOW).issued_at == NOW + timedelta(seconds=299)
    with pytest.raises(BadInvoice, match=r"^future"):
        parse(at(NOW + timedelta(seconds=301)), now=NOW)


invoices = st.builds(
    Invoice,
    invoice_id=st.sampled_from([f"i{n}" for n in range(30)]),
    customer_name=st.sampled_from(["Imane", "Mohamed"]),
    amount_cents=st.integers(min_value=0, max_value=MAX_CENTS - 1),
    issued_at=st.just(NOW),
)


@given(st.lists(invoices, max_size=60))
def test_a_window_counts_each_invoice_id_once_and_sums_exactly(batch):
    window = WindowSum()
    for invoice in batch:
        window.add(invoice)
    first = {}
    for invoice in batch:
        first.setdefault(invoice.invoice_id, invoice)
    assert window.count == len(first)
    assert window.total_cents == sum(invoice.amount_cents for invoice in first.values())
    assert (
        json.loads(window_total(NOW, window.total_cents, window.count))["total"]
        == f"{Decimal(window.total_cents) / 100:.2f}"
    )


@given(st.lists(invoices, max_size=60))
def test_a_running_total_counts_each_invoice_id_once(batch):
    totals: dict[str, RunningTotal] = {}
    for invoice in batch:
        totals.setdefault(invoice.customer_name, RunningTotal()).add(invoice)
    for name, total in totals.items():
        ids = {invoice.invoice_id: invoice for invoice in reversed(batch) if invoice.customer_name == name}
        assert total.count == len(ids)
        record = json.loads(customer_total(name, total.total_cents, total.count, total.updated_at))
        assert record["count"] == total.count


@given(st.binary(max_size=4 * MAX_DEAD_LETTER_RAW), st.one_of(st.none(), st.binary(max_size=5000)))
def test_a_dead_letter_of_any_message_is_bounded_json(raw, key):
    record = json.loads(dead_letter("not JSON", raw, "FACTURATION", 2, 10**12))
    assert record.get("raw_bytes", len(raw)) == len(raw) and record["offset"] == 10**12
    assert ("raw_bytes" in record) == (len(raw) > MAX_DEAD_LETTER_RAW)
    assert len(record["raw"].encode()) <= 3 * MAX_DEAD_LETTER_RAW  # replacement characters may widen bytes
    assert key is None or len(dead_letter_key(key)) <= 1024


@given(
    st.text(max_size=200),
    st.integers(0, MAX_CENTS - 1),
    st.integers(0, 10**9),
    st.datetimes(min_value=datetime(1970, 1, 1), timezones=st.just(UTC)),
)
def test_a_customer_total_is_the_json_of_its_fields_byte_for_byte(name, cents, count, moment):
    from shopmesh.runtime.invoices import iso_millis
    from shopmesh.runtime.money import format_cents

    expected = json.dumps(
        {"customer_name": name, "total": format_cents(cents), "count": count, "updated_at": iso_millis(moment)}
    ).encode()
    assert customer_total(name, cents, count, moment) == expected


@given(st.datetimes(min_value=datetime(1000, 1, 1), timezones=st.timezones()))
def test_a_moment_is_written_in_utc_to_the_millisecond(moment):
    from shopmesh.runtime.invoices import iso_millis

    written = iso_millis(moment)
    utc = moment.astimezone(UTC)
    assert written == utc.strftime("%Y-%m-%dT%H:%M:%S.") + f"{utc.microsecond // 1000:03d}Z"
    assert datetime.fromisoformat(written.replace("Z", "+00:00")) == utc.replace(
        microsecond=utc.microsecond // 1000 * 1000
    )


@given(st.sampled_from(["utf-16", "utf-16-le", "utf-32", "utf-8-sig"]))
def test_an_invoice_in_any_json_encoding_is_read_as_json_loads_reads_it(encoding):
    text = '{"invoice_id": "i", "customer_name": "C", "amount": 1.5, "issued_at": "2026-11-30T11:00:00Z"}'
    assert parse(text.encode(encoding), now=NOW).amount_cents == 150


def test_a_snapshot_of_a_running_total_does_not_change_with_it():
    import copy

    total = RunningTotal()
    total.add(Invoice("a", "C", 100, NOW))
    kept = copy.deepcopy(total)
    total.add(Invoice("b", "C", 50, NOW + timedelta(seconds=1)))
    assert (kept.total_cents, kept.count, kept.updated_at, list(kept.recent_ids)) == (100, 1, NOW, ["a"])
    assert (total.total_cents, total.count, list(total.recent_ids)) == (150, 2, ["a", "b"])


@given(st.binary(max_size=64))
def test_the_encoding_of_a_message_is_the_one_json_loads_would_take(raw):
    try:
        expected = json.loads(raw)
    except (ValueError, RecursionError):
        expected = None
    try:
        parse(raw, now=NOW)
    except BadInvoice as reason:
        # Bytes json.loads reads are never refused as not JSON.
        assert expected is None or not str(reason).startswith("not JSON"), (raw, reason)
