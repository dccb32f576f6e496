"""Pure functions from the services' healthy endpoints to Envoy resources: one EDS cluster per service and its
load assignment. The version is a hash of the content, so an unchanged set is never pushed again, and a
restarted control plane recognises what Envoy already holds."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from envoy.config.cluster.v3 import cluster_pb2, outlier_detection_pb2
from envoy.config.core.v3 import address_pb2, config_source_pb2, protocol_pb2
from envoy.config.endpoint.v3 import endpoint_components_pb2, endpoint_pb2
from envoy.extensions.upstreams.http.v3 import http_protocol_options_pb2
from google.protobuf import any_pb2, duration_pb2, wrappers_pb2
from google.protobuf.message import Message

CLUSTER_TYPE = "type.googleapis.com/envoy.config.cluster.v3.Cluster"
ENDPOINT_TYPE = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment"
_HTTP_OPTIONS = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"


@dataclass(frozen=True)
class Snapshot:
    version: str
    resources: Mapping[str, Mapping[str, Message]]  # type URL -> resource name -> resource

    def of(self, type_url: str, names: Sequence[str] = ()) -> list[Message]:
        """The resources of a type, all of them (wildcard) or the named ones that exist."""
        by_name = self.resources.get(type_url, {})
        return [by_name[name] for name in (names or sorted(by_name)) if name in by_name]


def _seconds(value: float) -> duration_pb2.Duration:
    duration = duration_pb2.Duration()
    duration.FromNanoseconds(int(value * 1e9))
    return duration


def cluster(name: str) -> cluster_pb2.Cluster:
    """A service's cluster: endpoints over ADS, HTTP/2, round robin, failing instances ejected."""
    options = http_protocol_options_pb2.HttpProtocolOptions(
        explicit_http_config=http_protocol_options_pb2.HttpProtocolOptions.ExplicitHttpConfig(
            http2_protocol_options=protocol_pb2.Http2ProtocolOptions()
        )
    )
    packed = any_pb2.Any()
    packed.Pack(options)
    return cluster_pb2.Cluster(
        name=name,
        type=cluster_pb2.Cluster.EDS,
        eds_cluster_config=cluster_pb2.Cluster.EdsClusterConfig(
            eds_config=config_source_pb2.ConfigSource(
                ads=config_source_pb2.AggregatedConfigSource(),
                resource_api_version=config_source_pb2.ApiVersion.V3,
            )
        ),
        connect_timeout=_seconds(1),
        lb_policy=cluster_pb2.Cluster.ROUND_ROBIN,
        typed_extension_protocol_options={_HTTP_OPTIONS: packed},
        outlier_detection=outlier_detection_pb2.OutlierDetection(
            consecutive_5xx=wrappers_pb2.UInt32Value(value=3),
            consecutive_gateway_failure=wrappers_pb2.UInt32Value(value=3),
            interval=_seconds(1),
            base_ejection_time=_seconds(10),
            max_ejection_percent=wrappers_pb2.UInt32Value(value=50),
        ),
    )


def load_assignment(name: str, addresses: Sequence[str]) -> endpoint_pb2.ClusterLoadAssignment:
    endpoints = []
    for address in sorted(addresses):
        host, _, port = address.rpartition(":")
        endpoints.append(
            endpoint_components_pb2.LbEndpoint(
                endpoint=endpoint_components_pb2.Endpoint(
                    address=address_pb2.Address(
                        socket_address=address_pb2.SocketAddress(address=host, port_value=int(port))
                    )
                )
            )
        )
    return endpoint_pb2.ClusterLoadAssignment(
        cluster_name=name, endpoints=[endpoint_components_pb2.LocalityLbEndpoints(lb_endpoints=endpoints)]
    )


def build(instances: Mapping[str, Sequence[str]]) -> Snapshot:
    """The snapshot for the passing instances ("host:port") of each service."""
    clusters = {name: cluster(name) for name in sorted(instances)}
    assignments = {name: load_assignment(name, instances[name]) for name in sorted(instances)}
    digest = hashlib.sha256()
    for resource in [*clusters.values(), *assignments.values()]:
        digest.update(resource.SerializeToString(deterministic=True))
    return Snapshot(digest.hexdigest()[:16], {CLUSTER_TYPE: clusters, ENDPOINT_TYPE: assignments})
