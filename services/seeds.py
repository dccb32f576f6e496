"""The demo data of the original project, seeded into an empty database: its customers, its products and two
bills of them. Ids are stable across databases, so that the seeded bills refer to the seeded customers and products
whichever service's database is created first."""

from __future__ import annotations

import uuid
from typing import NamedTuple

_CUSTOMERS = uuid.UUID("6f1f4a4e-2b1c-4c43-9f0a-7d2a5e0b8c11")
_PRODUCTS = uuid.UUID("3c9d2a61-8a0e-4b1f-a5c2-0e6b9f4d7a22")


class Customer(NamedTuple):
    id: str
    name: str
    email: str


class Product(NamedTuple):
    id: str
    name: str
    price_cents: int
    quantity: int


class Bill(NamedTuple):
    id: str
    customer: Customer
    lines: tuple[tuple[Product, int], ...]  #: (product, quantity), at the product's seeded price


CUSTOMERS = [
    Customer(uuid.uuid5(_CUSTOMERS, f"customer:{email}").hex, name, email)
    for name, email in [("Mohamed", "med@gmail.com"), ("Imane", "imane@gmail.com"), ("Yassine", "yassine@gmail.com")]
]

PRODUCTS = [
    Product(uuid.uuid5(_PRODUCTS, f"product:{name}").hex, name, cents, quantity)
    for name, cents, quantity in [
        ("Computer Desk Top HP 900", 90000, 50),
        ("Printer Epson", 8000, 120),
        ("MacBook Pro Lap Top", 180000, 40),
    ]
]

#: No stock is taken for them: they are the original's history.
BILLS = [
    Bill("seed-bill-1", CUSTOMERS[0], ((PRODUCTS[0], 1), (PRODUCTS[1], 2))),
    Bill("seed-bill-2", CUSTOMERS[1], ((PRODUCTS[2], 1),)),
]
