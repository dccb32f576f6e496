"""The three gRPC services against the real Consul: CRUD, validation, full bills, discovery and failover."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import uuid

import grpc
import httpx
import pytest

from shopmesh.billing.v1 import billing_service_pb2 as billing
from shopmesh.billing.v1 import billing_service_pb2_grpc as billing_grpc
from shopmesh.customer.v1 import customer_service_pb2 as customer
from shopmesh.customer.v1 import customer_service_pb2_grpc as customer_grpc
from shopmesh.inventory.v1 import inventory_service_pb2 as inventory
from shopmesh.inventory.v1 import inventory_service_pb2_grpc as inventory_grpc
from shopmesh.tooling import instances
from shopmesh.tooling.instances import free_port
from tests.auth import authorized_channel
from tests.conftest import shopmesh, wait_for

INVALID = grpc.StatusCode.INVALID_ARGUMENT


@pytest.fixture(scope="module")
def stubs(mesh, tokens):
    channels = [
        authorized_channel(f"{mesh.host}:{port}", tokens)
        for port in (mesh.service_ports["customer"], mesh.service_ports["inventory"], mesh.service_ports["billing"])
    ]
    yield (
        customer_grpc.CustomerServiceStub(channels[0]),
        inventory_grpc.InventoryServiceStub(channels[1]),
        billing_grpc.BillingServiceStub(channels[2]),
    )
    for channel in channels:
        channel.close()


@pytest.fixture(scope="module")
def customers(stubs):
    return stubs[0]


@pytest.fixture(scope="module")
def products(stubs):
    return stubs[1]


@pytest.fixture(scope="module")
def bills(stubs):
    return stubs[2]


def _status(call, request) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.RpcError) as failure:
        call(request, timeout=10)
    return failure.value.code(), failure.value.details()


def _new_customer(customers, name="Ada Lovelace") -> customer.Customer:
    email = f"{uuid.uuid4().hex[:12]}@example.com"
    return customers.CreateCustomer(
        customer.CreateCustomerRequest(customer=customer.Customer(name=name, email=email)), timeout=10
    )


def _new_product(products, price="10.00", quantity=10) -> inventory.Product:
    request = inventory.CreateProductRequest(
        product=inventory.Product(name=f"widget {uuid.uuid4().hex[:6]}", price=price, quantity=quantity)
    )
    return products.CreateProduct(request, timeout=10)


def _stock(products, product_id: str) -> int:
    return products.GetProduct(inventory.GetProductRequest(id=product_id), timeout=10).quantity


# --- grpcurl, a real external client ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name, service, rpc, key",
    [
        ("customer", "shopmesh.customer.v1.CustomerService", "ListCustomers", "customers"),
        ("inventory", "shopmesh.inventory.v1.InventoryService", "ListProducts", "products"),
        ("billing", "shopmesh.billing.v1.BillingService", "ListBills", "bills"),
    ],
)
def test_grpcurl_lists_and_calls_each_service_through_reflection(mesh, tokens, name, service, rpc, key):
    address = f"{mesh.host}:{mesh.service_ports[name]}"
    listed = shopmesh("grpcurl", "-plaintext", address, "list")  # reflection needs no token
    assert listed.returncode == 0, listed.stderr
    assert service in listed.stdout.split() and "grpc.health.v1.Health" in listed.stdout.split()
    called = shopmesh(
        "grpcurl",
        "-plaintext",
        "-H",
        f"authorization: Bearer {tokens()}",
        "-d",
        '{"page_size": 2}',
        address,
        f"{service}/{rpc}",
    )
    assert called.returncode == 0, called.stderr
    assert 1 <= len(json.loads(called.stdout)[key]) <= 2


def test_grpcurl_reports_a_validation_error_with_its_code(mesh, tokens):
    address = f"{mesh.host}:{mesh.service_ports['customer']}"
    called = shopmesh(
        "grpcurl",
        "-plaintext",
        "-H",
        f"authorization: Bearer {tokens()}",
        "-d",
        '{"customer": {"name": "", "email": "x@y.z"}}',
        address,
        "shopmesh.customer.v1.CustomerService/CreateCustomer",
    )
    assert called.returncode != 0
    assert "InvalidArgument" in called.stderr and "customer.name" in called.stderr


# --- customers -------------------------------------------------------------------------------------------


def test_customer_crud(customers):
    created = _new_customer(customers)
    assert created.id and created.name == "Ada Lovelace"
    fetched = customers.GetCustomer(customer.GetCustomerRequest(id=created.id), timeout=10)
    assert fetched == created

    renamed = customers.UpdateCustomer(
        customer.UpdateCustomerRequest(customer=customer.Customer(id=created.id, name="Ada King")), timeout=10
    )
    assert (renamed.name, renamed.email) == ("Ada King", created.email)

    masked = customers.UpdateCustomer(
        customer.UpdateCustomerRequest(
            customer=customer.Customer(id=created.id, name="ignored", email="ada@king.example.com"),
            update_mask={"paths": ["email"]},
        ),
        timeout=10,
    )
    assert (masked.name, masked.email) == ("Ada King", "ada@king.example.com")

    customers.DeleteCustomer(customer.DeleteCustomerRequest(id=created.id), timeout=10)
    code, details = _status(customers.GetCustomer, customer.GetCustomerRequest(id=created.id))
    assert code == grpc.StatusCode.NOT_FOUND and created.id in details


@pytest.mark.parametrize(
    "name, email, field",
    [
        ("", "someone@example.com", "customer.name"),
        ("   ", "someone@example.com", "customer.name"),
        ("Someone", "not-an-email", "customer.email"),
        ("Someone", "", "customer.email"),
    ],
)
def test_customer_validation_names_the_field(customers, name, email, field):
    code, details = _status(
        customers.CreateCustomer, customer.CreateCustomerRequest(customer=customer.Customer(name=name, email=email))
    )
    assert code == INVALID and details.startswith(field)


def test_duplicate_email_is_already_exists(customers):
    first = _new_customer(customers)
    code, details = _status(
        customers.CreateCustomer,
        customer.CreateCustomerRequest(customer=customer.Customer(name="Twin", email=first.email)),
    )
    assert code == grpc.StatusCode.ALREADY_EXISTS and first.email in details
    other = _new_customer(customers)
    code, _ = _status(
        customers.UpdateCustomer,
        customer.UpdateCustomerRequest(customer=customer.Customer(id=other.id, email=first.email)),
    )
    assert code == grpc.StatusCode.ALREADY_EXISTS


def test_update_with_an_unknown_mask_field_is_rejected(customers):
    created = _new_customer(customers)
    code, details = _status(
        customers.UpdateCustomer,
        customer.UpdateCustomerRequest(
            customer=customer.Customer(id=created.id, name="x"), update_mask={"paths": ["phone"]}
        ),
    )
    assert code == INVALID and details.startswith("update_mask") and "phone" in details


def test_pages_walk_every_customer_once(customers):
    for _ in range(5):
        _new_customer(customers)
    seen, token, pages = [], "", 0
    while True:
        answer = customers.ListCustomers(customer.ListCustomersRequest(page_size=2, page_token=token), timeout=10)
        assert len(answer.customers) <= 2
        seen += [c.id for c in answer.customers]
        pages += 1
        token = answer.next_page_token
        if not token:
            break
    everyone = customers.ListCustomers(customer.ListCustomersRequest(page_size=1000), timeout=10).customers
    assert seen == [c.id for c in everyone] and len(set(seen)) == len(seen)
    assert pages == (len(seen) + 1) // 2


@pytest.mark.parametrize(
    "request_, field",
    [
        (customer.ListCustomersRequest(page_size=-1), "page_size"),
        (customer.ListCustomersRequest(page_size=1001), "page_size"),
        (customer.ListCustomersRequest(page_token="garbage!"), "page_token"),
    ],
)
def test_bad_paging_is_invalid_argument(customers, request_, field):
    code, details = _status(customers.ListCustomers, request_)
    assert code == INVALID and details.startswith(field)


# --- products --------------------------------------------------------------------------------------------


def test_product_crud_keeps_prices_exact(products):
    created = _new_product(products, price="1299.9", quantity=3)
    assert (created.price, created.quantity) == ("1299.90", 3)
    updated = products.UpdateProduct(
        inventory.UpdateProductRequest(product=inventory.Product(id=created.id, quantity=0)), timeout=10
    )
    assert (updated.price, updated.quantity) == ("1299.90", 0)
    products.DeleteProduct(inventory.DeleteProductRequest(id=created.id), timeout=10)
    code, _ = _status(products.GetProduct, inventory.GetProductRequest(id=created.id))
    assert code == grpc.StatusCode.NOT_FOUND


@pytest.mark.parametrize(
    "price, quantity, field",
    [
        ("-1.00", 1, "product.price"),
        ("1.005", 1, "product.price"),
        ("abc", 1, "product.price"),
        ("NaN", 1, "product.price"),
        ("1e3", 1, "product.price"),
        ("1.00", -1, "product.quantity"),
    ],
)
def test_product_validation_names_the_field(products, price, quantity, field):
    code, details = _status(
        products.CreateProduct,
        inventory.CreateProductRequest(product=inventory.Product(name="bad", price=price, quantity=quantity)),
    )
    assert code == INVALID and details.startswith(field)


def test_a_product_without_a_price_is_rejected(products):
    code, details = _status(
        products.CreateProduct, inventory.CreateProductRequest(product=inventory.Product(name="free?", quantity=1))
    )
    assert code == INVALID and details.startswith("product.price")


# --- bills -----------------------------------------------------------------------------------------------


def test_a_full_bill_takes_stock_and_totals_to_the_cent(customers, products, bills):
    buyer = _new_customer(customers, "Grace Hopper")
    dime, fifth = _new_product(products, "0.10", 10), _new_product(products, "0.20", 10)
    created = bills.CreateBill(
        billing.CreateBillRequest(
            customer_id=buyer.id,
            items=[
                billing.CreateBillRequest.Item(product_id=dime.id, quantity=3),
                billing.CreateBillRequest.Item(product_id=fifth.id, quantity=1),
            ],
        ),
        timeout=10,
    )
    assert created.total == "0.50"
    assert [(i.product.name, i.quantity, i.unit_price, i.amount) for i in created.items] == [
        (dime.name, 3, "0.10", "0.30"),
        (fifth.name, 1, "0.20", "0.20"),
    ]
    assert (created.customer.name, created.customer.email) == ("Grace Hopper", buyer.email)
    assert (_stock(products, dime.id), _stock(products, fifth.id)) == (7, 9)

    fetched = bills.GetBill(billing.GetBillRequest(id=created.id), timeout=10)
    assert fetched == created
    listed = bills.ListBills(billing.ListBillsRequest(customer_id=buyer.id), timeout=10).bills
    assert [bill.id for bill in listed] == [created.id]


def test_a_bill_keeps_the_price_of_its_moment(customers, products, bills):
    buyer, item = _new_customer(customers), _new_product(products, "5.00", 5)
    created = bills.CreateBill(
        billing.CreateBillRequest(
            customer_id=buyer.id, items=[billing.CreateBillRequest.Item(product_id=item.id, quantity=2)]
        ),
        timeout=10,
    )
    products.UpdateProduct(
        inventory.UpdateProductRequest(product=inventory.Product(id=item.id, price="7.00")), timeout=10
    )
    assert bills.GetBill(billing.GetBillRequest(id=created.id), timeout=10).total == "10.00"


def test_not_enough_stock_fails_and_changes_nothing_anywhere(customers, products, bills):
    buyer = _new_customer(customers)
    plenty, scarce = _new_product(products, "1.00", 10), _new_product(products, "1.00", 1)
    code, details = _status(
        bills.CreateBill,
        billing.CreateBillRequest(
            customer_id=buyer.id,
            items=[
                billing.CreateBillRequest.Item(product_id=plenty.id, quantity=5),
                billing.CreateBillRequest.Item(product_id=scarce.id, quantity=2),
            ],
        ),
    )
    assert code == grpc.StatusCode.FAILED_PRECONDITION
    assert details.startswith("items[1].quantity") and "1 left" in details
    assert (_stock(products, plenty.id), _stock(products, scarce.id)) == (10, 1)
    assert not bills.ListBills(billing.ListBillsRequest(customer_id=buyer.id), timeout=10).bills


def test_an_unknown_customer_or_product_is_not_found_and_takes_no_stock(customers, products, bills):
    item = _new_product(products, "1.00", 4)
    code, details = _status(
        bills.CreateBill,
        billing.CreateBillRequest(
            customer_id="nobody", items=[billing.CreateBillRequest.Item(product_id=item.id, quantity=1)]
        ),
    )
    assert code == grpc.StatusCode.NOT_FOUND and details.startswith("customer_id")
    buyer = _new_customer(customers)
    code, details = _status(
        bills.CreateBill,
        billing.CreateBillRequest(
            customer_id=buyer.id,
            items=[
                billing.CreateBillRequest.Item(product_id=item.id, quantity=1),
                billing.CreateBillRequest.Item(product_id="no-such-product", quantity=1),
            ],
        ),
    )
    assert code == grpc.StatusCode.NOT_FOUND and details.startswith("items[1].product_id")
    assert _stock(products, item.id) == 4


@pytest.mark.parametrize(
    "items, field",
    [
        ([], "items"),
        ([billing.CreateBillRequest.Item(product_id="", quantity=1)], "items[0].product_id"),
        ([billing.CreateBillRequest.Item(product_id="p", quantity=0)], "items[0].quantity"),
        ([billing.CreateBillRequest.Item(product_id="p", quantity=1)] * 2, "items[1].product_id"),
    ],
)
def test_bad_bill_requests_name_the_field(bills, items, field):
    code, details = _status(bills.CreateBill, billing.CreateBillRequest(customer_id="someone", items=items))
    assert code == INVALID and details.startswith(field)


def test_seeded_bills_are_served_in_full(bills):
    # Newest first: on a mesh that has made many bills, the seeded ones are pages away.
    seeded, token = {}, ""
    while "seed-bill-1" not in seeded:
        page = bills.ListBills(billing.ListBillsRequest(page_size=1000, page_token=token), timeout=10)
        seeded.update((bill.id, bill) for bill in page.bills)
        if not (token := page.next_page_token):
            break
    first = seeded["seed-bill-1"]
    assert first.customer.name == "Mohamed"
    assert [i.product.name for i in first.items] == ["Computer Desk Top HP 900", "Printer Epson"]
    assert first.total == "1060.00"


# --- Consul: registration, discovery, failover ---------------------------------------------------------------


@pytest.mark.parametrize(
    "service, own_checks",
    [("customer-service", []), ("inventory-service", []), ("billing-service", [("outbox", "ttl")])],
)
def test_each_service_is_in_consul_with_a_passing_grpc_check(mesh, service, own_checks):
    """Every process of the service (service_processes of them unless scaled) is an instance with its checks."""
    entries = httpx.get(f"{mesh.consul_url}/v1/health/service/{service}").json()
    assert {entry["Service"]["Port"] for entry in entries} == set(
        instances.instance_ports(mesh, service.removesuffix("-service"))
    )
    for entry in entries:
        checks = [check for check in entry["Checks"] if check["ServiceName"] == service]
        assert [check["Type"] for check in checks if check["Name"] == f"Service '{service}' check"] == ["grpc"]
        assert [(check["Name"], check["Type"]) for check in checks if check["Type"] != "grpc"] == own_checks
        assert all(check["Status"] == "passing" for check in checks)


def _passing(mesh, service: str) -> set[int]:
    entries = httpx.get(f"{mesh.consul_url}/v1/health/service/{service}", params={"passing": 1}).json()
    return {entry["Service"]["Port"] for entry in entries}


def _latest_instances(log, service: str) -> set[str]:
    """The addresses of the service that the log's last `<service> instances:` line names."""
    lines = [line for line in log.read_text().splitlines() if f" {service} instances: " in line]
    return set(lines[-1].split(" instances: ", 1)[1].split(", ")) if lines else set()


def _bill_one(customers, products, bills) -> None:
    buyer, item = _new_customer(customers), _new_product(products, "1.00", 100)
    for _ in range(10):
        bills.CreateBill(
            billing.CreateBillRequest(
                customer_id=buyer.id, items=[billing.CreateBillRequest.Item(product_id=item.id, quantity=1)]
            ),
            timeout=10,
        )


def test_billing_spreads_over_two_customer_instances_and_drops_a_killed_one(mesh, customers, products, bills, tmp_path):
    port = free_port(mesh.host)
    log_path = tmp_path / "second-customer.log"
    with open(log_path, "w") as log:
        second = subprocess.Popen(
            [sys.executable, "-m", "services.customer"],
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "SHOPMESH_INSTANCE_PORT": str(port)},
        )
    try:
        wait_for(lambda: port in _passing(mesh, "customer-service"), 30, "the second instance to pass")
        mesh_logs = [mesh.log_dir / f"{name}.log" for name in instances.instance_programs(mesh, "customer")]
        mesh_before = sum(log.read_text().count("GetCustomer OK") for log in mesh_logs)
        _bill_one(customers, products, bills)
        wait_for(lambda: log_path.read_text().count("GetCustomer OK") > 0, 10, "calls on the second instance")
        wait_for(
            lambda: sum(log.read_text().count("GetCustomer OK") for log in mesh_logs) > mesh_before,
            10,
            "calls on the mesh's own instances",
        )

        billing_log = mesh.log_dir / "billing-service.log"
        the_mesh_own = {f"{mesh.host}:{each}" for each in instances.instance_ports(mesh, "customer")}
        second.send_signal(signal.SIGKILL)
        second.wait()
        wait_for(lambda: port not in _passing(mesh, "customer-service"), 30, "the killed instance to turn critical")
        wait_for(
            lambda: _latest_instances(billing_log, "customer-service") == the_mesh_own,
            10,
            "billing to drop the killed instance",
        )
        calls_after_kill = log_path.read_text().count("GetCustomer OK")
        _bill_one(customers, products, bills)
        assert log_path.read_text().count("GetCustomer OK") == calls_after_kill
    finally:
        if second.poll() is None:
            second.kill()
        httpx.put(f"{mesh.consul_url}/v1/agent/service/deregister/customer-service-{mesh.host}-{port}")


def test_scale_starts_another_registered_instance_and_scales_back(mesh):
    before = instances.instance_ports(mesh, "inventory")
    more = len(before) + 1
    scaled = shopmesh("scale", "inventory-service", str(more))
    assert scaled.returncode == 0, scaled.stderr
    assert len(_passing(mesh, "inventory-service")) == more
    status = shopmesh("status")
    assert f"inventory-service-{more}" in status.stdout
    back = shopmesh("scale", "inventory-service", str(len(before)))
    assert back.returncode == 0, back.stderr
    wait_for(lambda: _passing(mesh, "inventory-service") == set(before), 30, "the added instance to leave Consul")
    assert f"inventory-service-{more}" not in shopmesh("status").stdout


def test_scale_of_an_unknown_service_is_refused(mesh):
    refused = shopmesh("scale", "payment-service", "2")
    assert refused.returncode == 1 and "unknown service 'payment'" in refused.stderr
