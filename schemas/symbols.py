"""Agency symbols `SCHEME:VALUE` (ARCHITECTURE §3.1), e.g. `CALIS:100010`, `ISIL:CN-SHL`.

A symbol is at once the ISO 18626 agency id (agencyIdType:agencyIdValue), the
agency's broker user name and part of its queue name `agency.<symbol>`; the
rules below keep it safe in all three places.
"""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import AfterValidator, WithJsonSchema

SCHEME_PATTERN = r"[A-Za-z0-9][A-Za-z0-9_.-]*"
# No whitespace or control characters (user names, logs), no ':' (it separates
# the parts) and no '/' (FTP home directories are named after the symbol).
VALUE_PATTERN = r"[^\s:/\x00-\x1f\x7f]+"
SYMBOL_PATTERN = rf"^{SCHEME_PATTERN}:{VALUE_PATTERN}$"
# RabbitMQ names are at most 255 bytes; leave room for `agency.` and a test prefix.
MAX_SYMBOL_BYTES = 200

_SCHEME = re.compile(SCHEME_PATTERN)
_VALUE = re.compile(VALUE_PATTERN)


def split_symbol(symbol: str) -> tuple[str, str]:
    """`(scheme, value)` of a valid symbol; ValueError saying what is wrong otherwise."""
    if not isinstance(symbol, str):
        raise ValueError(f"an agency symbol must be a string, not {type(symbol).__name__}")
    if len(symbol.encode("utf-8")) > MAX_SYMBOL_BYTES:
        raise ValueError(f"an agency symbol may have at most {MAX_SYMBOL_BYTES} bytes")
    scheme, sep, value = symbol.partition(":")
    if not sep:
        raise ValueError("an agency symbol must look like SCHEME:VALUE, e.g. CALIS:100010")
    if not _SCHEME.fullmatch(scheme):
        raise ValueError(f"scheme {scheme!r} must start with a letter or digit and contain "
                         "only letters, digits, '_', '.' or '-'")
    if not value:
        raise ValueError("the value after ':' must not be empty")
    if not _VALUE.fullmatch(value):
        raise ValueError(f"value {value!r} must not contain whitespace, control "
                         "characters, ':' or '/'")
    return scheme, value


def _check(symbol: str) -> str:
    split_symbol(symbol)
    return symbol


AgencySymbol = Annotated[
    str,
    AfterValidator(_check),
    WithJsonSchema({"type": "string", "pattern": SYMBOL_PATTERN,
                    "maxLength": MAX_SYMBOL_BYTES, "examples": ["CALIS:100010", "ISIL:CN-SHL"]}),
]
"""A pydantic-validated agency symbol `SCHEME:VALUE`."""
