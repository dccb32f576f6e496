from __future__ import annotations

import grpc
from email_validator import EmailNotValidError, validate_email
from sqlalchemy import Connection, bindparam, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from services.customer.models import UNIQUE_EMAIL, Base, CustomerRow
from services.seeds import CUSTOMERS
from shopmesh.customer.v1 import customer_service_pb2 as pb
from shopmesh.customer.v1 import customer_service_pb2_grpc as pb_grpc
from shopmesh.runtime import catalogue
from shopmesh.runtime.db import Database, table
from shopmesh.runtime.discovery import StatusCheck
from shopmesh.runtime.errors import AlreadyExists, InvalidArgument, NotFound, shown
from shopmesh.runtime.resources import check_id, check_name, fields_to_update, new_id, page, target_id
from shopmesh.runtime.server import Service
from shopmesh.runtime.settings import Settings

UPDATABLE = ("name", "email")
#: RFC 5321's bound on an address in a mail path.
MAX_EMAIL = 254


#: What a read selects: the table's columns as Core rows (row.id, row.name, row.email), no ORM objects.
TABLE = table(CustomerRow)
#: Built once: a statement made per call costs more than the read itself.
BY_ID = select(TABLE).where(TABLE.c.id == bindparam("id"))


def to_message(row) -> pb.Customer:
    return pb.Customer(id=row.id, name=row.name, email=row.email)


def clean_name(name: str) -> str:
    return check_name(name, "customer.name")


def clean_email(email: str) -> str:
    email = email.strip()
    if len(email) > MAX_EMAIL:
        raise InvalidArgument("customer.email", f"must be at most {MAX_EMAIL} characters, got {len(email)}")
    try:
        return validate_email(email, check_deliverability=False).normalized
    except EmailNotValidError as error:
        raise InvalidArgument("customer.email", f"{shown(email)} is not a valid email address: {error}") from None


def _get(session: Session, customer_id: str) -> CustomerRow:
    row = session.get(CustomerRow, check_id(customer_id, "id"))
    if row is None:
        raise NotFound(f"customer {shown(customer_id)} not found")
    return row


def _flush_unique_email(session: Session, row: CustomerRow) -> None:
    taken = AlreadyExists(f"customer.email: {shown(row.email)} already belongs to another customer")
    same = select(CustomerRow.id).where(
        func.lower(CustomerRow.email) == func.lower(row.email), CustomerRow.id != row.id
    )
    with session.no_autoflush:  # the query must not flush the row it checks, which would hit the index first
        if session.scalar(same.limit(1)) is not None:
            raise taken
    try:
        session.flush()
    except IntegrityError:
        raise taken from None


class CustomerService(pb_grpc.CustomerServiceServicer):
    def __init__(self, db: Database) -> None:
        self.db = db

    async def ListCustomers(self, request: pb.ListCustomersRequest, context) -> pb.ListCustomersResponse:
        def work(connection: Connection) -> pb.ListCustomersResponse:
            rows, token = page(connection, select(TABLE), TABLE.c.id, request.page_size, request.page_token)
            return pb.ListCustomersResponse(customers=map(to_message, rows), next_page_token=token)

        return await self.db.read(work)

    async def GetCustomer(self, request: pb.GetCustomerRequest, context) -> pb.Customer:
        customer_id = check_id(request.id, "id")
        row = await self.db.read(lambda connection: connection.execute(BY_ID, {"id": customer_id}).first())
        if row is None:
            raise NotFound(f"customer {shown(customer_id)} not found")
        return to_message(row)

    async def CreateCustomer(self, request: pb.CreateCustomerRequest, context) -> pb.Customer:
        name = clean_name(request.customer.name)
        email = clean_email(request.customer.email)

        def work(session: Session) -> pb.Customer:
            row = CustomerRow(id=new_id(), name=name, email=email)
            session.add(row)
            _flush_unique_email(session, row)
            return to_message(row)

        return await self.db.run(work)

    async def UpdateCustomer(self, request: pb.UpdateCustomerRequest, context) -> pb.Customer:
        customer_id = target_id(request.id, request.customer.id, "customer")
        fields = fields_to_update(request.customer, request.update_mask, UPDATABLE)
        changes = {}
        if "name" in fields:
            changes["name"] = clean_name(request.customer.name)
        if "email" in fields:
            changes["email"] = clean_email(request.customer.email)

        def work(session: Session) -> pb.Customer:
            row = _get(session, customer_id)
            for field, value in changes.items():
                setattr(row, field, value)
            _flush_unique_email(session, row)
            return to_message(row)

        return await self.db.run(work)

    async def DeleteCustomer(self, request: pb.DeleteCustomerRequest, context) -> pb.DeleteCustomerResponse:
        def work(session: Session) -> pb.DeleteCustomerResponse:
            session.delete(_get(session, request.id))
            return pb.DeleteCustomerResponse()

        return await self.db.run(work)


def seed(session: Session) -> None:
    if session.scalar(select(func.count()).select_from(CustomerRow)) == 0:
        session.add_all(CustomerRow(id=id_, name=name, email=email) for id_, name, email in CUSTOMERS)


async def attach(server: grpc.aio.Server, settings: Settings, status_checks: list[StatusCheck]) -> None:
    db = Database(settings.database_url("customer"), Base.metadata, indexes=(UNIQUE_EMAIL,))
    await db.seed(seed)
    pb_grpc.add_CustomerServiceServicer_to_server(CustomerService(db), server)


SERVICE = Service.of(catalogue.part("customer"), attach)
