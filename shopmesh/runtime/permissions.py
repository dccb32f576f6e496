"""Who may call what: the one permission table of shared/CONTRACT.md. Envoy's RBAC policies are generated from
it (rbac_policies, rendered into Envoy's bootstrap) and every service checks it in its interceptor
(shopmesh/auth.py)."""

from __future__ import annotations

from collections.abc import Iterable

USER, CUSTOMER_MANAGER, PRODUCT_MANAGER, BILLING_MANAGER, ADMIN = (
    "USER", "CUSTOMER_MANAGER", "PRODUCT_MANAGER", "BILLING_MANAGER", "ADMIN")
ROLES = (USER, CUSTOMER_MANAGER, PRODUCT_MANAGER, BILLING_MANAGER, ADMIN)
#: Held by the shopmesh-services service account only (keycloak/shopmesh-realm.json): the internal RPCs are for the
#: services themselves, never for a person, whatever their roles.
MESH_SERVICE = "MESH_SERVICE"

_READERS = frozenset(ROLES)  # "USER, or any role below"
_CUSTOMERS = "/shopmesh.customer.v1.CustomerService/"
_PRODUCTS = "/shopmesh.inventory.v1.InventoryService/"
_BILLS = "/shopmesh.billing.v1.BillingService/"

#: The services' own RPCs: not routed by the gateway, and callable only with MESH_SERVICE.
INTERNAL_METHODS = (f"{_PRODUCTS}ReserveStock", f"{_PRODUCTS}ReleaseStock")

#: gRPC method path -> the realm roles of which a caller needs one.
PERMISSIONS: dict[str, frozenset[str]] = {
    **{f"{_CUSTOMERS}{rpc}": _READERS for rpc in ("ListCustomers", "GetCustomer")},
    **{f"{_CUSTOMERS}{rpc}": frozenset({CUSTOMER_MANAGER, ADMIN})
       for rpc in ("CreateCustomer", "UpdateCustomer", "DeleteCustomer")},
    **{f"{_PRODUCTS}{rpc}": _READERS for rpc in ("ListProducts", "GetProduct")},
    **{f"{_PRODUCTS}{rpc}": frozenset({PRODUCT_MANAGER, ADMIN})
       for rpc in ("CreateProduct", "UpdateProduct", "DeleteProduct")},
    **{f"{_BILLS}{rpc}": frozenset({BILLING_MANAGER, ADMIN}) for rpc in ("ListBills", "GetBill", "CreateBill")},
    # Taking stock is part of making a bill, which billing does with its service account's token.
    **{method: frozenset({MESH_SERVICE}) for method in INTERNAL_METHODS},
}

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
            "permissions": [{"url_path": {"path": {"exact": method}}}
                            for method, roles in sorted(PERMISSIONS.items()) if role in roles],
            "principals": [{"metadata": {
                "filter": "envoy.filters.http.jwt_authn",
                "path": [{"key": "payload"}, {"key": "realm_access"}, {"key": "roles"}],
                "value": {"list_match": {"one_of": {"string_match": {"exact": role}}}},
            }}],
        }
        for role in (*ROLES, MESH_SERVICE)
    }
    # A path that names no shopmesh method (an unknown REST path), or an internal RPC, is not for RBAC to judge:
    # the gateway routes neither, and answers 404 whoever asks.
    policies["unrouted-paths"] = {
        "permissions": [{"not_rule": {"url_path": {"path": {"prefix": "/shopmesh."}}}},
                        *({"url_path": {"path": {"exact": method}}} for method in INTERNAL_METHODS)],
        "principals": [{"any": True}],
    }
    return policies
