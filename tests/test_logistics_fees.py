"""Logistics in the fee (issue 19 item 2): shipping legs priced by zone and item count,
the quote in its parts, subsidy rules on the logistics part alone, and the ledger
recording that part. The first tests are pure; the last need PostgreSQL.
"""

from __future__ import annotations

import datetime
import itertools
import re

import asyncpg
import pytest

from broker.policy import (
    TIER_CITY,
    TIER_NATIONAL,
    TIER_PROVINCE,
    RequestFacts,
    SupplierFacts,
    _location,
)
from schemas.money import Money
from schemas.settings import Settings
from schemas.zones import Zone, zone_between
from settlement.fee_logistics import LegPrices, Quote
from settlement.fees import (
    FeeError,
    fee_terms,
    load_fees,
    logistics_to_charge,
    parse_fees,
    quote,
    quote_parts,
    zone_of_agencies,
)
from settlement.ledger import check, post_charge, reverse
from settlement.subsidy import PART_LOGISTICS, SubsidyError, SubsidyRules, load_subsidy
from tests.support.agencies import sql_agencies
from tests.support.money import at, cny
from tests.support.names import budget_name, txn_id
from tests.support.paths import DOCS
from tests.support.settlement import fresh_year, sweep

D = datetime.date
LOGISTICS = ('logistics = { city = "8.00", province = "12.00", national = "25.00", '
             'per_extra_item = "2.00" }')


def _entry(body: str, kind: str = "BookLoan", supplier: str = "ISIL:CN-GSL") -> str:
    return (f'[[fee]]\nsupplier = "{supplier}"\nservice_kind = "{kind}"\n'
            f"effective_from = 2026-01-01\n{body}\n")


# --------------------------------------------------------------------------
# Zones
# --------------------------------------------------------------------------

@pytest.mark.parametrize(("requester", "supplier", "zone"), [
    (("甘肃", "兰州"), ("甘肃", "兰州"), Zone.CITY),
    (("甘肃", "兰州"), ("甘肃", "天水"), Zone.PROVINCE),
    (("新疆", "乌鲁木齐"), ("甘肃", "兰州"), Zone.NATIONAL),
    # One city name in two provinces: not the same city, and not the same province.
    (("吉林", "吉林"), ("辽宁", "吉林"), Zone.NATIONAL),
    # An unknown province does not stand in the way of a same-city match ...
    ((None, "兰州"), ("甘肃", "兰州"), Zone.CITY),
    # ... but an unknown location is never taken to be near.
    ((None, None), ("甘肃", "兰州"), Zone.NATIONAL),
    (("甘肃", None), ("甘肃", None), Zone.PROVINCE),
    (("甘肃", "兰州"), (None, None), Zone.NATIONAL),
])
def test_the_zone_between_two_places(requester: tuple[str | None, str | None],
                                     supplier: tuple[str | None, str | None],
                                     zone: Zone) -> None:
    assert zone_between(*requester, *supplier) is zone


def test_the_zone_is_the_rule_of_the_routing_tiers() -> None:
    """Every combination of known, unknown and shared provinces and cities: the price
    zone and the routing tier (broker/policy.py `_location`) agree."""
    tier = {Zone.CITY: TIER_CITY, Zone.PROVINCE: TIER_PROVINCE, Zone.NATIONAL: TIER_NATIONAL}
    places = list(itertools.product((None, "甘肃", "吉林"), (None, "兰州", "吉林")))
    for (rp, rc), (sp, sc) in itertools.product(places, places):
        request = RequestFacts(requester="CALIS:A", province=rp, city=rc, service_type="Loan",
                               service_kind="BookLoan", id_types=frozenset(),
                               max_cost_minor=None, named_supplier=None, today=D(2026, 5, 1))
        supplier = SupplierFacts(symbol="CALIS:B", province=sp, city=sc, holds=frozenset(),
                                 quote_minor=None, fill_rate=None, turnaround_hours=None,
                                 open_requests=0, forwarded_today=0)
        assert tier[zone_between(rp, rc, sp, sc)] == _location(request, supplier)[0], (
            (rp, rc), (sp, sc))


# --------------------------------------------------------------------------
# Parsing
# --------------------------------------------------------------------------

@pytest.mark.parametrize(("text", "message"), [
    (_entry(f'per_article = "8.00"\n{LOGISTICS}', kind="PayPerView"),
     "fee[1] (ISIL:CN-GSL PayPerView): logistics: nothing is shipped for PayPerView"),
    (_entry('per_loan = "5.00"\nreturn_leg = true', kind="EBookLoan"),
     "fee[1] (ISIL:CN-GSL EBookLoan): return_leg: nothing is shipped for EBookLoan"),
    (_entry('service_fee = "6.00"\nlogistics = "8.00"'),
     "fee[1] (ISIL:CN-GSL BookLoan): logistics: must be a table of prices by zone"),
    (_entry('service_fee = "6.00"\nlogistics = { city = "8.00", province = "12.00" }'),
     "fee[1] (ISIL:CN-GSL BookLoan): logistics.national: is required"),
    (_entry('service_fee = "6.00"\nlogistics = { cty = "8.00", province = "12.00", '
            'national = "20.00" }'),
     "fee[1] (ISIL:CN-GSL BookLoan): logistics.cty: unknown key; did you mean "
     "'logistics.city'?"),
    (_entry('service_fee = "6.00"\nlogistics = { city = 8, province = "12.00", '
            'national = "20.00" }'),
     "fee[1] (ISIL:CN-GSL BookLoan): logistics.city: 8 must be an amount written as a "
     "decimal string"),
    (_entry('service_fee = "6.00"\nlogistics = { city = "8.00", province = "12.00", '
            'national = "20.00", per_extra_item = "-1.00" }'),
     "fee[1] (ISIL:CN-GSL BookLoan): logistics.per_extra_item: '-1.00' is negative"),
    (_entry('service_fee = "6.00"\nreturn_leg = true'),
     "fee[1] (ISIL:CN-GSL BookLoan): return_leg: prices the return like logistics"),
    (_entry(f'service_fee = "6.00"\n{LOGISTICS}\nreturn_leg = "yes"'),
     "fee[1] (ISIL:CN-GSL BookLoan): return_leg: 'yes' must be true"),
    (_entry(f'service_fee = "6.00"\n{LOGISTICS}\nreturn_leg = {{ city = "1.00" }}'),
     "fee[1] (ISIL:CN-GSL BookLoan): return_leg.province: is required"),
    (_entry(f'service_fee = "6.00"\ncourier_fee = "10.00"\n{LOGISTICS}'),
     "fee[1] (ISIL:CN-GSL BookLoan): courier_fee: a flat courier fee and logistics"),
    (_entry('return_leg = false'),
     "fee[1] (ISIL:CN-GSL BookLoan): return_leg: prices the return like logistics"),
    (_entry(''),
     "fee[1] (ISIL:CN-GSL BookLoan): service_fee / courier_fee: give at least one of them"),
    (_entry(LOGISTICS, kind="DocumentDelivery"),
     "fee[1] (ISIL:CN-GSL DocumentDelivery): base / per_page: give at least one of them"),
])
def test_logistics_errors_name_entry_and_field(text: str, message: str) -> None:
    with pytest.raises(FeeError) as err:
        parse_fees(text)
    assert message in str(err.value)


def test_a_loan_priced_by_its_shipping_alone_and_the_normalised_terms() -> None:
    [only_shipping] = parse_fees(_entry(LOGISTICS))
    assert only_shipping.fixed_minor == 0
    assert only_shipping.outbound == LegPrices(800, 1200, 2500, 200)
    assert only_shipping.return_leg is None
    [both, own] = parse_fees(
        _entry(f'service_fee = "6.00"\n{LOGISTICS}\nreturn_leg = true')
        + _entry('service_fee = "6.00"\nlogistics = { city = "8.00", province = "12.00", '
                 'national = "20.00" }\nreturn_leg = { city = "5.00", province = "5.00", '
                 'national = "9.00" }', supplier="ISIL:CN-QHL"))
    assert both.return_leg == both.outbound
    assert both.terms["logistics"] == {"city": "8.00", "province": "12.00",
                                       "national": "25.00", "per_extra_item": "2.00"}
    assert both.terms["return_leg"] is True
    assert own.terms["return_leg"] == {"city": "5.00", "province": "5.00", "national": "9.00"}


# --------------------------------------------------------------------------
# Quotes in their parts
# --------------------------------------------------------------------------

def test_quote_parts_by_zone_and_items() -> None:
    [terms] = parse_fees(_entry(f'service_fee = "6.00"\n{LOGISTICS}\nreturn_leg = true'))
    city = terms.quote_parts(zone=Zone.CITY)
    assert (city.service, city.outbound, city.return_leg) == (
        cny("6.00"), cny("8.00"), cny("8.00"))
    assert (city.logistics, city.total, city.zone, city.items) == (
        cny("16.00"), cny("22.00"), Zone.CITY, 1)
    # Two volumes within 甘肃: 12.00 + 2.00 each way.
    province = terms.quote_parts(zone=Zone.PROVINCE, items=2)
    assert (province.outbound, province.return_leg, province.total) == (
        cny("14.00"), cny("14.00"), cny("34.00"))
    # Three volumes to 新疆: 25.00 + 2 x 2.00 each way.
    national = terms.quote_parts(zone=Zone.NATIONAL, items=3)
    assert (national.outbound, national.total) == (cny("29.00"), cny("64.00"))
    assert national.describe() == ("64.00 CNY = service 6.00 + outbound 29.00 + return 29.00 "
                                   "(national, 3 items)")
    # Where nobody knows the zone, the loan is priced as national; `quote` is the total.
    assert terms.quote_parts().zone is Zone.NATIONAL
    assert terms.quote() == cny("56.00")
    assert terms.quote(zone=Zone.CITY, items=2) == cny("26.00")
    with pytest.raises(ValueError, match="items must be a whole number, 1 or more"):
        terms.quote_parts(items=0)


def test_the_return_leg_is_charged_only_when_priced() -> None:
    [one_way] = parse_fees(_entry(f'service_fee = "6.00"\n{LOGISTICS}'))
    parts = one_way.quote_parts(zone=Zone.PROVINCE)
    assert (parts.outbound, parts.return_leg, parts.total) == (
        cny("12.00"), cny("0.00"), cny("18.00"))


def test_entries_without_logistics_quote_as_before() -> None:
    [loan, copy] = parse_fees(
        _entry('service_fee = "10.00"\ncourier_fee = "15.00"')
        + _entry('base = "2.00"\nper_page = "0.30"', kind="DocumentDelivery"))
    parts = loan.quote_parts(zone=Zone.CITY, items=4)
    assert parts == Quote(cny("25.00"), cny("0.00"), cny("0.00"))
    assert parts.describe() == "25.00 CNY" and loan.quote() == cny("25.00")
    assert copy.quote(pages=10) == cny("5.00")


def test_a_copy_or_loan_is_shipped_only_when_supplied_as_a_loan() -> None:
    [terms] = parse_fees(_entry(f'base = "3.00"\nper_page = "0.50"\n{LOGISTICS}\n'
                                "return_leg = true", kind="DocumentDelivery"))
    assert terms.quote(pages=4) == cny("5.00")                 # a copy: nothing shipped
    assert terms.quote_parts(pages=4, loan=True, zone=Zone.CITY).total == cny("21.00")


def test_the_logistics_part_to_charge_never_exceeds_the_fee() -> None:
    parts = Quote(cny("6.00"), cny("25.00"), cny("25.00"), zone=Zone.NATIONAL)
    assert logistics_to_charge(cny("56.00"), parts) == cny("50.00")
    # The supplier charged less than the quote: the cut comes off the service first.
    assert logistics_to_charge(cny("40.00"), parts) == cny("40.00")
    assert logistics_to_charge(None, parts) is None
    assert logistics_to_charge(cny("6.00"), Quote(cny("6.00"), cny("0"), cny("0"))) is None
    assert logistics_to_charge(Money.from_decimal("56.00", "USD"), parts) is None


def test_the_documented_logistics_entry_costs_what_its_comment_says() -> None:
    entries = parse_fees((DOCS / "fees.example.toml").read_text("utf-8"))
    [gsl] = [e for e in entries if e.supplier == "ISIL:CN-GSL"]
    assert gsl.quote(zone=Zone.CITY, items=2) == cny("26.00")
    assert gsl.quote(zone=Zone.NATIONAL, items=2) == cny("60.00")


# --------------------------------------------------------------------------
# Subsidy rules on the logistics part
# --------------------------------------------------------------------------

def test_a_rules_part_is_parsed_and_checked() -> None:
    rules = SubsidyRules.from_toml('[[rule]]\nname = "ship"\npart = "logistics"\n'
                                   "percent = 50\n")
    assert rules.rules[0].part == PART_LOGISTICS
    assert rules.to_dict()["rule"][0]["part"] == "logistics"
    assert SubsidyRules.from_dict(rules.to_dict()) == rules
    # The default is left out of the normalised form: existing files keep their label.
    plain = SubsidyRules.from_toml('[[rule]]\nname = "all"\npercent = 50\n')
    assert "part" not in plain.to_dict()["rule"][0]
    assert plain.version_label == SubsidyRules.from_toml(
        '[[rule]]\nname = "all"\npart = "fee"\npercent = 50\n').version_label
    with pytest.raises(SubsidyError, match=r"rule\[1\] 'ship': part: 'shipping' is not one "
                                           "of fee, logistics"):
        SubsidyRules.from_toml('[[rule]]\nname = "ship"\npart = "shipping"\npercent = 50\n')


def _western_example() -> str:
    """The commented western-shipping example of docs/subsidy.example.toml, uncommented."""
    text = (DOCS / "subsidy.example.toml").read_text("utf-8")
    block = re.search(r"# --- western shipping ---\n(.*?)# --- end ---", text, re.S)
    assert block is not None
    return "".join(line[2:] + "\n" if line.startswith("# ") else "\n"
                   for line in block.group(1).splitlines())


def test_the_documented_western_shipping_rule_parses() -> None:
    rules = SubsidyRules.from_toml(_western_example())
    [rule] = rules.rules
    assert rule.part == PART_LOGISTICS and rule.percent_bp == 5000
    assert rule.requesters is not None and "CALIS:XJU" in rule.requesters
    # Added to the documented file, before its whole-fee rules, as its comment says.
    doc = (DOCS / "subsidy.example.toml").read_text("utf-8")
    head, _, rules_part = doc.partition("# Rules:")
    both = SubsidyRules.from_toml(head + _western_example() + "# Rules:" + rules_part)
    assert [r.name for r in both.rules][:2] == ["western shipping",
                                                "SHL free book loans, October"]


# --------------------------------------------------------------------------
# PostgreSQL: schedules, quotes, postings, subsidies, the ledger's check
# --------------------------------------------------------------------------

async def test_a_schedule_with_logistics_is_stored_and_quoted_by_zone(
        pool: asyncpg.Pool) -> None:
    [gsl] = await sql_agencies(pool, "甘肃省图书馆", province="甘肃", city="兰州")
    [lzu] = await sql_agencies(pool, "兰州大学图书馆", province="甘肃", city="兰州")
    [tsu] = await sql_agencies(pool, "天水师范学院图书馆", province="甘肃", city="天水")
    [xju] = await sql_agencies(pool, "新疆大学图书馆", province="新疆", city="乌鲁木齐")
    [old] = await sql_agencies(pool, "国家图书馆", province="北京", city="北京")
    day = D(2026, 5, 1)
    async with pool.acquire() as conn:
        await load_fees(conn, _entry(f'service_fee = "6.00"\n{LOGISTICS}\nreturn_leg = true',
                                     supplier=gsl)
                        + _entry('service_fee = "20.00"\ncourier_fee = "18.00"', supplier=old))
        zones = {r: await zone_of_agencies(conn, r, gsl) for r in (lzu, tsu, xju)}
        assert zones == {lzu: Zone.CITY, tsu: Zone.PROVINCE, xju: Zone.NATIONAL}
        assert await zone_of_agencies(conn, "T0:NOBODY", gsl) is Zone.NATIONAL
        parts = await quote_parts(conn, gsl, "BookLoan", on=day, zone=zones[xju], items=2)
        assert parts is not None
        assert (parts.service, parts.outbound, parts.return_leg, parts.total) == (
            cny("6.00"), cny("27.00"), cny("27.00"), cny("60.00"))
        assert await quote(conn, gsl, "BookLoan", on=day, zone=zones[lzu]) == cny("22.00")
        assert await quote(conn, old, "BookLoan", on=day, zone=Zone.NATIONAL) == cny("38.00")
        # What dispatch reads today (the columns of migration 0014) prices no shipping:
        # its quotes do not change until it asks for the legs.
        row = await conn.fetchrow(
            "SELECT entry, supplier, service_kind, currency, effective_from, effective_to, "
            "fixed_minor, per_page_minor, per_hour_minor, assumed_pages, assumed_hours "
            "FROM fee_terms_in_force('BookLoan', $1) WHERE supplier = $2", day, gsl)
        assert row is not None and fee_terms(row).quote() == cny("6.00")
        full = await conn.fetchrow("SELECT * FROM fee_terms_in_force('BookLoan', $1) "
                                   "WHERE supplier = $2", day, gsl)
        assert full is not None
        assert fee_terms(full).quote(zone=Zone.PROVINCE) == cny("30.00")
        legs = await conn.fetch(
            "SELECT l.leg, l.national_minor FROM fee_logistics l JOIN fee_schedule f "
            "ON f.id = l.schedule_id WHERE f.supplier = $1 ORDER BY l.leg", gsl)
        assert [(r["leg"], r["national_minor"]) for r in legs] == [
            ("outbound", 2500), ("return", 2500)]


async def test_a_shipping_subsidy_grants_only_on_the_logistics_part(
        pool: asyncpg.Pool, settings: Settings) -> None:
    year = await fresh_year(pool)
    [gsl] = await sql_agencies(pool, "甘肃省图书馆", province="甘肃", city="兰州")
    [xju] = await sql_agencies(pool, "新疆大学图书馆", province="新疆", city="乌鲁木齐")
    west, members = budget_name("west-shipping"), budget_name("members")
    async with pool.acquire() as conn:
        version = await load_subsidy(conn, f"""
[[budget]]
name = "{west}"
per = "global"
period = "month"
amount = "5000.00"
[[budget]]
name = "{members}"
per = "requester"
period = "month"
amount = "300.00"
[[rule]]
name = "western shipping"
when = {{ service_kind = ["BookLoan"], requester = ["{xju}"] }}
part = "logistics"
percent = 50
cap = "30.00"
budgets = ["{west}"]
[[rule]]
name = "reader support"
when = {{ requester = ["{xju}"] }}
percent = 50
cap = "20.00"
budgets = ["{members}"]
""")
        on = at(f"{year}-03-10")
        # A two-volume loan from 兰州 to 乌鲁木齐: 6.00 + 27.00 + 27.00.
        fee, shipping = cny("60.00"), cny("54.00")
        loan = txn_id()
        result = await post_charge(
            conn, transaction_id=loan, event="Loaned", requester=xju, supplier=gsl,
            service_kind="BookLoan", fee=fee, quote=fee, on=on, title="敦煌遗书总目",
            subsidy_version=version, logistics=shipping)
        # Half the shipping (27.00), then half of the 33.00 left (16.50).
        assert [(g.rule, g.part, g.wanted, g.granted) for g in result.grants] == [
            ("western shipping", "logistics", 2700, 2700), ("reader support", "fee", 1650, 1650)]
        assert (result.fee, result.logistics, result.subsidy, result.patron_share) == (
            fee, shipping, cny("43.50"), cny("16.50"))
        # The same rule on a loan without shipping in its fee gives nothing.
        plain = await post_charge(
            conn, transaction_id=txn_id(), event="Loaned", requester=xju, supplier=gsl,
            service_kind="BookLoan", fee=cny("6.00"), quote=cny("6.00"), on=on,
            subsidy_version=version)
        assert [(g.rule, g.granted) for g in plain.grants] == [("reader support", 300)]
        assert plain.logistics == cny("0.00")
        # A logistics cap: 50 % of 80.00 is 40.00, capped at 30.00.
        capped = await post_charge(
            conn, transaction_id=txn_id(), event="Loaned", requester=xju, supplier=gsl,
            service_kind="BookLoan", fee=cny("86.00"), quote=None, on=on,
            subsidy_version=version, logistics=cny("80.00"))
        assert capped.grants[0].granted == 3000 and capped.grants[0].part == "logistics"
        # A part larger than the fee, or in another currency, is the caller's bug.
        for bad in (cny("60.01"), Money.from_decimal("1.00", "USD")):
            with pytest.raises(ValueError, match="logistics part"):
                await post_charge(
                    conn, transaction_id=txn_id(), event="Loaned", requester=xju,
                    supplier=gsl, service_kind="BookLoan", fee=fee, quote=None, on=on,
                    subsidy_version=version, logistics=bad)
        # A reversal mirrors the part, and gives the shipping subsidy back.
        back = await reverse(conn, transaction_id=loan, event="Loaned", reason="cancelled",
                             on=at(f"{year}-03-11"))
        assert back is not None and back.logistics == cny("-54.00")
        assert [(g.part, g.granted) for g in back.grants] == [
            ("logistics", -2700), ("fee", -1650)]
        spent = await conn.fetchval("SELECT spent_minor FROM subsidy_budget WHERE name = $1",
                                    west)
        assert spent == 3000                       # only the capped loan's grant is left
        assert await check(conn) == []
    await sweep(pool, settings, year)


async def test_the_ledger_refuses_and_reports_a_logistics_part_out_of_bounds(
        pool: asyncpg.Pool) -> None:
    req, sup = await sql_agencies(pool, "运费馆", "供应馆")
    insert = """INSERT INTO ledger_posting (transaction_id, event, kind, requester, supplier,
                    service_kind, currency, fee_minor, subsidy_minor, patron_share_minor,
                    occurred_at, local_date, logistics_minor)
                VALUES ($1, 'Loaned', 'charge', $2, $3, 'BookLoan', 'CNY', 1000, 0, 1000,
                        now(), date '1900-01-01', $4) RETURNING id"""
    async with pool.acquire() as conn:
        # Written behind the ledger's back, and rolled back: the database is shared.
        tr = conn.transaction()
        await tr.start()
        try:
            with pytest.raises(asyncpg.CheckViolationError,
                               match="ledger_posting_logistics_within_fee"):
                await conn.fetchval(insert, txn_id(), req, sup, 1001)
        finally:
            await tr.rollback()
        tr = conn.transaction()
        await tr.start()
        try:
            pid = await conn.fetchval(insert, txn_id(), req, sup, 200)
            await conn.execute(
                "INSERT INTO subsidy_grant (posting_id, position, rule, wanted_minor, "
                "granted_minor, part) VALUES ($1, 1, 'ship', 300, 300, 'logistics')", pid)
            problems = await check(conn)
        finally:
            await tr.rollback()
    assert (f"posting {pid}: its grants on the logistics part sum to 300, more than that "
            "part 200") in problems
