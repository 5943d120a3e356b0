"""HTML for a library's staff pages: the operators' building blocks (web/operators/html.py:
structural escaping, tables, the stylesheet) under a header of their own.

Everything from the wire or the database goes through `esc` (via `tag`), so titles,
notes and reasons cannot inject markup; Chinese text is written as it is (UTF-8).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any
from urllib.parse import quote, urlencode

import asyncpg

from broker.states import State
from infra.flags import Flag
from web.library.data import PAGE_SIZE, RECENT_DAYS, Listing, Trail
from web.operators.html import (
    CSS,
    Clock,
    Safe,
    agency_cell,
    cat,
    link,
    money,
    table,
    tag,
    trail_sections,
)

LIB = "/lib"
EXTRA_CSS = """
nav.tabs { display: flex; gap: 1em; }
form.act { display: inline-flex; flex-wrap: wrap; gap: .4em; align-items: center;
           border: 1px solid var(--line); border-radius: 6px; padding: .4em .6em;
           margin: .2em .4em .2em 0; }
.notice { border-left: 4px solid var(--accent); padding: .4em .8em; background: #eef4fb; }
.alert { border-left: 4px solid var(--warn); padding: .4em .8em; background: #fbeeee; }
"""

# ISO 18626 reasonUnfilled (an open code list of the ILL transactions maintenance
# agency); the values the hub's own parties and the conformance kit use, plus the
# common rest. A library answering by hand picks one of these.
REASONS_UNFILLED: dict[str, str] = {
    "NotHeld": "not held 本馆无收藏",
    "NotOnShelf": "not on shelf 不在架",
    "InUse": "in use / on loan 已借出",
    "NotAvailableForILL": "not available for ILL 不提供馆际互借",
    "PoorCondition": "poor condition 品相太差",
    "PolicyProblem": "policy problem 政策限制",
    "Duplicate": "duplicate request 重复请求",
}


def txn_href(txn_id: str, **query: str) -> str:
    path = f"{LIB}/t/" + quote(txn_id, safe="")
    return path + ("?" + urlencode(query) if query else "")


def layout(title: str, body: Any, *, who: str, footer: str = "",
           finance: bool = False) -> str:
    """A page with the library header: transactions, statements, finance, the account."""
    nav = [link(f"{LIB}/", "Transactions 事务"), link(f"{LIB}/statements", "Statements 结算")]
    if finance:
        nav.append(link("/fin/", "Finance 财务"))
    return page(title, body, home=(f"{LIB}/", "ILL Hub · 馆员 Library staff"), nav=nav,
                who=who, footer=footer)


def page(title: str, body: Any, *, home: tuple[str, str], nav: Sequence[Any], who: str,
         footer: str = "") -> str:
    """The frame of the people's pages (library, finance): header, main, footer."""
    top = [link(*home), tag("nav", *nav, class_="tabs"),
           tag("span", who, class_="muted", id="who"),
           link("/account", "Account · sign out 账户·退出", id="account")]
    return ("<!doctype html>\n" + tag(
        "html",
        tag("head", Safe('<meta charset="utf-8">'),
            Safe('<meta name="viewport" content="width=device-width, initial-scale=1">'),
            Safe('<meta name="robots" content="noindex, nofollow">'),
            tag("title", title), tag("style", Safe(CSS + EXTRA_CSS))),
        tag("body", tag("header", *top, class_="top"), tag("main", body),
            tag("footer", footer) if footer else ""),
        lang="zh-CN") + "\n")


def message_page(title: str, *paragraphs: Any, who: str) -> str:
    return layout(title, cat([tag("h1", title), *(tag("p", p) for p in paragraphs)]),
                  who=who)


NOT_FOUND_TITLE = "Unknown transaction 找不到事务"


def not_found_page(txn_id: str, who: str) -> str:
    """The same page for an unknown transaction and one out of reach."""
    return message_page(NOT_FOUND_TITLE,
                        f"There is no transaction “{txn_id}” among your library's.",
                        "Hub transaction ids look like ILL-20250101-0A1B2C3D4E; to find one "
                        "by your request id or a title, use the search on the list.",
                        who=who)


# ---- the list -----------------------------------------------------------------------

def switcher(agencies: Sequence[asyncpg.Record], current: str, query: str | None) -> Safe:
    """A GET form choosing which of the person's agencies the pages show."""
    if len(agencies) < 2:
        return Safe("")
    options = [tag("option", f"{a['name']} ({a['symbol']})", value=a["symbol"],
                   selected=a["symbol"] == current) for a in agencies]
    return tag("form", tag("label", "Library 图书馆 ", for_="agency"),
               tag("select", *options, name="agency", id="agency"),
               tag("input", type="hidden", name="q", value=query) if query else "",
               tag("button", "Show 显示", type="submit"), method="get", action=f"{LIB}/",
               id="switcher")


def search_form(agency: str, query: str | None) -> Safe:
    return tag("form",
               tag("input", type="hidden", name="agency", value=agency),
               tag("input", type="search", name="q", value=query or "", size="40",
                   placeholder="request id / hub id / title 题名 / patron id",
                   aria_label="Search your transactions"),
               tag("button", "Search 查找", type="submit"),
               method="get", action=f"{LIB}/", role="search", id="search")


def list_page(agency: asyncpg.Record, agencies: Sequence[asyncpg.Record], listing: Listing,
              waiting: Sequence[asyncpg.Record], flags: Sequence[Flag], clock: Clock, *,
              who: str, finance: bool) -> str:
    symbol = agency["symbol"]
    rows = [[link(txn_href(r["id"]), r["id"]), r["request_id"] if r["role"] == "requester"
             else "—", r["role"], r["title"] or "—",
             agency_cell(r["requester"], {r["requester"]: r["requester_name"]}),
             agency_cell(r["supplier"], {r["supplier"]: r["supplier_name"]}
                         if r["supplier"] else {}),
             tag("span", r["state"], class_="badge"), clock(r["updated_at"])]
            for r in listing.rows]
    what = (f"matching “{listing.query}”" if listing.query
            else f"open, or changed in the last {RECENT_DAYS} days")
    parts: list[Any] = [
        tag("h1", agency["name"], " ", tag("span", symbol, class_="mono muted")),
        switcher(agencies, symbol, listing.query), search_form(symbol, listing.query),
        tag("h2", "Transactions 事务", id="transactions"),
        table(["transaction", "your request id", "you are", "title 题名", "requester",
               "supplier", "state", "updated"], rows, id="txn-table",
              caption=f"Transactions {what}; open first, newest first; page {listing.page}",
              empty="no transaction" + (f" matches “{listing.query}”" if listing.query
                                        else " open or recent"),
              row_attrs=[{"data_id": r["id"]} for r in listing.rows]),
        _pager(symbol, listing),
        tag("h2", "Messages waiting for you 待送达消息", id="waiting"),
        waiting_table(waiting, clock),
        tag("h2", "Flags 预警", id="flags"),
        flag_table(flags, clock),
    ]
    return layout(f"{agency['name']} · ILL Hub", cat(parts), who=who, finance=finance,
                  footer=f"Times in {clock.name}. At most {PAGE_SIZE} a page.")


def _pager(agency: str, listing: Listing) -> Safe:
    links = []
    base = {"agency": agency, **({"q": listing.query} if listing.query else {})}
    if listing.page > 1:
        links.append(link(f"{LIB}/?" + urlencode({**base, "page": str(listing.page - 1)}),
                          "← newer 上一页", rel="prev"))
    if listing.more:
        links.append(link(f"{LIB}/?" + urlencode({**base, "page": str(listing.page + 1)}),
                          "older 下一页 →", rel="next", id="next-page"))
    return tag("p", *links, class_="noprint") if links else Safe("")


def waiting_table(rows: Sequence[asyncpg.Record], clock: Clock) -> Safe:
    return table(["#", "message", "transaction", "queued", "via", "attempts", "last error"],
                 [[r["id"], r["message_type"] or "—",
                   link(txn_href(r["transaction_id"]), r["transaction_id"])
                   if r["transaction_id"] else "—", clock(r["created_at"]), r["transport"],
                   r["attempts"], r["last_error"] or "—"] for r in rows],
                 numeric=[0, 5], id="waiting-table",
                 empty="nothing waiting: the hub has handed over every message for you",
                 caption="Messages the hub holds for you and has not delivered yet")


def flag_table(flags: Sequence[Flag], clock: Clock) -> Safe:
    return table(["raised", "kind", "about", "transaction", "detail"],
                 [[clock(f.raised_at), f.kind, f.subject,
                   link(txn_href(f.transaction_id), f.transaction_id)
                   if f.transaction_id else "—", f.detail] for f in flags],
                 id="flag-table", empty="no flags")


# ---- one transaction ------------------------------------------------------------------

def transaction_page(v: Trail, clock: Clock, *, who: str, actions: Safe, finance: bool,
                     notice: str | None = None, error: str | None = None) -> str:
    t = v.txn
    bib = v.request.get("bibliographicInfo") or {}
    facts: list[tuple[str, Any]] = [
        ("State 状态", tag("span", t["state"], class_="badge", id="txn-state")),
        ("Requester 请求馆", agency_cell(t["requester"], v.names)),
        ("Request id", tag("span", t["request_id"], class_="mono")),
        ("Current supplier 供应馆", agency_cell(t["supplier"], v.names)),
        ("Service", f"{t['service_type']} / {t['service_kind']} / level "
                    f"{t['service_level'] or 'Normal'}"),
        ("Title 题名", tag("span", bib.get("title") or "—", id="txn-title")),
        ("Author 著者", bib.get("author") or "—"),
        ("Article / part", bib.get("titleOfComponent") or "—"),
        ("Maximum cost", money(t["max_cost_minor"], t["currency"])),
        ("Deadline", clock(t["deadline_at"])),
        ("Created", clock(t["created_at"])),
        ("Updated", clock(t["updated_at"])),
        ("Closed", clock(t["closed_at"])),
    ]
    parts: list[Any] = [tag("h1", "Transaction 事务 ", tag("span", t["id"], class_="mono"))]
    if notice:
        parts.append(tag("p", notice, class_="notice", role="status", id="notice"))
    if error:
        parts.append(tag("p", error, class_="alert", role="alert", id="error"))
    parts += [
        tag("dl", *(cat([tag("dt", k), tag("dd", val)]) for k, val in facts), class_="facts"),
        tag("h2", "Actions 操作", id="actions"), actions,
        *trail_sections(v.rota, v.excluded, v.audit, v.names, clock, quotes=False),
    ]
    if v.audit_more:
        parts.append(tag("p", "Only the first 1,000 audit rows are shown.", class_="muted"))
    parts += [tag("h2", "Messages waiting for you 待送达消息", id="waiting"),
              waiting_table(v.waiting, clock),
              tag("h2", "Flags 预警", id="flags"), flag_table(v.flags, clock)]
    return layout(f"{t['id']} · ILL Hub", cat(parts), who=who, finance=finance,
                  footer=f"Times in {clock.name}. Patron data is not shown on these pages.")


def action_form(txn_id: str, action: str, csrf: str, label: str, *fields: Any) -> Safe:
    return tag("form", Safe(csrf), *fields,
               tag("input", type="text", name="note", maxlength="500", size="24",
                   placeholder="note 附言 (optional)", aria_label="note"),
               tag("button", label, type="submit", id=f"do-{action}"),
               method="post", action=txn_href(txn_id) + f"/{action}", class_="act")


def actions_block(txn: asyncpg.Record, csrf: str, *, as_requester: bool,
                  as_supplier: bool) -> Safe:
    """The forms a person may try on this transaction; the state machine decides."""
    forms: list[Any] = []
    txn_id = txn["id"]
    state = txn["state"]
    if as_requester:
        forms.append(action_form(txn_id, "cancel", csrf, "Cancel the request 取消请求"))
        forms.append(action_form(txn_id, "received", csrf, "Mark received 确认收到"))
    if as_supplier:
        reasons = [tag("option", text, value=code) for code, text in REASONS_UNFILLED.items()]
        forms.append(action_form(
            txn_id, "answer", csrf, "Answer 答复",
            tag("select", tag("option", "Will supply 将提供", value="WillSupply"),
                tag("option", "Unfilled 无法提供", value="Unfilled"),
                name="answer", aria_label="answer"),
            tag("select", tag("option", "reason if unfilled 无法提供原因", value=""), *reasons,
                name="reasonUnfilled", aria_label="reason unfilled")))
        forms.append(action_form(txn_id, "returned", csrf,
                                 "Mark returned (loan completed) 确认归还"))
    if not forms:
        return tag("p", "Nothing for you to do here: your library is neither this "
                        "request's requester nor its current supplier.", class_="muted")
    closed = state in {State.COPY_COMPLETED, State.LOAN_COMPLETED, State.UNFILLED,
                       State.CANCELLED, State.COMPLETED_WITHOUT_RETURN}
    note = ("This request is closed; the hub will refuse most actions." if closed else
            "Use these when your own ILL system cannot send the message. Each goes through "
            "the hub as your library's message; the hub refuses what the request's state "
            "does not allow, and says why.")
    return cat([tag("p", note, class_="muted"), *forms])


def refusal_text(action: str, error_type: str, error_value: str) -> str:
    return f"The hub refused “{action}” ({error_type}): {error_value}"
