"""List pagination (AIP-158): bounded page sizes and opaque page tokens that carry the last key seen."""

from __future__ import annotations

import base64
import binascii
import re

from shopmesh.runtime.errors import InvalidArgument

DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 1000
#: A token is short: anything longer was not made here, and is refused before it is decoded.
MAX_TOKEN_LENGTH = 200
#: The shapes of the keys a token may carry: a row number (an int64 in every database), or an id.
_KEYS = {int: re.compile(r"[1-9][0-9]{0,18}|0", re.ASCII), str: re.compile(r"[A-Za-z0-9_-]{1,64}", re.ASCII)}


def page_size(requested: int) -> int:
    if requested < 0:
        raise InvalidArgument("page_size", f"must not be negative, got {requested}")
    if requested > MAX_PAGE_SIZE:
        raise InvalidArgument("page_size", f"must be at most {MAX_PAGE_SIZE}, got {requested}")
    return requested or DEFAULT_PAGE_SIZE


def encode_token(last_key: str | int) -> str:
    return base64.urlsafe_b64encode(f"after:{last_key}".encode()).decode()


def decode_token(token: str, key_type: type[str] | type[int] = str) -> str | int | None:
    """The key to continue after, or None for the first page; INVALID_ARGUMENT for anything this service did not
    hand out, including a key of the wrong shape (a 23-digit row number, "1_0", an id with other characters)."""
    if not token:
        return None
    text = ""
    if len(token) <= MAX_TOKEN_LENGTH:
        try:
            text = base64.urlsafe_b64decode(token.encode("ascii")).decode("ascii")
        except (binascii.Error, UnicodeError, ValueError):
            pass
    key = text.removeprefix("after:")
    if not text.startswith("after:") or not _KEYS[key_type].fullmatch(key) or (key_type is int and int(key) >= 2**63):
        raise InvalidArgument("page_token", "is not a token this service returned")
    return key_type(key)
