"""HTML of a library's statement page (/lib/statements/{reference}): what the statement
asks, its lines with a dispute form on each line still disputable, and its disputes."""

from __future__ import annotations

import datetime
from collections.abc import Sequence
from typing import Any
from urllib.parse import quote

from settlement.disputes import Dispute
from settlement.dues import Position
from settlement.statement_lines import StatementLine
from web.finance.payments_html import (
    DISPUTE_STATES,
    dispute_table,
    dues_table,
    notice_block,
    position_facts,
)
from web.library.html import LIB, layout
from web.operators.html import Clock, Safe, cat, table, tag


def statement_href(reference: str) -> str:
    return f"{LIB}/statements/" + quote(reference, safe="")


def dues_section(rows: Sequence[Position], today: datetime.date) -> Safe:
    """The library's dues on its statements page, each linking to its lines."""
    return cat([tag("h2", "Payments and disputes 付款与争议", id="dues"),
                tag("p", "Open a statement to see its lines and dispute one within the "
                         "window. 打开结算单查看明细，在争议期内可对某一行提出争议。",
                    class_="muted"),
                dues_table(rows, today, lambda p: statement_href(p.reference))])


def dispute_form(p: Position, line: StatementLine, csrf: str) -> Safe:
    return tag("form", Safe(csrf),
               tag("input", type="hidden", name="posting_id", value=str(line.posting_id)),
               tag("input", type="text", name="reason", required=True, maxlength="2000",
                   size="24", placeholder="reason 理由", aria_label="reason"),
               tag("button", "dispute 提出争议", type="submit",
                   id=f"do-dispute-{line.posting_id}"),
               method="post", action=statement_href(p.reference) + "/dispute", class_="act")


def lines_table(p: Position, lines: Sequence[StatementLine], *, csrf: str,
                may_dispute: bool) -> Safe:
    body = []
    for line in lines:
        if line.dispute_state is not None:
            action: Any = DISPUTE_STATES[line.dispute_state]
        elif may_dispute and line.disputable_by(p.agency):
            action = dispute_form(p, line, csrf)
        else:
            action = ""
        role = "requester 申请" if line.requester == p.agency else "supplier 供应"
        body.append([line.local_date.isoformat(), line.posting_id,
                     tag("span", line.transaction_id, class_="mono"), line.title or "—",
                     f"{line.service_kind} / {line.event}", role, str(line.fee),
                     line.subsidy.amount_text(), line.effect(p.agency).amount_text(), action])
    return table(["date 日期", "line 记账号", "transaction 事务", "title 题名", "service 服务",
                  "as 角色", "fee 费用", "subsidy 补贴", "effect on net 净额影响",
                  "dispute 争议"], body, numeric=range(6, 9), id="lines-table",
                 row_attrs=[{"data_posting": str(x.posting_id), "data_kind": x.kind}
                            for x in lines], empty="no line 无明细")


def statement_page(p: Position, lines: Sequence[StatementLine], found: Sequence[Dispute],
                   today: datetime.date, clock: Clock, *, csrf: str, may_dispute: bool,
                   who: str, notice: str | None = None, error: str | None = None) -> str:
    window = (f"Lines may be disputed until {p.dispute_until}. 争议截止日期 {p.dispute_until}。"
              if today <= p.dispute_until else
              f"The dispute window closed on {p.dispute_until}. 争议期已过。")
    parts = [tag("h1", f"Statement {p.reference} 结算单"), notice_block(notice, error),
             position_facts(p, today), tag("h2", "Lines 明细", id="lines"),
             tag("p", window, class_="muted", id="window"),
             lines_table(p, lines, csrf=csrf, may_dispute=may_dispute and
                         today <= p.dispute_until),
             tag("h2", "Disputes 争议", id="disputes"), dispute_table(found, clock)]
    return layout(f"{p.reference} · ILL Hub", cat(parts), who=who, finance=True,
                  footer=f"Times in {clock.name}. A disputed amount is not asked for while "
                         "the dispute is open. 争议处理完毕前，争议金额不予催缴。")
