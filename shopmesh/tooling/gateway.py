"""Envoy's bootstrap, rendered from envoy/bootstrap.yaml with the settings, the descriptor set generated from
protos/, the routes and transcoded services of the mesh catalogue and the RBAC policies of the permission table.
The native runtime and docker-compose.yml both use it."""

from __future__ import annotations

import json
import re
import shutil
import string
from pathlib import Path

from shopmesh.runtime import catalogue, permissions
from shopmesh.runtime.settings import PROJECT_ROOT, Settings
from shopmesh.tooling import codegen

TEMPLATE = PROJECT_ROOT / "envoy" / "bootstrap.yaml"

_PREVIOUS_HOSTS = {
    "retry_host_predicate": [
        {
            "name": "envoy.retry_host_predicates.previous_hosts",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.retry.host.previous_hosts.v3.PreviousHostsPredicate"
            },
        }
    ],
    "host_selection_retry_max_attempts": 3,
}
#: A read is retried on another instance whatever went wrong with the first.
READ_RETRIES = {
    "retry_on": "unavailable,reset,connect-failure,refused-stream",
    "num_retries": 3,
    "per_try_timeout": "3s",
    **_PREVIOUS_HOSTS,
}
#: A write only where the service surely never saw it: no connection, or a stream refused or reset before the
#: request went out (an instance just killed).
WRITE_RETRIES = {"retry_on": "connect-failure,refused-stream,reset-before-request", "num_retries": 3, **_PREVIOUS_HOSTS}
_JSON_HEADERS = [
    {"header": {"key": "content-type", "value": "application/json"}, "append_action": "OVERWRITE_IF_EXISTS_OR_ADD"}
]


def _not_found(match: dict) -> dict:
    return {
        "match": match,
        "direct_response": {"status": 404, "body": {"inline_string": "no such route"}},
        "response_headers_to_add": _JSON_HEADERS,
    }


def routes(services: tuple[catalogue.ServicePart, ...] | None = None) -> list[dict]:
    """The gateway's routes on the gRPC path, from the catalogue: internal RPCs are not reachable through the
    gateway; each routed service's reads, then its writes; anything else is 404."""
    services = catalogue.routed() if services is None else services
    found: list[dict] = []
    for service in services:
        escaped = re.escape(service.method_prefix)
        if service.internal_rpcs:
            found.append(_not_found({"safe_regex": {"regex": f"^{escaped}({'|'.join(service.internal_rpcs)})$"}}))
        found.append(
            {
                "match": {"safe_regex": {"regex": f"^{escaped}({'|'.join(service.read_prefixes)})[A-Za-z]+$"}},
                "route": {"cluster": service.consul_name, "timeout": "10s", "retry_policy": READ_RETRIES},
            }
        )
        found.append(
            {
                "match": {"prefix": service.method_prefix},
                "route": {"cluster": service.consul_name, "timeout": "10s", "retry_policy": WRITE_RETRIES},
            }
        )
    return [*found, _not_found({"prefix": "/"})]


def write_bootstrap(settings: Settings, folder: Path) -> Path:
    """Write folder/bootstrap.yaml and, beside it, the descriptor set it names; return the bootstrap's path."""
    folder.mkdir(parents=True, exist_ok=True)
    descriptor_set = folder / codegen.DESCRIPTOR_SET.name
    shutil.copyfile(codegen.DESCRIPTOR_SET, descriptor_set)
    bootstrap = folder / "bootstrap.yaml"
    bootstrap.write_text(
        string.Template(TEMPLATE.read_text()).substitute(
            host=settings.host,
            gateway_port=settings.gateway_port,
            admin_port=settings.envoy_admin_port,
            control_plane_host=settings.control_plane_address,
            control_plane_port=settings.control_plane_port,
            keycloak_host=settings.keycloak_address,
            keycloak_port=settings.keycloak_port,
            issuer=settings.keycloak_issuer,
            descriptor_set=descriptor_set,
            rbac_policies=json.dumps(permissions.rbac_policies()),
            routes=json.dumps(routes()),
            transcoded_services=json.dumps([service.grpc_service for service in catalogue.routed()]),
        )
    )
    return bootstrap
