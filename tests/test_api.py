"""The read-only REST API over real HTTP against the real database (issue 16, item 6).

Each test makes its own agencies, people and tokens; the shared database holds other
tests' rows, which a token of this test's library must never see. Response bodies are
validated against the served OpenAPI document with `jsonschema` (Draft 2020-12, the
dialect of OpenAPI 3.1), not against the pydantic models that produced them: that
proves the document and the code agree.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote

import asyncpg
import pytest
from aiohttp.test_utils import TestClient, TestServer
from jsonschema import Draft202012Validator
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

from accounts import people, tokens
from accounts.audit import Actor
from accounts.roles import Grant
from accounts.tokens import Scope
from schemas.settings import Settings
from settlement.run import settle
from tests.support.agencies import sql_agencies
from tests.support.names import budget_name, unique
from tests.support.operators import put_transaction
from tests.support.settlement import after, fresh_year, worked_example
from web.api.routes import ROUTES, WRITES
from web.app import make_app

BY = Actor.cli("test")
# Every reading scope (a person holds only the write scopes their role allows: those are
# tests/test_payments_web.py's).
ALL_SCOPES = frozenset(s for s in Scope if s.value.endswith(":read"))
PROBLEM = "application/problem+json"


@asynccontextmanager
async def api_client(settings: Settings, pool: asyncpg.Pool) -> AsyncIterator[TestClient]:
    client = TestClient(TestServer(make_app(settings, pool)))
    await client.start_server()
    try:
        yield client
    finally:
        await client.close()


async def token_for(pool: asyncpg.Pool, role: str, scope: str | None,
                    scopes: frozenset[Scope] = ALL_SCOPES, *, days: int | None = None,
                    now: datetime | None = None) -> str:
    """A new person holding `role` over `scope`, and a token of theirs."""
    async with pool.acquire() as conn:
        person = await people.add(conn, BY, login=unique("api-user-"),
                                  display_name="馆际互借员 王五")
        await people.grant(conn, BY, person, Grant.parse(role, scope))
        made = await tokens.create(conn, BY, person, label="ILL system 馆际系统",
                                   scopes=scopes, now=now or datetime.now(UTC), days=days)
    return made.token


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def get_json(client: TestClient, path: str, token: str | None, status: int = 200
                   ) -> Any:
    headers = bearer(token) if token else {}
    async with client.get(path, headers=headers) as resp:
        text = await resp.text()
        assert resp.status == status, text
        expected = "application/json" if status == 200 else PROBLEM
        assert resp.content_type == expected and resp.charset == "utf-8"
        return json.loads(text)


def assert_problem(body: Any, status: int, *words: str) -> None:
    assert set(body) <= {"type", "title", "status", "detail", "parameter"}
    assert body["status"] == status and body["type"].startswith("urn:illhub:problem:")
    assert body["title"] and body["detail"]
    for word in words:
        assert word in body["detail"], body


async def two_libraries(pool: asyncpg.Pool) -> tuple[str, str]:
    a, b = await sql_agencies(pool, "甲大学图书馆", "乙大学图书馆", province="湖北")
    return a, b


# ---- transactions -------------------------------------------------------------------

async def test_library_staff_token_lists_its_transactions_and_gets_404_for_others(
        settings: Settings, pool: asyncpg.Pool) -> None:
    a, b = await two_libraries(pool)
    mine = await put_transaction(pool, a, "ExpectToSupply", title="敦煌学研究")
    supplied_by_a = await put_transaction(pool, b, "CopyCompleted", supplier=a,
                                          forwarded=datetime.now(UTC),
                                          answered=datetime.now(UTC))
    theirs = await put_transaction(pool, b, "ExpectToSupply")
    token = await token_for(pool, "library_staff", f"agency:{a}", frozenset(
        {Scope.TRANSACTIONS_READ}))
    async with api_client(settings, pool) as client:
        page = await get_json(client, "/api/v1/transactions", token)
        ids = {t["id"] for t in page["items"]}
        assert ids == {mine, supplied_by_a}
        one = next(t for t in page["items"] if t["id"] == mine)
        assert one["title"] == "敦煌学研究" and one["requester"] == a
        detail = await get_json(client, f"/api/v1/transactions/{mine}", token)
        assert detail["id"] == mine and isinstance(detail["trail"], list)
        hidden = await get_json(client, f"/api/v1/transactions/{theirs}", token, 404)
        unknown = await get_json(client, "/api/v1/transactions/ILL-NO-SUCH", token, 404)
    # Out of reach is answered exactly as unknown, but for the id it echoes.
    assert hidden["detail"].replace(theirs, "X") == unknown["detail"].replace("ILL-NO-SUCH", "X")
    assert_problem(hidden, 404)


async def test_transaction_detail_carries_its_audit_trail(
        settings: Settings, pool: asyncpg.Pool) -> None:
    [a] = await sql_agencies(pool, "丙图书馆", province="湖北")
    txn = await put_transaction(pool, a, "ExpectToSupply")
    await pool.execute(
        """INSERT INTO audit_log (transaction_id, actor, event, from_state, to_state, detail)
           VALUES ($1, 'hub', 'forwarded', 'New', 'ExpectToSupply', $2::jsonb)""",
        txn, json.dumps({"note": "转发给 南京图书馆"}, ensure_ascii=False))
    token = await token_for(pool, "library_staff", f"agency:{a}")
    async with api_client(settings, pool) as client:
        detail = await get_json(client, f"/api/v1/transactions/{txn}", token)
    [event] = detail["trail"]
    assert event["event"] == "forwarded" and event["to_state"] == "ExpectToSupply"
    assert event["detail"] == {"note": "转发给 南京图书馆"}


async def test_keyset_paging_returns_every_transaction_once(
        settings: Settings, pool: asyncpg.Pool) -> None:
    [a] = await sql_agencies(pool, "分页图书馆", province="湖北")
    start = datetime.now(UTC) - timedelta(hours=1)
    made = [await put_transaction(pool, a, "ExpectToSupply",
                                  created=start + timedelta(minutes=i % 3))
            for i in range(7)]  # several share an updated_at: the id breaks the tie
    token = await token_for(pool, "library_staff", f"agency:{a}")
    seen: list[str] = []
    pages = 0
    async with api_client(settings, pool) as client:
        path = "/api/v1/transactions?limit=3"
        while True:
            page = await get_json(client, path, token)
            pages += 1
            seen += [t["id"] for t in page["items"]]
            if page["next_cursor"] is None:
                break
            path = f"/api/v1/transactions?limit=3&cursor={page['next_cursor']}"
        assert pages == 3 and sorted(seen) == sorted(made) and len(set(seen)) == 7
        stamps = [(t["updated_at"], t["id"]) for t in (await get_json(
            client, "/api/v1/transactions?limit=500", token))["items"]]
        assert stamps == sorted(stamps)
        since = quote((start + timedelta(minutes=2)).isoformat())
        later = await get_json(client, f"/api/v1/transactions?updated_since={since}", token)
        assert len(later["items"]) == 2
        none = await get_json(client, "/api/v1/transactions?state=Unfilled", token)
        assert none == {"items": [], "next_cursor": None}


async def test_bad_parameters_are_400_problems_naming_the_parameter(
        settings: Settings, pool: asyncpg.Pool) -> None:
    [a] = await sql_agencies(pool, "参数图书馆", province="湖北")
    token = await token_for(pool, "library_staff", f"agency:{a}")
    cases = {"limit": "/api/v1/transactions?limit=0",
             "state": "/api/v1/transactions?state=Lost",
             "updated_since": "/api/v1/transactions?updated_since=yesterday",
             "cursor": "/api/v1/transactions?cursor=not-ours",
             "period": "/api/v1/statements?period=2026-13"}
    async with api_client(settings, pool) as client:
        for name, path in cases.items():
            body = await get_json(client, path, token, 400)
            assert_problem(body, 400, name)
            assert body["parameter"] == name


# ---- tokens: 401 and 403 ------------------------------------------------------------

async def test_missing_unknown_revoked_and_expired_tokens_get_401_problems(
        settings: Settings, pool: asyncpg.Pool) -> None:
    [a] = await sql_agencies(pool, "令牌图书馆", province="湖北")
    revoked = await token_for(pool, "library_staff", f"agency:{a}")
    expired = await token_for(pool, "library_staff", f"agency:{a}", days=1,
                              now=datetime.now(UTC) - timedelta(days=2))
    token_id = await pool.fetchval("SELECT id FROM api_token WHERE token_hash = $1",
                                   hashlib.sha256(revoked.encode()).digest())
    async with api_client(settings, pool) as client:
        await get_json(client, "/api/v1/transactions", revoked)
        async with pool.acquire() as conn:
            await tokens.revoke(conn, BY, token_id, datetime.now(UTC))
        cases = {"revoked": (revoked, "revoked"), "expired": (expired, "expired"),
                 "unknown": (revoked[:-4] + "AAAA", "unknown"),
                 "not ours": ("ghp_123", "illhub_"), "none": (None, "Bearer")}
        for what, (token, word) in cases.items():
            async with client.get("/api/v1/transactions",
                                  headers=bearer(token) if token else {}) as resp:
                assert resp.status == 401, what
                assert resp.content_type == PROBLEM, what
                assert resp.headers["WWW-Authenticate"].startswith("Bearer"), what
                assert_problem(await resp.json(content_type=PROBLEM), 401, word)


async def test_a_token_without_statements_read_gets_403_on_statements(
        settings: Settings, pool: asyncpg.Pool) -> None:
    [a] = await sql_agencies(pool, "范围图书馆", province="湖北")
    token = await token_for(pool, "library_staff", f"agency:{a}",
                            frozenset({Scope.TRANSACTIONS_READ}))
    async with api_client(settings, pool) as client:
        await get_json(client, "/api/v1/transactions", token)
        for path in ("/api/v1/statements", "/api/v1/statements/2026-01/X.csv",
                     "/api/v1/budgets"):
            body = await get_json(client, path, token, 403)
            assert_problem(body, 403, "scope")


async def test_a_token_is_no_wider_than_its_persons_grants(
        settings: Settings, pool: asyncpg.Pool) -> None:
    """The grant goes, the token stays: it now reaches nothing (403), as its person would."""
    [a] = await sql_agencies(pool, "收回图书馆", province="湖北")
    token = await token_for(pool, "library_staff", f"agency:{a}")
    login = await pool.fetchval(
        """SELECT p.login FROM api_token t JOIN person p ON p.id = t.person_id
           WHERE t.token_hash = $1""", hashlib.sha256(token.encode()).digest())
    async with pool.acquire() as conn:
        person = await people.find(conn, login)
        assert person is not None
        await people.revoke(conn, BY, person, Grant.parse("library_staff", f"agency:{a}"))
    async with api_client(settings, pool) as client:
        body = await get_json(client, "/api/v1/transactions", token, 403)
        assert_problem(body, 403, login)
        async with pool.acquire() as conn:
            await people.set_enabled(conn, BY, person, False)
        body = await get_json(client, "/api/v1/transactions", token, 401)
        assert_problem(body, 401, "disabled")


# ---- statements and budgets -----------------------------------------------------------

async def test_a_finance_officer_sees_only_its_own_statements(
        settings: Settings, pool: asyncpg.Pool) -> None:
    period, pku, fdu, _lzu = await worked_example(pool, await fresh_year(pool))
    await settle(pool, settings, period, now=after(period))
    token = await token_for(pool, "finance", f"agency:{pku}",
                            frozenset({Scope.STATEMENTS_READ}))
    async with api_client(settings, pool) as client:
        page = await get_json(client, f"/api/v1/statements?period={period}", token)
        [s] = page["items"]
        assert (s["agency"], s["name"]) == (pku, "北京大学图书馆")
        assert s["totals"] == [{"currency": "CNY", "net_minor": 2600, "earned_minor": 3800,
                                "owed_minor": 1200, "subsidy_minor": 0, "lines": 3}]
        assert {s["agency"] for s in (await get_json(
            client, "/api/v1/statements", token))["items"]} == {pku}
        async with client.get(s["files"]["csv"], headers=bearer(token)) as resp:
            assert resp.status == 200 and resp.content_type == "text/csv"
            text = (await resp.read()).decode("utf-8-sig")
            assert "北京大学图书馆" in text
        async with client.get(s["files"]["pdf"], headers=bearer(token)) as resp:
            assert resp.status == 200 and resp.content_type == "application/pdf"
            assert (await resp.read()).startswith(b"%PDF")
        other = f"/api/v1/statements/{period}/{quote(fdu, safe=':')}.csv"
        assert_problem(await get_json(client, other, token, 404), 404)


async def test_budgets_of_the_agencies_in_reach(settings: Settings, pool: asyncpg.Pool
                                                ) -> None:
    a, b = await two_libraries(pool)
    period = "2031-05"
    names = [budget_name("api"), budget_name("api")]
    await pool.executemany(
        """INSERT INTO subsidy_budget (name, requester, period, currency, limit_minor,
                                       spent_minor) VALUES ($1, $2, $3, 'CNY', 10000, $4)""",
        [(names[0], a, period, 2500), (names[1], b, period, 100)])
    try:
        mine = await token_for(pool, "finance", f"agency:{a}",
                               frozenset({Scope.BUDGETS_READ}))
        everyone = await token_for(pool, "operator", None)
        async with api_client(settings, pool) as client:
            body = await get_json(client, f"/api/v1/budgets?period={period}", mine)
            assert body == {"period": period, "items": [{
                "name": names[0], "requester": a, "period": period, "currency": "CNY",
                "limit_minor": 10000, "spent_minor": 2500, "remaining_minor": 7500}]}
            wide = await get_json(client, f"/api/v1/budgets?period={period}", everyone)
            assert {names[0], names[1]} <= {x["name"] for x in wide["items"]}
    finally:
        await pool.execute("DELETE FROM subsidy_budget WHERE name = ANY($1::text[])", names)


# ---- the problem shape, and the OpenAPI document ---------------------------------------

async def test_unknown_paths_and_other_methods_are_problems_too(
        settings: Settings, pool: asyncpg.Pool) -> None:
    async with api_client(settings, pool) as client:
        assert_problem(await get_json(client, "/api/v1/nothing-here", None, 404), 404,
                       "openapi.json")
        async with client.post("/api/v1/transactions", data="{}") as resp:
            assert resp.status == 405 and resp.content_type == PROBLEM
            assert "GET" in resp.headers["Allow"]
            assert_problem(await resp.json(content_type=PROBLEM), 405, "read-only")


def validator(doc: dict[str, Any], model: str) -> Draft202012Validator:
    registry: Registry = Registry().with_resource(
        "urn:illhub:openapi", Resource.from_contents(doc, default_specification=DRAFT202012))
    return Draft202012Validator({"$ref": f"urn:illhub:openapi#/components/schemas/{model}"},
                                registry=registry)


def response_schema(doc: dict[str, Any], path: str, status: str) -> str:
    content = doc["paths"][path]["get"]["responses"][status]["content"]
    ref: str = next(iter(content.values()))["schema"]["$ref"]
    return ref.rsplit("/", 1)[1]


async def test_the_openapi_document_lists_every_route_and_real_answers_validate(
        settings: Settings, pool: asyncpg.Pool) -> None:
    period, pku, _fdu, _lzu = await worked_example(pool, await fresh_year(pool))
    await settle(pool, settings, period, now=after(period))
    txn = await put_transaction(pool, pku, "ExpectToSupply")
    token = await token_for(pool, "operator", None)
    async with api_client(settings, pool) as client:
        async with client.get("/api/v1/openapi.json") as resp:  # no token needed
            assert resp.status == 200
            doc = await resp.json()
        assert doc["openapi"].startswith("3.1")
        Draft202012Validator.check_schema(doc["components"]["schemas"]["TransactionPage"])
        # What the running app serves under /api/v1 (its router, not a list of ours).
        served = {(route.method, route.resource.canonical)
                  for resource in client.server.app.router.resources()
                  if resource.canonical == "/api/v1" for route in resource
                  if route.method in ("GET", "POST") and route.resource is not None}
        documented = {(method.upper(), path) for path, ops in doc["paths"].items()
                      for method in ops}
        assert len(served) == len(ROUTES) + len(WRITES) and served == documented
        answers = {
            ("/api/v1/transactions", "200"): "/api/v1/transactions?limit=5",
            ("/api/v1/transactions/{id}", "200"): f"/api/v1/transactions/{txn}",
            ("/api/v1/transactions/{id}", "404"): "/api/v1/transactions/ILL-NONE",
            ("/api/v1/transactions", "400"): "/api/v1/transactions?limit=x",
            ("/api/v1/statements", "200"): f"/api/v1/statements?period={period}",
            ("/api/v1/budgets", "200"): f"/api/v1/budgets?period={period}",
            ("/api/v1/budgets", "401"): "",
        }
        for (path, status), url in answers.items():
            body = await get_json(client, url or path, token if url else None, int(status))
            errors = list(validator(doc, response_schema(doc, path, status)).iter_errors(body))
            assert not errors, (url, errors[0].message)
            if path == "/api/v1/statements":
                assert body["items"], "a real statement was validated"
        # A body the document does not describe is refused: the check does check.
        bad = {"items": [{"id": 1}], "next_cursor": None}
        assert list(validator(doc, "TransactionPage").iter_errors(bad))


# ---- no token in the logs -------------------------------------------------------------

async def test_tokens_never_reach_the_logs(settings: Settings, pool: asyncpg.Pool,
                                           caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    [a] = await sql_agencies(pool, "日志图书馆", province="湖北")
    token = await token_for(pool, "library_staff", f"agency:{a}")
    async with api_client(settings, pool) as client:
        await get_json(client, "/api/v1/transactions", token)
        await get_json(client, "/api/v1/transactions/ILL-X", token, 404)
        await get_json(client, "/api/v1/transactions", token + "x", 401)
        await get_json(client, "/api/v1/transactions?limit=bad", token, 400)
        stored = await pool.fetch("SELECT before::text, after::text FROM people_audit "
                                  "WHERE action LIKE 'token.%'")
    assert "API token refused" in caplog.text  # the capture did capture
    assert token not in caplog.text and token[7:] not in caplog.text
    assert all(token not in (r["before"] or "") + (r["after"] or "") for r in stored)
