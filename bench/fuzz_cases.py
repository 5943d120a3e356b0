"""Hostile inbound messages for the fuzzer (bench/fuzz.py), drawn by hypothesis strategies.

Each `Case` is one AMQP publication by the fuzzing agency plus what the hub must
answer: a specific ISO 18626 ERROR confirmation (errorType, and an errorValue
naming the field or the problem), a dead letter with its reason, or OK for
hostile but valid input (unknown fields are kept, huge but valid values are
served). Categories follow issue #9: wrong types, missing and extra fields, huge
strings and arrays, deep nesting, invalid UTF-8 (and JSON text that no XML or
PostgreSQL text can hold), oversized bodies, wrong content_type, missing
message_id, hostile AMQP properties, spoofed header agencies, and valid messages
about other agencies' transactions.

Wrong-type and missing-field mutations are schema-driven: the valid base
messages are walked together with the pydantic models of schemas/iso18626.py,
so every element the contract defines is a target, with a wrong value chosen
for its kind (a string where an object belongs, a float where a decimal string
belongs, ...).

Bodies carry `CASE_ID`, a placeholder of the same length as the case id, which
the runner substitutes at publication; byte offsets in the expectations stay
right. The valid base messages and the schema walk are bench/fuzz_messages.py.
"""

from __future__ import annotations

import json
import random
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from hypothesis import HealthCheck, Phase, given, seed, settings
from hypothesis import strategies as st

from bench.fuzz_messages import (
    CASE_ID,
    REQUEST,
    REQUESTING,
    SUPPLYING,
    TIME,
    Slot,
    base_request,
    base_requesting,
    base_supplying,
    encode,
    put,
    remove,
    slots,
    wire_path,
)
from broker.intake import MAX_NESTING
from schemas.iso18626 import MESSAGE_MODELS
from schemas.iso18626_codes import MessageType
from sim.identifiers import issn_of as issn
from sim.messages import agency_id

CATEGORIES = ("wrong_type", "missing_field", "extra_field", "huge", "deep_nesting",
              "invalid_utf8", "oversized", "content_type", "missing_message_id",
              "properties", "spoofed_agency", "other_agency_txn", "valid")
# Shares of the cases: the cheap, many-branched categories more; oversized bodies
# (each a megabyte through the broker in the full run) fewer.
WEIGHTS = {"wrong_type": 14, "missing_field": 8, "extra_field": 7, "huge": 8,
           "deep_nesting": 7, "invalid_utf8": 9, "oversized": 4, "content_type": 6,
           "missing_message_id": 4, "properties": 8, "spoofed_agency": 8,
           "other_agency_txn": 8, "valid": 4}


@dataclass(frozen=True)
class Expect:
    """What the hub must do with a case.

    outcome: "ok" (OK confirmation), "error" (ERROR confirmation), "dead" (ERROR
    confirmation and a dead letter), "silent" (a dead letter and no answer: there
    is nobody to answer). Every string in `names` must appear in the errorValue
    (and the dead letter's reason), and at least one of `any_of` when given.
    """

    outcome: str
    error_types: tuple[str, ...] = ()
    names: tuple[str, ...] = ()
    any_of: tuple[str, ...] = ()


@dataclass
class Case:
    category: str
    note: str
    kind: str                              # routing key (and the AMQP type unless `amqp_type`)
    body: bytes | Callable[[], bytes]      # a callable for big bodies: built when published
    expect: Expect
    content_type: str | None = "application/json"
    amqp_type: str | None = None
    set_type: bool = False                 # True: publish `amqp_type` (even None) as the type
    anonymous: bool = False                # publish without user_id
    direct: bool = False                   # no message_id: only Intake.process can deliver it
    blank_message_id: str | None = None    # what a direct case carries instead (None or "")
    message_id_suffix: str = ""
    correlation_suffix: str = ""
    type_suffix: str = ""
    headers: dict[str, Any] = field(default_factory=dict)
    leak_check: bool = False               # the answer must not reveal a hub transaction id
    id: str = ""

    def payload(self) -> bytes:
        raw = self.body() if callable(self.body) else self.body
        return raw.replace(CASE_ID.encode(), self.id.encode())

    def expected(self) -> Expect:
        e = self.expect
        return Expect(e.outcome, e.error_types,
                      tuple(n.replace(CASE_ID, self.id) for n in e.names),
                      tuple(n.replace(CASE_ID, self.id) for n in e.any_of))


@dataclass(frozen=True)
class Targets:
    """Who is who: the fuzzing agency, another requester and its supplier, their requests."""

    me: str
    requester: str
    supplier: str
    their_requests: tuple[str, ...]
    hub: str
    limit: int                                # the hub's max_message_bytes


# --------------------------------------------------------------------------------------
# Value strategies
# --------------------------------------------------------------------------------------

# Text that any JSON, XML and PostgreSQL text can hold (Chinese included).
TEXT_CHARS = st.characters(codec="utf-8", exclude_characters="\x00")
text = st.text(TEXT_CHARS, max_size=24)
# No control characters: each would take six bytes as a JSON escape.
HUGE_CHARS = st.characters(codec="utf-8", exclude_categories=("Cc", "Cs"))
plain = st.text(st.characters(codec="ascii", categories=("L", "N")), min_size=1, max_size=12)
json_leaf = (st.none() | st.booleans() | st.integers(-10**12, 10**12)
             | st.floats(allow_nan=False, allow_infinity=False) | text)
json_value = st.recursive(json_leaf, lambda inner: st.lists(inner, max_size=4)
                          | st.dictionaries(text, inner, max_size=4), max_leaves=12)
small_list = st.lists(json_leaf, max_size=3)
small_dict = st.dictionaries(plain, json_leaf, max_size=3)
non_integral = st.floats(allow_nan=False, allow_infinity=False).filter(
    lambda f: f != int(f) if abs(f) < 1e300 else False)
_DATETIME = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}"
                       r"(\.[0-9]+)?(Z|[+-][0-9]{2}:[0-9]{2})?")
_DECIMAL = re.compile(r"[+-]?([0-9]+(\.[0-9]*)?|\.[0-9]+)")
# Strings pydantic's lax mode reads as booleans.
_BOOL_WORDS = {"0", "off", "f", "false", "n", "no", "1", "on", "t", "true", "y", "yes"}


def wrong_value(slot: Slot) -> st.SearchStrategy[Any]:
    """A value of the wrong kind for `slot` (never null, never a value the slot accepts)."""
    shape = slot.shape
    if shape == "str":
        return st.integers() | non_integral | st.booleans() | small_list | small_dict
    if shape == "enum":
        if slot.enum is None:
            raise ValueError(f"slot {slot.path!r} has the shape enum but no enum")
        members = {m.value for m in slot.enum}
        return (text.filter(lambda s: s not in members) | st.integers() | st.booleans()
                | small_list | small_dict)
    if shape == "datetime":
        return (text.filter(lambda s: not _DATETIME.fullmatch(s))
                | st.sampled_from(["2024-13-01T00:00:00Z", "2024-02-30T10:00:00Z",
                                   "2024-01-01T25:61:00Z", "2024-01-01T00:00:00+99:99"])
                | st.integers() | non_integral | st.booleans() | small_list | small_dict)
    if shape == "decimal":
        return (text.filter(lambda s: not _DECIMAL.fullmatch(s))
                | st.sampled_from(["12,50", "1e3", "NaN", "Infinity", "0x10", " 1"])
                | st.floats(allow_nan=False, allow_infinity=False) | st.booleans()
                | small_list | small_dict)
    if shape == "int":
        return (st.integers(max_value=-1) | non_integral | st.sampled_from(["first", "一", ""])
                | small_list | small_dict)
    if shape == "bool":
        return (text.filter(lambda s: s.strip().lower() not in _BOOL_WORDS)
                | non_integral | small_list | small_dict)
    if shape == "object":
        return text | st.integers() | non_integral | st.booleans() | small_list
    if shape == "list":
        return text | st.integers() | non_integral | st.booleans() | small_dict
    raise AssertionError(shape)


def checked_issn() -> st.SearchStrategy[str]:
    return st.integers(0, 9_999_999).map(issn)


# --------------------------------------------------------------------------------------
# The categories
# --------------------------------------------------------------------------------------

def _bases(t: Targets) -> dict[str, dict[str, Any]]:
    return {REQUEST: base_request(t.me), SUPPLYING: base_supplying(t.me, t.me),
            REQUESTING: base_requesting(t.me, t.supplier)}


def _error(*names: str, types_: tuple[str, ...] = ("UnrecognisedDataValue",),
           any_of: tuple[str, ...] = ()) -> Expect:
    return Expect("error", types_, names, any_of)


def _dead(*names: str, any_of: tuple[str, ...] = ()) -> Expect:
    return Expect("dead", ("BadlyFormedMessage",), names, any_of)


OK = Expect("ok")


@st.composite
def wrong_type(draw: st.DrawFn, t: Targets) -> Case:
    kind = draw(st.sampled_from([REQUEST, SUPPLYING, REQUESTING]))
    body = _bases(t)[kind]
    targets = list(slots(body[kind], MESSAGE_MODELS[MessageType(kind)]))
    slot = draw(st.sampled_from(targets))
    value = draw(wrong_value(slot))
    put(body, kind, slot.path, value)
    path = wire_path(kind, slot.path)
    # An empty string is an element left empty, which the hub reads as absent: where
    # that element is required (statusInfo.status, unless the message is a
    # Notification), "required element missing" (BadlyFormedMessage) is the answer.
    types_ = ("UnrecognisedDataValue", "BadlyFormedMessage") if value == "" \
        else ("UnrecognisedDataValue",)
    return Case("wrong_type", f"{path} := {json.dumps(value, ensure_ascii=False)[:60]}", kind,
                encode(body), _error(f"{path}: ", types_=types_))


@st.composite
def missing_field(draw: st.DrawFn, t: Targets) -> Case:
    kind = draw(st.sampled_from([REQUEST, SUPPLYING, REQUESTING]))
    body = _bases(t)[kind]
    how = draw(st.sampled_from(["element", "element", "element", "null", "inner", "body"]))
    if how == "inner":
        return Case("missing_field", f"{kind} is empty", kind, encode({kind: {}}),
                    _error(f"{kind}.header: required element missing",
                           types_=("BadlyFormedMessage",)))
    if how == "body":
        return Case("missing_field", "empty object", kind, b"{}",
                    _error("exactly one top-level key", types_=("BadlyFormedMessage",)))
    required = [s for s in slots(body[kind], MESSAGE_MODELS[MessageType(kind)]) if s.required]
    slot = draw(st.sampled_from(required))
    _varied(draw, body)
    path = wire_path(kind, slot.path)
    if how == "null":
        put(body, kind, slot.path, None)
    else:
        remove(body, kind, slot.path)
    return Case("missing_field", f"{path} {'null' if how == 'null' else 'left out'}", kind,
                encode(body), _error(f"{path}: required element missing",
                                     types_=("BadlyFormedMessage",)))


@st.composite
def extra_field(draw: st.DrawFn, t: Targets) -> Case:
    how = draw(st.sampled_from(["kept", "kept", "kept", "top_level", "unknown_message"]))
    if how == "top_level":
        body = base_request(t.me)
        body[draw(plain.filter(lambda k: k != REQUEST))] = draw(json_value)
        return Case("extra_field", "a second top-level key", REQUEST, encode(body),
                    _error("exactly one top-level key", types_=("BadlyFormedMessage",)))
    if how == "unknown_message":
        name = draw(plain.filter(lambda k: k not in {m.value for m in MessageType}))
        return Case("extra_field", f"message type {name!r}", REQUEST,
                    encode({name: draw(json_value)}),
                    _error("is not an ISO 18626 message type",
                           types_=("UnrecognisedDataElement",)))
    # Unknown elements anywhere in a valid request are kept and passed on: answered OK.
    body = base_request(t.me)
    objects = [s for s in slots(body[REQUEST], MESSAGE_MODELS[MessageType.REQUEST])
               if s.shape == "object"]
    where = draw(st.sampled_from([Slot((), "object", True), *objects]))
    target: Any = body[REQUEST]
    for part in where.path:
        target = target[part]
    count = draw(st.integers(1, 4))
    for _ in range(count):
        target["x" + draw(plain)] = draw(json_value)
    return Case("extra_field", f"{count} unknown element(s) in "
                f"{wire_path(REQUEST, where.path)}", REQUEST, encode(body), OK)


@st.composite
def huge(draw: st.DrawFn, t: Targets) -> Case:
    budget = int(t.limit * 0.8)
    piece = draw(st.text(HUGE_CHARS, min_size=1, max_size=8))
    size = draw(st.integers(budget // 20, budget))
    unit = max(1, len(piece.encode()))
    big = piece * max(1, size // unit // 2)   # escapes may double a character in JSON
    how = draw(st.sampled_from(["enum", "datetime", "valid_string", "request_id", "array_bad",
                                "array_wrong", "array_unknown", "top_array", "many_keys",
                                "big_number", "huge_number", "money"]))
    if how in ("enum", "datetime"):
        kind = draw(st.sampled_from([REQUEST, SUPPLYING, REQUESTING]))
        body = _bases(t)[kind]
        candidates = [s for s in slots(body[kind], MESSAGE_MODELS[MessageType(kind)])
                      if s.shape == how]
        slot = draw(st.sampled_from(candidates))
        if slot.enum is not None and big in {m.value for m in slot.enum}:
            big += "?"
        put(body, kind, slot.path, big)
        path = wire_path(kind, slot.path)
        return Case("huge", f"{len(big):,}-character string in {path}", kind,
                    _later(body), _error(f"{path}: "))
    if how == "valid_string":
        body = base_request(t.me)
        field_name = draw(st.sampled_from(["title", "author", "titleOfComponent", "sponsor"]))
        body[REQUEST]["bibliographicInfo"][field_name] = big
        return Case("huge", f"{len(big):,}-character bibliographicInfo.{field_name}", REQUEST,
                    _later(body), OK)
    if how == "request_id":
        body = base_requesting(t.me, t.supplier, request_id=CASE_ID + big)
        return Case("huge", f"{len(big):,}-character requestingAgencyRequestId", REQUESTING,
                    _later(body), _error(f"{REQUESTING}.header.requestingAgencyRequestId: "
                                         "no request"))
    count = draw(st.integers(2, max(2, budget // 120)))
    if how == "array_bad":
        body = base_request(t.me)
        ok = {"bibliographicItemIdentifier": "0000-0051", "bibliographicItemIdentifierCode": "ISSN"}
        items: list[Any] = [ok] * (count - 1) + [{"bibliographicItemIdentifier": 7,
                                                  "bibliographicItemIdentifierCode": "ISSN"}]
        body[REQUEST]["bibliographicInfo"]["bibliographicItemId"] = items
        path = f"request.bibliographicInfo.bibliographicItemId[{count - 1}]" \
               ".bibliographicItemIdentifier"
        return Case("huge", f"{count:,} identifiers, the last one bad", REQUEST, _later(body),
                    _error(f"{path}: "))
    if how == "array_wrong":
        body = base_request(t.me)
        body[REQUEST]["bibliographicInfo"]["title"] = [big[:10]] * count
        return Case("huge", f"{count:,}-element array as bibliographicInfo.title", REQUEST,
                    _later(body), _error("request.bibliographicInfo.title: an array is not "
                                         "a string"))
    if how == "array_unknown":
        body = base_request(t.me)
        leaf = draw(json_leaf)
        count = max(1, min(count, budget // (len(encode(leaf)) + 2)))
        body[REQUEST]["xBulk"] = [leaf] * count
        return Case("huge", f"{count:,}-element unknown array", REQUEST, _later(body), OK)
    if how == "top_array":
        return Case("huge", f"{count:,}-element top-level array", REQUEST,
                    _later([base_request(t.me)] * (count // 100 + 1)),
                    _error("must be a JSON object", types_=("BadlyFormedMessage",)))
    if how == "many_keys":
        keys = {f"k{i}": i for i in range(count)}
        return Case("huge", f"{count:,} top-level keys", REQUEST, _later(keys),
                    _error("exactly one top-level key", types_=("BadlyFormedMessage",)))
    if how in ("big_number", "huge_number"):
        # Python refuses to read integers of more than 4,300 digits (CVE-2020-10735).
        digits = draw(st.integers(20, 4000) if how == "big_number" else st.integers(4400, 20000))
        body = base_request(t.me)
        raw = encode(body)
        number = b"9" * digits
        raw = raw[:-2] + b', "xNumber": ' + number + raw[-2:]
        expect = OK if how == "big_number" else _dead("body is not JSON")
        return Case("huge", f"{digits:,}-digit integer in an unknown element", REQUEST, raw,
                    expect)
    # money: a maximum cost beyond any currency's range must be refused, not crash storage.
    digits = draw(st.integers(19, 400))
    body = base_request(t.me)
    body[REQUEST]["billingInfo"]["maximumCosts"]["monetaryValue"] = "9" * digits + ".00"
    return Case("huge", f"{digits}-digit maximumCosts", REQUEST, encode(body),
                _error("request.billingInfo.maximumCosts"))


def _later(body: Any) -> Callable[[], bytes]:
    """Big bodies are encoded at publication, so 10,000 cases fit in memory."""
    return lambda: encode(body)


@st.composite
def deep_nesting(draw: st.DrawFn, t: Targets) -> Case:
    depth = draw(st.integers(1, 60) | st.integers(60, 1200) | st.integers(1200, 50_000))
    opener, closer = draw(st.sampled_from([(b"[", b"]"), (b'{"a":', b"}")]))
    depth = min(depth, int(t.limit * 0.8) // len(opener + closer))  # stay under the size limit
    how = draw(st.sampled_from(["unknown_element", "whole_body", "unterminated"]))
    if how == "unknown_element":
        raw = encode(base_request(t.me))
        nested = opener * depth + b"1" + closer * depth
        body = raw[:-2] + b', "xDeep": ' + nested + raw[-2:]
        total = depth + 2    # {"request": {"xDeep": ...}}
        expect = OK if total <= MAX_NESTING else _dead("nested too deeply")
        return Case("deep_nesting", f"unknown element nested {depth} deep", REQUEST,
                    body, expect)
    if how == "whole_body":
        body = opener * depth + b"1" + closer * depth
        if depth > MAX_NESTING:
            expect = _dead("nested too deeply")
        elif opener == b"[":
            expect = _error("must be a JSON object", types_=("BadlyFormedMessage",))
        else:
            expect = _error("is not an ISO 18626 message type",
                            types_=("UnrecognisedDataElement",))
        return Case("deep_nesting", f"body nested {depth} deep", REQUEST, body, expect)
    return Case("deep_nesting", f"{depth} unclosed brackets", REQUEST, opener * depth,
                _dead(any_of=("nested too deeply", "body is not JSON")))


_BAD_UTF8 = [b"\xff", b"\xfe", b"\xc0\x80", b"\xed\xa0\x80", b"\x80", b"\xe4\xb8",
             b"\xf8\x88\x80\x80\x80", b"\xf4\x90\x80\x80"]


@st.composite
def invalid_utf8(draw: st.DrawFn, t: Targets) -> Case:
    how = draw(st.sampled_from(["bytes", "bytes", "garbage", "escape_nul", "escape_surrogate",
                                "raw_control", "bom"]))
    kind = draw(st.sampled_from([REQUEST, SUPPLYING, REQUESTING]))
    raw = encode(_bases(t)[kind])
    if how == "bytes":
        at = draw(st.integers(0, len(raw)))
        bad = draw(st.sampled_from(_BAD_UTF8))
        body = raw[:at] + bad + raw[at:]
        return Case("invalid_utf8", f"{bad!r} at byte {at}", kind, body, _utf8_expect(body))
    if how == "garbage":
        body = draw(st.binary(min_size=1, max_size=400).filter(lambda b: not _is_json(b)))
        return Case("invalid_utf8", f"{len(body)} random bytes", kind, body, _utf8_expect(body))
    if how == "raw_control":
        body = raw.replace("李四".encode(), b"\x00\x01", 1) if kind == REQUEST else \
            raw.replace(TIME.encode(), b"2026\x00", 1)
        return Case("invalid_utf8", "raw control character in a string", kind, body,
                    _dead("body is not JSON"))
    if how == "bom":
        return Case("invalid_utf8", "UTF-8 byte order mark", kind, b"\xef\xbb\xbf" + raw,
                    _dead("body is not JSON"))
    # JSON escapes for text no XML document or PostgreSQL text can hold.
    escape = "\\u0000" if how == "escape_nul" else draw(st.sampled_from(
        ["\\ud800", "\\udfff", "\\udbff"]))
    body_dict = _bases(t)[kind]
    strings = [s for s in slots(body_dict[kind], MESSAGE_MODELS[MessageType(kind)])
               if s.shape == "str"]
    slot = draw(st.sampled_from(strings))
    put(body_dict, kind, slot.path, "@@ESCAPE@@")
    body = encode(body_dict).replace(b"@@ESCAPE@@", b"x" + escape.encode() + b"y")
    what = "U+0000" if how == "escape_nul" else "surrogate"
    return Case("invalid_utf8", f"{escape} in {wire_path(kind, slot.path)}", kind, body,
                _error(f"{wire_path(kind, slot.path)}: ", what))


def _is_json(raw: bytes) -> bool:
    try:
        json.loads(raw.decode("utf-8"))
    except ValueError:
        return False
    return True


def _utf8_expect(body: bytes) -> Expect:
    try:
        body.decode("utf-8")
    except UnicodeDecodeError as exc:
        return _dead(f"body is not valid UTF-8 (byte {exc.start})")
    return _dead(any_of=("body is not JSON", "nested too deeply"))


@st.composite
def oversized(draw: st.DrawFn, t: Targets) -> Case:
    size = t.limit + draw(st.integers(1, 1) | st.integers(2, 64 * 1024))
    how = draw(st.sampled_from(["valid_json", "brackets", "invalid_utf8", "zeros"]))
    fill = {"brackets": b"[", "invalid_utf8": b"\xff", "zeros": b"\x00"}.get(how)

    def build(me: str = t.me, size: int = size, fill: bytes | None = fill) -> bytes:
        if fill is not None:
            return fill * size
        raw = encode(base_request(me))
        pad = b"x" * (size - len(raw) - len(b', "xPad": ""'))
        return raw[:-2] + b', "xPad": "' + pad + b'"' + raw[-2:]

    # A body that would crash, or fool, a parser: the size is refused before any parsing.
    return Case("oversized", f"{size:,} bytes of {how}", REQUEST, build,
                _dead(f"message body is {size} bytes", f"the limit is {t.limit}"))


_WRONG_TYPES = ["text/plain", "application/xml", "text/xml", "application/octet-stream",
                "application/jsonx", "json", "application/x-json", "application/json-patch+json",
                "multipart/form-data", "application/javascript", "text/json", "application"]


@st.composite
def content_type(draw: st.DrawFn, t: Targets) -> Case:
    value = draw(st.sampled_from([None, *_WRONG_TYPES]) | plain.map(lambda s: f"x/{s}"))
    kind = draw(st.sampled_from([REQUEST, SUPPLYING, REQUESTING]))
    return Case("content_type", f"content_type {value!r}", kind, encode(_bases(t)[kind]),
                _dead(f"content_type is {value!r}"), content_type=value)


def _varied(draw: st.DrawFn, body: dict[str, Any]) -> dict[str, Any]:
    """A valid body with an unknown element of drawn content: property cases differ too."""
    inner = next(iter(body.values()))
    inner["xFuzz"] = draw(json_value)
    return body


@st.composite
def missing_message_id(draw: st.DrawFn, t: Targets) -> Case:
    kind = draw(st.sampled_from([REQUEST, SUPPLYING, REQUESTING]))
    empty = draw(st.sampled_from([None, ""]))
    return Case("missing_message_id", f"message_id {empty!r} (through Intake.process)", kind,
                encode(_varied(draw, _bases(t)[kind])),
                _error("message_id is missing", types_=("BadlyFormedMessage",)), direct=True,
                blank_message_id=empty)


@st.composite
def properties(draw: st.DrawFn, t: Targets) -> Case:
    how = draw(st.sampled_from(["type_mismatch", "type_other", "no_user_id", "nul_message_id",
                                "nul_correlation_id", "nul_type", "odd_headers",
                                "dead_with_odd_headers"]))
    kind = draw(st.sampled_from([REQUEST, SUPPLYING, REQUESTING]))
    body = encode(_varied(draw, _bases(t)[kind]))
    if how == "type_mismatch":
        other = draw(st.sampled_from([k for k in (REQUEST, SUPPLYING, REQUESTING) if k != kind]))
        return Case("properties", f"AMQP type {other!r} on a {kind}", kind, body,
                    _error(f"AMQP type property {other!r} does not match",
                           types_=("BadlyFormedMessage",)), amqp_type=other, set_type=True)
    if how == "type_other":
        other = draw(plain.filter(lambda s: s != kind))
        return Case("properties", f"AMQP type {other!r}", kind, body,
                    _error(f"AMQP type property {other!r} does not match",
                           types_=("BadlyFormedMessage",)), amqp_type=other, set_type=True)
    if how == "no_user_id":
        return Case("properties", "no user_id", kind, body,
                    Expect("silent", (), ("no user_id",)), anonymous=True)
    if how.startswith("nul_"):
        prop = how[4:]
        case = Case("properties", f"NUL in {prop}", kind, body,
                    _dead(f"AMQP property {prop} contains U+0000"))
        setattr(case, {"message_id": "message_id_suffix", "correlation_id": "correlation_suffix",
                       "type": "type_suffix"}[prop], "\x00" + draw(plain))
        return case
    headers = draw(st.dictionaries(
        # (pamqp cannot encode negative integers above -256 in a header table)
        plain, st.none() | st.booleans() | st.integers(0, 2**31 - 1)
        | st.text(st.characters(codec="utf-8"), max_size=30)
        | st.lists(st.text(st.characters(codec="utf-8"), max_size=5), max_size=3),
        min_size=1, max_size=5))
    if how == "odd_headers":
        return Case("properties", f"headers {sorted(headers)}", REQUEST,
                    encode(base_request(t.me)), OK, headers=headers)
    return Case("properties", f"headers {sorted(headers)} on a dead letter", kind, body,
                _dead("content_type is 'text/plain'"), content_type="text/plain",
                headers=headers)


@st.composite
def spoofed_agency(draw: st.DrawFn, t: Targets) -> Case:
    kind = draw(st.sampled_from([REQUEST, SUPPLYING, REQUESTING]))
    someone = draw(st.sampled_from([t.requester, t.supplier, t.hub])
                   | st.tuples(plain, text.filter(bool)).map(lambda p: f"{p[0]}:{p[1]}"))
    if kind == REQUEST:
        body = base_request(t.me)
        body[REQUEST]["header"]["requestingAgencyId"] = agency_id(someone)
        field_name = "requestingAgencyId"
    elif kind == SUPPLYING:
        body = base_supplying(someone, t.requester, draw(st.sampled_from(t.their_requests)))
        field_name = "supplyingAgencyId"
    else:
        body = base_requesting(someone, t.supplier, draw(st.sampled_from(t.their_requests)),
                               draw(st.sampled_from(["Cancel", "Received", "StatusRequest"])))
        field_name = "requestingAgencyId"
    named = f"{agency_id(someone)['agencyIdType']}:{agency_id(someone)['agencyIdValue']}"
    return Case("spoofed_agency", f"{kind} naming {named!r} as {field_name}", kind, encode(body),
                _error(f"{kind}.header.{field_name}: {named!r} is not the sending agency"))


@st.composite
def other_agency_txn(draw: st.DrawFn, t: Targets) -> Case:
    request_id = draw(st.sampled_from(t.their_requests))
    if draw(st.booleans()):
        status = draw(st.sampled_from(["WillSupply", "CopyCompleted", "Unfilled", "Loaned",
                                       "Cancelled", "ExpectToSupply"]))
        body = _varied(draw, base_supplying(t.me, t.requester, request_id))
        body[SUPPLYING]["statusInfo"]["status"] = status
        if status != "CopyCompleted":
            del body[SUPPLYING]["deliveryInfo"]
        # Not on that transaction's rota: the answer must not even confirm it exists.
        return Case("other_agency_txn", f"{status} for {t.requester}'s {request_id}", SUPPLYING,
                    encode(body), _error(f"{SUPPLYING}.header.requestingAgencyRequestId: "
                                         f"no request {request_id!r}"), leak_check=True)
    action = draw(st.sampled_from(["Cancel", "Received", "Renew", "StatusRequest",
                                   "ShippedReturn"]))
    body = _varied(draw, base_requesting(t.me, t.supplier, request_id, action))
    return Case("other_agency_txn", f"{action} on {t.requester}'s {request_id}", REQUESTING,
                encode(body), _error(f"{REQUESTING}.header.requestingAgencyRequestId: "
                                     f"no request {request_id!r}"), leak_check=True)


@st.composite
def valid(draw: st.DrawFn, t: Targets) -> Case:
    body = base_request(t.me)
    info = body[REQUEST]["bibliographicInfo"]
    info["title"] = draw(text.filter(str.strip)) or "标题"
    info["bibliographicItemId"][0]["bibliographicItemIdentifier"] = draw(checked_issn())
    body[REQUEST]["serviceInfo"]["serviceType"] = draw(st.sampled_from(["Copy", "Loan",
                                                                         "CopyOrLoan"]))
    del body[REQUEST]["hubExtensions"]
    ct = draw(st.sampled_from(["application/json", "application/json; charset=utf-8",
                               "Application/JSON"]))
    return Case("valid", f"valid request, content_type {ct!r}", REQUEST, encode(body), OK,
                content_type=ct)


STRATEGIES = {"wrong_type": wrong_type, "missing_field": missing_field,
              "extra_field": extra_field, "huge": huge, "deep_nesting": deep_nesting,
              "invalid_utf8": invalid_utf8, "oversized": oversized,
              "content_type": content_type, "missing_message_id": missing_message_id,
              "properties": properties, "spoofed_agency": spoofed_agency,
              "other_agency_txn": other_agency_txn, "valid": valid}
if not set(STRATEGIES) == set(CATEGORIES) == set(WEIGHTS):
    raise RuntimeError("fuzz_cases: STRATEGIES, CATEGORIES and WEIGHTS name other categories")


def draw_cases(t: Targets, count: int, seed_value: int) -> list[Case]:
    """`count` cases from hypothesis (generation only: the hub, not a shrinker, is on trial).

    Each category gets its share of `count` by WEIGHTS (hypothesis alone would favour
    the first categories of a sampled_from), drawn by its own strategy; the cases are
    then shuffled so the hub sees the categories mixed. They are checked afterwards as
    one batch against the running hub, so a failure is reported with its case
    (category, what was done) rather than shrunk.
    """
    total = sum(WEIGHTS.values())
    shares = {name: max(1, count * WEIGHTS[name] // total) for name in CATEGORIES}
    shares["wrong_type"] += max(0, count - sum(shares.values()))
    cases: list[Case] = []
    for offset, name in enumerate(CATEGORIES):
        cases += _draw(STRATEGIES[name](t), shares[name], seed_value + offset)
    random.Random(seed_value).shuffle(cases)
    return cases[:count]


def _draw(strategy: st.SearchStrategy[Case], count: int, seed_value: int) -> list[Case]:
    drawn: list[Case] = []

    @settings(max_examples=count, database=None, deadline=None, phases=[Phase.generate],
              suppress_health_check=list(HealthCheck))
    @seed(seed_value)
    @given(strategy)
    def collect(case: Case) -> None:
        drawn.append(case)

    while len(drawn) < count:   # hypothesis may stop early on a small search space
        collect()
    return drawn[:count]
