"""The realm of keycloak/shopmesh-realm.json applied to a running Keycloak with python-keycloak, idempotently:
what the file adds or changes reaches an existing realm without wiping it, and the users' passwords can come
from the environment (SHOPMESH_PASSWORD_<USER>, e.g. SHOPMESH_PASSWORD_MESH_ADMIN)."""

from __future__ import annotations

import json
import os
from pathlib import Path

from keycloak import KeycloakAdmin, KeycloakOpenID
from shopmesh.runtime.settings import PROJECT_ROOT, Settings

REALM_FILE = PROJECT_ROOT / "keycloak" / "shopmesh-realm.json"
REALM = "shopmesh"
GATEWAY_CLIENT = "shopmesh-gateway"
_REALM_SETTINGS = (
    "accessTokenLifespan",
    "ssoSessionIdleTimeout",
    "ssoSessionMaxLifespan",
    "bruteForceProtected",
    "enabled",
    "displayName",
)


def spec(path: Path = REALM_FILE) -> dict:
    return json.loads(path.read_text())


def password(username: str, realm_spec: dict | None = None) -> str:
    """The user's password: SHOPMESH_PASSWORD_<USER> if set, else the development default of the realm file."""
    override = os.environ.get(f"SHOPMESH_PASSWORD_{username.upper().replace('-', '_')}")
    if override:
        return override
    for user in (realm_spec or spec())["users"]:
        if user["username"] == username:
            return user["credentials"][0]["value"]
    raise KeyError(f"no user {username!r} in {REALM_FILE.name}")


def admin(settings: Settings) -> KeycloakAdmin:
    return KeycloakAdmin(
        server_url=f"{settings.keycloak_url}/",
        username=settings.keycloak_admin_user,
        password=settings.keycloak_admin_password,
        realm_name=REALM,
        user_realm_name="master",
    )


CONSOLE_CLIENT = "shopmesh-console"


def _for_this_mesh(client: dict, settings: Settings) -> dict:
    """The web console's client as this mesh needs it: its secret from the settings, and its redirect URIs on this
    gateway's port (the file names the contract's, 8080)."""
    if client["clientId"] != CONSOLE_CLIENT:
        return client
    roots = [f"http://{host}:{settings.gateway_port}/" for host in ("localhost", "127.0.0.1")]
    return {
        **client,
        "secret": settings.console_client_secret,
        "redirectUris": [f"{root}callback" for root in roots],
        # Where Keycloak may send the browser back to after signing out (/signout): the console.
        "attributes": {**client.get("attributes", {}), "post.logout.redirect.uris": "##".join(roots)},
    }


def apply(settings: Settings, realm_spec: dict | None = None) -> list[str]:
    """Bring the running realm in line with the file; return what was changed."""
    realm_spec = realm_spec or spec()
    keycloak = admin(settings)
    changes = []
    current = keycloak.get_realm(REALM)
    wanted = {key: realm_spec[key] for key in _REALM_SETTINGS if key in realm_spec}
    if any(current.get(key) != value for key, value in wanted.items()):
        keycloak.update_realm(REALM, wanted)
        changes.append("realm settings")

    existing_roles = {role["name"] for role in keycloak.get_realm_roles()}
    for role in realm_spec["roles"]["realm"]:
        if role["name"] not in existing_roles:
            keycloak.create_realm_role(role)
            changes.append(f"role {role['name']}")

    for client in realm_spec["clients"]:
        client = _for_this_mesh(client, settings)
        client_id = keycloak.get_client_id(client["clientId"])
        if client_id is None:
            keycloak.create_client(client)
            changes.append(f"client {client['clientId']}")
            continue
        keycloak.update_client(client_id, {k: v for k, v in client.items() if k != "protocolMappers"})
        present = {mapper["name"] for mapper in keycloak.get_mappers_from_client(client_id)}
        for mapper in client.get("protocolMappers", []):
            if mapper["name"] not in present:
                keycloak.add_mapper_to_client(client_id, mapper)
                changes.append(f"mapper {mapper['name']}")

    roles = {role["name"]: role for role in keycloak.get_realm_roles()}
    file_roles = {role["name"] for role in realm_spec["roles"]["realm"]}
    for user in realm_spec["users"]:
        if "serviceAccountClientId" in user:
            client_id = keycloak.get_client_id(user["serviceAccountClientId"])
            if client_id is None:
                raise RuntimeError(f"the realm has no client {user['serviceAccountClientId']} for its service account")
            user_id = keycloak.get_client_service_account_user(client_id)["id"]
        else:
            user_id = keycloak.get_user_id(user["username"])
            fields = {k: v for k, v in user.items() if k not in ("credentials", "realmRoles")}
            if user_id is None:
                user_id = keycloak.create_user(fields)
                changes.append(f"user {user['username']}")
            keycloak.set_user_password(user_id, password(user["username"], realm_spec), temporary=False)
        held = {role["name"] for role in keycloak.get_realm_roles_of_user(user_id)}
        listed = set(user.get("realmRoles", []))
        missing = [roles[name] for name in listed - held]
        # Roles of the file that the file no longer gives the user are taken away (the service account held
        # BILLING_MANAGER before MESH_SERVICE existed); roles Keycloak gives by default are not the file's.
        extra = [roles[name] for name in held - listed if name in file_roles]
        if missing:
            keycloak.assign_realm_roles(user_id, missing)
        if extra:
            keycloak.delete_realm_roles_of_user(user_id, extra)
        if missing or extra:
            changes.append(f"roles of {user['username']}")
    return changes


def token(
    settings: Settings, username: str | None = None, password_: str | None = None, refresh_token: str | None = None
) -> dict:
    """A token response of the gateway client: by password grant, or by refresh-token grant."""
    client = KeycloakOpenID(server_url=f"{settings.keycloak_url}/", realm_name=REALM, client_id=GATEWAY_CLIENT)
    if refresh_token:
        return client.refresh_token(refresh_token)
    if username is None:
        raise ValueError("a token by password grant needs a username")
    return client.token(username, password_ or password(username))
