"""Bringing the mesh's programs up in dependency order, each once all it requires is healthy, and down again;
with a diagnosis of the ports that are taken."""

from __future__ import annotations

import socket
import time
import xmlrpc.client
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field

import psutil

import consul
from shopmesh.runtime.settings import Settings
from shopmesh.tooling import codegen
from shopmesh.tooling.install import Installed, locations
from shopmesh.tooling.instances import plan_instances
from shopmesh.tooling.programs import Program, programs
from shopmesh.tooling.supervise import Supervisor


class StackError(RuntimeError):
    """The mesh could not be brought up; the message says which part and why."""


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
            listening = connection.laddr and connection.laddr.port == port and connection.status == psutil.CONN_LISTEN
            if listening and connection.pid:
                process = psutil.Process(connection.pid)
                return f"pid {connection.pid} ({' '.join(process.cmdline())[:120]})"
    except (psutil.AccessDenied, psutil.NoSuchProcess):
        pass
    return "another process (not visible to this user)"


def check_ports(settings: Settings, wanted: Sequence[Program]) -> None:
    taken = [
        f"  port {port} on {program.host or settings.host} ({purpose}) is in use by {holder}"
        for program in wanted
        for purpose, port in program.ports.items()
        if (holder := port_holder(program.host or settings.host, port))
    ]
    if taken:
        raise StackError(
            "cannot start: ports are taken\n"
            + "\n".join(taken)
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
        if program.when_healthy:
            agent = consul.Consul(host=self.settings.consul_address, port=self.settings.consul_http_port)
            for hook in program.when_healthy:
                hook(agent)


def up(settings: Settings, installed: Installed, report: Callable[[str], None] = print) -> list[Program]:
    """Bring the whole mesh up and return once every program is healthy; on failure stop everything."""
    codegen.generate()
    if not settings.clustered:  # the cluster runs two instances of each service, one per host
        plan_instances(settings)
    wanted = programs(settings, installed)
    supervisor = Supervisor(settings)
    running = supervisor.info()
    check_ports(settings, [p for p in wanted if running.get(p.name, {}).get("statename") != "RUNNING"])
    supervisor.start_daemon([p.command() for p in wanted])
    try:
        BringUp(settings, supervisor, wanted, report).run()
    except BaseException:
        report("stopping everything that was started …")
        down(settings)
        raise
    return wanted


def down(settings: Settings) -> bool:
    """Stop every program of this checkout; False if nothing was running."""
    supervisor = Supervisor(settings)
    if not supervisor.running():
        return False
    if settings.clustered:
        _stop_in_batches(settings, supervisor)
    supervisor.shutdown()
    return True


def _stop_in_batches(settings: Settings, supervisor: Supervisor) -> None:
    """The process manager stops one program after another, in reverse start order. Nodes of one cluster cannot
    all stop so: the last of three Kafka nodes would wait for a controller quorum that left with the others, and a
    Bytewax process waits for its peer. So the cluster is stopped in that order too, but each set of nodes of one
    engine (Program.stops_with) at once."""
    for batch in stop_batches(programs(settings, locations(settings))):
        for name in batch:
            try:
                supervisor.rpc.stopProcess(name, False)
            except xmlrpc.client.Fault:
                pass  # not running
        for name in batch:
            while supervisor.state(name) in ("STOPPING", "RUNNING", "STARTING", "BACKOFF"):
                time.sleep(0.2)


def stop_batches(wanted: Sequence[Program]) -> list[list[str]]:
    """The programs in reverse start order, those next to each other that stop with the same engine in one batch."""
    batches: list[tuple[str, list[str]]] = []
    for program in reversed(wanted):
        if batches and program.stops_with and batches[-1][0] == program.stops_with:
            batches[-1][1].append(program.name)
        else:
            batches.append((program.stops_with, [program.name]))
    return [names for _, names in batches]
