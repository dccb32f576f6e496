"""The cluster topology (`shopmesh up --topology cluster`): the mesh as it runs across hosts, each node on a host of
its own (here the loopback addresses of Settings.cluster_hosts, each with the same ports a real host would use).

- Consul: three servers in one raft cluster, one per host, and the client agent on the edge host (Settings.host)
  that every part registers with, as each real host has its own.
- Kafka: three KRaft nodes, broker and controller each, with every topic on all three, min.insync.replicas 2.
- PostgreSQL (Debian's server): two servers, one for Keycloak and one with a database per service, so that
  either restarts without the other.
- Keycloak: two nodes on that database, one on the edge host (where browsers sign in), one on a node host.
- Two of each service, of the control plane and of each dataflow's Bytewax processes, on the first two hosts.
- Envoy, the producer and Prometheus on the edge host, as in the single mesh.

Its state and its own supervisord live under var/cluster/ (Settings.var_dir)."""

from __future__ import annotations

import os
import pwd
import subprocess
from dataclasses import replace
from functools import partial
from pathlib import Path

import consul
from dataflows import CONSUL_NAMES
from shopmesh.runtime.catalogue import SERVICES
from shopmesh.runtime.settings import Settings
from shopmesh.tooling import health
from shopmesh.tooling.install import Installed, postgres_bin
from shopmesh.tooling.programs import (
    Program,
    _control_plane,
    _dataflow,
    _envoy,
    _kafka,
    _keycloak,
    _producer,
    _prometheus,
    _service,
    consul_agent,
    register,
)
from shopmesh.tooling.supervise import ProgramSpec


def programs(settings: Settings, installed: Installed) -> list[Program]:
    nodes = range(1, len(settings.cluster_hosts) + 1)
    pairs = range(1, len(settings.instance_hosts) + 1)
    found = [
        *(_consul_server(settings, installed, node) for node in nodes),
        _consul_client(settings, installed),
        *(_kafka(settings, installed, node) for node in nodes),
        _postgres(settings, "keycloak-db", settings.keycloak_database_host, ("keycloak",)),
        _postgres(settings, "services-db", settings.services_database_host, tuple(s.name for s in SERVICES)),
        *(_keycloak(settings, installed, node) for node in range(1, len(settings.keycloak_hosts) + 1)),
        *(_control_plane(settings, number) for number in pairs),
        _envoy(settings, installed),
        *(
            _service(settings, service, number, settings.service_ports[service.name], host)
            for service in SERVICES
            for number, host in enumerate(settings.instance_hosts, start=1)
        ),
        _producer(settings),
        *(_dataflow(settings, name, process) for name in CONSUL_NAMES for process in range(len(pairs))),
        _prometheus(settings, installed),
    ]
    return [_in_the_cluster(settings, program) for program in found]


def _in_the_cluster(settings: Settings, program: Program) -> Program:
    """Every process is told the topology and the state folder: ours find the cluster's parts by them."""
    told = {"SHOPMESH_TOPOLOGY": "cluster", "SHOPMESH_VAR_DIR": str(settings.var_dir)}

    def command() -> ProgramSpec:
        spec = program.command()
        return replace(spec, env={**told, **spec.env})

    return replace(program, command=command)


def _consul_server(settings: Settings, installed: Installed, node: int) -> Program:
    host = settings.cluster_hosts[node - 1]
    name = f"consul-{node}"
    # Each server joins the others (retrying until they are up); the three elect a leader once all have joined.
    joins = [
        f"-retry-join={other}:{settings.consul_serf_lan_port}" for other in settings.consul_servers if other != host
    ]
    argv = consul_agent(
        settings,
        installed,
        name,
        "-server",
        f"-bootstrap-expect={len(settings.consul_servers)}",
        f"-node={name}",
        f"-bind={host}",
        f"-advertise={host}",
        f"-client={host}",
        "-dns-port=-1",
        *joins,
    )
    own = settings.model_copy(update={"consul_host": host})
    return Program(
        name,
        lambda: ProgramSpec(name, argv, stop_seconds=15),
        ports={
            "Consul HTTP API": settings.consul_http_port,
            "Consul server RPC": settings.consul_server_port,
            "Consul LAN gossip": settings.consul_serf_lan_port,
        },
        probe=lambda settings: health.consul_leader(own),
        deadline=60,
        host=host,
        stops_with="consul",
        url=f"{own.consul_url}/ui/ (server)",
    )


def _consul_client(settings: Settings, installed: Installed) -> Program:
    """The edge host's client agent: the parts register with it, it keeps their checks and syncs them to the
    servers; its HTTP API and UI are the mesh's Consul."""
    joins = [f"-retry-join={server}:{settings.consul_serf_lan_port}" for server in settings.consul_servers]
    argv = consul_agent(settings, installed, "consul", f"-dns-port={settings.consul_dns_port}", *joins)
    return Program(
        "consul",
        lambda: ProgramSpec("consul", argv, stop_seconds=15),
        ports={
            "Consul HTTP API and UI": settings.consul_http_port,
            "Consul DNS": settings.consul_dns_port,
            "Consul LAN gossip": settings.consul_serf_lan_port,
        },
        probe=health.consul_leader,
        requires=tuple(f"consul-{node}" for node in range(1, len(settings.consul_servers) + 1)),
        deadline=60,
        stops_with="consul",
        url=f"{settings.consul_url}/ui/ (client agent; three servers)",
    )


def _postgres(settings: Settings, name: str, host: str, databases: tuple[str, ...]) -> Program:
    """A PostgreSQL server (Debian's) on host, with its data under var/cluster/NAME/, holding databases. PostgreSQL
    refuses to run as root: as root, it runs as the postgres user Debian's package creates, which owns the folder."""
    folder = settings.var_dir / name
    data = folder / "data"
    owner = _owner()

    def as_owner(argv: list[str]) -> list[str]:
        if owner is None:
            return argv
        return ["setpriv", f"--reuid={owner.pw_uid}", f"--regid={owner.pw_gid}", "--init-groups", "--", *argv]

    def command() -> ProgramSpec:
        argv = [
            str(postgres_bin() / "postgres"),
            "-D",
            str(data),
            "-h",
            host,
            "-p",
            str(settings.postgres_port),
            "-k",
            str(folder),
        ]
        # INT: PostgreSQL's fast shutdown (TERM would wait for Keycloak's pooled connections to close).
        return ProgramSpec(name, as_owner(argv), stop_seconds=30, stop_signal="INT")

    def prepare() -> None:
        folder.mkdir(parents=True, exist_ok=True)
        if owner is not None:
            os.chown(folder, owner.pw_uid, owner.pw_gid)
            _passable(folder)
        if (data / "PG_VERSION").exists():
            return
        password = folder / "initial-password"
        password.write_text(settings.postgres_password)
        if owner is not None:
            os.chown(password, owner.pw_uid, owner.pw_gid)
        try:
            initdb = [str(postgres_bin() / "initdb"), "-D", str(data), "-U", "shopmesh", "--auth=scram-sha-256"]
            subprocess.run(as_owner([*initdb, f"--pwfile={password}"]), check=True, capture_output=True, text=True)
        finally:
            password.unlink()

    return Program(
        name,
        command,
        ports={"PostgreSQL": settings.postgres_port},
        probe=lambda settings: health.postgres_accepting(settings, host),
        requires=("consul",),
        deadline=60,
        prepare=prepare,
        when_healthy=(
            partial(create_databases, settings, host, databases),
            partial(register, "postgres", settings.on(host), service_id=name),
        ),
        host=host,
        url=f"postgresql://{host}:{settings.postgres_port} (database {', '.join(databases)})",
    )


def create_databases(settings: Settings, host: str, databases: tuple[str, ...], agent: consul.Consul) -> None:
    with health.postgres(settings, host, autocommit=True) as connection:
        present = {row[0] for row in connection.execute("SELECT datname FROM pg_database")}
        for database in databases:
            if database not in present:
                connection.execute(f'CREATE DATABASE "{database}"')


def _owner() -> pwd.struct_passwd | None:
    """Whom PostgreSQL runs as: this user, unless this is root."""
    return pwd.getpwnam("postgres") if os.geteuid() == 0 else None


def _passable(folder: Path) -> None:
    """Let other users pass through (not list) the folders above folder, up to one they may pass already: the
    postgres user reaches its own folder under var/, whose other folders stay their owner's only."""
    for above in folder.parents:
        mode = above.stat().st_mode
        if mode & 0o001:
            return
        above.chmod(mode | 0o001)
