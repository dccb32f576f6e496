"""Keycloak end to end: the contract's permission table at Envoy and in the services, the token flows, and
every kind of bad token, against the real Keycloak."""

from __future__ import annotations

import base64
import json
import time
import uuid

import grpc
import httpx
import pytest

from keycloak import KeycloakOpenID
from shopmesh.inventory.v1 import inventory_service_pb2 as inventory
from shopmesh.inventory.v1 import inventory_service_pb2_grpc as inventory_grpc
from shopmesh.runtime.auth import LEEWAY
from shopmesh.tooling import realm
from tests.auth import SERVICE_ACCOUNT, Bearer
from tests.conftest import shopmesh

USERS = ("user1", "customer-manager", "product-manager", "billing-manager", "mesh-admin")

# The contract's table, written out here on its own so that the code's table is checked against it.
EVERYONE = set(USERS)
CONTRACT = {
    "list customers": EVERYONE,
    "get customer": EVERYONE,
    "create customer": {"customer-manager", "mesh-admin"},
    "update customer": {"customer-manager", "mesh-admin"},
    "delete customer": {"customer-manager", "mesh-admin"},
    "list products": EVERYONE,
    "get product": EVERYONE,
    "create product": {"product-manager", "mesh-admin"},
    "update product": {"product-manager", "mesh-admin"},
    "delete product": {"product-manager", "mesh-admin"},
    "list bills": {"billing-manager", "mesh-admin"},
    "get bill": {"billing-manager", "mesh-admin"},
    "create bill": {"billing-manager", "mesh-admin"},
}


@pytest.fixture(scope="module")
def admin_rest(mesh, tokens):
    with httpx.Client(base_url=mesh.gateway_url, timeout=15, auth=Bearer(tokens)) as client:
        yield client


@pytest.fixture(scope="module")
def world(admin_rest):
    """A customer, a well-stocked product and a bill, made by the admin, for the operations to act on."""
    customer = admin_rest.post(
        "/v1/customers", json={"name": "Matrix", "email": f"{uuid.uuid4().hex[:10]}@example.com"}
    )
    product = admin_rest.post("/v1/products", json={"name": "Matrix item", "price": "1.00", "quantity": 1000})
    customer, product = customer.json(), product.json()
    bill = admin_rest.post(
        "/v1/bills", json={"customerId": customer["id"], "items": [{"productId": product["id"], "quantity": 1}]}
    ).json()
    return {"customer": customer, "product": product, "bill": bill}


def _operation(name: str, world: dict, admin_rest: httpx.Client) -> tuple[str, str, dict | None]:
    """Method, path and body of an operation; deletes get a fresh resource of their own."""
    customer, product = world["customer"]["id"], world["product"]["id"]
    if name == "delete customer":
        customer = admin_rest.post(
            "/v1/customers", json={"name": "Doomed", "email": f"{uuid.uuid4().hex[:10]}@example.com"}
        ).json()["id"]
    if name == "delete product":
        product = admin_rest.post("/v1/products", json={"name": "Doomed", "price": "1.00"}).json()["id"]
    return {
        "list customers": ("GET", "/v1/customers", None),
        "get customer": ("GET", f"/v1/customers/{customer}", None),
        "create customer": ("POST", "/v1/customers", {"name": "New", "email": f"{uuid.uuid4().hex[:10]}@example.com"}),
        "update customer": ("PATCH", f"/v1/customers/{customer}", {"name": "Matrix"}),
        "delete customer": ("DELETE", f"/v1/customers/{customer}", None),
        "list products": ("GET", "/v1/products", None),
        "get product": ("GET", f"/v1/products/{product}", None),
        "create product": ("POST", "/v1/products", {"name": "New", "price": "2.00", "quantity": 1}),
        "update product": ("PATCH", f"/v1/products/{product}", {"name": "Matrix item"}),
        "delete product": ("DELETE", f"/v1/products/{product}", None),
        "list bills": ("GET", "/v1/bills", None),
        "get bill": ("GET", f"/v1/bills/{world['bill']['id']}", None),
        "create bill": (
            "POST",
            "/v1/bills",
            {"customerId": customer, "items": [{"productId": product, "quantity": 1}]},
        ),
    }[name]


@pytest.mark.parametrize("operation", sorted(CONTRACT))
@pytest.mark.parametrize("user", USERS)
def test_the_permission_table_through_envoy(mesh, tokens, world, admin_rest, user, operation):
    method, path, body = _operation(operation, world, admin_rest)
    answer = httpx.request(method, f"{mesh.gateway_url}{path}", json=body, headers=tokens.header(user), timeout=15)
    if user in CONTRACT[operation]:
        assert answer.status_code == 200, answer.text
    else:
        assert answer.status_code == 403, answer.text
        assert answer.json()["code"] == 7


@pytest.mark.parametrize("operation", sorted(CONTRACT))
def test_no_token_is_401_with_www_authenticate_for_every_operation(mesh, world, admin_rest, operation):
    method, path, body = _operation(operation, world, admin_rest)
    answer = httpx.request(method, f"{mesh.gateway_url}{path}", json=body, timeout=15)
    assert answer.status_code == 401
    assert answer.headers["www-authenticate"].startswith("Bearer")
    assert answer.json() == {"code": 16, "message": "Jwt is missing"}


def _grpcurl(mesh, token: str | None, port: int, method: str, body: dict) -> tuple[int, str]:
    header = ["-H", f"authorization: Bearer {token}"] if token else []
    done = shopmesh("grpcurl", "-plaintext", *header, "-d", json.dumps(body), f"{mesh.host}:{port}", method)
    return done.returncode, done.stdout + done.stderr


@pytest.mark.parametrize(
    "user, service, method, body, expected",
    [
        ("user1", "customer", "shopmesh.customer.v1.CustomerService/ListCustomers", {}, "OK"),
        (
            "user1",
            "customer",
            "shopmesh.customer.v1.CustomerService/CreateCustomer",
            {"customer": {"name": "x", "email": "x@example.com"}},
            "PermissionDenied",
        ),
        (
            "customer-manager",
            "customer",
            "shopmesh.customer.v1.CustomerService/CreateCustomer",
            {"customer": {"name": "Direct", "email": "EMAIL"}},
            "OK",
        ),
        ("product-manager", "billing", "shopmesh.billing.v1.BillingService/ListBills", {}, "PermissionDenied"),
        ("billing-manager", "billing", "shopmesh.billing.v1.BillingService/ListBills", {}, "OK"),
        (
            "customer-manager",
            "inventory",
            "shopmesh.inventory.v1.InventoryService/ReserveStock",
            {"reservation_id": "r", "lines": [{"product_id": "p", "quantity": 1}]},
            "PermissionDenied",
        ),
        # The internal RPCs are the services' own: a person with every business role may not call them.
        (
            "billing-manager",
            "inventory",
            "shopmesh.inventory.v1.InventoryService/ReleaseStock",
            {"reservation_id": "r"},
            "PermissionDenied",
        ),
        (
            "billing-manager",
            "inventory",
            "shopmesh.inventory.v1.InventoryService/ReserveStock",
            {"reservation_id": "r", "lines": [{"product_id": "p", "quantity": 1}]},
            "PermissionDenied",
        ),
        (
            "mesh-admin",
            "inventory",
            "shopmesh.inventory.v1.InventoryService/ReleaseStock",
            {"reservation_id": "r"},
            "PermissionDenied",
        ),
        (
            SERVICE_ACCOUNT,
            "inventory",
            "shopmesh.inventory.v1.InventoryService/ReleaseStock",
            {"reservation_id": "RANDOM"},
            "OK",
        ),
        (None, "inventory", "shopmesh.inventory.v1.InventoryService/ListProducts", {}, "Unauthenticated"),
    ],
)
def test_a_sample_of_the_table_straight_to_the_services_with_grpcurl(
    mesh, tokens, user, service, method, body, expected
):
    if body.get("reservation_id") == "RANDOM":
        body = {"reservation_id": uuid.uuid4().hex}
    if "customer" in body and body["customer"]["email"] == "EMAIL":
        body = {"customer": {"name": "Direct", "email": f"{uuid.uuid4().hex[:10]}@example.com"}}
    code, output = _grpcurl(mesh, tokens(user) if user else None, mesh.service_ports[service], method, body)
    if expected == "OK":
        assert code == 0, output
    else:
        assert code != 0 and f"Code: {expected}" in output, output


def test_health_and_reflection_stay_open_without_a_token(mesh):
    address = f"{mesh.host}:{mesh.service_ports['inventory']}"
    assert "SERVING" in shopmesh("grpcurl", "-plaintext", address, "grpc.health.v1.Health/Check").stdout
    assert "shopmesh.inventory.v1.InventoryService" in shopmesh("grpcurl", "-plaintext", address, "list").stdout


def test_password_grant_then_refresh_grant_gives_a_working_token(mesh):
    first = shopmesh("token", "--user", "customer-manager", "--json")
    assert first.returncode == 0, first.stderr
    refreshed = shopmesh("token", "--refresh", json.loads(first.stdout)["refresh_token"])
    assert refreshed.returncode == 0, refreshed.stderr
    token = refreshed.stdout.strip()
    assert token != json.loads(first.stdout)["access_token"]
    answer = httpx.post(
        f"{mesh.gateway_url}/v1/customers",
        headers={"authorization": f"Bearer {token}"},
        json={"name": "Refreshed", "email": f"{uuid.uuid4().hex[:10]}@example.com"},
    )
    assert answer.status_code == 200, answer.text


def test_token_claims_carry_the_contract_issuer_audience_and_roles(mesh):
    shown = shopmesh("token", "--user", "billing-manager", "--claims")
    claims = json.loads(shown.stdout)
    assert claims["iss"] == f"http://localhost:{mesh.keycloak_port}/realms/shopmesh"
    assert "shopmesh-gateway" in ([claims["aud"]] if isinstance(claims["aud"], str) else claims["aud"])
    assert {"USER", "BILLING_MANAGER"} <= set(claims["realm_access"]["roles"])
    assert claims["exp"] - claims["iat"] == 300


def test_a_wrong_password_is_refused_with_a_clear_error(mesh):
    refused = shopmesh("token", "--user", "user1", "--password", "not-the-password")
    assert refused.returncode == 1 and "Keycloak refused the grant: 401" in refused.stderr


def _rejected_everywhere(mesh, token: str) -> None:
    answer = httpx.get(f"{mesh.gateway_url}/v1/products", headers={"authorization": f"Bearer {token}"})
    assert answer.status_code == 401, answer.text
    assert answer.headers["www-authenticate"].startswith("Bearer") and answer.json()["code"] == 16
    code, output = _grpcurl(
        mesh, token, mesh.service_ports["inventory"], "shopmesh.inventory.v1.InventoryService/ListProducts", {}
    )
    assert code != 0 and "Code: Unauthenticated" in output, output


def test_a_token_with_one_byte_of_its_signature_changed_is_rejected(mesh, tokens):
    header, payload, signature = tokens("mesh-admin").split(".")
    raw = bytearray(base64.urlsafe_b64decode(signature + "=" * (-len(signature) % 4)))
    raw[10] ^= 0x01
    _rejected_everywhere(mesh, ".".join([header, payload, base64.urlsafe_b64encode(raw).decode().rstrip("=")]))


def test_a_token_of_the_master_realm_is_rejected(mesh):
    master = KeycloakOpenID(server_url=f"{mesh.keycloak_url}/", realm_name="master", client_id="admin-cli")
    _rejected_everywhere(mesh, master.token(mesh.keycloak_admin_user, mesh.keycloak_admin_password)["access_token"])


def test_an_expired_token_is_rejected(mesh):
    keycloak = realm.admin(mesh)
    client_id = f"shopmesh-test-short-{uuid.uuid4().hex[:6]}"
    internal = keycloak.create_client(
        {
            "clientId": client_id,
            "publicClient": True,
            "directAccessGrantsEnabled": True,
            "standardFlowEnabled": False,
            "attributes": {"access.token.lifespan": "2"},
            "protocolMappers": [
                {
                    "name": "audience",
                    "protocol": "openid-connect",
                    "protocolMapper": "oidc-audience-mapper",
                    "config": {"included.client.audience": "shopmesh-gateway", "access.token.claim": "true"},
                }
            ],
        }
    )
    try:
        short = KeycloakOpenID(server_url=f"{mesh.keycloak_url}/", realm_name="shopmesh", client_id=client_id)
        token = short.token("mesh-admin", realm.password("mesh-admin"))["access_token"]
        fresh = httpx.get(f"{mesh.gateway_url}/v1/products", headers={"authorization": f"Bearer {token}"})
        assert fresh.status_code == 200, "the short-lived token should work before it expires"
        time.sleep(2 + 5 + 1)  # its lifespan, the allowed clock skew, and a second
        _rejected_everywhere(mesh, token)
    finally:
        keycloak.delete_client(internal)


def test_a_new_realm_key_is_picked_up_by_envoy_and_the_services_without_restart(mesh, tokens):
    keycloak = realm.admin(mesh)
    realm_id = keycloak.get_realm("shopmesh")["id"]
    name = f"rotated-{uuid.uuid4().hex[:6]}"
    keycloak.create_component(
        {
            "name": name,
            "providerId": "rsa-generated",
            "providerType": "org.keycloak.keys.KeyProvider",
            "parentId": realm_id,
            "config": {
                "priority": ["1000"],
                "keySize": ["2048"],
                "active": ["true"],
                "enabled": ["true"],
                "algorithm": ["RS256"],
            },
        }
    )
    component = next(c for c in keycloak.get_components({"name": name}))
    try:
        new_kid = next(
            key["kid"]
            for key in keycloak.get_keys()["keys"]
            if key.get("providerId") == component["id"] and key.get("algorithm") == "RS256"
        )
        token = realm.token(mesh, "user1")["access_token"]
        header = token.split(".")[0]
        assert json.loads(base64.urlsafe_b64decode(header + "=" * (-len(header) % 4)))["kid"] == new_kid
        code, output = _grpcurl(
            mesh, token, mesh.service_ports["customer"], "shopmesh.customer.v1.CustomerService/ListCustomers", {}
        )
        assert code == 0, output
        deadline = time.monotonic() + 45  # Envoy refetches the realm's keys every 30 s
        while (
            answer := httpx.get(f"{mesh.gateway_url}/v1/customers", headers={"authorization": f"Bearer {token}"})
        ).status_code != 200:
            assert answer.status_code == 401 and time.monotonic() < deadline, answer.text
            time.sleep(1)
    finally:
        keycloak.delete_component(component["id"])
        tokens.forget()  # tokens signed with the removed key are no longer valid


# --- the realm as code ----------------------------------------------------------------------------------------


def test_the_running_realm_is_the_contracts(mesh):
    keycloak = realm.admin(mesh)
    settings = keycloak.get_realm("shopmesh")
    assert (settings["accessTokenLifespan"], settings["ssoSessionIdleTimeout"], settings["ssoSessionMaxLifespan"]) == (
        300,
        1800,
        36000,
    )
    assert settings["bruteForceProtected"] is True
    gateway = keycloak.get_client(keycloak.get_client_id("shopmesh-gateway"))
    assert gateway["publicClient"] and gateway["directAccessGrantsEnabled"]
    services = keycloak.get_client(keycloak.get_client_id("shopmesh-services"))
    assert not services["publicClient"] and services["serviceAccountsEnabled"]
    account = keycloak.get_client_service_account_user(services["id"])
    account_roles = {r["name"] for r in keycloak.get_realm_roles_of_user(account["id"])}
    assert account_roles >= {"USER", "MESH_SERVICE"} and "BILLING_MANAGER" not in account_roles
    assert {r["name"] for r in keycloak.get_realm_roles()} >= {
        "USER",
        "CUSTOMER_MANAGER",
        "PRODUCT_MANAGER",
        "BILLING_MANAGER",
        "ADMIN",
        "MESH_SERVICE",
    }
    holders = {user["username"] for user in keycloak.get_realm_role_members("MESH_SERVICE")}
    assert holders == {account["username"]}, "only the services' own account may hold MESH_SERVICE"


def test_applying_the_realm_again_changes_nothing(mesh):
    assert realm.apply(mesh) == []


def test_a_change_to_the_realm_file_reaches_the_running_realm_without_wiping_it(mesh):
    keycloak = realm.admin(mesh)
    marker = f"AUDITOR_{uuid.uuid4().hex[:6].upper()}"
    spec = realm.spec()
    spec["roles"]["realm"].append({"name": marker})
    users_before = {user["username"] for user in keycloak.get_users()}
    try:
        assert realm.apply(mesh, spec) == [f"role {marker}"]
        assert marker in {role["name"] for role in keycloak.get_realm_roles()}
        assert {user["username"] for user in keycloak.get_users()} == users_before
    finally:
        keycloak.delete_realm_role(marker)


def test_a_users_password_comes_from_the_environment(mesh, monkeypatch):
    monkeypatch.setenv("SHOPMESH_PASSWORD_PRODUCT_MANAGER", "a-better-secret")
    try:
        realm.apply(mesh)
        assert realm.token(mesh, "product-manager", "a-better-secret")["access_token"]
    finally:
        monkeypatch.delenv("SHOPMESH_PASSWORD_PRODUCT_MANAGER")
        realm.apply(mesh)
    assert realm.token(mesh, "product-manager", "product-manager-pass")["access_token"]


def test_a_token_of_another_client_without_our_audience_is_401_like_any_invalid_token(mesh):
    keycloak = realm.admin(mesh)
    client_id = f"shopmesh-test-foreign-{uuid.uuid4().hex[:6]}"
    internal = keycloak.create_client(
        {"clientId": client_id, "publicClient": True, "directAccessGrantsEnabled": True, "standardFlowEnabled": False}
    )
    try:
        foreign = KeycloakOpenID(server_url=f"{mesh.keycloak_url}/", realm_name="shopmesh", client_id=client_id)
        token = foreign.token("mesh-admin", realm.password("mesh-admin"))["access_token"]
        _rejected_everywhere(mesh, token)
    finally:
        keycloak.delete_client(internal)


# --- secrets and state on disk ----------------------------------------------------------------------------------


def test_nothing_under_var_is_readable_by_group_or_others(mesh):
    """Keycloak's database holds the realm's private signing keys: readable by others, it let anyone on the machine
    mint an ADMIN token. Every file and folder of the running mesh's var/ is its owner's only."""
    exposed = []
    for path in [mesh.var_dir, *mesh.var_dir.rglob("*")]:
        try:
            if not path.is_symlink() and path.stat().st_mode & 0o077:
                exposed.append(f"{path.stat().st_mode & 0o777:o} {path}")
        except FileNotFoundError:
            pass  # a file that went away while the walk ran (a log rotated, a Kafka segment deleted)
    assert exposed == []
    assert any((mesh.var_dir / "keycloak" / "data").rglob("*.db")), "Keycloak's database is under var/"


def test_the_keycloak_admin_password_is_in_no_configuration_file(mesh):
    written = [
        path
        for path in (mesh.var_dir / "run").rglob("*")
        if path.is_file() and mesh.keycloak_admin_password.encode() in path.read_bytes()
    ]
    assert written == []


def test_a_token_the_gateway_and_a_service_have_cached_is_refused_once_it_expires(mesh):
    """Envoy's JWT cache and the services' verified tokens serve a token until it expires, and no longer."""
    keycloak = realm.admin(mesh)
    client_id = keycloak.get_client_id(realm.GATEWAY_CLIENT)
    keycloak.update_client(client_id, {"attributes": {"access.token.lifespan": "8"}})
    try:
        token = realm.token(mesh, "mesh-admin")["access_token"]
    finally:
        keycloak.update_client(client_id, {"attributes": {"access.token.lifespan": ""}})  # the realm's default
    expires = json.loads(base64.urlsafe_b64decode(token.split(".")[1] + "==="))["exp"]
    headers = {"authorization": f"Bearer {token}"}
    channel = grpc.insecure_channel(f"{mesh.host}:{mesh.service_ports['inventory']}")
    products = inventory_grpc.InventoryServiceStub(channel)

    def through_gateway() -> int:
        return httpx.get(f"{mesh.gateway_url}/v1/products", headers=headers, timeout=10).status_code

    def straight() -> grpc.StatusCode:
        try:
            products.ListProducts(inventory.ListProductsRequest(), metadata=tuple(headers.items()), timeout=10)
            return grpc.StatusCode.OK
        except grpc.RpcError as error:
            return error.code()

    try:
        assert (through_gateway(), through_gateway(), straight(), straight()) == (
            200,
            200,
            grpc.StatusCode.OK,
            grpc.StatusCode.OK,
        )
        # Past its expiry and the clock leeway both allow (5 s), the same token is refused by both.
        time.sleep(max(0.0, expires + LEEWAY + 1 - time.time()))
        assert (through_gateway(), straight()) == (401, grpc.StatusCode.UNAUTHENTICATED)
    finally:
        channel.close()
    assert realm.token(mesh, "mesh-admin")["expires_in"] > 8, "the gateway client's token lifespan was not restored"
