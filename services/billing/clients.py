"""Billing's calls to the customer and inventory services."""

from __future__ import annotations

import re

from shopmesh.customer.v1 import customer_service_pb2 as customer_pb
from shopmesh.customer.v1 import customer_service_pb2_grpc as customer_grpc
from shopmesh.inventory.v1 import inventory_service_pb2 as inventory_pb
from shopmesh.inventory.v1 import inventory_service_pb2_grpc as inventory_grpc
from shopmesh.runtime.auth import ServiceToken
from shopmesh.runtime.catalogue import part
from shopmesh.runtime.errors import NotFound, shown
from shopmesh.runtime.settings import Settings
from shopmesh.runtime.upstream import Upstream


class Customers(Upstream):
    def __init__(self, settings: Settings, token: ServiceToken) -> None:
        super().__init__(settings, part("customer").consul_name, customer_grpc.CustomerServiceStub, token)

    async def get(self, customer_id: str) -> customer_pb.Customer:
        try:
            return await self.call("GetCustomer", customer_pb.GetCustomerRequest(id=customer_id))
        except NotFound:
            raise NotFound(f"customer_id: customer {shown(customer_id)} not found") from None


class Inventory(Upstream):
    def __init__(self, settings: Settings, token: ServiceToken) -> None:
        super().__init__(settings, part("inventory").consul_name, inventory_grpc.InventoryServiceStub, token)

    def rename_fields(self, message: str) -> str:
        # The inventory names reservation lines; the caller sent bill items.
        return re.sub(r"^lines\[", "items[", message)

    async def reserve(self, reservation_id: str, lines: list[tuple[str, int]]) -> list[inventory_pb.Product]:
        request = inventory_pb.ReserveStockRequest(
            reservation_id=reservation_id,
            lines=[inventory_pb.StockLine(product_id=product_id, quantity=quantity) for product_id, quantity in lines],
        )
        return list((await self.call("ReserveStock", request)).products)

    async def release(self, reservation_id: str) -> None:
        await self.call("ReleaseStock", inventory_pb.ReleaseStockRequest(reservation_id=reservation_id))
