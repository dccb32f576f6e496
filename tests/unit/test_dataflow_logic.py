"""The analytics' pure logic: parsing invoices, 5-second windows, output and dead-letter records."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from dataflows.invoices import BadInvoice, customer_total, dead_letter, parse, window_start, window_total


def _raw(**fields) -> bytes:
    event = {"invoice_id": "i-1", "customer_name": "Imane", "amount": 12.5,
             "issued_at": "2026-11-28T23:00:03.250Z", **fields}
    return json.dumps({k: v for k, v in event.items() if v is not ...}).encode()


def test_a_contract_invoice_is_read_exactly():
    invoice = parse(b'{"invoice_id": "a", "customer_name": "Imane", "amount": 0.10, '
                    b'"issued_at": "2026-11-28T23:00:00.123Z"}')
    assert (invoice.invoice_id, invoice.customer_name, invoice.amount_cents) == ("a", "Imane", 10)
    assert invoice.issued_at == datetime(2026, 11, 28, 23, 0, 0, 123000, tzinfo=UTC)


@pytest.mark.parametrize("amount, cents", [(12, 1200), ("12.30", 1230), (" 7 ", 700), (0, 0)])
def test_an_amount_may_be_a_number_or_a_numeric_string(amount, cents):
    assert parse(_raw(amount=amount)).amount_cents == cents


def test_a_timestamp_with_an_offset_is_read_in_utc():
    assert parse(_raw(issued_at="2026-11-29T00:00:03+01:00")).issued_at == datetime(2026, 11, 28, 23, 0, 3,
                                                                                      tzinfo=UTC)


@pytest.mark.parametrize("raw, reason", [
    (b"not json", "not JSON"),
    (b"[1, 2]", "not a JSON object"),
    (_raw(amount=...), "missing field amount"),
    (_raw(customer_name=""), "customer_name must be a non-empty string"),
    (_raw(amount=-1), "negative"),
    (_raw(amount="ten"), "not numeric"),
    (_raw(amount=1.005), "more than two decimals"),
    (_raw(amount=True), "number or a numeric string"),
    (_raw(amount="NaN"), "not a finite number"),
    (_raw(issued_at="yesterday"), "not an ISO 8601 timestamp"),
    (_raw(issued_at="2026-11-28T23:00:00"), "no time zone"),
    (b'\xff\xfe', "not JSON"),
])
def test_each_kind_of_bad_invoice_is_named(raw, reason):
    with pytest.raises(BadInvoice, match=reason):
        parse(raw)


@pytest.mark.parametrize("moment, start", [
    (datetime(2026, 11, 28, 23, 0, 3, 250000, tzinfo=UTC), datetime(2026, 11, 28, 23, 0, 0, tzinfo=UTC)),
    (datetime(2026, 11, 28, 23, 0, 5, tzinfo=UTC), datetime(2026, 11, 28, 23, 0, 5, tzinfo=UTC)),
    (datetime(2026, 11, 28, 23, 0, 9, 999999, tzinfo=UTC), datetime(2026, 11, 28, 23, 0, 5, tzinfo=UTC)),
])
def test_windows_are_5_seconds_aligned_to_the_epoch(moment, start):
    assert window_start(moment) == start


def test_output_records_have_the_contract_shape():
    start = datetime(2026, 11, 28, 23, 0, 5, tzinfo=UTC)
    assert json.loads(window_total(start, 123450, 7)) == {
        "window_start": "2026-11-28T23:00:05.000Z", "window_end": "2026-11-28T23:00:10.000Z",
        "total": "1234.50", "count": 7}
    assert json.loads(customer_total("Imane", 5, 1, start)) == {
        "customer_name": "Imane", "total": "0.05", "count": 1, "updated_at": "2026-11-28T23:00:05.000Z"}
    assert json.loads(dead_letter("late", b"{}", "FACTURATION", 2, 41)) == {
        "error": "late", "raw": "{}", "topic": "FACTURATION", "partition": 2, "offset": 41}
