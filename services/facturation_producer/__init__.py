"""The FACTURATION producer: an invoice event every second (by default) for a customer of the customer service.

This package file stays free of Kafka, so that the tooling can name the producer's registration cheaply."""

from __future__ import annotations

from shopmesh.runtime import catalogue
from shopmesh.runtime.settings import Settings

CONSUL_NAME = "facturation-producer"


def service_id(settings: Settings) -> str:
    """One registration per producer and topic: a test's producer on its own topic is told apart."""
    return catalogue.service_id(CONSUL_NAME, settings.advertise_address, settings.facturation_topic.lower())
