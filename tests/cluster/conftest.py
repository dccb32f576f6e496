"""The cluster topology's own real cluster for its fault suite (`pytest --cluster tests/cluster`, run by `make test`):
three Consul servers and a client agent, three Kafka nodes, PostgreSQL, two Keycloak nodes and two of everything
else on 127.0.0.2-4, with its state under var/test-cluster/ and ports of its own (the single mesh's suite's moved
by 10000), so that it touches neither a person's mesh or cluster nor the single mesh's suite."""

from __future__ import annotations

import os
import threading
import time
import uuid
from collections import Counter
from contextlib import contextmanager

import httpx
import psutil
import pytest

from shopmesh.runtime.settings import PROJECT_ROOT, Settings, load
from shopmesh.tooling.supervise import Supervisor
from tests.auth import Bearer
from tests.conftest import TEST_MESH, shopmesh, wait_for

TEST_CLUSTER = {
    **{key: str(int(value) + 10000) for key, value in TEST_MESH.items() if key.endswith("_PORT") or "PORTS__" in key},
    "SHOPMESH_TOPOLOGY": "cluster",
    "SHOPMESH_VAR_DIR": str(PROJECT_ROOT / "var" / "test-cluster"),
    "SHOPMESH_POSTGRES_PORT": "35432",
    "SHOPMESH_DATAFLOW_CLUSTER_PORT": "37100",
}
os.environ.update(TEST_CLUSTER)


@pytest.fixture(scope="session")
def mesh() -> Settings:
    """The cluster, brought up once for the session as `make up-cluster` does (and down at the end, unless
    SHOPMESH_TEST_KEEP_MESH=1 or it was running already)."""
    settings = load()
    assert settings.clustered
    already_running = Supervisor(settings).running()
    started = shopmesh("up")
    if started.returncode != 0:
        pytest.fail(f"shopmesh up --topology cluster failed:\n{started.stdout}\n{started.stderr}")
    yield settings
    if not already_running and os.environ.get("SHOPMESH_TEST_KEEP_MESH") != "1":
        shopmesh("down")


@pytest.fixture(scope="session")
def supervisor(mesh) -> Supervisor:
    return Supervisor(mesh)


def pid(supervisor: Supervisor, program: str) -> int:
    return supervisor.rpc.getProcessInfo(program)["pid"]


def restarted(supervisor: Supervisor, program: str, killed: int, seconds: float = 120) -> int:
    """Wait until the process manager has started program again after its process killed died; its new pid."""

    def again() -> int | None:
        info = supervisor.rpc.getProcessInfo(program)
        return info["pid"] if info["statename"] == "RUNNING" and info["pid"] not in (0, killed) else None

    return wait_for(again, seconds, f"{program} to be started again")


@pytest.fixture(scope="session")
def admin(mesh, tokens):
    with httpx.Client(base_url=mesh.gateway_url, timeout=30, auth=Bearer(tokens)) as client:
        yield client


@pytest.fixture
def stock(admin):
    """A fresh customer and a product with 10,000 units, and whether the stock taken equals what was billed."""
    customer = admin.post(
        "/v1/customers", json={"name": "Cluster Tester", "email": f"{uuid.uuid4().hex[:12]}@example.com"}
    ).json()
    product = admin.post(
        "/v1/products", json={"name": f"cluster {uuid.uuid4().hex[:6]}", "price": "2.35", "quantity": 10000}
    ).json()

    class Stock:
        def taken(self) -> int:
            return 10000 - admin.get(f"/v1/products/{product['id']}").json()["quantity"]

        def billed(self) -> int:
            bills, token = [], ""
            while True:
                page = admin.get(
                    "/v1/bills", params={"customerId": customer["id"], "pageSize": 1000, "pageToken": token}
                ).json()
                bills += page["bills"]
                if not (token := page["nextPageToken"]):
                    return sum(item["quantity"] for bill in bills for item in bill["items"])

    made = Stock()
    made.customer, made.product = customer, product
    return made


class BillLoop:
    """Bills of one unit, one after the other through the gateway in a background thread, recorded by outcome.

    between() holds the loop between two bills, and for a second after: a process killed then has no bill of this
    loop in flight. A bill whose instance dies under it, or that goes out on a connection in the instant between
    the process's death and the gateway reading the connection's close, cannot be told stored or not by its
    caller, and the gateway retries no write it has sent: CreateBill has no idempotency key (README)."""

    def __init__(self, mesh: Settings, tokens, stock, pause: float = 0.1) -> None:
        self.client = httpx.Client(base_url=mesh.gateway_url, timeout=30, auth=Bearer(tokens, "billing-manager"))
        self.stock, self.pause = stock, pause
        self.ids: list[str] = []
        self.statuses: list[int] = []
        self.failures: list[str] = []
        self._turn = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        body = {
            "customerId": self.stock.customer["id"],
            "items": [{"productId": self.stock.product["id"], "quantity": 1}],
        }
        while not self._stop.is_set():
            with self._turn:
                try:
                    answer = self.client.post("/v1/bills", json=body)
                    status = answer.status_code
                    if status == 200:
                        self.ids.append(answer.json()["id"])
                    elif len(self.failures) < 10:
                        self.failures.append(f"{status} {answer.text[:300]}")
                except httpx.HTTPError as error:
                    status = 0
                    self.failures.append(f"0 {error!r}")
                self.statuses.append(status)
            time.sleep(self.pause)

    @contextmanager
    def between(self, settle: float = 1.0):
        with self._turn:
            yield
            time.sleep(settle)

    def outcomes(self) -> Counter:
        return Counter(self.statuses)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=60)
        self.client.close()


def connected_to(process: int, port: int) -> set[str]:
    """The addresses a process has TCP connections open to on port."""
    return {
        connection.raddr.ip
        for connection in psutil.Process(process).net_connections(kind="tcp")
        if connection.raddr and connection.raddr.port == port and connection.status == psutil.CONN_ESTABLISHED
    }
