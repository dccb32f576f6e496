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
#: The web console's files, served by Envoy itself at / (each a direct response, inlined into the bootstrap, so
#: that Envoy needs no file beside it, in a container too).
WEB = PROJECT_ROOT / "web"
_CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
    ".json": "application/json",
}
#: The console's pages run only what they bring themselves: no inline script, nothing from elsewhere.
_CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
)

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
    # cancelled: what an instance that is stopping answers a call it will not finish.
    "retry_on": "unavailable,cancelled,reset,connect-failure,refused-stream",
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


def _headers(**values: str) -> list[dict]:
    return [
        {"header": {"key": key.replace("_", "-"), "value": value}, "append_action": "OVERWRITE_IF_EXISTS_OR_ADD"}
        for key, value in values.items()
    ]


def console_routes(web: Path = WEB) -> list[dict]:
    """The web console: each file of web/ at its name, index.html at / too, and the permission table the console
    shows its buttons by at /permissions.json (the server still decides)."""
    found = []
    for path in sorted(web.iterdir()):
        if path.suffix not in _CONTENT_TYPES:
            continue
        headers = _headers(
            content_type=_CONTENT_TYPES[path.suffix],
            cache_control="no-cache",
            content_security_policy=_CONTENT_SECURITY_POLICY,
            x_frame_options="DENY",
        )
        paths = ["/", f"/{path.name}"] if path.name == "index.html" else [f"/{path.name}"]
        found += [
            {
                "match": {"path": url},
                "direct_response": {"status": 200, "body": {"inline_string": path.read_text()}},
                "response_headers_to_add": headers,
            }
            for url in paths
        ]
    found.append({"match": {"path": "/favicon.ico"}, "direct_response": {"status": 204}})  # asked by every browser
    table = {method.lstrip("/"): sorted(roles) for method, roles in permissions.PERMISSIONS.items()}
    found.append(
        {
            "match": {"path": "/permissions.json"},
            "direct_response": {"status": 200, "body": {"inline_string": json.dumps(table)}},
            "response_headers_to_add": _headers(content_type="application/json", cache_control="no-cache"),
        }
    )
    return found


def token_rules(console: list[dict] | None = None) -> list[dict]:
    """jwt_authn's rules: the console's files are public, everything else needs a valid token."""
    console = console_routes() if console is None else console
    public = [{"match": {"path": route["match"]["path"]}} for route in console]
    return [*public, {"match": {"prefix": "/"}, "requires": {"provider_name": "keycloak"}}]


def routes(services: tuple[catalogue.ServicePart, ...] | None = None, console: list[dict] | None = None) -> list[dict]:
    """The gateway's routes: the web console's files; then on the gRPC path, from the catalogue: internal RPCs are
    not reachable through the gateway; each routed service's streams, reads, then writes; anything else is 404."""
    services = catalogue.routed() if services is None else services
    found: list[dict] = console_routes() if console is None else list(console)
    for service in services:
        escaped = re.escape(service.method_prefix)
        if service.internal_rpcs:
            found.append(_not_found({"safe_regex": {"regex": f"^{escaped}({'|'.join(service.internal_rpcs)})$"}}))
        if service.stream_rpcs:
            # A stream runs until the caller leaves: no timeout, no retry. Transcoded, its messages are server-sent
            # events (text/event-stream, for a browser's EventSource); natively, gRPC messages.
            streams = {"safe_regex": {"regex": f"^{escaped}({'|'.join(service.stream_rpcs)})$"}}
            found.append({"match": streams, "route": {"cluster": service.consul_name, "timeout": "0s"}})
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
    secrets = write_secrets(settings, folder / "secrets")
    console = console_routes()  # the web console's files, read once for the routes and the token rules
    bootstrap.write_text(
        string.Template(TEMPLATE.read_text()).substitute(
            host=settings.host,
            gateway_port=settings.gateway_port,
            admin_port=settings.envoy_admin_port,
            control_plane_endpoints=_endpoints(settings.control_plane_hosts, settings.control_plane_port),
            keycloak_endpoints=_endpoints(settings.keycloak_hosts, settings.keycloak_port),
            keycloak_host=settings.keycloak_address,
            keycloak_port=settings.keycloak_port,
            issuer=settings.keycloak_issuer,
            descriptor_set=descriptor_set,
            rbac_policies=json.dumps(permissions.rbac_policies()),
            routes=json.dumps(routes(console=console)),
            transcoded_services=json.dumps([service.grpc_service for service in catalogue.routed()]),
            secrets=secrets,
            token_rules=json.dumps(token_rules(console)),
            access_log=settings.gateway_access_log or settings.log_dir / "gateway-access.log",
        )
    )
    return bootstrap


def _endpoints(hosts: list[str], port: int) -> str:
    return json.dumps(
        [{"endpoint": {"address": {"socket_address": {"address": host, "port_value": port}}}} for host in hosts]
    )


def write_secrets(settings: Settings, folder: Path) -> Path:
    """The web console's client secret and the HMAC secret of Envoy's session cookies, as SDS files readable by
    their owner only; never in the bootstrap itself, nor in a log."""
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    folder.chmod(0o700)
    for name, value in (
        ("console-client-secret", settings.console_client_secret),
        ("console-hmac-secret", settings.console_hmac_secret),
    ):
        path = folder / f"{name}.yaml"
        path.touch(mode=0o600)
        path.chmod(0o600)
        resource = {
            "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret",
            "name": name,
            "generic_secret": {"secret": {"inline_string": value}},
        }
        path.write_text(json.dumps({"resources": [resource]}))
    return folder
