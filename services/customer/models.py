from __future__ import annotations

from sqlalchemy import Index, String, func
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class Base(DeclarativeBase):
    pass


class CustomerRow(Base):
    __tablename__ = "customers"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    email: Mapped[str] = mapped_column(String(320), unique=True)


#: Emails are unique whatever their case: Mixed@Example.com and mixed@example.com are one customer. The index is
#: the guarantee under concurrent writes; the service's query before it gives the clear message.
UNIQUE_EMAIL = Index("ix_customers_email_lower", func.lower(CustomerRow.email), unique=True)
