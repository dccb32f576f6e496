"""Who may call what: the one permission table of shared/CONTRACT.md, gathered from the mesh catalogue (each
service lists its RPCs' roles there). Envoy's RBAC policies are generated from it (rbac_policies, rendered into
Envoy's bootstrap) and every service checks it in its interceptor (shopmesh/runtime/auth.py)."""

from __future__ import annotations

from collections.abc import Iterable

from shopmesh.runtime.catalogue import (
    ADMIN,
    BILLING_MANAGER,
    CUSTOMER_MANAGER,
    MESH_SERVICE,
    PRODUCT_MANAGER,
    ROLES,
    SERVICES,
    USER,
)

__all__ = [
    "ADMIN",
    "BILLING_MANAGER",
    "CUSTOMER_MANAGER",
    "INTERNAL_METHODS",
    "MESH_SERVICE",
    "OPEN_PREFIXES",
    "PERMISSIONS",
    "PRODUCT_MANAGER",
    "ROLES",
    "USER",
    "allowed",
    "is_open",
    "rbac_policies",
]

#: gRPC method path -> the realm roles of which a caller needs one, gathered from the catalogue's services.
PERMISSIONS: dict[str, frozenset[str]] = {
    service.method(rpc): roles for service in SERVICES for rpc, roles in service.permissions.items()
}

#: The services' own RPCs: not routed by the gateway, and callable only with MESH_SERVICE.
INTERNAL_METHODS = tuple(service.method(rpc) for service in SERVICES for rpc in service.internal_rpcs)

#: Open to anyone, so that health checks work and grpcurl can list and describe without a token.
OPEN_PREFIXES = ("/grpc.health.v1.Health/", "/grpc.reflection.")


def is_open(method: str) -> bool:
    return method.startswith(OPEN_PREFIXES)


def allowed(method: str, roles: Iterable[str]) -> bool:
    """Whether a caller holding roles may call method; unknown methods are refused."""
    return bool(PERMISSIONS.get(method, frozenset()) & set(roles))


def rbac_policies() -> dict:
    """Envoy RBAC policies, one per role: the gRPC paths the role may call, for a token whose
    realm_access.roles (as jwt_authn puts the payload in the request's metadata) holds the role."""
    policies = {
        role: {
            "permissions": [
                {"url_path": {"path": {"exact": method}}}
                for method, roles in sorted(PERMISSIONS.items())
                if role in roles
            ],
            "principals": [
                {
                    "metadata": {
                        "filter": "envoy.filters.http.jwt_authn",
                        "path": [{"key": "payload"}, {"key": "realm_access"}, {"key": "roles"}],
                        "value": {"list_match": {"one_of": {"string_match": {"exact": role}}}},
                    }
                }
            ],
        }
        for role in (*ROLES, MESH_SERVICE)
    }
    # A path that names no shopmesh method (an unknown REST path), or an internal RPC, is not for RBAC to judge:
    # the gateway routes neither, and answers 404 whoever asks.
    policies["unrouted-paths"] = {
        "permissions": [
            {"not_rule": {"url_path": {"path": {"prefix": "/shopmesh."}}}},
            *({"url_path": {"path": {"exact": method}}} for method in INTERNAL_METHODS),
        ],
        "principals": [{"any": True}],
    }
    return policies
