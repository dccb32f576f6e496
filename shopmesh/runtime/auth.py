"""Keycloak tokens in the services: the server interceptor that checks them against the one permission table,
and the service account's own token for calls between services."""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from typing import Protocol

import grpc
import jwt
from grpc.aio import ServerInterceptor

from keycloak import KeycloakOpenID
from shopmesh.runtime.permissions import allowed, is_open
from shopmesh.runtime.settings import Settings

log = logging.getLogger(__name__)

#: Tokens for the gateway's users, and the services' own tokens.
AUDIENCES = ("shopmesh-gateway", "shopmesh-services")
#: Allowed clock difference with Keycloak, in seconds (Envoy uses the same).
LEEWAY = 5


class VerifiedTokens:
    """The claims of tokens already verified, so that a client's token is checked with RS256 once, not on every
    call. Bounded (the least recently used go first), and a token is served from here only until it expires:
    past its exp (and the leeway) it is verified again, which refuses it."""

    def __init__(self, size: int = 10_000, clock=time.time) -> None:
        self.size = size
        self.clock = clock
        self._claims: OrderedDict[str, dict] = OrderedDict()

    def get(self, token: str) -> dict | None:
        claims = self._claims.get(token)
        if claims is None:
            return None
        if self.clock() >= claims.get("exp", 0) + LEEWAY:
            del self._claims[token]
            return None
        self._claims.move_to_end(token)
        return claims

    def put(self, token: str, claims: dict) -> None:
        self._claims[token] = claims
        self._claims.move_to_end(token)
        while len(self._claims) > self.size:
            self._claims.popitem(last=False)


class Verifier(Protocol):
    """What checks a bearer token: its claims, or a jwt.InvalidTokenError saying why not."""

    def claims(self, token: str) -> dict: ...


class TokenVerifier:
    """Checks signature (against the realm's JWKS, cached; an unknown key id refetches it), issuer, audience
    and expiry; answers the claims."""

    def __init__(self, settings: Settings) -> None:
        self.issuer = settings.keycloak_issuer
        self.jwks = jwt.PyJWKClient(
            f"{settings.keycloak_url}/realms/shopmesh/protocol/openid-connect/certs",
            cache_keys=True,
            lifespan=300,
            timeout=5,
        )

    def claims(self, token: str) -> dict:
        key = self.jwks.get_signing_key_from_jwt(token)
        return jwt.decode(
            token,
            key.key,
            algorithms=["RS256"],
            audience=list(AUDIENCES),
            issuer=self.issuer,
            leeway=LEEWAY,
            options={"require": ["exp", "iss", "aud"]},
        )


def _deny(code: grpc.StatusCode, message: str) -> grpc.RpcMethodHandler:
    async def deny(request, context: grpc.aio.ServicerContext) -> None:
        await context.abort(code, message)

    return grpc.unary_unary_rpc_method_handler(deny)


class Authorization(ServerInterceptor):
    """UNAUTHENTICATED without a valid token, PERMISSION_DENIED without a role the table asks for the method."""

    def __init__(self, verifier: Verifier) -> None:
        self.verifier = verifier
        self.verified = VerifiedTokens()

    async def intercept_service(self, continuation, details: grpc.HandlerCallDetails):
        if is_open(details.method):
            return await continuation(details)
        header = dict(details.invocation_metadata or ()).get("authorization", "")
        scheme, _, token = header.partition(" ") if isinstance(header, str) else ("", "", "")
        if scheme.lower() != "bearer" or not token:
            return _deny(
                grpc.StatusCode.UNAUTHENTICATED, "a Keycloak access token is required: authorization: Bearer <token>"
            )
        token = token.strip()
        try:
            # A token verified before is not verified again until it expires; a new one is, off the event loop.
            cached = self.verified.get(token)
            if cached is None:
                claims = await asyncio.to_thread(self.verifier.claims, token)
                self.verified.put(token, claims)
            else:
                claims = cached
        except jwt.PyJWKClientConnectionError as error:
            log.warning("cannot fetch the realm's keys: %s", error)
            return _deny(grpc.StatusCode.UNAVAILABLE, "the token cannot be checked now: Keycloak is unreachable")
        except jwt.PyJWTError as error:
            return _deny(grpc.StatusCode.UNAUTHENTICATED, f"invalid token: {error}")
        roles = claims.get("realm_access", {}).get("roles", [])
        if not allowed(details.method, roles):
            return _deny(
                grpc.StatusCode.PERMISSION_DENIED,
                f"{claims.get('preferred_username', 'this caller')} lacks a role allowed to call {details.method}",
            )
        return await continuation(details)


class ServiceToken:
    """The service account's access token (client credentials of shopmesh-services), renewed before it expires."""

    def __init__(self, settings: Settings, renew_before: float = 30) -> None:
        self.client = KeycloakOpenID(
            server_url=settings.keycloak_url,
            realm_name="shopmesh",
            client_id="shopmesh-services",
            client_secret_key=settings.services_client_secret,
        )
        self.renew_before = renew_before
        self._token = ""
        self._expires = 0.0
        self._lock = asyncio.Lock()

    async def get(self) -> str:
        async with self._lock:
            if time.monotonic() > self._expires - self.renew_before:
                answer = await asyncio.to_thread(self.client.token, grant_type="client_credentials")
                self._token = answer["access_token"]
                self._expires = time.monotonic() + answer["expires_in"]
            return self._token

    async def metadata(self) -> tuple[tuple[str, str], ...]:
        return (("authorization", f"Bearer {await self.get()}"),)
