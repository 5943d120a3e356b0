"""What a settlement statement says, whatever it is written as (§4).

The CSV writer (settlement/statement_csv.py), the PDF writer (statement_pdf.py), the
finance messages and mails (outputs.py) and the stored run (record.py) all print the
same things: amounts in minor units as text, an agency's totals and the direction of
its net amount, the run's stamp (period, run, generation time, centre), file names
and checksums. They live here, once, with no I/O besides hashing a file, so that the
CSV side needs no reportlab and the PDF side no PostgreSQL.

Files of a run land in `<data_dir>/statements/<period>/` with stable names:

    statement-<symbol, ':' -> '_'>-<period>.csv / .pdf     one per agency
    centre-summary-<period>.csv / .pdf                     the centre's summary

Text that Excel would take for a formula (starting with = + - @) gets a leading
apostrophe; line breaks in titles become spaces, so every record is one line.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from schemas.money import Money
from schemas.settings import Settings
from settlement.periods import Period

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


def statements_dir(settings: Settings, period: Period | str) -> Path:
    """Where a period's files are published."""
    return Path(settings.data_dir) / "statements" / str(period)


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


# --------------------------------------------------------------------------
# text and amounts
# --------------------------------------------------------------------------

# Line breaks, and the statement stream's row marks (statement_csv.lines_sql), become
# spaces.
_ONE_LINE = str.maketrans("\r\n\x1e\x1f", "    ")


def clean_text(text: str | None, limit: int) -> str:
    """One line of text for a statement: no line breaks, no formula, at most `limit` chars."""
    if not text:
        return ""
    out = text.translate(_ONE_LINE)[:limit]
    return "'" + out if out[:1] in ("=", "+", "-", "@") else out


def amount(minor: int, currency: str) -> str:
    """Minor units as statements, messages and invariants print them: '38.00', '-0.05'."""
    return Money(minor, currency).amount_text()


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
    earned: int          # fees earned as supplier
    owed: int            # fees owed as requester (positive)
    subsidy: int         # paid by the centre on its behalf
    patron: int          # patron share its readers pay it
    net: int             # to receive from the centre (> 0) or to pay it (< 0)

    @property
    def direction(self) -> str:
        """Which way the net amount goes: 'receive' (the centre pays), 'pay', or 'none'."""
        return "receive" if self.net > 0 else "pay" if self.net < 0 else "none"

    def to_json(self) -> dict[str, Any]:
        return self.__dict__.copy()


@dataclass(frozen=True, kw_only=True)
class RunStamp:
    """What every file of a run prints about the run (picklable)."""

    period: str
    run_id: int
    date_from: str
    cutoff: str
    generated_at: str
    centre: str

    @classmethod
    def of(cls, p: Period, run_id: int, generated_at: str, centre: str) -> RunStamp:
        return cls(period=p.name, run_id=run_id, date_from=p.first_day.isoformat(),
                   cutoff=p.last_day.isoformat(), generated_at=generated_at, centre=centre)

    def stamp_fields(self) -> dict[str, Any]:
        """The stamp's own fields, to build a StatementMeta or SummaryData from it."""
        return {f.name: getattr(self, f.name) for f in fields(RunStamp)}


@dataclass(frozen=True, kw_only=True)
class StatementMeta(RunStamp):
    """Everything printed on one agency's statement apart from its lines (picklable)."""

    symbol: str
    name: str
    totals: tuple[Totals, ...]

    @property
    def lines(self) -> int:
        return sum(t.lines for t in self.totals)


@dataclass(frozen=True)
class SummaryRow:
    symbol: str
    name: str
    totals: Totals


@dataclass(frozen=True, kw_only=True)
class SummaryData(RunStamp):
    """Everything in the centre summary (picklable)."""

    rows: tuple[SummaryRow, ...]
    totals: dict[str, dict[str, int]]
    by_rule: tuple[tuple[str, str, int, int], ...]        # rule, currency, granted, postings
    by_budget: tuple[tuple[str, str, str, str, int], ...]  # name, requester, period, cur, granted
    invariants: dict[str, Any]
    postings: int
    late_postings: int
    entries: int


def invariant_lines(inv: dict[str, Any]) -> list[tuple[str, str, str]]:
    """The run's invariants as the centre summary prints them: (label, result, figures)."""
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


__all__ = [
    "BOM",
    "CSV_HEADER",
    "DIRECTION_TEXT",
    "GENERATED_LABEL",
    "NAME_MAX",
    "SUMMARY_HEADER",
    "TITLE_MAX",
    "FileInfo",
    "RunStamp",
    "StatementMeta",
    "SummaryData",
    "SummaryRow",
    "Totals",
    "amount",
    "attachment_name",
    "clean_text",
    "file_info",
    "file_stem",
    "invariant_lines",
    "statement_name",
    "statements_dir",
    "summary_name",
]
