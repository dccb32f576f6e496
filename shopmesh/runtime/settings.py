"""One typed settings object for the runtime: defaults from shared/CONTRACT.md, overridable by SHOPMESH_* variables."""

from __future__ import annotations

import os
import socket
from functools import cached_property
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from shopmesh.runtime.catalogue import SERVICES

#: The checkout this package runs from: configuration files (envoy/, consul/, kafka/, keycloak/) live here.
PROJECT_ROOT = Path(__file__).resolve().parents[2]


def _default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "shopmesh"


class Settings(BaseSettings):
    """Where things live, which ports they take and the development credentials.

    Every field reads `SHOPMESH_<FIELD>` from the environment, for example `SHOPMESH_CONSUL_HTTP_PORT=18500`; a
    field by service reads `SHOPMESH_<FIELD>__<SERVICE>`, for example `SHOPMESH_SERVICE_PORTS__BILLING=50063`.
    """

    model_config = SettingsConfigDict(env_prefix="SHOPMESH_", env_nested_delimiter="__", frozen=True)

    topology: Literal["single", "cluster"] = Field(
        "single",
        description="single: one of everything on 127.0.0.1. cluster: three Consul servers, three Kafka nodes, two of "
        "every service, control plane, dataflow process and Keycloak node, on the loopback hosts of cluster_hosts, "
        "with state under var/cluster/ (docs: README, Scaling out).",
    )
    cluster_hosts: list[str] = Field(
        default_factory=lambda: ["127.0.0.2", "127.0.0.3", "127.0.0.4"],
        min_length=3,
        max_length=3,
        description="The cluster's three node hosts (loopback addresses here; real hosts' addresses elsewhere).",
    )
    host: str = Field("127.0.0.1", description="Address every process binds to.")
    # Natively every part is on `host`. In containers (docker-compose.yml) each part binds 0.0.0.0 and is reached
    # by its container's name, so where a part is reached at comes from these, each defaulting to `host`.
    advertise_host: str | None = Field(None, description="Address this process is registered in Consul with.")
    consul_host: str | None = None
    kafka_host: str | None = None
    keycloak_host: str | None = None
    control_plane_host: str | None = None
    cache_dir: Path = Field(default_factory=_default_cache_dir, description="Per-user cache of installed components.")
    var_dir: Path = Field(PROJECT_ROOT / "var", description="Logs, state and the supervisor socket of this checkout.")

    consul_http_port: int = 8500
    consul_dns_port: int = 8600
    consul_server_port: int = 8300
    consul_serf_lan_port: int = 8301
    kafka_port: int = 9092
    kafka_controller_port: int = 9093
    keycloak_port: int = 8180
    gateway_port: int = 8080
    envoy_admin_port: int = 9901
    gateway_access_log: str = Field(
        "",
        description="File of Envoy's access log; by default var/log/gateway-access.log (/dev/stdout in a container).",
    )
    prometheus_port: int = Field(9090, description="Prometheus: its web UI and API.")
    keycloak_management_port: int = Field(9000, description="Keycloak's management interface (health, metrics).")
    kafka_metrics_port: int = Field(9404, description="The Kafka broker's metrics (the Prometheus JMX exporter).")
    metrics_port: int = Field(
        0, description="Port of this process's Prometheus metrics; 0 takes a free port, announced in Consul."
    )

    control_plane_port: int = Field(18000, description="The xDS control plane (ADS) Envoy learns endpoints from.")
    service_ports: dict[str, int] = Field(
        default_factory=lambda: {service.name: service.default_port for service in SERVICES},
        description="Port of the first instance of each gRPC service of the catalogue, by service: "
        "SHOPMESH_SERVICE_PORTS__CUSTOMER=50061 moves customer's and keeps the others'.",
    )
    instance_port: int | None = Field(
        None, description="Port of this service process, overriding its service's port; 0 takes a free port."
    )
    service_processes: int = Field(
        default_factory=lambda: min(os.cpu_count() or 1, 4),
        ge=1,
        le=16,
        description="Processes of each gRPC service, each an instance in Consul that Envoy balances over; by "
        "default one per CPU core, at most 4. `shopmesh scale` sets one service's count.",
    )
    envoy_workers: int = Field(
        default_factory=lambda: max(1, (os.cpu_count() or 1) // 2),
        ge=1,
        le=64,
        description="Envoy's worker threads; by default half the CPU cores, as the services need the rest.",
    )
    database_urls: dict[str, str] = Field(
        default_factory=dict,
        description="SQLAlchemy URL of a service's database, by service: "
        "SHOPMESH_DATABASE_URLS__CUSTOMER=postgresql+psycopg://…; by default SQLite under var/data/.",
    )
    billing_stale_bill_seconds: float = Field(
        30.0, gt=0, description="A bill still unstored after this long has its reserved stock given back."
    )
    outbox_warning_seconds: float = Field(
        10.0, gt=0, description="Billing's Consul check warns while an invoice event waits longer than this."
    )
    drain_seconds: float = Field(
        1.0, ge=0, description="A stopping service instance keeps serving this long after leaving Consul."
    )
    consul_check_interval: str = "2s"
    consul_deregister_after: str = "30s"

    facturation_rate: float = Field(1.0, description="Invoice events the producer sends per second.")
    facturation_topic: str = Field(
        "FACTURATION", description="The invoice events: the producer and billing write them, the dataflows read them."
    )
    total_5s_topic: str = "FACTURATION_TOTAL_5S"
    total_by_customer_topic: str = "FACTURATION_TOTAL_BY_CUSTOMER"
    dlq_topic: str = "FACTURATION_DLQ"
    analytics_late_seconds: float = Field(
        5.0, gt=0, description="How long a 5-second window waits for late invoices after it ends, in event time."
    )
    analytics_future_seconds: float = Field(
        300.0, gt=0, description="An invoice issued further ahead of the dataflow's clock goes to the DLQ as future."
    )
    analytics_snapshot_seconds: float = Field(
        2.0, gt=0, description="Bytewax snapshot interval: at most this much input is read again after a crash."
    )
    dataflow_cluster_port: int = Field(
        17100, description="Port of a dataflow process's Bytewax cluster link on its host (the second dataflow's +1)."
    )
    postgres_port: int = Field(
        5432, description="The cluster topology's PostgreSQL servers: Keycloak's, the services'."
    )
    # Development default, clearly not a secret: override SHOPMESH_POSTGRES_PASSWORD outside a laptop.
    postgres_password: str = "shopmesh-postgres-dev-only"
    kafka_heap: str = Field("512m", description="Kafka broker heap (-Xms and -Xmx).")
    keycloak_heap: str = Field("768m", description="Keycloak maximum heap.")
    keycloak_java_home: Path | None = Field(None, description="JDK for Keycloak; by default the newest JDK 21+ found.")
    # Development default, clearly not a secret: override SHOPMESH_KEYCLOAK_ADMIN_PASSWORD outside a laptop.
    keycloak_admin_user: str = "admin"
    keycloak_admin_password: str = "admin-dev-only"
    # Development default of the shopmesh-services client's secret (keycloak/shopmesh-realm.json).
    services_client_secret: str = "shopmesh-services-dev-secret"
    # Development defaults of the web console's client secret (keycloak/shopmesh-realm.json, applied to the realm
    # on every start) and of the key Envoy signs and encrypts its session cookies with: override both outside a
    # laptop (SHOPMESH_CONSOLE_CLIENT_SECRET, SHOPMESH_CONSOLE_HMAC_SECRET).
    console_client_secret: str = "shopmesh-console-dev-secret"
    console_hmac_secret: str = "shopmesh-console-hmac-dev-only"

    @model_validator(mode="before")
    @classmethod
    def _cluster_state_apart(cls, values: dict) -> dict:
        # The cluster keeps its own state (and its own supervisord) under var/cluster/, unless told otherwise.
        if values.get("topology") == "cluster" and not values.get("var_dir"):
            return {**values, "var_dir": PROJECT_ROOT / "var" / "cluster"}
        return values

    @field_validator("service_ports", "database_urls")
    @classmethod
    def _of_known_services(cls, by_service: dict) -> dict:
        known = [service.name for service in SERVICES]
        if unknown := sorted(set(by_service) - set(known)):
            raise ValueError(f"no such service: {', '.join(unknown)} (the services are {', '.join(known)})")
        return by_service

    @field_validator("service_ports")
    @classmethod
    def _every_service_has_a_port(cls, ports: dict[str, int]) -> dict[str, int]:
        return {service.name: service.default_port for service in SERVICES} | ports

    @cached_property
    def log_dir(self) -> Path:
        return self.var_dir / "log"

    @cached_property
    def run_dir(self) -> Path:
        return self.var_dir / "run"

    @cached_property
    def recovery_dir(self) -> Path:
        """Bytewax recovery stores, one folder per dataflow."""
        return self.var_dir / "recovery"

    def listen_port(self, configured: int) -> int:
        """The port this process serves on: the instance override, else the configured port."""
        return self.instance_port if self.instance_port is not None else configured

    def database_url(self, service: str) -> str:
        if url := self.database_urls.get(service):
            return url
        if self.clustered:
            return (
                f"postgresql+psycopg://shopmesh:{self.postgres_password}@{self.services_database_host}:"
                f"{self.postgres_port}/{service}"
            )
        return f"sqlite:///{self.var_dir / 'data' / service}.db"

    @property
    def clustered(self) -> bool:
        return self.topology == "cluster"

    def on(self, host: str) -> Settings:
        """These settings for a process on another host of the cluster: it binds and is registered there, and
        reaches the edge's parts (Consul's client agent, Keycloak) where they are."""
        return self.model_copy(
            update={
                "host": host,
                "consul_host": self.consul_address,
                "keycloak_host": self.keycloak_address,
                "control_plane_host": self.control_plane_address,
            }
        )

    @property
    def consul_servers(self) -> list[str]:
        """Hosts of the Consul servers: this one alone, or the cluster's three (the client agent is on host)."""
        return self.cluster_hosts if self.clustered else [self.host]

    @property
    def kafka_hosts(self) -> list[str]:
        """Hosts of the Kafka nodes, each broker and controller, with ids 1, 2, 3 in this order."""
        return self.cluster_hosts if self.clustered else [self.kafka_address]

    @property
    def kafka_replication(self) -> int:
        """Replicas of every topic; writes need all but one of them (min.insync.replicas)."""
        return len(self.kafka_hosts)

    @property
    def kafka_min_insync(self) -> int:
        return max(1, self.kafka_replication - 1)

    @property
    def kafka_voters(self) -> str:
        return ",".join(
            f"{node}@{host}:{self.kafka_controller_port}" for node, host in enumerate(self.kafka_hosts, start=1)
        )

    @property
    def instance_hosts(self) -> list[str]:
        """Hosts of a service's instances, of the control planes and of a dataflow's processes: two in the cluster."""
        return self.cluster_hosts[:2] if self.clustered else [self.host]

    @property
    def control_plane_hosts(self) -> list[str]:
        return self.instance_hosts if self.clustered else [self.control_plane_address]

    @property
    def keycloak_hosts(self) -> list[str]:
        """Keycloak's nodes: the edge's (where browsers sign in) and, in the cluster, a second on another host."""
        return [self.keycloak_address, self.cluster_hosts[1]] if self.clustered else [self.keycloak_address]

    @property
    def keycloak_database_host(self) -> str:
        """Keycloak's PostgreSQL server: a server of its own, restarted without touching the services' data."""
        return self.cluster_hosts[2]

    @property
    def services_database_host(self) -> str:
        """The services' PostgreSQL server: one database per service, which each instance, on any host, reaches."""
        return self.cluster_hosts[1]

    def dataflow_addresses(self, index: int) -> list[str]:
        """Where the processes of the index-th dataflow's Bytewax cluster link up (none when it is one process)."""
        if not self.clustered:
            return []
        return [f"{host}:{self.dataflow_cluster_port + index}" for host in self.instance_hosts]

    @property
    def advertise_address(self) -> str:
        """Where others reach this process: advertise_host; else, bound to every interface (in a container), the
        address of this machine's name; else the address it binds."""
        if self.advertise_host:
            return self.advertise_host
        return socket.gethostbyname(socket.gethostname()) if self.host == "0.0.0.0" else self.host

    @property
    def consul_address(self) -> str:
        return self.consul_host or self.host

    @property
    def keycloak_address(self) -> str:
        return self.keycloak_host or self.host

    @property
    def control_plane_address(self) -> str:
        return self.control_plane_host or self.host

    @property
    def consul_url(self) -> str:
        return f"http://{self.consul_address}:{self.consul_http_port}"

    @property
    def keycloak_url(self) -> str:
        return f"http://{self.keycloak_address}:{self.keycloak_port}"

    @property
    def keycloak_issuer(self) -> str:
        # Keycloak runs with a fixed hostname, so tokens name localhost whatever address was called.
        return f"http://localhost:{self.keycloak_port}/realms/shopmesh"

    @property
    def gateway_url(self) -> str:
        return f"http://{self.host}:{self.gateway_port}"

    @property
    def prometheus_url(self) -> str:
        return f"http://{self.host}:{self.prometheus_port}"

    @property
    def envoy_admin_url(self) -> str:
        return f"http://{self.host}:{self.envoy_admin_port}"

    @property
    def kafka_address(self) -> str:
        return self.kafka_host or self.host

    @property
    def kafka_bootstrap(self) -> str:
        return ",".join(f"{host}:{self.kafka_port}" for host in self.kafka_hosts)


def load() -> Settings:
    return Settings()
