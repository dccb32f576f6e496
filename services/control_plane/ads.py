"""The Aggregated Discovery Service, state of the world: it only transports the latest snapshot to each Envoy.

Per stream and per resource type, a response is sent when Envoy has acknowledged (or rejected) the previous
one and the snapshot's version, or the names Envoy asks for, differ from what it was last sent."""

from __future__ import annotations

import asyncio
import itertools
import logging
from dataclasses import dataclass

from envoy.service.discovery.v3 import ads_pb2_grpc, discovery_pb2
from google.protobuf import any_pb2
from prometheus_client import Counter, Gauge, Info

from services.control_plane.snapshot import Snapshot

log = logging.getLogger(__name__)

# "envoy" is the Envoy's node id (one per gateway process); "type" the resource type (cluster, endpoints, ...).
SNAPSHOT = Info("shopmesh_xds_snapshot", "The snapshot this control plane serves: its version (a content hash).")
SNAPSHOTS = Counter("shopmesh_xds_snapshots", "Snapshots built from a changed set of endpoints.")
SNAPSHOT_TIME = Gauge("shopmesh_xds_snapshot_timestamp_seconds", "When the current snapshot was built.")
STREAMS = Gauge("shopmesh_xds_streams", "ADS streams open, one per connected Envoy.")
PUSHES = Counter("shopmesh_xds_pushes", "Discovery responses sent.", ("envoy", "type"))
ACKS = Counter("shopmesh_xds_acks", "Responses an Envoy accepted.", ("envoy", "type"))
NACKS = Counter("shopmesh_xds_nacks", "Responses an Envoy rejected.", ("envoy", "type"))


def _short_type(type_url: str) -> str:
    """cluster, endpoints, ...: the resource type without its package."""
    name = type_url.rpartition(".")[2]
    return {"ClusterLoadAssignment": "endpoints"}.get(name, name.lower())


class SnapshotCache:
    """The latest snapshot, and the streams to wake when it changes."""

    def __init__(self) -> None:
        self.snapshot: Snapshot | None = None
        self._streams: set[asyncio.Queue] = set()

    def set(self, snapshot: Snapshot) -> None:
        if self.snapshot is not None and snapshot.version == self.snapshot.version:
            return
        log.info("snapshot %s", snapshot.version)
        self.snapshot = snapshot
        SNAPSHOT.info({"version": snapshot.version})
        SNAPSHOTS.inc()
        SNAPSHOT_TIME.set_to_current_time()
        for queue in self._streams:
            queue.put_nowait("changed")

    def subscribe(self) -> asyncio.Queue:
        queue: asyncio.Queue = asyncio.Queue()
        self._streams.add(queue)
        return queue

    def unsubscribe(self, queue: asyncio.Queue) -> None:
        self._streams.discard(queue)


@dataclass
class _Subscription:
    names: tuple[str, ...] = ()
    sent_version: str = ""
    sent_names: tuple[str, ...] | None = None
    awaiting_nonce: str = ""


class AggregatedDiscovery(ads_pb2_grpc.AggregatedDiscoveryServiceServicer):
    def __init__(self, cache: SnapshotCache) -> None:
        self.cache = cache
        self._nonces = itertools.count(1)

    async def StreamAggregatedResources(self, request_iterator, context) -> None:
        events = self.cache.subscribe()

        async def read() -> None:
            async for request in request_iterator:
                events.put_nowait(request)
            events.put_nowait(None)

        reader = asyncio.create_task(read())
        subscriptions: dict[str, _Subscription] = {}
        node = "unknown"
        STREAMS.inc()
        try:
            while (event := await events.get()) is not None:
                if isinstance(event, discovery_pb2.DiscoveryRequest):
                    node = event.node.id or node  # Envoy names itself in its first request
                    self._receive(event, subscriptions, context.peer(), node)
                for type_url, subscription in subscriptions.items():
                    if response := self._response(type_url, subscription):
                        await context.write(response)
                        PUSHES.labels(node, _short_type(type_url)).inc()
        finally:
            STREAMS.dec()
            reader.cancel()
            self.cache.unsubscribe(events)

    @staticmethod
    def _receive(
        request: discovery_pb2.DiscoveryRequest, subscriptions: dict[str, _Subscription], peer: str, node: str
    ) -> None:
        subscription = subscriptions.setdefault(request.type_url, _Subscription())
        if request.response_nonce and request.response_nonce != subscription.awaiting_nonce:
            return  # an answer to a response already superseded
        if request.response_nonce:
            (NACKS if request.error_detail.code else ACKS).labels(node, _short_type(request.type_url)).inc()
        if request.error_detail.code:
            log.warning(
                "%s rejected %s version %s: %s",
                peer,
                request.type_url,
                subscription.sent_version,
                request.error_detail.message,
            )
        elif not request.response_nonce and request.version_info:
            # A reconnecting Envoy (this control plane restarted) says what it already holds.
            subscription.sent_version = request.version_info
            subscription.sent_names = tuple(sorted(request.resource_names))
        subscription.awaiting_nonce = ""
        subscription.names = tuple(sorted(request.resource_names))

    def _response(self, type_url: str, subscription: _Subscription) -> discovery_pb2.DiscoveryResponse | None:
        snapshot = self.cache.snapshot
        if snapshot is None or subscription.awaiting_nonce:
            return None
        if snapshot.version == subscription.sent_version and subscription.names == subscription.sent_names:
            return None
        resources = []
        for resource in snapshot.of(type_url, subscription.names):
            packed = any_pb2.Any()
            packed.Pack(resource)
            resources.append(packed)
        nonce = str(next(self._nonces))
        subscription.sent_version, subscription.sent_names = snapshot.version, subscription.names
        subscription.awaiting_nonce = nonce
        return discovery_pb2.DiscoveryResponse(
            version_info=snapshot.version, type_url=type_url, resources=resources, nonce=nonce
        )
