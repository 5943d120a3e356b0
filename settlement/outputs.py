"""What a settlement run hands to finance staff: files, messages, mails (§4).

The run (settlement/run.py) decides what is settled; this module turns a run's
figures into what leaves it, and nothing here changes a figure:

* files: the CSV statements streamed into a scratch directory (statement_csv.py),
  the PDFs and the centre summary next to them (statement_pdf.py), checked against
  their checksums and moved into `<data_dir>/statements/<period>/`;
* messages on `ill.finance` (`settlement.<period>`, the summary body of record.py, and
  `statement.<symbol>`), queued in the AMQP outbox in the run's closing transaction;
* e-mails to each agency's finance contact and to the centre, with the files attached
  when they are small enough, queued in the mail outbox in the same transaction.
"""

from __future__ import annotations

import asyncio
import functools
import os
import shutil
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import asyncpg

from infra.database import Connection
from infra.mailqueue import enqueue_mail
from infra.outbox import Outgoing, enqueue
from schemas.symbols import split_symbol
from schemas.wire import FINANCE
from settlement.dues import Direction, Position
from settlement.ledger import CENTRE
from settlement.netting import Netting, Scope
from settlement.periods import Period
from settlement.record import AgencyStatement, Names
from settlement.statement_csv import StatementLines, stream_statement_lines, write_summary_csv
from settlement.statement_model import (
    FileInfo,
    RunStamp,
    StatementMeta,
    SummaryData,
    SummaryRow,
    amount,
    attachment_name,
    file_info,
    summary_name,
)
from settlement.statement_pdf import render_pdfs, render_summary_pdf

MAX_ATTACHMENT_BYTES = 10 * 2**20


# --------------------------------------------------------------------------
# files
# --------------------------------------------------------------------------

def fresh_dir(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)


def publish_files(scratch: Path, directory: Path) -> None:
    for f in scratch.iterdir():
        os.replace(f, directory / f.name)
    scratch.rmdir()


def damaged(directory: Path, expected: list[FileInfo]) -> list[str]:
    """The files of `expected` missing from `directory` or not as their checksums say."""
    bad = []
    for f in expected:
        path = directory / f.name
        if not path.is_file() or path.stat().st_size != f.bytes or file_info(path) != f:
            bad.append(f.name)
    return bad


async def stream_lines(pool: asyncpg.Pool, scope: Scope, tz: str, names: Names, scratch: Path,
                       period: str, *, workers: int, progress: Callable[[str], None]
                       ) -> StatementLines:
    """The run's statement lines streamed into `scratch`, on up to `workers` of the pool's
    connections (one is left: the settlement lock holds it)."""
    return await stream_statement_lines(
        pool.acquire, scope, tz, {s: n for s, (n, _e) in names.items()}, scratch, period,
        streams=max(1, min(workers, pool.get_max_size() - 1)), progress=progress)


def statement_metas(netting: Netting, names: Names, stamp: RunStamp) -> list[StatementMeta]:
    return [StatementMeta(**stamp.stamp_fields(), symbol=s, name=names[s][0],
                          totals=netting.totals_of(s)) for s in netting.symbols]


def summary_data(stamp: RunStamp, netting: Netting, names: Names, record: dict[str, Any]
                 ) -> SummaryData:
    return SummaryData(
        **stamp.stamp_fields(),
        rows=tuple(SummaryRow(a.symbol, names[a.symbol][0], a.statement_totals())
                   for a in netting.agencies),
        totals=netting.totals(), by_rule=tuple(netting.rule_rows()),
        by_budget=tuple(netting.budget_rows()), invariants=record, postings=netting.postings,
        late_postings=netting.late_postings, entries=netting.entries)


async def write_files(stamp: RunStamp, metas: list[StatementMeta], netting: Netting,
                      names: Names, record: dict[str, Any], scratch: Path,
                      csvs: dict[str, FileInfo], *, pdf: bool, pdf_workers: int | None,
                      timings: dict[str, float], progress: Callable[[str], None]
                      ) -> dict[str, list[FileInfo]]:
    """The PDFs and the centre summary next to the CSV statements in `scratch`: every
    file of the run by agency (CENTRE: the summary)."""
    files: dict[str, list[FileInfo]] = {s: [f] for s, f in csvs.items()}
    if pdf and metas:
        t = time.monotonic()
        pdfs = await render_pdfs(metas, scratch, pdf_workers=pdf_workers, progress=progress)
        for s, f in pdfs.items():
            files[s].append(f)
        timings["pdf"] = round(time.monotonic() - t, 3)
        progress(f"PDF statements: {len(pdfs):,} files in {timings['pdf']:.1f}s")
    t = time.monotonic()
    data = summary_data(stamp, netting, names, record)
    summary = [await asyncio.to_thread(write_summary_csv,
                                       scratch / summary_name(stamp.period, "csv"), data)]
    if pdf:
        summary.append(await asyncio.to_thread(
            render_summary_pdf, str(scratch / summary_name(stamp.period, "pdf")), data))
    files[CENTRE] = summary
    timings["summary"] = round(time.monotonic() - t, 3)
    return files


# --------------------------------------------------------------------------
# messages on ill.finance
# --------------------------------------------------------------------------

def _agency_id(symbol: str) -> dict[str, str]:
    try:
        scheme, value = split_symbol(symbol)
    except ValueError:
        scheme, _, value = symbol.partition(":")
    return {"agencyIdType": scheme, "agencyIdValue": value}


def statement_message(p: Period, run_id: int, generated_at: str, s: AgencyStatement,
                      due: Sequence[Position] = ()) -> dict[str, Any]:
    return {
        "period": p.name, "runId": run_id, "agency": s.symbol, "agencyId": _agency_id(s.symbol),
        "name": s.name, "dateFrom": p.first_day.isoformat(), "cutoff": p.last_day.isoformat(),
        "generatedAt": generated_at,
        "amounts": [{"currencyCode": t.currency, "net": amount(t.net, t.currency),
                     "direction": t.direction, "earned": amount(t.earned, t.currency),
                     "owed": amount(t.owed, t.currency),
                     "subsidy": amount(t.subsidy, t.currency),
                     "patronShare": amount(t.patron, t.currency)} for t in s.totals],
        "counts": {"lines": sum(t.lines for t in s.totals),
                   "asSupplier": sum(t.as_supplier for t in s.totals),
                   "asRequester": sum(t.as_requester for t in s.totals),
                   "late": sum(t.late for t in s.totals)},
        "files": [f.to_json() for f in s.files],
        # What the statement asks to be paid, and how to quote it (issue 17).
        "payments": [{"reference": d.reference, "direction": d.direction.value,
                      "amount": d.amount.amount_text(), "currencyCode": d.currency,
                      "dueOn": d.due_on.isoformat(),
                      "disputeUntil": d.dispute_until.isoformat()} for d in due],
    }


async def queue_messages(conn: Connection, p: Period, run_id: int,
                         body: dict[str, Any], statements: list[AgencyStatement],
                         issued: Mapping[str, Sequence[Position]]) -> None:
    """The summary and one message an agency, in the outbox (in the caller's transaction)."""
    generated_at = body["generatedAt"]
    messages = [Outgoing(exchange=FINANCE, routing_key=f"settlement.{p}", body=body,
                         message_type="settlement", correlation_id=p.name,
                         message_id=f"settlement:{p}:{run_id}",
                         headers={"period": p.name, "run-id": run_id})]
    messages += [Outgoing(exchange=FINANCE, routing_key=f"statement.{s.symbol}",
                          body=statement_message(p, run_id, generated_at, s,
                                                 issued.get(s.symbol, ())),
                          message_type="statement", correlation_id=p.name,
                          message_id=f"statement:{p}:{run_id}:{s.symbol}",
                          headers={"period": p.name, "run-id": run_id, "agency": s.symbol})
                 for s in statements]
    await enqueue(conn, messages)


# --------------------------------------------------------------------------
# mail
# --------------------------------------------------------------------------

async def mail_statements(conn: Connection, p: Period,
                          statements: list[AgencyStatement], scratch: Path, *, centre: str,
                          max_attachment_bytes: int,
                          issued: Mapping[str, Sequence[Position]]) -> list[AgencyStatement]:
    """Each agency's statement to its finance contact; the statements with their mail ids."""
    out: list[AgencyStatement] = []
    for s in statements:
        mail_id = None
        if s.finance_email:
            mail_id = await _mail(conn, s.finance_email,
                                  f"馆际互借结算对账单 ILL settlement statement {p} — {s.name}",
                                  list(s.files), scratch, max_attachment_bytes,
                                  functools.partial(_mail_text, p, s, list(s.files),
                                                    centre=centre,
                                                    due=issued.get(s.symbol, ())),
                                  kind="settlement_statement")
        out.append(AgencyStatement(s.symbol, s.name, s.finance_email, s.totals, s.files,
                                   mail_id))
    return out


async def mail_summary(conn: Connection, p: Period, to: str, body: dict[str, Any],
                       summary: list[FileInfo], scratch: Path, *,
                       max_attachment_bytes: int) -> None:
    await _mail(conn, to, f"馆际互借中心结算汇总 ILL settlement summary {p}",
                summary, scratch, max_attachment_bytes,
                lambda _attached: _summary_mail_text(p, body, summary),
                kind="settlement_summary")


async def _mail(conn: Connection, to: str, subject: str, files: list[FileInfo],
                directory: Path, limit: int, text: Callable[[bool], str], *, kind: str) -> int:
    attach = sum(f.bytes for f in files) <= limit
    attachments = []
    if attach:
        for f in files:
            mime = "text/csv" if f.name.endswith(".csv") else "application/pdf"
            content = await asyncio.to_thread((directory / f.name).read_bytes)
            attachments.append((attachment_name(f.name), content, mime))
    return await enqueue_mail(conn, to, subject, text(attach), attachments=attachments,
                              kind=kind)


# The net amount's sentence by direction: (中文, English); {a} amount, {c} currency.
_MAIL_NET = {
    "receive": ("本期应收中心净额：{a} {c}", "Net amount to receive from the centre: {a} {c}"),
    "pay": ("本期应付中心净额：{a} {c}", "Net amount to pay to the centre: {a} {c}"),
    "none": ("本期无需结算（{c}）", "Nothing to settle ({c})"),
}


def _mail_text(p: Period, s: AgencyStatement, files: list[FileInfo], attached: bool,
               centre: str, due: Sequence[Position] = ()) -> str:
    zh, en = [], []
    for d in due:
        money = f"{d.amount.amount_text()} {d.currency}"
        if d.direction is Direction.TO_CENTRE:
            zh.append(f"请于 {d.due_on} 前支付 {money}，付款时注明参考号 {d.reference}。")
            en.append(f"Please pay {money} by {d.due_on}, quoting the reference "
                      f"{d.reference}.")
        else:
            zh.append(f"中心将支付 {money}（参考号 {d.reference}）。")
            en.append(f"The centre will pay you {money} (reference {d.reference}).")
        zh.append(f"  如对明细有异议，请于 {d.dispute_until} 前就具体记账行提出争议。")
        en.append(f"  To dispute a line, do so by {d.dispute_until}, naming its posting id.")
    for t in s.totals:
        c = t.currency
        net_zh, net_en = _MAIL_NET[t.direction]
        zh.append(net_zh.format(a=amount(abs(t.net), c), c=c))
        zh.append(f"  作为供应馆应收 {amount(t.earned, c)}；作为申请馆应付 {amount(t.owed, c)}；"
                  f"中心补贴 {amount(t.subsidy, c)}；读者自付 {amount(t.patron, c)}"
                  f"（{t.lines} 行）")
        en.append(net_en.format(a=amount(abs(t.net), c), c=c))
        en.append(f"  earned as supplier {amount(t.earned, c)}; owed as requester "
                  f"{amount(t.owed, c)}; subsidy paid by the centre {amount(t.subsidy, c)}; "
                  f"patron share {amount(t.patron, c)} ({t.lines} lines)")
    listing = "\n".join(_listed(files))
    where_zh = ("明细见附件（CSV 可用 Excel 打开，PDF 可打印）：" if attached
                else "对账单文件较大，未随信附上，请向结算中心索取：")
    where_en = ("The itemised statement is attached (CSV opens in Excel; the PDF prints):"
                if attached else "The statement files are too large to attach; ask the "
                "settlement centre for them:")
    return (f"{s.name}（{s.symbol}）财务负责人：\n\n"
            f"馆际互借中心结算 {p}（{p.first_day} 至 {p.last_day}，"
            "含此前未结算的迟到入账）已完成。\n"
            + "\n".join(zh) + f"\n\n{where_zh}\n{listing}\n\n"
            + "-" * 64 + "\n\n"
            f"Dear finance officer of {s.name} ({s.symbol}),\n\n"
            f"the interlibrary loan settlement for {p} ({p.first_day} to {p.last_day}, "
            "including late postings not settled before) is closed.\n"
            + "\n".join(en) + f"\n\n{where_en}\n{listing}\n\n{centre}\n")


def _listed(files: list[FileInfo]) -> list[str]:
    """The files of a mail with their checksums, a line each."""
    return [f"  {attachment_name(f.name)}  SHA-256 {f.sha256}" for f in files]


def _summary_mail_text(p: Period, body: dict[str, Any], files: list[FileInfo]) -> str:
    lines = [f"馆际互借中心结算汇总 {p} / ILL settlement summary {p}", "",
             f"{body['agencyCount']} 馆 agencies, {body['postings']} 笔记账 postings "
             f"({body['latePostings']} 迟到 late), {body['entries']} 分录 entries", ""]
    for t in body["totals"]:
        c = t["currencyCode"]
        lines += [f"{c}: 中心应付各馆 the centre pays {t['agenciesReceive']}; 各馆应付中心 the "
                  f"agencies pay {t['agenciesPay']}; 补贴支出 subsidy outlay {t['subsidyOutlay']}"]
    inv = body["invariants"]
    lines += ["", "不变式 invariants: " + ("全部成立 all hold" if inv.get("ok") else "VIOLATED"),
              "", *_listed(files)]
    return "\n".join(lines) + "\n"


__all__ = ["MAX_ATTACHMENT_BYTES", "damaged", "fresh_dir", "mail_statements", "mail_summary",
           "publish_files", "queue_messages", "statement_message", "statement_metas",
           "stream_lines", "summary_data", "write_files"]
