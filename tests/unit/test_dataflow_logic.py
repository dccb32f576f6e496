"""The analytics' pure logic: parsing invoices, 5-second windows, output and dead-letter records."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from bytewax.operators.windowing import TumblingWindower

from dataflows.totals import (
    EPOCH,
    REMEMBERED_IDS,
    WINDOW,
    RunningTotal,
    WindowSum,
    customer_total,
    dead_letter,
    window_start,
    window_total,
)
from shopmesh.runtime.invoices import BadInvoice, Invoice, parse


def _raw(**fields) -> bytes:
    event = {
        "invoice_id": "i-1",
        "customer_name": "Imane",
        "amount": 12.5,
        "issued_at": "2026-11-28T23:00:03.250Z",
        **fields,
    }
    return json.dumps({k: v for k, v in event.items() if v is not ...}).encode()


def test_a_contract_invoice_is_read_exactly():
    invoice = parse(
        b'{"invoice_id": "a", "customer_name": "Imane", "amount": 0.10, "issued_at": "2026-11-28T23:00:00.123Z"}'
    )
    assert (invoice.invoice_id, invoice.customer_name, invoice.amount_cents) == ("a", "Imane", 10)
    assert invoice.issued_at == datetime(2026, 11, 28, 23, 0, 0, 123000, tzinfo=UTC)


@pytest.mark.parametrize("amount, cents", [(12, 1200), ("12.30", 1230), (" 7 ", 700), (0, 0)])
def test_an_amount_may_be_a_number_or_a_numeric_string(amount, cents):
    assert parse(_raw(amount=amount)).amount_cents == cents


def test_a_timestamp_with_an_offset_is_read_in_utc():
    assert parse(_raw(issued_at="2026-11-29T00:00:03+01:00")).issued_at == datetime(2026, 11, 28, 23, 0, 3, tzinfo=UTC)


@pytest.mark.parametrize(
    "raw, reason",
    [
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
        (b"\xff\xfe", "not JSON"),
        (b"[" * 100_000, "not JSON"),
        (_raw(amount=100_000_000_000), "too large"),
        (
            b'{"invoice_id": "a", "customer_name": "b", "amount": 1e999999999, "issued_at": "2026-01-01T00:00:00Z"}',
            "too large",
        ),
    ],
)
def test_each_kind_of_bad_invoice_is_named(raw, reason):
    with pytest.raises(BadInvoice, match=reason):
        parse(raw)


@pytest.mark.parametrize(
    "moment, start",
    [
        (datetime(2026, 11, 28, 23, 0, 3, 250000, tzinfo=UTC), datetime(2026, 11, 28, 23, 0, 0, tzinfo=UTC)),
        (datetime(2026, 11, 28, 23, 0, 5, tzinfo=UTC), datetime(2026, 11, 28, 23, 0, 5, tzinfo=UTC)),
        (datetime(2026, 11, 28, 23, 0, 9, 999999, tzinfo=UTC), datetime(2026, 11, 28, 23, 0, 5, tzinfo=UTC)),
    ],
)
def test_windows_are_5_seconds_aligned_to_the_epoch_as_bytewax_numbers_them(moment, start):
    [window_id] = TumblingWindower(WINDOW, align_to=EPOCH).build(None).open_for(moment)
    assert window_start(window_id) == start


def _invoice(invoice_id: str, cents: int, second: int = 0) -> Invoice:
    return Invoice(invoice_id, "Imane", cents, datetime(2026, 11, 28, 23, 0, second, tzinfo=UTC))


def test_a_window_sums_cents_and_counts_an_invoice_published_twice_once():
    window = WindowSum()
    for invoice in (_invoice("a", 10), _invoice("b", 1), _invoice("a", 10), _invoice("c", 999_999)):
        window = window.add(invoice)
    assert (window.total_cents, window.count) == (1_000_010, 3)
    merged = window.merge(WindowSum().add(_invoice("d", 5)))
    assert (merged.total_cents, merged.count) == (1_000_015, 4)


def test_a_running_total_counts_each_invoice_once_and_keeps_the_latest_time():
    total = RunningTotal()
    assert [total.add(_invoice("a", 10, 4)), total.add(_invoice("b", 20, 2)), total.add(_invoice("a", 10, 9))] == [
        True,
        True,
        False,
    ]
    assert (total.total_cents, total.count, total.updated_at.second) == (30, 2, 4)


def test_a_running_total_remembers_a_bounded_number_of_ids():
    total = RunningTotal()
    for number in range(REMEMBERED_IDS + 1):
        total.add(_invoice(str(number), 1))
    assert len(total.recent_ids) == REMEMBERED_IDS
    assert total.add(_invoice("0", 1)) is True  # forgotten, so counted again
    assert total.add(_invoice(str(REMEMBERED_IDS), 1)) is False


def test_output_records_have_the_contract_shape():
    start = datetime(2026, 11, 28, 23, 0, 5, tzinfo=UTC)
    assert json.loads(window_total(start, 123450, 7)) == {
        "window_start": "2026-11-28T23:00:05.000Z",
        "window_end": "2026-11-28T23:00:10.000Z",
        "total": "1234.50",
        "count": 7,
    }
    assert json.loads(customer_total("Imane", 5, 1, start)) == {
        "customer_name": "Imane",
        "total": "0.05",
        "count": 1,
        "updated_at": "2026-11-28T23:00:05.000Z",
    }
    assert json.loads(dead_letter("late", b"{}", "FACTURATION", 2, 41)) == {
        "error": "late",
        "raw": "{}",
        "topic": "FACTURATION",
        "partition": 2,
        "offset": 41,
    }


def test_a_recovery_snapshot_of_an_earlier_version_still_finds_its_state_classes(monkeypatch):
    import pickle

    total = RunningTotal(1250, 1, EPOCH, {"a": None})
    monkeypatch.setattr(RunningTotal, "__module__", "dataflows.invoices")  # where earlier versions defined it
    earlier = pickle.dumps(total)
    monkeypatch.undo()
    assert b"dataflows.invoices" in earlier and b"dataflows.totals" not in earlier
    assert pickle.loads(earlier) == total
