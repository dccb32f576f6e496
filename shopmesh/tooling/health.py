"""Readiness probes of the components: each answers None when healthy, or a short reason when not."""

from __future__ import annotations

import logging
import socket

import grpc
import httpx
from grpc_health.v1 import health_pb2, health_pb2_grpc
from kafka.errors import KafkaError

from kafka import KafkaAdminClient
from shopmesh.runtime.catalogue import service_id
from shopmesh.runtime.settings import Settings

_TIMEOUT = httpx.Timeout(2.0)


def consul_leader(settings: Settings) -> str | None:
    """Healthy once the single server has elected itself leader."""
    try:
        answer = httpx.get(f"{settings.consul_url}/v1/status/leader", timeout=_TIMEOUT)
    except httpx.HTTPError as error:
        return f"Consul HTTP API not answering: {error}"
    leader = answer.json() if answer.status_code == 200 else ""
    return None if leader else f"no leader elected yet (HTTP {answer.status_code})"


def kafka_metadata(settings: Settings, broker: str | None = None) -> str | None:
    """Healthy once the broker (by default the settings' first) answers a metadata request."""
    logging.getLogger("kafka").setLevel(logging.CRITICAL)
    broker = broker or f"{settings.kafka_hosts[0]}:{settings.kafka_port}"
    host, port = broker.rsplit(":", 1)
    try:
        socket.create_connection((host, int(port)), timeout=1).close()
    except OSError as error:
        return f"broker not listening: {error}"
    try:
        admin = KafkaAdminClient(bootstrap_servers=broker, request_timeout_ms=3000)
    except KafkaError as error:
        return f"broker not answering: {error}"
    try:
        admin.list_topics()
        return None
    except KafkaError as error:
        return f"broker not answering metadata: {error}"
    finally:
        admin.close()


def keycloak_realm(settings: Settings) -> str | None:
    """Healthy once the shopmesh realm's discovery document is served with the contract's issuer."""
    url = f"{settings.keycloak_url}/realms/shopmesh/.well-known/openid-configuration"
    try:
        answer = httpx.get(url, timeout=_TIMEOUT)
    except httpx.HTTPError as error:
        return f"Keycloak not answering: {error}"
    if answer.status_code != 200:
        return f"realm discovery answered HTTP {answer.status_code}"
    issuer = answer.json().get("issuer")
    return None if issuer == settings.keycloak_issuer else f"unexpected issuer {issuer!r}"


def envoy_ready(settings: Settings) -> str | None:
    """Healthy once Envoy's admin /ready says LIVE."""
    try:
        answer = httpx.get(f"{settings.envoy_admin_url}/ready", timeout=_TIMEOUT)
    except httpx.HTTPError as error:
        return f"Envoy admin not answering: {error}"
    state = answer.text.strip()
    return None if answer.status_code == 200 and state == "LIVE" else f"Envoy is {state or answer.status_code}"


def grpc_serving(settings: Settings, port: int) -> str | None:
    """Healthy once the server at port answers grpc.health.v1 with SERVING."""
    with grpc.insecure_channel(f"{settings.host}:{port}") as channel:
        try:
            answer = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=2)
        except grpc.RpcError as error:
            return f"gRPC health check failed: {error.code().name}"
    status = health_pb2.HealthCheckResponse.ServingStatus.Name(answer.status)
    return None if status == "SERVING" else f"gRPC health is {status}"


def service_instance(settings: Settings, consul_name: str, port: int) -> str | None:
    """Healthy once the instance serves gRPC health and Consul's own check of it passes (so it takes traffic)."""
    if problem := grpc_serving(settings, port):
        return problem
    return consul_passing(settings, service_id(consul_name, settings.advertise_address, port))


def consul_passing(settings: Settings, service_id: str) -> str | None:
    """Healthy once every Consul check of the service instance passes."""
    try:
        checks = httpx.get(
            f"{settings.consul_url}/v1/agent/checks",
            timeout=_TIMEOUT,
            params={"filter": f'ServiceID == "{service_id}"'},
        ).json()
    except httpx.HTTPError as error:
        return f"Consul not answering: {error}"
    if not checks:
        return f"Consul has no check of {service_id} yet"
    failing = [
        f"{check['Name']} is {check['Status']}" + (f" ({check['Output'].strip()[:160]})" if check["Output"] else "")
        for check in checks.values()
        if check["Status"] != "passing"
    ]
    return f"Consul check of {service_id}: {'; '.join(failing)}" if failing else None


def prometheus_ready(settings: Settings) -> str | None:
    """Healthy once Prometheus's /-/ready answers 200 (its storage is open and it serves queries)."""
    try:
        answer = httpx.get(f"{settings.prometheus_url}/-/ready", timeout=_TIMEOUT)
    except httpx.HTTPError as error:
        return f"Prometheus not answering: {error}"
    return None if answer.status_code == 200 else f"Prometheus /-/ready answered HTTP {answer.status_code}"


def postgres(settings: Settings, host: str, **options):
    """A connection to the cluster's PostgreSQL server on host, as the mesh's role, to its maintenance database."""
    import psycopg  # the postgres extra: only the cluster topology needs it

    return psycopg.connect(
        host=host,
        port=settings.postgres_port,
        user="shopmesh",
        password=settings.postgres_password,
        dbname="postgres",
        **options,
    )


def postgres_accepting(settings: Settings, host: str) -> str | None:
    """Healthy once the PostgreSQL server on host accepts a connection with the mesh's password."""
    import psycopg

    try:
        with postgres(settings, host, connect_timeout=2):
            return None
    except psycopg.Error as error:
        return f"PostgreSQL not accepting connections: {str(error).strip()[:160]}"
