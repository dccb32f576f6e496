"""The services on PostgreSQL as well as SQLite: a real PostgreSQL server (Debian's), started for this module."""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import grpc
import httpx
import pytest

from shopmesh.billing.v1 import billing_service_pb2 as billing
from shopmesh.billing.v1 import billing_service_pb2_grpc as billing_grpc
from shopmesh.customer.v1 import customer_service_pb2 as customer
from shopmesh.customer.v1 import customer_service_pb2_grpc as customer_grpc
from shopmesh.inventory.v1 import inventory_service_pb2 as inventory
from shopmesh.inventory.v1 import inventory_service_pb2_grpc as inventory_grpc
from shopmesh.tooling import health, install
from shopmesh.tooling.instances import free_port
from tests.auth import SERVICE_ACCOUNT, Bearer, authorized_channel
from tests.conftest import wait_for

POSTGRES_BIN = "/usr/lib/postgresql/*/bin"


@pytest.fixture(scope="module")
def postgres_url(mesh):
    install.ensure_tools({f"{POSTGRES_BIN}/initdb": "postgresql"})
    bin_dir = Path(sorted(Path("/").glob(POSTGRES_BIN.lstrip("/")))[-1])
    # PostgreSQL refuses to run as root: its folder belongs to the postgres user Debian's package creates.
    owner = "postgres" if os.geteuid() == 0 else pwd.getpwuid(os.geteuid()).pw_name
    run_as = ["runuser", "-u", owner, "--"] if os.geteuid() == 0 else []
    data = Path(tempfile.mkdtemp(prefix="shopmesh-pg-"))
    data.chmod(0o755)
    shutil.chown(data, owner)
    port = free_port(mesh.host)
    subprocess.run(
        [*run_as, str(bin_dir / "initdb"), "-D", str(data / "db"), "-U", "shopmesh", "--auth=trust"],
        check=True,
        capture_output=True,
    )
    server = subprocess.Popen(
        [*run_as, str(bin_dir / "postgres"), "-D", str(data / "db"), "-h", mesh.host, "-p", str(port), "-k", str(data)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        while (
            subprocess.run(
                [str(bin_dir / "pg_isready"), "-h", mesh.host, "-p", str(port)], capture_output=True
            ).returncode
            != 0
        ):
            assert time.monotonic() < deadline, "PostgreSQL did not start"
            time.sleep(0.2)
        subprocess.run(
            ["createdb", "-h", mesh.host, "-p", str(port), "-U", "shopmesh", "shopmesh"],
            check=True,
            capture_output=True,
        )
        yield f"postgresql+psycopg://shopmesh@{mesh.host}:{port}/shopmesh"
    finally:
        subprocess.run(
            [*run_as, str(bin_dir / "pg_ctl"), "stop", "-D", str(data / "db"), "-m", "fast"], capture_output=True
        )
        server.wait(timeout=30)
        shutil.rmtree(data, ignore_errors=True)


@pytest.fixture
def service_on_postgres(mesh, postgres_url, tmp_path, tokens):
    """Start one instance of a service on PostgreSQL, and stop it (it deregisters) afterwards."""
    started = []

    def start(name: str, *users: str) -> grpc.Channel | tuple[grpc.Channel, ...]:
        """The instance's channel as mesh-admin, or one channel per user named."""
        port = free_port(mesh.host)
        env = {
            **os.environ,
            "SHOPMESH_INSTANCE_PORT": str(port),
            f"SHOPMESH_DATABASE_URLS__{name.upper()}": postgres_url,
        }
        with open(tmp_path / f"{name}.log", "w") as log:
            process = subprocess.Popen(
                [sys.executable, "-m", f"services.{name}"], env=env, stdout=log, stderr=subprocess.STDOUT
            )
        started.append(process)
        deadline = time.monotonic() + 30
        while health.grpc_serving(mesh, port):
            assert process.poll() is None, (tmp_path / f"{name}.log").read_text()
            assert time.monotonic() < deadline, f"{name} on PostgreSQL did not become healthy"
            time.sleep(0.2)
        channels = tuple(authorized_channel(f"{mesh.host}:{port}", tokens, user) for user in users or ("mesh-admin",))
        return channels if users else channels[0]

    yield start
    for process in started:
        process.terminate()
        process.wait(timeout=30)


def test_customers_are_stored_in_postgresql(service_on_postgres, postgres_url):
    stub = customer_grpc.CustomerServiceStub(service_on_postgres("customer"))
    email = f"{uuid.uuid4().hex[:10]}@example.com"
    created = stub.CreateCustomer(
        customer.CreateCustomerRequest(customer=customer.Customer(name="On Postgres", email=email)), timeout=10
    )
    with pytest.raises(grpc.RpcError) as duplicate:
        stub.CreateCustomer(
            customer.CreateCustomerRequest(customer=customer.Customer(name="Twin", email=email)), timeout=10
        )
    assert duplicate.value.code() == grpc.StatusCode.ALREADY_EXISTS
    rows = subprocess.run(
        ["psql", postgres_url.replace("+psycopg", ""), "-tAc", f"select name from customers where id = '{created.id}'"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert rows == ["On", "Postgres"]
    names = {c.name for c in stub.ListCustomers(customer.ListCustomersRequest(), timeout=10).customers}
    assert {"Mohamed", "On Postgres"} <= names  # seeded on first start, then the new one


def test_stock_is_reserved_atomically_in_postgresql(service_on_postgres):
    admin, service = map(
        inventory_grpc.InventoryServiceStub, service_on_postgres("inventory", "mesh-admin", SERVICE_ACCOUNT)
    )
    product = admin.CreateProduct(
        inventory.CreateProductRequest(product=inventory.Product(name="pg widget", price="2.50", quantity=3)),
        timeout=10,
    )
    reserved = service.ReserveStock(
        inventory.ReserveStockRequest(
            reservation_id=uuid.uuid4().hex, lines=[inventory.StockLine(product_id=product.id, quantity=2)]
        ),
        timeout=10,
    ).products
    assert [(p.price, p.quantity) for p in reserved] == [("2.50", 1)]
    with pytest.raises(grpc.RpcError) as short:
        service.ReserveStock(
            inventory.ReserveStockRequest(
                reservation_id=uuid.uuid4().hex, lines=[inventory.StockLine(product_id=product.id, quantity=2)]
            ),
            timeout=10,
        )
    assert short.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert admin.GetProduct(inventory.GetProductRequest(id=product.id), timeout=10).quantity == 1


def _psql(postgres_url: str, query: str) -> str:
    return subprocess.run(
        ["psql", postgres_url.replace("+psycopg", ""), "-tAc", query], capture_output=True, text=True, check=True
    ).stdout.strip()


def test_bills_are_stored_in_postgresql_and_their_events_published(service_on_postgres, postgres_url, mesh, tokens):
    with httpx.Client(base_url=mesh.gateway_url, auth=Bearer(tokens), timeout=30) as api:
        buyer = api.post(
            "/v1/customers", json={"name": "PG Buyer", "email": f"{uuid.uuid4().hex[:10]}@example.com"}
        ).json()
        product = api.post("/v1/products", json={"name": "pg item", "price": "4.10", "quantity": 10}).json()
    (channel,) = service_on_postgres("billing", "billing-manager")
    bills = billing_grpc.BillingServiceStub(channel)
    made = bills.CreateBill(
        billing.CreateBillRequest(
            customer_id=buyer["id"], items=[billing.CreateBillRequest.Item(product_id=product["id"], quantity=3)]
        ),
        timeout=10,
    )
    assert (made.total, [item.amount for item in made.items]) == ("12.30", ["12.30"])
    assert bills.GetBill(billing.GetBillRequest(id=made.id), timeout=10) == made
    assert list(bills.ListBills(billing.ListBillsRequest(customer_id=buyer["id"]), timeout=10).bills) == [made]
    assert _psql(postgres_url, f"select total_cents from bills where id = '{made.id}'") == "1230"
    # The bill's invoice event went through PostgreSQL's outbox to Kafka.
    wait_for(
        lambda: (
            _psql(postgres_url, f"select published_at is not null from outbox where invoice_id = '{made.id}'") == "t"
        ),
        30,
        "the bill's event to be published",
    )
