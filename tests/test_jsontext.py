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


def test_a_copy_is_deep_and_equal_and_takes_what_orjson_refuses() -> None:
    body = {"request": {"notes": ["图书"], "ids": [{"a": 1.5}]}}
    copy = jsontext.copied(body)
    assert copy == body
    copy["request"]["notes"].append("changed")
    copy["request"]["ids"][0]["a"] = 2
    assert body == {"request": {"notes": ["图书"], "ids": [{"a": 1.5}]}}
    huge = {"n": [10 ** 40]}
    assert jsontext.copied(huge) == huge and jsontext.copied(huge)["n"] is not huge["n"]
