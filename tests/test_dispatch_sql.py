"""Dispatch's SQL: named statements, the tables it may name, and the fee terms it reads
through settlement's `fee_terms_in_force()`.

The first tests are pure (no servers); the last needs PostgreSQL.
"""

from __future__ import annotations

import datetime
import re
from dataclasses import fields

import asyncpg
import pytest

from broker.dispatch import sql
from broker.dispatch.store import NewTransaction, Txn
from settlement.fees import fee_terms, load_fees, schedule
from tests.support.agencies import sql_agencies
from tests.support.paths import ROOT

DISPATCH = ROOT / "broker" / "dispatch"
# Settlement's and delivery's tables: dispatch reads none of them directly.
FOREIGN = ("fee_load", "fee_schedule", "fee_logistics", "subsidy_version", "subsidy_budget",
           "ledger_posting", "ledger_entry", "subsidy_grant", "charge_flag", "settlement_period",
           "settlement_run", "settlement_item", "settlement_net", "settlement_statement",
           "ftp_upload", "document", "download_grant", "download", "mail_outbox",
           "retention_log")
TABLE_USE = re.compile(r"\b(?:FROM|JOIN|INTO|UPDATE)\s+([a-z_]+)", re.I)


def test_named_parameters_are_numbered_once_in_order() -> None:
    st = sql.named("SELECT :b::int, :a, :b, x::text, ':not' FROM t WHERE y = :a")
    assert st.text == "SELECT $1::int, $2, $1, x::text, ':not' FROM t WHERE y = $2"
    assert st.names == ("b", "a")
    assert st.args({"a": 1, "b": 2}) == (2, 1)
    with pytest.raises(TypeError, match=r"missing \['a'\], unknown \['c'\]"):
        st.args({"b": 2, "c": 3})


def test_new_transaction_parameters_come_from_one_place() -> None:
    new = NewTransaction(**{f.name: None for f in fields(NewTransaction)})
    # params() is the one function that builds them: each name exactly once.
    assert sorted(new.params()) == sorted(sql.NEW_TRANSACTION.names)


def test_txn_has_a_field_for_each_column_read() -> None:
    assert [f.name for f in fields(Txn)] == sql.TXN_COLUMNS.split(", ")


def test_each_rule_is_written_once() -> None:
    text = "\n".join(p.read_text("utf-8") for p in sorted(DISPATCH.glob("*.py")))
    # Counters: one change insert each, and one fold into the totals each.
    assert text.count("INSERT INTO scorecard_change") == 1
    assert text.count("INSERT INTO scorecard_total") == 1
    assert text.count("INSERT INTO audit_log") == 1
    assert text.count("INSERT INTO supplier_day_change") == 1
    assert text.count("INSERT INTO supplier_day_total") == 1
    assert text.count("INSERT INTO ill_transaction") == 1


def test_sql_lives_in_sql_py_and_names_no_foreign_table() -> None:
    named = {t for t in TABLE_USE.findall(sql.REQUEST_FACTS + sql.CANDIDATES_ONLY)}
    assert "fee_terms_in_force" in named and "fee_schedule" not in named
    for path in DISPATCH.glob("*.py"):
        text = path.read_text("utf-8")
        assert not set(TABLE_USE.findall(text)) & set(FOREIGN), path.name
        assert "fee_schedule" not in text, path.name
        if path.name != "sql.py":
            assert not re.search(r"\b(SELECT|INSERT INTO|UPDATE|DELETE FROM)\s", text), path.name


async def test_fee_terms_in_force_agree_with_settlement(pool: asyncpg.Pool) -> None:
    [supplier] = await sql_agencies(pool, "fee view", roles=("supplier",))

    def fees(*terms: tuple[str, str | None, str]) -> str:
        """A fee file: DocumentDelivery at a base fee from a first to a last day."""
        return 'currency = "CNY"\n' + "".join(
            f'[[fee]]\nsupplier = "{supplier}"\nservice_kind = "DocumentDelivery"\n'
            f'effective_from = {first}\nbase = "{base}"\n'
            + (f"effective_to = {last}\n" if last else "") for first, last, base in terms)

    async with pool.acquire() as conn:
        await load_fees(conn, fees(("2026-01-01", None, "9.00")))  # superseded by the next
        await load_fees(conn, fees(("2026-01-01", "2026-06-30", "2.00"),
                                   ("2026-07-01", None, "3.00")))
        for day, fixed in (("2025-12-31", []), ("2026-01-01", [200]), ("2026-06-30", [200]),
                           ("2026-07-01", [300]), ("2030-01-01", [300])):
            on = datetime.date.fromisoformat(day)
            rows = await conn.fetch("SELECT * FROM fee_terms_in_force($1, $2) "
                                    "WHERE supplier = $3", "DocumentDelivery", on, supplier)
            assert [r["fixed_minor"] for r in rows] == fixed, day
            # The same entry settlement's own reader finds.
            terms = await schedule(conn, supplier, "DocumentDelivery", on)
            assert [fee_terms(r) for r in rows] == ([terms] if terms else []), day
        assert not await conn.fetch("SELECT * FROM fee_terms_in_force('BookLoan', $1) "
                                    "WHERE supplier = $2", datetime.date(2026, 3, 1), supplier)
