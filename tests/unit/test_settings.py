"""Where each part is reached: natively all on one address, in containers by name, from the environment."""

from __future__ import annotations

import socket

from shopmesh.runtime.settings import Settings


def test_natively_every_part_is_reached_at_the_address_processes_bind():
    settings = Settings(_env_file=None, host="127.0.0.2")
    assert (settings.advertise_address, settings.consul_url, settings.kafka_bootstrap, settings.keycloak_url) == (
        "127.0.0.2",
        "http://127.0.0.2:8500",
        "127.0.0.2:9092",
        "http://127.0.0.2:8180",
    )


def test_in_a_container_parts_are_reached_by_name_and_a_process_advertises_its_own_address(monkeypatch):
    monkeypatch.setenv("SHOPMESH_HOST", "0.0.0.0")
    monkeypatch.setenv("SHOPMESH_CONSUL_HOST", "consul")
    monkeypatch.setenv("SHOPMESH_KAFKA_HOST", "kafka")
    monkeypatch.setenv("SHOPMESH_KEYCLOAK_HOST", "keycloak")
    monkeypatch.setattr(socket, "gethostname", lambda: "c0ffee")
    monkeypatch.setattr(socket, "gethostbyname", lambda name: {"c0ffee": "172.18.0.7"}[name])
    settings = Settings()
    assert (settings.advertise_address, settings.consul_url, settings.kafka_bootstrap, settings.keycloak_url) == (
        "172.18.0.7",
        "http://consul:8500",
        "kafka:9092",
        "http://keycloak:8180",
    )
    # Tokens still name the address users reach Keycloak at.
    assert settings.keycloak_issuer == "http://localhost:8180/realms/shopmesh"


def test_an_advertised_address_given_wins():
    assert Settings(_env_file=None, host="0.0.0.0", advertise_host="10.0.0.5").advertise_address == "10.0.0.5"
