"""The rule-file forms shared by the policy, subsidy and fee files: pure unit tests, no servers.

Above all the one `[groups]` parser: the routing policy and the subsidy file read
their groups with it, so a group means the same in both and every error names the
section (`groups`) and the group, or the rule field that used it.
"""

from __future__ import annotations

import datetime
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import pytest

from broker.policy import Policy, PolicyError
from schemas.rulefile import (
    NO_GROUPS,
    Member,
    RuleFileError,
    SymbolGroups,
    check_date_range,
    check_keys,
    content_label,
    named_tables,
    optional_text,
    parse_choices,
    parse_currency,
    parse_decimal,
    parse_field,
    parse_toml,
    tables,
)
from settlement.subsidy import SubsidyError, SubsidyRules

GROUPS = {
    "985": ["CALIS:PKU", "CALIS:FDU", "CALIS:LZU"],
    "west": ["CALIS:LZU", "CALIS:XJU"],
    "universities": ["group:985", "CALIS:SHU", "group:west", "CALIS:SHU"],
    "all.members": ["group:universities", "NLC:CN"],
}


def error(raw: object) -> str:
    with pytest.raises(RuleFileError) as exc:
        SymbolGroups.parse(raw)
    return str(exc.value)


# --------------------------------------------------------------------------
# [groups]
# --------------------------------------------------------------------------

def test_groups_keep_what_was_written_and_expand_nested_groups() -> None:
    groups = SymbolGroups.parse(GROUPS)
    # As written, repeats dropped: what a stored version writes back.
    assert groups.to_dict()["universities"] == ["group:985", "CALIS:SHU", "group:west"]
    # Expanded: nested groups inlined, each agency once, first mention first.
    assert groups.members["universities"] == ("CALIS:PKU", "CALIS:FDU", "CALIS:LZU",
                                              "CALIS:SHU", "CALIS:XJU")
    assert groups.members["all.members"][-1] == "NLC:CN"
    assert groups.groups_of("CALIS:XJU") == {"west", "universities", "all.members"}
    assert groups.groups_of("CALIS:NOBODY") == frozenset()
    assert SymbolGroups.parse(groups.to_dict()) == groups


def test_an_empty_groups_table_is_no_groups() -> None:
    assert SymbolGroups.parse({}) == NO_GROUPS
    assert NO_GROUPS.to_dict() == {}


@pytest.mark.parametrize(("raw", "message"), [
    (["CALIS:PKU"], "groups: must be a table of name = [symbols], not a list"),
    ({"west side": ["CALIS:LZU"]},
     "groups: west side: a group name may contain only letters, digits, '_', '.' and '-'"),
    ({"west": "CALIS:LZU"}, "groups: west: must be a list of symbols, not a string"),
    ({"west": [42]},
     "groups: west: 42 must be a string: an agency symbol or group:NAME"),
    ({"west": ["CALIS-LZU"]},
     "groups: west: 'CALIS-LZU' is not an agency symbol or group:NAME"),
    ({"west": ["CALIS:LZU", "group:east"]},
     "groups: west: unknown group 'east' (known groups: west)"),
    ({"a": ["group:b"], "b": ["group:c"], "c": ["group:a"]},
     "groups: a: groups include each other in a cycle: a -> b -> c -> a"),
    ({"self": ["CALIS:PKU", "group:self"]},
     "groups: self: groups include each other in a cycle: self -> self"),
])
def test_group_errors_name_the_section_and_the_group(raw: object, message: str) -> None:
    assert error(raw).startswith(message), error(raw)


def test_a_group_may_be_used_before_it_is_defined() -> None:
    groups = SymbolGroups.parse({"all": ["group:later"], "later": ["NLC:CN"]})
    assert groups.members["all"] == ("NLC:CN",)


def test_expand_names_each_agency_once_with_the_group_it_came_through() -> None:
    groups = SymbolGroups.parse(GROUPS)
    refs, members = groups.expand(["CALIS:LZU", "group:west", "group:west"], "rule[1] 'x'",
                                  "include")
    assert refs == ["CALIS:LZU", "group:west"]
    assert members == (Member("CALIS:LZU", None), Member("CALIS:XJU", "west"))
    assert [m.label() for m in members] == ["", " via group west"]


@pytest.mark.parametrize(("value", "message"), [
    ("CALIS:LZU", "rule[1] 'x': include: must be a list of symbols or group:NAME, not a string"),
    (["group:east"],
     "rule[1] 'x': include: unknown group 'east' (known groups: 985, west, universities, "
     "all.members)"),
    (["group"], "rule[1] 'x': include: 'group' is not an agency symbol or group:NAME"),
])
def test_rule_fields_name_the_rule_and_field(value: object, message: str) -> None:
    with pytest.raises(RuleFileError) as exc:
        SymbolGroups.parse(GROUPS).expand(value, "rule[1] 'x'", "include")
    assert str(exc.value).startswith(message), str(exc.value)


def test_a_field_that_constrains_a_match_refuses_an_empty_list() -> None:
    groups = SymbolGroups.parse(GROUPS)
    assert groups.expand([], "rule[1] 'x'", "include") == ([], ())
    with pytest.raises(RuleFileError, match=r"^rule\[1\] 'x': when.requester: must be a "
                                            "non-empty list of symbols or group:NAME"):
        groups.expand_required([], "rule[1] 'x'", "when.requester")


def test_an_unknown_group_says_none_are_defined() -> None:
    with pytest.raises(RuleFileError, match=r"unknown group 'x' \(known groups: none defined\)"):
        NO_GROUPS.ref("group:x", "rule[1] 'x'", "exclude")


@pytest.mark.parametrize("text", [
    '[groups]\na = ["group:b"]\nb = ["group:a"]\n',
    '[groups]\nwest = ["CALIS:LZU", "group:east"]\n',
    '[groups]\n"west side" = ["CALIS:LZU"]\n',
    '[groups]\nwest = ["not a symbol"]\n',
])
def test_policy_and_subsidy_files_read_groups_alike(text: str) -> None:
    """One parser: the same table gives the same message, as each file's own error."""
    with pytest.raises(PolicyError) as policy:
        Policy.from_toml(text)
    with pytest.raises(SubsidyError) as subsidy:
        SubsidyRules.from_toml(text)
    assert str(policy.value) == str(subsidy.value) == error(parse_toml(text)["groups"])


def test_policy_and_subsidy_expand_groups_alike() -> None:
    text = ('[groups]\nwest = ["CALIS:LZU", "CALIS:XJU"]\n'
            'members = ["group:west", "CALIS:PKU"]\n')
    policy = Policy.from_toml(text)
    subsidy = SubsidyRules.from_toml(text)
    assert subsidy.groups["members"] == ("CALIS:LZU", "CALIS:XJU", "CALIS:PKU")
    assert policy.groups_of("CALIS:XJU") == {"west", "members"}
    assert policy.to_dict()["groups"] == subsidy.to_dict()["groups"]


# --------------------------------------------------------------------------
# The other shared forms
# --------------------------------------------------------------------------

def test_a_file_that_is_not_toml_is_refused() -> None:
    with pytest.raises(RuleFileError, match=r"^not valid TOML: "):
        parse_toml("[[rule]\n")


def test_unknown_keys_hint_and_nested_prefix() -> None:
    with pytest.raises(RuleFileError) as exc:
        check_keys({"service_knd": 1}, ("service_kind", "date_from"), "rule[2] 'x'", "when.")
    assert str(exc.value) == ("rule[2] 'x': when.service_knd: unknown key; did you mean "
                              "'when.service_kind'? (allowed: when.service_kind, when.date_from)")


def test_parse_field_names_where_and_field() -> None:
    with pytest.raises(RuleFileError, match=r"^fee\[1\] \(X:Y EBookLoan\): service_kind: "
                                            "'Loan' is not one of A, B"):
        parse_field("fee[1] (X:Y EBookLoan)", "service_kind", parse_choices, ["Loan"], ("A", "B"))
    # A top-level key has no entry to name.
    with pytest.raises(RuleFileError, match=r"^currency: currency 'yuan' is not an ISO 4217"):
        parse_field("", "currency", parse_currency, "yuan")


def test_choices_drop_repeats_and_refuse_empty_or_non_lists() -> None:
    assert parse_choices(["A", "B", "A"], ("A", "B")) == ["A", "B"]
    with pytest.raises(ValueError, match="must not be empty"):
        parse_choices([], ("A",))
    with pytest.raises(ValueError, match="must be a list of non-empty strings"):
        parse_choices("A", ("A",))


def test_optional_text_is_a_string_or_absent() -> None:
    assert optional_text({}, "note", "rule[1] 'x'") is None
    assert optional_text({"note": "hi"}, "note", "rule[1] 'x'") == "hi"
    with pytest.raises(RuleFileError, match=r"^rule\[1\] 'x': note: must be a string, "
                                            "not an integer"):
        optional_text({"note": 3}, "note", "rule[1] 'x'")


def test_a_date_range_may_be_one_day_or_open_but_not_reversed() -> None:
    day = datetime.date(2026, 10, 1)
    check_date_range(day, day, "rule[1] 'x'")             # one day
    check_date_range(day, None, "rule[1] 'x'")            # open-ended
    with pytest.raises(RuleFileError, match=r"^fee\[1\]: effective_to: 2026-09-30 is before "
                                            "effective_from 2026-10-01$"):
        check_date_range(day, datetime.date(2026, 9, 30), "fee[1]",
                         ("effective_from", "effective_to"))


def test_decimal_is_exact_as_written() -> None:
    assert parse_decimal(0.1, "is not a number") == Decimal("0.1")
    assert parse_decimal("12.50", "is not a number") == Decimal("12.50")
    for bad in (True, None, "ten", [1]):
        with pytest.raises(ValueError, match=r"is not a number$"):
            parse_decimal(bad, "is not a number")


@dataclass(frozen=True)
class _Item:
    name: str


def _item(i: int, table: Mapping[str, Any]) -> _Item:
    return _Item(table["name"])


def test_arrays_of_tables_are_numbered_and_named_once() -> None:
    data = {"rule": [{"name": "a"}, {"name": "b"}]}
    assert [i for i, _ in tables(data, "rule")] == [1, 2]
    assert [x.name for x in named_tables(data, "rule", _item)] == ["a", "b"]
    with pytest.raises(RuleFileError, match=r"^rule\[3\] 'a': name: duplicate of rule\[1\]$"):
        named_tables({"rule": [{"name": "a"}, {"name": "b"}, {"name": "a"}]}, "rule", _item)
    with pytest.raises(RuleFileError, match=r"^policy: rule: must be an array of tables, "
                                            r"written \[\[rule\]\]$"):
        list(tables({"rule": {"name": "a"}}, "rule", "policy"))
    with pytest.raises(RuleFileError, match=r"^budget\[2\]: must be a table, not an integer$"):
        list(tables({"budget": [{}, 3]}, "budget"))


def test_content_label_depends_on_content_only() -> None:
    a = content_label({"rule": [{"name": "x"}], "groups": {}})
    assert a == content_label({"groups": {}, "rule": [{"name": "x"}]})
    assert a.startswith("sha256:") and len(a) == len("sha256:") + 12
    assert a != content_label({"groups": {}, "rule": [{"name": "y"}]})
