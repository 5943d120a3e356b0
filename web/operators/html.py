"""HTML for the operators' pages: server-side, no build step, no JavaScript.

Escaping is structural: `Safe` marks markup this module built; everything else
that reaches a page goes through `esc` (html.escape, quotes included), so agency
names, reasons, audit details and request data from the wire cannot inject
markup. Pages are UTF-8 and print cleanly (the header's forms are hidden in print).
"""

from __future__ import annotations

import html
import json
from collections.abc import Iterable, Sequence
from datetime import date, datetime
from typing import Any
from urllib.parse import quote
from zoneinfo import ZoneInfo

from aiohttp import web

from broker.holdings_trust import MIN_ASKED, WINDOW_DAYS
from broker.policy import TIER_NAMES
from infra.flags import Flag
from schemas.money import Money
from web.operators.data import (
    DAYS,
    HOLDINGS_LIMIT,
    REQUESTER_LIMIT,
    SUPPLIER_LIMIT,
    TURNAROUND_LABELS,
    AgencyView,
    Dashboard,
    HoldingsRow,
    TransactionView,
)
from web.operators.svg import bar_chart, hbar_chart, meter

# Every page's answer (the operators' pages and the sign-in pages): never cached, never
# framed, no scripts at all.
HEADERS = {
    "Cache-Control": "no-store",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
    "Content-Security-Policy": ("default-src 'none'; style-src 'unsafe-inline'; img-src data:; "
                                "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"),
}
VOID = frozenset({"br", "hr", "img", "input", "link", "meta"})


def html_response(body: str, status: int = 200, headers: dict[str, str] | None = None
                  ) -> web.Response:
    return web.Response(status=status, text=body, content_type="text/html", charset="utf-8",
                        headers={**HEADERS, **(headers or {})})


def redirect(location: str, status: int = 303) -> web.Response:
    return web.Response(status=status, headers={**HEADERS, "Location": location})


class Safe(str):
    """Markup built here; `esc` passes it through unchanged."""


def esc(value: Any) -> Safe:
    if isinstance(value, Safe):
        return value
    return Safe(html.escape("" if value is None else str(value), quote=True))


def cat(parts: Iterable[Any]) -> Safe:
    return Safe("".join(esc(p) for p in parts))


def tag(name: str, /, *children: Any, **attrs: Any) -> Safe:
    """`<name attrs>children</name>`; attribute names: trailing `_` dropped, `_` -> `-`."""
    rendered = []
    for key, value in attrs.items():
        if value is None or value is False:
            continue
        key = key.rstrip("_").replace("_", "-")
        rendered.append(f" {key}" if value is True else f' {key}="{esc(value)}"')
    if name in VOID:
        return Safe(f"<{name}{''.join(rendered)}>")
    return Safe(f"<{name}{''.join(rendered)}>{cat(children)}</{name}>")


def link(href: str, /, *children: Any, **attrs: Any) -> Safe:
    return tag("a", *children, href=href, **attrs)


def txn_href(txn_id: str) -> str:
    return "/ops/t/" + quote(txn_id, safe="")


def agency_href(symbol: str) -> str:
    return "/ops/a/" + quote(symbol, safe="")


def table(headers: Sequence[str], rows: Iterable[Sequence[Any]], *, numeric: Iterable[int] = (),
          empty: str = "none", caption: str | None = None,
          row_attrs: Sequence[dict[str, Any]] | None = None, **attrs: Any) -> Safe:
    nums = set(numeric)
    head = tag("tr", *(tag("th", h, class_="num" if i in nums else None)
                       for i, h in enumerate(headers)))
    body = []
    for n, row in enumerate(rows):
        extra = row_attrs[n] if row_attrs else {}
        body.append(tag("tr", *(tag("td", c, class_="num" if i in nums else None)
                                for i, c in enumerate(row)), **extra))
    if not body:
        body.append(tag("tr", tag("td", empty, colspan=str(len(headers)), class_="empty")))
    return tag("div", tag("table", tag("caption", caption) if caption else "",
                          tag("thead", head), tag("tbody", *body), **attrs), class_="scroll")


CSS = """
:root { --ink:#222; --muted:#667; --line:#d8dde3; --accent:#2f6db5; --warn:#c0392b; }
* { box-sizing: border-box; }
body { font-family: system-ui, "Noto Sans CJK SC", "WenQuanYi Micro Hei", "Microsoft YaHei",
       sans-serif; color: var(--ink); margin: 0; line-height: 1.4; }
header.top { display: flex; flex-wrap: wrap; gap: .5em 1.5em; align-items: center;
             padding: .6em 1.2em; background: #1f3b5c; color: #fff; }
header.top a { color: #fff; text-decoration: none; font-weight: 600; }
header.top form { display: flex; gap: .4em; margin: 0; }
main { padding: 0 1.2em 2em; max-width: 1280px; }
h1 { font-size: 1.5em; margin: .8em 0 .4em; }
h2 { font-size: 1.15em; margin: 1.4em 0 .4em; border-bottom: 1px solid var(--line); }
.kpis { display: grid; grid-template-columns: repeat(auto-fit, minmax(10em, 1fr)); gap: .6em; }
.kpi { border: 1px solid var(--line); border-radius: 6px; padding: .5em .8em; }
.kpi .label { color: var(--muted); font-size: .85em; }
.kpi .value { font-size: 1.6em; font-weight: 600; }
.grid2 { display: grid; grid-template-columns: repeat(auto-fit, minmax(420px, 1fr));
         gap: 0 2em; }
.scroll { overflow-x: auto; }
table { border-collapse: collapse; margin: .3em 0; font-size: .9em; }
caption { text-align: left; color: var(--muted); padding: .2em 0; }
th, td { border-bottom: 1px solid var(--line); padding: .25em .6em; text-align: left;
         vertical-align: top; }
th { background: #f3f5f8; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
td.num { white-space: nowrap; }
td.empty { color: var(--muted); font-style: italic; }
tr.disabled td { color: var(--muted); }
.muted { color: var(--muted); }
.warn { color: var(--warn); font-weight: 600; }
.badge { display: inline-block; padding: .05em .5em; border-radius: 1em; background: #e8eef6;
         font-size: .85em; }
dl.facts { display: grid; grid-template-columns: max-content 1fr; gap: .2em 1em; }
dl.facts dt { color: var(--muted); }
dl.facts dd { margin: 0; }
ul.reasons { margin: 0; padding-left: 1.1em; }
code, .mono { font-family: ui-monospace, monospace; font-size: .92em; }
.detail { font-size: .85em; white-space: pre-wrap; word-break: break-word; max-width: 48em; }
form.login { max-width: 22em; display: grid; gap: .6em; margin-top: 1em; }
input, button { font: inherit; padding: .3em .5em; }
.error { color: var(--warn); }
footer { color: var(--muted); font-size: .8em; padding: 1em 1.2em; }
@media print {
  header.top form, .noprint { display: none; }
  header.top { background: none; color: #000; border-bottom: 1px solid #000; }
  header.top a { color: #000; }
  main { max-width: none; }
  h2 { break-after: avoid; }
  tr, .kpi, svg { break-inside: avoid; }
  .scroll { overflow: visible; }
}
"""


def layout(title: str, body: Any, *, signed_in: bool = True, footer: str = "",
           search: str = "") -> str:
    top: list[Any] = [link("/ops/", "ILL Hub · 运营 Operators")]
    if signed_in:
        top.append(tag("form", tag("input", type="search", name="q", value=search,
                                   placeholder="transaction id / request id",
                                   aria_label="Find a transaction", size="28"),
                       tag("button", "Find", type="submit"),
                       method="get", action="/ops/search", role="search"))
        # A link, not a form: the account page holds the sign-out forms with their CSRF
        # token, so no page here needs the session to render.
        top.append(link("/account", "Account · sign out 账户·退出", id="account"))
    return ("<!doctype html>\n" + tag(
        "html",
        tag("head", Safe('<meta charset="utf-8">'),
            Safe('<meta name="viewport" content="width=device-width, initial-scale=1">'),
            Safe('<meta name="robots" content="noindex, nofollow">'),
            tag("title", title), tag("style", Safe(CSS))),
        tag("body", tag("header", *top, class_="top"), tag("main", body),
            tag("footer", footer) if footer else ""),
        lang="zh-CN") + "\n")


def message_page(title: str, *paragraphs: Any, signed_in: bool = False) -> str:
    return layout(title, cat([tag("h1", title), *(tag("p", p) for p in paragraphs)]),
                  signed_in=signed_in)


# ---- formatting -------------------------------------------------------------------

def pct(x: float | None) -> str:
    return "—" if x is None else f"{x * 100:.1f} %"


def hours(h: float | None) -> str:
    if h is None:
        return "—"
    return f"{h * 60:.0f} min" if h < 1 else f"{h:.1f} h"


def money(minor: int | None, currency: str | None) -> str:
    if minor is None:
        return "—"
    try:
        return str(Money(int(minor), currency or "CNY"))
    except ValueError:
        return f"{minor} (minor units) {currency}"


class Clock:
    """Formats stored UTC times in the consortium's zone."""

    def __init__(self, tz: str) -> None:
        self.zone = ZoneInfo(tz)
        self.name = tz

    def __call__(self, ts: datetime | None) -> str:
        if ts is None:
            return "—"
        return ts.astimezone(self.zone).strftime("%Y-%m-%d %H:%M:%S")


def agency_cell(symbol: str | None, names: dict[str, str]) -> Safe:
    if not symbol:
        return Safe("—")
    name = names.get(symbol)
    if name:
        return cat([name, tag("br"), tag("span", symbol, class_="mono muted")])
    return tag("span", symbol, class_="mono")


def kpi(label: str, value: Any, ident: str, note: Any = "") -> Safe:
    return tag("div", tag("div", label, class_="label"),
               tag("div", value, class_="value", id=ident),
               tag("div", note, class_="label") if note else "", class_="kpi")


# ---- the dashboard ----------------------------------------------------------------

def dashboard_page(d: Dashboard, clock: Clock, generated: datetime) -> str:
    parts = [_dashboard_head(d, clock), _volume_and_turnaround(d), _fill_and_open(d),
             _agency_tables(d), _holdings_quality(d.holdings), _dead_letters(d, clock),
             _flag_tables(d, clock)]
    footer = f"Times in {clock.name}. Generated {clock(generated)}."
    return layout("Dashboard · ILL Hub", cat(parts), footer=footer)


def _dashboard_head(d: Dashboard, clock: Clock) -> Safe:
    """The title, the window, and the key figures."""
    o = d.outcomes
    decided_note = (f"{o.filled} filled of {o.decided} decided"
                    if o.decided else "no decided requests yet")
    return cat([
        tag("h1", "Dashboard 运营概览"),
        tag("p", f"Last {DAYS} days: {d.volume[0][0]:%Y-%m-%d} to {d.today:%Y-%m-%d} "
                 f"({clock.name}).", class_="muted"),
        tag("div",
            kpi(f"Requests ({DAYS} d) 请求", o.requests, "kpi-requests"),
            kpi("Fill rate 满足率", pct(o.fill_rate), "fill-rate", decided_note),
            kpi("Open requests 处理中", d.open_total, "kpi-open"),
            kpi("Turnaround p50 周转", hours(d.turnaround.p50), "kpi-turnaround",
                f"p90 {hours(d.turnaround.p90)}"),
            kpi("Dead letters 死信", d.dead.open, "kpi-dead",
                f"{d.dead.total} ever, {d.dead.total - d.dead.open} replayed"),
            kpi(f"Charge flags ({DAYS} d) 收费违规", d.flags.charges_recent, "kpi-flags"),
            class_="kpis")])


def _volume_and_turnaround(d: Dashboard) -> Safe:
    """Requests per day, and the turnaround histogram."""
    vol_bars = [(day.strftime("%m-%d"), n) for day, n in d.volume]
    t = d.turnaround
    turnaround_bars = list(zip(TURNAROUND_LABELS, t.buckets, strict=True))
    return tag(
        "div",
        tag("section",
            tag("h2", "Volume 请求量", id="volume"),
            Safe(bar_chart(vol_bars, title=f"Requests per day, last {DAYS} days",
                           desc=", ".join(f"{lbl}: {n}" for lbl, n in vol_bars if n),
                           label_every=5, highlight_last=True))),
        tag("section",
            tag("h2", "Turnaround 周转时间", id="turnaround"),
            Safe(bar_chart(turnaround_bars, title="Hours from first forward to delivery",
                           width=520)),
            tag("p", f"{t.n} {'delivery' if t.n == 1 else 'deliveries'} in the last "
                     f"{DAYS} days: mean {hours(t.mean)}, median {hours(t.p50)}, "
                     f"90th percentile {hours(t.p90)}. From the first forward "
                     "to CopyCompleted or Loaned.", class_="muted")),
        class_="grid2")


def _fill_and_open(d: Dashboard) -> Safe:
    """The fill rate with its outcomes, and open requests by state."""
    o = d.outcomes
    return tag(
        "div",
        tag("section",
            tag("h2", "Fill rate 满足率", id="fill"),
            Safe(meter(o.fill_rate, title=f"fill rate {pct(o.fill_rate)}", width=320,
                       height=18)),
            table(["outcome", "requests"],
                  [["filled (copy delivered or loaned)", o.filled],
                   ["unfilled (rota exhausted)", o.unfilled],
                   ["cancelled", o.cancelled],
                   ["still open", o.requests - o.decided],
                   [tag("strong", "fill rate = filled ÷ (filled + unfilled + cancelled)"),
                    tag("strong", pct(o.fill_rate))]],
                  numeric=[1], caption=f"Requests created in the last {DAYS} days")),
        tag("section",
            tag("h2", "Open requests by state 处理中", id="open"),
            Safe(hbar_chart(d.open_by_state, title="Open requests by state"))),
        class_="grid2")


def _agency_tables(d: Dashboard) -> Safe:
    """Suppliers' scorecards, requesters' activity, subsidy budgets."""
    return cat([
        tag("h2", "Suppliers 供应馆", id="suppliers"),
        supplier_table(d.suppliers, caption=(
            f"Enabled first, busiest first, at most {SUPPLIER_LIMIT}; since records began "
            "(scorecards). Fill rate = filled ÷ (filled + unfilled + timed out); "
            "load = requests open with the supplier now.")),
        tag("h2", f"Requesters 请求馆 (last {DAYS} days)", id="requesters"),
        requester_table(d.requesters, caption=f"Busiest first, at most {REQUESTER_LIMIT}"),
        tag("h2", f"Subsidy budgets 补贴预算 ({d.budget_period} and running totals)",
            id="budgets"),
        budget_table(d.budgets, caption=(
            f"Most used first; {len(d.budgets)} of {d.budgets_total} shown"))])


def _holdings_quality(holdings: Sequence[HoldingsRow]) -> Safe:
    """The suppliers whose holdings lists are least true (issue 18)."""
    rows, attrs = [], []
    for h in holdings:
        rows.append([agency_link(h.supplier, h.name), tag("span", h.supplier, class_="mono"),
                     h.asked, h.not_held, pct(h.accuracy),
                     tag("span", h.doubted, class_="warn") if h.doubted else 0])
        attrs.append({"data_symbol": h.supplier})
    return cat([
        tag("h2", "Holdings quality 馆藏准确性", id="holdings"),
        table(["supplier", "symbol", "asked because listed", "not held", "accuracy",
               "holdings in doubt"], rows, numeric=range(2, 6), row_attrs=attrs,
              id="holdings-table", empty="no answers about listed holdings yet", caption=(
                  f"Least accurate first, at most {HOLDINGS_LIMIT}. Of the items its holdings "
                  f"list that a supplier was asked for and answered in the last {WINDOW_DAYS} "
                  "days, the share it held (NotHeld, NotOnShelf, Missing, Lost count against "
                  f"it; — below {MIN_ASKED} answers). A holding in doubt is asked for "
                  "elsewhere first until the supplier supplies it or loads it again; each "
                  "library is mailed its failed holdings monthly (run.py holdings quality)."))])


def _dead_letters(d: Dashboard, clock: Clock) -> Safe:
    dead = d.dead
    return cat([
        tag("h2", "Dead letters 死信", id="dead"),
        tag("p", f"{dead.open} waiting for an operator (run.py dead list / dead replay ID); "
                 f"{dead.total} in all.", class_="warn" if dead.open else None),
        table(["#", "received", "sender", "routing key", "reason"],
              [[r["id"], clock(r["received_at"]), r["sender"] or "—", r["routing_key"] or "—",
                _short(r["reason"], 200)] for r in dead.recent],
              numeric=[0], caption="Latest five not yet replayed")])


def _flag_tables(d: Dashboard, clock: Clock) -> Safe:
    """Refused charges, then every kind of flag (refused charges among them)."""
    f = d.flags
    return cat([
        tag("h2", "Charge flags 收费违规", id="flags"),
        charge_flag_table(f.charges, clock,
                          caption=f"Latest ten; {f.charges_recent} in the last {DAYS} days"),
        tag("h2", "Violations and quality flags 违规与质量预警", id="violations"),
        table(["raised", "kind", "about", "transaction", "detail"],
              [[clock(v.raised_at), v.kind, v.subject, _txn_link(v.transaction_id),
                _short(v.detail, 200)] for v in f.violations],
              caption=f"Latest twenty in the last {DAYS} days (run.py flags lists them all)")])


def _txn_link(txn_id: str | None) -> Any:
    return link(txn_href(txn_id), txn_id) if txn_id else "—"


def _fee(f: Flag) -> str:
    return money(f.facts.get("fee_minor"), f.facts.get("currency"))


def _limit(f: Flag) -> str:
    """The quote or maximumCosts the fee was above, in its own currency."""
    return money(f.facts.get("limit_minor"),
                 f.facts.get("limit_currency") or f.facts.get("currency"))


def charge_flag_table(charges: Sequence[Flag], clock: Clock, *,
                      caption: str | None = None) -> Safe:
    """Refused charges, one row each (the dashboard's and an agency's)."""
    return table(["flagged", "transaction", "supplier", "requester", "reason", "fee", "limit"],
                 [[clock(f.raised_at), _txn_link(f.transaction_id),
                   f.facts.get("supplier", f.subject), f.facts.get("requester"),
                   f.facts.get("reason"), _fee(f), _limit(f)] for f in charges],
                 caption=caption)


def agency_link(symbol: str, name: Any) -> Safe:
    return link(agency_href(symbol), name)


def supplier_table(suppliers: Sequence[Any], *, caption: str) -> Safe:
    rows, attrs = [], []
    for s in suppliers:
        name: Any = agency_link(s["supplier"], s["name"])
        if not s["enabled"]:
            name = cat([name, " ", tag("span", "disabled", class_="badge")])
        rows.append([name, tag("span", s["supplier"], class_="mono"), s["forwarded"],
                     s["filled"], s["unfilled"], pct(s["fill_rate"]), hours(s["mean_hours"]),
                     tag("span", s["timed_out"], class_="warn") if s["timed_out"] else 0,
                     s["open_requests"], s["today"]])
        attrs.append({"data_symbol": s["supplier"],
                      "class_": None if s["enabled"] else "disabled"})
    return table(["supplier", "symbol", "forwarded", "filled", "unfilled", "fill rate",
                  "mean turnaround", "deadline breaches", "current load", "forwarded today"],
                 rows, numeric=range(2, 10), row_attrs=attrs, id="supplier-table",
                 caption=caption, empty="no requests forwarded to a supplier yet")


def requester_table(requesters: Sequence[Any], *, caption: str) -> Safe:
    rows, attrs = [], []
    for r in requesters:
        rate = r["cancelled"] / r["requests"] if r["requests"] else None
        rows.append([agency_link(r["requester"], r["name"]),
                     tag("span", r["requester"], class_="mono"), r["requests"],
                     r["filled"], r["unfilled"], r["cancelled"], pct(rate), r["open"]])
        attrs.append({"data_symbol": r["requester"]})
    return table(["requester", "symbol", "requests", "filled", "unfilled", "cancelled",
                  "cancellation rate", "open"], rows, numeric=range(2, 8), row_attrs=attrs,
                 id="requester-table", caption=caption,
                 empty=f"no requests in the last {DAYS} days")


def budget_table(budgets: Sequence[Any], *, caption: str) -> Safe:
    rows = []
    for b in budgets:
        used = b["spent_minor"] / b["limit_minor"] if b["limit_minor"] else None
        who = (cat([agency_link(b["requester"], b["requester_name"] or b["requester"]), " ",
                    tag("span", b["requester"], class_="mono muted")])
               if b["requester"] else "all requesters (global)")
        rows.append([b["name"], who, b["period"], money(b["limit_minor"], b["currency"]),
                     money(b["spent_minor"], b["currency"]),
                     money(b["remaining_minor"], b["currency"]),
                     cat([Safe(meter(used, title=f"{pct(used)} used", width=120,
                                     warn_above=0.9)), " ", pct(used)])])
    return table(["budget", "requester", "period", "limit", "spent", "remaining", "used"], rows,
                 numeric=[3, 4, 5], id="budget-table", caption=caption,
                 empty="no subsidy budget drawn on in this period")


def _short(text: str | None, n: int) -> str:
    text = text or ""
    return text if len(text) <= n else text[: n - 1] + "…"


# ---- one transaction ---------------------------------------------------------------

def trail_sections(rota: list[Any], excluded: list[Any], audit: list[Any],
                   names: dict[str, str], clock: Clock, *, quotes: bool) -> list[Safe]:
    """What `run.py explain` shows of a transaction: its rota with ranks and reasons,
    the suppliers excluded, the audit trail (the operators' and the library's pages).
    `quotes`: with each candidate's quoted fee (operators only)."""
    heads = ["#", "supplier", "tier", "score", *(["quote"] if quotes else []), "outcome",
             "forwarded", "answered", "reasons"]
    return [
        tag("h2", "Rota 轮转表: candidates, ranks and reasons", id="rota"),
        table(heads,
              [[e["position"], agency_cell(e["supplier"], names),
                f"{e['tier']} · {TIER_NAMES.get(e['tier'], '?')}", f"{e['score']:.3f}",
                *([money(e["quote_minor"], e["quote_currency"])] if quotes else []),
                tag("span", e["outcome"], class_="badge"), clock(e["forwarded_at"]),
                clock(e["answered_at"]),
                tag("ul", *(tag("li", r) for r in e["reasons"]), class_="reasons")]
               for e in rota],
              numeric=[0, 3], id="rota-table", empty="no rota (refused before routing)"),
        tag("h2", "Excluded suppliers 排除", id="excluded"),
        table(["supplier", "reason"],
              [[agency_cell(x["supplier"], names), x["reason"]] for x in excluded],
              id="excluded-table", empty="nobody was excluded"),
        tag("h2", "Audit trail 审计记录", id="audit"),
        table(["time", "actor", "event", "from → to", "details"],
              [[clock(a["at"]), tag("span", a["actor"], class_="mono"), a["event"],
                f"{a['from_state'] or '—'} → {a['to_state'] or '—'}", _detail(a)]
               for a in audit], id="audit-table"),
    ]


def transaction_page(v: TransactionView, clock: Clock) -> str:
    t = v.txn
    bib = v.request.get("bibliographicInfo") or {}
    service = v.request.get("serviceInfo") or {}
    ids = [f"{i.get('bibliographicItemIdentifierCode', '?')} "
           f"{i.get('bibliographicItemIdentifier', '')}"
           for i in bib.get("bibliographicItemId") or [] if isinstance(i, dict)]
    facts: list[tuple[str, Any]] = [
        ("State 状态", tag("span", t["state"], class_="badge", id="txn-state")),
        ("Requester 请求馆", agency_cell(t["requester"], v.names)),
        ("Request id", tag("span", t["request_id"], class_="mono")),
        ("Current supplier 供应馆", agency_cell(t["supplier"], v.names)),
        ("Rota position", t["rota_position"] or "—"),
        ("Service", f"{t['service_type']} / {t['service_kind']} / level "
                    f"{t['service_level'] or 'Normal'}"),
        ("Title 题名", bib.get("title") or "—"),
        ("Author 著者", bib.get("author") or "—"),
        ("Article / part", bib.get("titleOfComponent") or "—"),
        ("Pages", bib.get("pagesRequested") or "—"),
        ("Identifiers", ", ".join(ids) or "—"),
        ("Maximum cost", money(t["max_cost_minor"], t["currency"])),
        ("Current quote", money(t["quote_minor"], t["quote_currency"])),
        ("Deadline", clock(t["deadline_at"])),
        ("Created", clock(t["created_at"])),
        ("Updated", clock(t["updated_at"])),
        ("Closed", clock(t["closed_at"])),
        ("Cancel requested", clock(t["cancel_requested_at"])),
        ("Policy version", t["policy_version"] or "default"),
    ]
    if service.get("requestSubType") or service.get("serviceLevel"):
        facts.append(("Service info", json.dumps(service, ensure_ascii=False)))
    if t["duplicate_of"]:
        facts.append(("Duplicate of", link(txn_href(t["duplicate_of"]), t["duplicate_of"])))
    parts: list[Any] = [
        tag("h1", "Transaction 事务 ", tag("span", t["id"], class_="mono")),
        tag("dl", *(cat([tag("dt", k), tag("dd", val)]) for k, val in facts), class_="facts"),
        *trail_sections(v.rota, v.excluded, v.audit, v.names, clock, quotes=True),
    ]
    if v.audit_more:
        parts.append(tag("p", "Only the first 1,000 audit rows are shown; "
                              "run.py explain prints them all.", class_="muted"))
    parts += [tag("h2", "Ledger 账目", id="ledger"), _postings(v, clock),
              tag("h2", "Documents and download links 文献与下载链接", id="documents"),
              _documents(v, clock)]
    if v.mails:
        parts += [tag("h2", "Mail 邮件", id="mail"),
                  table(["#", "kind", "queued", "sent", "attempts", "failed", "last error",
                         "recipients"],
                        [[m["id"], m["kind"], clock(m["created_at"]), clock(m["sent_at"]),
                          m["attempts"], clock(m["failed_at"]), m["last_error"] or "—",
                          m["recipients"]] for m in v.mails], numeric=[0, 4, 7])]
    if v.flags:
        parts += [tag("h2", "Charge flags 收费违规", id="txn-flags"),
                  table(["flagged", "event", "supplier", "reason", "fee", "limit", "detail"],
                        [[clock(f.raised_at), f.facts.get("event"),
                          f.facts.get("supplier", f.subject), f.facts.get("reason"), _fee(f),
                          _limit(f), f.detail] for f in v.flags])]
    footer = f"Times in {clock.name}. Patron data is not shown on these pages."
    return layout(f"{t['id']} · ILL Hub", cat(parts), footer=footer)


def _detail(a: Any) -> Safe:
    raw = a["detail"]
    try:
        detail = json.loads(raw) if isinstance(raw, str) else (raw or {})
    except ValueError:
        detail = {"detail": raw}
    lines = []
    if a["message_id"]:
        lines.append(f"message {a['message_id']}")
    if isinstance(detail, dict):
        for key, value in detail.items():
            text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
            lines.append(f"{key}: {text}")
    elif detail:
        lines.append(json.dumps(detail, ensure_ascii=False))
    return tag("div", "\n".join(lines), class_="detail")


def _postings(v: TransactionView, clock: Clock) -> Safe:
    rows = []
    for p in v.postings:
        entries = v.entries.get(p["id"], [])
        rows.append([
            p["id"], p["event"], p["kind"] + (f" of #{p['reverses']}" if p["reverses"] else ""),
            money(p["fee_minor"], p["currency"]), money(p["subsidy_minor"], p["currency"]),
            money(p["patron_share_minor"], p["currency"]),
            money(p["quote_minor"], p["currency"]),
            f"{p['local_date']:%Y-%m-%d}" if isinstance(p["local_date"], date) else "—",
            tag("ul", *(tag("li", f"{e['owner']} {e['account']} "
                                  f"{money(e['amount_minor'], e['currency'])}")
                        for e in entries), class_="reasons"),
            "; ".join(x for x in [p["reason"], *(p["notes"] or [])] if x) or "—"])
    return table(["#", "event", "kind", "fee", "subsidy", "patron share", "quote", "date",
                  "entries", "notes"], rows, numeric=[0, 3, 4, 5, 6], id="ledger-table",
                 empty="nothing posted (no billable event yet, or not billable)")


def _documents(v: TransactionView, clock: Clock) -> Safe:
    docs = table(["document", "file", "type", "bytes", "sha256", "stored", "deleted"],
                 [[tag("span", str(d["id"]), class_="mono"), d["filename"], d["content_type"],
                   d["size"], tag("span", d["sha256"][:16] + "…", class_="mono",
                                  title=d["sha256"]),
                   clock(d["created_at"]), clock(d["deleted_at"])] for d in v.documents],
                 numeric=[3], empty="no electronic copy")
    grants = table(["link", "downloads", "remaining", "expires", "created", "last download",
                    "revoked"],
                   [[tag("span", f"/d/{g['token_prefix']}…", class_="mono"),
                     f"{g['used']} used ({g['downloads']} started)",
                     "unlimited" if g["remaining"] is None
                     else f"{g['remaining']} of {g['max_downloads']}",
                     clock(g["expires_at"]), clock(g["created_at"]),
                     clock(g["last_download_at"]), clock(g["revoked_at"])] for g in v.grants],
                   empty="no download link",
                   caption="Links are shown by their prefix only; tokens are never stored")
    return cat([docs, grants])


def search_results_page(q: str, rows: Sequence[Any], clock: Clock) -> str:
    body = [tag("h1", "Search 查找"),
            tag("p", f"{len(rows)} transactions match “{q}”." if rows
                else f"No transaction has the id or request id “{q}”.")]
    if rows:
        body.append(table(["transaction", "requester", "request id", "state", "created"],
                          [[link(txn_href(r["id"]), r["id"]),
                            agency_cell(r["requester"], {r["requester"]: r["name"]}),
                            r["request_id"], r["state"], clock(r["created_at"])]
                           for r in rows]))
    return layout("Search · ILL Hub", cat(body), search=q)


def agency_page(v: AgencyView, clock: Clock) -> str:
    a = v.agency
    place = " · ".join(x for x in (a["province"], a["city"]) if x) or "—"
    facts: list[tuple[str, Any]] = [
        ("Symbol", tag("span", a["symbol"], class_="mono")),
        ("Roles", ", ".join(a["roles"])),
        ("Province · city", place),
        ("Enabled", "yes" if a["enabled"] else f"no (since {clock(a['disabled_at'])})"),
        ("Registered", clock(a["created_at"])),
    ]
    recent = table(
        ["transaction", "as", "requester", "supplier", "state", "its rota outcome", "at"],
        [[link(txn_href(r["id"]), r["id"]), r["role"], r["requester"], r["supplier"] or "—",
          r["state"], r["outcome"] or "—", clock(r["at"])] for r in v.recent],
        id="agency-recent", empty=f"no traffic in the last {DAYS} days",
        caption=f"Last {DAYS} days, newest first, at most 50")
    parts: list[Any] = [
        tag("h1", a["name"]),
        tag("dl", *(cat([tag("dt", k), tag("dd", val)]) for k, val in facts), class_="facts"),
        tag("h2", "As supplier 作为供应馆"),
        supplier_table([v.supplier] if v.supplier else [], caption="Since records began"),
        tag("h2", f"As requester 作为请求馆 (last {DAYS} days)"),
        requester_table([v.requester] if v.requester else [],
                        caption=f"Requests created since {clock(v.since)}"),
        tag("h2", "Subsidy budgets 补贴预算"),
        budget_table(v.budgets, caption="This requester's own budgets, last 12 months"),
        tag("h2", "Recent transactions 最近事务"),
        recent,
    ]
    if v.flags:
        parts += [tag("h2", "Charge flags 收费违规"), charge_flag_table(v.flags, clock)]
    return layout(f"{a['name']} · ILL Hub", cat(parts),
                  footer=f"Times in {clock.name}.")
