from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, Boolean, DateTime, ForeignKey, Integer, LargeBinary, String
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship


class Base(DeclarativeBase):
    pass


class BillRow(Base):
    """A bill keeps copies of the customer and products as they were: later edits do not rewrite it."""

    __tablename__ = "bills"

    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    id: Mapped[str] = mapped_column(String(32), unique=True)
    billing_date: Mapped[datetime] = mapped_column(DateTime)  # UTC
    customer_id: Mapped[str] = mapped_column(String(32), index=True)
    customer_name: Mapped[str] = mapped_column(String(200))
    customer_email: Mapped[str] = mapped_column(String(320))
    total_cents: Mapped[int] = mapped_column(BigInteger)
    items: Mapped[list[BillItemRow]] = relationship(
        back_populates="bill", order_by="BillItemRow.position", cascade="all, delete-orphan", lazy="selectin"
    )


class BillItemRow(Base):
    __tablename__ = "bill_items"

    bill_seq: Mapped[int] = mapped_column(ForeignKey("bills.seq", ondelete="CASCADE"), primary_key=True)
    position: Mapped[int] = mapped_column(Integer, primary_key=True)
    product_id: Mapped[str] = mapped_column(String(32))
    product_name: Mapped[str] = mapped_column(String(200))
    quantity: Mapped[int] = mapped_column(Integer)
    unit_price_cents: Mapped[int] = mapped_column(BigInteger)
    amount_cents: Mapped[int] = mapped_column(BigInteger)
    bill: Mapped[BillRow] = relationship(back_populates="items")


class OutboxRow(Base):
    """An invoice event written in the same transaction as its bill; the relay publishes it to Kafka and marks
    it, so a bill's event is never lost while Kafka is down."""

    __tablename__ = "outbox"

    invoice_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    key: Mapped[bytes] = mapped_column(LargeBinary)
    value: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(DateTime)
    published_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True, index=True)


class PendingBillRow(Base):
    """A bill being made: written before its stock is reserved and deleted in the transaction that stores the
    bill. One left behind (billing killed, inventory away) names a reservation with no bill, which the reconciler
    gives back. `releasing` marks it claimed for release: from then on the bill can no longer be stored."""

    __tablename__ = "pending_bills"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    created_at: Mapped[datetime] = mapped_column(DateTime, index=True)  # UTC
    releasing: Mapped[bool] = mapped_column(Boolean, default=False)


class RelayLeaseRow(Base):
    """Which billing instance publishes the outbox, until when: with several instances on one database, one relay
    at a time publishes, so an event is not sent by two. Another takes over once the holder's lease runs out."""

    __tablename__ = "relay_lease"

    name: Mapped[str] = mapped_column(String(32), primary_key=True)
    holder: Mapped[str] = mapped_column(String(64))
    expires_at: Mapped[datetime] = mapped_column(DateTime)  # UTC
