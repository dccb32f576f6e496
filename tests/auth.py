"""Tokens for the tests, from the real Keycloak, renewed before they expire; and the ways to send them."""

from __future__ import annotations

import time

import grpc
import httpx

from keycloak import KeycloakOpenID
from shopmesh.runtime.settings import Settings
from shopmesh.tooling import realm

#: Not a person: the shopmesh-services client's service account, the only holder of MESH_SERVICE.
SERVICE_ACCOUNT = "service-account-shopmesh-services"


class Tokens:
    """Access tokens by user name (password grant of the gateway client), each renewed a minute before expiry."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._cache: dict[str, tuple[str, float]] = {}

    def __call__(self, user: str = "mesh-admin") -> str:
        token, expires = self._cache.get(user, ("", 0.0))
        if time.monotonic() > expires - 60:
            answer = self._service_token() if user == SERVICE_ACCOUNT else realm.token(self.settings, user)
            token, expires = answer["access_token"], time.monotonic() + answer["expires_in"]
            self._cache[user] = (token, expires)
        return token

    def _service_token(self) -> dict:
        client = KeycloakOpenID(
            server_url=f"{self.settings.keycloak_url}/",
            realm_name=realm.REALM,
            client_id="shopmesh-services",
            client_secret_key=self.settings.services_client_secret,
        )
        return client.token(grant_type="client_credentials")

    def forget(self) -> None:
        self._cache.clear()

    def header(self, user: str = "mesh-admin") -> dict[str, str]:
        return {"authorization": f"Bearer {self(user)}"}


class Bearer(httpx.Auth):
    """httpx authentication with a fresh token of one user on every request."""

    def __init__(self, tokens: Tokens, user: str = "mesh-admin") -> None:
        self.tokens, self.user = tokens, user

    def auth_flow(self, request: httpx.Request):
        request.headers["authorization"] = f"Bearer {self.tokens(self.user)}"
        yield request


class _BearerInterceptor(grpc.UnaryUnaryClientInterceptor):
    def __init__(self, tokens: Tokens, user: str) -> None:
        self.tokens, self.user = tokens, user

    def intercept_unary_unary(self, continuation, details, request):
        metadata = [*(details.metadata or []), ("authorization", f"Bearer {self.tokens(self.user)}")]
        return continuation(details._replace(metadata=metadata), request)


def authorized_channel(address: str, tokens: Tokens, user: str = "mesh-admin") -> grpc.Channel:
    return grpc.intercept_channel(grpc.insecure_channel(address), _BearerInterceptor(tokens, user))
