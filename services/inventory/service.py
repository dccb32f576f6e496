from __future__ import annotations

from datetime import UTC, datetime

import grpc
from sqlalchemy import Connection, bindparam, func, insert, select, update
from sqlalchemy.orm import Session

from services.inventory.models import Base, ProductRow, ReservationLineRow, ReservationRow
from services.seeds import PRODUCTS
from shopmesh.inventory.v1 import inventory_service_pb2 as pb
from shopmesh.inventory.v1 import inventory_service_pb2_grpc as pb_grpc
from shopmesh.runtime import catalogue
from shopmesh.runtime.db import Database, table
from shopmesh.runtime.discovery import StatusCheck
from shopmesh.runtime.errors import FailedPrecondition, InvalidArgument, NotFound, shown
from shopmesh.runtime.money import format_cents, parse_cents
from shopmesh.runtime.resources import check_id, check_name, fields_to_update, new_id, page, product_lines, target_id
from shopmesh.runtime.server import Service
from shopmesh.runtime.settings import Settings

UPDATABLE = ("name", "price", "quantity")


#: What a read selects: the table's columns as Core rows, no ORM objects.
TABLE = table(ProductRow)
RESERVATIONS = table(ReservationRow)
LINES = table(ReservationLineRow)
#: Built once: a statement made per call costs more than the read itself.
BY_ID = select(TABLE).where(TABLE.c.id == bindparam("id"))
RESERVATION_RELEASED = select(RESERVATIONS.c.released).where(RESERVATIONS.c.id == bindparam("id"))
TAKE = (
    update(TABLE)
    .where(TABLE.c.id == bindparam("product"), TABLE.c.quantity >= bindparam("taken"))
    .values(quantity=TABLE.c.quantity - bindparam("taken"))
)
RESERVED_PRODUCTS = (
    select(TABLE)
    .join(LINES, LINES.c.product_id == TABLE.c.id)
    .where(LINES.c.reservation_id == bindparam("id"))
    .order_by(LINES.c.position)
)


def to_message(row) -> pb.Product:
    return pb.Product(id=row.id, name=row.name, price=format_cents(row.price_cents), quantity=row.quantity)


def clean(product: pb.Product, fields: tuple[str, ...] | list[str]) -> dict:
    """The validated column values of the named fields."""
    values: dict[str, object] = {}
    if "name" in fields:
        values["name"] = check_name(product.name, "product.name")
    if "price" in fields:
        if not product.HasField("price"):
            raise InvalidArgument("product.price", 'is required, as a decimal string such as "12.50"')
        values["price_cents"] = parse_cents(product.price, "product.price")
    if "quantity" in fields:
        if product.quantity < 0:
            raise InvalidArgument("product.quantity", f"must not be negative, got {product.quantity}")
        values["quantity"] = product.quantity
    return values


def _get(session: Session, product_id: str, field: str = "id") -> ProductRow:
    row = session.get(ProductRow, check_id(product_id, field))
    if row is None:
        raise NotFound(f"{field}: product {shown(product_id)} not found")
    return row


def _check_lines(request: pb.ReserveStockRequest) -> None:
    check_id(request.reservation_id, "reservation_id")
    product_lines(request.lines, "lines")


def _reservation(session: Session, reservation_id: str) -> list[ReservationLineRow]:
    query = select(ReservationLineRow).where(ReservationLineRow.reservation_id == reservation_id)
    return list(session.scalars(query.order_by(ReservationLineRow.position)))


class InventoryService(pb_grpc.InventoryServiceServicer):
    def __init__(self, db: Database) -> None:
        self.db = db

    async def ListProducts(self, request: pb.ListProductsRequest, context) -> pb.ListProductsResponse:
        def work(connection: Connection) -> pb.ListProductsResponse:
            rows, token = page(connection, select(TABLE), TABLE.c.id, request.page_size, request.page_token)
            return pb.ListProductsResponse(products=map(to_message, rows), next_page_token=token)

        return await self.db.read(work)

    async def GetProduct(self, request: pb.GetProductRequest, context) -> pb.Product:
        product_id = check_id(request.id, "id")
        row = await self.db.read(lambda connection: connection.execute(BY_ID, {"id": product_id}).first())
        if row is None:
            raise NotFound(f"id: product {shown(product_id)} not found")
        return to_message(row)

    async def CreateProduct(self, request: pb.CreateProductRequest, context) -> pb.Product:
        values = clean(request.product, UPDATABLE)

        def work(session: Session) -> pb.Product:
            row = ProductRow(id=new_id(), **values)
            session.add(row)
            return to_message(row)

        return await self.db.run(work)

    async def UpdateProduct(self, request: pb.UpdateProductRequest, context) -> pb.Product:
        product_id = target_id(request.id, request.product.id, "product")
        values = clean(request.product, fields_to_update(request.product, request.update_mask, UPDATABLE))

        def work(session: Session) -> pb.Product:
            row = _get(session, product_id, "id" if request.id else "product.id")
            for column, value in values.items():
                setattr(row, column, value)
            return to_message(row)

        return await self.db.run(work)

    async def DeleteProduct(self, request: pb.DeleteProductRequest, context) -> pb.DeleteProductResponse:
        def work(session: Session) -> pb.DeleteProductResponse:
            session.delete(_get(session, request.id))
            return pb.DeleteProductResponse()

        return await self.db.run(work)

    async def ReserveStock(self, request: pb.ReserveStockRequest, context) -> pb.ReserveStockResponse:
        _check_lines(request)
        reservation_id = request.reservation_id

        def work(connection: Connection) -> pb.ReserveStockResponse:
            # Core statements, not the ORM: this runs once per bill, and its unit of work cost more than the SQL.
            released = connection.execute(RESERVATION_RELEASED, {"id": reservation_id}).scalar()
            if released:
                raise FailedPrecondition(
                    f"reservation_id: reservation {shown(reservation_id)} was released; it takes no more stock"
                )
            if released is None:
                # A concurrent reservation or release of the same id fails here, not halfway.
                connection.execute(insert(RESERVATIONS).values(id=reservation_id, released=False, created_at=_now()))
                for index, line in enumerate(request.lines):
                    # One conditional UPDATE per line: the stock can never go below zero, even under races.
                    taken = connection.execute(TAKE, {"product": line.product_id, "taken": line.quantity}).rowcount
                    if not taken:
                        row = connection.execute(BY_ID, {"id": line.product_id}).first()
                        field = f"lines[{index}].product_id"
                        if row is None:
                            raise NotFound(f"{field}: product {shown(line.product_id)} not found")
                        raise FailedPrecondition(
                            f"lines[{index}].quantity: not enough stock of {shown(row.name)}: "
                            f"{line.quantity} asked, {row.quantity} left"
                        )
                connection.execute(
                    insert(LINES),
                    [
                        {
                            "reservation_id": reservation_id,
                            "product_id": line.product_id,
                            "quantity": line.quantity,
                            "position": index,
                        }
                        for index, line in enumerate(request.lines)
                    ],
                )
            products = connection.execute(RESERVED_PRODUCTS, {"id": reservation_id})
            return pb.ReserveStockResponse(products=map(to_message, products))

        return await self.db.write(work)

    async def ReleaseStock(self, request: pb.ReleaseStockRequest, context) -> pb.ReleaseStockResponse:
        check_id(request.reservation_id, "reservation_id")

        def work(session: Session) -> pb.ReleaseStockResponse:
            reservation = session.get(ReservationRow, request.reservation_id)
            if reservation is None:
                # Released before it arrived (or never made): the id is marked, and a late ReserveStock takes nothing.
                session.add(ReservationRow(id=request.reservation_id, released=True, created_at=_now()))
            elif reservation.released:
                return pb.ReleaseStockResponse()
            else:
                reservation.released = True
            for line in _reservation(session, request.reservation_id):
                session.execute(
                    update(ProductRow)
                    .where(ProductRow.id == line.product_id)
                    .values(quantity=ProductRow.quantity + line.quantity)
                )
                session.delete(line)
            return pb.ReleaseStockResponse()

        return await self.db.run(work)


def _now() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


def seed(session: Session) -> None:
    if session.scalar(select(func.count()).select_from(ProductRow)) == 0:
        session.add_all(
            ProductRow(id=id_, name=name, price_cents=cents, quantity=quantity)
            for id_, name, cents, quantity in PRODUCTS
        )


async def attach(server: grpc.aio.Server, settings: Settings, status_checks: list[StatusCheck]) -> None:
    db = Database(settings.database_url("inventory"), Base.metadata)
    await db.seed(seed)
    pb_grpc.add_InventoryServiceServicer_to_server(InventoryService(db), server)


SERVICE = Service.of(catalogue.part("inventory"), attach)
