"""REST/JSON and native gRPC through the real Envoy, endpoints from the real Consul through the control plane."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import httpx
import pytest

from shopmesh.tooling import health
from shopmesh.tooling.codegen import DESCRIPTOR_SET
from shopmesh.tooling.instances import free_port
from shopmesh.tooling.supervise import Supervisor
from tests.conftest import email, shopmesh, wait_for
from tests.load import GetLoop


def _error(answer: httpx.Response, status: int, code: int) -> str:
    assert answer.status_code == status, answer.text
    assert answer.headers["content-type"].startswith("application/json")
    body = answer.json()
    assert body["code"] == code
    return body["message"]


def test_customers_crud_over_rest(rest):
    created = rest.post("/v1/customers", json={"name": "Ada Lovelace", "email": email()})
    assert created.status_code == 200, created.text
    customer = created.json()
    assert set(customer) == {"id", "name", "email"}
    assert rest.get(f"/v1/customers/{customer['id']}").json() == customer
    patched = rest.patch(f"/v1/customers/{customer['id']}", json={"name": "Ada King"}).json()
    assert patched == {**customer, "name": "Ada King"}
    listed = rest.get("/v1/customers", params={"pageSize": 1000}).json()
    assert set(listed) == {"customers", "nextPageToken"} and patched in listed["customers"]
    assert rest.delete(f"/v1/customers/{customer['id']}").json() == {}
    _error(rest.get(f"/v1/customers/{customer['id']}"), 404, 5)


def test_pages_over_rest(rest):
    first = rest.get("/v1/customers", params={"pageSize": 2}).json()
    assert len(first["customers"]) == 2 and first["nextPageToken"]
    second = rest.get("/v1/customers", params={"pageSize": 2, "pageToken": first["nextPageToken"]}).json()
    assert not {c["id"] for c in first["customers"]} & {c["id"] for c in second["customers"]}


def test_products_crud_over_rest_with_exact_prices(rest):
    product = rest.post("/v1/products", json={"name": "Desk lamp", "price": "19.9", "quantity": 4}).json()
    assert (product["price"], product["quantity"]) == ("19.90", 4)
    emptied = rest.patch(f"/v1/products/{product['id']}", json={"quantity": 0}).json()
    assert (emptied["price"], emptied["quantity"]) == ("19.90", 0)
    assert rest.delete(f"/v1/products/{product['id']}").json() == {}
    _error(rest.get(f"/v1/products/{product['id']}"), 404, 5)


def test_bills_over_rest_in_full(rest):
    customer = rest.post("/v1/customers", json={"name": "Grace Hopper", "email": email()}).json()
    cheap = rest.post("/v1/products", json={"name": "Pencil", "price": "0.10", "quantity": 10}).json()
    dear = rest.post("/v1/products", json={"name": "Pen", "price": "0.20", "quantity": 10}).json()
    answer = rest.post(
        "/v1/bills",
        json={
            "customerId": customer["id"],
            "items": [{"productId": cheap["id"], "quantity": 3}, {"productId": dear["id"], "quantity": 1}],
        },
    )
    assert answer.status_code == 200, answer.text
    bill = answer.json()
    assert set(bill) == {"id", "billingDate", "customerId", "customer", "items", "total"}
    assert bill["total"] == "0.50" and bill["customer"] == customer
    assert [
        (i["productId"], i["product"]["name"], i["quantity"], i["unitPrice"], i["amount"]) for i in bill["items"]
    ] == [(cheap["id"], "Pencil", 3, "0.10", "0.30"), (dear["id"], "Pen", 1, "0.20", "0.20")]
    assert rest.get(f"/v1/bills/{bill['id']}").json() == bill
    assert rest.get("/v1/bills", params={"customerId": customer["id"]}).json()["bills"] == [bill]
    assert rest.get(f"/v1/products/{cheap['id']}").json()["quantity"] == 7


def test_gateway_maps_service_errors_to_http_statuses_with_json_bodies(rest):
    assert _error(rest.post("/v1/customers", json={"name": "", "email": email()}), 400, 3).startswith("customer.name")
    taken = rest.post("/v1/customers", json={"name": "First", "email": email()}).json()
    assert taken["email"] in _error(rest.post("/v1/customers", json={"name": "Twin", "email": taken["email"]}), 409, 6)
    assert "not found" in _error(rest.get("/v1/products/no-such-id"), 404, 5)
    scarce = rest.post("/v1/products", json={"name": "Rare", "price": "5.00", "quantity": 1}).json()
    message = _error(
        rest.post("/v1/bills", json={"customerId": taken["id"], "items": [{"productId": scarce["id"], "quantity": 2}]}),
        400,
        9,
    )
    assert message.startswith("items[0].quantity") and "1 left" in message
    assert rest.get(f"/v1/products/{scarce['id']}").json()["quantity"] == 1


@pytest.mark.parametrize(
    "method, path, body, content, fragment",
    [
        ("POST", "/v1/customers", None, b'{"name": "x", ', "Unexpected end"),
        ("POST", "/v1/products", {"name": "x", "price": 12.5}, None, "product.price"),
        ("POST", "/v1/products", {"name": "x", "price": "1.00", "quantity": "many"}, None, "product.quantity"),
        ("GET", "/v1/customers?pageSize=ten", None, None, "page_size"),
        ("GET", "/v1/customers?colour=blue", None, None, "colour"),
    ],
)
def test_malformed_requests_are_400_with_a_json_message(rest, method, path, body, content, fragment):
    answer = rest.request(method, path, json=body, content=content)
    assert fragment in _error(answer, 400, 3)


@pytest.mark.parametrize(
    "method, path",
    [
        ("GET", "/v1/nothing-here"),
        ("POST", "/v1/customers/some-id"),
        ("POST", "/shopmesh.inventory.v1.InventoryService/ReserveStock"),
    ],
)
def test_unknown_routes_and_internal_rpcs_are_404_json(rest, method, path):
    assert _error(rest.request(method, path, json={}), 404, 5) == "no such route"


def test_native_grpc_passes_through_the_same_listener(mesh, tokens):
    bearer = f"authorization: Bearer {tokens()}"
    called = shopmesh(
        "grpcurl",
        "-plaintext",
        "-H",
        bearer,
        "-protoset",
        str(DESCRIPTOR_SET),
        "-d",
        '{"page_size": 1}',
        f"{mesh.host}:{mesh.gateway_port}",
        "shopmesh.inventory.v1.InventoryService/ListProducts",
    )
    assert called.returncode == 0, called.stderr
    assert len(json.loads(called.stdout)["products"]) == 1
    refused = shopmesh(
        "grpcurl",
        "-plaintext",
        "-H",
        bearer,
        "-protoset",
        str(DESCRIPTOR_SET),
        "-d",
        '{"customer": {"name": ""}}',
        f"{mesh.host}:{mesh.gateway_port}",
        "shopmesh.customer.v1.CustomerService/CreateCustomer",
    )
    assert "InvalidArgument" in refused.stderr and "customer.name" in refused.stderr


# --- following Consul ---------------------------------------------------------------------------------------


def _envoy_hosts(mesh, cluster: str) -> set[int]:
    """Ports of the hosts Envoy holds for a cluster, as its admin reports them."""
    clusters = httpx.get(f"{mesh.envoy_admin_url}/clusters", params={"format": "json"}).json()
    for status in clusters.get("cluster_statuses", []):
        if status["name"] == cluster:
            return {host["address"]["socket_address"]["port_value"] for host in status.get("host_statuses", [])}
    return set()


class Instance:
    """A further customer-service instance, started as a user's `scale` would, and its own log."""

    def __init__(self, mesh, tmp_path) -> None:
        self.mesh = mesh
        self.port = free_port(mesh.host)
        self.log = tmp_path / f"customer-{self.port}.log"
        with open(self.log, "w") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "services.customer"],
                stdout=out,
                stderr=subprocess.STDOUT,
                env={**os.environ, "SHOPMESH_INSTANCE_PORT": str(self.port)},
            )

    def served(self) -> int:
        return self.log.read_text().count("GetCustomer OK")

    def passing_in_consul(self) -> bool:
        entries = httpx.get(f"{self.mesh.consul_url}/v1/health/service/customer-service", params={"passing": 1}).json()
        return self.port in {entry["Service"]["Port"] for entry in entries}

    def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait()

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=20)
        httpx.put(f"{self.mesh.consul_url}/v1/agent/service/deregister/customer-service-{self.mesh.host}-{self.port}")


@pytest.fixture
def instance(mesh, tmp_path):
    started = Instance(mesh, tmp_path)
    yield started
    started.stop()


def _a_customer(rest) -> str:
    return rest.post("/v1/customers", json={"name": "Loop", "email": email()}).json()["id"]


def test_a_new_instance_takes_traffic_within_5_s_of_passing_without_restarting_envoy(mesh, rest, tokens, instance):
    envoy_pid = Supervisor(mesh).info()["envoy"]["pid"]
    with GetLoop(mesh, _a_customer(rest), tokens) as loop:
        wait_for(instance.passing_in_consul, 30, "the new instance to pass its Consul check")
        wait_for(lambda: instance.served() > 0, 5, "Envoy to send the new instance requests")
    assert set(loop.statuses) == {200}
    assert Supervisor(mesh).info()["envoy"]["pid"] == envoy_pid


def test_killing_one_of_two_instances_during_200_gets_fails_none(mesh, rest, tokens, instance):
    wait_for(
        lambda: _envoy_hosts(mesh, "customer-service") >= {instance.port, mesh.service_ports["customer"]},
        30,
        "Envoy to hold both instances",
    )
    loop = GetLoop(mesh, _a_customer(rest), tokens, limit=200)
    with loop:
        wait_for(lambda: len(loop.statuses) >= 50 and instance.served() > 0, 30, "traffic on both instances")
        instance.kill()
        loop.wait_done(120)
    assert len(loop.statuses) == 200
    assert [status for status in loop.statuses if status != 200] == []
    wait_for(
        lambda: instance.port not in _envoy_hosts(mesh, "customer-service"), 30, "Envoy to drop the killed instance"
    )


def test_stopping_an_instance_envoy_still_routes_to_fails_no_read(mesh, rest, tokens, instance):
    """Scaling in while the control plane is away (restarting, or behind a Consul election): Envoy keeps sending
    reads to an instance that is shutting down (SIGTERM) until it hears otherwise. A read the instance no longer
    takes is retried on the other instance, whatever the instance answered."""
    supervisor = Supervisor(mesh)
    wait_for(
        lambda: _envoy_hosts(mesh, "customer-service") >= {instance.port, mesh.service_ports["customer"]},
        30,
        "Envoy to hold both instances",
    )
    loop = GetLoop(mesh, _a_customer(rest), tokens, limit=300)
    try:
        with loop:
            wait_for(lambda: len(loop.statuses) >= 50 and instance.served() > 0, 30, "traffic on both instances")
            supervisor.rpc.stopProcess("mesh-control-plane", True)
            instance.process.terminate()
            instance.process.wait(timeout=30)
            loop.wait_done(120)
    finally:
        supervisor.rpc.startProcess("mesh-control-plane", True)
        wait_for(
            lambda: health.service_instance(mesh, "mesh-control-plane", mesh.control_plane_port) is None,
            60,
            "the control plane healthy again",
        )
    assert len(loop.statuses) == 300
    assert [status for status in loop.statuses if status != 200] == [], loop.failures
    wait_for(
        lambda: instance.port not in _envoy_hosts(mesh, "customer-service"), 30, "Envoy to drop the stopped instance"
    )


def test_requests_keep_working_while_the_control_plane_restarts(mesh, rest, tokens):
    supervisor = Supervisor(mesh)
    with GetLoop(mesh, _a_customer(rest), tokens) as loop:
        wait_for(lambda: len(loop.statuses) >= 20, 30, "requests flowing")
        supervisor.rpc.stopProcess("mesh-control-plane", True)
        stopped_at = len(loop.statuses)
        wait_for(lambda: len(loop.statuses) >= stopped_at + 50, 60, "requests while the control plane is down")
        supervisor.rpc.startProcess("mesh-control-plane", True)
        wait_for(
            lambda: health.service_instance(mesh, "mesh-control-plane", mesh.control_plane_port) is None,
            60,
            "the control plane healthy again",
        )
        started_at = len(loop.statuses)
        wait_for(lambda: len(loop.statuses) >= started_at + 50, 60, "requests after it is back")
    assert [status for status in loop.statuses if status != 200] == [], loop.failures


def test_envoy_resubscribes_after_a_control_plane_restart(mesh, tmp_path):
    supervisor = Supervisor(mesh)
    supervisor.rpc.stopProcess("mesh-control-plane", True)
    supervisor.rpc.startProcess("mesh-control-plane", True)
    late = Instance(mesh, tmp_path)
    try:
        wait_for(
            lambda: late.port in _envoy_hosts(mesh, "customer-service"),
            30,
            "Envoy to learn an instance started after the restart",
        )
    finally:
        late.stop()


def test_the_analytics_stream_is_native_grpc_through_the_gateway_too(mesh, tokens):
    """The same RPC the browser reads as server-sent events, called by grpcurl: the latest windows, then more."""
    called = shopmesh(
        "grpcurl",
        "-plaintext",
        "-H",
        f"authorization: Bearer {tokens('billing-manager')}",
        "-protoset",
        str(DESCRIPTOR_SET),
        "-max-time",
        "12",
        "-d",
        '{"limit": 2}',
        f"{mesh.host}:{mesh.gateway_port}",
        "shopmesh.analytics.v1.AnalyticsService/WatchWindowTotals",
    )
    assert "DeadlineExceeded" in called.stderr, called.stderr  # the stream only ends when the caller leaves
    decoder, text, windows = json.JSONDecoder(), called.stdout.strip(), []
    while text:
        window, end = decoder.raw_decode(text)
        windows.append(window)
        text = text[end:].strip()
    starts = [window["windowStart"] for window in windows]
    assert len(starts) >= 3 and starts == sorted(set(starts)), starts  # two sent first, then one closing after
