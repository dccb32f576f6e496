"""FACTURATION on the real Kafka: the topics, the producer, and billing's transactional outbox."""

from __future__ import annotations

import json
import re
import time
from decimal import Decimal

import httpx
from kafka.admin import KafkaAdminClient

from shopmesh.runtime import invoices
from shopmesh.tooling import health
from shopmesh.tooling.supervise import Supervisor
from tests.conftest import wait_for
from tests.kafka_topics import invoice_ids, read_topic

ISO_MILLIS_UTC = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


def test_the_contract_topics_exist_with_facturation_in_3_partitions(mesh):
    admin = KafkaAdminClient(bootstrap_servers=mesh.kafka_bootstrap)
    try:
        described = {topic["name"]: len(topic["partitions"]) for topic in admin.describe_topics(list(invoices.TOPICS))}
    finally:
        admin.close()
    assert described == invoices.TOPICS


def _check_shape(message) -> dict:
    event = json.loads(message.value)
    assert set(event) == {"invoice_id", "customer_name", "amount", "issued_at"}
    assert message.key.decode() == event["customer_name"]
    raw_amount = re.search(rb'"amount": ([0-9.]+)', message.value).group(1).decode()
    amount = Decimal(raw_amount)
    assert amount >= 0 and amount == amount.quantize(Decimal("0.01"))
    assert ISO_MILLIS_UTC.match(event["issued_at"]), event["issued_at"]
    return event


def test_the_producer_sends_an_invoice_every_second_in_the_contract_shape(mesh):
    before = {(m.partition, m.offset) for m in read_topic(mesh, invoices.FACTURATION)}
    seconds = 5
    time.sleep(seconds + 1)
    fresh = [m for m in read_topic(mesh, invoices.FACTURATION) if (m.partition, m.offset) not in before]
    assert len(fresh) >= seconds
    events = [_check_shape(message) for message in fresh]
    assert len({event["invoice_id"] for event in events}) == len(events)
    assert {m.partition for m in fresh} <= {0, 1, 2}


def test_the_producer_names_real_customers(mesh, tokens):
    names = {c["name"] for c in httpx.get(f"{mesh.gateway_url}/v1/customers", params={"pageSize": 1000},
                                          headers=tokens.header("user1")).json()["customers"]}
    recent = [json.loads(m.value)["customer_name"] for m in read_topic(mesh, invoices.FACTURATION)[-20:]]
    assert recent and set(recent) <= names


def test_the_producer_keeps_its_ttl_check_passing_in_consul(mesh):
    entries = httpx.get(f"{mesh.consul_url}/v1/health/service/facturation-producer").json()
    checks = [check for entry in entries for check in entry["Checks"] if check["ServiceName"]]
    assert [(check["Type"], check["Status"]) for check in checks] == [("ttl", "passing")]


def test_a_bill_appears_on_facturation_exactly_once(mesh, billing):
    bill = billing(quantity=3)
    wait_for(lambda: bill["id"] in invoice_ids(read_topic(mesh, invoices.FACTURATION)), 20, "the bill's event")
    time.sleep(2)  # the relay's next rounds must not send it again
    matching = [m for m in read_topic(mesh, invoices.FACTURATION) if json.loads(m.value)["invoice_id"] == bill["id"]]
    assert len(matching) == 1
    event = _check_shape(matching[0])
    assert (event["customer_name"], Decimal(re.search(rb'"amount": ([0-9.]+)', matching[0].value).group(1).decode())) \
        == (bill["customer"]["name"], Decimal(bill["total"]))
    assert bill["total"] == "37.02"


def test_a_bill_made_while_kafka_is_down_is_published_once_it_returns(mesh, billing):
    supervisor = Supervisor(mesh)
    supervisor.rpc.stopProcess("kafka", True)
    try:
        bill = billing()  # billing does not need Kafka to make a bill
    finally:
        supervisor.rpc.startProcess("kafka", True)
        wait_for(lambda: health.kafka_metadata(mesh) is None, 120, "Kafka to answer again")
    wait_for(lambda: bill["id"] in invoice_ids(read_topic(mesh, invoices.FACTURATION)), 60,
             "the waiting event to be published")
    time.sleep(2)
    assert invoice_ids(read_topic(mesh, invoices.FACTURATION)).count(bill["id"]) == 1
