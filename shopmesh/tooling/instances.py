"""How many instances of each gRPC service run, and on which ports: the scale state under var/run/, kept across
restarts so an instance keeps its port."""

from __future__ import annotations

import json
import socket
from pathlib import Path

from shopmesh.runtime.catalogue import SERVICES, part
from shopmesh.runtime.settings import Settings


class ScaleError(ValueError):
    """A scale that cannot be: an unknown service, or fewer than one instance."""


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
    return [settings.listen_port(settings.service_ports[service]), *extra]


def instance_program(service: str, instance: int) -> str:
    """The supervisord program of a service's instance: customer-service, customer-service-2, …"""
    return f"{service}-service" if instance == 1 else f"{service}-service-{instance}"


def instance_programs(settings: Settings, service: str) -> list[str]:
    return [instance_program(service, number) for number in range(1, len(instance_ports(settings, service)) + 1)]


def plan_instances(settings: Settings, scaled: dict[str, int] | None = None) -> dict[str, list[int]]:
    """Record explicit counts (from `scale`) and choose a free port for every instance that has none yet; the
    ports are kept, so an instance keeps its port across restarts. Returns each service's ports."""
    state = _scale_state(settings)
    names = [service.name for service in SERVICES]
    for service, count in (scaled or {}).items():
        try:
            part(service)
        except ValueError as error:
            raise ScaleError(str(error)) from None
        if count < 1:
            raise ScaleError(f"a service runs at least one instance, not {count}")
        state["scaled"][service] = count
    taken = {settings.listen_port(settings.service_ports[service]) for service in names}
    taken.update(port for ports in state["ports"].values() for port in ports)
    for service in names:
        ports = state["ports"].setdefault(service, [])
        while len(ports) < instance_count(settings, service, state) - 1:
            port = free_port(settings.host)
            if port not in taken:
                ports.append(port)
                taken.add(port)
    path = _scale_file(settings)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(state, indent=2))
    return {service: instance_ports(settings, service) for service in names}


def free_port(host: str) -> int:
    with socket.socket() as probe:
        probe.bind((host, 0))
        return probe.getsockname()[1]
