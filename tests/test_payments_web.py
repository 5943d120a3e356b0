"""Payments and disputes on the pages and the REST API (issue 17): the centre's finance
office records payments and resolves disputes; a library's staff dispute a line of
their own statement; nobody sees an agency out of their reach.

A real settlement run (A borrows twice from B, C once from B, all unsubsidised) issues
the dues (dated by the real today); the hub's HTTP app (a real aiohttp server) runs
with its clock just after the period, in the distant past like the period, so an
accepted dispute's reversal lands in this test's own next period, and the statements
are inside their dispute window. People, sessions and tokens
are real accounts (tests/support/people.py, accounts.tokens). API answers are validated
against the served OpenAPI document with jsonschema, not the pydantic models.
"""

from __future__ import annotations

import datetime
import json
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import asyncpg
import pytest
from aiohttp.test_utils import TestServer
from jsonschema import Draft202012Validator
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

from accounts import tokens
from accounts.audit import Actor
from accounts.people import Person
from accounts.roles import Grant, Permission, Principal, Role, ScopeKind
from accounts.tokens import Scope, TokenError
from schemas.settings import Settings
from settlement import dues
from settlement.dues import Position
from settlement.run import settle
from tests.support.agencies import sql_agencies
from tests.support.money import at
from tests.support.operators import rows_of
from tests.support.people import make_person, signed_in
from tests.support.settlement import after, charge, fresh_year, no_subsidy, sweep
from web.app import make_app

PROBLEM = "application/problem+json"


# ---- pure: who may settle ---------------------------------------------------------------

def _principal(*grants: Grant) -> Principal:
    return Principal(1, "x", "X", frozenset(grants))


def test_only_consortium_wide_finance_settles_and_libraries_dispute_their_own() -> None:
    own = _principal(Grant(Role.FINANCE, ScopeKind.AGENCY, "CALIS:A"))
    centre = _principal(Grant(Role.FINANCE, ScopeKind.CONSORTIUM))
    staff = _principal(Grant(Role.LIBRARY_STAFF, ScopeKind.AGENCY, "CALIS:A"))
    auditor = _principal(Grant(Role.AUDITOR, ScopeKind.CONSORTIUM))
    assert own.reach(Permission.SETTLE_ACCOUNTS).nothing
    assert not own.can(Permission.SETTLE_ACCOUNTS)
    assert own.reach(Permission.DISPUTE_STATEMENTS).agencies == {"CALIS:A"}
    assert centre.reach(Permission.SETTLE_ACCOUNTS).everything
    assert staff.reach(Permission.DISPUTE_STATEMENTS).agencies == {"CALIS:A"}
    assert staff.reach(Permission.SETTLE_ACCOUNTS).nothing
    assert auditor.reach(Permission.DISPUTE_STATEMENTS).nothing
    assert _principal(Grant(Role.OPERATOR, ScopeKind.CONSORTIUM)).reach(
        Permission.SETTLE_ACCOUNTS).everything


# ---- with PostgreSQL ----------------------------------------------------------------------

@dataclass
class Settled:
    base_url: str
    period: str
    a: str
    b: str
    c: str
    first: int          # A's 30.00 line
    second: int         # A's 20.00 line
    c_line: int
    due_a: Position
    due_c: Position


@pytest.fixture
async def settled(settings: Settings, pool: asyncpg.Pool) -> AsyncIterator[Settled]:
    year = await fresh_year(pool)
    period = f"{year}-03"
    tag = secrets.token_hex(3)
    a, b = await sql_agencies(pool, "兰州大学图书馆", "北京大学图书馆", province=f"甲{tag}")
    (c,) = await sql_agencies(pool, "乙省图书馆", province=f"乙{tag}")
    v = await no_subsidy(pool)
    first = await charge(pool, v, a, b, "30.00", at(f"{period}-05"), title="敦煌学研究")
    second = await charge(pool, v, a, b, "20.00", at(f"{period}-12"), title="西夏文献",
                          kind="DocumentDelivery", event="CopyCompleted")
    c_line = await charge(pool, v, c, b, "10.00", at(f"{period}-20"), title="红楼梦")
    run = await settle(pool, settings, period, now=after(period))
    owed = {p.agency: p for p in await _positions(pool, run.run_id or 0)}
    now = after(period) + datetime.timedelta(hours=1)
    server = TestServer(make_app(settings, pool, clock=lambda: now))
    await server.start_server()
    try:
        yield Settled(str(server.make_url("")).rstrip("/"), period, a, b, c, first, second,
                      c_line, owed[a], owed[c])
    finally:
        await server.close()
        await sweep(pool, settings, year)


async def _positions(pool: asyncpg.Pool, run_id: int) -> list[Position]:
    async with pool.acquire() as conn:
        return await dues.positions(conn, run_id=run_id)


async def _position(pool: asyncpg.Pool, due_id: int) -> Position:
    async with pool.acquire() as conn:
        p = await dues.position(conn, due_id)
    assert p is not None
    return p


def table_rows(page: str, table_id: str) -> list[tuple[dict[str, str | None], list[str]]]:
    section = page.split(f'id="{table_id}"', 1)[1].split("</table>", 1)[0]
    return [(attrs, cells) for attrs, cells in rows_of("<table>" + section).rows
            if any(k.startswith("data-") for k in attrs)]


def attr_values(page: str, table_id: str, name: str) -> set[str]:
    return {attrs[name] or "" for attrs, _ in table_rows(page, table_id) if name in attrs}


async def audited(pool: asyncpg.Pool, person: Person, action: str) -> list[dict[str, Any]]:
    rows = await pool.fetch("SELECT after FROM people_audit WHERE login = $1 AND action = $2 "
                            "ORDER BY id", person.login, action)
    return [json.loads(r["after"]) for r in rows]


async def test_pages_record_payments_dispute_lines_and_keep_to_reach(
        settings: Settings, pool: asyncpg.Pool, settled: Settled) -> None:
    s = settled
    centre = await make_person(pool, "finance@consortium", name="中心财务 Centre Finance")
    own_finance = await make_person(pool, f"finance@agency:{s.a}", name="馆财务 Library Finance")
    staff = await make_person(pool, f"library_staff@agency:{s.a}")
    ref_a, due_a = s.due_a.reference, s.due_a.due_id

    async with signed_in(s.base_url, pool, settings, centre) as fin:
        listing = await fin.get("/fin/payments")
        assert {ref_a, s.due_c.reference} <= attr_values(listing, "dues-table",
                                                         "data-reference")
        await fin.post(f"/fin/payments/{due_a}/record",
                       {"amount": "10.00", "paid_on": s.due_a.issued_on.isoformat(),
                        "bank_reference": "BOC-2026-001 中国银行"})
        page = await fin.get(f"/fin/payments/{due_a}?done=payment")
        assert 'data-outstanding="40.00"' in page and 'data-state="part_paid"' in page
        assert "BOC-2026-001 中国银行" in page and "Payment recorded" in page
        assert "payment" in attr_values(page, "history-table", "data-kind")
        refused, _ = await fin.post(f"/fin/payments/{due_a}/record", {"amount": "40.01"},
                                    422)
        assert "more than the 40.00 outstanding" in refused
        bad, _ = await fin.post(f"/fin/payments/{due_a}/record", {"amount": "十元"}, 400)
        assert "amount" in bad
        await fin.post(f"/fin/payments/{due_a}/record", {"amount": "1.00"}, 403, csrf=False)
        aging = await fin.get("/fin/aging")
        assert {s.a, s.c} <= attr_values(aging, "aging-table", "data-symbol")
    assert (await _position(pool, due_a)).outstanding.amount_text() == "40.00"
    recorded = await audited(pool, centre, "statement.payment")
    assert [x["outcome"] for x in recorded] == ["done", "refused"]
    assert recorded[0]["amount"] == "10.00" and recorded[0]["outstanding"] == "40.00"

    async with signed_in(s.base_url, pool, settings, staff) as lib:
        overview = await lib.get(f"/lib/statements?agency={s.a}")
        assert attr_values(overview, "dues-table", "data-reference") == {ref_a}
        page = await lib.get(f"/lib/statements/{ref_a}")
        assert attr_values(page, "lines-table", "data-posting") == {str(s.first),
                                                                    str(s.second)}
        assert f'id="do-dispute-{s.first}"' in page and f'id="do-dispute-{s.second}"' in page
        await lib.post(f"/lib/statements/{ref_a}/dispute",
                       {"posting_id": str(s.first), "reason": "复印件缺页 pages missing"})
        page = await lib.get(f"/lib/statements/{ref_a}?done=dispute")
        [(attrs, cells)] = table_rows(page, "dispute-table")
        assert attrs["data-state"] == "open" and "复印件缺页 pages missing" in cells
        assert f'id="do-dispute-{s.first}"' not in page   # disputed: no second form
        again, _ = await lib.post(f"/lib/statements/{ref_a}/dispute",
                                  {"posting_id": str(s.first), "reason": "again"}, 409)
        assert "disputed already" in again and 'role="alert"' in again
        await lib.get(f"/lib/statements/{s.due_c.reference}", 404)
        await lib.post(f"/lib/statements/{s.due_c.reference}/dispute",
                       {"posting_id": str(s.c_line), "reason": "not ours"}, 404)
        await lib.post(f"/fin/payments/{due_a}/record", {"amount": "1.00"}, 403)
    # Disputed: 30.00 of the 40.00 outstanding is not dunned while the dispute is open.
    after_dispute = await _position(pool, due_a)
    assert after_dispute.disputed.amount_text() == "30.00"
    assert after_dispute.dunnable.amount_text() == "10.00"
    assert dues.reminder_stage(after_dispute, after_dispute.due_on + datetime.timedelta(
        days=1), settings.payments) == "overdue-1"
    opened = await audited(pool, staff, "statement.dispute")
    assert [x["outcome"] for x in opened] == ["done", "refused"]
    assert opened[1]["code"] == "already_disputed"

    async with signed_in(s.base_url, pool, settings, own_finance) as mine:
        listing = await mine.get("/fin/payments")
        shown = attr_values(listing, "dues-table", "data-symbol")
        assert shown == {s.a}
        await mine.get(f"/fin/payments/{s.due_c.due_id}", 404)
        page = await mine.get(f"/fin/payments/{due_a}")
        assert 'id="record-form"' not in page
        body, _ = await mine.post(f"/fin/payments/{due_a}/record", {"amount": "1.00"}, 403)
        assert "never settles its own" in body
        disputes = await mine.get("/fin/disputes")
        [dispute_id] = attr_values(disputes, "dispute-table", "data-dispute")
        assert "do-resolve" not in disputes
        await mine.post(f"/fin/disputes/{dispute_id}/resolve",
                        {"outcome": "accepted", "reason": "ours"}, 403)
    assert (await _position(pool, due_a)).outstanding.amount_text() == "40.00"

    async with signed_in(s.base_url, pool, settings, centre) as fin:
        no_reason, _ = await fin.post(f"/fin/disputes/{dispute_id}/resolve",
                                      {"outcome": "rejected", "reason": " "}, 422)
        assert "needs a reason" in no_reason
        await fin.post(f"/fin/disputes/{dispute_id}/resolve",
                       {"outcome": "rejected", "reason": "供应馆已补寄 pages resent"})
        page = await fin.get("/fin/disputes")
        states = {a["data-dispute"]: a["data-state"]
                  for a, _ in table_rows(page, "dispute-table")}
        assert states[dispute_id] == "rejected"
    assert (await _position(pool, due_a)).disputed.amount_text() == "0.00"


# ---- the API ------------------------------------------------------------------------------

async def token_of(pool: asyncpg.Pool, person: Person, *scopes: Scope) -> str:
    async with pool.acquire() as conn:
        made = await tokens.create(conn, Actor.cli("tests"), person, label="财务系统 sync",
                                   scopes=frozenset(scopes),
                                   now=datetime.datetime.now(datetime.UTC))
    return made.token


def validator(doc: dict[str, Any], model: str) -> Draft202012Validator:
    registry: Registry = Registry().with_resource(
        "urn:illhub:openapi", Resource.from_contents(doc, default_specification=DRAFT202012))
    return Draft202012Validator({"$ref": f"urn:illhub:openapi#/components/schemas/{model}"},
                                registry=registry)


@dataclass
class Api:
    http: aiohttp.ClientSession
    base: str
    doc: dict[str, Any]

    async def call(self, method: str, path: str, token: str, status: int,
                   body: Any = None) -> Any:
        async with self.http.request(method, self.base + path, json=body, headers={
                "Authorization": f"Bearer {token}"}) as resp:
            text = await resp.text()
            assert resp.status == status, text
            assert resp.content_type == ("application/json" if status < 400 else PROBLEM)
            found = json.loads(text)
        # The answer as the served document describes it for this path, method and status
        # (of the templates that match, the one with the most literal segments).
        template = max((p for p in self.doc["paths"] if method.lower() in self.doc["paths"][p]
                        and _literals(p, path.split("?")[0]) is not None),
                       key=lambda p: _literals(p, path.split("?")[0]) or 0)
        content = self.doc["paths"][template][method.lower()]["responses"][str(status)][
            "content"]
        model = next(iter(content.values()))["schema"]["$ref"].rsplit("/", 1)[1]
        errors = list(validator(self.doc, model).iter_errors(found))
        assert not errors, (path, model, errors[0].message)
        return found


def _literals(template: str, path: str) -> int | None:
    """How many segments of `path` the template names literally; None: no match."""
    want, got = template.split("/"), path.split("/")
    if len(want) != len(got) or not all(w == g or w.startswith("{")
                                        for w, g in zip(want, got, strict=True)):
        return None
    return sum(w == g for w, g in zip(want, got, strict=True))


async def test_api_disputes_resolutions_payments_and_reach(
        settings: Settings, pool: asyncpg.Pool, settled: Settled) -> None:
    s = settled
    centre = await make_person(pool, "finance@consortium")
    own_finance = await make_person(pool, f"finance@agency:{s.a}")
    staff = await make_person(pool, f"library_staff@agency:{s.a}")
    settles = await token_of(pool, centre, Scope.STATEMENTS_READ, Scope.STATEMENTS_SETTLE)
    disputes = await token_of(pool, staff, Scope.STATEMENTS_READ, Scope.STATEMENTS_DISPUTE)
    reads = await token_of(pool, staff, Scope.STATEMENTS_READ)
    with pytest.raises(TokenError, match="settle_accounts"):
        await token_of(pool, own_finance, Scope.STATEMENTS_SETTLE)
    ref_a = s.due_a.reference

    async with aiohttp.ClientSession() as http:
        async with http.get(s.base_url + "/api/v1/openapi.json") as resp:
            doc = await resp.json()
        api = Api(http, s.base_url, doc)
        line = {"reference": ref_a, "postingId": s.second, "reason": "未收到 not received"}
        forbidden = await api.call("POST", "/api/v1/disputes", reads, 403, line)
        assert "statements:dispute" in forbidden["detail"]
        opened = await api.call("POST", "/api/v1/disputes", disputes, 201, line)
        assert opened["state"] == "open" and opened["amount"] == "20.00"
        assert opened["channel"] == "api" and opened["openedBy"] == staff.login
        again = await api.call("POST", "/api/v1/disputes", disputes, 409, line)
        assert again["code"] == "already_disputed"
        not_line = await api.call("POST", "/api/v1/disputes", disputes, 422,
                                  {**line, "postingId": s.c_line})
        assert not_line["code"] == "not_a_line"
        hidden = await api.call("POST", "/api/v1/disputes", disputes, 404,
                                {**line, "reference": s.due_c.reference})
        assert hidden["code"] == "no_statement"
        malformed = await api.call("POST", "/api/v1/disputes", disputes, 422,
                                   {"reference": ref_a, "postingId": "x", "reason": "r"})
        assert "postingId" in malformed["detail"]
        listed = await api.call("GET", "/api/v1/disputes?open=true", disputes, 200)
        assert [d["disputeId"] for d in listed["items"]] == [opened["disputeId"]]

        resolution = {"outcome": "accepted", "reason": "供应馆确认 supplier agrees"}
        path = f"/api/v1/disputes/{opened['disputeId']}/resolution"
        await api.call("POST", path, disputes, 403, resolution)
        done = await api.call("POST", path, settles, 200, resolution)
        assert done["state"] == "accepted" and done["adjustment"] == "20.00"
        assert done["resolvedBy"] == centre.login and done["reversalPosting"]
        twice = await api.call("POST", path, settles, 409, resolution)
        assert twice["code"] == "already_resolved"

        paid = await api.call("POST", f"/api/v1/statements/{ref_a}/payments", settles, 201,
                              {"amount": "5.00", "bankReference": "ICBC-77",
                               "paidOn": s.due_a.issued_on.isoformat()})
        assert paid["statement"]["outstanding"] == "45.00"
        assert paid["statement"]["state"] == "part_paid"
        too_much = await api.call("POST", f"/api/v1/statements/{ref_a}/payments", settles,
                                  422, {"amount": "45.01"})
        assert "outstanding" in too_much["detail"]
        await api.call("POST", f"/api/v1/statements/{ref_a}/payments", disputes, 403,
                       {"amount": "1.00"})

        detail = await api.call("GET", f"/api/v1/statements/{ref_a}", reads, 200)
        assert [e["kind"] for e in detail["history"]] == [
            "issued", "disputed", "dispute_accepted", "payment"]
        lines = {x["postingId"]: x for x in detail["lines"]}
        assert set(lines) == {s.first, s.second}
        assert lines[s.second]["disputeState"] == "accepted"
        assert lines[s.first]["disputable"] and lines[s.first]["effect"] == "-30.00"
        await api.call("GET", f"/api/v1/statements/{s.due_c.reference}", reads, 404)
        everyone = await api.call("GET", f"/api/v1/statements/{s.due_c.reference}", settles,
                                  200)
        assert everyone["agency"] == s.c

        statements = await api.call("GET", f"/api/v1/statements?period={s.period}&open=true",
                                    reads, 200)
        [mine] = statements["items"]
        assert mine["agency"] == s.a and mine["dues"][0]["reference"] == ref_a
        aging = await api.call("GET", "/api/v1/aging", reads, 200)
        assert [x["agency"] for x in aging["items"]] == [s.a]
        assert aging["items"][0]["owedToCentre"]["0-30"] == "45.00"
        wide = await api.call("GET", "/api/v1/aging", settles, 200)
        assert {s.a, s.b, s.c} <= {x["agency"] for x in wide["items"]}

    actions = await pool.fetch("SELECT login, action, after FROM people_audit "
                               "WHERE login = ANY($1::text[]) AND action <> 'token.create' "
                               "ORDER BY id", [centre.login, staff.login])
    assert [(r["login"], r["action"], json.loads(r["after"])["outcome"]) for r in actions] == [
        (staff.login, "statement.dispute", "done"),
        (staff.login, "statement.dispute", "refused"),
        (staff.login, "statement.dispute", "refused"),
        (centre.login, "dispute.resolve", "done"),
        (centre.login, "dispute.resolve", "refused"),
        (centre.login, "statement.payment", "done"),
        (centre.login, "statement.payment", "refused"),
    ]
