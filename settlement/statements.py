"""Statements for finance staff: per-agency CSV and PDF, and the centre summary (§4).

Files of a run land in `<data_dir>/statements/<period>/` with stable names:

    statement-<symbol, ':' -> '_'>-<period>.csv / .pdf     one per agency
    centre-summary-<period>.csv / .pdf                     the centre's summary

CSV: UTF-8 with a byte order mark (so Excel shows Chinese names), one line per
posting the agency took part in, ordered by date and posting; then its totals per
currency and a few lines naming the agency, period, run and generation time. The
lines are produced by PostgreSQL (COPY ... FORMAT csv, sorted by agency) and
streamed straight into the files: the stream is cut into agencies by their line
counts from the netting, and each cut is checked against the agency column, so no
row is ever parsed or held in Python. Text that Excel would take for a formula
(starting with = + - @) gets a leading apostrophe; line breaks in titles become
spaces, so every record is one line.

PDF: a printable rendering of the agency's CSV (read back line by line, so memory
is bounded by one page), A4 landscape, Chinese text in reportlab's built-in CID font
STSong-Light (no font files), with the totals and the net amount to pay or to
receive. Table rows are written as PDF text operators directly (reportlab builds
the document, fonts and pages), which is several times faster than drawString.
Files are byte-for-byte reproducible from the run: reportlab runs in invariant
mode and the only time printed is the run's generation time.
"""

from __future__ import annotations

import csv
import datetime
import hashlib
import io
import re
import unicodedata
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from schemas.money import MINOR_UNITS, Money

BOM = "\ufeff"
CSV_HEADER = (
    "日期 Date", "交易号 Transaction ID", "记账号 Posting ID", "事件 Event", "角色 Role",
    "对方馆 Counterpart", "对方馆名称 Counterpart name", "服务类型 Service kind",
    "题名 Title", "费用 Fee", "补贴 Subsidy", "读者自付 Patron share", "净额 Net",
    "币种 Currency", "备注 Note", "本馆 Agency",
)
SUMMARY_HEADER = (
    "本馆 Agency", "名称 Name", "币种 Currency", "明细行 Lines", "作为供应馆 As supplier",
    "作为申请馆 As requester", "迟到入账 Late", "供应应收 Earned", "申请应付 Owed",
    "中心补贴 Subsidy", "读者自付 Patron share", "净额 Net", "方向 Direction",
)
GENERATED_LABEL = "生成时间 Generated at"
TITLE_MAX = 300
NAME_MAX = 200
DIRECTION_TEXT = {"receive": "应收 to receive", "pay": "应付 to pay", "none": "无 none"}


# --------------------------------------------------------------------------
# names and files
# --------------------------------------------------------------------------

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")


def file_stem(symbol: str) -> str:
    """An agency symbol as part of a file name: 'CALIS:100010' -> 'CALIS_100010'."""
    return _UNSAFE.sub("_", symbol)


def statement_name(symbol: str, period: str, ext: str) -> str:
    return f"statement-{file_stem(symbol)}-{period}.{ext}"


def summary_name(period: str, ext: str) -> str:
    return f"centre-summary-{period}.{ext}"


def attachment_name(file_name: str) -> str:
    """The name an e-mailed file travels under (Chinese; RFC 2231-encoded by the mailer)."""
    if file_name.startswith("statement-"):
        return "馆际互借结算对账单-" + file_name[len("statement-"):]
    if file_name.startswith("centre-summary-"):
        return "中心结算汇总-" + file_name[len("centre-summary-"):]
    return file_name


@dataclass(frozen=True)
class FileInfo:
    name: str
    sha256: str
    bytes: int

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "sha256": self.sha256, "bytes": self.bytes}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> FileInfo:
        return cls(d["name"], d["sha256"], int(d["bytes"]))


def file_info(path: Path) -> FileInfo:
    h = hashlib.sha256()
    size = 0
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
            size += len(chunk)
    return FileInfo(path.name, h.hexdigest(), size)


def clean_text(text: str | None, limit: int) -> str:
    """One line of text for a statement: no line breaks, no formula, at most `limit` chars."""
    if not text:
        return ""
    out = text.replace("\r", " ").replace("\n", " ")[:limit]
    return "'" + out if out[:1] in ("=", "+", "-", "@") else out


def amount(minor: int, currency: str) -> str:
    return Money(minor, currency).amount_text()


# --------------------------------------------------------------------------
# the statement lines, in SQL
# --------------------------------------------------------------------------

def _money_sql(expr: str, currency: str = "p.currency") -> str:
    """SQL rendering minor units as Money.amount_text() does ('38.00', '-0.05', '100')."""
    by_places: dict[int, list[str]] = {}
    for code, places in MINOR_UNITS.items():
        if places != 2:
            by_places.setdefault(places, []).append(code)
    parts = []
    for places, codes in sorted(by_places.items()):
        listed = ", ".join(f"'{c}'" for c in codes)
        parts.append(f"WHEN {currency} IN ({listed}) THEN "
                     + (f"({expr})::text" if places == 0
                        else f"(({expr})::numeric * 0.{'0' * (places - 1)}1)::text"))
    return f"CASE {' '.join(parts)} ELSE (({expr})::numeric * 0.01)::text END"


def _clean_sql(expr: str, limit: int) -> str:
    t = f"left(translate({expr}, E'\\r\\n', '  '), {limit})"
    return f"(CASE WHEN left({expr}, 1) IN ('=', '+', '-', '@') THEN '''' ELSE '' END || {t})"


def lines_sql() -> str:
    """The statement lines of one run for a range of agencies, in statement order.

    Parameters: $1 run id, $2 first day of the period (earlier = late), $3 time zone,
    $4 / $5 the first and last agency symbol of the range (code point order).
    """
    net = ("CASE WHEN x.sup AND x.req THEN p.subsidy_minor WHEN x.sup THEN p.fee_minor "
           "ELSE -p.patron_share_minor END")
    return f"""
        SELECT p.local_date, p.transaction_id, p.id, p.event,
               CASE WHEN x.sup AND x.req THEN 'both' WHEN x.sup THEN 'supplier'
                    ELSE 'requester' END,
               x.other, n.name, p.service_kind, {_clean_sql('p.title', TITLE_MAX)},
               {_money_sql('p.fee_minor')},
               CASE WHEN x.req THEN {_money_sql('p.subsidy_minor')} END,
               CASE WHEN x.req THEN {_money_sql('p.patron_share_minor')} END,
               {_money_sql(net)},
               p.currency,
               nullif(concat_ws('; ',
                   CASE WHEN p.local_date < $2::date THEN
                       '迟到入账 late: dated in ' || to_char(p.local_date, 'YYYY-MM')
                       || ', posted ' || to_char(p.posted_at AT TIME ZONE $3::text, 'YYYY-MM-DD')
                   END,
                   CASE WHEN p.reverses IS NOT NULL THEN
                       '冲正 reversal of posting ' || p.reverses
                       || coalesce(' dated ' || (SELECT o.local_date::text FROM ledger_posting o
                                                 WHERE o.id = p.reverses), '')
                       || coalesce(': ' || {_clean_sql('p.reason', 200)}, '')
                   END), ''),
               x.party
        FROM settlement_item s
        JOIN ledger_posting p ON p.id = s.posting_id
        CROSS JOIN LATERAL (VALUES (p.supplier, p.requester, true, p.requester = p.supplier),
                                   (p.requester, p.supplier, false, true))
             AS x(party, other, sup, req)
        JOIN settlement_statement n ON n.run_id = $1 AND n.agency = x.other
        WHERE s.run_id = $1 AND (x.sup OR p.requester <> p.supplier)
          AND x.party COLLATE "C" >= $4::text AND x.party COLLATE "C" <= $5::text
        ORDER BY x.party COLLATE "C", p.local_date, p.id"""


# --------------------------------------------------------------------------
# what a statement needs to know besides its lines
# --------------------------------------------------------------------------

@dataclass(frozen=True)
class Totals:
    """One agency's totals in one currency (minor units)."""

    currency: str
    lines: int
    as_supplier: int
    as_requester: int
    late: int
    earned: int
    owed: int
    subsidy: int
    patron: int
    net: int

    @property
    def direction(self) -> str:
        return "receive" if self.net > 0 else "pay" if self.net < 0 else "none"

    def to_json(self) -> dict[str, Any]:
        return self.__dict__.copy()


@dataclass(frozen=True)
class StatementMeta:
    """Everything printed on one agency's statement apart from its lines (picklable)."""

    symbol: str
    name: str
    period: str
    run_id: int
    date_from: str
    cutoff: str
    generated_at: str
    centre: str
    totals: tuple[Totals, ...]

    @property
    def lines(self) -> int:
        return sum(t.lines for t in self.totals)


def _csv_row(row: Sequence[Any]) -> bytes:
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerow(["" if v is None else v for v in row])
    return buf.getvalue().encode("utf-8")


def _blank(n: int = len(CSV_HEADER)) -> list[str]:
    return [""] * n


def statement_head() -> bytes:
    return BOM.encode("utf-8") + _csv_row(CSV_HEADER)


def statement_tail(meta: StatementMeta) -> bytes:
    """The totals and the closing lines under an agency's statement lines."""
    out = [b"\n"]
    for t in meta.totals:
        c = t.currency
        earned = _blank()
        earned[0] = "作为供应馆应收 Earned as supplier"
        earned[9], earned[12], earned[13] = amount(t.earned, c), amount(t.earned, c), c
        earned[14] = f"{t.as_supplier} 行 lines"
        owed = _blank()
        owed[0] = "作为申请馆应付 Owed as requester"
        owed[9], owed[10], owed[11] = amount(t.owed, c), amount(t.subsidy, c), amount(t.patron, c)
        owed[12], owed[13] = amount(t.subsidy - t.owed, c), c
        owed[14] = f"{t.as_requester} 行 lines; 补贴为中心代付 subsidy paid by the centre"
        net = _blank()
        net[0] = "净额 Net amount"
        net[12], net[13] = amount(t.net, c), c
        net[14] = {"receive": "应收 to receive from the centre",
                   "pay": "应付 to pay to the centre",
                   "none": "无需结算 nothing to settle"}[t.direction]
        out += [_csv_row(earned), _csv_row(owed), _csv_row(net)]
    out.append(b"\n")
    out.append(_csv_row(["本馆 Agency", meta.symbol, meta.name]))
    out.append(_csv_row(["结算期 Period", meta.period, f"{meta.date_from} .. {meta.cutoff}",
                         "含此前未结算的迟到入账 including late postings not settled before"]))
    out.append(_csv_row(["结算批次 Run", meta.run_id, meta.centre]))
    out.append(_csv_row([GENERATED_LABEL, meta.generated_at]))
    return b"".join(out)


# --------------------------------------------------------------------------
# streaming the lines into per-agency CSV files
# --------------------------------------------------------------------------

class StatementStreamError(RuntimeError):
    """The line stream does not cut into the agencies' statements as the netting says."""


class _HashingFile:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.file: BinaryIO = path.open("wb", buffering=1 << 20)
        self.hash = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes) -> None:
        self.file.write(data)
        self.hash.update(data)
        self.size += len(data)

    def close(self) -> FileInfo:
        self.file.close()
        return FileInfo(self.path.name, self.hash.hexdigest(), self.size)


def _last_field(line: bytes) -> str:
    row = next(csv.reader([line.decode("utf-8")]))
    return row[-1] if row else ""


class _Splitter:
    """Receives the COPY stream of a range of agencies and cuts it into their files."""

    def __init__(self, metas: Sequence[StatementMeta], directory: Path) -> None:
        self.metas = list(metas)
        self.directory = directory
        self.index = -1
        self.remaining = 0
        self.current: _HashingFile | None = None
        self.first = b""
        self.tail = b""
        self.files: dict[str, FileInfo] = {}
        self.lines = 0

    def _open_next(self) -> None:
        self.index += 1
        if self.index >= len(self.metas):
            raise StatementStreamError("more statement lines than the netting counted")
        meta = self.metas[self.index]
        self.current = _HashingFile(self.directory / statement_name(meta.symbol, meta.period,
                                                                    "csv"))
        self.current.write(statement_head())
        self.remaining = meta.lines
        self.first = self.tail = b""

    def _close_current(self) -> None:
        assert self.current is not None
        meta = self.metas[self.index]
        last = self.tail.rstrip(b"\n").rpartition(b"\n")[2]
        first = self.first.partition(b"\n")[0]
        for what, line in (("first", first), ("last", last)):
            if _last_field(line) != meta.symbol:
                raise StatementStreamError(
                    f"the {what} line cut for {meta.symbol} belongs to {_last_field(line)!r}")
        self.current.write(statement_tail(meta))
        self.files[meta.symbol] = self.current.close()
        self.current = None

    def _write(self, data: bytes) -> None:
        assert self.current is not None
        self.current.write(data)
        if len(self.first) < 1 << 16 and b"\n" not in self.first:
            self.first += data[: 1 << 16]
        self.tail = (self.tail + data)[-(1 << 16):]

    async def __call__(self, chunk: bytes) -> None:
        pos, size = 0, len(chunk)
        while pos < size:
            if self.remaining == 0:
                if self.current is not None:
                    self._close_current()
                self._open_next()
            n = chunk.count(b"\n", pos)
            if n < self.remaining:
                self._write(chunk[pos:])
                self.remaining -= n
                self.lines += n
                return
            end = pos
            for _ in range(self.remaining):
                end = chunk.index(b"\n", end) + 1
            self._write(chunk[pos:end])
            self.lines += self.remaining
            self.remaining = 0
            pos = end

    def finish(self) -> dict[str, FileInfo]:
        if self.remaining:
            raise StatementStreamError(
                f"{self.metas[self.index].symbol}: {self.remaining} statement line(s) missing")
        if self.current is not None:
            self._close_current()
        if self.index != len(self.metas) - 1:
            missing = [m.symbol for m in self.metas[self.index + 1:]]
            raise StatementStreamError(f"no statement lines for {', '.join(missing[:5])}")
        return self.files


def partition(metas: Sequence[StatementMeta], parts: int) -> list[list[StatementMeta]]:
    """Contiguous ranges of agencies (in statement order) with about equal line counts."""
    total = sum(m.lines for m in metas)
    parts = max(1, min(parts, len(metas)))
    out: list[list[StatementMeta]] = [[]]
    done = 0
    for m in metas:
        if (out[-1] and len(out) < parts and done >= total * len(out) / parts):
            out.append([])
        out[-1].append(m)
        done += m.lines
    return [p for p in out if p]


async def write_statement_csvs(
        acquire: Callable[[], Any], run_id: int, date_from: datetime.date, tz: str,
        metas: Sequence[StatementMeta], directory: Path, *, workers: int = 2,
        progress: Callable[[str], None] | None = None) -> tuple[dict[str, FileInfo], int]:
    """Stream every agency's lines from PostgreSQL into its CSV file.

    `acquire()` gives an async context manager yielding a connection (pool.acquire);
    `workers` ranges of agencies are streamed at once on their own connections.
    Returns the files by agency and the number of lines written. `directory` exists.
    """
    import asyncio

    query = lines_sql()
    ranges = partition(sorted(metas, key=lambda m: m.symbol), workers)

    async def one(part: list[StatementMeta]) -> tuple[dict[str, FileInfo], int]:
        splitter = _Splitter(part, directory)
        async with acquire() as conn, conn.transaction(readonly=True):
            await conn.execute("SET LOCAL work_mem = '128MB'; SET LOCAL jit = off")
            await conn.copy_from_query(query, run_id, date_from, tz, part[0].symbol,
                                       part[-1].symbol, output=splitter, format="csv")
        files = splitter.finish()
        if progress:
            progress(f"statements {part[0].symbol} .. {part[-1].symbol}: {len(files)} CSV "
                     f"files, {splitter.lines:,} lines")
        return files, splitter.lines

    results = await asyncio.gather(*(one(p) for p in ranges))
    files: dict[str, FileInfo] = {}
    lines = 0
    for f, n in results:
        files.update(f)
        lines += n
    return files, lines


def read_statement_lines(path: Path) -> Iterable[list[str]]:
    """The statement lines of an agency's CSV, parsed (header and totals skipped)."""
    with path.open("r", encoding="utf-8-sig", newline="") as f:
        reader = csv.reader(f)
        next(reader)
        for row in reader:
            if not row:
                return
            yield row


# --------------------------------------------------------------------------
# PDF
# --------------------------------------------------------------------------

CJK_FONT = "STSong-Light"
LATIN_FONT = "Helvetica"
LATIN_BOLD = "Helvetica-Bold"


def _register_fonts() -> None:
    from reportlab.pdfbase import pdfmetrics
    from reportlab.pdfbase.cidfonts import UnicodeCIDFont

    if CJK_FONT not in pdfmetrics.getRegisteredFontNames():
        pdfmetrics.registerFont(UnicodeCIDFont(CJK_FONT))


def _wide(ch: str) -> bool:
    return unicodedata.east_asian_width(ch) in "WF"


def fit(text: str, width: float, size: float) -> str:
    """Cut text to about `width` points at `size` (CJK full width, others ~0.55 em)."""
    if len(text) * size <= width or (text.isascii() and len(text) * size * 0.6 <= width):
        return text
    used = 0.0
    for i, ch in enumerate(text):
        used += size if _wide(ch) else size * 0.55
        if used > width:
            return text[: max(0, i - 1)] + "…"
    return text


_ESCAPE = str.maketrans({"\\": "\\\\", "(": "\\(", ")": "\\)"})
_NOT_BMP = re.compile("[\U00010000-\U0010FFFF]")


def _pdf_literal(text: str) -> str:
    return "(" + text.translate(_ESCAPE) + ")"


def _bmp(text: str) -> str:
    # The UCS-2 CMap of the CID font has no characters outside the BMP.
    return _NOT_BMP.sub("?", text)


class _Pdf:
    """A reportlab canvas whose text is written as PDF operators, page by page.

    reportlab makes the document (pages, fonts, compression, metadata); the text of
    each line is one BT .. ET object with absolute positions (Tm), several times
    faster than a drawString per cell.
    """

    def __init__(self, path: Path, *, title: str, subject: str, author: str) -> None:
        from reportlab.lib.pagesizes import A4, landscape
        from reportlab.pdfbase import pdfmetrics
        from reportlab.pdfgen import canvas

        _register_fonts()
        self.width, self.height = landscape(A4)
        # invariant: no creation time or random id in the file, so a run's PDF can be
        # reproduced byte for byte.
        self.canvas = canvas.Canvas(str(path), pagesize=(self.width, self.height),
                                    invariant=1, pageCompression=1)
        self.canvas.setTitle(title)
        self.canvas.setSubject(subject)
        self.canvas.setAuthor(author)
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
            encoded = "<" + _bmp(text).encode("utf-16-be").hex() + ">"
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


# Statement table: (x, width or right edge, header, align)
_COLUMNS = (
    (28, 46, "日期 Date"), (76, 92, "交易号 Transaction"), (170, 40, "角色 Role"),
    (212, 140, "对方馆 Counterpart"), (354, 64, "服务 Service"), (420, 158, "题名 Title"),
)
_AMOUNTS = ((622, "费用 Fee"), (672, "补贴 Subsidy"), (724, "读者自付 Patron"),
            (782, "净额 Net"))
_ROW = 10.5
_TOP = 512.0
_BOTTOM = 44.0


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


def _page_foot(pdf: _Pdf, generated_at: str, centre: str) -> None:
    pdf.rule(28, 34, pdf.width - 28, 34, 0.3)
    pdf.text(28, 24, f"{GENERATED_LABEL} {generated_at}   {centre}", 6.5, cjk=True, grey=True)
    pdf.text(pdf.width - 28, 24, f"第 {pdf.page} 页 Page {pdf.page}", 6.5, cjk=True,
             right=True, grey=True)


def render_statement_pdf(csv_path: str, pdf_path: str, meta: StatementMeta) -> FileInfo:
    """The printable statement of one agency, rendered from its CSV file."""
    path = Path(pdf_path)
    pdf = _Pdf(path, title=f"结算对账单 Statement {meta.symbol} {meta.period}",
               subject=f"ILL settlement {meta.period}, run {meta.run_id}, generated "
                       f"{meta.generated_at}", author=meta.centre)
    y = _statement_page_head(pdf, meta)
    for row in read_statement_lines(Path(csv_path)):
        need = _ROW * (2 if row[14] else 1)
        if y - need < _BOTTOM:
            _page_foot(pdf, meta.generated_at, meta.centre)
            pdf.new_page()
            y = _statement_page_head(pdf, meta)
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
    _page_foot(pdf, meta.generated_at, meta.centre)
    pdf.save()
    return file_info(path)


def _statement_totals(pdf: _Pdf, meta: StatementMeta, y: float) -> None:
    need = 30 + 90 * len(meta.totals)
    if y - need < _BOTTOM:
        _page_foot(pdf, meta.generated_at, meta.centre)
        pdf.new_page()
        y = _statement_page_head(pdf, meta)
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

@dataclass(frozen=True)
class SummaryRow:
    symbol: str
    name: str
    totals: Totals


@dataclass(frozen=True)
class SummaryData:
    """Everything in the centre summary (picklable)."""

    period: str
    run_id: int
    date_from: str
    cutoff: str
    generated_at: str
    centre: str
    rows: tuple[SummaryRow, ...]
    totals: dict[str, dict[str, int]]
    by_rule: tuple[tuple[str, str, int, int], ...]        # rule, currency, granted, postings
    by_budget: tuple[tuple[str, str, str, str, int], ...]  # name, requester, period, cur, granted
    invariants: dict[str, Any]
    postings: int
    late_postings: int
    entries: int


def _invariant_lines(inv: dict[str, Any]) -> list[tuple[str, str, str]]:
    def ok(v: dict[str, Any]) -> str:
        return "成立 holds" if v.get("ok") else "不成立 VIOLATED"

    out = []
    b = inv.get("entriesBalance", {})
    out.append(("分录平衡 Entries balance", ok(b),
                f"unbalanced postings: {b.get('unbalancedPostings')}; sum by currency: "
                + ", ".join(f"{v} {c}" for c, v in b.get("sumByCurrency", {}).items())))
    n = inv.get("netsSumToMinusCentre", {})
    out.append(("各馆净额之和 = −中心头寸 Agency nets sum to minus the centre's position", ok(n),
                "; ".join(f"{c}: nets {v['agencyNets']}, centre {v['centrePosition']}, "
                          f"subsidy granted {v['subsidyGranted']}"
                          for c, v in n.get("byCurrency", {}).items())))
    e = inv.get("everyEntryInOneStatement", {})
    out.append(("每笔分录恰在一份对账单 Every entry in exactly one statement", ok(e),
                f"{e.get('entries')} entries: {e.get('entriesInStatements')} in "
                f"{e.get('statements')} statements, {e.get('entriesInCentreSummary')} in the "
                f"centre summary; {e.get('linesWritten', e.get('statementLines'))} lines "
                "written"))
    return out


def write_summary_csv(path: Path, data: SummaryData) -> FileInfo:
    f = _HashingFile(path)
    f.write(BOM.encode("utf-8") + _csv_row(SUMMARY_HEADER))
    for r in data.rows:
        t = r.totals
        c = t.currency
        f.write(_csv_row([r.symbol, r.name, c, t.lines, t.as_supplier, t.as_requester, t.late,
                          amount(t.earned, c), amount(t.owed, c), amount(t.subsidy, c),
                          amount(t.patron, c), amount(t.net, c), DIRECTION_TEXT[t.direction]]))
    f.write(b"\n")
    for c, t in data.totals.items():
        f.write(_csv_row(["合计 Total", f"{t['agencies']} 馆 agencies", c, "", "", "", "",
                          amount(t["earned"], c), amount(t["owed"], c), amount(t["subsidy"], c),
                          amount(t["patron"], c), amount(t["net"], c), ""]))
        f.write(_csv_row(["中心应付各馆 The centre pays the agencies", "", c, "", "", "", "", "",
                          "", "", "", amount(t["toReceive"], c), DIRECTION_TEXT["receive"]]))
        f.write(_csv_row(["各馆应付中心 The agencies pay the centre", "", c, "", "", "", "", "",
                          "", "", "", amount(-t["toPay"], c), DIRECTION_TEXT["pay"]]))
        f.write(_csv_row(["中心头寸 Centre position (subsidy outlay)", "", c, "", "", "", "",
                          "", "", "", "", amount(t["centre"], c), ""]))
    f.write(b"\n" + _csv_row(["补贴按规则 Subsidy outlay by rule", "规则 Rule", "币种 Currency",
                              "笔数 Postings", "金额 Amount"]))
    for rule, c, granted, postings in data.by_rule:
        f.write(_csv_row(["", rule, c, postings, amount(granted, c)]))
    f.write(b"\n" + _csv_row(["补贴按预算 Subsidy outlay by budget", "预算 Budget",
                              "申请馆 Requester", "预算期 Budget period", "币种 Currency",
                              "金额 Amount"]))
    for name, requester, period, c, granted in data.by_budget:
        f.write(_csv_row(["", name, requester or "全体 global", period, c, amount(granted, c)]))
    f.write(_csv_row(["", "注 Note: 一笔补贴计入其规则所列的每个预算 a grant counts against "
                          "every budget its rule names"]))
    f.write(b"\n" + _csv_row(["不变式 Invariant", "结果 Result", "数据 Figures"]))
    for label, result, figures in _invariant_lines(data.invariants):
        f.write(_csv_row([label, result, figures]))
    f.write(b"\n")
    f.write(_csv_row(["结算期 Period", data.period, f"{data.date_from} .. {data.cutoff}"]))
    f.write(_csv_row(["结算批次 Run", data.run_id, data.centre]))
    f.write(_csv_row(["记账 Postings", data.postings, f"迟到 late {data.late_postings}",
                      f"分录 entries {data.entries}"]))
    f.write(_csv_row([GENERATED_LABEL, data.generated_at]))
    return f.close()


def render_summary_pdf(pdf_path: str, data: SummaryData) -> FileInfo:
    path = Path(pdf_path)
    pdf = _Pdf(path, title=f"中心结算汇总 Centre settlement summary {data.period}",
               subject=f"ILL settlement {data.period}, run {data.run_id}, generated "
                       f"{data.generated_at}", author=data.centre)
    cols = ((28, "本馆 Agency", False), (130, "名称 Name", False), (330, "行 Lines", True),
            (420, "供应应收 Earned", True), (500, "申请应付 Owed", True),
            (580, "中心补贴 Subsidy", True), (660, "净额 Net", True),
            (668, "方向 Direction", False), (740, "币种", False))

    def head() -> float:
        pdf.text(28, 562, f"中心结算汇总 Centre settlement summary {data.period}", 13, cjk=True)
        pdf.text(28, 546, f"结算期 Period {data.date_from} .. {data.cutoff}   结算批次 Run "
                          f"{data.run_id}   记账 postings {data.postings} (迟到 late "
                          f"{data.late_postings})   分录 entries {data.entries}", 7.5, cjk=True)
        for x, label, right in cols:
            pdf.text(x, 528, label, 6.5, cjk=True, right=right)
        pdf.rule(28, 525, pdf.width - 28, 525)
        return 516.0

    def room(y: float, need: float) -> float:
        if y - need < _BOTTOM:
            _page_foot(pdf, data.generated_at, data.centre)
            pdf.new_page()
            return head()
        return y

    y = head()
    for r in data.rows:
        y = room(y, _ROW)
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
        y -= _ROW
    y = room(y, 40 + 60 * len(data.totals))
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
    y = room(y, 30 + 11 * len(data.by_rule))
    y -= 14
    pdf.text(28, y, "补贴按规则 Subsidy outlay by rule", 9, cjk=True)
    for rule, c, granted, postings in data.by_rule:
        y = room(y, 11)
        y -= 11
        pdf.text(40, y, fit(rule, 300, 7.5), 7.5, cjk=True)
        pdf.text(420, y, f"{postings} 笔 postings", 7, cjk=True, right=True)
        pdf.text(520, y, f"{amount(granted, c)} {c}", 7.5, right=True)
    y = room(y, 30 + 11 * min(len(data.by_budget), 5))
    y -= 16
    pdf.text(28, y, "补贴按预算 Subsidy outlay by budget (一笔补贴计入其规则所列的每个预算 "
                    "a grant counts against every budget its rule names)", 9, cjk=True)
    for name, requester, period, c, granted in data.by_budget:
        y = room(y, 11)
        y -= 11
        pdf.text(40, y, fit(f"{name}  {requester or '全体 global'}  {period}", 420, 7.5), 7.5,
                 cjk=True)
        pdf.text(520, y, f"{amount(granted, c)} {c}", 7.5, right=True)
    lines = _invariant_lines(data.invariants)
    y = room(y, 30 + 22 * len(lines))
    y -= 16
    pdf.text(28, y, "不变式 Invariants", 9, cjk=True)
    for label, result, figures in lines:
        y -= 11
        pdf.text(40, y, label, 7.5, cjk=True)
        pdf.text(420, y, result, 7.5, cjk=True, bold=True)
        y -= 10
        pdf.text(52, y, fit(figures, 720, 6.5), 6.5, cjk=True, grey=True)
    _page_foot(pdf, data.generated_at, data.centre)
    pdf.save()
    return file_info(path)


__all__ = [
    "BOM",
    "CSV_HEADER",
    "GENERATED_LABEL",
    "FileInfo",
    "StatementMeta",
    "StatementStreamError",
    "SummaryData",
    "SummaryRow",
    "Totals",
    "attachment_name",
    "clean_text",
    "file_info",
    "file_stem",
    "fit",
    "lines_sql",
    "partition",
    "read_statement_lines",
    "render_statement_pdf",
    "render_summary_pdf",
    "statement_name",
    "summary_name",
    "write_statement_csvs",
    "write_summary_csv",
]
