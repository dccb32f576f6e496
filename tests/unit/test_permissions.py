"""The permission table, the RBAC policies generated from it, and the interceptor's decisions."""

from __future__ import annotations

import asyncio

import grpc
import jwt
import pytest

from shopmesh.runtime import permissions
from shopmesh.runtime.auth import Authorization

CUSTOMERS = "/shopmesh.customer.v1.CustomerService/"
BILLS = "/shopmesh.billing.v1.BillingService/"


@pytest.mark.parametrize(
    "method, roles, expected",
    [
        (f"{CUSTOMERS}ListCustomers", ["USER"], True),
        (f"{CUSTOMERS}GetCustomer", ["PRODUCT_MANAGER"], True),
        (f"{CUSTOMERS}CreateCustomer", ["USER"], False),
        (f"{CUSTOMERS}CreateCustomer", ["USER", "CUSTOMER_MANAGER"], True),
        (f"{CUSTOMERS}DeleteCustomer", ["ADMIN"], True),
        ("/shopmesh.inventory.v1.InventoryService/UpdateProduct", ["CUSTOMER_MANAGER"], False),
        (f"{BILLS}ListBills", ["USER", "PRODUCT_MANAGER"], False),
        (f"{BILLS}CreateBill", ["BILLING_MANAGER"], True),
        ("/shopmesh.inventory.v1.InventoryService/ReserveStock", ["USER"], False),
        ("/shopmesh.unknown.v1.Nothing/Do", ["ADMIN"], False),
        (f"{CUSTOMERS}ListCustomers", [], False),
    ],
)
def test_the_table(method, roles, expected):
    assert permissions.allowed(method, roles) is expected


def test_every_public_rpc_of_the_protos_is_in_the_table():
    from shopmesh.analytics.v1 import analytics_service_pb2
    from shopmesh.billing.v1 import billing_service_pb2
    from shopmesh.customer.v1 import customer_service_pb2
    from shopmesh.inventory.v1 import inventory_service_pb2

    methods = {
        f"/{service.full_name}/{method.name}"
        for module in (customer_service_pb2, inventory_service_pb2, billing_service_pb2, analytics_service_pb2)
        for service in module.DESCRIPTOR.services_by_name.values()
        for method in service.methods
    }
    assert methods == set(permissions.PERMISSIONS)


def test_rbac_policies_give_each_role_exactly_its_methods():
    policies = permissions.rbac_policies()
    for role in permissions.ROLES:
        paths = {p["url_path"]["path"]["exact"] for p in policies[role]["permissions"]}
        assert paths == {m for m, roles in permissions.PERMISSIONS.items() if role in roles}
        [principal] = policies[role]["principals"]
        assert principal["metadata"]["value"]["list_match"]["one_of"]["string_match"]["exact"] == role
    assert policies["unrouted-paths"]["permissions"][0]["not_rule"]["url_path"]["path"]["prefix"] == "/shopmesh."


class Verifier:
    """Stands in for the JWKS check: a token is the comma-separated list of its roles, 'bad' is invalid."""

    def claims(self, token: str) -> dict:
        if token == "bad":
            raise jwt.InvalidSignatureError("Signature verification failed")
        return {"preferred_username": "tester", "realm_access": {"roles": token.split(",")}}


class Details:
    def __init__(self, method: str, token: str | None) -> None:
        self.method = method
        self.invocation_metadata = (("authorization", f"Bearer {token}"),) if token else ()


class Aborted(Exception):
    pass


class Context:
    async def abort(self, code, message):
        raise Aborted(code, message)


def _decide(method: str, token: str | None):
    async def passed(details):
        return "the service's own handler"

    handler = asyncio.run(Authorization(Verifier()).intercept_service(passed, Details(method, token)))
    if handler == "the service's own handler":
        return "passed"
    with pytest.raises(Aborted) as aborted:
        asyncio.run(handler.unary_unary(None, Context()))
    return aborted.value.args


def test_the_interceptor_lets_a_permitted_role_through():
    assert _decide(f"{CUSTOMERS}CreateCustomer", "USER,CUSTOMER_MANAGER") == "passed"


def test_the_interceptor_refuses_a_missing_role():
    code, message = _decide(f"{CUSTOMERS}CreateCustomer", "USER")
    assert code == grpc.StatusCode.PERMISSION_DENIED and "tester" in message and "CreateCustomer" in message


@pytest.mark.parametrize("token, fragment", [(None, "token is required"), ("bad", "invalid token")])
def test_the_interceptor_refuses_no_token_or_a_bad_one(token, fragment):
    code, message = _decide(f"{CUSTOMERS}ListCustomers", token)
    assert code == grpc.StatusCode.UNAUTHENTICATED and fragment in message


@pytest.mark.parametrize(
    "method", ["/grpc.health.v1.Health/Check", "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo"]
)
def test_health_and_reflection_need_no_token(method):
    assert _decide(method, None) == "passed"
