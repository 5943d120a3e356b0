"""HTML for the finance pages (the frame and building blocks of web/library/html.py)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any
from urllib.parse import quote, urlencode

from settlement.subsidy import BudgetRow
from web.finance.data import Statements, file_names
from web.library.html import page
from web.operators.html import Safe, cat, link, money, table, tag

FIN = "/fin"


def file_href(period: str, name: str) -> str:
    return f"{FIN}/files/{quote(period, safe='')}/{quote(name, safe='')}"


def layout(title: str, body: Any, *, who: str, footer: str = "") -> str:
    return page(title, body, home=(f"{FIN}/", "ILL Hub · 财务 Finance"),
                nav=[link(f"{FIN}/", "Statements and budgets 结算与预算"),
                     link(f"{FIN}/payments", "Payments 付款"), link(f"{FIN}/aging", "Aging 账龄"),
                     link(f"{FIN}/disputes", "Disputes 争议")], who=who,
                footer=footer)


def message_page(title: str, *paragraphs: Any, who: str) -> str:
    return layout(title, cat([tag("h1", title), *(tag("p", p) for p in paragraphs)]), who=who)


def period_form(s: Statements, action: str, extra: dict[str, str]) -> Safe:
    if not s.periods:
        return Safe("")
    options = [tag("option", p, value=p, selected=p == s.period) for p in s.periods]
    hidden = [tag("input", type="hidden", name=k, value=v) for k, v in extra.items()]
    return tag("form", tag("label", "Period 结算期 ", for_="period"),
               tag("select", *options, name="period", id="period"), *hidden,
               tag("button", "Show 显示", type="submit"), method="get", action=action,
               id="period-form")


def _files(period: str, names: Sequence[str]) -> Safe:
    return cat([cat([link(file_href(period, n), n.rsplit(".", 1)[-1].upper(),
                          download=n, class_="file", data_file=n), " "])
                for n in names]) if names else Safe("—")


def statements_table(s: Statements) -> Safe:
    if s.period is None:
        return tag("p", "No period has been settled yet. 尚无结算。", class_="muted")
    rows, attrs = [], []
    for r in s.rows:
        cur = r["currency"]
        rows.append([r["name"], tag("span", r["agency"], class_="mono"), r["lines"],
                     money(r["earned_minor"], cur), money(r["owed_minor"], cur),
                     money(r["subsidy_minor"], cur), money(r["net_minor"], cur),
                     _files(s.period, file_names(r["files"]))])
        attrs.append({"data_symbol": r["agency"]})
    return table(["agency 成员馆", "symbol", "lines", "earned 应收", "owed 应付",
                  "subsidy 补贴", "net 净额", "files 文件"], rows, numeric=range(2, 7),
                 row_attrs=attrs, id="statement-table",
                 caption=f"Statements of {s.period}; net > 0: the centre pays the library",
                 empty="no statement of yours in this period")


def summary_section(s: Statements) -> Safe:
    if s.period is None or not (s.summary or s.summary_files):
        return Safe("")
    rows = [[r["currency"], r["agencies"], money(r["earned"], r["currency"]),
             money(r["owed"], r["currency"]), money(r["subsidy"], r["currency"]),
             money(r["centre_net"], r["currency"])] for r in s.summary]
    return cat([tag("h2", "Centre summary 中心汇总", id="summary"),
                table(["currency", "agencies", "earned", "owed", "subsidy paid",
                       "centre's position"], rows, numeric=range(1, 6), id="summary-table"),
                tag("p", "Summary files: ", _files(s.period, s.summary_files))])


def budget_table(rows: Sequence[BudgetRow], period: str) -> Safe:
    body = [[b.name, b.requester_name or b.requester or "all requesters (global) 全体",
             tag("span", b.requester, class_="mono") if b.requester else "—", b.period,
             str(b.limit), str(b.spent), str(b.remaining)] for b in rows]
    return table(["budget 预算", "requester", "symbol", "period", "limit 额度", "spent 已用",
                  "remaining 余额"], body, numeric=[4, 5, 6], id="budget-table",
                 row_attrs=[{"data_symbol": b.requester} for b in rows],
                 caption=f"Budgets of {period} and the running ones",
                 empty="no subsidy budget drawn on")


def finance_page(s: Statements, budgets: Sequence[BudgetRow], budget_period: str, *,
                 who: str, scope: str, action: str = f"{FIN}/",
                 extra: dict[str, str] | None = None, after_statements: Any = "") -> str:
    parts = [tag("h1", "Finance 财务"), tag("p", scope, class_="muted", id="scope"),
             period_form(s, action, extra or {}),
             tag("h2", "Statements 对账单", id="statements"), statements_table(s),
             after_statements, summary_section(s),
             tag("h2", "Subsidy budgets 补贴预算", id="budgets"),
             budget_table(budgets, budget_period)]
    return layout("Finance · ILL Hub", cat(parts), who=who,
                  footer="Files are the settlement run's own (CSV in UTF-8 with BOM, PDF).")


def query(**values: str) -> str:
    return urlencode({k: v for k, v in values.items() if v})
