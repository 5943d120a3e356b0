"""Statement CSV files: the lines streamed out of PostgreSQL, the totals, the summary (§4).

Separate from the PDF (statement_pdf.py: reportlab, rendered from these files) and
from the shared model (statement_model.py: totals, names, amounts), because this is
the part a run waits on: the lines of every posting of the period, written while
the netting runs.

CSV: UTF-8 with a byte order mark (so Excel shows Chinese names), one line per
posting the agency took part in, ordered by date and posting; then its totals per
currency and a few lines naming the agency, period, run and generation time. The
lines are produced by PostgreSQL (COPY ... FORMAT csv) in one pass over the run's
postings sorted by date and id: each row carries the posting's supplier line and
requester line, and the writer only cuts rows in two and appends each line to its
agency's file (the agency is the line's last field), so no field is ever parsed in
Python. The period's dates can be split among several such streams at once; later
shares are appended when the totals are written. The SQL applies the same text
rules as statement_model.clean_text and the same amounts as Money.amount_text.
"""

from __future__ import annotations

import asyncio
import csv
import datetime
import hashlib
import io
import os
import resource
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, BinaryIO

from schemas.money import MINOR_UNITS
from settlement.netting import Scope
from settlement.statement_model import (
    BOM,
    CSV_HEADER,
    DIRECTION_TEXT,
    GENERATED_LABEL,
    SUMMARY_HEADER,
    TITLE_MAX,
    FileInfo,
    StatementMeta,
    SummaryData,
    amount,
    invariant_lines,
    statement_name,
)

# The statement lines are streamed from PostgreSQL in this many shares of the period's
# dates at once, each on its own pooled connection, while the netting runs next to
# them: PostgreSQL's sorting and formatting is most of the work (bench/settlement.py).
STATEMENT_STREAMS = 2


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
# the CSV around the lines
# --------------------------------------------------------------------------

def csv_line(row: Sequence[Any]) -> bytes:
    """One CSV record as UTF-8 bytes (None as an empty field); text fields must already
    be cleaned (statement_model.clean_text)."""
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerow(["" if v is None else v for v in row])
    return buf.getvalue().encode("utf-8")


def _blank(n: int = len(CSV_HEADER)) -> list[str]:
    return [""] * n


def csv_head(header: Sequence[str]) -> bytes:
    """A file's first line: the byte order mark Excel needs for Chinese, the header."""
    return BOM.encode("utf-8") + csv_line(header)


def statement_head() -> bytes:
    return csv_head(CSV_HEADER)


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
        out += [csv_line(earned), csv_line(owed), csv_line(net)]
    out.append(b"\n")
    out.append(csv_line(["本馆 Agency", meta.symbol, meta.name]))
    out.append(csv_line(["结算期 Period", meta.period, f"{meta.date_from} .. {meta.cutoff}",
                         "含此前未结算的迟到入账 including late postings not settled before"]))
    out.append(csv_line(["结算批次 Run", meta.run_id, meta.centre]))
    out.append(csv_line([GENERATED_LABEL, meta.generated_at]))
    return b"".join(out)


# --------------------------------------------------------------------------
# streaming the lines into per-agency CSV files
# --------------------------------------------------------------------------

class StatementStreamError(RuntimeError):
    """The line stream does not add up to the agencies' statements as the netting says."""


class _HashingFile:
    """A file written and hashed at once; `append` continues a file already started
    (its hash so far and size given), else it is created."""

    def __init__(self, path: Path, *, append: bool = False, hash: Any = None,
                 size: int = 0) -> None:
        self.path = path
        self.file: BinaryIO = path.open("ab" if append else "wb", buffering=1 << 20)
        self.hash = hashlib.sha256() if hash is None else hash
        self.size = size

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

    def __init__(self, symbol: str, path: Path) -> None:
        self.symbol = symbol
        self.path = path
        self.buf: list[bytes] = []
        self.lines = 0
        self.size = 0
        # Stream 0's file so far (a later stream's blocks are hashed as `finish`
        # appends them to it).
        self.hash = hashlib.sha256()
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
        self.outs = {s: _Out(s, directory / statement_name(s, period, "csv")) for s in symbols}
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
        f = _HashingFile(first.path, append=first.started, hash=first.hash, size=first.size)
        try:
            if not first.started:
                f.write(statement_head())
            for st, fd in zip(self.streams[1:], spills, strict=True):
                for offset, length in st.outs[m.symbol].blocks:
                    f.write(os.pread(fd, length, offset))
            f.write(statement_tail(m))
        finally:
            info = f.close()
        return info

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
# the centre summary
# --------------------------------------------------------------------------

def write_summary_csv(path: Path, data: SummaryData) -> FileInfo:
    f = _HashingFile(path)
    f.write(csv_head(SUMMARY_HEADER))
    for r in data.rows:
        a = r.totals
        c = a.currency
        f.write(csv_line([r.symbol, r.name, c, a.lines, a.as_supplier, a.as_requester, a.late,
                          amount(a.earned, c), amount(a.owed, c), amount(a.subsidy, c),
                          amount(a.patron, c), amount(a.net, c), DIRECTION_TEXT[a.direction]]))
    f.write(b"\n")
    for c, t in data.totals.items():
        f.write(csv_line(["合计 Total", f"{t['agencies']} 馆 agencies", c, "", "", "", "",
                          amount(t["earned"], c), amount(t["owed"], c), amount(t["subsidy"], c),
                          amount(t["patron"], c), amount(t["net"], c), ""]))
        f.write(csv_line(["中心应付各馆 The centre pays the agencies", "", c, "", "", "", "", "",
                          "", "", "", amount(t["toReceive"], c), DIRECTION_TEXT["receive"]]))
        f.write(csv_line(["各馆应付中心 The agencies pay the centre", "", c, "", "", "", "", "",
                          "", "", "", amount(-t["toPay"], c), DIRECTION_TEXT["pay"]]))
        f.write(csv_line(["中心头寸 Centre position (subsidy outlay)", "", c, "", "", "", "",
                          "", "", "", "", amount(t["centre"], c), ""]))
    f.write(b"\n" + csv_line(["补贴按规则 Subsidy outlay by rule", "规则 Rule", "币种 Currency",
                              "笔数 Postings", "金额 Amount"]))
    for rule, c, granted, postings in data.by_rule:
        f.write(csv_line(["", rule, c, postings, amount(granted, c)]))
    f.write(b"\n" + csv_line(["补贴按预算 Subsidy outlay by budget", "预算 Budget",
                              "申请馆 Requester", "预算期 Budget period", "币种 Currency",
                              "金额 Amount"]))
    for name, requester, period, c, granted in data.by_budget:
        f.write(csv_line(["", name, requester or "全体 global", period, c, amount(granted, c)]))
    f.write(csv_line(["", "注 Note: 一笔补贴计入其规则所列的每个预算 a grant counts against "
                          "every budget its rule names"]))
    f.write(b"\n" + csv_line(["不变式 Invariant", "结果 Result", "数据 Figures"]))
    for label, result, figures in invariant_lines(data.invariants):
        f.write(csv_line([label, result, figures]))
    f.write(b"\n")
    f.write(csv_line(["结算期 Period", data.period, f"{data.date_from} .. {data.cutoff}"]))
    f.write(csv_line(["结算批次 Run", data.run_id, data.centre]))
    f.write(csv_line(["记账 Postings", data.postings, f"迟到 late {data.late_postings}",
                      f"分录 entries {data.entries}"]))
    f.write(csv_line([GENERATED_LABEL, data.generated_at]))
    return f.close()


__all__ = [
    "ROW_MARK",
    "SELF_MARK",
    "STATEMENT_STREAMS",
    "StatementLines",
    "StatementStreamError",
    "csv_head",
    "csv_line",
    "lines_sql",
    "read_statement_lines",
    "statement_head",
    "statement_tail",
    "stream_ranges",
    "stream_statement_lines",
    "write_summary_csv",
]
