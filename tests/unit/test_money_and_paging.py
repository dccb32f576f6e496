"""Money in integer cents, paging tokens and update masks: the pure logic the services share."""

import pytest
from google.protobuf.field_mask_pb2 import FieldMask

from services.billing.service import bill_lines, new_bill
from shopmesh.billing.v1 import billing_service_pb2 as billing
from shopmesh.customer.v1.customer_service_pb2 import Customer
from shopmesh.inventory.v1.inventory_service_pb2 import Product
from shopmesh.runtime import paging
from shopmesh.runtime.errors import InvalidArgument
from shopmesh.runtime.money import format_cents, parse_cents
from shopmesh.runtime.resources import fields_to_update


@pytest.mark.parametrize(
    "text, cents", [("0", 0), ("0.1", 10), ("12.5", 1250), ("1299.99", 129999), (" 7.00 ", 700), ("0.30", 30)]
)
def test_decimal_strings_become_exact_cents(text, cents):
    assert parse_cents(text, "price") == cents


@pytest.mark.parametrize(
    "text, problem",
    [
        ("-0.01", "negative"),
        ("1.001", "two decimals"),
        ("abc", "decimal"),
        ("", "decimal"),
        ("NaN", "plain"),
        ("Infinity", "plain"),
        ("1e2", "plain"),
        ("100000000000", "too large"),
    ],
)
def test_bad_money_is_rejected_naming_the_field(text, problem):
    with pytest.raises(InvalidArgument, match=problem) as failure:
        parse_cents(text, "product.price")
    assert failure.value.field == "product.price"


@pytest.mark.parametrize("cents, text", [(0, "0.00"), (5, "0.05"), (1250, "12.50"), (-150, "-1.50")])
def test_cents_are_written_with_two_decimals(cents, text):
    assert format_cents(cents) == text


def test_a_tenth_plus_a_fifth_is_exactly_thirty_cents():
    assert format_cents(parse_cents("0.10", "a") + parse_cents("0.20", "b")) == "0.30"


def test_a_page_token_round_trips_and_garbage_is_refused():
    assert paging.decode_token(paging.encode_token("abc123")) == "abc123"
    assert paging.decode_token("") is None
    for garbage in ("%%%", "bm90LWEtdG9rZW4=", paging.encode_token("")):
        with pytest.raises(InvalidArgument, match="page_token"):
            paging.decode_token(garbage)


@pytest.mark.parametrize("requested, size", [(0, 50), (1, 1), (1000, 1000)])
def test_page_sizes_are_bounded(requested, size):
    assert paging.page_size(requested) == size


def test_update_takes_the_mask_or_else_the_fields_present():
    assert fields_to_update(Product(quantity=0), _mask(), ("name", "price", "quantity")) == ["quantity"]
    assert fields_to_update(Product(name="x", quantity=3), _mask("name"), ("name", "price", "quantity")) == ["name"]
    with pytest.raises(InvalidArgument, match="update_mask: nothing to update"):
        fields_to_update(Product(), _mask(), ("name", "price", "quantity"))


def _mask(*paths):
    return FieldMask(paths=list(paths))


def test_a_bill_sums_its_amounts_in_cents():
    request = billing.CreateBillRequest(
        customer_id="c",
        items=[
            billing.CreateBillRequest.Item(product_id="a", quantity=3),
            billing.CreateBillRequest.Item(product_id="b", quantity=7),
        ],
    )
    lines = bill_lines(request)
    bill, items = new_bill(
        "bill",
        Customer(id="c", name="C", email="c@example.com"),
        lines,
        [Product(id="a", name="A", price="0.10"), Product(id="b", name="B", price="19.99")],
    )
    assert [item.amount_cents for item in items] == [30, 13993]
    assert bill.total_cents == 14023
