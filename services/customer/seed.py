"""The customers of the original project, with ids stable across databases so that seeded bills refer to them."""

import uuid

_NAMESPACE = uuid.UUID("6f1f4a4e-2b1c-4c43-9f0a-7d2a5e0b8c11")

CUSTOMERS = [
    (uuid.uuid5(_NAMESPACE, f"customer:{email}").hex, name, email)
    for name, email in [("Mohamed", "med@gmail.com"), ("Imane", "imane@gmail.com"), ("Yassine", "yassine@gmail.com")]
]
