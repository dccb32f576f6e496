"""The mesh as a set of programs: how each starts, what it depends on, how its health is known, and what is done
once it is healthy. Building the list has no side effects (status lists it too): a program's command is resolved
(which Java, say) only when the supervisor's configuration is written."""

from __future__ import annotations

import shutil
import string
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import consul
from dataflows import CONSUL_NAMES, service_id
from services import facturation_producer
from shopmesh.runtime import invoices, metrics
from shopmesh.runtime.catalogue import SERVICES, ServicePart
from shopmesh.runtime.settings import PROJECT_ROOT, Settings
from shopmesh.tooling import gateway, health, realm
from shopmesh.tooling.install import Installed, java_for, java_home_for_keycloak
from shopmesh.tooling.instances import instance_ports, instance_program
from shopmesh.tooling.supervise import ProgramSpec

#: Done with Consul's agent once a program is healthy: registering what does not register itself, say.
Hook = Callable[[consul.Consul], None]


@dataclass(frozen=True)
class Program:
    name: str
    command: Callable[[], ProgramSpec]
    ports: dict[str, int]
    probe: Callable[[Settings], str | None]
    requires: tuple[str, ...] = ()
    deadline: float = 60.0
    prepare: Callable[[], None] = lambda: None
    when_healthy: tuple[Hook, ...] = ()
    url: str = ""


def programs(settings: Settings, installed: Installed) -> list[Program]:
    infrastructure = [
        _consul(settings, installed),
        _kafka(settings, installed),
        _keycloak(settings, installed),
        _control_plane(settings),
        _envoy(settings, installed),
    ]
    services = [
        _service(settings, service, instance, port)
        for service in SERVICES
        for instance, port in enumerate(instance_ports(settings, service.name), start=1)
    ]
    return (
        infrastructure
        + services
        + [_producer(settings)]
        + [_dataflow(settings, name) for name in CONSUL_NAMES]
        + [_prometheus(settings, installed)]
    )


def _spec(*args, **kwargs) -> Callable[[], ProgramSpec]:
    return lambda: ProgramSpec(*args, **kwargs)


def _producer(settings: Settings) -> Program:
    name = facturation_producer.CONSUL_NAME
    return Program(
        name,
        _spec(name, [sys.executable, "-m", "services.facturation_producer"], stop_seconds=15),
        ports={},
        probe=lambda settings: health.consul_passing(settings, facturation_producer.service_id(settings)),
        # It names real customers from the start once these are up; alone it falls back to a built-in list.
        requires=("consul", "kafka", "keycloak", "customer-service"),
        deadline=60,
        url=f"kafka topic {settings.facturation_topic}, {settings.facturation_rate:g} invoice(s)/s",
    )


def _dataflow(settings: Settings, name: str) -> Program:
    output = settings.total_5s_topic if name == "totals_5s" else settings.total_by_customer_topic
    return Program(
        CONSUL_NAMES[name],
        # RUST_BACKTRACE off: Bytewax stops by panicking its workers, which is no error worth a backtrace.
        _spec(
            CONSUL_NAMES[name], [sys.executable, "-m", "dataflows", name], env={"RUST_BACKTRACE": "0"}, stop_seconds=15
        ),
        ports={},
        probe=lambda settings: health.consul_passing(settings, service_id(name, settings)),
        requires=("consul", "kafka"),
        deadline=60,
        url=f"kafka topic {output} (watch with `shopmesh watch`)",
    )


def _control_plane(settings: Settings) -> Program:
    name, port = "mesh-control-plane", settings.control_plane_port
    return Program(
        name,
        _spec(name, [sys.executable, "-m", "services.control_plane"], stop_seconds=15),
        ports={"xDS control plane": port},
        probe=lambda settings: health.service_instance(settings, name, port),
        requires=("consul",),
        deadline=90,
        url=f"grpc://{settings.host}:{port} (ADS)",
    )


def _service(settings: Settings, service: ServicePart, instance: int, port: int) -> Program:
    program = instance_program(service.name, instance)
    return Program(
        program,
        _spec(program, [sys.executable, "-m", service.module], {"SHOPMESH_INSTANCE_PORT": str(port)}, stop_seconds=15),
        ports={f"{service.consul_name} gRPC": port},
        probe=lambda settings: health.service_instance(settings, service.consul_name, port),
        requires=("consul", *(f"{other}-service" for other in service.depends_on)),
        deadline=90,
        url=f"grpc://{settings.host}:{port}",
    )


def _consul(settings: Settings, installed: Installed) -> Program:
    argv = [
        str(installed.consul / "bin" / "consul"),
        "agent",
        f"-config-file={PROJECT_ROOT / 'consul' / 'agent.hcl'}",
        f"-data-dir={settings.var_dir / 'consul'}",
        f"-http-port={settings.consul_http_port}",
        f"-dns-port={settings.consul_dns_port}",
        f"-server-port={settings.consul_server_port}",
        f"-serf-lan-port={settings.consul_serf_lan_port}",
    ]
    return Program(
        "consul",
        _spec("consul", argv, stop_seconds=15),
        ports={
            "Consul HTTP API and UI": settings.consul_http_port,
            "Consul DNS": settings.consul_dns_port,
            "Consul server RPC": settings.consul_server_port,
            "Consul LAN gossip": settings.consul_serf_lan_port,
        },
        probe=health.consul_leader,
        deadline=60,
        url=f"{settings.consul_url}/ui/",
    )


def register(name: str, settings: Settings, agent: consul.Consul) -> None:
    """Register a part that cannot register itself (it is not ours) with its health check, and where its metrics
    are (shopmesh.runtime.metrics.announce). Envoy's come from its admin interface, which binds loopback only."""
    keycloak_realm = f"{settings.keycloak_url}/realms/shopmesh/.well-known/openid-configuration"
    port, tags, check, meta = {
        "kafka": (
            settings.kafka_port,
            ["broker", "kraft"],
            {"TCP": f"{settings.host}:{settings.kafka_port}"},
            metrics.announce(settings.kafka_metrics_port),
        ),
        "keycloak": (
            settings.keycloak_port,
            ["oidc"],
            {"HTTP": keycloak_realm},
            metrics.announce(settings.keycloak_management_port),
        ),
        "gateway": (
            settings.gateway_port,
            ["envoy"],
            {"HTTP": f"{settings.envoy_admin_url}/ready"},
            metrics.announce(settings.envoy_admin_port, "/stats/prometheus"),
        ),
        "prometheus": (
            settings.prometheus_port,
            ["metrics"],
            {"HTTP": f"{settings.prometheus_url}/-/ready"},
            metrics.announce(settings.prometheus_port),
        ),
    }[name]
    agent.agent.service.register(
        name,
        service_id=name,
        address=settings.host,
        port=port,
        tags=tags,
        check={**check, "Interval": "5s"},
        meta=meta,
        replace_existing_checks=True,
    )


def create_topics(settings: Settings, agent: consul.Consul) -> None:
    invoices.ensure_topics(settings)


def _kafka(settings: Settings, installed: Installed) -> Program:
    data = settings.var_dir / "kafka" / "data"
    classpath = f"{installed.kafka / 'libs'}/*"
    overrides = {
        "listeners": f"PLAINTEXT://{settings.host}:{settings.kafka_port},"
        f"CONTROLLER://{settings.host}:{settings.kafka_controller_port}",
        "advertised.listeners": f"PLAINTEXT://{settings.host}:{settings.kafka_port}",
        "controller.quorum.voters": f"1@{settings.host}:{settings.kafka_controller_port}",
        "log.dirs": str(data),
    }
    config = settings.var_dir / "kafka" / "server.properties"

    def command() -> ProgramSpec:
        argv = [
            java_for("kafka"),
            f"-Xms{settings.kafka_heap}",
            f"-Xmx{settings.kafka_heap}",
            f"-Dlog4j2.configurationFile={PROJECT_ROOT / 'kafka' / 'log4j2.properties'}",
            # The broker's metrics for Prometheus, on the loopback address like the rest.
            f"-javaagent:{installed.jmx_agent}={settings.host}:{settings.kafka_metrics_port}:"
            f"{PROJECT_ROOT / 'kafka' / 'jmx-exporter.yml'}",
            "-cp",
            classpath,
            "kafka.Kafka",
            str(config),
        ]
        return ProgramSpec("kafka", argv, stop_seconds=60)

    def prepare() -> None:
        # kafka/server.properties, then the address settings: in a properties file the later key wins.
        config.parent.mkdir(parents=True, exist_ok=True)
        lines = [(PROJECT_ROOT / "kafka" / "server.properties").read_text(), "# From the SHOPMESH_* settings:"]
        config.write_text("\n".join(lines + [f"{key}={value}" for key, value in overrides.items()]) + "\n")
        # KRaft needs its log folder formatted once with a cluster id; later starts reuse it.
        if (data / "meta.properties").exists():
            return
        data.mkdir(parents=True, exist_ok=True)
        tool = [java_for("kafka"), "-cp", classpath, "kafka.tools.StorageTool"]
        cluster_id = subprocess.run([*tool, "random-uuid"], capture_output=True, text=True, check=True).stdout
        subprocess.run(
            [*tool, "format", "--ignore-formatted", "-t", cluster_id.strip(), "-c", str(config)],
            capture_output=True,
            text=True,
            check=True,
        )

    return Program(
        "kafka",
        command,
        ports={
            "Kafka broker": settings.kafka_port,
            "Kafka controller": settings.kafka_controller_port,
            "Kafka metrics": settings.kafka_metrics_port,
        },
        probe=health.kafka_metadata,
        requires=("consul",),
        deadline=120,
        prepare=prepare,
        when_healthy=(partial(register, "kafka", settings), partial(create_topics, settings)),
        url=f"kafka://{settings.kafka_bootstrap}",
    )


def apply_realm(settings: Settings, agent: consul.Consul) -> None:
    """The realm file reaches a realm imported by an earlier start, and passwords come from the environment."""
    realm.apply(settings)


def _keycloak(settings: Settings, installed: Installed) -> Program:
    # Keycloak's home is laid out per checkout: its data (the embedded H2 database, the realm import folder)
    # lives under var/, while lib/ points at the optimized server built once in the cache.
    home = settings.var_dir / "keycloak"
    argv = [
        str(installed.keycloak / "bin" / "kc.sh"),
        "start",
        "--optimized",
        f"-Dkc.home.dir={home}",
        "--cache=local",
        "--http-enabled=true",
        f"--http-host={settings.host}",
        f"--http-port={settings.keycloak_port}",
        # The management interface (metrics) binds the same address, on a port of its own.
        f"--http-management-port={settings.keycloak_management_port}",
        f"--hostname=http://localhost:{settings.keycloak_port}",
        "--import-realm",
    ]

    def command() -> ProgramSpec:
        env = {
            "JAVA_HOME": str(java_home_for_keycloak(settings)),
            "JAVA_OPTS_KC_HEAP": f"-Xms64m -Xmx{settings.keycloak_heap}",
            "KC_BOOTSTRAP_ADMIN_USERNAME": settings.keycloak_admin_user,
        }
        return ProgramSpec(
            "keycloak", argv, env, secrets={"KC_BOOTSTRAP_ADMIN_PASSWORD": settings.keycloak_admin_password}
        )

    def lay_out_home() -> None:
        for folder in ("data/import", "providers", "themes"):
            (home / folder).mkdir(parents=True, exist_ok=True)
        lib = home / "lib"
        if lib.is_symlink() and lib.resolve() != (installed.keycloak / "lib").resolve():
            lib.unlink()
        if not lib.is_symlink():
            lib.symlink_to(installed.keycloak / "lib", target_is_directory=True)
        for realm_file in (PROJECT_ROOT / "keycloak").glob("*-realm.json"):
            # copyfile, not copy: the copy is made with the umask (owner only), not the checkout file's mode.
            shutil.copyfile(realm_file, home / "data" / "import" / realm_file.name)

    return Program(
        "keycloak",
        command,
        ports={"Keycloak HTTP": settings.keycloak_port, "Keycloak management": settings.keycloak_management_port},
        probe=health.keycloak_realm,
        requires=("consul",),
        deadline=300,
        prepare=lay_out_home,
        when_healthy=(partial(register, "keycloak", settings), partial(apply_realm, settings)),
        url=f"{settings.keycloak_url}/admin/ (console), realm {settings.keycloak_url}/realms/shopmesh",
    )


def write_bootstrap(settings: Settings, folder: Path) -> None:
    gateway.write_bootstrap(settings, folder)


def _envoy(settings: Settings, installed: Installed) -> Program:
    bootstrap = settings.var_dir / "envoy" / "bootstrap.yaml"
    argv = [
        str(installed.envoy / "bin" / "envoy"),
        "-c",
        str(bootstrap),
        "--disable-hot-restart",
        "--log-level",
        "info",
        "--concurrency",
        str(settings.envoy_workers),
    ]
    return Program(
        "envoy",
        _spec("envoy", argv, stop_seconds=15),
        ports={"gateway": settings.gateway_port, "Envoy admin": settings.envoy_admin_port},
        probe=health.envoy_ready,
        requires=("consul", "mesh-control-plane", "keycloak"),
        deadline=60,
        prepare=partial(write_bootstrap, settings, bootstrap.parent),
        when_healthy=(partial(register, "gateway", settings),),
        url=settings.gateway_url,
    )


def write_prometheus_config(settings: Settings, config: Path) -> None:
    """prometheus/prometheus.yml with this mesh's Consul in it; the rules are read from the checkout."""
    config.parent.mkdir(parents=True, exist_ok=True)
    template = string.Template((PROJECT_ROOT / "prometheus" / "prometheus.yml").read_text())
    config.write_text(
        template.substitute(
            consul=f"{settings.consul_address}:{settings.consul_http_port}",
            consul_http_port=settings.consul_http_port,
            rules=PROJECT_ROOT / "prometheus" / "rules.yml",
        )
    )


def _prometheus(settings: Settings, installed: Installed) -> Program:
    folder = settings.var_dir / "prometheus"
    config = folder / "prometheus.yml"

    def command() -> ProgramSpec:
        argv = [
            str(installed.prometheus / "bin" / "prometheus"),
            f"--config.file={config}",
            f"--storage.tsdb.path={folder / 'data'}",
            "--storage.tsdb.retention.time=7d",
            f"--web.listen-address={settings.host}:{settings.prometheus_port}",
            "--log.level=warn",
        ]
        # Started in its ui folder: Prometheus serves its web UI from ./static there (see install.py).
        return ProgramSpec("prometheus", argv, stop_seconds=30, directory=installed.prometheus / "ui")

    return Program(
        "prometheus",
        command,
        ports={"Prometheus": settings.prometheus_port},
        probe=health.prometheus_ready,
        requires=("consul",),
        deadline=60,
        prepare=partial(write_prometheus_config, settings, config),
        when_healthy=(partial(register, "prometheus", settings),),
        url=f"{settings.prometheus_url}/ (graphs, targets, alerts)",
    )
