"""JSON text as the hub writes it: compact UTF-8, Chinese as itself (never \\u escapes).

orjson (compiled; why: the hub writes several JSON documents for every routed request,
the outbox bodies, the inbox copy, the transaction's request, rota and confirmation, and
the standard library's encoder was a measurable share of the hub's CPU, issue 20)
writes what `json.dumps(value, ensure_ascii=False, separators=(",", ":"))` writes for
the values the hub has: dicts with string keys, lists, strings, ints, floats, booleans
and None. What orjson refuses and the standard library takes (an integer beyond 64
bits, from a hostile message kept as received; a key that is not a string) falls back
to the standard library, so nothing that was stored before is refused now.
"""

from __future__ import annotations

import copy as _copy
import json
from typing import Any

import orjson


def dumps(value: Any) -> bytes:
    """`value` as compact UTF-8 JSON."""
    try:
        return orjson.dumps(value)
    except TypeError:
        return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode()


def dumps_text(value: Any) -> str:
    """`value` as compact JSON text (for a PostgreSQL jsonb or text parameter)."""
    return dumps(value).decode()


def copied(value: Any) -> Any:
    """A deep copy of JSON data (a message body to adjust without touching the original):
    through orjson, several times faster than copy.deepcopy; what orjson refuses (see
    above) is copied by copy.deepcopy."""
    try:
        return orjson.loads(orjson.dumps(value))
    except TypeError:
        return _copy.deepcopy(value)
