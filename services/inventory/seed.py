"""The products of the original project, with ids stable across databases so that seeded bills refer to them."""

import uuid

_NAMESPACE = uuid.UUID("3c9d2a61-8a0e-4b1f-a5c2-0e6b9f4d7a22")

#: id, name, price in cents, quantity in stock
PRODUCTS = [
    (uuid.uuid5(_NAMESPACE, f"product:{name}").hex, name, cents, quantity)
    for name, cents, quantity in [
        ("Computer Desk Top HP 900", 90000, 50),
        ("Printer Epson", 8000, 120),
        ("MacBook Pro Lap Top", 180000, 40),
    ]
]
