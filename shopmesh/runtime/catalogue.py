"""The mesh catalogue: each gRPC service of the back office described once. Everything else is derived from it —
the programs `shopmesh up` starts and their order, the services the control plane sends Envoy, the gateway's routes
and transcoded services, the permission table, the port settings — or, where a file must stay literal
(docker-compose.yml), checked against it by a test.

Adding a service: one `ServicePart` here, plus its package `services/<name>/` (its servicer and `__main__`) and its
`protos/shopmesh/<name>/v1/*.proto`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

#: The realm roles of shared/CONTRACT.md.
USER, CUSTOMER_MANAGER, PRODUCT_MANAGER, BILLING_MANAGER, ADMIN = (
    "USER",
    "CUSTOMER_MANAGER",
    "PRODUCT_MANAGER",
    "BILLING_MANAGER",
    "ADMIN",
)
ROLES = (USER, CUSTOMER_MANAGER, PRODUCT_MANAGER, BILLING_MANAGER, ADMIN)
#: Held by the shopmesh-services service account only (keycloak/shopmesh-realm.json): the internal RPCs are for the
#: services themselves, never for a person, whatever their roles.
MESH_SERVICE = "MESH_SERVICE"
#: "USER, or any role below"
READERS = frozenset(ROLES)


@dataclass(frozen=True)
class ServicePart:
    """One gRPC service of the mesh. Its health check is gRPC health (grpc.health.v1) of `grpc_service`, run by
    Consul on every instance."""

    name: str  #: customer: the package services/<name>, the settings and the program names
    grpc_service: str  #: shopmesh.customer.v1.CustomerService
    default_port: int  #: the first instance's port (shared/CONTRACT.md); SHOPMESH_SERVICE_PORTS moves it
    #: RPC -> the realm roles of which a caller needs one; an RPC not listed is refused to everyone.
    permissions: Mapping[str, frozenset[str]]
    depends_on: tuple[str, ...] = ()  #: the parts it calls, started and healthy before it
    #: RPCs for the services themselves (MESH_SERVICE): never routed by the gateway.
    internal_rpcs: tuple[str, ...] = ()
    routed: bool = True  #: whether the gateway routes and transcodes its REST API
    #: RPC name prefixes that only read: the gateway retries them on another instance.
    read_prefixes: tuple[str, ...] = field(default=("List", "Get"))
    #: Server-streaming RPCs: the gateway gives them no timeout and no retry, and sends them to a browser as
    #: server-sent events.
    stream_rpcs: tuple[str, ...] = ()

    @property
    def consul_name(self) -> str:
        return f"{self.name}-service"

    @property
    def module(self) -> str:
        return f"services.{self.name}"

    @property
    def method_prefix(self) -> str:
        """The gRPC path of its methods: /shopmesh.customer.v1.CustomerService/"""
        return f"/{self.grpc_service}/"

    def method(self, rpc: str) -> str:
        return f"{self.method_prefix}{rpc}"


def _rpcs(*names: str, roles: frozenset[str]) -> dict[str, frozenset[str]]:
    return dict.fromkeys(names, roles)


SERVICES: tuple[ServicePart, ...] = (
    ServicePart(
        "customer",
        "shopmesh.customer.v1.CustomerService",
        50051,
        permissions={
            **_rpcs("ListCustomers", "GetCustomer", roles=READERS),
            **_rpcs("CreateCustomer", "UpdateCustomer", "DeleteCustomer", roles=frozenset({CUSTOMER_MANAGER, ADMIN})),
        },
    ),
    ServicePart(
        "inventory",
        "shopmesh.inventory.v1.InventoryService",
        50052,
        permissions={
            **_rpcs("ListProducts", "GetProduct", roles=READERS),
            **_rpcs("CreateProduct", "UpdateProduct", "DeleteProduct", roles=frozenset({PRODUCT_MANAGER, ADMIN})),
            # Taking stock is part of making a bill, which billing does with its service account's token.
            **_rpcs("ReserveStock", "ReleaseStock", roles=frozenset({MESH_SERVICE})),
        },
        internal_rpcs=("ReserveStock", "ReleaseStock"),
    ),
    ServicePart(
        "billing",
        "shopmesh.billing.v1.BillingService",
        50053,
        permissions=_rpcs("ListBills", "GetBill", "CreateBill", roles=frozenset({BILLING_MANAGER, ADMIN})),
        depends_on=("customer", "inventory"),
    ),
    # The totals are the shop's takings: for those who see the bills.
    ServicePart(
        "analytics",
        "shopmesh.analytics.v1.AnalyticsService",
        50054,
        permissions=_rpcs(
            "ListWindowTotals",
            "WatchWindowTotals",
            "ListCustomerTotals",
            "WatchCustomerTotals",
            roles=frozenset({BILLING_MANAGER, ADMIN}),
        ),
        stream_rpcs=("WatchWindowTotals", "WatchCustomerTotals"),
    ),
)


def part(name: str) -> ServicePart:
    """The service named name, or ValueError naming the ones there are."""
    for service in SERVICES:
        if service.name == name:
            return service
    raise ValueError(f"unknown service {name!r}: one of {', '.join(s.name for s in SERVICES)}")


def routed() -> tuple[ServicePart, ...]:
    return tuple(service for service in SERVICES if service.routed)


def service_id(consul_name: str, address: str, distinct: str | int) -> str:
    """The id of one registration in Consul: its service's name, the address it runs at, and what tells it from the
    others there (an instance's port, a dataflow's input topic)."""
    return f"{consul_name}-{address}-{distinct}"


def names() -> tuple[str, ...]:
    return tuple(service.name for service in SERVICES)
