from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime
from typing import NamedTuple

import grpc
from google.protobuf.timestamp_pb2 import Timestamp
from sqlalchemy import Connection, bindparam, func, insert, select
from sqlalchemy.orm import Session

from services import seeds
from services.billing.clients import Customers, Inventory
from services.billing.models import Base, BillItemRow, BillRow, OutboxRow
from services.billing.outbox import OutboxRelay
from services.billing.reservations import Reservations, store_pending
from shopmesh.billing.v1 import billing_service_pb2 as pb
from shopmesh.billing.v1 import billing_service_pb2_grpc as pb_grpc
from shopmesh.customer.v1.customer_service_pb2 import Customer
from shopmesh.inventory.v1.inventory_service_pb2 import Product
from shopmesh.runtime import catalogue, invoices
from shopmesh.runtime.auth import ServiceToken
from shopmesh.runtime.db import Database, table
from shopmesh.runtime.discovery import StatusCheck
from shopmesh.runtime.errors import InvalidArgument, NotFound, shown
from shopmesh.runtime.money import MAX_CENTS, format_cents, parse_cents
from shopmesh.runtime.resources import check_id, new_id, page, product_lines
from shopmesh.runtime.server import Service
from shopmesh.runtime.settings import Settings

log = logging.getLogger(__name__)


BILLS = table(BillRow)
ITEMS = table(BillItemRow)
OUTBOX = table(OutboxRow)
#: Built once: a statement made per call costs more than the read itself.
BILL_BY_ID = select(BILLS).where(BILLS.c.id == bindparam("id"))
ITEMS_OF = (
    select(ITEMS)
    .where(ITEMS.c.bill_seq.in_(bindparam("seqs", expanding=True)))
    .order_by(ITEMS.c.bill_seq, ITEMS.c.position)
)


def to_message(row, items) -> pb.Bill:
    """A bill from its row and its item rows (ORM objects or Core rows: the same attribute names)."""
    billing_date = Timestamp()
    billing_date.FromDatetime(row.billing_date.replace(tzinfo=UTC))
    return pb.Bill(
        id=row.id,
        billing_date=billing_date,
        customer_id=row.customer_id,
        customer=Customer(id=row.customer_id, name=row.customer_name, email=row.customer_email),
        items=[
            pb.BillItem(
                product_id=item.product_id,
                product=Product(id=item.product_id, name=item.product_name, price=format_cents(item.unit_price_cents)),
                quantity=item.quantity,
                unit_price=format_cents(item.unit_price_cents),
                amount=format_cents(item.amount_cents),
            )
            for item in items
        ],
        total=format_cents(row.total_cents),
    )


def read_bills(connection: Connection, rows) -> list[pb.Bill]:
    """The bills of Core bill rows, their items read in one query."""
    items: dict[int, list] = {row.seq: [] for row in rows}
    if items:
        for item in connection.execute(ITEMS_OF, {"seqs": list(items)}):
            items[item.bill_seq].append(item)
    return [to_message(row, items[row.seq]) for row in rows]


def bill_lines(request: pb.CreateBillRequest) -> list[tuple[str, int]]:
    """The validated (product_id, quantity) lines of a CreateBill request."""
    check_id(request.customer_id, "customer_id")
    return product_lines(request.items, "items")


class NewItem(NamedTuple):
    """A bill line as stored: the columns of bill_items but its bill's seq."""

    position: int
    product_id: str
    product_name: str
    quantity: int
    unit_price_cents: int
    amount_cents: int


class NewBill(NamedTuple):
    """A bill as stored: the columns of bills but seq."""

    id: str
    billing_date: datetime
    customer_id: str
    customer_name: str
    customer_email: str
    total_cents: int


def new_bill(
    bill_id: str, customer: Customer, lines: list[tuple[str, int]], products: list[Product]
) -> tuple[NewBill, list[NewItem]]:
    """The bill at the prices the inventory reserved at; amounts and total in integer cents."""
    items = []
    for position, ((product_id, quantity), product) in enumerate(zip(lines, products, strict=True)):
        unit = parse_cents(product.price, f"items[{position}].unit_price")
        items.append(NewItem(position, product_id, product.name, quantity, unit, unit * quantity))
    total = sum(item.amount_cents for item in items)
    if total >= MAX_CENTS:
        raise InvalidArgument(
            "items",
            f"the bill's total {format_cents(total)} is too large: it must stay below {format_cents(MAX_CENTS)}",
        )
    bill = NewBill(bill_id, datetime.now(UTC).replace(tzinfo=None), customer.id, customer.name, customer.email, total)
    return bill, items


def store_bill(connection: Connection, bill: NewBill, items: list[NewItem], event: invoices.Invoice) -> None:
    """The bill, its lines and its invoice event, in the caller's transaction: stored together or not at all."""
    stored = connection.execute(insert(BILLS), bill._asdict()).inserted_primary_key
    if stored is None:
        raise RuntimeError("the database gave no key for the bill it stored")
    seq = stored[0]
    connection.execute(insert(ITEMS), [{"bill_seq": seq, **item._asdict()} for item in items])
    connection.execute(
        insert(OUTBOX),
        {"invoice_id": bill.id, "key": event.key(), "value": event.value(), "created_at": bill.billing_date},
    )


class BillingService(pb_grpc.BillingServiceServicer):
    def __init__(
        self, db: Database, customers: Customers, inventory: Inventory, relay: OutboxRelay, reservations: Reservations
    ) -> None:
        self.db = db
        self.relay = relay
        self.customers = customers
        self.inventory = inventory
        self.reservations = reservations

    async def ListBills(self, request: pb.ListBillsRequest, context) -> pb.ListBillsResponse:
        query = select(BILLS)
        if request.customer_id:
            query = query.where(BILLS.c.customer_id == check_id(request.customer_id, "customer_id"))

        def work(connection: Connection) -> pb.ListBillsResponse:
            rows, token = page(
                connection, query, BILLS.c.seq, request.page_size, request.page_token, descending=True, key_type=int
            )
            return pb.ListBillsResponse(bills=read_bills(connection, rows), next_page_token=token)

        return await self.db.read(work)

    async def GetBill(self, request: pb.GetBillRequest, context) -> pb.Bill:
        bill_id = check_id(request.id, "id")

        def work(connection: Connection) -> list[pb.Bill]:
            return read_bills(connection, connection.execute(BILL_BY_ID, {"id": bill_id}).all())

        bills = await self.db.read(work)
        if not bills:
            raise NotFound(f"bill {shown(bill_id)} not found")
        return bills[0]

    async def CreateBill(self, request: pb.CreateBillRequest, context) -> pb.Bill:
        lines = bill_lines(request)
        customer = await self.customers.get(request.customer_id)
        # From the reservation on, the bill is made to its end even when the caller cancels or its deadline
        # passes: stopping halfway is what would leave stock taken with no bill.
        making = asyncio.ensure_future(self._make(customer, lines))
        making.add_done_callback(_retrieve)
        return await asyncio.shield(making)

    async def _make(self, customer: Customer, lines: list[tuple[str, int]]) -> pb.Bill:
        bill_id = new_id()
        await self.reservations.begin(bill_id)
        try:
            products = await self.inventory.reserve(bill_id, lines)
            bill, items = new_bill(bill_id, customer, lines, products)
            event = invoices.Invoice(bill_id, customer.name, bill.total_cents, bill.billing_date.replace(tzinfo=UTC))

            def store(connection: Connection) -> None:
                store_pending(connection, bill_id)
                store_bill(connection, bill, items, event)

            await self.db.write(store)
        except BaseException:
            log.warning("bill %s not stored; giving its stock back", bill_id)
            await self.reservations.give_back(bill_id)
            raise
        self.relay.wake.set()
        return to_message(bill, items)


def _retrieve(making: asyncio.Future) -> None:
    """Take the outcome of a bill whose caller may have gone, so asyncio does not report it unretrieved: _make
    logged what went wrong."""
    if not making.cancelled():
        making.exception()


def seed(session: Session) -> None:
    """Two bills of the original's customers and products, at the seeded prices (no stock is taken)."""
    if session.scalar(select(func.count()).select_from(BillRow)):
        return
    for bill in seeds.BILLS:
        items = [
            BillItemRow(
                position=position,
                product_id=product.id,
                product_name=product.name,
                quantity=quantity,
                unit_price_cents=product.price_cents,
                amount_cents=product.price_cents * quantity,
            )
            for position, (product, quantity) in enumerate(bill.lines)
        ]
        session.add(
            BillRow(
                id=bill.id,
                billing_date=datetime.now(UTC).replace(tzinfo=None),
                customer_id=bill.customer.id,
                customer_name=bill.customer.name,
                customer_email=bill.customer.email,
                total_cents=sum(item.amount_cents for item in items),
                items=items,
            )
        )


async def attach(server: grpc.aio.Server, settings: Settings, status_checks: list[StatusCheck]):
    db = Database(settings.database_url("billing"), Base.metadata)
    await db.seed(seed)
    token = ServiceToken(settings)
    customers, inventory = Customers(settings, token), Inventory(settings, token)
    relay = OutboxRelay(settings, db)
    reservations = Reservations(db, inventory, settings.billing_stale_bill_seconds)
    customers.start()
    inventory.start()
    relay.start()
    reservations.start()
    status_checks.append(StatusCheck("outbox", relay.health))
    pb_grpc.add_BillingServiceServicer_to_server(BillingService(db, customers, inventory, relay, reservations), server)

    async def close() -> None:
        await reservations.stop()
        await relay.stop()
        await customers.close()
        await inventory.close()

    return close


SERVICE = Service.of(catalogue.part("billing"), attach)
