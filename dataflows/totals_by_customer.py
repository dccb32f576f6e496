"""FACTURATION_TOTAL_BY_CUSTOMER: each invoice publishes its customer's new running total and count, keyed by
customer; the topic is a changelog, the latest record of a customer is their total.

This dataflow counts every invoice, so it is the one that reports unreadable messages to the dead-letter topic;
totals_5s reports only the invoices that came too late for their window."""

from __future__ import annotations

import bytewax.operators as op
from bytewax.connectors.kafka import KafkaSinkMessage
from bytewax.dataflow import Dataflow
from prometheus_client import Counter

from dataflows import kafka
from dataflows.totals import RunningTotal, customer_total
from shopmesh.runtime.settings import Settings, load

NAME = "totals_by_customer"
TOTALS = Counter("shopmesh_dataflow_customer_totals_emitted", "Customers' new running totals written.", ("dataflow",))


def flow(settings: Settings | None = None, edges: kafka.Edges | None = None) -> Dataflow:
    settings = settings or load()
    edges = edges or kafka.kafka_edges(settings)
    flow = Dataflow(NAME)
    received = kafka.invoices(flow, settings, edges, report_unreadable=True)
    by_customer = op.key_on("by customer", received, lambda item: item.invoice.customer_name)
    totals = op.stateful_flat_map("running totals", by_customer, _add)
    edges.write("write totals", op.key_rm("records", totals), settings.total_by_customer_topic)
    return flow


def _add(total: RunningTotal | None, item: kafka.Received) -> tuple[RunningTotal, list[KafkaSinkMessage]]:
    total = total or RunningTotal()
    if not total.add(item.invoice):
        return total, []  # an invoice published twice leaves the total as it was
    kafka.counted(NAME, item.invoice)
    TOTALS.labels(NAME).inc()
    # The record is made here, not downstream: the state keeps changing while the batch goes on.
    customer = item.invoice.customer_name
    return total, [
        KafkaSinkMessage(customer.encode(), customer_total(customer, total.total_cents, total.count, total.updated_at))
    ]
