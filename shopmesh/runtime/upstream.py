"""Calls from one service to another, to whichever passing instance Consul names next, with the caller's
service token."""

from __future__ import annotations

import grpc
from keycloak.exceptions import KeycloakError
from tenacity import AsyncRetrying, retry_if_exception, stop_after_attempt, wait_exponential

from shopmesh.runtime import metrics
from shopmesh.runtime.auth import ServiceToken
from shopmesh.runtime.catalogue import SERVICES
from shopmesh.runtime.discovery import Channels, Endpoints
from shopmesh.runtime.errors import FailedPrecondition, InvalidArgument, NotFound, ServiceError, Unavailable
from shopmesh.runtime.settings import Settings

_PASSED_ON = {
    grpc.StatusCode.NOT_FOUND: NotFound,
    grpc.StatusCode.FAILED_PRECONDITION: FailedPrecondition,
}
_RETRIED = {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED}


def _is_transient(error: BaseException) -> bool:
    return isinstance(error, grpc.aio.AioRpcError) and error.code() in _RETRIED


class Upstream:
    """One service found through Consul; every call may go to another instance, and a call that meets an
    instance going away is retried on the next one (the calls made here are all safe to repeat)."""

    def __init__(self, settings: Settings, consul_name: str, stub_class, token: ServiceToken) -> None:
        self.name = consul_name
        self.token = token
        self.endpoints = Endpoints(settings, consul_name)
        self.channels = Channels()
        self.stub_class = stub_class
        # Its gRPC service name labels the call metrics.
        self.grpc_service = next(
            (part.grpc_service for part in SERVICES if part.consul_name == consul_name), consul_name
        )
        self._stubs: dict[str, object] = {}

    def start(self) -> None:
        self.endpoints.start()

    async def close(self) -> None:
        await self.endpoints.stop()
        await self.channels.close()
        self._stubs.clear()

    async def call(self, method: str, request, timeout: float = 5.0):
        try:
            async for attempt in AsyncRetrying(
                retry=retry_if_exception(_is_transient),
                stop=stop_after_attempt(3),
                wait=wait_exponential(multiplier=0.05, max=0.5),
                reraise=True,
            ):
                with attempt:
                    address = await self.endpoints.next_address()
                    stub = self._stub(address)
                    metadata = metrics.passed_on(await self.token.metadata())
                    with metrics.client_call(self.grpc_service, method):
                        return await getattr(stub, method)(request, timeout=timeout, metadata=metadata)
        except grpc.aio.AioRpcError as error:
            raise self._translate(error) from None
        except KeycloakError as error:
            raise Unavailable(f"no service token from Keycloak to call {self.name}: {error}") from None

    def _stub(self, address: str):
        """The stub of the address's channel (kept until close), made once."""
        if address not in self._stubs:
            self._stubs[address] = self.stub_class(self.channels.get(address))
        return self._stubs[address]

    def rename_fields(self, message: str) -> str:
        """The upstream's field names in the caller's terms (by default unchanged)."""
        return message

    def _translate(self, error: grpc.aio.AioRpcError) -> ServiceError:
        """Pass on what concerns the caller's input; anything else means the upstream is unavailable."""
        kind = _PASSED_ON.get(error.code())
        message = self.rename_fields(error.details() or "")
        if kind is not None:
            return kind(message)
        if error.code() == grpc.StatusCode.INVALID_ARGUMENT:
            field, _, problem = message.partition(": ")
            return InvalidArgument(field, problem)
        return Unavailable(f"{self.name} is unavailable ({error.code().name}: {error.details()})")
