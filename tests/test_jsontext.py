"""schemas/jsontext.py: what the hub writes is the compact UTF-8 JSON it always wrote."""

from __future__ import annotations

import json

from schemas import jsontext


def test_the_text_is_the_standard_librarys_compact_utf8_json() -> None:
    value = {"request": {"title": "图书馆论坛", "n": 3, "price": 12.5, "ok": True,
                         "none": None, "ids": ["issn:1000-7776", {"深": ["层"]}]}}
    expected = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    assert jsontext.dumps_text(value) == expected
    assert jsontext.dumps(value) == expected.encode()
    assert json.loads(jsontext.dumps(value)) == value


def test_what_orjson_refuses_falls_back_to_the_standard_library() -> None:
    # A hostile message may carry an integer of hundreds of digits: kept as received.
    huge = {"n": 10 ** 40, 1: "a non-string key"}
    assert jsontext.dumps_text(huge) == '{"n":' + str(10 ** 40) + ',"1":"a non-string key"}'
