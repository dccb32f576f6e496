"""Bytewax dataflows over FACTURATION: `totals_5s` and `totals_by_customer`, run with `python -m dataflows NAME`.

The arithmetic lives in invoices.py as pure functions, the Kafka edges in kafka.py; each flow is a short module
of named steps. This package file stays free of Bytewax so the runtime can name the dataflows cheaply."""

from __future__ import annotations

from shopmesh.runtime import catalogue
from shopmesh.runtime.settings import Settings

#: dataflow -> its name in Consul (shared/CONTRACT.md)
CONSUL_NAMES = {"totals_5s": "analytics-totals-5s", "totals_by_customer": "analytics-totals-by-customer"}


def service_id(dataflow: str, settings: Settings) -> str:
    """One registration per dataflow and input topic: a test's dataflow on its own topic is told apart."""
    return catalogue.service_id(CONSUL_NAMES[dataflow], settings.advertise_address, settings.facturation_topic.lower())
