"""ISO 18626 errors of the hub's JSON models: why a body is not an acceptable message,
as the errorType and the errorValue (naming the element by its wire path) a sender can
act on. Used by `schemas.iso18626.parse_message`; pure, no model imported.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

from schemas.iso18626_codes import ErrorType, MessageType


class MessageError(Exception):
    """Why a message body is not an acceptable ISO 18626 message, in ISO 18626 terms."""

    def __init__(self, error_type: ErrorType, error_value: str) -> None:
        super().__init__(f"{error_type}: {error_value}")
        self.error_type = error_type
        self.error_value = error_value


MESSAGE_TYPES = ", ".join(MessageType)
_DATETIME_HINT = "an ISO 8601 dateTime such as 2024-05-01T08:30:00Z"
_EXPECTED: dict[str, str] = {
    "string_type": "a string",
    "string_sub_type": "a string",
    "int_type": "an integer",
    "int_parsing": "an integer",
    "int_from_float": "an integer",
    "int_parsing_size": "an integer of a sensible size",
    "bool_type": "a boolean (true or false)",
    "bool_parsing": "a boolean (true or false)",
    "model_type": "an object",
    "model_attributes_type": "an object",
    "dict_type": "an object",
    "list_type": "an array",
    "iso_datetime": _DATETIME_HINT,
    "decimal_text": 'a decimal string such as "12.50"',
    "decimal_range": "an amount below 1,000,000,000,000,000",
}


def _wire_path(root: str, loc: tuple[int | str, ...]) -> str:
    path = root
    for part in loc:
        path += f"[{part}]" if isinstance(part, int) else f".{part}"
    return path


def show(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, str):
        return repr(value if len(value) <= 80 else value[:77] + "...")
    return json.dumps(value, default=str)


def explain(root: str, error: Mapping[str, Any]) -> MessageError:
    """One pydantic error as the ISO 18626 error a sender can act on."""
    kind = error["type"]
    path = _wire_path(root, tuple(error["loc"]))
    value = error.get("input")
    ctx = error.get("ctx") or {}
    if kind == "missing" or (value is None and error["loc"]
                             and isinstance(error["loc"][-1], str)):
        # JSON null for a required element is the same as leaving it out.
        return MessageError(ErrorType.BADLY_FORMED_MESSAGE, f"{path}: required element missing")
    if kind == "xsd_choice":
        return MessageError(ErrorType.BADLY_FORMED_MESSAGE, f"{path}: {error['msg']}")
    if kind == "element":
        return MessageError(ErrorType(ctx["iso_error"]), f"{path}.{ctx['element']}: "
                                                          f"{ctx['message']}")
    if kind == "enum":
        allowed = ", ".join(re.findall(r"'([^']*)'", str(ctx.get("expected", ""))))
        return MessageError(ErrorType.UNRECOGNISED_DATA_VALUE,
                            f"{path}: {show(value)} is not one of {allowed}")
    if kind == "greater_than_equal":
        return MessageError(ErrorType.UNRECOGNISED_DATA_VALUE,
                            f"{path}: {show(value)} is less than {ctx.get('ge')}")
    if kind in _EXPECTED:
        expected = _EXPECTED[kind]
    elif kind.startswith(("datetime_", "date_", "time_", "timezone_")):
        expected = _DATETIME_HINT
    elif kind.startswith("decimal_"):
        expected = _EXPECTED["decimal_text"]
    else:
        return MessageError(ErrorType.UNRECOGNISED_DATA_VALUE,
                            f"{path}: {show(value)}: {error['msg']}")
    return MessageError(ErrorType.UNRECOGNISED_DATA_VALUE,
                        f"{path}: {show(value)} is not {expected}")



def json_kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    return type(value).__name__
