"""The FACTURATION message shape, written from integer cents."""

import json
from datetime import UTC, datetime, timedelta, timezone

from shopmesh.runtime.invoices import Invoice, iso_millis


def test_an_invoice_is_the_contract_json_with_an_exact_amount():
    event = Invoice("abc", "Imane", 10, datetime(2026, 11, 28, 23, 0, 0, 123999, tzinfo=UTC))
    assert event.key() == b"Imane"
    assert event.value() == (
        b'{"invoice_id": "abc", "customer_name": "Imane", "amount": 0.10, "issued_at": "2026-11-28T23:00:00.123Z"}'
    )
    assert json.loads(event.value())["customer_name"] == "Imane"


def test_a_name_with_quotes_stays_valid_json():
    event = Invoice("x", 'O"Brien', 123456, datetime(2026, 1, 1, tzinfo=UTC))
    assert json.loads(event.value())["customer_name"] == 'O"Brien'
    assert b'"amount": 1234.56' in event.value()


def test_timestamps_are_utc_with_milliseconds():
    paris = timezone(timedelta(hours=1))
    assert iso_millis(datetime(2026, 11, 29, 0, 30, 0, 5000, tzinfo=paris)) == "2026-11-28T23:30:00.005Z"
