"""Statement PDFs: the printable rendering of a run's CSV statements and summary (§4).

Everything that needs reportlab is here, apart from the CSV writing (statement_csv.py)
and the shared model (statement_model.py); PDF worker processes import this module
and what it needs, nothing of the run.

PDF: a printable rendering of the agency's CSV (read back line by line, so memory
is bounded by one page), A4 landscape, Chinese text in reportlab's built-in CID font
STSong-Light (no font files), with the totals and the net amount to pay or to
receive. Table rows are written as PDF text operators directly (reportlab builds
the document, fonts and pages), which is several times faster than drawString.
Files are byte-for-byte reproducible from the run: reportlab runs in invariant
mode and the only time printed is the run's generation time.

reportlab is imported with this module, not lazily: it adds about 20-30 ms to
`python -c 'import settlement.statement_pdf'` (measured on the dev machine: 19 ms
median in-process; fresh interpreters 259 ms against 231 ms without it, at best of
41), a tenth of what the module's other imports cost, paid once by the hub and the CLI.
"""

from __future__ import annotations

import asyncio
import os
import re
from collections.abc import Callable
from concurrent.futures import Executor, ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

from reportlab.lib.pagesizes import A4, landscape
from reportlab.pdfbase import pdfmetrics
from reportlab.pdfbase.cidfonts import UnicodeCIDFont
from reportlab.pdfgen import canvas

from schemas.text import is_wide
from settlement.statement_csv import read_statement_lines
from settlement.statement_model import (
    DIRECTION_TEXT,
    GENERATED_LABEL,
    FileInfo,
    RunStamp,
    StatementMeta,
    SummaryData,
    SummaryRow,
    amount,
    file_info,
    invariant_lines,
    statement_name,
)

# A run renders its PDFs in this process below this many statement lines, in worker
# processes (one per CPU unless told) from there on.
PDF_INLINE_LINES = 20_000
CJK_FONT = "STSong-Light"
LATIN_FONT = "Helvetica"
LATIN_BOLD = "Helvetica-Bold"


def register_fonts() -> None:
    if CJK_FONT not in pdfmetrics.getRegisteredFontNames():
        pdfmetrics.registerFont(UnicodeCIDFont(CJK_FONT))


def fit(text: str, width: float, size: float) -> str:
    """Cut text to about `width` points at `size` (CJK full width, others ~0.55 em)."""
    if len(text) * size <= width or (text.isascii() and len(text) * size * 0.6 <= width):
        return text
    used = 0.0
    for i, ch in enumerate(text):
        used += size if is_wide(ch) else size * 0.55
        if used > width:
            return text[: max(0, i - 1)] + "…"
    return text


_ESCAPE = str.maketrans({"\\": "\\\\", "(": "\\(", ")": "\\)"})
_NOT_BMP = re.compile("[\U00010000-\U0010FFFF]")


def _pdf_literal(text: str) -> str:
    return "(" + text.translate(_ESCAPE) + ")"


def in_bmp(text: str) -> str:
    # The UCS-2 CMap of the CID font has no characters outside the BMP.
    return _NOT_BMP.sub("?", text)


# Page layout: rows, the first row's baseline under a page's head, the lowest row's.
_ROW = 10.5
_TOP = 512.0
_BOTTOM = 44.0


class _Pdf:
    """A reportlab canvas whose text is written as PDF operators, page by page.

    reportlab makes the document (pages, fonts, compression, metadata); the text of
    each line is one BT .. ET object with absolute positions (Tm), several times
    faster than a drawString per cell. `head` draws a page's head and returns the
    height the first row goes at; every page ends with the run's stamp (`foot`).
    """

    def __init__(self, path: Path, stamp: RunStamp, *, title: str,
                 head: Callable[[_Pdf], float]) -> None:
        register_fonts()
        self.path = path
        self.stamp = stamp
        self._head = head
        self.width, self.height = landscape(A4)
        # invariant: no creation time or random id in the file, so a run's PDF can be
        # reproduced byte for byte.
        self.canvas = canvas.Canvas(str(path), pagesize=(self.width, self.height),
                                    invariant=1, pageCompression=1)
        self.canvas.setTitle(title)
        self.canvas.setSubject(f"ILL settlement {stamp.period}, run {stamp.run_id}, "
                               f"generated {stamp.generated_at}")
        self.canvas.setAuthor(stamp.centre)
        self.canvas.setCreator("ILL Hub settlement")
        self._string_width = pdfmetrics.stringWidth
        self.ops: list[str] = []
        self.page = 0
        self._fonts: dict[str, str] = {}
        self._tf: dict[tuple[str, float], str] = {}
        self._start_page()

    def _start_page(self) -> None:
        self.page += 1
        for font in (CJK_FONT, LATIN_FONT, LATIN_BOLD):
            self.canvas.setFont(font, 8)   # puts the font in the page's resources
            # reportlab's name for the font in the page resources (/F1, /F2 ...)
            self._fonts[font] = self.canvas._doc.getInternalFontName(font)

    def cell(self, x: float, y: float, text: str, size: float = 7.0, *, cjk: bool = False,
             right: bool = False, bold: bool = False, grey: bool = False) -> str:
        """The operators showing one text inside a BT .. ET object ('' for no text)."""
        if not text:
            return ""
        if cjk or not text.isascii():
            font = CJK_FONT
            encoded = "<" + in_bmp(text).encode("utf-16-be").hex() + ">"
        else:
            font = LATIN_BOLD if bold else LATIN_FONT
            encoded = _pdf_literal(text)
        if right:
            x -= self._string_width(text, font, size)
        tf = self._tf.get((font, size))
        if tf is None:
            tf = self._tf[(font, size)] = f"{self._fonts[font]} {size:g} Tf"
        if grey:
            return f"0.45 g {tf} 1 0 0 1 {x:.2f} {y:.2f} Tm {encoded} Tj 0 g"
        return f"{tf} 1 0 0 1 {x:.2f} {y:.2f} Tm {encoded} Tj"

    def text(self, x: float, y: float, text: str, size: float = 7.0, *, cjk: bool = False,
             right: bool = False, bold: bool = False, grey: bool = False) -> None:
        op = self.cell(x, y, text, size, cjk=cjk, right=right, bold=bold, grey=grey)
        if op:
            self.ops.append(f"BT {op} ET")

    def line(self, cells: list[str]) -> None:
        """Several cells (from `cell`) as one text object."""
        self.ops.append("BT " + " ".join(c for c in cells if c) + " ET")

    def rule(self, x1: float, y1: float, x2: float, y2: float, width: float = 0.4) -> None:
        self.ops.append(f"{width:g} w {x1:.2f} {y1:.2f} m {x2:.2f} {y2:.2f} l S")

    def flush_page(self) -> None:
        if self.ops:
            self.canvas.addLiteral("\n".join(self.ops))
            self.ops = []

    def new_page(self) -> None:
        self.flush_page()
        self.canvas.showPage()
        self._start_page()

    def save(self) -> None:
        self.flush_page()
        self.canvas.save()

    def head(self) -> float:
        return self._head(self)

    def foot(self) -> None:
        self.rule(28, 34, self.width - 28, 34, 0.3)
        self.text(28, 24, f"{GENERATED_LABEL} {self.stamp.generated_at}   {self.stamp.centre}",
                  6.5, cjk=True, grey=True)
        self.text(self.width - 28, 24, f"第 {self.page} 页 Page {self.page}", 6.5, cjk=True,
                  right=True, grey=True)

    def room(self, y: float, need: float) -> float:
        """`y`, or the first row of a new page when `need` points do not fit above the foot."""
        if y - need < _BOTTOM:
            self.foot()
            self.new_page()
            return self.head()
        return y

    def finish(self) -> FileInfo:
        """The last page's foot, the file written; its name, checksum and size."""
        self.foot()
        self.save()
        return file_info(self.path)


# --------------------------------------------------------------------------
# an agency's statement
# --------------------------------------------------------------------------

# Statement table: (x, width, header); the amounts: (right edge, header)
_COLUMNS = (
    (28, 46, "日期 Date"), (76, 92, "交易号 Transaction"), (170, 40, "角色 Role"),
    (212, 140, "对方馆 Counterpart"), (354, 64, "服务 Service"), (420, 158, "题名 Title"),
)
_AMOUNTS = ((622, "费用 Fee"), (672, "补贴 Subsidy"), (724, "读者自付 Patron"),
            (782, "净额 Net"))


def _statement_page_head(pdf: _Pdf, meta: StatementMeta) -> float:
    pdf.text(28, 562, "馆际互借结算对账单 ILL Settlement Statement", 13, cjk=True)
    pdf.text(28, 546, f"{meta.name}  ({meta.symbol})", 9, cjk=True)
    pdf.text(28, 534, f"结算期 Period {meta.period}: {meta.date_from} .. {meta.cutoff}"
                      f" (含迟到入账 incl. late postings)   结算批次 Run {meta.run_id}", 7.5,
             cjk=True)
    y = 520.0
    for x, _w, label in _COLUMNS:
        pdf.text(x, y, label, 6.5, cjk=True)
    for x, label in _AMOUNTS:
        pdf.text(x, y, label, 6.5, cjk=True, right=True)
    pdf.text(786, y, "币种", 6.5, cjk=True)
    pdf.rule(28, y - 3, pdf.width - 28, y - 3)
    return _TOP


def render_statement_pdf(csv_path: str, pdf_path: str, meta: StatementMeta) -> FileInfo:
    """The printable statement of one agency, rendered from its CSV file."""
    pdf = _Pdf(Path(pdf_path), meta, title=f"结算对账单 Statement {meta.symbol} {meta.period}",
               head=lambda p: _statement_page_head(p, meta))
    y = pdf.head()
    for row in read_statement_lines(Path(csv_path)):
        y = pdf.room(y, _ROW * (2 if row[14] else 1))
        y -= _ROW
        c = pdf.cell
        pdf.line([c(28, y, row[0]), c(76, y, fit(row[1], 92, 7)), c(170, y, row[4]),
                  c(212, y, fit(row[6] or row[5], 140, 7), cjk=True),
                  c(354, y, fit(row[7], 64, 7)), c(420, y, fit(row[8], 158, 7), cjk=True),
                  c(622, y, row[9], right=True), c(672, y, row[10], right=True),
                  c(724, y, row[11], right=True), c(782, y, row[12], right=True, bold=True),
                  c(786, y, row[13], 6.5)])
        if row[14]:
            y -= _ROW
            pdf.text(90, y + 1.5, fit(row[14], 680, 6.5), 6.5, cjk=True, grey=True)
    _statement_totals(pdf, meta, y)
    return pdf.finish()


def _statement_totals(pdf: _Pdf, meta: StatementMeta, y: float) -> None:
    y = pdf.room(y, 30 + 90 * len(meta.totals))
    y -= 8
    pdf.rule(28, y, pdf.width - 28, y, 0.8)
    y -= 16
    pdf.text(28, y, "合计 Totals", 10, cjk=True)
    for t in meta.totals:
        c = t.currency
        rows = (
            ("作为供应馆应收 Earned as supplier", f"{t.as_supplier} 行 lines", t.earned),
            ("作为申请馆应付 Owed as requester", f"{t.as_requester} 行 lines", -t.owed),
            ("中心补贴 Subsidy paid by the centre on your behalf", "", t.subsidy),
        )
        for label, note, minor in rows:
            y -= 12
            pdf.text(40, y, label, 8, cjk=True)
            pdf.text(330, y, note, 7, cjk=True, grey=True)
            pdf.text(520, y, f"{amount(minor, c)} {c}", 8.5, right=True)
        y -= 4
        pdf.rule(300, y, 524, y)
        y -= 14
        text = {"receive": ("应收净额 Net amount to receive from the centre", t.net),
                "pay": ("应付净额 Net amount to pay to the centre", -t.net),
                "none": ("本期无需结算 Nothing to settle", 0)}[t.direction]
        pdf.text(40, y, text[0], 10, cjk=True)
        pdf.text(520, y, f"{amount(text[1], c)} {c}", 11, right=True, bold=True)
        y -= 14
        pdf.text(40, y, "读者自付（由贵馆向读者收取，不在净额内） Patron share your readers "
                        "pay you (not part of the net amount)", 7, cjk=True, grey=True)
        pdf.text(520, y, f"{amount(t.patron, c)} {c}", 7.5, right=True, grey=True)
        y -= 10



# --------------------------------------------------------------------------
# the centre summary
# --------------------------------------------------------------------------

# (x, header, right-aligned)
_SUMMARY_COLUMNS = (
    (28, "本馆 Agency", False), (130, "名称 Name", False), (330, "行 Lines", True),
    (420, "供应应收 Earned", True), (500, "申请应付 Owed", True), (580, "中心补贴 Subsidy", True),
    (660, "净额 Net", True), (668, "方向 Direction", False), (740, "币种", False),
)


def _summary_page_head(pdf: _Pdf, data: SummaryData) -> float:
    pdf.text(28, 562, f"中心结算汇总 Centre settlement summary {data.period}", 13, cjk=True)
    pdf.text(28, 546, f"结算期 Period {data.date_from} .. {data.cutoff}   结算批次 Run "
                      f"{data.run_id}   记账 postings {data.postings} (迟到 late "
                      f"{data.late_postings})   分录 entries {data.entries}", 7.5, cjk=True)
    for x, label, right in _SUMMARY_COLUMNS:
        pdf.text(x, 528, label, 6.5, cjk=True, right=right)
    pdf.rule(28, 525, pdf.width - 28, 525)
    return 516.0


def render_summary_pdf(pdf_path: str, data: SummaryData) -> FileInfo:
    pdf = _Pdf(Path(pdf_path), data, title=f"中心结算汇总 Centre settlement summary {data.period}",
               head=lambda p: _summary_page_head(p, data))
    y = pdf.head()
    for r in data.rows:
        y = _summary_row(pdf, pdf.room(y, _ROW), r)
    y = _summary_totals(pdf, data, pdf.room(y, 40 + 60 * len(data.totals)))
    y = _summary_subsidy(pdf, data, y)
    _summary_invariants(pdf, data, y)
    return pdf.finish()


def _summary_row(pdf: _Pdf, y: float, r: SummaryRow) -> float:
    t, c = r.totals, r.totals.currency
    pdf.text(28, y, fit(r.symbol, 100, 7), 7)
    pdf.text(130, y, fit(r.name, 170, 7), 7, cjk=True)
    pdf.text(330, y, str(t.lines), 7, right=True)
    pdf.text(420, y, amount(t.earned, c), 7, right=True)
    pdf.text(500, y, amount(t.owed, c), 7, right=True)
    pdf.text(580, y, amount(t.subsidy, c), 7, right=True)
    pdf.text(660, y, amount(t.net, c), 7, right=True, bold=True)
    pdf.text(668, y, DIRECTION_TEXT[t.direction], 7, cjk=True)
    pdf.text(740, y, c, 7)
    return y - _ROW


def _summary_totals(pdf: _Pdf, data: SummaryData, y: float) -> float:
    pdf.rule(28, y + 4, pdf.width - 28, y + 4, 0.8)
    for c, t in data.totals.items():
        for label, minor in (
                (f"合计 Total ({t['agencies']} 馆 agencies): 净额之和 sum of nets", t["net"]),
                ("中心应付各馆 The centre pays the agencies", t["toReceive"]),
                ("各馆应付中心 The agencies pay the centre", t["toPay"]),
                ("中心头寸 Centre position (minus its subsidy outlay)", t["centre"])):
            y -= 12
            pdf.text(40, y, label, 8, cjk=True)
            pdf.text(520, y, f"{amount(minor, c)} {c}", 8.5, right=True, bold=True)
        y -= 6
    return y


def _summary_subsidy(pdf: _Pdf, data: SummaryData, y: float) -> float:
    y = pdf.room(y, 30 + 11 * len(data.by_rule))
    y -= 14
    pdf.text(28, y, "补贴按规则 Subsidy outlay by rule", 9, cjk=True)
    for rule, c, granted, postings in data.by_rule:
        y = pdf.room(y, 11)
        y -= 11
        pdf.text(40, y, fit(rule, 300, 7.5), 7.5, cjk=True)
        pdf.text(420, y, f"{postings} 笔 postings", 7, cjk=True, right=True)
        pdf.text(520, y, f"{amount(granted, c)} {c}", 7.5, right=True)
    y = pdf.room(y, 30 + 11 * min(len(data.by_budget), 5))
    y -= 16
    pdf.text(28, y, "补贴按预算 Subsidy outlay by budget (一笔补贴计入其规则所列的每个预算 "
                    "a grant counts against every budget its rule names)", 9, cjk=True)
    for name, requester, period, c, granted in data.by_budget:
        y = pdf.room(y, 11)
        y -= 11
        pdf.text(40, y, fit(f"{name}  {requester or '全体 global'}  {period}", 420, 7.5), 7.5,
                 cjk=True)
        pdf.text(520, y, f"{amount(granted, c)} {c}", 7.5, right=True)
    return y


def _summary_invariants(pdf: _Pdf, data: SummaryData, y: float) -> None:
    lines = invariant_lines(data.invariants)
    y = pdf.room(y, 30 + 22 * len(lines))
    y -= 16
    pdf.text(28, y, "不变式 Invariants", 9, cjk=True)
    for label, result, figures in lines:
        y -= 11
        pdf.text(40, y, label, 7.5, cjk=True)
        pdf.text(420, y, result, 7.5, cjk=True, bold=True)
        y -= 10
        pdf.text(52, y, fit(figures, 720, 6.5), 6.5, cjk=True, grey=True)


# --------------------------------------------------------------------------
# a run's PDFs
# --------------------------------------------------------------------------

async def render_pdfs(metas: list[StatementMeta], directory: Path, *,
                      pdf_workers: int | None = None,
                      progress: Callable[[str], None] | None = None) -> dict[str, FileInfo]:
    """Render every agency's PDF from its CSV in `directory`; worker processes when large."""
    total = sum(m.lines for m in metas)
    if pdf_workers is None:
        pdf_workers = 0 if total < PDF_INLINE_LINES else max(1, os.cpu_count() or 1)
    jobs = [(str(directory / statement_name(m.symbol, m.period, "csv")),
             str(directory / statement_name(m.symbol, m.period, "pdf")), m) for m in metas]
    out: dict[str, FileInfo] = {}
    if pdf_workers == 0:
        for csv_path, pdf_path, meta in jobs:
            out[meta.symbol] = await asyncio.to_thread(render_statement_pdf, csv_path, pdf_path,
                                                       meta)
        return out
    loop = asyncio.get_running_loop()
    executor: Executor = ProcessPoolExecutor(max_workers=pdf_workers,
                                             mp_context=get_context("spawn"))
    try:
        futures = {meta.symbol: loop.run_in_executor(executor, render_statement_pdf, c, pth,
                                                     meta) for c, pth, meta in jobs}
        done = 0
        for symbol, fut in futures.items():
            out[symbol] = await fut
            done += 1
            if progress and done % 100 == 0:
                progress(f"PDF statements: {done:,} of {len(jobs):,}")
    finally:
        executor.shutdown(wait=True, cancel_futures=True)
    return out


__all__ = ["CJK_FONT", "PDF_INLINE_LINES", "fit", "in_bmp", "register_fonts", "render_pdfs",
           "render_statement_pdf", "render_summary_pdf"]
