"""Measure the holdings import: a generated 1,000,000-line CSV into a scratch database.

    .venv/bin/python bench/holdings_import.py [--rows N] [--agencies N]

Creates `illhub_bench_<random>` via the admin URL (ILLHUB_BENCH_PG_ADMIN_URL,
default postgresql://postgres@127.0.0.1:5432/postgres), migrates it, inserts the
agencies, then times three imports of the same file: merge into an empty table,
replace over the now-identical holdings (the monthly re-upload case), and merge
again (everything already held). The database is dropped at the end.
"""

from __future__ import annotations

import argparse
import os
import random
import resource
import secrets
import sys
import tempfile
import time
from pathlib import Path

import asyncpg

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import loop
from broker.holdings import (
    ImportReport,
    _ean13_check,
    _isbn10_check,
    _issn_check,
    import_csv,
)
from infra.database import create_database, drop_database, with_database
from infra.migrations import migrate

ADMIN_URL = os.environ.get("ILLHUB_BENCH_PG_ADMIN_URL",
                           "postgresql://postgres@127.0.0.1:5432/postgres")
_TITLES = ["中国图书馆学报", "Journal of Documentation", "The Lancet", "数据挖掘导论",
           "Nature", "图书情报工作", "Library Trends", "A History of Reading"]


def _issn(rng: random.Random) -> str:
    body = f"{rng.randrange(10**7):07d}"
    return f"{body[:4]}-{body[4:]}{_issn_check(body)}"


def _isbn(rng: random.Random) -> str:
    if rng.random() < 0.3:
        body = f"7{rng.randrange(10**8):08d}"  # Chinese ISBN-10, hyphenated
        return f"{body[0]}-{body[1:5]}-{body[5:]}-{_isbn10_check(body)}"
    body = f"978{rng.randrange(10**9):09d}"
    return body + _ean13_check(body)


def write_csv(path: Path, rows: int, symbols: list[str], seed: int = 18626) -> None:
    """Holdings shaped like a union catalogue export: mostly ISSN/ISBN, ~0.1 % bad lines."""
    rng = random.Random(seed)
    with path.open("w", encoding="utf-8", newline="") as fh:
        fh.write("\ufeffsymbol,id_type,id_value\n")
        for i in range(rows):
            symbol = symbols[rng.randrange(len(symbols))]
            r = rng.random()
            if r < 0.001:
                fh.write(f"{symbol},issn,1234-5678\n")  # wrong check digit
            elif r < 0.55:
                fh.write(f"{symbol},issn,{_issn(rng)}\n")
            elif r < 0.93:
                fh.write(f"{symbol},isbn,{_isbn(rng)}\n")
            elif r < 0.96:
                fh.write(f"{symbol},doi_prefix,10.{rng.randrange(1000, 40000)}\n")
            else:
                fh.write(f'{symbol},title_key,"{_TITLES[i % len(_TITLES)]} {i}|Author"\n')


TARGET_SECONDS = 30
PHASES = (("merge", "merge into empty table", False),
          ("replace", "replace, file unchanged", True),
          ("remerge", "merge, all already held", False))


def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


async def measure(rows: int = 1_000_000, agencies: int = 200,
                  ) -> dict[str, float | int | str]:
    """The holdings import benchmark in a scratch database: its figures (for `python -m bench`).

    `seconds` is the first import (merge into an empty table), the case the target is
    for; the other two imports are reported as seconds_replace and seconds_remerge.
    Progress goes to stderr.
    """
    url = with_database(ADMIN_URL, f"illhub_bench_{secrets.token_hex(4)}")
    await create_database(url)
    out: dict[str, float | int | str] = {"bench": "holdings_import", "rows": rows,
                                         "agencies": agencies}
    try:
        await migrate(url, report=lambda _m: None)
        symbols = [f"CALIS:{100000 + i}" for i in range(agencies)]
        conn = await asyncpg.connect(url)
        try:
            await conn.executemany(
                "INSERT INTO agency (symbol, name, roles, password_hash) "
                "VALUES ($1, $2, '{supplier}', 'x')",
                [(s, f"图书馆 {s}") for s in symbols],
            )
            with tempfile.TemporaryDirectory() as tmp:
                path = Path(tmp) / "holdings.csv"
                t0 = time.monotonic()
                write_csv(path, rows, symbols)
                out["file_bytes"] = path.stat().st_size
                say(f"generated {rows:,} lines ({path.stat().st_size / 1e6:.0f} MB) "
                    f"in {time.monotonic() - t0:.1f} s")
                for key, label, replace in PHASES:
                    report = await _timed_import(conn, path, replace, label)
                    for line in report.summary(limit=3):
                        say("  " + line)
                    if key == "merge":
                        out.update({"seconds": round(report.seconds, 2),
                                    "rows_per_second": round(report.read / report.seconds),
                                    "accepted": report.accepted, "rejected": report.rejected,
                                    "inserted": report.inserted})
                    else:
                        out[f"seconds_{key}"] = round(report.seconds, 2)
            out["holdings"] = await conn.fetchval("SELECT count(*) FROM holding")
            say(f"holding rows: {out['holdings']:,}")
        finally:
            await conn.close()
    finally:
        await drop_database(url)
    out["peak_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    out["target_seconds"] = TARGET_SECONDS
    out["result"] = "pass" if float(out["seconds"]) <= TARGET_SECONDS else "FAIL"
    return out


async def _timed_import(conn: asyncpg.Connection, path: Path, replace: bool,
                        label: str) -> ImportReport:
    say(f"-- {label}")
    started = time.monotonic()

    def progress(lines: int) -> None:
        elapsed = time.monotonic() - started
        say(f"  {lines:>9,} lines  {elapsed:5.1f} s  {lines / elapsed:>9,.0f} lines/s")

    report = await import_csv(conn, path, replace=replace, progress=progress)
    say(f"  => {report.read:,} lines in {report.seconds:.2f} s = "
        f"{report.read / report.seconds:,.0f} rows/s")
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--agencies", type=int, default=200)
    args = parser.parse_args()
    m = loop.run(measure(args.rows, args.agencies))   # like the hub and `python -m bench`
    print(f"holdings import of {m['rows']:,} rows: {m['seconds']:.2f} s "
          f"({m['rows_per_second']:,} rows/s; target <= {TARGET_SECONDS} s: {m['result']}); "
          f"replace {m['seconds_replace']:.2f} s, merge again {m['seconds_remerge']:.2f} s; "
          f"{m['holdings']:,} holdings; peak RSS {m['peak_mb']} MB")


if __name__ == "__main__":
    main()
