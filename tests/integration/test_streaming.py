"""FACTURATION on the real Kafka: the topics, the producer, and billing's transactional outbox."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
import uuid
from decimal import Decimal

import httpx
from kafka.admin import KafkaAdminClient

from services.facturation_producer.producer import BUILT_IN_CUSTOMERS
from shopmesh.runtime import invoices
from shopmesh.tooling import health
from shopmesh.tooling.dataflow_runs import own_topics
from shopmesh.tooling.supervise import Supervisor
from tests.conftest import email, wait_for
from tests.kafka_topics import invoice_events, invoice_ids, read_topic

ISO_MILLIS_UTC = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


def test_the_contract_topics_exist_with_facturation_in_3_partitions(mesh):
    admin = KafkaAdminClient(bootstrap_servers=mesh.kafka_bootstrap)
    try:
        described = {
            topic["name"]: len(topic["partitions"]) for topic in admin.describe_topics(list(invoices.topics(mesh)))
        }
    finally:
        admin.close()
    assert described == invoices.topics(mesh)


def _check_shape(message, event: dict) -> dict:
    assert set(event) == {"invoice_id", "customer_name", "amount", "issued_at"}
    assert message.key.decode() == event["customer_name"]
    raw_amount = re.search(rb'"amount": ([0-9.]+)', message.value).group(1).decode()
    amount = Decimal(raw_amount)
    assert amount >= 0 and amount == amount.quantize(Decimal("0.01"))
    assert ISO_MILLIS_UTC.match(event["issued_at"]), event["issued_at"]
    return event


def test_the_producer_sends_an_invoice_every_second_in_the_contract_shape(mesh):
    before = {(m.partition, m.offset) for m in read_topic(mesh, mesh.facturation_topic)}
    seconds = 5
    time.sleep(seconds + 1)  # the rate is what is measured: a second is its unit, not a wait for something
    fresh = [
        (m, event)
        for m, event in invoice_events(read_topic(mesh, mesh.facturation_topic))
        if (m.partition, m.offset) not in before
    ]
    assert len(fresh) >= seconds
    events = [_check_shape(message, event) for message, event in fresh]
    assert len({event["invoice_id"] for event in events}) == len(events)
    assert {m.partition for m, _ in fresh} <= {0, 1, 2}


def test_the_producer_names_the_customer_service_s_customers_not_its_built_in_list(mesh, rest, tmp_path):
    """A producer of the test's own, on its own topic and fast: it names a customer made just before it starts
    (which no built-in list holds), and only customers the customer service has."""
    made = rest.post("/v1/customers", json={"name": f"Named {uuid.uuid4().hex[:8]}", "email": email()}).json()
    assert made["name"] not in BUILT_IN_CUSTOMERS
    with own_topics(mesh) as topics, open(tmp_path / "producer.log", "wb") as log:
        env = {**os.environ, **topics.env(), "SHOPMESH_FACTURATION_RATE": "200"}
        producer = subprocess.Popen(
            [sys.executable, "-m", "services.facturation_producer"], env=env, stdout=log, stderr=subprocess.STDOUT
        )
        try:
            named = wait_for(
                lambda: (
                    made["name"]
                    in (
                        names := {event["customer_name"] for _, event in invoice_events(read_topic(mesh, topics.input))}
                    )
                    and names
                ),
                60,
                f"an invoice naming {made['name']}",
            )
        finally:
            producer.terminate()
            producer.wait(30)
    customers, token = set(), ""
    while True:
        page = rest.get("/v1/customers", params={"pageSize": 1000, "pageToken": token}).json()
        customers |= {customer["name"] for customer in page["customers"]}
        if not (token := page.get("nextPageToken")):
            break
    assert named <= customers


def test_the_producer_keeps_its_ttl_check_passing_in_consul(mesh):
    entries = httpx.get(f"{mesh.consul_url}/v1/health/service/facturation-producer").json()
    checks = [check for entry in entries for check in entry["Checks"] if check["ServiceName"]]
    assert [(check["Type"], check["Status"]) for check in checks] == [("ttl", "passing")]


def test_a_bill_appears_on_facturation_exactly_once(mesh, billing):
    bill = billing(quantity=3)
    wait_for(lambda: bill["id"] in invoice_ids(read_topic(mesh, mesh.facturation_topic)), 20, "the bill's event")
    time.sleep(2)  # the relay's next rounds must not send it again
    matching = [
        (m, event)
        for m, event in invoice_events(read_topic(mesh, mesh.facturation_topic))
        if event["invoice_id"] == bill["id"]
    ]
    assert len(matching) == 1
    event = _check_shape(*matching[0])
    assert (
        event["customer_name"],
        Decimal(re.search(rb'"amount": ([0-9.]+)', matching[0][0].value).group(1).decode()),
    ) == (bill["customer"]["name"], Decimal(bill["total"]))
    assert bill["total"] == "37.02"


def test_a_bill_made_while_kafka_is_down_is_published_once_it_returns(mesh, billing):
    supervisor = Supervisor(mesh)
    supervisor.rpc.stopProcess("kafka", True)
    try:
        bill = billing()  # billing does not need Kafka to make a bill
    finally:
        supervisor.rpc.startProcess("kafka", True)
        wait_for(lambda: health.kafka_metadata(mesh) is None, 120, "Kafka to answer again")
    wait_for(
        lambda: bill["id"] in invoice_ids(read_topic(mesh, mesh.facturation_topic)),
        60,
        "the waiting event to be published",
    )
    time.sleep(2)
    assert invoice_ids(read_topic(mesh, mesh.facturation_topic)).count(bill["id"]) == 1
