"""Holdings: which supplier holds which item, so dispatch can rank suppliers.

Items are matched by normalised identifiers, never by raw strings, because
requesters and union catalogues spell the same ISSN/ISBN/DOI in many ways:

| id_type      | stored form                         | example            |
|--------------|-------------------------------------|--------------------|
| `issn`       | `NNNN-NNNC`, C a digit or `X`       | `0378-5955`        |
| `isbn`       | 13 digits (ISBN-10 converted)       | `9787300000007`    |
| `doi_prefix` | the registrant prefix, lowercase    | `10.1016`          |
| `title_key`  | see `title_key` below               | `中国图书馆学报`    |

The import (`import_csv`) streams a CSV through Python validation into a
temporary staging table with binary COPY and then changes `holding` with a few
set-based statements, all in one transaction: a failed import changes
nothing, and a million lines take seconds (bench/holdings_import.py).
"""

from __future__ import annotations

import csv
import re
import time
import unicodedata
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from operator import itemgetter, mul
from pathlib import Path
from typing import Any, BinaryIO
from urllib.parse import unquote

from infra.database import Connection

ID_TYPES: tuple[str, ...] = ("issn", "isbn", "doi_prefix", "title_key")
CSV_COLUMNS: tuple[str, ...] = ("symbol", "id_type", "id_value")

# Hyphen look-alikes that catalogues and word processors put into identifiers.
_DASHES_AND_SPACES = str.maketrans(
    "", "", "-\u2010\u2011\u2012\u2013\u2014\u2015\u2212\u00ad \t\u00a0\u3000"
)
_ID_LABEL = re.compile(r"^\s*(?:issn|isbn)(?:[-\s]?1[03])?\s*[:：]?\s*", re.IGNORECASE)


def _nfkc(s: str) -> str:
    # NFKC turns full-width digits and dashes (common in Chinese records) into ASCII;
    # skipping it for ASCII input keeps the million-line import fast.
    return s if s.isascii() else unicodedata.normalize("NFKC", s)


def _bare_identifier(s: str) -> str:
    """The identifier without separators, labels or qualifiers, uppercased."""
    t = s.replace("-", "").replace(" ", "")
    # Fast path for the forms a million-line export is made of: "0378-5955",
    # "9787300000007", "7-5013-1234-X".
    if t.isascii():
        if t.isdigit():
            return t
        if t[-1:] in ("x", "X") and t[:-1].isdigit():
            return t[:-1] + "X"
    s = _nfkc(s)
    # MARC-style qualifiers: "9787300000007 (pbk.)".
    cut = s.find("(")
    if cut >= 0:
        s = s[:cut]
    return _ID_LABEL.sub("", s).translate(_DASHES_AND_SPACES).upper()


# Check digits are computed on the ASCII codes in C (map/mul) rather than digit by
# digit in Python: sum(w * (c - 48)) == sum(w * c) - 48 * sum(w). Callers have
# already verified that the characters are ASCII digits.
_ISSN_WEIGHTS = (8, 7, 6, 5, 4, 3, 2)
_ISBN10_WEIGHTS = (10, 9, 8, 7, 6, 5, 4, 3, 2)
_EAN13_WEIGHTS = (1, 3) * 6


def _weighted(digits: str, weights: tuple[int, ...]) -> int:
    products: int = sum(map(mul, digits.encode("ascii"), weights))  # typeshed: mul -> Any
    return products - 48 * sum(weights)


def _issn_check(first7: str) -> str:
    check = -_weighted(first7, _ISSN_WEIGHTS) % 11
    return "X" if check == 10 else str(check)


def normalise_issn(s: str) -> str | None:
    """`"0378 5955"`, `"issn 0378-5955"`, `"１２３４－５６７９"` -> `"0378-5955"`; None if invalid.

    Exactly 8 characters after removing hyphens and spaces, the last may be `x`/`X`,
    and the ISO 3297 mod-11 check digit must match.
    """
    if not s:
        return None
    t = _bare_identifier(s)
    if len(t) != 8 or not t.isascii() or not t[:7].isdigit():
        return None
    if t[7] != _issn_check(t[:7]):
        return None
    return f"{t[:4]}-{t[4:]}"


def _isbn10_check(first9: str) -> str:
    check = -_weighted(first9, _ISBN10_WEIGHTS) % 11
    return "X" if check == 10 else str(check)


def _ean13_check(first12: str) -> str:
    return str(-_weighted(first12, _EAN13_WEIGHTS) % 10)


def isbn10_to_13(isbn10: str) -> str:
    """Nine ISBN-10 body digits (check digit ignored) -> the 978-prefixed ISBN-13."""
    body = "978" + isbn10[:9]
    return body + _ean13_check(body)


def normalise_isbn(s: str) -> str | None:
    """ISBN-10 or ISBN-13, with or without hyphens/spaces/label -> 13 digits; None if invalid.

    ISBN-10s are converted to their 978 ISBN-13 so both spellings of one book meet.
    """
    if not s:
        return None
    t = _bare_identifier(s)
    if not t.isascii():
        return None
    if len(t) == 10:
        if not t[:9].isdigit() or t[9] != _isbn10_check(t[:9]):
            return None
        return isbn10_to_13(t)
    if len(t) == 13:
        if not t.isdigit() or t[:3] not in ("978", "979") or t[12] != _ean13_check(t[:12]):
            return None
        return t
    return None


_DOI = re.compile(
    r"^(?:doi:\s*|info:doi/|(?:https?://)?(?:dx\.|www\.)?doi\.org/)?"
    r"(10\.[0-9]+(?:\.[0-9]+)*)(?:/.*)?$",
    re.IGNORECASE | re.DOTALL,
)


def normalise_doi_prefix(s: str) -> str | None:
    """The lowercase registrant prefix of a DOI or DOI prefix, or None.

    Accepts `10.1000`, `10.1000/xyz`, `doi:10.1000/xyz`, `https://doi.org/10.1000/xyz`
    (also dx.doi.org, info:doi/ and percent-encoded URLs). Holdings are per
    registrant (publisher/platform), so only the prefix matters.
    """
    if not s:
        return None
    t = _nfkc(s).strip()
    if "%" in t:
        t = unquote(t)
    m = _DOI.match(t)
    return m.group(1).lower() if m else None


# --- title keys ---------------------------------------------------------------

TITLE_KEY_TITLE_CHARS = 30
TITLE_KEY_AUTHOR_CHARS = 4
_LEADING_ARTICLES = frozenset({"the", "a", "an"})
# Scripts whose personal names are written surname first (Chinese, Japanese, Korean).
_SURNAME_FIRST = re.compile(
    "[\u1100-\u11ff\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff"
    "\U00020000-\U0003134f]"
)
_AUTHOR_SEPARATORS = re.compile(r";|、|&|\band\b")
_ET_AL = re.compile(r"\bet\.?\s*al\.?.*$")
# Chinese statements of responsibility glued to the name: 王小明主编, 李四 等著.
_CJK_ROLE = re.compile(r"\s*等?\s*(?:主编|编著|编译|编|著|译|撰|整理)\s*$")


def _significant(text: str) -> str:
    # Letters, digits and combining marks survive; punctuation, symbols and
    # whitespace go, so "Nature." and "nature" (and "中国图书馆学报" with or
    # without 《》) give one key.
    return "".join(ch for ch in text if unicodedata.category(ch)[0] in "LNM")


def _author_part(author: str) -> str:
    first = _AUTHOR_SEPARATORS.split(author, maxsplit=1)[0]
    first = _ET_AL.sub("", first).strip()
    if "," in first:
        name = first.split(",", 1)[0]
    else:
        words = first.split()
        if not words:
            return ""
        if _SURNAME_FIRST.match(_significant(first)[:1] or " "):
            name = _CJK_ROLE.sub("", words[0]) if len(words) == 1 else words[0]
        else:
            name = words[-1]
    return _significant(name)[:TITLE_KEY_AUTHOR_CHARS]


def title_key(title: str, author: str | None = None) -> str | None:
    """A matching key for items without a usable standard number. The exact rule:

    1. NFKC-normalise and casefold title and author (full-width forms, ligatures
       and case stop mattering).
    2. Title: drop leading words that have no letter or digit, then one leading
       English article (`the`, `a`, `an`) if more words follow; keep only
       letters, digits and combining marks (all punctuation, symbols and
       whitespace removed, CJK characters kept); take the first 30 characters.
    3. Author (optional): the first author, i.e. the text before the first `;`,
       `、`, `&` or word `and`, without "et al."; then the surname: the part
       before a comma if there is one ("Smith, John"), else the first word for
       names starting with a CJK/kana/hangul character (surname first; a
       trailing Chinese role such as 主编/编著/著/译 is removed), else the last
       word ("John Smith"). Keep letters/digits/marks, first 4 characters.
    4. Key = title part, plus `|` and the author part when that is non-empty.
       None when the title part is empty.

    Examples: ("The Journal of Documentation", "Smith, J.") -> "journalofdocumentation|smit";
    ("中国图书馆学报", None) -> "中国图书馆学报"; ("数据挖掘", "王小明 主编") -> "数据挖掘|王小明".
    For ordinary titles and names the rule is idempotent on its own output (a key
    fed back as "title|author" gives itself), which is what lets the CSV carry
    either raw text or ready-made keys.
    """
    if not title:
        return None
    words = unicodedata.normalize("NFKC", title).casefold().split()
    while words and not _significant(words[0]):
        words.pop(0)
    if len(words) > 1 and _significant(words[0]) in _LEADING_ARTICLES:
        words.pop(0)
    title_part = _significant("".join(words))[:TITLE_KEY_TITLE_CHARS]
    if not title_part:
        return None
    author_part = ""
    if author:
        author_part = _author_part(unicodedata.normalize("NFKC", author).casefold())
    return f"{title_part}|{author_part}" if author_part else title_part


def normalise_title_key(value: str) -> str | None:
    """A CSV `title_key` value, `Title|Author` or `Title`, raw or already a key -> the key."""
    if "|" in value:
        title, author = value.rsplit("|", 1)
        return title_key(title, author)
    return title_key(value)


NORMALISERS: dict[str, Callable[[str], str | None]] = {
    "issn": normalise_issn,
    "isbn": normalise_isbn,
    "doi_prefix": normalise_doi_prefix,
    "title_key": normalise_title_key,
}


def _why_invalid(id_type: str, value: str) -> str:
    """A human reason for a value its normaliser refused (only runs on rejected lines)."""
    shown = value if len(value) <= 60 else value[:57] + "..."
    if not value.strip():
        return f"empty {id_type}"
    if id_type in ("issn", "isbn"):
        t = _bare_identifier(value)
        if id_type == "issn" and len(t) == 8 and t.isascii() and t[:7].isdigit():
            if t[7] in "0123456789X":
                return f"invalid ISSN check digit in {shown!r} (expected {_issn_check(t[:7])})"
        if id_type == "isbn" and t.isascii():
            if len(t) == 10 and t[:9].isdigit() and t[9] in "0123456789X":
                return f"invalid ISBN-10 check digit in {shown!r} (expected {_isbn10_check(t[:9])})"
            if len(t) == 13 and t.isdigit():
                if t[:3] not in ("978", "979"):
                    return f"ISBN-13 {shown!r} does not start with 978 or 979"
                return f"invalid ISBN-13 check digit in {shown!r} (expected {_ean13_check(t[:12])})"
        shape = "8 characters NNNN-NNNC" if id_type == "issn" else "10 or 13 digits"
        return f"malformed {id_type.upper()} {shown!r} (want {shape})"
    if id_type == "doi_prefix":
        return f"not a DOI or DOI prefix: {shown!r} (want 10.NNNN[/suffix])"
    return f"title has no letters or digits: {shown!r}"


# --- identifiers of a request ----------------------------------------------------

# ISO 18626 leaves bibliographicItemIdentifierCode open; these are the spellings seen
# in practice, compared after casefolding and removing '-', '_' and spaces.
_ITEM_ID_CODES: dict[str, str] = {
    "issn": "issn", "eissn": "issn", "pissn": "issn", "issnl": "issn",
    "isbn": "isbn", "eisbn": "isbn", "pisbn": "isbn", "isbn10": "isbn", "isbn13": "isbn",
    "doi": "doi_prefix",
}


def _scalar(value: Any) -> str | None:
    """An ISO 18626 value that may arrive as a plain string or as a JSON-ified
    TypeSchemeValuePair / XML text node (`{"value": ...}`, `{"#text": ...}`)."""
    if isinstance(value, str):
        return value
    if isinstance(value, dict):
        for key in ("value", "#text", "_", "$"):
            found = value.get(key)
            if isinstance(found, str):
                return found
    return None


def _as_list(value: Any) -> list[Any]:
    if value is None:
        return []
    return value if isinstance(value, list) else [value]


def identifiers_of(request_json: dict[str, Any]) -> list[tuple[str, str]]:
    """The normalised (id_type, id_value) pairs of an ISO 18626 request, for `holders`.

    Accepts the whole message (`{"request": {...}}`) or the inner request. Unknown
    identifier codes and invalid identifiers are skipped: a typo in one ISSN must
    not stop routing on the others. A title key is added when there is a title.
    """
    request = request_json.get("request", request_json)
    info = request.get("bibliographicInfo") if isinstance(request, dict) else None
    if not isinstance(info, dict):
        return []
    found: list[tuple[str, str]] = []
    for item in _as_list(info.get("bibliographicItemId")):
        if not isinstance(item, dict):
            continue
        code = _scalar(item.get("bibliographicItemIdentifierCode"))
        raw = _scalar(item.get("bibliographicItemIdentifier"))
        if code is None or raw is None:
            continue
        id_type = _ITEM_ID_CODES.get(code.casefold().translate(_DASHES_AND_SPACES).replace("_", ""))
        if id_type is None:
            continue
        value = NORMALISERS[id_type](raw)
        if value is not None:
            found.append((id_type, value))
    title = _scalar(info.get("title"))
    if title:
        key = title_key(title, _scalar(info.get("author")))
        if key is not None:
            found.append(("title_key", key))
    return list(dict.fromkeys(found))


# --- lookup ------------------------------------------------------------------------

_HOLDERS_SQL = """
SELECT h.symbol, array_agg(DISTINCT h.id_type) AS matched
FROM unnest($1::text[], $2::text[]) AS q(id_type, id_value)
JOIN holding h ON h.id_type = q.id_type AND h.id_value = q.id_value
GROUP BY h.symbol
"""


async def holders(conn: Connection,
                  identifiers: list[tuple[str, str]]) -> dict[str, set[str]]:
    """symbol -> the id_types through which it holds the item; one index-only query.

    `identifiers` must already be normalised (as `identifiers_of` returns them).
    """
    if not identifiers:
        return {}
    types = [t for t, _ in identifiers]
    values = [v for _, v in identifiers]
    rows = await conn.fetch(_HOLDERS_SQL, types, values)
    return {r["symbol"]: set(r["matched"]) for r in rows}


# --- import ------------------------------------------------------------------------


class HoldingsFileError(Exception):
    """The file cannot be imported at all (unreadable, not CSV, wrong header)."""


@dataclass(frozen=True)
class Rejection:
    line: int
    reason: str


@dataclass
class ImportReport:
    """What an import did. Counts are of data lines (header and blank lines excluded).

    accepted = read - rejected; of the accepted lines, `duplicates` repeat an earlier
    line of the file, `inserted` became new holdings and `unchanged` were already held.
    `removed` counts holdings deleted by replace mode (held before, absent from the file).
    """

    path: str
    replace: bool
    read: int = 0
    accepted: int = 0
    rejected: int = 0
    inserted: int = 0
    duplicates: int = 0
    unchanged: int = 0
    removed: int = 0
    symbols: int = 0
    seconds: float = 0.0
    rejections: list[Rejection] = field(default_factory=list)

    def summary(self, *, limit: int) -> list[str]:
        """The counts and the first `limit` rejected lines, as printable lines."""
        mode = "replace" if self.replace else "merge"
        rate = self.read / self.seconds if self.seconds > 0 else 0.0
        lines = [
            f"{self.path} ({mode}): {self.read} lines read, {self.accepted} accepted, "
            f"{self.rejected} rejected in {self.seconds:.1f} s ({rate:,.0f} lines/s)",
            f"holdings: {self.inserted} inserted, {self.unchanged} already held, "
            f"{self.duplicates} duplicate lines, {self.removed} removed; "
            f"{self.symbols} agencies",
        ]
        shown = self.rejections[:limit]
        lines += [f"line {r.line}: {r.reason}" for r in shown]
        if self.rejected > len(shown):
            lines.append(f"... and {self.rejected - len(shown)} more")
        return lines


class _Parser:
    """Streams a holdings CSV into normalised staging rows, recording rejections."""

    def __init__(self, fh: BinaryIO, known_symbols: set[str], report: ImportReport, *,
                 max_rejections: int, progress: Callable[[int], None] | None,
                 progress_every: int) -> None:
        self._fh = fh
        self._known = known_symbols
        self._by_casefold = {s.casefold(): s for s in known_symbols}
        self._report = report
        self._max_rejections = max_rejections
        self._progress = progress
        self._progress_every = progress_every
        self._bad_utf8: set[int] = set()
        self._reader = csv.reader(self._decoded_lines())
        self.symbols: set[str] = set()
        self._pick = self._read_header()

    def _decoded_lines(self) -> Iterator[str]:
        # Decoding line by line (not via TextIOWrapper) turns a stray non-UTF-8 line
        # into one rejected line instead of aborting the whole import.
        first = True
        for number, raw in enumerate(self._fh, 1):
            if first:
                first = False
                raw = raw.removeprefix(b"\xef\xbb\xbf")
            try:
                yield raw.decode("utf-8")
            except UnicodeDecodeError:
                self._bad_utf8.add(number)
                yield raw.decode("utf-8", "replace")

    def _read_header(self) -> Callable[[list[str]], tuple[str, ...]]:
        try:
            header = next(self._reader)
        except StopIteration:
            raise HoldingsFileError("the file is empty (expected a header line "
                                    f"{','.join(CSV_COLUMNS)})") from None
        except csv.Error as exc:
            raise HoldingsFileError(f"line 1: not CSV: {exc}") from None
        names = [h.strip().casefold() for h in header]
        if self._bad_utf8 or sorted(names) != sorted(CSV_COLUMNS):
            raise HoldingsFileError(
                f"line 1: the header must name the columns {','.join(CSV_COLUMNS)}, "
                f"got {','.join(header)!r}"
            )
        return itemgetter(*(names.index(c) for c in CSV_COLUMNS))

    def _reject(self, reason: str) -> None:
        report = self._report
        report.rejected += 1
        if len(report.rejections) < self._max_rejections:
            report.rejections.append(Rejection(self._reader.line_num, reason))

    def rows(self) -> Iterator[tuple[str, str, str]]:
        """(id_type, id_value, symbol) for every good line, in staging column order."""
        while True:
            try:
                yield from self._rows()
                return
            except csv.Error as exc:
                # csv.reader can carry on after a malformed record; count it and go on.
                self._report.read += 1
                self._reject(f"malformed CSV: {exc}")

    def _rows(self) -> Iterator[tuple[str, str, str]]:
        report = self._report
        known = self._known
        pick = self._pick
        normalisers = NORMALISERS
        symbols = self.symbols
        bad_utf8 = self._bad_utf8
        next_progress = report.read + self._progress_every
        for row in self._reader:
            if len(row) != 3 and (not row or row == [""]):
                continue  # blank line
            report.read += 1
            if report.read >= next_progress:
                next_progress += self._progress_every
                if self._progress is not None:
                    self._progress(report.read)
            if len(row) != 3:
                self._reject(f"expected 3 columns ({','.join(CSV_COLUMNS)}), got {len(row)}")
                continue
            if bad_utf8 and self._reader.line_num in bad_utf8:
                self._reject("the line is not valid UTF-8")
                continue
            symbol, id_type, id_value = pick(row)
            if symbol not in known:
                symbol = symbol.strip()
                if symbol not in known:
                    self._reject(self._unknown_symbol(symbol))
                    continue
            normalise = normalisers.get(id_type)
            if normalise is None:
                id_type = id_type.strip().lower()
                normalise = normalisers.get(id_type)
                if normalise is None:
                    self._reject(f"unknown id_type {id_type!r} (want one of {', '.join(ID_TYPES)})")
                    continue
            value = normalise(id_value)
            if value is None:
                self._reject(_why_invalid(id_type, id_value))
                continue
            symbols.add(symbol)
            yield id_type, value, symbol

    def _unknown_symbol(self, symbol: str) -> str:
        if not symbol:
            return "empty symbol"
        hint = self._by_casefold.get(symbol.casefold())
        if hint is not None:
            return f"unknown agency symbol {symbol!r} (did you mean {hint!r}?)"
        return f"unknown agency symbol {symbol!r}"


async def _known_symbols(conn: Connection) -> set[str]:
    return {r["symbol"] for r in await conn.fetch("SELECT symbol FROM agency")}


def _open(path: str | Path) -> BinaryIO:
    try:
        return open(path, "rb")
    except OSError as exc:
        raise HoldingsFileError(f"cannot read {path}: {exc.strerror or exc}") from None


_STAGING = "holding_import"

# Plain INSERT ... WHERE NOT EXISTS under the table lock taken in import_csv, not ON
# CONFLICT: speculative insertion was measurably slower per row (bench), and the
# lock already rules out a concurrent insert of the same key. DISTINCT (hashed, no sort)
# because a file may repeat lines; `incoming` is materialised once and counted.
_INSERT_SQL = f"""
WITH incoming AS MATERIALIZED (
    SELECT DISTINCT id_type, id_value, symbol FROM {_STAGING}
), added AS (
    INSERT INTO holding (id_type, id_value, symbol)
    SELECT i.id_type, i.id_value, i.symbol FROM incoming i
    WHERE NOT EXISTS (SELECT 1 FROM holding h
                      WHERE h.id_type = i.id_type AND h.id_value = i.id_value
                        AND h.symbol = i.symbol)
    RETURNING 1
)
SELECT (SELECT count(*) FROM incoming) AS distinct_rows, (SELECT count(*) FROM added) AS inserted
"""

# Replace mode deletes only what the file no longer lists, so a monthly re-upload
# of an unchanged catalogue rewrites nothing (no churn, no bloat) and `removed` /
# `inserted` report the real difference.
_DELETE_SQL = f"""
DELETE FROM holding h
WHERE h.symbol = ANY($1::text[])
  AND NOT EXISTS (SELECT 1 FROM {_STAGING} s
                  WHERE s.id_type = h.id_type AND s.id_value = h.id_value
                    AND s.symbol = h.symbol)
"""

# A holding loaded again lifts its doubts (broker/holdings_trust.py): a not-held answer
# older than the holding's loaded_at no longer counts. Only the holdings with such an
# answer since their last load are touched, so an unchanged re-upload still rewrites
# nothing else; the doubts are few (a partial index on them), the file is hashed once.
_RELOADED_SQL = f"""
UPDATE holding h SET loaded_at = now()
FROM (SELECT supplier, id_type, id_value, max(answered_at) AS last FROM holding_answer
      WHERE not_held AND supplier = ANY($1::text[])
      GROUP BY supplier, id_type, id_value) d
WHERE h.symbol = d.supplier AND h.id_type = d.id_type AND h.id_value = d.id_value
  AND d.last > h.loaded_at
  AND EXISTS (SELECT 1 FROM {_STAGING} s
              WHERE s.id_type = h.id_type AND s.id_value = h.id_value AND s.symbol = h.symbol)
"""


async def import_csv(conn: Connection, path: str | Path, *, replace: bool,
                     progress: Callable[[int], None] | None = None,
                     progress_every: int = 50_000,
                     max_rejections: int = 100) -> ImportReport:
    """Import a `symbol,id_type,id_value` CSV (UTF-8, optional BOM, columns in any order).

    Merge mode (`replace=False`) adds holdings. Replace mode makes the file the whole
    truth for every symbol that has at least one accepted line: their holdings not in
    the file are removed. Either way a holding in the file is loaded afresh: a doubt
    about it (a NotHeld answer, broker/holdings_trust.py) no longer counts. Bad lines
    are rejected and reported (the first `max_rejections` with line number and reason);
    the good ones are imported.
    Everything happens in one transaction (a savepoint if `conn` is already in one).

    Raises HoldingsFileError, having changed nothing, if the file is unreadable or its
    header is wrong; any other error also leaves `holding` unchanged.

    Parsing is CPU-bound and runs on the calling event loop (seconds for a million
    lines): run big imports from the CLI or a worker, not inside the hub's consumers.
    """
    started = time.monotonic()
    report = ImportReport(path=str(path), replace=replace)
    fh = _open(path)
    try:
        async with conn.transaction():
            parser = _Parser(fh, await _known_symbols(conn), report,
                             max_rejections=max_rejections, progress=progress,
                             progress_every=progress_every)
            # Enough memory that DISTINCT/anti-join of a million rows stay in RAM.
            await conn.execute("SET LOCAL work_mem = '256MB'")
            await conn.execute(f"DROP TABLE IF EXISTS pg_temp.{_STAGING}")
            await conn.execute(
                f'CREATE TEMP TABLE {_STAGING} (id_type text COLLATE "C", '
                'id_value text COLLATE "C", symbol text COLLATE "C") ON COMMIT DROP'
            )
            await conn.copy_records_to_table(_STAGING, records=parser.rows())
            report.accepted = report.read - report.rejected
            report.symbols = len(parser.symbols)
            if report.accepted:
                # Temp tables are never auto-analysed; without statistics the planner
                # misjudges the DISTINCT and anti-join sizes (hash vs. nested loop).
                await conn.execute(f"ANALYZE {_STAGING}")
                # Imports queue up behind each other here (after their parsing, which
                # may overlap); routing lookups (plain SELECTs) are not blocked.
                await conn.execute("LOCK TABLE holding IN SHARE ROW EXCLUSIVE MODE")
                if replace:
                    status = await conn.execute(_DELETE_SQL, sorted(parser.symbols))
                    report.removed = int(status.rsplit(" ", 1)[1])
                row = await conn.fetchrow(_INSERT_SQL)
                if row is None:
                    raise HoldingsFileError("the holdings insert returned no counts")
                report.inserted = row["inserted"]
                await conn.execute(_RELOADED_SQL, sorted(parser.symbols))
                report.duplicates = report.accepted - row["distinct_rows"]
                report.unchanged = row["distinct_rows"] - row["inserted"]
            await conn.execute(f"DROP TABLE {_STAGING}")
    finally:
        fh.close()
    report.seconds = time.monotonic() - started
    return report
