"""The routing policy engine: pure unit tests, no servers.

The network is a small CALIS-like consortium: universities in 上海, 北京 and 广东,
the national library, Shanghai Library (book loans), an NSTL-like institute and a
pay-per-view vendor, under a dozen realistic rules.
"""

from __future__ import annotations

import dataclasses
import datetime
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from broker.holdings import ID_TYPES as HOLDINGS_ID_TYPES
from broker.policy import (
    ID_TYPES,
    Excluded,
    Policy,
    PolicyError,
    Ranked,
    RequestFacts,
    Rota,
    SupplierFacts,
)
from tests.support.paths import DOCS

EXAMPLE = DOCS / "policy.example.toml"

REGIONS: dict[str, tuple[str | None, str | None]] = {
    "CALIS:FDU": ("上海", "上海"),      # 复旦
    "CALIS:SJTU": ("上海", "上海"),     # 上海交大
    "CALIS:ECNU": ("上海", "上海"),     # 华东师大
    "CALIS:SHU": ("上海", "上海"),      # 上海大学
    "ISIL:CN-SHL": ("上海", "上海"),    # 上海图书馆
    "CALIS:PKU": ("北京", "北京"),
    "CALIS:THU": ("北京", "北京"),
    "NLC:CN": ("北京", "北京"),         # 国家图书馆
    "NSTL:CN": ("北京", "北京"),        # NSTL-like institute
    "VENDOR:CNKI": ("北京", "北京"),    # pay-per-view vendor
    "CALIS:SYSU": ("广东", "广州"),
    "CALIS:SCUT": ("广东", "广州"),
    "CALIS:SZU": ("广东", "深圳"),
    "ISIL:CN-SZL": ("广东", "深圳"),    # 深圳图书馆
    "CALIS:LZU": ("甘肃", "兰州"),
    "CALIS:XJU": ("新疆", "乌鲁木齐"),
}

POLICY_TOML = """
version = "test-1"

[groups]
national = ["NLC:CN"]
public = ["ISIL:CN-SHL", "ISIL:CN-SZL"]
institutes = ["NSTL:CN"]
vendors = ["VENDOR:CNKI"]
985 = ["CALIS:PKU", "CALIS:THU", "CALIS:FDU", "CALIS:SJTU", "CALIS:SYSU", "CALIS:LZU"]
universities = ["group:985", "CALIS:ECNU", "CALIS:SHU", "CALIS:SCUT", "CALIS:SZU", "CALIS:XJU"]
west = ["CALIS:LZU", "CALIS:XJU"]

[[rule]]
name = "PPV via vendor"
when = { service_kind = ["PayPerView"] }
include = ["group:vendors"]

[[rule]]
name = "no vendors outside PPV"
when = { service_kind = ["DocumentDelivery", "BookLoan", "EBookLoan", "ProxySearch"] }
exclude = ["group:vendors"]

[[rule]]
name = "no loans from institutes"
when = { service_kind = ["BookLoan"] }
exclude = ["group:institutes"]

[[rule]]
name = "national library books"
when = { service_kind = ["BookLoan"] }
prefer = ["group:national"]

[[rule]]
name = "NSTL for STM"
when = { service_kind = ["DocumentDelivery"], id_type = ["issn", "doi_prefix"] }
prefer = ["group:institutes"]
prefer_tier = 2
prefer_bonus = 0.2

[[rule]]
name = "west: national first"
when = { requester = ["group:west"] }
prefer = ["group:national"]
prefer_tier = 1

[[rule]]
name = "National Day"
closed = { dates = [2026-10-01, 2026-10-02, 2026-10-03, 2026-10-04, 2026-10-05,
                    2026-10-06, 2026-10-07], suppliers = ["group:universities"] }

[[rule]]
name = "SHL weekend"
when = { service_kind = ["BookLoan"] }
closed = { weekdays = ["Sat", "Sun"], suppliers = ["ISIL:CN-SHL"] }

[[rule]]
name = "summer: SYSU closed"
when = { date_from = 2026-07-15, date_to = "2026-08-31" }
exclude = ["CALIS:SYSU"]

[[rule]]
name = "daily quotas"
daily_cap = { "NLC:CN" = 200, "group:vendors" = 1000 }

[[rule]]
name = "cheap: short rota"
when = { max_cost_below = "10.00" }
max_candidates = 3

[[rule]]
name = "expensive: premium suppliers"
when = { max_cost_at_least = "100.00" }
prefer = ["group:985"]
prefer_bonus = 0.1

[[rule]]
name = "document delivery last resort"
when = { service_kind = ["DocumentDelivery"] }
last_resort = ["NLC:CN", "NSTL:CN"]
"""

WEDNESDAY = datetime.date(2026, 9, 16)


@pytest.fixture(scope="module")
def policy() -> Policy:
    return Policy.from_toml(POLICY_TOML)


def req(requester: str = "CALIS:SHU", *, kind: str = "DocumentDelivery",
        service_type: str = "Copy", ids: tuple[str, ...] = ("issn",),
        max_cost: int | None = 5000, named: str | None = None,
        today: datetime.date = WEDNESDAY) -> RequestFacts:
    province, city = REGIONS.get(requester, (None, None))
    return RequestFacts(requester=requester, province=province, city=city,
                        service_type=service_type, service_kind=kind,
                        id_types=frozenset(ids), max_cost_minor=max_cost,
                        named_supplier=named, today=today)


def sup(symbol: str, *, holds: tuple[str, ...] = ("issn",), quote: int | None = 1000,
        fill: float | None = 0.85, tat: float | None = 48.0, open_: int = 0,
        fwd: int = 0) -> SupplierFacts:
    province, city = REGIONS.get(symbol, (None, None))
    return SupplierFacts(symbol=symbol, province=province, city=city, holds=frozenset(holds),
                         quote_minor=quote, fill_rate=fill, turnaround_hours=tat,
                         open_requests=open_, forwarded_today=fwd)


def ranked(rota: Rota) -> list[str]:
    return [r.symbol for r in rota.ranked]


def entry(rota: Rota, symbol: str) -> Ranked:
    return next(r for r in rota.ranked if r.symbol == symbol)


def why(rota: Rota, symbol: str) -> str:
    reason = rota.excluded_reason(symbol)
    assert reason is not None, f"{symbol} is not excluded; rota {ranked(rota)}"
    return reason


# --------------------------------------------------------------------------
# The documented example and the normalised form
# --------------------------------------------------------------------------

def test_documented_example_is_a_valid_policy() -> None:
    p = Policy.from_toml(EXAMPLE.read_text(encoding="utf-8"))
    assert p.version_label == "2026-autumn-1"
    assert len(p.rule_names) >= 12
    assert p.groups_of("CALIS:FDU") == {"985", "universities"}
    assert p.groups_of("VENDOR:CNKI") == {"ppv_vendors", "vendors"}


def test_to_dict_is_json_and_round_trips(policy: Policy) -> None:
    d = policy.to_dict()
    json.dumps(d, ensure_ascii=False)
    again = Policy.from_dict(json.loads(json.dumps(d)))
    assert again.to_dict() == d
    assert again.version_label == "test-1"
    rule = next(r for r in d["rule"] if r["name"] == "summer: SYSU closed")
    assert rule["when"] == {"date_from": "2026-07-15", "date_to": "2026-08-31"}
    cheap = next(r for r in d["rule"] if r["name"] == "cheap: short rota")
    assert cheap["when"] == {"max_cost_below": "10.00"}
    national = next(r for r in d["rule"] if r["name"] == "national library books")
    assert national["prefer_bonus"] == 0.3  # the default is written out


def test_unlabelled_policy_gets_a_content_hash_label() -> None:
    text = POLICY_TOML.replace('version = "test-1"', "")
    a, b = Policy.from_toml(text), Policy.from_toml(text)
    assert a.version_label.startswith("sha256:") and a.version_label == b.version_label
    changed = Policy.from_toml(text.replace("max_candidates = 3", "max_candidates = 4"))
    assert changed.version_label != a.version_label
    assert Policy.default().version_label == "default"


def test_id_types_are_those_of_the_holdings_index() -> None:
    assert ID_TYPES == HOLDINGS_ID_TYPES


def test_a_symbol_belongs_to_its_groups_and_their_enclosing_groups(policy: Policy) -> None:
    assert policy.groups_of("CALIS:LZU") == {"985", "universities", "west"}
    assert policy.groups_of("CALIS:SCUT") == {"universities"}  # through a nested group too
    assert policy.groups_of("ISIL:CN-SHL") == {"public"}
    assert policy.groups_of("CALIS:NOBODY") == frozenset()


# --------------------------------------------------------------------------
# Tiers and the scorecard
# --------------------------------------------------------------------------

def test_same_city_before_same_province_before_national(policy: Policy) -> None:
    suppliers = [sup(s, holds=("isbn",)) for s in
                 ("CALIS:PKU", "CALIS:FDU", "CALIS:SYSU", "ISIL:CN-SZL", "CALIS:SCUT")]
    rota = policy.rota(req("CALIS:SZU", ids=("isbn",)), suppliers)
    assert ranked(rota) == ["ISIL:CN-SZL", "CALIS:SCUT", "CALIS:SYSU", "CALIS:FDU", "CALIS:PKU"]
    assert [r.tier for r in rota.ranked] == [1, 2, 2, 3, 3]
    assert "tier 1: same city 深圳" in entry(rota, "ISIL:CN-SZL").reasons
    assert "tier 2: same province 广东" in entry(rota, "CALIS:SCUT").reasons
    assert "tier 3: national, other province 上海" in entry(rota, "CALIS:FDU").reasons
    assert "holds isbn" in entry(rota, "CALIS:PKU").reasons


def test_a_poor_local_supplier_still_comes_before_a_good_national_one(policy: Policy) -> None:
    rota = policy.rota(req(), [sup("CALIS:PKU", fill=0.99, tat=5),
                               sup("CALIS:FDU", fill=0.30, tat=200, open_=40)])
    assert ranked(rota)[:2] == ["CALIS:FDU", "CALIS:PKU"]


def test_unknown_location_is_national(policy: Policy) -> None:
    nowhere = dataclasses.replace(sup("CALIS:FDU"), province=None, city=None)
    rota = policy.rota(req(), [nowhere])
    assert rota.ranked[0].tier == 3
    assert "tier 3: national, supplier location unknown" in rota.ranked[0].reasons


def test_scorecard_orders_within_a_tier(policy: Policy) -> None:
    rota = policy.rota(req(), [
        sup("CALIS:ECNU", fill=0.60),
        sup("CALIS:FDU", fill=0.95),
        sup("CALIS:SJTU", fill=0.80),
    ])
    assert ranked(rota) == ["CALIS:FDU", "CALIS:SJTU", "CALIS:ECNU"]
    assert "fill rate 0.95" in entry(rota, "CALIS:FDU").reasons
    scores = [r.score for r in rota.ranked]
    assert scores == sorted(scores, reverse=True)


def test_faster_and_cheaper_win_when_fill_rates_are_equal(policy: Policy) -> None:
    rota = policy.rota(req(), [sup("CALIS:FDU", tat=96), sup("CALIS:SJTU", tat=12)])
    assert ranked(rota) == ["CALIS:SJTU", "CALIS:FDU"]
    assert "turnaround 12.0 h (speed 0.80)" in entry(rota, "CALIS:SJTU").reasons
    rota = policy.rota(req(), [sup("CALIS:FDU", quote=3000), sup("CALIS:SJTU", quote=800)])
    assert ranked(rota) == ["CALIS:SJTU", "CALIS:FDU"]
    assert "quote 8.00 CNY within max 50.00" in entry(rota, "CALIS:SJTU").reasons


def test_a_newcomer_gets_the_prior(policy: Policy) -> None:
    rota = policy.rota(req(), [sup("CALIS:FDU", fill=0.75), sup("CALIS:SJTU", fill=None, tat=None)])
    new = entry(rota, "CALIS:SJTU")
    assert "no history yet (prior 0.7)" in new.reasons
    assert "no turnaround history (neutral speed 0.50)" in new.reasons
    assert ranked(rota) == ["CALIS:FDU", "CALIS:SJTU"]


def test_load_spreads_work(policy: Policy) -> None:
    busy, idle = sup("CALIS:FDU", open_=30), sup("CALIS:SJTU", open_=0)
    rota = policy.rota(req(), [busy, idle])
    assert ranked(rota) == ["CALIS:SJTU", "CALIS:FDU"]
    assert "30 open requests (load 0.75)" in entry(rota, "CALIS:FDU").reasons
    assert "no open requests" in entry(rota, "CALIS:SJTU").reasons
    # A clearly better supplier keeps its place under moderate load.
    rota = policy.rota(req(), [sup("CALIS:FDU", fill=0.98, open_=5), sup("CALIS:SJTU", fill=0.6)])
    assert ranked(rota) == ["CALIS:FDU", "CALIS:SJTU"]


def test_ties_are_broken_by_symbol_whatever_the_input_order(policy: Policy) -> None:
    suppliers = [sup(s) for s in ("CALIS:SJTU", "CALIS:ECNU", "CALIS:FDU")]
    a = policy.rota(req(), suppliers)
    b = policy.rota(req(), list(reversed(suppliers)))
    assert ranked(a) == ["CALIS:ECNU", "CALIS:FDU", "CALIS:SJTU"]
    assert a == b


def test_every_rank_explains_its_score(policy: Policy) -> None:
    r = policy.rota(req(), [sup("CALIS:FDU")]).ranked[0]
    assert r.reasons[-1].startswith(f"score {r.score:.3f} = fill 0.850 + speed 0.250")


# --------------------------------------------------------------------------
# Rule actions
# --------------------------------------------------------------------------

def test_exclusion_by_rule_and_by_group(policy: Policy) -> None:
    loan = req(kind="BookLoan", service_type="Loan", ids=("isbn",))
    rota = policy.rota(loan, [sup("NSTL:CN", holds=("isbn",)), sup("CALIS:PKU", holds=("isbn",))])
    assert ranked(rota) == ["CALIS:PKU"]
    assert why(rota, "NSTL:CN") == ("excluded by rule 'no loans from institutes' "
                                    "via group institutes")
    # The same institute is welcome for a copy.
    rota = policy.rota(req(), [sup("NSTL:CN"), sup("CALIS:PKU")])
    assert "NSTL:CN" in ranked(rota)


def test_a_preferred_partner_gets_a_bonus_within_its_tier(policy: Policy) -> None:
    loan = req(kind="BookLoan", service_type="Loan", ids=("isbn",))
    rota = policy.rota(loan, [sup("CALIS:PKU", holds=("isbn",)), sup("NLC:CN", holds=("isbn",))])
    assert ranked(rota) == ["NLC:CN", "CALIS:PKU"]
    nlc, pku = entry(rota, "NLC:CN"), entry(rota, "CALIS:PKU")
    assert "rule 'national library books': preferred partner via group national (+0.30)" \
        in nlc.reasons
    assert nlc.score == pytest.approx(pku.score + 0.3)
    assert nlc.tier == pku.tier == 3
    assert "national library books" in rota.rules_applied


def test_prefer_tier_moves_a_supplier_up(policy: Policy) -> None:
    rota = policy.rota(req(), [sup("CALIS:PKU", fill=0.99), sup("NSTL:CN", fill=0.5),
                               sup("CALIS:FDU")])
    assert ranked(rota) == ["CALIS:FDU", "NSTL:CN", "CALIS:PKU"]
    nstl = entry(rota, "NSTL:CN")
    assert nstl.tier == 2
    assert "rule 'NSTL for STM': moved to tier 2" in nstl.reasons
    # Only for STM articles: a copy requested by title stays national.
    rota = policy.rota(req(ids=("title_key",)), [sup("NSTL:CN", holds=("title_key",))])
    assert rota.ranked[0].tier == 3


def test_west_requesters_get_the_national_library_first(policy: Policy) -> None:
    suppliers = [sup("CALIS:PKU"), sup("NLC:CN", fill=0.5), sup("CALIS:FDU")]
    rota = policy.rota(req("CALIS:XJU"), suppliers)
    assert ranked(rota)[0] == "NLC:CN"
    assert entry(rota, "NLC:CN").tier == 1
    assert "west: national first" in rota.rules_applied
    rota = policy.rota(req("CALIS:SHU"), suppliers)
    assert "west: national first" not in rota.rules_applied
    assert ranked(rota)[0] == "CALIS:FDU"


def test_ppv_vendor_is_included_for_pay_per_view_only(policy: Policy) -> None:
    suppliers = [sup("CALIS:FDU"), sup("VENDOR:CNKI", holds=(), quote=1500)]
    ppv = policy.rota(req(kind="PayPerView"), suppliers)
    assert ranked(ppv) == ["CALIS:FDU", "VENDOR:CNKI"]
    vendor = entry(ppv, "VENDOR:CNKI")
    assert vendor.tier == 4
    assert "no holdings match; included by rule 'PPV via vendor' via group vendors" \
        in vendor.reasons
    copy = policy.rota(req(kind="DocumentDelivery"), suppliers)
    assert ranked(copy) == ["CALIS:FDU"]
    assert why(copy, "VENDOR:CNKI").startswith("holds nothing matching")
    # Even with a holdings match, the vendor is out for anything but pay-per-view.
    copy = policy.rota(req(kind="DocumentDelivery"), [sup("VENDOR:CNKI")])
    assert why(copy, "VENDOR:CNKI") == ("excluded by rule 'no vendors outside PPV' "
                                        "via group vendors")


def test_an_included_partner_in_the_requesters_city_keeps_its_local_tier(policy: Policy) -> None:
    rota = policy.rota(req("CALIS:PKU", kind="PayPerView"), [sup("VENDOR:CNKI", holds=())])
    assert rota.ranked[0].tier == 1


def test_last_resort_is_appended_in_listed_order(policy: Policy) -> None:
    suppliers = [sup("CALIS:FDU"), sup("CALIS:PKU"),
                 sup("NSTL:CN", holds=()), sup("NLC:CN", holds=())]
    rota = policy.rota(req(), suppliers)
    assert ranked(rota) == ["CALIS:FDU", "CALIS:PKU", "NLC:CN", "NSTL:CN"]
    assert [r.tier for r in rota.ranked] == [1, 3, 4, 4]
    assert entry(rota, "NLC:CN").reasons[0] == "last resort (rule 'document delivery last resort')"
    # A last-resort supplier that holds the item is ranked normally, not appended twice.
    suppliers[2] = sup("NSTL:CN")
    rota = policy.rota(req(), suppliers)
    assert ranked(rota) == ["CALIS:FDU", "NSTL:CN", "CALIS:PKU", "NLC:CN"]
    # Not for book loans: the rule does not apply.
    loan = policy.rota(req(kind="BookLoan", service_type="Loan"), suppliers)
    assert "NLC:CN" not in ranked(loan)


def test_a_supplier_at_its_daily_cap_is_skipped_with_the_reason(policy: Policy) -> None:
    loan = req(kind="BookLoan", service_type="Loan")
    rota = policy.rota(loan, [sup("NLC:CN", fwd=200), sup("CALIS:PKU")])
    assert ranked(rota) == ["CALIS:PKU"]
    assert why(rota, "NLC:CN") == ("daily cap 200 reached: 200 forwarded today "
                                   "(rule 'daily quotas')")
    rota = policy.rota(loan, [sup("NLC:CN", fwd=199), sup("CALIS:PKU")])
    assert ranked(rota) == ["NLC:CN", "CALIS:PKU"]
    ppv = policy.rota(req(kind="PayPerView"), [sup("VENDOR:CNKI", fwd=1000)])
    assert why(ppv, "VENDOR:CNKI") == ("daily cap 1000 reached: 1000 forwarded today "
                                       "(rule 'daily quotas' via group vendors)")


def test_a_supplier_closed_on_a_date_is_skipped_on_that_date_only(policy: Policy) -> None:
    suppliers = [sup("CALIS:FDU"), sup("ISIL:CN-SHL"), sup("CALIS:PKU")]
    rota = policy.rota(req(today=datetime.date(2026, 10, 1)), suppliers)
    assert ranked(rota) == ["ISIL:CN-SHL"]  # the public library is open on National Day
    assert why(rota, "CALIS:FDU") == "closed on 2026-10-01 (rule 'National Day')"
    rota = policy.rota(req(today=datetime.date(2026, 10, 8)), suppliers)
    assert ranked(rota) == ["CALIS:FDU", "ISIL:CN-SHL", "CALIS:PKU"]


def test_a_weekend_closing_skips_book_loans_but_not_copies(policy: Policy) -> None:
    suppliers = [sup("ISIL:CN-SHL", holds=("isbn",)), sup("CALIS:FDU", holds=("isbn",))]
    saturday, friday = datetime.date(2026, 9, 19), datetime.date(2026, 9, 18)
    loan = req(kind="BookLoan", service_type="Loan", ids=("isbn",), today=saturday)
    rota = policy.rota(loan, suppliers)
    assert ranked(rota) == ["CALIS:FDU"]
    assert why(rota, "ISIL:CN-SHL") == "closed on Saturdays, today 2026-09-19 (rule 'SHL weekend')"
    assert ranked(policy.rota(dataclasses.replace(loan, today=friday), suppliers)) == \
        ["CALIS:FDU", "ISIL:CN-SHL"]
    # Copies are scanned on Saturdays too: the closing applies to book loans only.
    copy = req(ids=("isbn",), today=saturday)
    assert "ISIL:CN-SHL" in ranked(policy.rota(copy, suppliers))


@pytest.mark.parametrize(("day", "applies"), [
    (datetime.date(2026, 7, 14), False),
    (datetime.date(2026, 7, 15), True),
    (datetime.date(2026, 8, 1), True),
    (datetime.date(2026, 8, 31), True),
    (datetime.date(2026, 9, 1), False),
])
def test_rule_date_window_is_inclusive(policy: Policy, day: datetime.date, applies: bool) -> None:
    rota = policy.rota(req("CALIS:SZU", today=day), [sup("CALIS:SYSU"), sup("CALIS:SCUT")])
    assert ("summer: SYSU closed" in rota.rules_applied) is applies
    if applies:
        assert ranked(rota) == ["CALIS:SCUT"]
        assert why(rota, "CALIS:SYSU") == "excluded by rule 'summer: SYSU closed'"
    else:
        assert ranked(rota) == ["CALIS:SCUT", "CALIS:SYSU"]


def test_quote_above_maximum_costs_is_skipped_but_no_fee_schedule_is_not(policy: Policy) -> None:
    suppliers = [sup("CALIS:FDU", quote=8000), sup("CALIS:SJTU", quote=None),
                 sup("CALIS:ECNU", quote=5000)]
    rota = policy.rota(req(max_cost=5000), suppliers)
    assert why(rota, "CALIS:FDU") == "quote 80.00 CNY above maximumCosts 50.00"
    assert set(ranked(rota)) == {"CALIS:SJTU", "CALIS:ECNU"}  # equal to the maximum is fine
    assert "no fee schedule for DocumentDelivery" in entry(rota, "CALIS:SJTU").reasons
    assert "quote 50.00 CNY within max 50.00" in entry(rota, "CALIS:ECNU").reasons
    unlimited = policy.rota(req(max_cost=None), suppliers)
    assert "CALIS:FDU" in ranked(unlimited)
    assert "quote 80.00 CNY, no maximumCosts" in entry(unlimited, "CALIS:FDU").reasons


def test_rules_on_maximum_costs_read_none_as_no_limit(policy: Policy) -> None:
    suppliers = [sup("CALIS:PKU", fill=0.9), sup("NLC:CN", holds=("issn",), fill=0.95)]
    def applied(max_cost: int | None) -> tuple[str, ...]:
        return policy.rota(req(max_cost=max_cost), suppliers).rules_applied

    # No maximumCosts counts as "no limit": above every threshold, below none.
    assert "expensive: premium suppliers" in applied(10000)
    assert "expensive: premium suppliers" in applied(None)
    assert "expensive: premium suppliers" not in applied(9999)
    assert "cheap: short rota" in applied(999)
    assert "cheap: short rota" not in applied(1000)
    assert "cheap: short rota" not in applied(None)
    rota = policy.rota(req(max_cost=20000), suppliers)
    assert ranked(rota) == ["CALIS:PKU", "NLC:CN"]  # +0.1 for the 985 university


def test_max_candidates_truncates_but_keeps_last_resort(policy: Policy) -> None:
    suppliers = [sup(s, quote=500) for s in
                 ("CALIS:FDU", "CALIS:SJTU", "CALIS:ECNU", "CALIS:PKU", "CALIS:THU")]
    suppliers.append(sup("NLC:CN", holds=(), quote=500))
    rota = policy.rota(req(max_cost=800), suppliers)
    assert ranked(rota) == ["CALIS:ECNU", "CALIS:FDU", "CALIS:SJTU", "NLC:CN"]
    assert why(rota, "CALIS:PKU") == ("ranked 4 of 5, beyond max_candidates 3 "
                                      "(rule 'cheap: short rota')")
    assert why(rota, "CALIS:THU").startswith("ranked 5 of 5")


def test_rules_applied_are_listed_in_file_order(policy: Policy) -> None:
    rota = policy.rota(req(kind="BookLoan", service_type="Loan", ids=("isbn",)), [])
    # A rule without `when` always applies, even if (as here) its closing days are not today.
    assert rota.rules_applied == ("no vendors outside PPV", "no loans from institutes",
                                  "national library books", "National Day", "SHL weekend",
                                  "daily quotas")
    assert rota == Rota((), (), rota.rules_applied)


# --------------------------------------------------------------------------
# Named supplier, the requester itself, missing facts
# --------------------------------------------------------------------------

def test_named_supplier_goes_first(policy: Policy) -> None:
    suppliers = [sup("CALIS:FDU"), sup("CALIS:SJTU"), sup("CALIS:PKU", fill=0.4)]
    rota = policy.rota(req(named="CALIS:PKU"), suppliers)
    assert ranked(rota)[0] == "CALIS:PKU"
    assert rota.ranked[0].reasons[0] == "named by the requester"
    assert rota.ranked[0].tier == 3
    assert ranked(rota)[1:] == ["CALIS:FDU", "CALIS:SJTU"]
    # Also when the union catalogue does not show the item there.
    rota = policy.rota(req(named="CALIS:THU"), [*suppliers, sup("CALIS:THU", holds=())])
    assert ranked(rota)[0] == "CALIS:THU"
    assert "no holdings match in the union catalogue" in rota.ranked[0].reasons


def test_named_but_excluded_supplier_is_explained(policy: Policy) -> None:
    national_day = datetime.date(2026, 10, 2)
    suppliers = [sup("CALIS:PKU"), sup("NLC:CN")]
    rota = policy.rota(req(named="CALIS:PKU", today=national_day), suppliers)
    assert ranked(rota) == ["NLC:CN"]
    assert why(rota, "CALIS:PKU") == ("named by the requester, but closed on 2026-10-02 "
                                      "(rule 'National Day')")
    rota = policy.rota(req(named="CALIS:NOWHERE"), suppliers)
    assert why(rota, "CALIS:NOWHERE") == ("named by the requester, but no facts from dispatch: "
                                          "not a known active supplier")
    assert ranked(rota) == ["CALIS:PKU", "NLC:CN"]


def test_requester_never_routes_to_itself(policy: Policy) -> None:
    suppliers = [sup("CALIS:FDU"), sup("CALIS:SJTU"), sup("NLC:CN", holds=())]
    rota = policy.rota(req("CALIS:FDU", named="CALIS:FDU"), suppliers)
    assert "CALIS:FDU" not in ranked(rota)
    assert why(rota, "CALIS:FDU") == "named by the requester, but is the requester"
    # Not even as its own last resort.
    rota = policy.rota(req("NLC:CN"), suppliers)
    assert ranked(rota) == ["CALIS:FDU", "CALIS:SJTU"]
    assert why(rota, "NLC:CN") == "is the requester"


def test_rule_suppliers_without_facts_are_never_routed_to_blind(policy: Policy) -> None:
    rota = policy.rota(req(), [sup("CALIS:FDU")])
    assert ranked(rota) == ["CALIS:FDU"]
    assert why(rota, "NLC:CN") == "no facts from dispatch: not a known active supplier"
    assert policy.extra_suppliers(req(named="CALIS:PKU")) == {"NLC:CN", "NSTL:CN", "CALIS:PKU"}
    assert policy.extra_suppliers(req(kind="PayPerView")) == {"VENDOR:CNKI"}


def test_duplicate_supplier_facts_are_a_dispatch_bug(policy: Policy) -> None:
    with pytest.raises(ValueError, match="CALIS:FDU given twice"):
        policy.rota(req(), [sup("CALIS:FDU"), sup("CALIS:FDU")])


def test_default_policy_is_holdings_tiers_and_scorecard() -> None:
    p = Policy.default()
    suppliers = [sup("CALIS:PKU"), sup("CALIS:FDU"), sup("VENDOR:CNKI", holds=()),
                 sup("NLC:CN", holds=())]
    rota = p.rota(req(kind="PayPerView"), suppliers)
    assert ranked(rota) == ["CALIS:FDU", "CALIS:PKU"]
    assert rota.rules_applied == ()
    assert rota.excluded == (
        Excluded("NLC:CN", "holds nothing matching (request identifiers: issn)"),
        Excluded("VENDOR:CNKI", "holds nothing matching (request identifiers: issn)"),
    )
    assert p.to_dict()["rule"] == []


# --------------------------------------------------------------------------
# Validation: every error names the rule and the field
# --------------------------------------------------------------------------

HEAD = '[groups]\nvendors = ["VENDOR:CNKI"]\n\n[[rule]]\nname = "first"\nexclude = ["NLC:CN"]\n\n'


@pytest.mark.parametrize(("body", "message"), [
    ('[[rule]]\nname = "no loans from vendors"\nexclude = ["group:vendor"]\n',
     "rule[2] 'no loans from vendors': exclude: unknown group 'vendor' (known groups: vendors)"),
    ('[[rule]]\nname = "PPV via vendor"\nwhen = { service_kind = ["PayPerVeiw"] }\n'
     'include = ["group:vendors"]\n',
     "rule[2] 'PPV via vendor': when.service_kind: 'PayPerVeiw' is not one of DocumentDelivery, "
     "BookLoan, PayPerView, EBookLoan, ProxySearch"),
    ('[[rule]]\nname = "first"\nexclude = ["NSTL:CN"]\n',
     "rule[2] 'first': name: duplicate of rule[1]"),
    ('[[rule]]\nname = "summer"\nwhen = { date_from = "2026-02-30" }\nexclude = ["NLC:CN"]\n',
     "rule[2] 'summer': when.date_from: '2026-02-30' is not a calendar date"),
    ('[[rule]]\nname = "summer"\nwhen = { date_to = "next week" }\nexclude = ["NLC:CN"]\n',
     "rule[2] 'summer': when.date_to: 'next week' is not a date (YYYY-MM-DD)"),
    ('[[rule]]\nname = "holiday"\nclosed = { dates = ["2026-13-01"], suppliers = ["NLC:CN"] }\n',
     "rule[2] 'holiday': closed.dates: '2026-13-01' is not a calendar date"),
    ('[[rule]]\nname = "quota"\ndaily_cap = { "NLC:CN" = -1 }\n',
     "rule[2] 'quota': daily_cap.NLC:CN: -1 is not a whole number of requests (0 or more)"),
    ('[[rule]]\nname = "quota"\ndaily_cap = { "group:vendor" = 5 }\n',
     "rule[2] 'quota': daily_cap.group:vendor: unknown group 'vendor'"),
    ('[[rule]]\nname = "typo"\nexlude = ["NLC:CN"]\n',
     "rule[2] 'typo': exlude: unknown key; did you mean 'exclude'?"),
    ('[[rule]]\nname = "typo"\nwhen = { service_knd = ["BookLoan"] }\nexclude = ["NLC:CN"]\n',
     "rule[2] 'typo': when.service_knd: unknown key; did you mean 'when.service_kind'?"),
    ('[[rule]]\nname = "typo"\nclosed = { weekday = ["Sun"], suppliers = ["NLC:CN"] }\n',
     "rule[2] 'typo': closed.weekday: unknown key; did you mean 'closed.weekdays'?"),
    ('[[rule]]\nname = "weekend"\nclosed = { weekdays = ["Sunday"], suppliers = ["NLC:CN"] }\n',
     "rule[2] 'weekend': closed.weekdays: 'Sunday' is not one of Mon, Tue, Wed, Thu, Fri, "
     "Sat, Sun"),
    ('[[rule]]\nname = "weekend"\nclosed = { weekdays = ["Sun"] }\n',
     "rule[2] 'weekend': closed.suppliers: is required"),
    ('[[rule]]\nname = "cheap"\nwhen = { max_cost_below = 10 }\nmax_candidates = 3\n',
     "rule[2] 'cheap': when.max_cost_below: 10 must be an amount in yuan written as a decimal "
     "string"),
    ('[[rule]]\nname = "cheap"\nwhen = { max_cost_below = "9.999" }\nmax_candidates = 3\n',
     "rule[2] 'cheap': when.max_cost_below: '9.999' must be an amount in yuan"),
    ('[[rule]]\nname = "band"\nwhen = { max_cost_at_least = "30.00", max_cost_below = "30.00" }\n'
     'max_candidates = 3\n',
     "rule[2] 'band': when.max_cost_below: 30.00 must be above max_cost_at_least 30.00"),
    ('[[rule]]\nname = "window"\nwhen = { date_from = 2026-09-01, date_to = 2026-08-01 }\n'
     'exclude = ["NLC:CN"]\n',
     "rule[2] 'window': when.date_to: 2026-08-01 is before date_from 2026-09-01"),
    ('[[rule]]\nname = "short"\nmax_candidates = 0\n',
     "rule[2] 'short': max_candidates: must be an integer of at least 1, not 0"),
    ('[[rule]]\nname = "tier"\nprefer = ["NLC:CN"]\nprefer_tier = 5\n',
     "rule[2] 'tier': prefer_tier: 5 is not one of 1, 2, 3, 4"),
    ('[[rule]]\nname = "bonus"\nexclude = ["NSTL:CN"]\nprefer_bonus = 0.5\n',
     "rule[2] 'bonus': prefer_bonus: needs a prefer list to apply to"),
    ('[[rule]]\nname = "bonus"\nprefer = ["NLC:CN"]\nprefer_bonus = "high"\n',
     "rule[2] 'bonus': prefer_bonus: must be a number, not a string"),
    ('[[rule]]\nname = "who"\nexclude = ["NLC-CN"]\n',
     "rule[2] 'who': exclude: 'NLC-CN' is not an agency symbol or group:NAME"),
    ('[[rule]]\nname = "empty"\nwhen = { requester_province = [] }\nexclude = ["NLC:CN"]\n',
     "rule[2] 'empty': when.requester_province: must not be empty"),
    ('[[rule]]\nname = "idle"\nwhen = { service_kind = ["BookLoan"] }\n',
     "rule[2] 'idle': has no action"),
    ('[[rule]]\nexclude = ["NLC:CN"]\n', "rule[2]: name: is required"),
    ('rules = []\n', "policy: rules: unknown key; did you mean 'rule'?"),
])
def test_validation_errors_name_the_rule_and_field(body: str, message: str) -> None:
    text = HEAD + body if not body.startswith("rules") else body + HEAD
    with pytest.raises(PolicyError) as exc:
        Policy.from_toml(text)
    assert str(exc.value).startswith(message), str(exc.value)


@pytest.mark.parametrize(("text", "message"), [
    ('[groups]\na = ["group:b"]\nb = ["group:a"]\n',
     "groups: a: groups include each other in a cycle: a -> b -> a"),
    ('[groups]\nwest = ["CALIS:LZU", "group:east"]\n',
     "groups: west: unknown group 'east' (known groups: west)"),
    ('[groups]\n"west side" = ["CALIS:LZU"]\n',
     "groups: west side: a group name may contain only letters"),
    ('[scoring]\nload_weigth = 0.4\n',
     "scoring: load_weigth: unknown key; did you mean 'load_weight'?"),
    ('[scoring]\nprior_fill_rate = 1.5\n', "scoring: prior_fill_rate: 1.5 is not between 0 and 1"),
    ('[scoring]\ncost_half = 20\n', "scoring: cost_half: 20 must be an amount in yuan"),
    ('[rule]\nname = "x"\nexclude = ["NLC:CN"]\n',
     "policy: rule: must be an array of tables, written [[rule]]"),
    ('[[rule]]\nname = "x"\nwhen = { date_from = 2026-02-30 }\n', "policy: not valid TOML"),
])
def test_validation_errors_outside_rules(text: str, message: str) -> None:
    with pytest.raises(PolicyError) as exc:
        Policy.from_toml(text)
    assert str(exc.value).startswith(message), str(exc.value)


def test_policy_error_is_a_value_error() -> None:
    assert issubclass(PolicyError, ValueError)


# --------------------------------------------------------------------------
# Properties over random facts
# --------------------------------------------------------------------------

SYMBOLS = [*REGIONS, "CALIS:NEW1", "CALIS:NEW2"]
PLACES: list[tuple[str | None, str | None]] = [
    ("上海", "上海"), ("北京", "北京"), ("广东", "广州"), ("广东", "深圳"), ("甘肃", "兰州"),
    (None, None), ("上海", None), (None, "广州"),
]
DAYS = st.dates(min_value=datetime.date(2026, 7, 10), max_value=datetime.date(2026, 10, 12))
ID_SETS = st.frozensets(st.sampled_from(ID_TYPES), max_size=3)


@st.composite
def supplier_facts(draw: st.DrawFn, symbol: str) -> SupplierFacts:
    province, city = draw(st.sampled_from([REGIONS.get(symbol, (None, None)), *PLACES]))
    return SupplierFacts(
        symbol=symbol, province=province, city=city, holds=draw(ID_SETS),
        quote_minor=draw(st.none() | st.integers(0, 20000)),
        fill_rate=draw(st.none() | st.floats(0, 1)),
        turnaround_hours=draw(st.none() | st.floats(0, 500)),
        open_requests=draw(st.integers(0, 100)),
        forwarded_today=draw(st.integers(0, 1500)),
    )


@st.composite
def scenarios(draw: st.DrawFn) -> tuple[RequestFacts, list[SupplierFacts]]:
    symbols = draw(st.lists(st.sampled_from(SYMBOLS), unique=True, max_size=len(SYMBOLS)))
    suppliers = [draw(supplier_facts(s)) for s in symbols]
    requester = draw(st.sampled_from(SYMBOLS))
    province, city = draw(st.sampled_from([REGIONS.get(requester, (None, None)), *PLACES]))
    request = RequestFacts(
        requester=requester, province=province, city=city,
        service_type=draw(st.sampled_from(["Copy", "Loan", "CopyOrLoan"])),
        service_kind=draw(st.sampled_from(["DocumentDelivery", "BookLoan", "PayPerView",
                                           "EBookLoan", "ProxySearch"])),
        id_types=draw(ID_SETS.filter(bool)),
        max_cost_minor=draw(st.none() | st.integers(0, 20000)),
        named_supplier=draw(st.none() | st.sampled_from(SYMBOLS)),
        today=draw(DAYS),
    )
    return request, suppliers


@settings(max_examples=300, deadline=None)
@given(scenarios())
def test_any_rota_ranks_or_excludes_each_supplier_once_in_tier_order(
        scenario: tuple[RequestFacts, list[SupplierFacts]]) -> None:
    request, suppliers = scenario
    policy = Policy.from_toml(POLICY_TOML)
    rota = policy.rota(request, suppliers)
    symbols = ranked(rota)
    excluded = [e.symbol for e in rota.excluded]

    assert len(symbols) == len(set(symbols))
    assert len(excluded) == len(set(excluded))
    assert not set(symbols) & set(excluded)
    assert request.requester not in symbols
    # Every supplier dispatch asked about is accounted for, exactly once.
    assert {s.symbol for s in suppliers} <= set(symbols) | set(excluded)
    assert set(symbols) <= {s.symbol for s in suppliers}

    by_symbol = {s.symbol: s for s in suppliers}
    for r in rota.ranked:
        assert 1 <= r.tier <= 4
        assert r.reasons and all(isinstance(x, str) and x for x in r.reasons)
        quote = by_symbol[r.symbol].quote_minor
        if quote is not None and request.max_cost_minor is not None:
            assert quote <= request.max_cost_minor
    assert all(e.reason for e in rota.excluded)

    tiers = [r.tier for r in rota.ranked]
    if symbols and request.named_supplier == symbols[0]:
        assert rota.ranked[0].reasons[0] == "named by the requester"
        tiers = tiers[1:]
    assert tiers == sorted(tiers)
    if request.named_supplier is not None and request.named_supplier not in symbols:
        assert request.named_supplier in excluded

    assert policy.rota(request, list(reversed(suppliers))) == rota
