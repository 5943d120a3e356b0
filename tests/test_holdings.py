"""Holdings: identifier normalisation, request identifiers, CSV import and lookup.

The import tests run against the real per-run database; every test uses its own
agency symbols, so tests never see each other's holdings.
"""

from __future__ import annotations

import asyncio
import random
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from hypothesis import given
from hypothesis import strategies as st

from app.cli import run_command
from broker import holdings
from broker.holdings import (
    HoldingsFileError,
    holders,
    identifiers_of,
    import_csv,
    normalise_doi_prefix,
    normalise_isbn,
    normalise_issn,
    normalise_title_key,
    title_key,
)
from schemas.settings import Settings
from tests.support.agencies import sql_agencies
from tests.support.names import agency_symbol

# --- independent reference check digits (not the code under test) -------------------


def ref_issn_check(body7: str) -> str:
    s = sum(int(d) * w for d, w in zip(body7, [8, 7, 6, 5, 4, 3, 2], strict=True))
    r = (11 - s % 11) % 11
    return "X" if r == 10 else str(r)


def ref_isbn10_valid(isbn10: str) -> bool:
    values = [10 if c == "X" else int(c) for c in isbn10]
    return sum(v * (10 - i) for i, v in enumerate(values)) % 11 == 0


def ref_ean13_valid(code: str) -> bool:
    return sum(int(c) * (1 if i % 2 == 0 else 3) for i, c in enumerate(code)) % 10 == 0


def make_issn(rng: random.Random) -> str:
    body = f"{rng.randrange(10**7):07d}"
    return f"{body[:4]}-{body[4:]}{ref_issn_check(body)}"


# --- ISSN -----------------------------------------------------------------------------


@pytest.mark.parametrize(("raw", "expected"), [
    ("0378-5955", "0378-5955"),
    ("03785955", "0378-5955"),
    (" 0378 5955 ", "0378-5955"),
    ("ISSN 0378-5955", "0378-5955"),
    ("issn: 0378-5955", "0378-5955"),
    ("０３７８－５９５５", "0378-5955"),          # full-width, as typed in Chinese records
    ("1001-8867", "1001-8867"),                  # 中国图书馆学报
    ("0000-006x", "0000-006X"),                  # check digit X, lowercase accepted
    ("0000–006X", "0000-006X"),                  # en dash
])
def test_issn_valid_forms(raw: str, expected: str) -> None:
    assert normalise_issn(raw) == expected


@pytest.mark.parametrize("raw", [
    "0378-5956",      # wrong check digit
    "0000-0060",      # check digit should be X
    "0378-595",       # too short
    "0378-59555",     # too long
    "X378-5955",      # X only allowed last
    "abcd-efgh",
    "",
    "   ",
])
def test_issn_invalid(raw: str) -> None:
    assert normalise_issn(raw) is None


# --- ISBN -----------------------------------------------------------------------------


@pytest.mark.parametrize(("raw", "expected"), [
    ("0-306-40615-2", "9780306406157"),          # ISBN-10 -> 978 ISBN-13
    ("0306406152", "9780306406157"),
    ("978-0-306-40615-7", "9780306406157"),
    ("978 0 306 40615 7", "9780306406157"),
    ("ISBN 978-0-306-40615-7", "9780306406157"),
    ("ISBN-10: 0-8044-2957-X", "9780804429573"),  # X check digit
    ("080442957x", "9780804429573"),
    ("9780306406157 (pbk.)", "9780306406157"),
    ("979-10-323-0569-0", "9791032305690"),       # 979 prefix stays
    ("９７８－０－３０６－４０６１５－７", "9780306406157"),
])
def test_isbn_valid_forms(raw: str, expected: str) -> None:
    assert normalise_isbn(raw) == expected


@pytest.mark.parametrize("raw", [
    "0-306-40615-3",        # ISBN-10 check digit
    "978-0-306-40615-8",    # ISBN-13 check digit
    "9770306406158",        # valid EAN-13 but an ISSN-EAN (977), not a book
    "978030640615X",        # X is never an ISBN-13 check digit
    "X306406152",
    "12345",
    "",
])
def test_isbn_invalid(raw: str) -> None:
    assert normalise_isbn(raw) is None


def test_isbn_13_check_digit_test_case_is_a_valid_ean() -> None:
    # Guard the "977" case above: it must fail for the prefix, not the check digit.
    assert ref_ean13_valid("9770306406158")


@given(st.text(alphabet="0123456789", min_size=9, max_size=9))
def test_isbn10_to_13_yields_valid_check_digits(body: str) -> None:
    check = next(c for c in "0123456789X" if ref_isbn10_valid(body + c))
    isbn13 = normalise_isbn(body + check)
    assert isbn13 is not None
    assert len(isbn13) == 13 and isbn13.isdigit() and isbn13.startswith("978" + body)
    assert ref_ean13_valid(isbn13)
    # The ISBN-13 spelling of the same book normalises to itself, hyphenated or not.
    assert normalise_isbn(isbn13) == isbn13
    assert normalise_isbn(f"{isbn13[:3]}-{isbn13[3]}-{isbn13[4:8]}-{isbn13[8:12]}-{isbn13[12]}") \
        == isbn13


@given(st.text(alphabet="0123456789", min_size=9, max_size=9),
       st.integers(min_value=0, max_value=8), st.integers(min_value=1, max_value=9))
def test_isbn10_single_digit_errors_are_rejected(body: str, pos: int, delta: int) -> None:
    check = next(c for c in "0123456789X" if ref_isbn10_valid(body + c))
    wrong = body[:pos] + str((int(body[pos]) + delta) % 10) + body[pos + 1:]
    assert normalise_isbn(wrong + check) is None


@given(st.text(alphabet="0123456789", min_size=7, max_size=7))
def test_issn_check_digit_matches_reference(body: str) -> None:
    good = f"{body[:4]}-{body[4:]}{ref_issn_check(body)}"
    assert normalise_issn(good) == good
    bad = next(c for c in "0123456789X" if c != ref_issn_check(body))
    assert normalise_issn(body + bad) is None


# --- DOI prefix -----------------------------------------------------------------------


@pytest.mark.parametrize(("raw", "expected"), [
    ("10.1000", "10.1000"),
    ("10.1000/xyz", "10.1000"),
    ("10.1000/ABC/def(1)", "10.1000"),
    ("doi:10.1000/xyz", "10.1000"),
    ("DOI: 10.1000/xyz", "10.1000"),
    ("https://doi.org/10.1000/xyz", "10.1000"),
    ("http://dx.doi.org/10.1000/xyz", "10.1000"),
    ("HTTPS://DOI.ORG/10.13530/j.cnki.jlis.2020001", "10.13530"),
    ("https://doi.org/10.1000%2Fxyz", "10.1000"),
    ("info:doi/10.1000/xyz", "10.1000"),
    ("10.1000.10/abc", "10.1000.10"),               # subdivided prefix
    (" 10.1016/j.lisr.2020.101001 ", "10.1016"),
])
def test_doi_prefix_forms(raw: str, expected: str) -> None:
    assert normalise_doi_prefix(raw) == expected


@pytest.mark.parametrize("raw", [
    "11.1000/xyz", "10./xyz", "10.abc/xyz", "doi:", "", "https://example.org/10.1000/x",
    "1000/xyz",
])
def test_doi_prefix_invalid(raw: str) -> None:
    assert normalise_doi_prefix(raw) is None


# --- title keys -----------------------------------------------------------------------


@pytest.mark.parametrize(("title", "author", "expected"), [
    ("The Journal of Documentation", "Smith, John", "journalofdocumentation|smit"),
    ("Journal of documentation.", "John Smith", "journalofdocumentation|smit"),
    ("“The Lancet”", None, "lancet"),
    ("Ｔｈｅ  Ｌａｎｃｅｔ", None, "lancet"),                       # full-width
    ("A History of Reading", "Manguel, Alberto, 1948-", "historyofreading|mang"),
    ("An Introduction to Information Retrieval",
     "Christopher D. Manning; Prabhakar Raghavan", "introductiontoinformationretri|mann"),
    ("Anatomy of Melancholy", None, "anatomyofmelancholy"),        # "an" only as a word
    ("The", None, "the"),                                          # nothing left to drop
    ("A-Z of Libraries", None, "azoflibraries"),
    ("中国图书馆学报", None, "中国图书馆学报"),
    ("《中国图书馆学报》", None, "中国图书馆学报"),
    ("中国 图书馆 学报。", None, "中国图书馆学报"),
    ("数据挖掘：概念与技术", "韩家炜", "数据挖掘概念与技术|韩家炜"),
    ("数据挖掘：概念与技术", "韩家炜 著", "数据挖掘概念与技术|韩家炜"),
    ("数据挖掘：概念与技术", "韩家炜主编；范明译", "数据挖掘概念与技术|韩家炜"),
    ("Café Society", "Müller, K.", "cafésociety|müll"),
    ("Straße", None, "strasse"),                                   # casefold
])
def test_title_key_examples(title: str, author: str | None, expected: str) -> None:
    assert title_key(title, author) == expected


def test_title_key_truncates_title_to_30_significant_characters() -> None:
    key = title_key("Proceedings of the International Conference on Very Large Data Bases")
    assert key == "proceedingsoftheinternationalc"
    assert len(key) == 30
    long_cjk = "中华人民共和国国家图书馆馆藏珍贵古籍善本图录与研究第一辑上下卷"
    assert title_key(long_cjk) == long_cjk[:30]


@pytest.mark.parametrize("title", ["", "   ", "...", "《》", "—"])
def test_title_key_without_letters_is_none(title: str) -> None:
    assert title_key(title, "Smith") is None


@pytest.mark.parametrize(("title", "author"), [
    ("The Journal of Documentation", "Smith, John"),
    ("中国图书馆学报", None),
    ("数据挖掘", "王小明 主编"),
    ("Proceedings of the International Conference on Very Large Data Bases", "Jones, A."),
])
def test_title_key_is_idempotent_through_the_csv_form(title: str, author: str | None) -> None:
    key = title_key(title, author)
    assert key is not None
    assert normalise_title_key(key) == key
    raw = f"{title}|{author}" if author else title
    assert normalise_title_key(raw) == key


# --- identifiers_of -------------------------------------------------------------------


def article_request() -> dict[str, Any]:
    """A document-delivery request for a journal article, as a requester would send it."""
    return {
        "request": {
            "header": {
                "supplyingAgencyId": {"agencyIdType": "", "agencyIdValue": ""},
                "requestingAgencyId": {"agencyIdType": "CALIS", "agencyIdValue": "100010"},
                "timestamp": "2024-03-01T08:00:00Z",
                "requestingAgencyRequestId": "PKU-2024-000123",
            },
            "bibliographicInfo": {
                "title": "中国图书馆学报",
                "titleOfComponent": "高校图书馆文献传递服务研究",
                "authorOfComponent": "李明",
                "volume": "46", "issue": "2", "pagesRequested": "45-60",
                "bibliographicItemId": [
                    {"bibliographicItemIdentifier": "1001-8867",
                     "bibliographicItemIdentifierCode": "ISSN"},
                    {"bibliographicItemIdentifier": "https://doi.org/10.13530/j.cnki.jlis.2020001",
                     "bibliographicItemIdentifierCode": "doi"},
                    {"bibliographicItemIdentifier": "1001-8868",          # typo: bad check digit
                     "bibliographicItemIdentifierCode": "eISSN"},
                    {"bibliographicItemIdentifier": "ocm12345678",
                     "bibliographicItemIdentifierCode": "OCLC"},
                    {"bibliographicItemIdentifier": "10018867",           # same ISSN again
                     "bibliographicItemIdentifierCode": "issn"},
                ],
            },
            "serviceInfo": {"serviceType": "Copy", "serviceLevel": "Normal"},
            "hubExtensions": {"serviceKind": "DocumentDelivery"},
        }
    }


def test_identifiers_of_article_request() -> None:
    assert identifiers_of(article_request()) == [
        ("issn", "1001-8867"),
        ("doi_prefix", "10.13530"),
        ("title_key", "中国图书馆学报"),
    ]


def test_identifiers_of_book_request_inner_form() -> None:
    request = {
        "bibliographicInfo": {
            "title": "An Introduction to Information Retrieval",
            "author": "Manning, Christopher D.",
            "bibliographicItemId": [
                {"bibliographicItemIdentifier": "0-521-86571-9",
                 "bibliographicItemIdentifierCode": "ISBN"},
                {"bibliographicItemIdentifier": "978-0-521-86571-5",
                 "bibliographicItemIdentifierCode": {"value": "isbn-13"}},  # TypeSchemeValuePair
                {"bibliographicItemIdentifier": "not an isbn",
                 "bibliographicItemIdentifierCode": "ISBN"},
            ],
        },
        "serviceInfo": {"serviceType": "Loan"},
    }
    assert identifiers_of(request) == [
        ("isbn", "9780521865715"),
        ("title_key", "introductiontoinformationretri|mann"),
    ]


@pytest.mark.parametrize("message", [
    {},
    {"request": {}},
    {"request": {"bibliographicInfo": {}}},
    {"request": {"bibliographicInfo": {"title": "...", "bibliographicItemId": []}}},
    {"request": {"bibliographicInfo": {"bibliographicItemId": [
        {"bibliographicItemIdentifier": "1001-8867"},                     # no code
        {"bibliographicItemIdentifierCode": "ISSN"},                      # no value
        "1001-8867",                                                      # not an object
    ]}}},
])
def test_identifiers_of_degenerate_requests(message: dict[str, Any]) -> None:
    assert identifiers_of(message) == []


def test_identifiers_of_single_object_instead_of_array() -> None:
    message = {"request": {"bibliographicInfo": {"bibliographicItemId": {
        "bibliographicItemIdentifier": "0378 5955", "bibliographicItemIdentifierCode": "ISSN"}}}}
    assert identifiers_of(message) == [("issn", "0378-5955")]


# --- database helpers -----------------------------------------------------------------


async def make_agencies(pool: asyncpg.Pool, n: int) -> list[str]:
    """`n` suppliers (bare rows) for holdings files to name."""
    symbols = [agency_symbol() for _ in range(n)]
    return await sql_agencies(pool, *(f"图书馆 {s}" for s in symbols), roles=("supplier",),
                              symbols=symbols)


def write_csv(path: Path, lines: Sequence[str], *, bom: bool = False,
              header: str = "symbol,id_type,id_value") -> Path:
    text = "\n".join([header, *lines]) + "\n"
    path.write_bytes((b"\xef\xbb\xbf" if bom else b"") + text.encode("utf-8"))
    return path


async def held(pool: asyncpg.Pool, symbols: Sequence[str]) -> set[tuple[str, str, str]]:
    rows = await pool.fetch(
        "SELECT symbol, id_type, id_value FROM holding WHERE symbol = ANY($1::text[])",
        list(symbols),
    )
    return {(r["symbol"], r["id_type"], r["id_value"]) for r in rows}


async def do_import(pool: asyncpg.Pool, path: Path, *, replace: bool,
                    **kwargs: Any) -> holdings.ImportReport:
    async with pool.acquire() as conn:
        return await import_csv(conn, path, replace=replace, **kwargs)


# --- import ---------------------------------------------------------------------------


async def test_import_merge_normalises_and_counts(pool: asyncpg.Pool, tmp_path: Path) -> None:
    a, b = await make_agencies(pool, 2)
    path = write_csv(tmp_path / "h.csv", [
        f"{a},issn,0378-5955",
        f"{a},ISSN,0378 5955",                 # the same holding spelled differently
        f"{a},isbn,0-306-40615-2",
        f"{b},isbn,978-0-306-40615-7",
        f"{b},doi_prefix,https://doi.org/10.1016/j.lisr.2020.101001",
        f"{b},title_key,中国图书馆学报",
        f'{a},title_key,"The Journal of Documentation|Smith, John"',
        f" {b} , issn , 1001-8867 ",             # stray spaces around fields
    ])
    report = await do_import(pool, path, replace=False)
    assert (report.read, report.accepted, report.rejected) == (8, 8, 0)
    assert (report.inserted, report.duplicates, report.unchanged, report.removed) == (7, 1, 0, 0)
    assert report.symbols == 2
    assert await held(pool, [a, b]) == {
        (a, "issn", "0378-5955"),
        (a, "isbn", "9780306406157"),
        (b, "isbn", "9780306406157"),
        (b, "doi_prefix", "10.1016"),
        (b, "title_key", "中国图书馆学报"),
        (a, "title_key", "journalofdocumentation|smit"),
        (b, "issn", "1001-8867"),
    }

    # Merging a second file adds only what is new and keeps the rest.
    path2 = write_csv(tmp_path / "h2.csv", [f"{a},issn,0378-5955", f"{a},issn,1001-8867"])
    report2 = await do_import(pool, path2, replace=False)
    assert (report2.inserted, report2.unchanged, report2.duplicates) == (1, 1, 0)
    assert len(await held(pool, [a, b])) == 8


async def test_import_replace_is_per_symbol(pool: asyncpg.Pool, tmp_path: Path) -> None:
    a, b = await make_agencies(pool, 2)
    await do_import(pool, write_csv(tmp_path / "v1.csv", [
        f"{a},issn,0378-5955", f"{a},issn,1001-8867", f"{b},issn,0378-5955",
    ]), replace=False)

    report = await do_import(pool, write_csv(tmp_path / "v2.csv", [
        f"{a},issn,1001-8867",                 # kept
        f"{a},isbn,0-306-40615-2",             # new
    ]), replace=True)
    assert (report.removed, report.inserted, report.unchanged) == (1, 1, 1)
    assert await held(pool, [a, b]) == {
        (a, "issn", "1001-8867"),
        (a, "isbn", "9780306406157"),
        (b, "issn", "0378-5955"),              # b is not in the file: untouched
    }

    # Re-uploading the same file changes nothing.
    again = await do_import(pool, tmp_path / "v2.csv", replace=True)
    assert (again.removed, again.inserted, again.unchanged) == (0, 0, 2)


async def test_replace_ignores_symbols_whose_lines_were_all_rejected(
        pool: asyncpg.Pool, tmp_path: Path) -> None:
    # A file whose every line for an agency is broken must not wipe that agency.
    (a,) = await make_agencies(pool, 1)
    await do_import(pool, write_csv(tmp_path / "v1.csv", [f"{a},issn,0378-5955"]), replace=False)
    report = await do_import(pool, write_csv(tmp_path / "v2.csv", [f"{a},issn,0378-5956"]),
                             replace=True)
    assert (report.rejected, report.removed, report.symbols) == (1, 0, 0)
    assert await held(pool, [a]) == {(a, "issn", "0378-5955")}


async def test_rejected_lines_have_line_numbers_and_reasons(
        pool: asyncpg.Pool, tmp_path: Path) -> None:
    a, b = await make_agencies(pool, 2)
    lines = [
        f"{a},issn,0378-5955",                     # 2 ok
        f"{a},issn,0378-5956",                     # 3 bad ISSN check digit
        "",                                        # 4 blank: skipped, still counted as a line
        f"{a},isbn",                               # 5 two columns
        f"{a},isbn,0-306-40615-2,extra",           # 6 four columns
        f"{a},oclc,12345",                         # 7 unknown id_type
        "NOPE:1,issn,0378-5955",                   # 8 unknown agency
        f"{a.lower()},issn,0378-5955",             # 9 wrong case: hint
        f"{b},isbn,978-0-306-40615-8",             # 10 bad ISBN-13 check digit
        f"{b},doi_prefix,11.1000/x",               # 11 not a DOI
        f"{b},title_key,...",                      # 12 no letters
        ",issn,0378-5955",                        # 13 empty symbol
        f"{b},issn,",                              # 14 empty value
        f"{b},isbn,0-306-40615-2",                 # 15 ok
    ]
    path = write_csv(tmp_path / "bad.csv", lines)
    with path.open("ab") as fh:
        fh.write(f"{b},title_key,caf\xe9\n".encode("latin-1"))   # 16 not UTF-8
        fh.write(f"{b},issn,1001-8867\n".encode())              # 17 ok
    report = await do_import(pool, path, replace=False)

    reasons = {r.line: r.reason for r in report.rejections}
    assert sorted(reasons) == [3, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 16]
    assert "ISSN check digit" in reasons[3] and "expected 5" in reasons[3]
    assert "expected 3 columns" in reasons[5] and "got 2" in reasons[5]
    assert "got 4" in reasons[6]
    assert "unknown id_type 'oclc'" in reasons[7]
    assert reasons[8] == "unknown agency symbol 'NOPE:1'"
    assert f"did you mean {a!r}" in reasons[9]
    assert "ISBN-13 check digit" in reasons[10]
    assert "not a DOI" in reasons[11]
    assert "no letters or digits" in reasons[12]
    assert reasons[13] == "empty symbol"
    assert reasons[14] == "empty issn"
    assert "UTF-8" in reasons[16]
    assert (report.read, report.accepted, report.rejected) == (15, 3, 12)
    assert report.inserted == 3
    assert await held(pool, [a, b]) == {
        (a, "issn", "0378-5955"), (b, "isbn", "9780306406157"), (b, "issn", "1001-8867"),
    }


async def test_rejection_list_is_capped_but_counted(pool: asyncpg.Pool, tmp_path: Path) -> None:
    (a,) = await make_agencies(pool, 1)
    path = write_csv(tmp_path / "many.csv", [f"{a},issn,0000-000{i}" for i in range(10)] * 3)
    report = await do_import(pool, path, replace=False, max_rejections=5)
    # 0000-0000 is the one valid ISSN of the ten bodies.
    assert (report.read, report.rejected, report.accepted) == (30, 27, 3)
    assert [r.line for r in report.rejections] == [3, 4, 5, 6, 7]
    assert (report.inserted, report.duplicates) == (1, 2)


async def test_bom_and_header_in_any_order_and_case(pool: asyncpg.Pool, tmp_path: Path) -> None:
    (a,) = await make_agencies(pool, 1)
    path = write_csv(tmp_path / "bom.csv", [f"0378-5955,issn,{a}", f"1001-8867,ISSN,{a}"],
                     bom=True, header="ID_Value, id_type ,Symbol")
    report = await do_import(pool, path, replace=False)
    assert (report.accepted, report.rejected) == (2, 0)
    assert await held(pool, [a]) == {(a, "issn", "0378-5955"), (a, "issn", "1001-8867")}


async def test_windows_line_endings_and_quoted_fields(pool: asyncpg.Pool, tmp_path: Path) -> None:
    (a,) = await make_agencies(pool, 1)
    path = tmp_path / "crlf.csv"
    path.write_bytes(
        "symbol,id_type,id_value\r\n"
        f'"{a}",issn,"0378-5955"\r\n'
        f'{a},title_key,"Data Mining, Concepts and Techniques|Han, Jiawei"\r\n'.encode()
    )
    report = await do_import(pool, path, replace=False)
    assert report.rejected == 0
    assert await held(pool, [a]) == {
        (a, "issn", "0378-5955"), (a, "title_key", "dataminingconceptsandtechnique|han"),
    }


@pytest.mark.parametrize(("content", "message"), [
    (b"", "empty"),
    (b"symbol,id_type\nX:1,issn\n", "header"),
    (b"library,type,value\nX:1,issn,0378-5955\n", "header"),
    (b"\xff\xfes\x00y\x00m\x00\n", "header"),              # UTF-16: not our encoding
])
async def test_unusable_files_import_nothing(pool: asyncpg.Pool, tmp_path: Path,
                                             content: bytes, message: str) -> None:
    path = tmp_path / "broken.csv"
    path.write_bytes(content)
    with pytest.raises(HoldingsFileError, match=message):
        await do_import(pool, path, replace=True)


async def test_missing_file(pool: asyncpg.Pool, tmp_path: Path) -> None:
    with pytest.raises(HoldingsFileError, match="cannot read"):
        await do_import(pool, tmp_path / "nope.csv", replace=False)


async def test_failure_while_streaming_changes_nothing(pool: asyncpg.Pool, tmp_path: Path) -> None:
    (a,) = await make_agencies(pool, 1)
    await do_import(pool, write_csv(tmp_path / "v1.csv", [f"{a},issn,0378-5955"]), replace=False)
    path = write_csv(tmp_path / "v2.csv", [f"{a},issn,1001-8867"] * 10)
    calls: list[int] = []

    def progress(lines: int) -> None:
        calls.append(lines)
        if lines >= 6:
            raise RuntimeError("operator pressed ^C")

    with pytest.raises(RuntimeError, match="operator"):
        await do_import(pool, path, replace=True, progress=progress, progress_every=3)
    assert calls == [3, 6]
    assert await held(pool, [a]) == {(a, "issn", "0378-5955")}


async def test_failure_after_delete_rolls_back_the_delete(
        pool: asyncpg.Pool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The importer believes in an agency that does not exist (say it was deleted
    # meanwhile): the foreign key fails the INSERT, which runs after replace mode's
    # DELETE, and the whole import must roll back.
    (a,) = await make_agencies(pool, 1)
    ghost = agency_symbol("GHOST")
    await do_import(pool, write_csv(tmp_path / "v1.csv", [f"{a},issn,0378-5955"]), replace=False)
    real_known = holdings._known_symbols

    async def known_plus_ghost(conn: asyncpg.Connection) -> set[str]:
        return await real_known(conn) | {ghost}

    monkeypatch.setattr(holdings, "_known_symbols", known_plus_ghost)
    path = write_csv(tmp_path / "v2.csv", [f"{a},issn,1001-8867", f"{ghost},issn,1001-8867"])
    with pytest.raises(asyncpg.ForeignKeyViolationError):
        await do_import(pool, path, replace=True)
    assert await held(pool, [a, ghost]) == {(a, "issn", "0378-5955")}


async def test_progress_is_reported(pool: asyncpg.Pool, tmp_path: Path) -> None:
    (a,) = await make_agencies(pool, 1)
    path = write_csv(tmp_path / "p.csv", [f"{a},issn,0378-5955"] * 25)
    calls: list[int] = []
    await do_import(pool, path, replace=False, progress=calls.append, progress_every=10)
    assert calls == [10, 20]


async def test_concurrent_imports_of_overlapping_files(pool: asyncpg.Pool, tmp_path: Path) -> None:
    # The table lock serialises the set-based phase; neither import may fail on a
    # key the other one inserted.
    symbols = await make_agencies(pool, 3)
    rng = random.Random(7)
    issns = [make_issn(rng) for _ in range(300)]
    lines = [f"{s},issn,{i}" for s in symbols for i in issns]
    first = write_csv(tmp_path / "one.csv", lines[: len(lines) * 2 // 3])
    second = write_csv(tmp_path / "two.csv", lines[len(lines) // 3:])
    r1, r2 = await asyncio.gather(do_import(pool, first, replace=False),
                                  do_import(pool, second, replace=False))
    assert r1.inserted + r2.inserted == len(lines)
    assert len(await held(pool, symbols)) == len(lines)


async def test_import_inside_callers_transaction_rolls_back_with_it(
        pool: asyncpg.Pool, tmp_path: Path) -> None:
    (a,) = await make_agencies(pool, 1)
    path = write_csv(tmp_path / "t.csv", [f"{a},issn,0378-5955"])
    async with pool.acquire() as conn:
        tx = conn.transaction()
        await tx.start()
        report = await import_csv(conn, path, replace=False)
        assert report.inserted == 1
        await tx.rollback()
    assert await held(pool, [a]) == set()


# --- lookup ---------------------------------------------------------------------------


async def test_holders_finds_symbols_and_matching_id_types(
        pool: asyncpg.Pool, tmp_path: Path) -> None:
    a, b, c = await make_agencies(pool, 3)
    await do_import(pool, write_csv(tmp_path / "h.csv", [
        f"{a},issn,1001-8867",
        f"{a},title_key,中国图书馆学报",
        f"{b},doi_prefix,10.13530",
        f"{c},issn,0378-5955",                   # holds something else
    ]), replace=False)
    wanted = identifiers_of(article_request())
    async with pool.acquire() as conn:
        found = await holders(conn, wanted)
        ours = {s: t for s, t in found.items() if s in (a, b, c)}
        assert ours == {a: {"issn", "title_key"}, b: {"doi_prefix"}}
        assert await holders(conn, []) == {}
        assert await holders(conn, [("issn", "9999-9999")]) == {}


async def test_holders_uses_the_primary_key(pool: asyncpg.Pool) -> None:
    async with pool.acquire() as conn, conn.transaction():
        # Plan as for a big table (the test table is small enough for a seq scan).
        await conn.execute("SET LOCAL enable_seqscan = off")
        rows = await conn.fetch("EXPLAIN " + holdings._HOLDERS_SQL, ["issn"], ["1001-8867"])
    plan = "\n".join(r["QUERY PLAN"] for r in rows)
    # An index-only scan, or a bitmap scan of the same index once autovacuum has given
    # the table statistics (it is on, as in every deployment): the key, either way.
    assert re.search(r"(Index Only Scan using|Bitmap Index Scan on) holding_pkey", plan), plan


# --- command line ---------------------------------------------------------------------


async def test_cli_exit_codes_and_output(pool: asyncpg.Pool, settings: Settings, tmp_path: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    (a,) = await make_agencies(pool, 1)
    good = write_csv(tmp_path / "good.csv", [f"{a},issn,0378-5955"])
    assert await run_command(settings, ["holdings", "import", str(good)]) == 0
    out = capsys.readouterr().out
    assert "1 lines read, 1 accepted, 0 rejected" in out

    bad_lines = [f"{a},issn,0000-000{i % 9 + 1}" for i in range(25)]   # all wrong check digits
    mixed = write_csv(tmp_path / "mixed.csv", [f"{a},issn,1001-8867", *bad_lines])
    assert await run_command(settings, ["holdings", "import", str(mixed)]) == 1
    out = capsys.readouterr().out
    assert "line 3: invalid ISSN check digit" in out
    assert "line 22:" in out and "line 23:" not in out
    assert "... and 5 more" in out
    assert (a, "issn", "1001-8867") in await held(pool, [a])

    header = write_csv(tmp_path / "header.csv", [f"{a},issn"], header="symbol,issn")
    assert await run_command(settings, ["holdings", "import", str(header), "--replace"]) == 2
    assert "nothing imported" in capsys.readouterr().err
    assert await run_command(settings, ["holdings", "import", str(tmp_path / "missing.csv")]
                             ) == 2
    assert len(await held(pool, [a])) == 2
