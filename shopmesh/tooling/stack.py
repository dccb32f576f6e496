"""The mesh as a set of programs: how each starts, what it depends on, how its health is known, and how the
whole set is brought up in dependency order and taken down again."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import consul
import psutil

from dataflows import CONSUL_NAMES, service_id
from shopmesh.runtime import invoices
from shopmesh.tooling import codegen, gateway, health, realm
from shopmesh.tooling.install import Installed, java_for, java_home_for_keycloak
from shopmesh.runtime.settings import PROJECT_ROOT, Settings
from shopmesh.tooling.supervise import ProgramSpec, Supervisor


class StackError(RuntimeError):
    """The mesh could not be brought up; the message says which part and why."""


@dataclass(frozen=True)
class Program:
    spec: ProgramSpec
    ports: dict[str, int]
    probe: Callable[[Settings], str | None]
    requires: tuple[str, ...] = ()
    deadline: float = 60.0
    prepare: Callable[[], None] = lambda: None
    #: Run once healthy: registration in Consul for the components that do not register themselves.
    register: Callable[[consul.Consul], None] | None = None
    url: str = ""

    @property
    def name(self) -> str:
        return self.spec.name


SERVICES = ("customer", "inventory", "billing")


def programs(settings: Settings, installed: Installed) -> list[Program]:
    infrastructure = [_consul(settings, installed), _kafka(settings, installed), _keycloak(settings, installed),
                      _control_plane(settings), _envoy(settings, installed)]
    services = [
        _service(settings, name, instance, port)
        for name in SERVICES
        for instance, port in enumerate(instance_ports(settings, name), start=1)
    ]
    return infrastructure + services + [_producer(settings)] + [_dataflow(settings, name) for name in CONSUL_NAMES]


def _producer(settings: Settings) -> Program:
    return Program(
        ProgramSpec("facturation-producer", [sys.executable, "-m", "services.facturation_producer"], stop_seconds=15),
        ports={},
        probe=lambda settings: health.consul_passing(settings, f"facturation-producer-{settings.advertise_address}"),
        # It names real customers from the start once these are up; alone it falls back to a built-in list.
        requires=("consul", "kafka", "keycloak", "customer-service"),
        deadline=60,
        url=f"kafka topic {invoices.FACTURATION}, {settings.facturation_rate:g} invoice(s)/s",
    )


def _dataflow(settings: Settings, name: str) -> Program:
    output = settings.analytics_total_5s_topic if name == "totals_5s" else settings.analytics_by_customer_topic
    return Program(
        # RUST_BACKTRACE off: Bytewax stops by panicking its workers, which is no error worth a backtrace.
        ProgramSpec(CONSUL_NAMES[name], [sys.executable, "-m", "dataflows", name], env={"RUST_BACKTRACE": "0"},
                    stop_seconds=15),
        ports={},
        probe=lambda settings: health.consul_passing(settings, service_id(name, settings)),
        requires=("consul", "kafka"),
        deadline=60,
        url=f"kafka topic {output} (watch with `shopmesh watch`)",
    )


# --- the gRPC services, and further instances of them -----------------------------------------------------------


def _scale_file(settings: Settings) -> Path:
    return settings.run_dir / "instances.json"


def _scale_state(settings: Settings) -> dict:
    """{"ports": {service: [ports of its instances after the first]}, "scaled": {service: count set by scale}}."""
    path = _scale_file(settings)
    state = json.loads(path.read_text()) if path.exists() else {}
    if "ports" not in state:  # the file as `scale` wrote it before the count was a setting
        return {"ports": state, "scaled": {service: len(ports) + 1 for service, ports in state.items()}}
    return state


def instance_count(settings: Settings, service: str, state: dict | None = None) -> int:
    state = _scale_state(settings) if state is None else state
    return state["scaled"].get(service, settings.service_processes)


def instance_ports(settings: Settings, service: str) -> list[int]:
    """The ports of the service's instances: the contract's for the first, free ports chosen once after it."""
    state = _scale_state(settings)
    extra = state["ports"].get(service, [])[: instance_count(settings, service, state) - 1]
    return [settings.listen_port(f"{service}_service_port"), *extra]


def instance_program(service: str, instance: int) -> str:
    """The supervisord program of a service's instance: customer-service, customer-service-2, …"""
    return f"{service}-service" if instance == 1 else f"{service}-service-{instance}"


def instance_programs(settings: Settings, service: str) -> list[str]:
    return [instance_program(service, number) for number in range(1, len(instance_ports(settings, service)) + 1)]


def plan_instances(settings: Settings, scaled: dict[str, int] | None = None) -> dict[str, list[int]]:
    """Record explicit counts (from `scale`) and choose a free port for every instance that has none yet; the
    ports are kept, so an instance keeps its port across restarts. Returns each service's ports."""
    state = _scale_state(settings)
    for service, count in (scaled or {}).items():
        if service not in SERVICES:
            raise StackError(f"unknown service {service!r}: one of {', '.join(SERVICES)}")
        if count < 1:
            raise StackError(f"a service runs at least one instance, not {count}")
        state["scaled"][service] = count
    taken = {settings.listen_port(f"{service}_service_port") for service in SERVICES}
    taken.update(port for ports in state["ports"].values() for port in ports)
    for service in SERVICES:
        ports = state["ports"].setdefault(service, [])
        while len(ports) < instance_count(settings, service, state) - 1:
            port = free_port(settings.host)
            if port not in taken:
                ports.append(port)
                taken.add(port)
    path = _scale_file(settings)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(state, indent=2))
    return {service: instance_ports(settings, service) for service in SERVICES}


def free_port(host: str) -> int:
    with socket.socket() as probe:
        probe.bind((host, 0))
        return probe.getsockname()[1]


def _control_plane(settings: Settings) -> Program:
    port = settings.control_plane_port
    return Program(
        ProgramSpec("mesh-control-plane", [sys.executable, "-m", "services.control_plane"], stop_seconds=15),
        ports={"xDS control plane": port},
        probe=lambda settings: health.service_instance(settings, "mesh-control-plane", port),
        requires=("consul",),
        deadline=90,
        url=f"grpc://{settings.host}:{port} (ADS)",
    )


def _service(settings: Settings, name: str, instance: int, port: int) -> Program:
    consul_name = f"{name}-service"
    program = instance_program(name, instance)
    requires = ("consul", "customer-service", "inventory-service") if name == "billing" else ("consul",)
    return Program(
        ProgramSpec(program, [sys.executable, "-m", f"services.{name}"], {"SHOPMESH_INSTANCE_PORT": str(port)},
                    stop_seconds=15),
        ports={f"{consul_name} gRPC": port},
        probe=lambda settings: health.service_instance(settings, consul_name, port),
        requires=requires,
        deadline=90,
        url=f"grpc://{settings.host}:{port}",
    )


def _consul(settings: Settings, installed: Installed) -> Program:
    argv = [
        str(installed.consul / "bin" / "consul"), "agent",
        f"-config-file={PROJECT_ROOT / 'consul' / 'agent.hcl'}",
        f"-data-dir={settings.var_dir / 'consul'}",
        f"-http-port={settings.consul_http_port}", f"-dns-port={settings.consul_dns_port}",
        f"-server-port={settings.consul_server_port}", f"-serf-lan-port={settings.consul_serf_lan_port}",
    ]
    return Program(
        ProgramSpec("consul", argv, stop_seconds=15),
        ports={"Consul HTTP API and UI": settings.consul_http_port, "Consul DNS": settings.consul_dns_port,
               "Consul server RPC": settings.consul_server_port, "Consul LAN gossip": settings.consul_serf_lan_port},
        probe=health.consul_leader,
        deadline=60,
        url=f"{settings.consul_url}/ui/",
    )


def _kafka(settings: Settings, installed: Installed) -> Program:
    data = settings.var_dir / "kafka" / "data"
    classpath = f"{installed.kafka / 'libs'}/*"
    java = java_for("kafka")
    overrides = {
        "listeners": f"PLAINTEXT://{settings.host}:{settings.kafka_port},"
                     f"CONTROLLER://{settings.host}:{settings.kafka_controller_port}",
        "advertised.listeners": f"PLAINTEXT://{settings.host}:{settings.kafka_port}",
        "controller.quorum.voters": f"1@{settings.host}:{settings.kafka_controller_port}",
        "log.dirs": str(data),
    }
    config = settings.var_dir / "kafka" / "server.properties"
    argv = [java, f"-Xms{settings.kafka_heap}", f"-Xmx{settings.kafka_heap}",
            f"-Dlog4j2.configurationFile={PROJECT_ROOT / 'kafka' / 'log4j2.properties'}",
            "-cp", classpath, "kafka.Kafka", str(config)]

    def prepare() -> None:
        # kafka/server.properties, then the address settings: in a properties file the later key wins.
        config.parent.mkdir(parents=True, exist_ok=True)
        lines = [(PROJECT_ROOT / "kafka" / "server.properties").read_text(), "# From the SHOPMESH_* settings:"]
        config.write_text("\n".join(lines + [f"{key}={value}" for key, value in overrides.items()]) + "\n")
        # KRaft needs its log folder formatted once with a cluster id; later starts reuse it.
        if (data / "meta.properties").exists():
            return
        data.mkdir(parents=True, exist_ok=True)
        tool = [java, "-cp", classpath, "kafka.tools.StorageTool"]
        cluster_id = subprocess.run([*tool, "random-uuid"], capture_output=True, text=True, check=True).stdout
        subprocess.run([*tool, "format", "--ignore-formatted", "-t", cluster_id.strip(), "-c", str(config)],
                       capture_output=True, text=True, check=True)

    return Program(
        ProgramSpec("kafka", argv, stop_seconds=60),
        ports={"Kafka broker": settings.kafka_port, "Kafka controller": settings.kafka_controller_port},
        probe=health.kafka_metadata,
        requires=("consul",),
        deadline=120,
        prepare=prepare,
        register=lambda agent: (
            agent.agent.service.register(
                "kafka", service_id="kafka", address=settings.host, port=settings.kafka_port,
                tags=["broker", "kraft"], check={"TCP": f"{settings.host}:{settings.kafka_port}", "Interval": "10s"},
            ),
            invoices.ensure_topics(settings),
        ),
        url=f"kafka://{settings.kafka_bootstrap}",
    )


def _keycloak(settings: Settings, installed: Installed) -> Program:
    # Keycloak's home is laid out per checkout: its data (the embedded H2 database, the realm import folder)
    # lives under var/, while lib/ points at the optimized server built once in the cache.
    home = settings.var_dir / "keycloak"
    argv = [
        str(installed.keycloak / "bin" / "kc.sh"), "start", "--optimized", f"-Dkc.home.dir={home}",
        "--cache=local", "--http-enabled=true", f"--http-host={settings.host}", f"--http-port={settings.keycloak_port}",
        f"--hostname=http://localhost:{settings.keycloak_port}", "--import-realm",
    ]
    env = {
        "JAVA_HOME": str(java_home_for_keycloak(settings)),
        "JAVA_OPTS_KC_HEAP": f"-Xms64m -Xmx{settings.keycloak_heap}",
        "KC_BOOTSTRAP_ADMIN_USERNAME": settings.keycloak_admin_user,
    }
    secrets = {"KC_BOOTSTRAP_ADMIN_PASSWORD": settings.keycloak_admin_password}

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

    discovery = f"{settings.keycloak_url}/realms/shopmesh/.well-known/openid-configuration"
    return Program(
        ProgramSpec("keycloak", argv, env, secrets=secrets),
        ports={"Keycloak HTTP": settings.keycloak_port},
        probe=health.keycloak_realm,
        requires=("consul",),
        deadline=300,
        prepare=lay_out_home,
        register=lambda agent: (
            agent.agent.service.register(
                "keycloak", service_id="keycloak", address=settings.host, port=settings.keycloak_port,
                tags=["oidc"], check={"HTTP": discovery, "Interval": "10s"},
            ),
            # The realm file reaches a realm imported by an earlier start, and passwords come from the environment.
            realm.apply(settings),
        ),
        url=f"{settings.keycloak_url}/admin/ (console), realm {settings.keycloak_url}/realms/shopmesh",
    )


def _envoy(settings: Settings, installed: Installed) -> Program:
    bootstrap = settings.var_dir / "envoy" / "bootstrap.yaml"

    argv = [str(installed.envoy / "bin" / "envoy"), "-c", str(bootstrap), "--disable-hot-restart",
            "--log-level", "info", "--concurrency", str(settings.envoy_workers)]
    ready = f"{settings.envoy_admin_url}/ready"
    return Program(
        ProgramSpec("envoy", argv, stop_seconds=15),
        ports={"gateway": settings.gateway_port, "Envoy admin": settings.envoy_admin_port},
        probe=health.envoy_ready,
        requires=("consul", "mesh-control-plane", "keycloak"),
        deadline=60,
        prepare=lambda: gateway.write_bootstrap(settings, bootstrap.parent),
        register=lambda agent: agent.agent.service.register(
            "gateway", service_id="gateway", address=settings.host, port=settings.gateway_port, tags=["envoy"],
            check={"HTTP": ready, "Interval": "5s"},
        ),
        url=settings.gateway_url,
    )


# --- bringing the set up and down ------------------------------------------------------------------------------


def port_holder(host: str, port: int) -> str | None:
    """None when the port is free on host; otherwise who holds it, as far as it can be found."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
            return None
        except OSError:
            pass
    try:
        for connection in psutil.net_connections(kind="inet"):
            if connection.laddr and connection.laddr.port == port and connection.status == psutil.CONN_LISTEN:
                if connection.pid:
                    process = psutil.Process(connection.pid)
                    return f"pid {connection.pid} ({' '.join(process.cmdline())[:120]})"
    except (psutil.AccessDenied, psutil.NoSuchProcess):
        pass
    return "another process (not visible to this user)"


def check_ports(settings: Settings, wanted: Sequence[Program]) -> None:
    taken = [
        f"  port {port} ({purpose}) is in use by {holder}"
        for program in wanted
        for purpose, port in program.ports.items()
        if (holder := port_holder(settings.host, port))
    ]
    if taken:
        raise StackError(
            "cannot start: ports are taken on " + settings.host + "\n" + "\n".join(taken)
            + "\nStop what holds them, or move shopmesh with SHOPMESH_<NAME>_PORT (see README)."
        )


@dataclass
class BringUp:
    """Starts each program once all it requires is healthy, and waits for its own health within its deadline."""

    settings: Settings
    supervisor: Supervisor
    wanted: Sequence[Program]
    report: Callable[[str], None] = print
    poll_seconds: float = 0.5
    healthy: set[str] = field(default_factory=set)

    def run(self) -> None:
        pending = list(self.wanted)
        starting: dict[str, tuple[Program, float]] = {}
        probing: dict[str, Future] = {}
        # Probes run side by side and are collected as they finish: a slow one (a broker still starting)
        # delays no other program's verdict.
        with ThreadPoolExecutor(max_workers=8) as pool:
            while pending or starting:
                for program in [p for p in pending if set(p.requires) <= self.healthy]:
                    pending.remove(program)
                    starting[program.name] = (program, time.monotonic())
                    if self.supervisor.state(program.name) != "RUNNING" or program.probe(self.settings):
                        self.report(f"starting {program.name} …")
                        program.prepare()
                        self.supervisor.start(program.name)
                if pending and not starting:
                    blocked = ", ".join(f"{p.name} (needs {', '.join(p.requires)})" for p in pending)
                    raise StackError(f"nothing left to start, yet these wait: {blocked}")
                time.sleep(self.poll_seconds)
                for name, (program, started) in list(starting.items()):
                    future = probing.get(name)
                    if future is None:
                        probing[name] = pool.submit(program.probe, self.settings)
                        continue
                    if not future.done():
                        self._check(program, started, "still answering the last probe", final=False)
                        continue
                    del probing[name]
                    self._check(program, started, future.result())
                    if name in self.healthy:
                        del starting[name]

    def _check(self, program: Program, started: float, problem: str | None, final: bool = True) -> None:
        """Mark the program healthy, or raise once it has died or run out of time."""
        if problem is None and final:
            self.healthy.add(program.name)
            self._register(program)
            self.report(f"{program.name} healthy after {time.monotonic() - started:.1f} s")
            return
        state = self.supervisor.state(program.name)
        if state in ("FATAL", "EXITED", "STOPPED") or time.monotonic() > started + program.deadline:
            why = f"its process is {state}" if state != "RUNNING" else f"not healthy within {program.deadline:.0f} s"
            raise StackError(
                f"{program.name} failed to start: {why} ({problem}).\n"
                f"Last lines of {self.settings.log_dir / (program.name + '.log')}:\n"
                f"{self.supervisor.log_tail(program.name)}"
            )

    def _register(self, program: Program) -> None:
        if program.register is not None:
            program.register(consul.Consul(host=self.settings.host, port=self.settings.consul_http_port))


def up(settings: Settings, installed: Installed, report: Callable[[str], None] = print) -> list[Program]:
    """Bring the whole mesh up and return once every program is healthy; on failure stop everything."""
    codegen.generate()
    plan_instances(settings)
    wanted = programs(settings, installed)
    supervisor = Supervisor(settings)
    running = supervisor.info()
    check_ports(settings, [p for p in wanted if running.get(p.name, {}).get("statename") != "RUNNING"])
    supervisor.start_daemon([p.spec for p in wanted])
    try:
        BringUp(settings, supervisor, wanted, report).run()
    except BaseException:
        report("stopping everything that was started …")
        supervisor.shutdown()
        raise
    return wanted


def down(settings: Settings) -> bool:
    """Stop every program of this checkout; False if nothing was running."""
    supervisor = Supervisor(settings)
    if not supervisor.running():
        return False
    supervisor.shutdown()
    return True
