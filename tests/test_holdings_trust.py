"""Holdings that learn (issue 18): a NotHeld answer for a listed item puts that holding in
doubt, the next request for the item asks the others first, a fresh import lifts the
doubt; accuracy per supplier and id type over a window; `run.py holdings quality`, the
operators' dashboard section and the monthly mail.

The first tests are pure; the others use the real hub and database.
"""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, date, datetime, timedelta
from email import message_from_bytes
from email.message import EmailMessage
from email.policy import default as default_policy
from pathlib import Path
from zoneinfo import ZoneInfo

import asyncpg
import pytest

from broker import holdings_trust
from broker.dispatch import sql
from broker.dispatch.explain import explain
from broker.holdings import import_csv
from broker.holdings_mail import holdings_mail_text, mail_holdings_quality
from broker.holdings_trust import Doubt, accuracy, is_not_held
from infra.locks import Lock
from schemas.settings import Settings
from tests.support import messages
from tests.support.agencies import sql_agencies
from tests.support.cli import run
from tests.support.messages import supplier_message
from tests.support.names import fresh_issn
from tests.support.network import ISSN, Network, start
from tests.support.operators import get_page, ops_client, put_transaction, row_for, sign_in

# ---- pure ---------------------------------------------------------------------------------


def test_accuracy_needs_some_history_then_is_the_share_held() -> None:
    assert accuracy(0, 0) is None
    assert accuracy(holdings_trust.MIN_ASKED - 1, 3) is None
    assert accuracy(holdings_trust.MIN_ASKED, 0) == 1.0
    assert accuracy(10, 3) == pytest.approx(0.7)
    assert accuracy(8, 8) == 0.0


def test_the_reasons_that_mean_we_do_not_have_it() -> None:
    for reason in ("NotHeld", "notheld", "NotOnShelf", "Missing", "Lost", " NotHeld "):
        assert is_not_held(reason), reason
    for reason in ("InUse", "PoorCondition", "NotAvailableForILL", "PolicyProblem", "", None):
        assert not is_not_held(reason), reason


def test_the_mail_lists_each_failed_holding_in_chinese_and_english() -> None:
    zone = ZoneInfo("Asia/Shanghai")
    failed = [Doubt("CALIS:HIT", "issn", "1001-8867", "NotHeld",
                    datetime(2026, 10, 31, 20, 0, tzinfo=UTC), "ILL-20261031-AAAA"),
              Doubt("CALIS:HIT", "isbn", "9787300000007", "NotOnShelf",
                    datetime(2026, 10, 3, tzinfo=UTC), "ILL-20261003-BBBB")]
    subject, text = holdings_mail_text("哈尔滨工业大学图书馆", "2026-10", failed, zone)
    assert "馆藏" in subject and "Holdings" in subject and "2026-10" in subject
    assert text.startswith("哈尔滨工业大学图书馆：")
    assert "重新导入" in text and "load your holdings again" in text
    # The local day (20:00 UTC on the 31st is the 1st in Beijing), the transaction.
    assert "1001-8867" in text and "2026-11-01  ILL-20261031-AAAA" in text
    assert "9787300000007" in text and "NotOnShelf" in text


# ---- the hub learns -----------------------------------------------------------------------


async def _first_supplier(network: Network, request_id: str, **kw: str) -> tuple[str, str]:
    """A reader asks for the item (another reader each time: no duplicate); (the supplier
    it went to first, the transaction id)."""
    told = await start(network, request_id, patron_id=f"P-{request_id}", **kw)
    [symbol] = [p.symbol for p in network.values()
                if messages.agency_id(p.symbol) == told.content["header"]["supplyingAgencyId"]]
    return symbol, told.headers["hub-transaction-id"]


async def _answers(pool: asyncpg.Pool, supplier: str) -> list[tuple[str, str, bool, str | None]]:
    return [(r["id_type"], r["id_value"], r["not_held"], r["reason"]) for r in await pool.fetch(
        "SELECT * FROM holding_answer WHERE supplier = $1 ORDER BY id", supplier)]


async def test_not_held_for_a_listed_item_sends_the_next_request_elsewhere_first(
        network: Network, pool: asyncpg.Pool, tmp_path: Path) -> None:
    req, sh, js = network["req"], network["sh"], network["js"]
    first, _ = await _first_supplier(network, "HT-1")
    assert first == sh.symbol  # the same city first
    await sh.next("request")
    await sh.send("supplyingAgencyMessage", supplier_message(
        sh.symbol, req.symbol, "HT-1", "Unfilled", "RequestResponse", answerYesNo="N",
        reasonUnfilled="NotHeld"))
    await sh.confirmed()
    await req.status("ExpectToSupply", "Notification")
    await js.next("request")
    await js.send("supplyingAgencyMessage", supplier_message(
        js.symbol, req.symbol, "HT-1", "CopyCompleted"))
    await js.confirmed()
    await req.status("CopyCompleted")
    # One answer each about the listed ISSN (the title key is listed by nobody).
    assert await _answers(pool, sh.symbol) == [("issn", ISSN, True, "NotHeld")]
    assert await _answers(pool, js.symbol) == [("issn", ISSN, False, None)]

    # The next request for the item goes to the next holder first; Shanghai is last.
    first, txn = await _first_supplier(network, "HT-2")
    assert first == js.symbol
    await js.next("request")
    async with pool.acquire() as conn:
        lines = await explain(conn, txn)
    assert any(line.startswith(f"  3. {sh.symbol}  tier 4") for line in lines), lines
    said = [line for line in lines if "tier 4: answered NotHeld" in line]
    assert len(said) == 1 and f"for issn {ISSN} on " in said[0], lines
    assert "so the others are asked first" in said[0]

    # Another item Shanghai lists is not in doubt: Shanghai first.
    other = fresh_issn()
    await pool.execute("INSERT INTO holding (id_type, id_value, symbol) VALUES ('issn', $1, $2)",
                       other, sh.symbol)
    first, _ = await _first_supplier(network, "HT-3", issn=other)
    assert first == sh.symbol
    await sh.next("request")

    # Shanghai loads its holdings again (the ISSN still in them): the doubt is lifted.
    async with pool.acquire() as conn:
        assert [d.id_value for d in await holdings_trust.doubts(conn, sh.symbol)] == [ISSN]
        csv = tmp_path / "holdings.csv"
        csv.write_text(f"symbol,id_type,id_value\n{sh.symbol},issn,{ISSN}\n", "utf-8")
        report = await import_csv(conn, csv, replace=False)
        assert report.unchanged == 1 and report.inserted == 0
        assert await holdings_trust.doubts(conn, sh.symbol) == []
    first, _ = await _first_supplier(network, "HT-4")
    assert first == sh.symbol
    await sh.next("request")


# ---- accuracy per id type, over the window --------------------------------------------------


async def _supplier_with_answers(pool: asyncpg.Pool, *, issn: str, isbn: str,
                                 answers: list[tuple[str, bool, timedelta]],
                                 email: str | None = None) -> tuple[str, str]:
    """A supplier listing `issn` and `isbn`, a requester, and answers (id type, not held,
    how long ago) about them, each in a transaction of its own; (supplier, requester)."""
    supplier, requester = await sql_agencies(pool, "准确性测试图书馆", "请求馆")
    if email:
        await pool.execute("UPDATE agency SET email = $2 WHERE symbol = $1", supplier, email)
    await pool.executemany("INSERT INTO holding (id_type, id_value, symbol, loaded_at) "
                           "VALUES ($1, $2, $3, $4)",
                           [("issn", issn, supplier, datetime(2020, 1, 1, tzinfo=UTC)),
                            ("isbn", isbn, supplier, datetime(2020, 1, 1, tzinfo=UTC))])
    now = datetime.now(UTC)
    for id_type, not_held, ago in answers:
        txn = await put_transaction(pool, requester, "Unfilled")
        await pool.execute(
            "INSERT INTO holding_answer (supplier, id_type, id_value, transaction_id, "
            "answered_at, not_held, reason) VALUES ($1, $2, $3, $4, $5, $6, $7)",
            supplier, id_type, issn if id_type == "issn" else isbn, txn, now - ago, not_held,
            "NotHeld" if not_held else "InUse")
    return supplier, requester


async def _facts(pool: asyncpg.Pool, requester: str, supplier: str,
                 ids: list[tuple[str, str]]) -> asyncpg.Record:
    """The supplier's candidate row of the query a new request makes."""
    # No journal to count copyright copies of ($11 NULL): no lock, no count.
    rows = await pool.fetch(sql.REQUEST_FACTS, requester, "facts", None, None,
                            [t for t, _ in ids], [v for _, v in ids], [], "DocumentDelivery",
                            date.today(), int(Lock.COPYRIGHT_COUNT), None, date.today().year)
    [row] = [r for r in rows if r["symbol"] == supplier]
    return row


async def test_accuracy_per_id_type_over_the_window(pool: asyncpg.Pool) -> None:
    issn, isbn = fresh_issn(), "9787300000007"
    days = timedelta(days=1)
    supplier, requester = await _supplier_with_answers(pool, issn=issn, isbn=isbn, answers=[
        # ISSN: 6 answers in the window, 2 not held; 3 not held long ago do not count.
        *[("issn", False, k * days) for k in (50, 40, 30, 20)],
        ("issn", True, 10 * days), ("issn", True, 5 * days),
        *[("issn", True, (holdings_trust.WINDOW_DAYS + k) * days) for k in (1, 2, 3)],
        # ISBN: 3 answers, too few to judge.
        ("isbn", False, 3 * days), ("isbn", False, 2 * days), ("isbn", True, 9 * days)])
    async with pool.acquire() as conn:
        [q] = await holdings_trust.quality(conn, supplier, datetime.now(UTC))
    by_type = {t.id_type: t for t in q.types}
    assert (by_type["issn"].asked, by_type["issn"].not_held) == (6, 2)
    assert by_type["issn"].accuracy == pytest.approx(4 / 6)
    assert (by_type["isbn"].asked, by_type["isbn"].not_held) == (3, 1)
    assert by_type["isbn"].accuracy is None
    assert (q.asked, q.not_held) == (9, 3)
    # The ISSN's latest answer said not held: in doubt; the ISBN's was held.
    assert [(d.id_type, d.id_value, d.reason) for d in q.doubts] == [("issn", issn, "NotHeld")]

    # What routing reads: the counts of the id types that matched, and the doubt.
    row = await _facts(pool, requester, supplier, [("issn", issn)])
    assert (row["listed_asked"], row["listed_not_held"]) == (6, 2)
    assert row["doubted"].startswith(f"answered NotHeld for issn {issn} on ")
    row = await _facts(pool, requester, supplier, [("isbn", isbn)])
    assert (row["listed_asked"], row["listed_not_held"], row["doubted"]) == (3, 1, None)
    row = await _facts(pool, requester, supplier, [("issn", issn), ("isbn", isbn)])
    assert (row["listed_asked"], row["listed_not_held"]) == (9, 3)
    assert row["doubted"] is not None

    # A later supply of the ISSN lifts its doubt (and counts as held).
    txn = await put_transaction(pool, requester, "CopyCompleted")
    async with pool.acquire() as conn:
        await holdings_trust.record_answer(conn, supplier=supplier, transaction_id=txn,
                                           ids=[("issn", issn), ("title_key", "x")],
                                           at=datetime.now(UTC), unfilled=None)
    row = await _facts(pool, requester, supplier, [("issn", issn)])
    assert (row["listed_asked"], row["listed_not_held"], row["doubted"]) == (7, 2, None)


async def test_holdings_quality_command(settings: Settings, pool: asyncpg.Pool) -> None:
    issn = fresh_issn()
    supplier, _ = await _supplier_with_answers(pool, issn=issn, isbn="9787300000014", answers=[
        *[("issn", False, timedelta(days=k)) for k in (9, 8, 7, 6)], ("issn", True,
                                                                       timedelta(days=1))])
    code, out, err = await run(settings, "holdings", "quality", supplier)
    assert code == 0, err
    assert f"{supplier}  准确性测试图书馆: accuracy 0.80, 5 asked because listed, 1 not held; " \
           "1 holding(s) in doubt" in out
    assert "  issn        asked     5   not held     1   accuracy 0.80" in out
    assert f"  doubted     issn {issn}: NotHeld on " in out

    code, out, err = await run(settings, "holdings", "quality", supplier, "--json")
    assert code == 0, err
    [shown] = json.loads(out)
    assert shown["symbol"] == supplier and shown["name"] == "准确性测试图书馆"
    assert (shown["asked"], shown["notHeld"], shown["accuracy"]) == (5, 1, 0.8)
    assert shown["byIdType"] == [{"idType": "issn", "asked": 5, "notHeld": 1, "accuracy": 0.8}]
    [doubt] = shown["doubted"]
    assert doubt["idValue"] == issn and doubt["reason"] == "NotHeld"
    assert doubt["transaction"].startswith("ILL-")

    code, _, err = await run(settings, "holdings", "quality", "T:NO-SUCH-LIBRARY")
    assert code == 1 and "no agency" in err


async def test_holdings_quality_on_the_dashboard(settings: Settings, pool: asyncpg.Pool) -> None:
    # Every answer about its listed ISSN was "not held": the least accurate supplier.
    supplier, _ = await _supplier_with_answers(pool, issn=fresh_issn(), isbn="9787300000021",
                                               answers=[("issn", True, timedelta(days=k))
                                                        for k in (5, 4, 3, 2, 1)])
    async with ops_client(settings, pool) as client:
        await sign_in(client)
        page = await get_page(client, "/ops/")
    assert "Holdings quality 馆藏准确性" in page
    assert row_for(page, supplier, "holdings-table") == [
        "准确性测试图书馆", supplier, "5", "5", "0.0 %", "1"]


async def test_the_monthly_mail_goes_once_per_supplier_and_month(
        settings: Settings, pool: asyncpg.Pool) -> None:
    issn, month = fresh_issn(), "2025-03"
    supplier, requester = await _supplier_with_answers(
        pool, issn=issn, isbn="9787300000038", email="ill@hit.example.edu.cn", answers=[])
    txn = await put_transaction(pool, requester, "Unfilled")
    async with pool.acquire() as conn:
        await holdings_trust.record_answer(
            conn, supplier=supplier, transaction_id=txn, ids=[("issn", issn)],
            at=datetime(2025, 3, 14, 9, 30, tzinfo=UTC), unfilled="NotOnShelf")

    async def mail() -> list[tuple[str, int]]:
        async with pool.acquire() as conn:
            return await mail_holdings_quality(conn, settings, month)

    # Two hub processes at once: one mail.
    first, second = await asyncio.gather(mail(), mail())
    mine = [m for m in first + second if m[0] == supplier]
    assert len(mine) == 1
    assert [m for m in await mail() if m[0] == supplier] == []
    rows = await pool.fetch("SELECT * FROM mail_outbox WHERE id = $1", mine[0][1])
    assert [r["recipients"] for r in rows] == [["ill@hit.example.edu.cn"]]
    assert rows[0]["kind"] == "holdings_quality"
    msg = message_from_bytes(rows[0]["raw"], policy=default_policy)
    assert isinstance(msg, EmailMessage)
    assert "Holdings to check 2025-03" in str(msg["Subject"])
    body = msg.get_content()
    assert "准确性测试图书馆" in body and issn in body and "NotOnShelf" in body
    assert "2025-03-14" in body and txn in body
    # The month after has nothing to say of this supplier.
    async with pool.acquire() as conn:
        assert [m for m in await mail_holdings_quality(conn, settings, "2025-04")
                if m[0] == supplier] == []
