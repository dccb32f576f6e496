"""What the resource-oriented RPCs share: which fields an Update changes, and keyset pagination."""

from __future__ import annotations

import uuid
from collections.abc import Sequence

from google.protobuf.field_mask_pb2 import FieldMask
from google.protobuf.message import Message
from sqlalchemy import ColumnElement, Connection, Row, Select

from shopmesh.runtime import paging
from shopmesh.runtime.errors import InvalidArgument, shown

#: The bounds of client input that the protos document. Each keeps stored rows, answers and error messages
#: small, whatever a client sends.
MAX_ID = 64
MAX_NAME = 200
MAX_LINES = 100
MAX_QUANTITY = 1_000_000


def new_id() -> str:
    return uuid.uuid4().hex


def _has_control_characters(value: str) -> bool:
    # NUL and the other C0/C1 controls: PostgreSQL refuses NUL in text, and none belongs in a name or an id.
    return any(ord(character) < 32 or 127 <= ord(character) < 160 for character in value)


def _bounded(value: str, field: str, limit: int) -> str:
    if not value:
        raise InvalidArgument(field, "must not be empty")
    if len(value) > limit:
        raise InvalidArgument(field, f"must be at most {limit} characters, got {len(value)}")
    if _has_control_characters(value):
        raise InvalidArgument(field, "must not contain control characters")
    return value


def check_id(value: str, field: str) -> str:
    """An id as clients send it: not empty, at most MAX_ID characters, no control characters."""
    return _bounded(value, field, MAX_ID)


def check_name(value: str, field: str) -> str:
    """A display name: not blank, at most MAX_NAME characters once trimmed, no control characters."""
    return _bounded(value.strip(), field, MAX_NAME)


def target_id(path_id: str, resource_id: str, field: str) -> str:
    """The id an Update names: the request's own id (the path's, over REST), which the resource's id may only
    repeat; without it, the resource's id."""
    if path_id and resource_id and path_id != resource_id:
        raise InvalidArgument(
            f"{field}.id",
            f"{shown(resource_id)} differs from the id {shown(path_id)} in the path; the path names what is changed",
        )
    return check_id(path_id or resource_id, "id" if path_id else f"{field}.id")


def fields_to_update(resource: Message, mask: FieldMask, allowed: Sequence[str]) -> list[str]:
    """The fields named by the mask, or, without one, the fields present in the resource (AIP-134)."""
    if mask.paths:
        unknown = [path for path in mask.paths if path not in allowed]
        if unknown:
            raise InvalidArgument("update_mask", f"unknown field {shown(unknown[0])}; updatable: {', '.join(allowed)}")
        return list(dict.fromkeys(mask.paths))
    present = [name for name in allowed if resource.HasField(name)]
    if not present:
        raise InvalidArgument("update_mask", f"nothing to update: set one of {', '.join(allowed)}")
    return present


def product_lines(lines, field: str) -> list[tuple[str, int]]:
    """Validated (product_id, quantity) pairs of repeated lines (bill items, stock lines): at least one line,
    at most MAX_LINES, each with a product id and a quantity from 1 to MAX_QUANTITY, each product once."""
    if not lines:
        raise InvalidArgument(field, "must hold at least one line")
    if len(lines) > MAX_LINES:
        raise InvalidArgument(field, f"must hold at most {MAX_LINES} lines, got {len(lines)}")
    seen: dict[str, int] = {}
    for index, line in enumerate(lines):
        check_id(line.product_id, f"{field}[{index}].product_id")
        if not 1 <= line.quantity <= MAX_QUANTITY:
            raise InvalidArgument(
                f"{field}[{index}].quantity", f"must be from 1 to {MAX_QUANTITY}, got {line.quantity}"
            )
        if line.product_id in seen:
            raise InvalidArgument(f"{field}[{index}].product_id", f"repeats {field}[{seen[line.product_id]}]")
        seen[line.product_id] = index
    return [(line.product_id, line.quantity) for line in lines]


def page(
    connection: Connection,
    query: Select,
    key: ColumnElement,
    page_size: int,
    page_token: str,
    descending: bool = False,
    key_type: type = str,
) -> tuple[Sequence[Row], str]:
    """One page of query's rows ordered by key, and the token of the next page ('' on the last)."""
    size = paging.page_size(page_size)
    after = paging.decode_token(page_token, key_type)
    if after is not None:
        query = query.where(key < after if descending else key > after)
    rows = connection.execute(query.order_by(key.desc() if descending else key).limit(size + 1)).all()
    if len(rows) <= size:
        return rows, ""
    rows = rows[:size]
    return rows, paging.encode_token(rows[-1]._mapping[key])
