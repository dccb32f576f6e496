"""The fast tier of the services: each servicer on a real grpc.aio server in this process (port 0, a temporary
SQLite database, a token check that reads roles from the token itself), called over a real gRPC channel. It runs
what the services decide on their own — validation, paging, create/read/update/delete, the permission table —
in seconds; tests/integration keeps what needs Consul, Keycloak, Envoy or Kafka."""

from __future__ import annotations

import asyncio
import json
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import grpc
import jwt
import pytest
from google.protobuf import field_mask_pb2

from services.analytics.service import AnalyticsService
from services.analytics.totals import Totals
from services.customer.service import SERVICE as CUSTOMER
from services.inventory.service import SERVICE as INVENTORY
from services.seeds import CUSTOMERS, PRODUCTS
from shopmesh.analytics.v1 import analytics_service_pb2 as analytics_pb
from shopmesh.analytics.v1 import analytics_service_pb2_grpc as analytics_grpc
from shopmesh.customer.v1 import customer_service_pb2 as customer_pb
from shopmesh.customer.v1 import customer_service_pb2_grpc as customer_grpc
from shopmesh.inventory.v1 import inventory_service_pb2 as inventory_pb
from shopmesh.inventory.v1 import inventory_service_pb2_grpc as inventory_grpc
from shopmesh.runtime import catalogue, server
from shopmesh.runtime.settings import Settings

ADMIN, READER = "USER,ADMIN", "USER"


class RolesInToken:
    """The token check of this tier: a token is the comma-separated list of its roles; 'forged' is refused."""

    def claims(self, token: str) -> dict:
        if token == "forged":
            raise jwt.InvalidSignatureError("Signature verification failed")
        return {"preferred_username": "tester", "realm_access": {"roles": token.split(",")}}


@contextmanager
def serving(service: server.Service, tmp_path) -> Iterator[tuple[grpc.Channel, asyncio.AbstractEventLoop]]:
    """The service on a grpc.aio server in a thread of its own; yields a channel to it, and the server's loop."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    settings = Settings(var_dir=tmp_path, instance_port=0)
    running = asyncio.run_coroutine_threadsafe(server.start(service, settings, RolesInToken()), loop).result(30)
    channel = grpc.insecure_channel(f"{settings.host}:{running.port}")
    try:
        yield channel, loop
    finally:
        channel.close()
        asyncio.run_coroutine_threadsafe(running.stop(grace=0), loop).result(30)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


def _as(token: str | None) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {token}"),) if token else ()


def _refusal(call, request, token: str | None = ADMIN) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.RpcError) as refused:
        call(request, metadata=_as(token), timeout=10)
    return refused.value.code(), refused.value.details()


@pytest.fixture
def customers(tmp_path) -> Iterator[customer_grpc.CustomerServiceStub]:
    with serving(CUSTOMER, tmp_path) as (channel, _):
        yield customer_grpc.CustomerServiceStub(channel)


@pytest.fixture
def products(tmp_path) -> Iterator[inventory_grpc.InventoryServiceStub]:
    with serving(INVENTORY, tmp_path) as (channel, _):
        yield inventory_grpc.InventoryServiceStub(channel)


def _email() -> str:
    return f"{uuid.uuid4().hex[:10]}@example.com"


# --- customer ---------------------------------------------------------------------------------------------------


def test_an_empty_database_is_seeded_with_the_original_customers(customers):
    listed = customers.ListCustomers(customer_pb.ListCustomersRequest(), metadata=_as(READER))
    assert {(c.id, c.name, c.email) for c in listed.customers} == {tuple(c) for c in CUSTOMERS}


def test_a_customer_is_created_read_updated_and_deleted(customers):
    made = customers.CreateCustomer(
        customer_pb.CreateCustomerRequest(customer=customer_pb.Customer(name="  Nadia  ", email=_email())),
        metadata=_as(ADMIN),
    )
    assert made.id and made.name == "Nadia"
    assert customers.GetCustomer(customer_pb.GetCustomerRequest(id=made.id), metadata=_as(READER)) == made
    renamed = customers.UpdateCustomer(
        customer_pb.UpdateCustomerRequest(
            id=made.id,
            customer=customer_pb.Customer(name="Nadia B."),
            update_mask=field_mask_pb2.FieldMask(paths=["name"]),
        ),
        metadata=_as(ADMIN),
    )
    assert (renamed.name, renamed.email) == ("Nadia B.", made.email)
    customers.DeleteCustomer(customer_pb.DeleteCustomerRequest(id=made.id), metadata=_as(ADMIN))
    code, message = _refusal(customers.GetCustomer, customer_pb.GetCustomerRequest(id=made.id))
    assert code == grpc.StatusCode.NOT_FOUND and made.id in message


@pytest.mark.parametrize(
    "customer, field",
    [
        (customer_pb.Customer(name="", email="a@example.com"), "name"),
        (customer_pb.Customer(name="A", email="not-an-email"), "email"),
        (customer_pb.Customer(name="A" * 201, email="a@example.com"), "name"),
        (customer_pb.Customer(name="A"), "email"),
    ],
)
def test_a_bad_customer_is_refused_naming_the_field(customers, customer, field):
    code, message = _refusal(customers.CreateCustomer, customer_pb.CreateCustomerRequest(customer=customer))
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert field in message.split(":")[0]


def test_an_email_is_unique_whatever_its_case(customers):
    email = _email()
    customers.CreateCustomer(
        customer_pb.CreateCustomerRequest(customer=customer_pb.Customer(name="A", email=email)), metadata=_as(ADMIN)
    )
    code, message = _refusal(
        customers.CreateCustomer,
        customer_pb.CreateCustomerRequest(customer=customer_pb.Customer(name="B", email=email.upper())),
    )
    assert code == grpc.StatusCode.ALREADY_EXISTS and "email" in message


def test_customers_are_paged_each_once_in_id_order(customers):
    for number in range(7):
        customers.CreateCustomer(
            customer_pb.CreateCustomerRequest(customer=customer_pb.Customer(name=f"Paged {number}", email=_email())),
            metadata=_as(ADMIN),
        )
    seen, token, pages = [], "", 0
    while True:
        page = customers.ListCustomers(
            customer_pb.ListCustomersRequest(page_size=3, page_token=token), metadata=_as(READER)
        )
        assert len(page.customers) <= 3
        seen.extend(customer.id for customer in page.customers)
        pages += 1
        if not (token := page.next_page_token):
            break
    assert len(seen) == len(set(seen)) == 10 and seen == sorted(seen)
    assert pages == 4


@pytest.mark.parametrize(
    "request_, field",
    [
        (customer_pb.ListCustomersRequest(page_size=-1), "page_size"),
        (customer_pb.ListCustomersRequest(page_token="not a token"), "page_token"),
    ],
)
def test_a_bad_page_request_is_refused_naming_the_field(customers, request_, field):
    code, message = _refusal(customers.ListCustomers, request_)
    assert code == grpc.StatusCode.INVALID_ARGUMENT and field in message


@pytest.mark.parametrize(
    "token, code",
    [
        (None, grpc.StatusCode.UNAUTHENTICATED),
        ("forged", grpc.StatusCode.UNAUTHENTICATED),
        ("USER", grpc.StatusCode.PERMISSION_DENIED),
        ("USER,PRODUCT_MANAGER", grpc.StatusCode.PERMISSION_DENIED),
    ],
)
def test_the_permission_table_is_enforced_by_the_service_itself(customers, token, code):
    refused, _ = _refusal(
        customers.CreateCustomer,
        customer_pb.CreateCustomerRequest(customer=customer_pb.Customer(name="A", email=_email())),
        token,
    )
    assert refused == code


# --- inventory --------------------------------------------------------------------------------------------------


def test_an_empty_database_is_seeded_with_the_original_products(products):
    listed = products.ListProducts(inventory_pb.ListProductsRequest(), metadata=_as(READER))
    assert {p.name: (p.price, p.quantity) for p in listed.products} == {
        p.name: (f"{p.price_cents // 100}.{p.price_cents % 100:02d}", p.quantity) for p in PRODUCTS
    }


def test_a_price_is_kept_exact_to_the_cent(products):
    made = products.CreateProduct(
        inventory_pb.CreateProductRequest(product=inventory_pb.Product(name="Pen", price="0.10", quantity=3)),
        metadata=_as("PRODUCT_MANAGER"),
    )
    assert made.price == "0.10"
    updated = products.UpdateProduct(
        inventory_pb.UpdateProductRequest(id=made.id, product=inventory_pb.Product(price="1299.9")), metadata=_as(ADMIN)
    )
    assert (updated.price, updated.quantity, updated.name) == ("1299.90", 3, "Pen")


@pytest.mark.parametrize(
    "product, field, problem",
    [
        (inventory_pb.Product(name="Pen", price="-1", quantity=1), "price", "negative"),
        (inventory_pb.Product(name="Pen", price="1.001", quantity=1), "price", "two decimals"),
        (inventory_pb.Product(name="Pen", price="1e3", quantity=1), "price", "plain decimal"),
        (inventory_pb.Product(name="Pen", price="1", quantity=-1), "quantity", "negative"),
        (inventory_pb.Product(name="", price="1", quantity=1), "name", ""),
    ],
)
def test_a_bad_product_is_refused_naming_the_field(products, product, field, problem):
    code, message = _refusal(products.CreateProduct, inventory_pb.CreateProductRequest(product=product))
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert field in message.split(":")[0] and problem in message


def test_a_deleted_product_is_gone(products):
    made = products.CreateProduct(
        inventory_pb.CreateProductRequest(product=inventory_pb.Product(name="Lamp", price="20", quantity=1)),
        metadata=_as(ADMIN),
    )
    products.DeleteProduct(inventory_pb.DeleteProductRequest(id=made.id), metadata=_as(ADMIN))
    assert _refusal(products.GetProduct, inventory_pb.GetProductRequest(id=made.id))[0] == grpc.StatusCode.NOT_FOUND
    assert (
        _refusal(products.DeleteProduct, inventory_pb.DeleteProductRequest(id=made.id))[0] == grpc.StatusCode.NOT_FOUND
    )


def test_stock_is_reserved_only_by_the_mesh_s_service_account(products):
    made = products.CreateProduct(
        inventory_pb.CreateProductRequest(product=inventory_pb.Product(name="Chair", price="5", quantity=2)),
        metadata=_as(ADMIN),
    )
    request = inventory_pb.ReserveStockRequest(
        reservation_id=uuid.uuid4().hex, lines=[inventory_pb.StockLine(product_id=made.id, quantity=2)]
    )
    assert _refusal(products.ReserveStock, request, ADMIN)[0] == grpc.StatusCode.PERMISSION_DENIED
    products.ReserveStock(request, metadata=_as("MESH_SERVICE"))
    left = products.GetProduct(inventory_pb.GetProductRequest(id=made.id), metadata=_as(READER))
    assert left.quantity == 0
    again = inventory_pb.ReserveStockRequest(
        reservation_id=uuid.uuid4().hex, lines=[inventory_pb.StockLine(product_id=made.id, quantity=1)]
    )
    assert _refusal(products.ReserveStock, again, "MESH_SERVICE")[0] == grpc.StatusCode.FAILED_PRECONDITION


# --- analytics --------------------------------------------------------------------------------------------------


@pytest.fixture
def analytics(tmp_path):
    """The analytics servicer over totals the test feeds (the Kafka reader is the real-mesh tier's)."""
    totals = Totals()

    async def attach(grpc_server, settings, status_checks):
        analytics_grpc.add_AnalyticsServiceServicer_to_server(AnalyticsService(totals), grpc_server)

    part = catalogue.part("analytics")
    with serving(server.Service(part.consul_name, part.grpc_service, attach, lambda _: 0), tmp_path) as (
        channel,
        loop,
    ):

        def feed(add, record: dict) -> None:
            loop.call_soon_threadsafe(add, json.dumps(record).encode())

        yield totals, analytics_grpc.AnalyticsServiceStub(channel), feed


def _window(second: int, total: str = "1.00") -> dict:
    start = f"2026-11-28T23:00:{second:02d}.000Z"
    return {"window_start": start, "window_end": start, "total": total, "count": 1}


def test_the_latest_windows_are_listed_oldest_first(analytics):
    totals, stub, feed = analytics
    for second in (10, 0, 5):
        feed(totals.add_window, _window(second))
    feed(totals.add_window, {"not": "a window"})  # skipped, logged
    listed = wait_until(
        lambda: (
            stub.ListWindowTotals(
                analytics_pb.ListWindowTotalsRequest(limit=2), metadata=_as("BILLING_MANAGER")
            ).windows
        ),
        2,
    )
    assert [w.window_start[17:19] for w in listed] == ["05", "10"]
    code, message = _refusal(stub.ListWindowTotals, analytics_pb.ListWindowTotalsRequest(limit=721))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "limit" in message


def test_a_watch_sends_the_current_totals_then_each_change(analytics):
    totals, stub, feed = analytics
    feed(totals.add_customer, {"customer_name": "Imane", "total": "1.00", "count": 1, "updated_at": "t"})
    wait_until(lambda: totals.customers, 1)
    stream = stub.WatchCustomerTotals(analytics_pb.WatchCustomerTotalsRequest(), metadata=_as("ADMIN"), timeout=10)
    assert next(stream).total == "1.00"
    feed(totals.add_customer, {"customer_name": "Imane", "total": "3.50", "count": 2, "updated_at": "t"})
    assert (lambda change: (change.customer_name, change.total, change.count))(next(stream)) == ("Imane", "3.50", 2)
    stream.cancel()
    wait_until(lambda: not totals.customer_watchers, True)


def test_only_those_who_see_the_bills_may_watch_the_totals(analytics):
    _, stub, _ = analytics
    stream = stub.WatchWindowTotals(analytics_pb.WatchWindowTotalsRequest(), metadata=_as("USER,PRODUCT_MANAGER"))
    with pytest.raises(grpc.RpcError) as refused:
        next(stream)
    assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED


def wait_until(condition, truthy, seconds: float = 10):
    """Poll condition until it answers something true (the feed reaches the server's loop a moment later)."""
    deadline = time.monotonic() + seconds
    while not (result := condition()):
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)
    return result
