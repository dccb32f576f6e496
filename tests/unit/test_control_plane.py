"""The snapshot builder and the ADS bookkeeping, without Consul or Envoy."""

from __future__ import annotations

import asyncio
import uuid

from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.core.v3 import base_pb2
from envoy.service.discovery.v3 import discovery_pb2
from google.rpc import status_pb2
from prometheus_client import REGISTRY

from services.control_plane import snapshot
from services.control_plane.ads import AggregatedDiscovery, SnapshotCache

INSTANCES = {"customer-service": ["127.0.0.1:50051", "127.0.0.1:41000"], "billing-service": []}


def test_each_service_becomes_an_eds_cluster_over_http2_with_outlier_detection():
    clusters = {c.name: c for c in snapshot.build(INSTANCES).of(snapshot.CLUSTER_TYPE)}
    assert sorted(clusters) == ["billing-service", "customer-service"]
    customer = clusters["customer-service"]
    assert customer.type == cluster_pb2.Cluster.EDS
    assert customer.eds_cluster_config.eds_config.HasField("ads")
    assert "envoy.extensions.upstreams.http.v3.HttpProtocolOptions" in customer.typed_extension_protocol_options
    assert customer.outlier_detection.consecutive_gateway_failure.value == 3


def test_load_assignments_carry_the_passing_instances():
    built = snapshot.build(INSTANCES)
    [customer] = built.of(snapshot.ENDPOINT_TYPE, ["customer-service"])
    ports = [e.endpoint.address.socket_address.port_value for e in customer.endpoints[0].lb_endpoints]
    assert ports == [41000, 50051]
    [billing] = built.of(snapshot.ENDPOINT_TYPE, ["billing-service"])
    assert list(billing.endpoints[0].lb_endpoints) == []
    assert built.of(snapshot.ENDPOINT_TYPE, ["no-such-service"]) == []


def test_the_version_follows_the_content_only():
    assert snapshot.build(INSTANCES).version == snapshot.build(dict(reversed(INSTANCES.items()))).version
    moved = {**INSTANCES, "customer-service": ["127.0.0.1:50051"]}
    assert snapshot.build(moved).version != snapshot.build(INSTANCES).version


class Stream:
    """Stands in for the gRPC stream: the requests Envoy sends, the responses written back."""

    def __init__(self) -> None:
        self.requests: asyncio.Queue = asyncio.Queue()
        self.written: list[discovery_pb2.DiscoveryResponse] = []
        self.wrote = asyncio.Event()

    async def write(self, response) -> None:
        self.written.append(response)
        self.wrote.set()

    def peer(self) -> str:
        return "test-envoy"

    async def __aiter__(self):
        while (request := await self.requests.get()) is not None:
            yield request

    async def next_response(self) -> discovery_pb2.DiscoveryResponse:
        await asyncio.wait_for(self.wrote.wait(), 2)
        self.wrote.clear()
        return self.written[-1]


def _request(type_url=snapshot.CLUSTER_TYPE, version="", nonce="", names=(), error="", node="metrics-envoy"):
    return discovery_pb2.DiscoveryRequest(
        node=base_pb2.Node(id=node),
        type_url=type_url,
        version_info=version,
        response_nonce=nonce,
        resource_names=list(names),
        error_detail=status_pb2.Status(code=3 if error else 0, message=error),
    )


def _run(scenario):
    async def main():
        cache, stream = SnapshotCache(), Stream()
        server = asyncio.create_task(AggregatedDiscovery(cache).StreamAggregatedResources(stream, stream))
        try:
            await scenario(cache, stream)
        finally:
            stream.requests.put_nowait(None)
            await asyncio.wait_for(server, 2)

    asyncio.run(main())


def test_a_snapshot_is_sent_then_the_next_one_only_after_the_ack():
    async def scenario(cache, stream):
        cache.set(snapshot.build(INSTANCES))
        stream.requests.put_nowait(_request())
        first = await stream.next_response()
        assert {c.type_url for c in first.resources} == {snapshot.CLUSTER_TYPE} and len(first.resources) == 2
        cache.set(snapshot.build({"customer-service": []}))
        await asyncio.sleep(0.05)
        assert len(stream.written) == 1, "nothing is sent before the previous response is acknowledged"
        stream.requests.put_nowait(_request(version=first.version_info, nonce=first.nonce))
        second = await stream.next_response()
        assert second.version_info != first.version_info and len(second.resources) == 1

    _run(scenario)


def test_an_unchanged_snapshot_is_not_sent_again():
    async def scenario(cache, stream):
        cache.set(snapshot.build(INSTANCES))
        stream.requests.put_nowait(_request())
        first = await stream.next_response()
        stream.requests.put_nowait(_request(version=first.version_info, nonce=first.nonce))
        cache.set(snapshot.build(INSTANCES))
        await asyncio.sleep(0.05)
        assert len(stream.written) == 1

    _run(scenario)


def test_a_reconnecting_envoy_holding_the_current_version_gets_nothing_new():
    async def scenario(cache, stream):
        current = snapshot.build(INSTANCES)
        cache.set(current)
        stream.requests.put_nowait(_request(version=current.version))
        await asyncio.sleep(0.05)
        assert stream.written == []

    _run(scenario)


def test_endpoints_are_sent_for_the_clusters_envoy_names():
    async def scenario(cache, stream):
        cache.set(snapshot.build(INSTANCES))
        stream.requests.put_nowait(_request(snapshot.ENDPOINT_TYPE, names=["customer-service"]))
        response = await stream.next_response()
        assert response.type_url == snapshot.ENDPOINT_TYPE and len(response.resources) == 1

    _run(scenario)


def test_a_rejected_version_is_not_pushed_again():
    async def scenario(cache, stream):
        cache.set(snapshot.build(INSTANCES))
        stream.requests.put_nowait(_request())
        first = await stream.next_response()
        stream.requests.put_nowait(_request(nonce=first.nonce, error="bad cluster"))
        await asyncio.sleep(0.05)
        assert len(stream.written) == 1

    _run(scenario)


def _count(name: str, node: str, type_name: str = "cluster") -> float:
    return REGISTRY.get_sample_value(name, {"envoy": node, "type": type_name}) or 0.0


def test_pushes_acks_and_nacks_are_counted_per_envoy():
    node = f"envoy-{uuid.uuid4().hex[:6]}"

    async def scenario(cache, stream):
        cache.set(snapshot.build(INSTANCES))
        stream.requests.put_nowait(_request(node=node))
        first = await stream.next_response()
        stream.requests.put_nowait(_request(version=first.version_info, nonce=first.nonce, node=node))
        cache.set(snapshot.build({"customer-service": []}))
        second = await stream.next_response()
        stream.requests.put_nowait(_request(nonce=second.nonce, error="bad cluster", node=node))
        await asyncio.sleep(0.05)

    _run(scenario)
    assert _count("shopmesh_xds_pushes_total", node) == 2
    assert _count("shopmesh_xds_acks_total", node) == 1
    assert _count("shopmesh_xds_nacks_total", node) == 1
    current = snapshot.build({"customer-service": []}).version
    assert REGISTRY.get_sample_value("shopmesh_xds_snapshot_info", {"version": current}) == 1
