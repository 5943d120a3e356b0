"""HTML of the payments, aging and disputes pages (web/finance/payments.py), and the
tables the library's statement page shares with them. Chinese and English labels, as
the other finance pages; everything from the database goes through `tag` (escaped).
"""

from __future__ import annotations

import datetime
import json
from collections.abc import Callable, Sequence
from typing import Any

from settlement.disputes import Dispute
from settlement.dues import AGING_BUCKETS, AgingRow, Direction, DueState, Event, Position
from web.finance.html import FIN, layout
from web.operators.html import Clock, Safe, cat, link, money, table, tag

DIRECTIONS = {Direction.TO_CENTRE: "pays the centre 付中心",
              Direction.TO_AGENCY: "the centre pays 中心付"}
STATES = {DueState.DUE: "due 待付", DueState.PART_PAID: "part paid 部分已付",
          DueState.OVERDUE: "overdue 逾期", DueState.DISPUTED: "disputed 争议中",
          DueState.PAID: "paid 已付清"}
DISPUTE_STATES = {"open": "open 处理中", "accepted": "accepted 已接受",
                  "rejected": "rejected 已驳回"}


def due_href(due_id: int) -> str:
    return f"{FIN}/payments/{due_id}"


def notice_block(notice: str | None, error: str | None) -> Safe:
    return cat([tag("p", notice, class_="notice", id="notice") if notice else "",
                tag("p", error, class_="alert", id="error", role="alert") if error else ""])


def _amount(m: Any) -> str:
    return str(m)


def dues_table(rows: Sequence[Position], today: datetime.date,
               href: Callable[[Position], str]) -> Safe:
    body = [[p.period, tag("span", p.agency, class_="mono"), link(href(p), p.reference),
             DIRECTIONS[p.direction], _amount(p.amount), p.paid.amount_text(),
             p.outstanding.amount_text(), p.disputed.amount_text(), p.due_on.isoformat(),
             STATES[p.state(today)]] for p in rows]
    return table(["period 结算期", "agency 成员馆", "reference 参考号", "direction 方向",
                  "amount 金额", "paid 已付", "outstanding 未付", "disputed 争议",
                  "due on 到期日", "state 状态"], body, numeric=range(4, 8),
                 row_attrs=[{"data_reference": p.reference, "data_symbol": p.agency,
                             "data_state": p.state(today).value} for p in rows],
                 id="dues-table", empty="no statement asks for money 无应付款项")


def filter_form(agencies: Sequence[str], agency: str | None, open_only: bool) -> Safe:
    options = [tag("option", "all agencies 全部", value="")] + [
        tag("option", a, value=a, selected=a == agency) for a in agencies]
    return tag("form",
               tag("label", "Agency 成员馆 ", for_="agency"),
               tag("select", *options, name="agency", id="agency"),
               tag("label", tag("input", type="checkbox", name="open", value="1",
                                checked=open_only), " open only 仅未付清"),
               tag("button", "Show 显示", type="submit"),
               method="get", action=f"{FIN}/payments", id="filter")


def payments_page(rows: Sequence[Position], today: datetime.date, *, agencies: Sequence[str],
                  agency: str | None, open_only: bool, who: str, scope: str) -> str:
    parts = [tag("h1", "Payments 付款"), tag("p", scope, class_="muted", id="scope"),
             filter_form(agencies, agency, open_only),
             dues_table(rows, today, lambda p: due_href(p.due_id))]
    return layout("Payments · ILL Hub", cat(parts), who=who,
                  footer=f"States as of {today}. Amounts under open dispute are not dunned.")


def position_facts(p: Position, today: datetime.date) -> Safe:
    facts = [("reference 参考号", p.reference), ("period 结算期", p.period),
             ("agency 成员馆", p.agency), ("direction 方向", DIRECTIONS[p.direction]),
             ("amount 金额", _amount(p.amount)), ("paid 已付", p.paid.amount_text()),
             ("outstanding 未付", p.outstanding.amount_text()),
             ("disputed 争议", p.disputed.amount_text()),
             ("dunned 催缴", p.dunnable.amount_text()),
             ("issued 出具", p.issued_on.isoformat()), ("due on 到期日", p.due_on.isoformat()),
             ("disputes until 争议截止", p.dispute_until.isoformat()),
             ("state 状态", STATES[p.state(today)])]
    return tag("dl", *[cat([tag("dt", k), tag("dd", v, id=f"fact-{i}")])
                       for i, (k, v) in enumerate(facts)], id="facts",
               data_state=p.state(today).value, data_outstanding=p.outstanding.amount_text())


def history_table(events: Sequence[Event], currency: str, clock: Clock) -> Safe:
    body = [[clock(e.at), e.kind.value, e.stage or "",
             "" if e.amount_minor is None else money(e.amount_minor, currency), e.actor,
             tag("span", json.dumps(e.detail, ensure_ascii=False), class_="mono")]
            for e in events]
    return table(["at 时间", "event 事件", "stage", "amount 金额", "by 操作人", "detail"], body,
                 numeric=[3], id="history-table",
                 row_attrs=[{"data_kind": e.kind.value} for e in events])


def record_form(p: Position, csrf: str, today: datetime.date) -> Safe:
    return tag("form", Safe(csrf),
               tag("label", f"Amount 金额 ({p.currency}) ", for_="amount"),
               tag("input", type="text", name="amount", id="amount", required=True,
                   inputmode="decimal", placeholder=p.outstanding.amount_text(), size="12"),
               tag("label", "Paid on 付款日 ", for_="paid_on"),
               tag("input", type="date", name="paid_on", id="paid_on",
                   value=today.isoformat()),
               tag("label", "Bank reference 银行流水号 ", for_="bank_reference"),
               tag("input", type="text", name="bank_reference", id="bank_reference",
                   maxlength="140", size="20"),
               tag("button", "Record payment 登记付款", type="submit", id="do-record"),
               method="post", action=due_href(p.due_id) + "/record", class_="act",
               id="record-form")


def resolve_form(d: Dispute, csrf: str) -> Safe:
    return tag("form", Safe(csrf),
               tag("select", tag("option", "accept 接受", value="accepted"),
                   tag("option", "reject 驳回", value="rejected"), name="outcome",
                   aria_label="outcome"),
               tag("input", type="text", name="corrected_fee", size="8",
                   inputmode="decimal", placeholder="corrected fee 更正费用",
                   aria_label="corrected fee (optional, when accepting)"),
               tag("input", type="text", name="reason", required=True, maxlength="2000",
                   size="24", placeholder="reason 理由", aria_label="reason"),
               tag("button", "Resolve 处理", type="submit", id=f"do-resolve-{d.id}"),
               method="post", action=f"{FIN}/disputes/{d.id}/resolve", class_="act")


def dispute_table(found: Sequence[Dispute], clock: Clock, *,
                  form: Callable[[Dispute], Any] | None = None) -> Safe:
    headers = ["dispute 争议", "reference 参考号", "line 记账号", "transaction 事务",
               "requester 申请馆", "supplier 供应馆", "amount 金额", "reason 理由",
               "opened 提出", "state 状态", "resolution 处理"]
    if form is not None:
        headers.append("action 操作")
    body = []
    for d in found:
        state = d.outcome.value if d.outcome else "open"
        resolution = "" if d.open else cat([
            d.resolution or "", f" — {d.resolved_by}",
            f" (adjustment 调整 {d.adjustment})" if d.adjustment and d.adjustment.minor
            else ""])
        row: list[Any] = [d.id, d.reference, d.posting_id, d.transaction_id, d.agency,
                          d.supplier, str(d.amount), d.reason,
                          f"{clock(d.opened_at)} {d.opened_by} ({d.channel.value})",
                          DISPUTE_STATES[state], resolution]
        if form is not None:
            row.append(form(d) if d.open else "")
        body.append(row)
    return table(headers, body, numeric=[6], id="dispute-table",
                 row_attrs=[{"data_dispute": str(d.id), "data_state": d.outcome.value
                             if d.outcome else "open", "data_reference": d.reference}
                            for d in found], empty="no dispute 无争议")


def due_page(p: Position, events: Sequence[Event], found: Sequence[Dispute],
             today: datetime.date, clock: Clock, *, csrf: str, settle: bool, who: str,
             notice: str | None = None, error: str | None = None) -> str:
    if settle and p.outstanding.minor > 0:
        record: Any = cat([tag("h2", "Record a payment 登记付款", id="record"),
                           record_form(p, csrf, today)])
    elif settle:
        record = tag("p", "Paid in full 已付清.", class_="muted")
    else:
        record = tag("p", "Payments are recorded by the centre's finance office. "
                          "付款由中心财务登记。", class_="muted")
    parts = [tag("h1", f"Statement {p.reference} 结算单"), notice_block(notice, error),
             position_facts(p, today), record,
             tag("h2", "History 记录", id="history"), history_table(events, p.currency, clock),
             tag("h2", "Disputes 争议", id="disputes"),
             dispute_table(found, clock, form=(lambda d: resolve_form(d, csrf))
                           if settle else None)]
    return layout(f"{p.reference} · ILL Hub", cat(parts), who=who,
                  footer=f"Times in {clock.name}; states as of {today}.")


def aging_table(rows: Sequence[AgingRow]) -> Safe:
    names = [b[0] for b in AGING_BUCKETS]
    body = [[tag("span", r.agency, class_="mono"), r.currency,
             *[money(v, r.currency) for v in r.owed_to_centre],
             money(r.by_centre_minor, r.currency), money(r.overdue_minor, r.currency),
             money(r.disputed_minor, r.currency)] for r in rows]
    return table(["agency 成员馆", "currency", *[f"{n} days 天" for n in names],
                  "owed by the centre 中心应付", "overdue 逾期", "disputed 争议"], body,
                 numeric=range(2, len(names) + 5), id="aging-table",
                 row_attrs=[{"data_symbol": r.agency} for r in rows],
                 caption="Owed to the centre by days since issue 按出具天数统计的应收款",
                 empty="nothing outstanding 无未付款项")


def aging_page(rows: Sequence[AgingRow], today: datetime.date, *, who: str,
               scope: str) -> str:
    parts = [tag("h1", "Aging 账龄"), tag("p", scope, class_="muted", id="scope"),
             aging_table(rows)]
    return layout("Aging · ILL Hub", cat(parts), who=who, footer=f"Aged as of {today}.")


def disputes_page(found: Sequence[Dispute], clock: Clock, *, csrf: str, settle: bool,
                  open_only: bool, who: str, scope: str, notice: str | None = None,
                  error: str | None = None) -> str:
    toggle = link(f"{FIN}/disputes" + ("" if open_only else "?open=1"),
                  "show all 全部" if open_only else "open only 仅处理中", id="toggle")
    parts = [tag("h1", "Disputes 争议"), tag("p", scope, class_="muted", id="scope"),
             notice_block(notice, error), tag("p", toggle),
             dispute_table(found, clock, form=(lambda d: resolve_form(d, csrf))
                           if settle else None)]
    return layout("Disputes · ILL Hub", cat(parts), who=who,
                  footer="Accepting reverses the charge in the open period (and charges the "
                         "corrected fee, if given); the closed run is never changed.")
