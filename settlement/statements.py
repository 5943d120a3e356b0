"""Statements for finance staff: per-agency CSV and PDF, and the centre summary (§4).

Files of a run land in `<data_dir>/statements/<period>/` with stable names:

    statement-<symbol, ':' -> '_'>-<period>.csv / .pdf     one per agency
    centre-summary-<period>.csv / .pdf                     the centre's summary

CSV: UTF-8 with a byte order mark (so Excel shows Chinese names), one line per
posting the agency took part in, ordered by date and posting; then its totals per
currency and a few lines naming the agency, period, run and generation time. The
lines are produced by PostgreSQL (COPY ... FORMAT csv) in one pass over the run's
postings sorted by date and id: each row carries the posting's supplier line and
requester line, and the writer only cuts rows in two and appends each line to its
agency's file (the agency is the line's last field), so no field is ever parsed in
Python. The period's dates can be split among several such streams at once; later
shares are appended when the totals are written. Text that Excel would take for a
formula (starting with = + - @) gets a leading apostrophe; line breaks in titles
become spaces, so every record is one line.

PDF: a printable rendering of the agency's CSV (read back line by line, so memory
is bounded by one page), A4 landscape, Chinese text in reportlab's built-in CID font
STSong-Light (no font files), with the totals and the net amount to pay or to
receive. Table rows are written as PDF text operators directly (reportlab builds
the document, fonts and pages), which is several times faster than drawString.
Files are byte-for-byte reproducible from the run: reportlab runs in invariant
mode and the only time printed is the run's generation time.
"""

from __future__ import annotations

import asyncio
import csv
import datetime
import hashlib
import io
import os
import re
import resource
import unicodedata
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from schemas.money import MINOR_UNITS, Money
from settlement.netting import Scope

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


# Line breaks, and the statement stream's row marks (see lines_sql), become spaces.
_ONE_LINE = str.maketrans("\r\n\x1e\x1f", "    ")


def clean_text(text: str | None, limit: int) -> str:
    """One line of text for a statement: no line breaks, no formula, at most `limit` chars."""
    if not text:
        return ""
    out = text.translate(_ONE_LINE)[:limit]
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
    # U+001E and U+001F are the stream's row marks (see lines_sql): never in a field.
    # Most text needs none of this, and testing for it costs less than translate() on
    # every title (a sixth of the statement query otherwise).
    t = f"left(translate({expr}, E'\\r\\n\\x1e\\x1f', '    '), {limit})"
    full = f"(CASE WHEN left({expr}, 1) IN ('=', '+', '-', '@') THEN '''' ELSE '' END || {t})"
    return (f"(CASE WHEN ascii({expr}) IN (61, 43, 45, 64) OR octet_length({expr}) > {limit} "
            f"OR strpos({expr}, E'\\r') + strpos({expr}, E'\\n') + strpos({expr}, E'\\x1e') "
            f"+ strpos({expr}, E'\\x1f') > 0 THEN {full} ELSE {expr} END)")


# Postings are sorted on one bigint, date and id packed together, when the ids fit in
# 40 bits: PostgreSQL sorts on a single integer key several times faster than on two.
KEY_ID_BITS = 40
_KEY_EPOCH = "date '2000-01-01'"
# Each streamed row is one posting: its supplier's line, a mark, its requester's line.
# The mark is U+001E, or U+001F when the supplier is the requester (one line, 'both';
# the second half is then ignored). Titles, reasons and names never contain either.
ROW_MARK = b",\x1e,"
SELF_MARK = b",\x1f,"


def _line(party: str, role: str, other: str, other_name: str, subsidy: str, patron: str,
          net: str) -> str:
    return (f"r.local_date, r.transaction_id, r.id, r.event, {role}, {other}, {other_name}, "
            f"r.service_kind, r.title, r.fee, {subsidy}, {patron}, {net}, r.currency, "
            f"r.note, {party}")


def lines_sql(where: str, first: int, *, packed_key: bool = True) -> str:
    """The statement lines of a run, one row per posting, in (date, id) order.

    `where` selects the run's postings (netting.Scope.where on p.id and p.local_date)
    with parameters before ${first}; then ${first} is the first day of the period
    (earlier: late), +1 the time zone, +2 and +3 the first and last date of this
    stream's share; the counterparts' names come from the temporary table
    statement_name (agency, name). A row is the supplier's line and the requester's
    line (16 CSV fields each) around a mark field, so the writer only cuts rows and
    sends each line to its agency's file. What both lines share is computed once per
    posting, in the sorted subquery (the top level only picks and arranges).
    """
    f = first
    key, inner_order, outer_order = (
        (f"((p.local_date - {_KEY_EPOCH})::bigint << {KEY_ID_BITS}) + p.id", "1", "r.k")
        if packed_key else ("p.id", "p.local_date, p.id", "r.local_date, r.id"))
    fee, sub, pat = (_money_sql(f"p.{col}", "p.currency")
                     for col in ("fee_minor", "subsidy_minor", "patron_share_minor"))
    late = (f"'迟到入账 late: dated in ' || to_char(r.local_date, 'YYYY-MM') || ', posted ' "
            f"|| to_char(r.posted_at AT TIME ZONE ${f + 1}::text, 'YYYY-MM-DD')")
    reversal = ("'冲正 reversal of posting ' || r.reverses || coalesce(' dated ' || "
                "(SELECT o.local_date::text FROM ledger_posting o WHERE o.id = r.reverses), '')"
                f" || coalesce(': ' || {_clean_sql('r.reason', 200)}, '')")
    supplier = _line("r.supplier", "CASE WHEN r.self THEN 'both' ELSE 'supplier' END",
                     "r.requester", "r.rname", "CASE WHEN r.self THEN r.sub END",
                     "CASE WHEN r.self THEN r.pat END",
                     "CASE WHEN r.self THEN r.sub ELSE r.fee END")
    # The requester's net is minus the patron share: its text, signed the other way.
    negpat = ("CASE WHEN r.pat_sign > 0 THEN '-' || r.pat WHEN r.pat_sign < 0 "
              "THEN substr(r.pat, 2) ELSE r.pat END")
    requester = _line("r.requester", "'requester'", "r.supplier", "r.sname", "r.sub",
                      "r.pat", negpat)
    note = (f"CASE WHEN r.local_date < ${f}::date OR r.reverses IS NOT NULL THEN "
            f"nullif(concat_ws('; ', CASE WHEN r.local_date < ${f}::date THEN {late} END, "
            f"CASE WHEN r.reverses IS NOT NULL THEN {reversal} END), '') END")
    supplier, requester = supplier.replace("r.note", note), requester.replace("r.note", note)
    return f"""
        SELECT {supplier}, CASE WHEN r.self THEN E'\\x1f' ELSE E'\\x1e' END, {requester}
        FROM (SELECT {key} AS k, p.local_date, p.id, p.transaction_id, p.event,
                     p.requester, p.supplier, rn.name AS rname, sn.name AS sname,
                     p.requester = p.supplier AS self, p.service_kind,
                     {_clean_sql('p.title', TITLE_MAX)} AS title, p.currency,
                     {fee} AS fee, {sub} AS sub, {pat} AS pat,
                     sign(p.patron_share_minor)::int2 AS pat_sign,
                     p.reverses, p.reason, p.posted_at
              FROM ledger_posting p
              JOIN pg_temp.statement_name rn ON rn.agency = p.requester
              JOIN pg_temp.statement_name sn ON sn.agency = p.supplier
              WHERE {where} AND p.local_date BETWEEN ${f + 2}::date AND ${f + 3}::date
              ORDER BY {inner_order}) r
        ORDER BY {outer_order}"""


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
    """The line stream does not add up to the agencies' statements as the netting says."""


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


# An agency's lines are written in blocks of about this many (~40 KB), looked for
# every SWEEP_ROWS postings: memory stays bounded by agencies x block plus one sweep's
# lines (~10 MB) whatever the run's size.
FLUSH_LINES = 256
SWEEP_ROWS = 32768
# asyncpg hands over whatever one socket read returned; when PostgreSQL is the slower
# side that is a few KB per call, and the per-call overhead (~30 us) then costs more
# than the lines themselves. A short pause after a small read lets the socket fill.
SMALL_READ = 64 << 10
READ_PAUSE = 0.002
FINISH_THREADS = 2


class _Out:
    """One agency's lines from one stream: buffered, then appended to its file (stream
    0), or to the stream's spill file as blocks whose places are recorded."""

    __slots__ = ("blocks", "buf", "hash", "lines", "path", "size", "started", "symbol")

    def __init__(self, symbol: str, path: Path, hashed: bool) -> None:
        self.symbol = symbol
        self.path = path
        self.buf: list[bytes] = []
        self.lines = 0
        self.size = 0
        self.hash = hashlib.sha256() if hashed else None
        self.started = False
        self.blocks: list[tuple[int, int]] = []      # (offset, length) in the spill file


class _Handles:
    """Append handles, at most `cap` open at once (a run may have more agencies than
    the process may open files); the least recently used is closed first."""

    def __init__(self) -> None:
        soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        self.cap = max(16, min(4096, soft // 2 - 64))
        self.open: OrderedDict[Path, BinaryIO] = OrderedDict()

    def write(self, path: Path, data: bytes, *, fresh: bool) -> None:
        f = self.open.pop(path, None)
        if f is None:
            if len(self.open) >= self.cap:
                self.open.popitem(last=False)[1].close()
            f = path.open("wb" if fresh else "ab", buffering=0)
        f.write(data)
        self.open[path] = f

    def close(self) -> None:
        while self.open:
            self.open.popitem()[1].close()


class _Stream:
    """The COPY output of one share of the postings, cut into the agencies' files.

    Stream 0 (the earliest dates) writes the statement files themselves, header
    first, hashing as it goes. A later stream writes one spill file (creating a
    thousand part files costs more than reading blocks back), which `finish` appends
    agency by agency.
    """

    def __init__(self, index: int, symbols: Sequence[str], directory: Path, period: str,
                 handles: _Handles) -> None:
        self.index = index
        self.handles = handles
        self.head = statement_head()
        self.spill_path = directory / f".part-{index}"
        self.spill: BinaryIO | None = self.spill_path.open("wb") if index else None
        self.spilled = 0
        self.outs = {s: _Out(s, directory / statement_name(s, period, "csv"), not index)
                     for s in symbols}
        # The agency column as PostgreSQL's CSV writes it: the symbol itself unless it
        # has to be quoted (then the line goes the slow way, _by_last_field).
        self.appends = {s.encode(): o.buf.append for s, o in self.outs.items()
                        if not any(c in s for c in ',"\r\n')}
        self.outs_list = list(self.outs.values())
        self.unswept = 0
        self.rest = b""
        self.rows = 0
        self.marks = 0

    def _flush(self, o: _Out) -> None:
        o.lines += len(o.buf)
        o.buf.append(b"")
        data = b"\n".join(o.buf)
        o.buf.clear()           # the same list: __call__ holds its append method
        if self.spill is not None:
            self.spill.write(data)
            o.blocks.append((self.spilled, len(data)))
            self.spilled += len(data)
            return
        assert o.hash is not None
        if not o.started:
            data = self.head + data
        o.hash.update(data)
        o.size += len(data)
        self.handles.write(o.path, data, fresh=not o.started)
        o.started = True


    def _by_last_field(self, line: bytes) -> Callable[[bytes], None]:
        row = next(csv.reader([line.decode("utf-8")]))
        o = self.outs.get(row[-1]) if row else None
        if o is None:
            raise StatementStreamError(
                f"a statement line for {row[-1] if row else '?'!r}, an agency the run does "
                "not know")
        return o.buf.append

    async def __call__(self, chunk: bytes | bytearray) -> None:
        # asyncpg hands over a bytearray; the keys sliced from its lines must be bytes.
        data = bytes(chunk)
        rows = data.split(b"\n")
        rows[0] = self.rest + rows[0]
        self.rest = rows.pop()
        self.rows += len(rows)
        self.marks += data.count(b"\x1e")
        # The hot loop: two dictionary lookups and two appends per posting; the
        # buffers are looked at every SWEEP_ROWS postings.
        get = self.appends.get
        slow = self._by_last_field
        for row in rows:
            a, sep, b = row.partition(ROW_MARK)
            if not sep:
                a = self._one_line(a)
            (get(a[a.rfind(b",") + 1:]) or slow(a))(a)
            if sep:
                (get(b[b.rfind(b",") + 1:]) or slow(b))(b)
        self.unswept += len(rows)
        if self.unswept >= SWEEP_ROWS:
            self.unswept = 0
            flush = self._flush
            for o in self.outs_list:
                if len(o.buf) >= FLUSH_LINES:
                    flush(o)
        if len(data) < SMALL_READ:
            await asyncio.sleep(READ_PAUSE)

    def _one_line(self, row: bytes) -> bytes:
        """The line of a posting whose supplier is its requester (marked U+001F)."""
        line, sep, _rest = row.partition(SELF_MARK)
        if not sep or row.count(b"\x1f") != 1:
            raise StatementStreamError("a statement row without its mark: a field holds "
                                       "the control character U+001E or U+001F")
        self.marks += 1
        return line

    def close(self) -> None:
        if self.rest:
            raise StatementStreamError("the statement stream ended inside a line")
        if self.marks != self.rows:
            raise StatementStreamError(
                f"{self.rows} postings streamed but {self.marks} row marks: a field holds "
                "the control character U+001E")
        for o in self.outs.values():
            if o.buf:
                self._flush(o)
        if self.spill is not None:
            self.spill.close()


class StatementLines:
    """A run's statement CSV files while their lines arrive (header and lines first,
    the totals by `finish` once the netting is known)."""

    def __init__(self, directory: Path, period: str, symbols: Sequence[str], streams: int
                 ) -> None:
        self.directory = directory
        self.handles = _Handles()
        self.streams = [_Stream(i, symbols, directory, period, self.handles)
                        for i in range(streams)]

    @property
    def lines(self) -> int:
        return sum(o.lines for st in self.streams for o in st.outs.values())

    def lines_of(self, symbol: str) -> int:
        return sum(st.outs[symbol].lines for st in self.streams)

    def finish(self, metas: Sequence[StatementMeta]) -> dict[str, FileInfo]:
        """Append the later streams' parts and each agency's totals; the files by agency.

        Every agency with lines must have a statement and every statement exactly its
        netting's number of lines, else StatementStreamError (nothing is kept).
        """
        for st in self.streams:
            st.close()
        self.handles.close()
        wanted = {m.symbol for m in metas}
        stray = sorted(s for st in self.streams for s, o in st.outs.items()
                       if o.lines and s not in wanted)
        if stray:
            raise StatementStreamError(f"statement lines for {', '.join(stray[:5])}, which "
                                       "the netting does not have")
        for m in metas:
            got = self.lines_of(m.symbol)
            if got != m.lines:
                raise StatementStreamError(
                    f"{m.symbol}: {got} statement lines streamed, the netting counts {m.lines}")
        # Reading back and hashing the later parts is memory-bound work that releases
        # the GIL (file I/O, hashlib on large blocks): two threads halve it.
        spills = [os.open(st.spill_path, os.O_RDONLY) for st in self.streams[1:]]
        try:
            with ThreadPoolExecutor(max_workers=FINISH_THREADS) as pool:
                files = dict(zip([m.symbol for m in metas],
                                 pool.map(lambda m: self._finish_one(m, spills), metas),
                                 strict=True))
        finally:
            for fd in spills:
                os.close(fd)
        self._remove_spills()
        return files

    def _finish_one(self, m: StatementMeta, spills: list[int]) -> FileInfo:
        first = self.streams[0].outs[m.symbol]
        assert first.hash is not None
        h, size = first.hash, first.size
        with first.path.open("ab" if first.started else "wb") as f:
            if not first.started:
                head = statement_head()
                f.write(head)
                h.update(head)
                size += len(head)
            for st, fd in zip(self.streams[1:], spills, strict=True):
                for offset, length in st.outs[m.symbol].blocks:
                    block = os.pread(fd, length, offset)
                    f.write(block)
                    h.update(block)
                    size += len(block)
            tail = statement_tail(m)
            f.write(tail)
            h.update(tail)
            size += len(tail)
        return FileInfo(first.path.name, h.hexdigest(), size)


    def _remove_spills(self) -> None:
        for st in self.streams[1:]:
            if st.spill is not None:
                st.spill.close()
            st.spill_path.unlink(missing_ok=True)

    def discard(self) -> None:
        self.handles.close()
        self._remove_spills()


def stream_ranges(date_from: datetime.date, cutoff: datetime.date, streams: int
                  ) -> list[tuple[datetime.date, datetime.date]]:
    """The dates of each stream's share: the period's days cut in `streams` runs of
    days; the first also takes every earlier (late) date."""
    days = (cutoff - date_from).days + 1
    streams = max(1, min(streams, days))
    out = []
    for i in range(streams):
        lo = date_from + datetime.timedelta(days=days * i // streams)
        hi = date_from + datetime.timedelta(days=days * (i + 1) // streams - 1)
        out.append((datetime.date.min if i == 0 else lo, hi))
    return out


async def stream_statement_lines(
        acquire: Callable[[], Any], scope: Scope, tz: str, names: dict[str, str],
        directory: Path, period: str, *, streams: int = 1,
        progress: Callable[[str], None] | None = None) -> StatementLines:
    """Stream every line of the run `scope` from PostgreSQL into its agency's CSV file.

    `acquire()` gives an async context manager yielding a connection (pool.acquire);
    `streams` shares of the period's dates are streamed at once on their own
    connections. `names` maps every agency that can appear to the name printed for it
    as a counterpart. `directory` exists. Call `finish` on the result once the netting
    is known, or `discard`.
    """
    out = StatementLines(directory, period, sorted(names), max(1, streams))
    where, args = scope.where("p.id", "p.local_date")
    packed = scope.posting_max is not None and scope.posting_max < 1 << KEY_ID_BITS
    query = lines_sql(where, len(args) + 1, packed_key=packed)
    ranges = stream_ranges(scope.date_from, scope.cutoff, len(out.streams))

    async def one(st: _Stream, lo: datetime.date, hi: datetime.date) -> None:
        async with acquire() as conn, conn.transaction():
            # The sort of a stream's postings spills to disk past work_mem either way;
            # more memory only makes fewer, larger runs.
            await conn.execute("SET LOCAL work_mem = '256MB'; SET LOCAL jit = off; "
                               "SET LOCAL max_parallel_workers_per_gather = 0")
            # The names as a table with statistics: joined from an unnest() of
            # parameters, the planner hashes the ledger side instead (seconds more).
            await conn.execute("CREATE TEMP TABLE statement_name (agency text PRIMARY KEY, "
                               "name text NOT NULL) ON COMMIT DROP")
            await conn.copy_records_to_table("statement_name", records=list(names.items()),
                                             schema_name="pg_temp")
            await conn.execute("ANALYZE pg_temp.statement_name")
            await conn.copy_from_query(query, *args, scope.date_from, tz, lo, hi, output=st,
                                       format="csv")
        if progress:
            progress(f"statement lines dated {'…' if lo == datetime.date.min else lo} .. "
                     f"{hi}: {st.rows:,} postings")

    try:
        await asyncio.gather(*(one(st, lo, hi) for st, (lo, hi)
                               in zip(out.streams, ranges, strict=False)))
    except BaseException:
        out.discard()
        raise
    return out


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
    "StatementLines",
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
    "read_statement_lines",
    "render_statement_pdf",
    "render_summary_pdf",
    "statement_name",
    "stream_ranges",
    "stream_statement_lines",
    "summary_name",
    "write_summary_csv",
]
