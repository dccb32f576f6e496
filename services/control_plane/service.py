"""Consul watcher -> snapshot builder -> ADS server."""

from __future__ import annotations

import grpc
from envoy.service.discovery.v3 import ads_pb2, ads_pb2_grpc

from services.control_plane import snapshot
from services.control_plane.ads import AggregatedDiscovery, SnapshotCache
from shopmesh.runtime import catalogue
from shopmesh.runtime.discovery import Endpoints, StatusCheck
from shopmesh.runtime.server import Service
from shopmesh.runtime.settings import Settings

#: The services Envoy routes to, by their Consul names.
ROUTED = tuple(service.consul_name for service in catalogue.routed())


async def attach(server: grpc.aio.Server, settings: Settings, status_checks: list[StatusCheck]):
    cache = SnapshotCache()
    instances: dict[str, tuple[str, ...]] = {}

    def changed(service: str, addresses: tuple[str, ...]) -> None:
        instances[service] = addresses
        if len(instances) == len(ROUTED):  # every service answered once: a complete picture
            cache.set(snapshot.build(instances))

    watches = [Endpoints(settings, name, on_change=changed) for name in ROUTED]
    for watch in watches:
        watch.start()
    ads_pb2_grpc.add_AggregatedDiscoveryServiceServicer_to_server(AggregatedDiscovery(cache), server)

    async def close() -> None:
        for watch in watches:
            await watch.stop()

    return close


SERVICE = Service(
    "mesh-control-plane",
    ads_pb2.DESCRIPTOR.services_by_name["AggregatedDiscoveryService"].full_name,
    attach,
    configured_port=lambda settings: settings.control_plane_port,
    authenticated=False,  # Envoy's ADS stream; the port binds the loopback address only
)
