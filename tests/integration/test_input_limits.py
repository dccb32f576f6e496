"""Client input that gave 5xx or wrong answers through the gateway: each is now a 400 (or 409) naming the field,
whose message never echoes unbounded input, and nothing is stored from it."""

from __future__ import annotations

import base64
import uuid

import httpx
import pytest

from tests.auth import Bearer
from tests.conftest import email

MEGABYTE = 1024 * 1024


def _refused(answer: httpx.Response, field: str, status: int = 400) -> str:
    assert answer.status_code == status, answer.text[:500]
    assert answer.headers["content-type"].startswith("application/json")
    message = answer.json()["message"]
    assert field in message and len(message) < 400, message[:500]
    return message


@pytest.mark.parametrize("price", ["1" * 28, "9" * 40 + ".00", "1_000", "١٢٣", "12.5e1", "+5", "0x10"])
def test_a_price_that_is_not_a_plain_ascii_decimal_is_400(rest, price):
    _refused(rest.post("/v1/products", json={"name": "p", "price": price, "quantity": 1}), "product.price")


@pytest.mark.parametrize("key", ["1" * 23, "1_0", "-5"])
def test_a_bills_page_token_with_a_bad_row_number_is_400(rest, key):
    token = base64.urlsafe_b64encode(f"after:{key}".encode()).decode()
    _refused(rest.get("/v1/bills", params={"pageToken": token}), "page_token")


@pytest.mark.parametrize("size", [70 * 1024, MEGABYTE // 2])
def test_a_huge_email_is_400_and_not_echoed(rest, size):
    message = _refused(
        rest.post("/v1/customers", json={"name": "Big", "email": "a" * size + "@example.com"}), "customer.email"
    )
    assert "at most 254 characters" in message


def test_a_huge_product_name_is_refused_and_the_list_keeps_working(rest):
    _refused(
        rest.post("/v1/products", json={"name": "n" * (MEGABYTE // 2), "price": "1.00", "quantity": 1}), "product.name"
    )
    _refused(rest.post("/v1/products", json={"name": "n" * 201, "price": "1.00", "quantity": 1}), "product.name")
    assert rest.post("/v1/products", json={"name": "n" * 200, "price": "1.00", "quantity": 1}).status_code == 200
    assert rest.get("/v1/products", params={"pageSize": 1000}).status_code == 200


def test_a_huge_id_is_400_naming_it_without_echoing_it(rest):
    _refused(rest.get(f"/v1/customers/{'x' * 10_000}"), "id")


def test_emails_are_unique_whatever_their_case(rest):
    local = uuid.uuid4().hex[:10]
    first = rest.post("/v1/customers", json={"name": "Mixed", "email": f"Mixed.{local}@Example.com"})
    assert first.status_code == 200, first.text
    _refused(
        rest.post("/v1/customers", json={"name": "Lower", "email": f"mixed.{local}@example.com"}), "customer.email", 409
    )
    other = rest.post("/v1/customers", json={"name": "Other", "email": email()}).json()
    _refused(
        rest.patch(f"/v1/customers/{other['id']}", json={"email": f"MIXED.{local}@EXAMPLE.COM"}), "customer.email", 409
    )


def test_a_patch_whose_body_names_another_id_is_400_and_changes_nothing(rest):
    target = rest.post("/v1/customers", json={"name": "Target", "email": email()}).json()
    other = rest.post("/v1/customers", json={"name": "Other", "email": email()}).json()
    _refused(rest.patch(f"/v1/customers/{target['id']}", json={"id": other["id"], "name": "Renamed"}), "customer.id")
    assert rest.get(f"/v1/customers/{other['id']}").json()["name"] == "Other"
    assert rest.get(f"/v1/customers/{target['id']}").json()["name"] == "Target"
    product = rest.post("/v1/products", json={"name": "Kept", "price": "1.00", "quantity": 1}).json()
    _refused(rest.patch(f"/v1/products/{product['id']}", json={"id": "another", "name": "Renamed"}), "product.id")
    # The same id in the body, or none, is what a PATCH normally sends.
    assert rest.patch(f"/v1/customers/{target['id']}", json={"id": target["id"], "name": "T2"}).json()["name"] == "T2"
    assert rest.patch(f"/v1/products/{product['id']}", json={"price": "2.00"}).json()["price"] == "2.00"


def test_a_bill_whose_total_would_overflow_is_400_and_takes_no_stock(rest, tokens, mesh):
    customer = rest.post("/v1/customers", json={"name": "Rich", "email": email()}).json()
    product = rest.post("/v1/products", json={"name": "Gold", "price": "99999999999.99", "quantity": 1_000_000}).json()
    with httpx.Client(base_url=mesh.gateway_url, timeout=30, auth=Bearer(tokens, "billing-manager")) as billing:
        _refused(
            billing.post(
                "/v1/bills",
                json={"customerId": customer["id"], "items": [{"productId": product["id"], "quantity": 1_000_000}]},
            ),
            "items",
        )
        _refused(
            billing.post(
                "/v1/bills",
                json={"customerId": customer["id"], "items": [{"productId": product["id"], "quantity": 1_000_001}]},
            ),
            "items[0].quantity",
        )
    assert rest.get(f"/v1/products/{product['id']}").json()["quantity"] == 1_000_000
