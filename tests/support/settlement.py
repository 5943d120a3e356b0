"""Settlement's worked example and the helpers around it (real PostgreSQL).

The test database is shared by the whole run, and a settlement run settles every
unsettled posting up to its period's end. So each test settles periods of its own
year in the distant past (`fresh_year`: after every year used so far, so periods
close in calendar order), makes its own agencies, and scopes its assertions to them.
"""

from __future__ import annotations

import datetime

import asyncpg

from schemas.money import Money
from schemas.settings import Settings
from settlement.ledger import post_charge
from settlement.periods import Period
from settlement.run import settle
from settlement.subsidy import load_subsidy
from tests.support.agencies import sql_agencies
from tests.support.money import SHANGHAI, at
from tests.support.names import agency_symbol, unique


async def fresh_year(pool: asyncpg.Pool) -> int:
    """A year no test has used yet, later than all of them (tests run one at a time)."""
    year: int = await pool.fetchval(
        """SELECT greatest(1900,
                  (SELECT max(substr(period, 1, 4)::int) FROM settlement_period),
                  (SELECT max(extract(year FROM local_date))::int FROM ledger_posting
                   WHERE local_date < date '2000-01-01')) + 1""")
    return year


def after(period: str) -> datetime.datetime:
    """An instant just after the period's end."""
    return Period.parse(period).ends_at(SHANGHAI) + datetime.timedelta(minutes=5)


async def sweep(pool: asyncpg.Pool, settings: Settings, year: int) -> None:
    """Settle what a test left unsettled in its year (charges it never ran, a dispute's
    reversal dated after its run): a run takes every unsettled posting up to its cutoff,
    so anything left would land in the next test's run and change its figures."""
    await settle(pool, settings, f"{year}-12", now=after(f"{year}-12"))


async def libraries(pool: asyncpg.Pool, *names: str, emails: bool = False) -> list[str]:
    """Agencies in Beijing with fresh symbols (and finance e-mail addresses if asked)."""
    return await sql_agencies(pool, *names, province="北京", city="北京",
                              finance_emails=emails)


async def half_subsidy(pool: asyncpg.Pool, *requesters: str) -> int:
    """A subsidy version: 50 % of the fee for these requesters only."""
    listed = ", ".join(f'"{r}"' for r in requesters)
    async with pool.acquire() as conn:
        version: int = await load_subsidy(
            conn, f'[[rule]]\nname = "读者补贴 reader support"\n'
                  f"when = {{ requester = [{listed}] }}\npercent = 50\n")
    return version


async def no_subsidy(pool: asyncpg.Pool) -> int:
    """A subsidy version none of this test's agencies match (the latest one might)."""
    return await half_subsidy(pool, agency_symbol("NOBODY"))


async def charge(pool: asyncpg.Pool, version: int | None, requester: str, supplier: str,
                 fee: str, on: datetime.datetime, *, title: str = "敦煌学研究",
                 kind: str = "BookLoan", event: str = "Loaned", currency: str = "CNY",
                 transaction: str | None = None) -> int:
    """Post one charge as dispatch would; returns the posting id."""
    async with pool.acquire() as conn:
        result = await post_charge(
            conn, transaction_id=transaction or f"ILL-{unique('S')}", event=event,
            requester=requester, supplier=supplier, service_kind=kind,
            fee=Money.from_decimal(fee, currency), quote=None, on=on, title=title,
            subsidy_version=version)
    return result.posting_id


async def worked_example(pool: asyncpg.Pool, year: int, *, emails: bool = False
                         ) -> tuple[str, str, str, str]:
    """Three libraries, four loans in one month; returns (period, pku, fdu, lzu).

        PKU supplies FDU  30.00  (FDU subsidised 50 %: 15.00)
        FDU supplies LZU  20.00  (LZU subsidised 10.00)
        LZU supplies PKU  12.00  (PKU not subsidised)
        PKU supplies LZU   8.00  (LZU subsidised 4.00)

    PKU: earned 38.00, owed 12.00, subsidy 0      -> net +26.00 (receives)
    FDU: earned 20.00, owed 30.00, subsidy 15.00  -> net  +5.00 (receives)
    LZU: earned 12.00, owed 28.00, subsidy 14.00  -> net  -2.00 (pays)
    sum of nets +29.00 = the centre's subsidy outlay; the centre's position -29.00.
    """
    pku, fdu, lzu = await libraries(pool, "北京大学图书馆", "复旦大学图书馆", "兰州大学图书馆",
                                    emails=emails)
    v = await half_subsidy(pool, fdu, lzu)
    period = f"{year}-03"
    await charge(pool, v, fdu, pku, "30.00", at(f"{year}-03-02"), title="敦煌学研究（第一卷）")
    await charge(pool, v, lzu, fdu, "20.00", at(f"{year}-03-10"), title="红楼梦版本研究",
                 kind="DocumentDelivery", event="CopyCompleted")
    await charge(pool, v, pku, lzu, "12.00", at(f"{year}-03-15"), title="西夏文献",
                 kind="PayPerView", event="CopyCompleted")
    await charge(pool, v, lzu, pku, "8.00", at(f"{year}-03-31", "23:59"), title="=HYPERLINK(1)")
    return period, pku, fdu, lzu
