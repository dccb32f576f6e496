"""List pagination (AIP-158): bounded page sizes and opaque page tokens that carry the last key seen."""

from __future__ import annotations

import base64
import binascii

from shopmesh.errors import InvalidArgument

DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 1000


def page_size(requested: int) -> int:
    if requested < 0:
        raise InvalidArgument("page_size", f"must not be negative, got {requested}")
    if requested > MAX_PAGE_SIZE:
        raise InvalidArgument("page_size", f"must be at most {MAX_PAGE_SIZE}, got {requested}")
    return requested or DEFAULT_PAGE_SIZE


def encode_token(last_key: str) -> str:
    return base64.urlsafe_b64encode(f"after:{last_key}".encode()).decode()


def decode_token(token: str) -> str | None:
    """The key to continue after, or None for the first page."""
    if not token:
        return None
    try:
        text = base64.urlsafe_b64decode(token.encode()).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError):
        text = ""
    if not text.startswith("after:") or len(text) == len("after:"):
        raise InvalidArgument("page_token", "is not a token this service returned")
    return text.removeprefix("after:")
