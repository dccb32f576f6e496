"""What the resource-oriented RPCs share: which fields an Update changes, and keyset pagination."""

from __future__ import annotations

import uuid
from collections.abc import Sequence

from google.protobuf.field_mask_pb2 import FieldMask
from google.protobuf.message import Message
from sqlalchemy import Select
from sqlalchemy.orm import InstrumentedAttribute, Session

from shopmesh import paging
from shopmesh.errors import InvalidArgument


def new_id() -> str:
    return uuid.uuid4().hex


def fields_to_update(resource: Message, mask: FieldMask, allowed: Sequence[str]) -> list[str]:
    """The fields named by the mask, or, without one, the fields present in the resource (AIP-134)."""
    if mask.paths:
        unknown = [path for path in mask.paths if path not in allowed]
        if unknown:
            raise InvalidArgument("update_mask", f"unknown field {unknown[0]!r}; updatable: {', '.join(allowed)}")
        return list(dict.fromkeys(mask.paths))
    present = [name for name in allowed if resource.HasField(name)]
    if not present:
        raise InvalidArgument("update_mask", f"nothing to update: set one of {', '.join(allowed)}")
    return present


def product_lines(lines, field: str) -> list[tuple[str, int]]:
    """Validated (product_id, quantity) pairs of repeated lines (bill items, stock lines): at least one line,
    each with a product id and a quantity of 1 or more, each product once."""
    if not lines:
        raise InvalidArgument(field, "must hold at least one line")
    seen: dict[str, int] = {}
    for index, line in enumerate(lines):
        if not line.product_id:
            raise InvalidArgument(f"{field}[{index}].product_id", "must not be empty")
        if line.quantity < 1:
            raise InvalidArgument(f"{field}[{index}].quantity", f"must be at least 1, got {line.quantity}")
        if line.product_id in seen:
            raise InvalidArgument(f"{field}[{index}].product_id", f"repeats {field}[{seen[line.product_id]}]")
        seen[line.product_id] = index
    return [(line.product_id, line.quantity) for line in lines]


def page(session: Session, query: Select, key: InstrumentedAttribute, page_size: int, page_token: str,
         descending: bool = False, key_type: type = str) -> tuple[list, str]:
    """One page of query ordered by key, and the token of the next page ('' on the last)."""
    size = paging.page_size(page_size)
    after = paging.decode_token(page_token)
    if after is not None:
        try:
            after = key_type(after)
        except ValueError:
            raise InvalidArgument("page_token", "is not a token this service returned") from None
        query = query.where(key < after if descending else key > after)
    rows = list(session.scalars(query.order_by(key.desc() if descending else key).limit(size + 1)))
    if len(rows) <= size:
        return rows, ""
    rows = rows[:size]
    return rows, paging.encode_token(str(getattr(rows[-1], key.key)))
