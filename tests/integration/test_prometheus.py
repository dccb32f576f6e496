"""Prometheus against the real mesh: every part is a target found through Consul and up, a request through the
gateway moves the right counter, a poison message the dead-letter counter, a scaled instance becomes a target
without a restart of Prometheus, the outbox alert goes pending while Kafka is paused, and a request id sent to
the gateway is found in the access log and in each service's log for that call. The rules pass promtool."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import uuid
from functools import partial
from pathlib import Path
from urllib.parse import quote

import httpx
import pytest
from playwright.sync_api import expect
from prometheus_client.parser import text_string_to_metric_families

from shopmesh.runtime import metrics
from shopmesh.runtime.settings import PROJECT_ROOT
from shopmesh.tooling import health
from shopmesh.tooling.install import locations
from shopmesh.tooling.supervise import Supervisor
from tests.auth import Bearer
from tests.conftest import shopmesh, wait_for

#: What Prometheus must scrape in the mesh `shopmesh up` starts: every part, each found through Consul.
PARTS = {
    "consul",
    "kafka",
    "keycloak",
    "gateway",
    "mesh-control-plane",
    "customer-service",
    "inventory-service",
    "billing-service",
    "analytics-service",
    "facturation-producer",
    "analytics-totals-5s",
    "analytics-totals-by-customer",
    "prometheus",
}


def _prometheus(mesh, path: str, **params) -> dict:
    answer = httpx.get(f"{mesh.prometheus_url}{path}", params=params, timeout=10)
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["status"] == "success", body
    return body["data"]


def _targets(mesh) -> list[dict]:
    return _prometheus(mesh, "/api/v1/targets", state="active")["activeTargets"]


def _up_jobs(mesh) -> dict[str, set[str]]:
    """job -> the instances Prometheus scraped successfully."""
    jobs: dict[str, set[str]] = {}
    for target in _targets(mesh):
        if target["health"] == "up":
            jobs.setdefault(target["labels"]["job"], set()).add(target["labels"]["instance"])
    return jobs


def _announced(mesh, service: str) -> list[str]:
    """The metrics URLs the instances of a service announce in Consul."""
    services = httpx.get(f"{mesh.consul_url}/v1/agent/services", timeout=10).json()
    return [
        f"http://{entry['Address']}:{entry['Meta'][metrics.METRICS_PORT]}{entry['Meta'][metrics.METRICS_PATH]}"
        for entry in services.values()
        if entry["Service"] == service and metrics.METRICS_PORT in (entry.get("Meta") or {})
    ]


def _sample(mesh, service: str, name: str, labels: dict[str, str]) -> float:
    """The sum over a service's instances of one sample, read from their metrics endpoints."""
    total = 0.0
    for url in _announced(mesh, service):
        text = httpx.get(url, timeout=10).text
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                # (The parser names every counter's sample *_total, as OpenMetrics does; Envoy's have no suffix.)
                if sample.name in (name, f"{name}_total") and all(
                    sample.labels.get(key) == value for key, value in labels.items()
                ):
                    total += sample.value
    return total


@pytest.fixture(scope="module")
def admin(mesh, tokens):
    with httpx.Client(base_url=mesh.gateway_url, timeout=30, auth=Bearer(tokens)) as client:
        yield client


def test_the_rules_and_the_configuration_pass_promtool(mesh):
    promtool = str(locations(mesh).prometheus / "bin" / "promtool")
    folder = PROJECT_ROOT / "prometheus"
    for argv in (
        [promtool, "check", "rules", str(folder / "rules.yml")],
        [promtool, "test", "rules", str(folder / "rules_test.yml")],
        [promtool, "check", "config", str(mesh.var_dir / "prometheus" / "prometheus.yml")],
    ):
        checked = subprocess.run(argv, capture_output=True, text=True, check=False)
        assert checked.returncode == 0, f"{' '.join(argv[1:])}:\n{checked.stdout}\n{checked.stderr}"


def test_every_part_is_an_up_target_found_through_consul(mesh):
    wait_for(lambda: set(_up_jobs(mesh)) >= PARTS, 60, f"every part up in Prometheus: {sorted(PARTS)}")
    jobs = _up_jobs(mesh)
    # Every instance that announces its metrics in Consul is scraped, and none is down.
    for job in PARTS - {"consul"}:
        announced = {entry["ServiceID"] for entry in _catalog(mesh, job)}
        assert jobs[job] == announced, job
    down = [target["labels"] for target in _targets(mesh) if target["health"] == "down"]
    assert not down, down
    # Each kind of part serves its own metrics.
    for query in (
        'envoy_http_downstream_rq_total{envoy_http_conn_manager_prefix="gateway"}',
        'kafka_server_brokertopicmetrics_messagesin_total{job="kafka"}',
        'jvm_memory_used_bytes{job="keycloak"}',
        'consul_raft_apply{job="consul"}',
        'shopmesh_xds_pushes_total{job="mesh-control-plane"}',
        'shopmesh_invoices_produced_total{job="facturation-producer"}',
        'bytewax_kafka_consumer_lag{job="analytics-totals-5s"}',
        'shopmesh_outbox_events_waiting{job="billing-service"}',
    ):
        wait_for(partial(_series, mesh, query), 60, f"a series of {query}")


def _series(mesh, query: str) -> list[dict]:
    return _prometheus(mesh, "/api/v1/query", query=query)["result"]


def _value(mesh, query: str) -> float:
    """The value of a query that answers one sample (0 when it answers none)."""
    result = _series(mesh, query)
    return float(result[0]["value"][1]) if result else 0.0


def _catalog(mesh, service: str) -> list[dict]:
    return httpx.get(f"{mesh.consul_url}/v1/catalog/service/{service}", timeout=10).json()


def test_a_request_through_the_gateway_moves_its_counter_with_method_and_code(mesh, tokens, admin):
    labels = {"grpc_method": "GetCustomer", "grpc_code": "NotFound", "grpc_type": "unary"}
    before = _sample(mesh, "customer-service", "grpc_server_handled_total", labels)
    ok_before = _sample(mesh, "customer-service", "grpc_server_handled_total", {**labels, "grpc_code": "OK"})
    assert admin.get(f"/v1/customers/{uuid.uuid4().hex}").status_code == 404
    # The service sends an error's status before its own bookkeeping of the call ends: the count follows at once.
    wait_for(
        lambda: _sample(mesh, "customer-service", "grpc_server_handled_total", labels) == before + 1,
        5,
        "the NotFound to be counted once",
    )
    assert _sample(mesh, "customer-service", "grpc_server_handled_total", labels) == before + 1
    assert _sample(mesh, "customer-service", "grpc_server_handled_total", {**labels, "grpc_code": "OK"}) == ok_before
    # The gateway counts the tokens it refused, and the roles it found missing.
    jwt_denied = _sample(mesh, "gateway", "envoy_http_jwt_authn_denied", {"envoy_http_conn_manager_prefix": "gateway"})
    rbac_denied = _sample(mesh, "gateway", "envoy_http_rbac_denied", {"envoy_http_conn_manager_prefix": "gateway"})
    forged = httpx.get(f"{mesh.gateway_url}/v1/customers", headers={"authorization": "Bearer forged.to.ken"})
    assert forged.status_code == 401
    user1 = httpx.post(
        f"{mesh.gateway_url}/v1/customers",
        json={"name": "Not Allowed", "email": f"{uuid.uuid4().hex}@x.org"},
        auth=Bearer(tokens, "user1"),
    )
    assert user1.status_code == 403
    prefix = {"envoy_http_conn_manager_prefix": "gateway"}
    assert _sample(mesh, "gateway", "envoy_http_jwt_authn_denied", prefix) == jwt_denied + 1
    assert _sample(mesh, "gateway", "envoy_http_rbac_denied", prefix) == rbac_denied + 1
    # And Prometheus sees it on its next scrape.
    query = 'sum(grpc_server_handled_total{grpc_method="GetCustomer", grpc_code="NotFound"})'
    wait_for(lambda: _value(mesh, query) >= before + 1, 30, "Prometheus to scrape the new count")


def test_a_poison_message_moves_the_dead_letter_counter_with_its_reason(mesh):
    from kafka import KafkaProducer

    labels = {"dataflow": "totals_by_customer", "reason": "not_json"}
    before = _sample(mesh, "analytics-totals-by-customer", "shopmesh_dataflow_dead_letters_total", labels)
    producer = KafkaProducer(bootstrap_servers=mesh.kafka_bootstrap)
    producer.send(mesh.facturation_topic, key=b"poison", value=b"{not json at all").get(timeout=30)
    producer.close()
    wait_for(
        lambda: (
            _sample(mesh, "analytics-totals-by-customer", "shopmesh_dataflow_dead_letters_total", labels) == before + 1
        ),
        60,
        "the dead-letter counter to count the poison message",
    )


def test_a_scaled_instance_becomes_a_target_without_a_restart(mesh):
    prometheus = Supervisor(mesh).rpc.getProcessInfo("prometheus")["pid"]
    before = {entry["ServiceID"] for entry in _catalog(mesh, "customer-service")}
    scaled = shopmesh("scale", "customer-service", str(len(before) + 1))
    assert scaled.returncode == 0, scaled.stderr
    try:
        added = {entry["ServiceID"] for entry in _catalog(mesh, "customer-service")} - before
        assert len(added) == 1, added
        wait_for(lambda: added <= _up_jobs(mesh).get("customer-service", set()), 60, f"{added} to be an up target")
        assert Supervisor(mesh).rpc.getProcessInfo("prometheus")["pid"] == prometheus
    finally:
        assert shopmesh("scale", "customer-service", str(len(before))).returncode == 0
    wait_for(
        lambda: not added & {target["labels"]["instance"] for target in _targets(mesh)},
        60,
        "the removed instance to stop being a target",
    )


def _alert_state(mesh, name: str) -> str:
    alerts = _prometheus(mesh, "/api/v1/alerts")["alerts"]
    return next((alert["state"] for alert in alerts if alert["labels"]["alertname"] == name), "inactive")


def test_with_kafka_paused_the_outbox_alert_goes_pending(mesh, tokens, admin):
    customer = admin.post("/v1/customers", json={"name": "Alert Tester", "email": f"{uuid.uuid4().hex}@x.org"}).json()
    product = admin.post("/v1/products", json={"name": "alert item", "price": "2.50", "quantity": 10}).json()
    assert _alert_state(mesh, "OutboxStuck") == "inactive"
    kafka = Supervisor(mesh).rpc.getProcessInfo("kafka")["pid"]
    with httpx.Client(base_url=mesh.gateway_url, timeout=30, auth=Bearer(tokens, "billing-manager")) as client:
        os.kill(kafka, signal.SIGSTOP)
        try:
            made = client.post(
                "/v1/bills", json={"customerId": customer["id"], "items": [{"productId": product["id"], "quantity": 1}]}
            )
            assert made.status_code == 200, made.text
            # The event's age passes a minute, the next outbox report and scrape see it, a rule evaluation fires.
            wait_for(lambda: _alert_state(mesh, "OutboxStuck") == "pending", 120, "OutboxStuck to go pending")
        finally:
            os.kill(kafka, signal.SIGCONT)
    wait_for(lambda: health.kafka_metadata(mesh) is None, 120, "Kafka to answer again")
    wait_for(lambda: _alert_state(mesh, "OutboxStuck") == "inactive", 120, "OutboxStuck to clear once published")


def _logged(mesh, program: str, *words: str) -> bool:
    """Whether a line of the program's logs (of any of its instances) holds all the words."""
    for path in Path(mesh.log_dir).glob(f"{program}*.log"):
        if any(all(word in line for word in words) for line in path.read_text(errors="replace").splitlines()):
            return True
    return False


def test_a_request_id_is_followed_from_the_gateway_to_each_service(mesh, tokens, admin):
    customer = admin.post("/v1/customers", json={"name": "Followed", "email": f"{uuid.uuid4().hex}@x.org"}).json()
    product = admin.post("/v1/products", json={"name": "followed item", "price": "3.00", "quantity": 5}).json()
    request_id = f"follow-{uuid.uuid4().hex}"
    with httpx.Client(base_url=mesh.gateway_url, timeout=30, auth=Bearer(tokens, "billing-manager")) as client:
        made = client.post(
            "/v1/bills",
            json={"customerId": customer["id"], "items": [{"productId": product["id"], "quantity": 2}]},
            headers={"x-request-id": request_id},
        )
    assert made.status_code == 200, made.text
    assert made.headers["x-request-id"] == request_id
    access = Path(mesh.log_dir) / "gateway-access.log"
    line = wait_for(
        lambda: next((line for line in access.read_text().splitlines() if request_id in line), None),
        10,
        "the bill's line in the gateway's access log",
    )
    assert '"POST /v1/bills' in line and " 200 " in line and "upstream=" in line, line
    # Billing served it, and called customer (GetCustomer) and inventory (ReserveStock) with the same id.
    for program, method in (
        ("billing-service", "CreateBill"),
        ("customer-service", "GetCustomer"),
        ("inventory-service", "ReserveStock"),
    ):
        wait_for(
            partial(_logged, mesh, program, f"[{request_id}]", method),
            10,
            f"{program}'s log line of {method} with the request id",
        )


#: What the README says to graph: request rate, errors, latency, dataflow lag and outbox age.
GRAPHED = (
    "shopmesh:grpc_requests:rate1m",
    "shopmesh:grpc_errors:ratio_rate1m",
    "shopmesh:grpc_latency_seconds:p99_5m",
    "shopmesh_dataflow_event_time_lag_seconds",
    "max(shopmesh_outbox_oldest_event_age_seconds)",
)


def test_the_web_ui_graphs_requests_errors_latency_lag_and_outbox_age(mesh, browser, admin):
    for _ in range(20):  # some traffic to graph
        assert admin.get("/v1/customers").status_code == 200
    wait_for(partial(_series, mesh, GRAPHED[0]), 60, "the request rate to be recorded")
    panels = "&".join(
        f"g{number}.expr={quote(query)}&g{number}.tab=graph&g{number}.range_input=15m"
        for number, query in enumerate(GRAPHED)
    )
    page = browser.new_context(viewport={"width": 1280, "height": 2400}).new_page()
    page.goto(f"{mesh.prometheus_url}/query?{panels}")
    expect(page).to_have_title(re.compile("Prometheus"))
    # Each panel draws its chart (uPlot, a canvas) once its range query answers.
    expect(page.locator(".uplot canvas")).to_have_count(len(GRAPHED), timeout=30_000)
    folder = mesh.var_dir / "screenshots"
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    shot = folder / "prometheus-graphs.png"
    page.screenshot(path=shot, full_page=True)
    shot.chmod(0o600)  # var/ is its owner's only (test_security); Chromium writes with the test's own umask
    page.goto(f"{mesh.prometheus_url}/targets")
    for job in PARTS:
        expect(page.get_by_text(f'job="{job}"', exact=True).first).to_be_visible(timeout=30_000)
    # Each scrape pool says how many of its targets are up: all of them.
    counts = [re.fullmatch(r"(\d+) / (\d+) up", text.strip()) for text in page.get_by_text(" up").all_inner_texts()]
    pools = [(int(found[1]), int(found[2])) for found in counts if found]
    assert len(pools) == 2 and all(up == total for up, total in pools), pools
    page.context.close()
