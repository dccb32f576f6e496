"""Billing's calls to the customer and inventory services, to whichever passing instance Consul names next."""

from __future__ import annotations

import re

import grpc
from keycloak.exceptions import KeycloakError
from tenacity import AsyncRetrying, retry_if_exception, stop_after_attempt, wait_exponential

from shopmesh.auth import ServiceToken
from shopmesh.customer.v1 import customer_service_pb2 as customer_pb
from shopmesh.customer.v1 import customer_service_pb2_grpc as customer_grpc
from shopmesh.discovery import Channels, Endpoints
from shopmesh.errors import FailedPrecondition, InvalidArgument, NotFound, ServiceError, Unavailable
from shopmesh.inventory.v1 import inventory_service_pb2 as inventory_pb
from shopmesh.inventory.v1 import inventory_service_pb2_grpc as inventory_grpc
from shopmesh.settings import Settings

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

    def start(self) -> None:
        self.endpoints.start()

    async def close(self) -> None:
        await self.endpoints.stop()
        await self.channels.close()

    async def call(self, method: str, request, timeout: float = 5.0):
        try:
            async for attempt in AsyncRetrying(
                retry=retry_if_exception(_is_transient), stop=stop_after_attempt(3),
                wait=wait_exponential(multiplier=0.05, max=0.5), reraise=True,
            ):
                with attempt:
                    address = await self.endpoints.next_address()
                    stub = self.stub_class(self.channels.get(address))
                    metadata = await self.token.metadata()
                    return await getattr(stub, method)(request, timeout=timeout, metadata=metadata)
        except grpc.aio.AioRpcError as error:
            raise self._translate(error) from None
        except KeycloakError as error:
            raise Unavailable(f"billing cannot get its service token from Keycloak: {error}") from None

    def _translate(self, error: grpc.aio.AioRpcError) -> ServiceError:
        """Pass on what concerns the caller's input; anything else means the upstream is unavailable."""
        kind = _PASSED_ON.get(error.code())
        # The inventory names reservation lines; the caller sent bill items.
        message = re.sub(r"^lines\[", "items[", error.details() or "")
        if kind is not None:
            return kind(message)
        if error.code() == grpc.StatusCode.INVALID_ARGUMENT:
            field, _, problem = message.partition(": ")
            return InvalidArgument(field, problem)
        return Unavailable(f"{self.name} is unavailable ({error.code().name}: {error.details()})")


class Customers(Upstream):
    def __init__(self, settings: Settings, token: ServiceToken) -> None:
        super().__init__(settings, "customer-service", customer_grpc.CustomerServiceStub, token)

    async def get(self, customer_id: str) -> customer_pb.Customer:
        try:
            return await self.call("GetCustomer", customer_pb.GetCustomerRequest(id=customer_id))
        except NotFound:
            raise NotFound(f"customer_id: customer {customer_id!r} not found") from None


class Inventory(Upstream):
    def __init__(self, settings: Settings, token: ServiceToken) -> None:
        super().__init__(settings, "inventory-service", inventory_grpc.InventoryServiceStub, token)

    async def reserve(self, reservation_id: str, lines: list[tuple[str, int]]) -> list[inventory_pb.Product]:
        request = inventory_pb.ReserveStockRequest(
            reservation_id=reservation_id,
            lines=[inventory_pb.StockLine(product_id=product_id, quantity=quantity) for product_id, quantity in lines],
        )
        return list((await self.call("ReserveStock", request)).products)

    async def release(self, reservation_id: str) -> None:
        await self.call("ReleaseStock", inventory_pb.ReleaseStockRequest(reservation_id=reservation_id))
