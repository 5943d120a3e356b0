"""Finance reports as files: CSV (Excel-safe, as the statements) and PDF (issue 17).

A report (settlement/finance_reports.py) is first laid out as a `ReportDocument`: a
title, a few lines about it, and tables of text cells, amounts already printed as
decimal text (statement_model.amount). The CSV, the PDF and the CLI's text output
all print that one layout, so they cannot disagree.

CSV: as the statements (statement_csv.py): UTF-8 with a byte order mark so Excel shows
Chinese names, every text cell through statement_model.clean_text (a cell Excel would
take for a formula, starting with = + - @, gets a leading apostrophe; no line breaks),
amounts as decimal text ('-2.00'), never through a float. Each table is preceded by
its title row and followed by an empty line; the generation time comes last.

PDF: reportlab's platypus tables, A4 landscape, every cell in the CID font
STSong-Light that the statements use for Chinese (statement_pdf.py; no font files),
each page footed with the generation time and its number. Long tables are cut into
blocks so that reportlab never splits one huge table across hundreds of pages.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape

from reportlab.lib import colors
from reportlab.lib.pagesizes import A4, landscape
from reportlab.lib.styles import ParagraphStyle
from reportlab.platypus import Paragraph, SimpleDocTemplate, Spacer, Table, TableStyle

from settlement.finance_reports import (
    KIND_TEXT,
    AgencyAccount,
    CashReport,
    CashSection,
)
from settlement.statement_csv import csv_head, csv_line
from settlement.statement_model import (
    GENERATED_LABEL,
    TITLE_MAX,
    FileInfo,
    amount,
    clean_text,
    file_info,
)
from settlement.statement_pdf import CJK_FONT, fit, in_bmp, register_fonts

# A text cell of a report CSV is cut to this many characters (a title, with its
# service kind and event around it).
CELL_MAX = TITLE_MAX + 100
# Rows per platypus table in the PDF (each repeats the header).
PDF_BLOCK_ROWS = 300
_MARGIN = 28.0
_SIZE = 7.0


@dataclass(frozen=True)
class ReportTable:
    title: str
    header: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]
    widths: tuple[float, ...]                  # PDF column widths, points (A4 landscape)
    numeric: frozenset[int] = frozenset()      # amount columns: right-aligned, not guarded
    strong: frozenset[int] = frozenset()       # rows (indexes into rows) that are totals

    def __post_init__(self) -> None:
        n = len(self.header)
        if len(self.widths) != n or any(len(r) != n for r in self.rows):
            raise ValueError(f"report table {self.title!r}: every row needs {n} cells")


@dataclass(frozen=True)
class ReportDocument:
    title: str
    lines: tuple[str, ...]
    tables: tuple[ReportTable, ...]
    generated_at: str
    centre: str
    notes: tuple[str, ...] = field(default=())


# --------------------------------------------------------------------------
# the cash position and subsidy outlay
# --------------------------------------------------------------------------

_CASH_HEADER = ("结算期 Period", "批次 Run", "日期 Dates", "应收 Issued to the centre",
                "应付 Issued by the centre", "已收 Received", "已付 Paid out",
                "待收 Outstanding to the centre", "待付 Outstanding by the centre",
                "累计现金头寸 Cumulative cash position", "币种 Currency")
_CASH_WIDTHS = (58.0, 36.0, 112.0, 75.0, 75.0, 75.0, 75.0, 75.0, 75.0, 82.0, 40.0)
_OUTLAY_HEADER = ("结算期 Period", "批次 Run", "月份 Months", "项目 Item",
                  "补贴支出 Subsidy outlay", "预算额 Budget limit", "已用 Spent",
                  "使用率 Used %", "币种 Currency")
_OUTLAY_WIDTHS = (58.0, 36.0, 110.0, 230.0, 80.0, 80.0, 80.0, 50.0, 40.0)


def _cash_table(s: CashSection) -> ReportTable:
    c = s.currency
    rows: list[tuple[str, ...]] = []
    if s.brought_forward:
        rows.append(("承前 Brought forward", "", "", "", "", "", "", "", "",
                     amount(s.brought_forward, c), c))
    for r in s.rows:
        f = r.figures
        rows.append((r.run.period, str(r.run.run_id), f"{r.run.date_from} .. {r.run.cutoff}",
                     amount(f.to_centre, c), amount(f.by_centre, c), amount(f.received, c),
                     amount(f.paid_out, c), amount(f.outstanding_in, c),
                     amount(f.outstanding_out, c), amount(r.cumulative, c), c))
    t = s.total
    rows.append(("合计 Total", f"{len(s.rows)}", "", amount(t.to_centre, c),
                 amount(t.by_centre, c), amount(t.received, c), amount(t.paid_out, c),
                 amount(t.outstanding_in, c), amount(t.outstanding_out, c),
                 amount(s.position, c), c))
    return ReportTable(f"现金头寸 Cash position, {c} (已收减已付 received minus paid out)",
                       _CASH_HEADER, tuple(rows), _CASH_WIDTHS,
                       numeric=frozenset(range(3, 10)), strong=frozenset({len(rows) - 1}))


def _outlay_table(s: CashSection) -> ReportTable:
    c = s.currency
    rows: list[tuple[str, ...]] = []
    for o in s.outlays:
        months = " ".join(o.months)
        rows.append((o.run.period, str(o.run.run_id), months, "中心补贴支出 Subsidy outlay",
                     amount(o.outlay_minor, c), "", "", "", c))
        for b in o.budgets:
            pct = b.used_percent
            rows.append((o.run.period, str(o.run.run_id), " ".join(b.months),
                         f"预算 Budget {b.name}", "", amount(b.limit_minor, c),
                         amount(b.spent_minor, c), "" if pct is None else str(pct), c))
    rows.append(("合计 Total", "", "", "", amount(s.total_outlay, c), "", "", "", c))
    return ReportTable(f"补贴支出与预算 Subsidy outlay against budget, {c}", _OUTLAY_HEADER,
                       tuple(rows), _OUTLAY_WIDTHS, numeric=frozenset(range(4, 8)),
                       strong=frozenset({len(rows) - 1}))


def cash_document(report: CashReport, *, generated_at: str, centre: str) -> ReportDocument:
    scope = ("全部结算批次 every settlement run" if report.date_from is None
             and report.date_to is None else
             f"结算期 periods {report.date_from or '…'} .. {report.date_to or '…'}")
    tables: list[ReportTable] = []
    for s in report.sections:
        tables += [_cash_table(s), _outlay_table(s)]
    return ReportDocument(
        "中心现金头寸与补贴支出 Centre cash position and subsidy outlay",
        (centre, scope), tuple(tables), generated_at, centre,
        notes=("已收、已付为至今记录的款项 received and paid out: payments recorded so far "
               "against each run's statements",
               "预算为所涉月份的月度预算；按申请馆的预算只计已动用的馆 budgets: the monthly "
               "budgets of the months a period covers; a per-requester budget counts the "
               "requesters that drew on it"))


# --------------------------------------------------------------------------
# one agency's account
# --------------------------------------------------------------------------

_ACCOUNT_HEADER = ("日期 Date", "类别 Kind", "交易号/参考号 Transaction / reference",
                   "对方馆 Counterpart", "对方馆名称 Counterpart name", "题名 Title",
                   "说明 Detail", "金额 Amount", "余额 Balance", "币种 Currency")
_ACCOUNT_WIDTHS = (50.0, 104.0, 116.0, 70.0, 90.0, 116.0, 128.0, 52.0, 52.0, 30.0)


def account_document(account: AgencyAccount, *, generated_at: str,
                     centre: str) -> ReportDocument:
    tables = []
    for s in account.sections:
        c = s.currency
        start = (f"余额于 {s.zero_on} 为零，此前 {s.earlier_lines} 行从略 balance zero on "
                 f"{s.zero_on}; {s.earlier_lines} earlier lines left out"
                 if s.zero_on is not None else "自开始 from the beginning")
        rows: list[tuple[str, ...]] = [
            (str(s.zero_on or ""), "期初 Opening balance", "", "", "", "", "", "",
             amount(0, c), c)]
        for line in s.lines:
            m = line.move
            rows.append((m.day.isoformat(), KIND_TEXT[m.kind], m.reference, m.counterpart,
                         m.counterpart_name, m.title, m.detail,
                         "" if m.informational else amount(m.effect.minor, c),
                         amount(line.balance.minor, c), c))
        b = s.balance.minor
        side = ("中心应付本馆 the centre owes the agency" if b > 0 else
                "本馆应付中心 the agency owes the centre" if b < 0 else "无 none")
        rows.append(("", "当前余额 Current balance", "", "", "", "", side, "", amount(b, c),
                     c))
        tables.append(ReportTable(f"{c}: {start}", _ACCOUNT_HEADER, tuple(rows),
                                  _ACCOUNT_WIDTHS, numeric=frozenset({7, 8}),
                                  strong=frozenset({len(rows) - 1})))
    lines = (f"{account.name} ({account.symbol})",
             "余额为正：中心应付本馆；为负：本馆应付中心 balance above zero: the centre owes "
             "the agency; below zero: the agency owes the centre")
    return ReportDocument(
        f"机构往来账 Agency account since the last zero balance: {account.symbol}",
        lines if tables else (*lines, "无往来 nothing on record"), tuple(tables),
        generated_at, centre,
        notes=("结算单行仅供参考，不改变余额 a statement issued is listed for reference and "
               "does not change the balance",))


# --------------------------------------------------------------------------
# CSV
# --------------------------------------------------------------------------

def _guarded(table: ReportTable, row: Sequence[str]) -> list[str]:
    return [cell if i in table.numeric else clean_text(cell, CELL_MAX)
            for i, cell in enumerate(row)]


def csv_bytes(doc: ReportDocument) -> bytes:
    """The report as the statements' CSV: BOM, guarded text, decimal amounts."""
    out = [csv_head([clean_text(doc.title, CELL_MAX)]),
           *(csv_line([clean_text(line, CELL_MAX)]) for line in doc.lines), b"\n"]
    for t in doc.tables:
        out.append(csv_line([clean_text(t.title, CELL_MAX)]))
        out.append(csv_line(t.header))
        out += [csv_line(_guarded(t, r)) for r in t.rows]
        out.append(b"\n")
    out += [csv_line(["注 Note", clean_text(n, CELL_MAX)]) for n in doc.notes]
    out.append(csv_line(["中心 Centre", clean_text(doc.centre, CELL_MAX)]))
    out.append(csv_line([GENERATED_LABEL, doc.generated_at]))
    return b"".join(out)


def write_csv(doc: ReportDocument, path: Path) -> FileInfo:
    path.write_bytes(csv_bytes(doc))
    return file_info(path)


# --------------------------------------------------------------------------
# PDF
# --------------------------------------------------------------------------

def _style(name: str, size: float) -> ParagraphStyle:
    return ParagraphStyle(name, fontName=CJK_FONT, fontSize=size, leading=size * 1.3)


def _para(text: str, style: ParagraphStyle) -> Paragraph:
    return Paragraph(escape(in_bmp(text)), style)


def _pdf_cell(text: str, width: float, wrap: ParagraphStyle) -> str | Paragraph:
    """A plain string where it fits (cheap), else a paragraph wrapping inside the column
    (cut at a few lines: the CSV has it in full)."""
    text = in_bmp(text)
    if fit(text, width - 5, _SIZE) == text:
        return text
    return _para(fit(text, (width - 5) * 3, _SIZE), wrap)


def _pdf_tables(t: ReportTable, head: ParagraphStyle, wrap: ParagraphStyle) -> list[Table]:
    header = [_para(h, head) for h in t.header]
    out = []
    for start in range(0, max(len(t.rows), 1), PDF_BLOCK_ROWS):
        block = t.rows[start:start + PDF_BLOCK_ROWS]
        data: list[list[Any]] = [header] + [
            [_pdf_cell(cell, w, wrap) for cell, w in zip(r, t.widths, strict=True)]
            for r in block]
        style = [("FONTNAME", (0, 0), (-1, -1), CJK_FONT),
                 ("FONTSIZE", (0, 0), (-1, -1), _SIZE),
                 ("LEADING", (0, 0), (-1, -1), _SIZE + 2),
                 ("TOPPADDING", (0, 0), (-1, -1), 1.5),
                 ("BOTTOMPADDING", (0, 0), (-1, -1), 1.5),
                 ("LEFTPADDING", (0, 0), (-1, -1), 2.5),
                 ("RIGHTPADDING", (0, 0), (-1, -1), 2.5),
                 ("VALIGN", (0, 0), (-1, -1), "MIDDLE"),
                 ("BACKGROUND", (0, 0), (-1, 0), colors.HexColor("#e4e4e4")),
                 ("LINEBELOW", (0, 0), (-1, -1), 0.25, colors.grey)]
        style += [("ALIGN", (i, 1), (i, -1), "RIGHT") for i in sorted(t.numeric)]
        style += [("BACKGROUND", (0, i - start + 1), (-1, i - start + 1),
                   colors.HexColor("#f2f2f2")) for i in t.strong
                  if start <= i < start + PDF_BLOCK_ROWS]
        out.append(Table(data, colWidths=list(t.widths), repeatRows=1,
                         style=TableStyle(style), hAlign="LEFT"))
    return out


def write_pdf(doc: ReportDocument, path: Path) -> FileInfo:
    """The report as a PDF: title, generation time, its tables; Chinese in STSong-Light."""
    register_fonts()
    title, small, heading, head, wrap = (_style("title", 14), _style("small", 8),
                                         _style("heading", 10), _style("head", 6.5),
                                         _style("wrap", _SIZE))
    story: list[Any] = [_para(doc.title, title), Spacer(1, 4)]
    story += [_para(line, small) for line in doc.lines]
    story.append(_para(f"{GENERATED_LABEL} {doc.generated_at}", small))
    for t in doc.tables:
        story += [Spacer(1, 10), _para(t.title, heading), Spacer(1, 3)]
        story += _pdf_tables(t, head, wrap)
    if doc.notes:
        story.append(Spacer(1, 8))
        story += [_para(f"注 Note: {n}", small) for n in doc.notes]
    width, _height = landscape(A4)

    def foot(canvas: Any, template: Any) -> None:
        canvas.saveState()
        canvas.setFont(CJK_FONT, 6.5)
        canvas.setFillGray(0.45)
        canvas.drawString(_MARGIN, 20, in_bmp(f"{GENERATED_LABEL} {doc.generated_at}   "
                                              f"{doc.centre}"))
        page = canvas.getPageNumber()
        canvas.drawRightString(width - _MARGIN, 20, f"第 {page} 页 Page {page}")
        canvas.restoreState()

    # invariant: no creation time or random id, so the same report is the same file.
    SimpleDocTemplate(str(path), pagesize=landscape(A4), leftMargin=_MARGIN,
                      rightMargin=_MARGIN, topMargin=_MARGIN, bottomMargin=36,
                      title=doc.title, author=doc.centre, creator="ILL Hub settlement",
                      invariant=1).build(story, onFirstPage=foot, onLaterPages=foot)
    return file_info(path)


__all__ = ["CELL_MAX", "PDF_BLOCK_ROWS", "ReportDocument", "ReportTable", "account_document",
           "cash_document", "csv_bytes", "write_csv", "write_pdf"]
