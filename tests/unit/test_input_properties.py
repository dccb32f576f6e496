"""Property-based tests (Hypothesis) of what parses client input: money, page tokens, ids and names. Whatever a
client sends, each answers a value or INVALID_ARGUMENT naming the field, with a message of bounded size."""

from __future__ import annotations

import base64
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shopmesh.runtime import paging
from shopmesh.runtime.errors import QUOTED_CHARACTERS, InvalidArgument, shown
from shopmesh.runtime.money import MAX_CENTS, format_cents, parse_cents
from shopmesh.runtime.resources import MAX_ID, check_id, check_name, target_id

#: An error message quotes at most QUOTED_CHARACTERS of the input, plus a fixed text around it.
MESSAGE_BOUND = 4 * QUOTED_CHARACTERS + 200


@given(st.text())
def test_any_text_is_either_exact_cents_or_a_bounded_invalid_argument(text):
    try:
        cents = parse_cents(text, "product.price")
    except InvalidArgument as error:
        assert error.field == "product.price"
        assert len(error.message) < MESSAGE_BOUND
        return
    assert 0 <= cents < MAX_CENTS
    assert Decimal(text.strip(" \t")) * 100 == cents  # the exact value, never rounded


@given(st.integers(min_value=0, max_value=MAX_CENTS - 1))
def test_formatted_cents_parse_back_to_the_same_cents(cents):
    assert parse_cents(format_cents(cents), "price") == cents


@pytest.mark.parametrize(
    "text",
    [
        "1_000",
        "١٢٣",
        "１２",
        "+5",
        "5.",
        ".5",
        "1e3",
        "0x10",
        "1,5",
        "12.345",
        " 1 2",
        "9" * 28,
        "9" * 5000,
        "NaN",
        "-0",
        "12.5\n",
        "٣.٥٠",
    ],
)
def test_only_plain_ascii_decimals_are_money(text):
    with pytest.raises(InvalidArgument, match=r"product\.price"):
        parse_cents(text, "product.price")


@given(st.text(max_size=300))
def test_page_tokens_of_any_text_decode_or_are_refused(token):
    for key_type in (int, str):
        try:
            key = paging.decode_token(token, key_type)
        except InvalidArgument as error:
            assert error.field == "page_token"
            continue
        assert key is None or isinstance(key, key_type)


@given(st.binary(max_size=120))
def test_page_tokens_of_any_bytes_decode_or_are_refused(raw):
    token = base64.urlsafe_b64encode(b"after:" + raw).decode()
    for key_type in (int, str):
        try:
            key = paging.decode_token(token, key_type)
        except InvalidArgument:
            continue
        assert isinstance(key, key_type)
        if key_type is int:
            assert 0 <= key < 2**63  # fits every database's int64


@given(st.integers(min_value=0, max_value=2**63 - 1))
def test_row_number_tokens_round_trip(seq):
    assert paging.decode_token(paging.encode_token(seq), int) == seq


@pytest.mark.parametrize("key", ["1_0", "1" * 23, "-1", " 1", "١"])
def test_a_row_number_token_of_the_wrong_shape_is_refused(key):
    with pytest.raises(InvalidArgument, match="page_token"):
        paging.decode_token(base64.urlsafe_b64encode(f"after:{key}".encode()).decode(), int)


def test_a_huge_page_token_is_refused_without_decoding():
    with pytest.raises(InvalidArgument, match="page_token"):
        paging.decode_token("A" * 1_000_000, str)


@given(st.text(max_size=200))
def test_ids_are_bounded(value):
    try:
        assert check_id(value, "id") == value
        assert 0 < len(value) <= MAX_ID
    except InvalidArgument as error:
        assert len(error.message) < MESSAGE_BOUND


@given(st.text(max_size=400))
def test_names_are_trimmed_and_bounded(value):
    try:
        name = check_name(value, "customer.name")
    except InvalidArgument as error:
        assert len(error.message) < MESSAGE_BOUND
        return
    assert name == value.strip() and 0 < len(name) <= 200
    assert all(ord(character) >= 32 for character in name)


def test_a_megabyte_value_is_quoted_by_its_start_and_length():
    quoted = shown("x" * 1_000_000)
    assert len(quoted) < 100 and "1000000 characters" in quoted


def test_an_update_is_named_by_the_path_and_a_different_body_id_is_refused():
    assert target_id("a", "", "customer") == "a"
    assert target_id("a", "a", "customer") == "a"
    assert target_id("", "b", "customer") == "b"  # gRPC callers that name the resource only
    with pytest.raises(InvalidArgument, match=r"customer\.id: 'b' differs from the id 'a' in the path"):
        target_id("a", "b", "customer")
    with pytest.raises(InvalidArgument, match=r"customer\.id: must not be empty"):
        target_id("", "", "customer")
