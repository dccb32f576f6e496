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
    host: str = ""  # where its ports are, when not on the settings' host (a node of the cluster)
    stops_with: str = ""  # the engine whose nodes stop at once (bringup.down), in the cluster


def programs(settings: Settings, installed: Installed) -> list[Program]:
    """Every program of the mesh, in start order: the single mesh, or the cluster topology (cluster.py)."""
    if settings.clustered:
        from shopmesh.tooling import cluster  # it builds on this module's programs

        return cluster.programs(settings, installed)
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


def on_host(settings: Settings, host: str) -> dict[str, str]:
    """The environment of a process of ours on another host of the cluster (Settings.on): where it binds, and where
    the edge's parts are. Nothing on the settings' own host."""
    if host == settings.host:
        return {}
    return {
        "SHOPMESH_HOST": host,
        "SHOPMESH_CONSUL_HOST": settings.consul_address,
        "SHOPMESH_KEYCLOAK_HOST": settings.keycloak_address,
        "SHOPMESH_CONTROL_PLANE_HOST": settings.control_plane_address,
    }


def kafka_programs(settings: Settings) -> tuple[str, ...]:
    """The programs of the Kafka nodes, which those that use Kafka require."""
    if not settings.clustered:
        return ("kafka",)
    return tuple(f"kafka-{node}" for node in range(1, len(settings.kafka_hosts) + 1))


def numbered(name: str, number: int) -> str:
    """The program of the number-th of several alike: name for the first, then name-2, name-3, …"""
    return name if number == 1 else f"{name}-{number}"


def _producer(settings: Settings) -> Program:
    name = facturation_producer.CONSUL_NAME
    return Program(
        name,
        _spec(name, [sys.executable, "-m", "services.facturation_producer"], stop_seconds=15),
        ports={},
        probe=lambda settings: health.consul_passing(settings, facturation_producer.service_id(settings)),
        # It names real customers from the start once these are up; alone it falls back to a built-in list.
        requires=("consul", *kafka_programs(settings), "keycloak", "customer-service"),
        deadline=60,
        url=f"kafka topic {settings.facturation_topic}, {settings.facturation_rate:g} invoice(s)/s",
    )


def _dataflow(settings: Settings, name: str, process: int = 0) -> Program:
    """A dataflow, or one process (0, 1, …) of its Bytewax cluster on the process's host."""
    output = settings.total_5s_topic if name == "totals_5s" else settings.total_by_customer_topic
    host = settings.instance_hosts[process]
    program = numbered(CONSUL_NAMES[name], process + 1) if settings.clustered else CONSUL_NAMES[name]
    argv = [sys.executable, "-m", "dataflows", name]
    if settings.clustered:
        argv += ["--process-id", str(process)]
    return Program(
        program,
        # RUST_BACKTRACE off: Bytewax stops by panicking its workers, which is no error worth a backtrace.
        _spec(program, argv, env={"RUST_BACKTRACE": "0", **on_host(settings, host)}, stop_seconds=15),
        ports={},
        probe=lambda settings: health.consul_passing(settings, service_id(name, settings.on(host))),
        requires=("consul", *kafka_programs(settings)),
        deadline=60,
        host=host,
        stops_with=name,
        url=f"kafka topic {output} (watch with `shopmesh watch`)",
    )


def _control_plane(settings: Settings, number: int = 1) -> Program:
    """The xDS control plane, or the number-th of the cluster's, on its host: stateless, each serves the snapshot
    Consul's catalogue makes, with the same version (a hash of its content)."""
    name, port, host = numbered("mesh-control-plane", number), settings.control_plane_port, settings.host
    if settings.clustered:
        host = settings.control_plane_hosts[number - 1]
    return Program(
        name,
        _spec(name, [sys.executable, "-m", "services.control_plane"], on_host(settings, host), stop_seconds=15),
        ports={"xDS control plane": port},
        probe=lambda settings: health.service_instance(settings.on(host), "mesh-control-plane", port),
        requires=("consul",),
        deadline=90,
        host=host,
        url=f"grpc://{host}:{port} (ADS)",
    )


def _service(settings: Settings, service: ServicePart, instance: int, port: int, host: str | None = None) -> Program:
    program = instance_program(service.name, instance)
    host = host or settings.host
    env = {"SHOPMESH_INSTANCE_PORT": str(port), **on_host(settings, host)}
    return Program(
        program,
        _spec(program, [sys.executable, "-m", service.module], env, stop_seconds=15),
        ports={f"{service.consul_name} gRPC": port},
        probe=lambda settings: health.service_instance(settings.on(host), service.consul_name, port),
        # In the cluster every instance keeps its data in PostgreSQL.
        requires=(
            "consul",
            *(("services-db",) if settings.clustered else ()),
            *(f"{other}-service" for other in service.depends_on),
        ),
        deadline=90,
        host=host,
        url=f"grpc://{host}:{port}",
    )


def consul_agent(settings: Settings, installed: Installed, data: str, *flags: str) -> list[str]:
    """A Consul agent's command: consul/agent.hcl, this mesh's ports, and what makes it a server or a client."""
    return [
        str(installed.consul / "bin" / "consul"),
        "agent",
        f"-config-file={PROJECT_ROOT / 'consul' / 'agent.hcl'}",
        f"-data-dir={settings.var_dir / data}",
        f"-http-port={settings.consul_http_port}",
        f"-server-port={settings.consul_server_port}",
        f"-serf-lan-port={settings.consul_serf_lan_port}",
        *flags,
    ]


def _consul(settings: Settings, installed: Installed) -> Program:
    argv = consul_agent(
        settings, installed, "consul", "-server", "-bootstrap-expect=1", f"-dns-port={settings.consul_dns_port}"
    )
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


def register(name: str, settings: Settings, agent: consul.Consul, service_id: str | None = None) -> None:
    """Register a part that cannot register itself (it is not ours) with its health check, and where its metrics
    are (shopmesh.runtime.metrics.announce). Envoy's come from its admin interface, which binds loopback only.
    settings are those of the part's host (Settings.on); service_id tells the cluster's nodes apart."""
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
        "postgres": (settings.postgres_port, ["database"], {"TCP": f"{settings.host}:{settings.postgres_port}"}, {}),
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
        service_id=service_id or name,
        address=settings.host,
        port=port,
        tags=tags,
        check={**check, "Interval": "5s"},
        meta=meta,
        replace_existing_checks=True,
    )


def create_topics(settings: Settings, agent: consul.Consul) -> None:
    invoices.ensure_topics(settings)


def _kafka(settings: Settings, installed: Installed, node: int = 1) -> Program:
    """The single mesh's Kafka, or the node-th (1, 2, 3) of the cluster's: broker and KRaft controller in one."""
    host = settings.kafka_hosts[node - 1]
    name = f"kafka-{node}" if settings.clustered else "kafka"
    folder = settings.var_dir / name
    data = folder / "data"
    classpath = f"{installed.kafka / 'libs'}/*"
    overrides = {
        "node.id": node,
        "listeners": f"PLAINTEXT://{host}:{settings.kafka_port},CONTROLLER://{host}:{settings.kafka_controller_port}",
        "advertised.listeners": f"PLAINTEXT://{host}:{settings.kafka_port}",
        "controller.quorum.voters": settings.kafka_voters,
        "log.dirs": str(data),
        # Every topic, Kafka's own too, on every node (one alone); a write needs all replicas but one in sync.
        "default.replication.factor": settings.kafka_replication,
        "min.insync.replicas": settings.kafka_min_insync,
        "offsets.topic.replication.factor": settings.kafka_replication,
        "transaction.state.log.replication.factor": settings.kafka_replication,
        "transaction.state.log.min.isr": settings.kafka_min_insync,
        "share.coordinator.state.topic.replication.factor": settings.kafka_replication,
        "share.coordinator.state.topic.min.isr": settings.kafka_min_insync,
    }
    config = folder / "server.properties"
    # The nodes of one cluster share its id, made once.
    cluster_id = settings.var_dir / "kafka-cluster-id"
    node_settings = settings.on(host)

    def command() -> ProgramSpec:
        argv = [
            java_for("kafka"),
            f"-Xms{settings.kafka_heap}",
            f"-Xmx{settings.kafka_heap}",
            f"-Dlog4j2.configurationFile={PROJECT_ROOT / 'kafka' / 'log4j2.properties'}",
            # The broker's metrics for Prometheus, on the loopback address like the rest.
            f"-javaagent:{installed.jmx_agent}={host}:{settings.kafka_metrics_port}:"
            f"{PROJECT_ROOT / 'kafka' / 'jmx-exporter.yml'}",
            "-cp",
            classpath,
            "kafka.Kafka",
            str(config),
        ]
        return ProgramSpec(name, argv, stop_seconds=60)

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
        if not cluster_id.exists():
            made = subprocess.run([*tool, "random-uuid"], capture_output=True, text=True, check=True).stdout
            cluster_id.write_text(made.strip())
        subprocess.run(
            [*tool, "format", "--ignore-formatted", "-t", cluster_id.read_text().strip(), "-c", str(config)],
            capture_output=True,
            text=True,
            check=True,
        )

    # The cluster's topics are made once the last node is up: they are replicated to all three.
    made_last = node == len(settings.kafka_hosts)
    return Program(
        name,
        command,
        ports={
            "Kafka broker": settings.kafka_port,
            "Kafka controller": settings.kafka_controller_port,
            "Kafka metrics": settings.kafka_metrics_port,
        },
        probe=lambda settings: health.kafka_metadata(settings, f"{host}:{settings.kafka_port}"),
        requires=("consul",),
        deadline=120,
        prepare=prepare,
        when_healthy=(partial(register, "kafka", node_settings, service_id=name),)
        + ((partial(create_topics, settings),) if made_last else ()),
        host=host,
        stops_with="kafka",
        url=f"kafka://{host}:{settings.kafka_port}",
    )


def apply_realm(settings: Settings, agent: consul.Consul) -> None:
    """The realm file reaches a realm imported by an earlier start, and passwords come from the environment."""
    realm.apply(settings)


def _keycloak(settings: Settings, installed: Installed, node: int = 1) -> Program:
    """Keycloak on its embedded database; in the cluster, the node-th of its nodes, which share PostgreSQL and find
    each other through it (Keycloak's default cache stack, jdbc-ping)."""
    host = settings.keycloak_hosts[node - 1]
    name = numbered("keycloak", node)
    # Keycloak's home is laid out per checkout: its data (the embedded H2 database, the realm import folder)
    # lives under var/, while lib/ points at the optimized server built once in the cache.
    home = settings.var_dir / name
    distribution = installed.keycloak_postgres if settings.clustered else installed.keycloak
    argv = [
        str(distribution / "bin" / "kc.sh"),
        "start",
        "--optimized",
        f"-Dkc.home.dir={home}",
        "--http-enabled=true",
        f"--http-host={host}",
        f"--http-port={settings.keycloak_port}",
        # The management interface (metrics) binds the same address, on a port of its own.
        f"--http-management-port={settings.keycloak_management_port}",
        f"--hostname=http://localhost:{settings.keycloak_port}",
        "--import-realm",
    ]
    if settings.clustered:
        argv += [
            "--cache=ispn",
            f"--db-url=jdbc:postgresql://{settings.keycloak_database_host}:{settings.postgres_port}/keycloak",
            "--db-username=shopmesh",
        ]
    else:
        argv += ["--cache=local"]

    def command() -> ProgramSpec:
        env = {
            "JAVA_HOME": str(java_home_for_keycloak(settings)),
            "JAVA_OPTS_KC_HEAP": f"-Xms64m -Xmx{settings.keycloak_heap}",
            "KC_BOOTSTRAP_ADMIN_USERNAME": settings.keycloak_admin_user,
        }
        secrets = {"KC_BOOTSTRAP_ADMIN_PASSWORD": settings.keycloak_admin_password}
        if settings.clustered:
            # The nodes' cluster traffic (JGroups) on the node's own address.
            env["JAVA_OPTS_APPEND"] = f"-Djgroups.bind.address={host} -Djava.net.preferIPv4Stack=true"
            # A pooled connection is checked before each use (Quarkus's datasource options, which Keycloak passes
            # on): after the database restarts, the next sign-in gets a fresh connection instead of a dead one.
            env["QUARKUS_DATASOURCE_JDBC_VALIDATION_QUERY_SQL"] = "SELECT 1"
            env["QUARKUS_DATASOURCE_JDBC_VALIDATE_ON_BORROW"] = "true"
            secrets["KC_DB_PASSWORD"] = settings.postgres_password
        return ProgramSpec(name, argv, env, secrets=secrets)

    def lay_out_home() -> None:
        for folder in ("data/import", "providers", "themes"):
            (home / folder).mkdir(parents=True, exist_ok=True)
        lib = home / "lib"
        if lib.is_symlink() and lib.resolve() != (distribution / "lib").resolve():
            lib.unlink()
        if not lib.is_symlink():
            lib.symlink_to(distribution / "lib", target_is_directory=True)
        for realm_file in (PROJECT_ROOT / "keycloak").glob("*-realm.json"):
            # copyfile, not copy: the copy is made with the umask (owner only), not the checkout file's mode.
            shutil.copyfile(realm_file, home / "data" / "import" / realm_file.name)

    node_settings = settings.on(host).model_copy(update={"keycloak_host": host})
    # The first node imports the realm into the shared database before the others start.
    requires = ("consul", "keycloak-db") if settings.clustered else ("consul",)
    return Program(
        name,
        command,
        ports={"Keycloak HTTP": settings.keycloak_port, "Keycloak management": settings.keycloak_management_port},
        probe=lambda settings: health.keycloak_realm(node_settings),
        requires=requires if node == 1 else (*requires, "keycloak"),
        deadline=300,
        prepare=lay_out_home,
        when_healthy=(partial(register, "keycloak", node_settings, service_id=name),)
        + ((partial(apply_realm, settings),) if node == 1 else ()),
        host=host,
        url=f"{node_settings.keycloak_url}/admin/ (console), realm {node_settings.keycloak_url}/realms/shopmesh",
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
