"""The demo's simulated network, read from docs/demo/: agencies, catalogue, holdings, files.

Everything here is deterministic for one --seed: the same agencies, the same
generated catalogue (ISSNs and ISBNs with valid check digits, DOIs) and the same
holdings. `Network.symbol()` maps the symbols written in the files to the ones
registered in this run: unchanged normally, prefixed with `--symbol-tag` when two
demos (or a test) share one RabbitMQ, whose user names are global.
"""

from __future__ import annotations

import csv
import random
import re
import tomllib
from collections.abc import Iterable
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from sim.identifiers import isbn13_with_check, issn_with_check

DEMO_DIR = Path(__file__).resolve().parent.parent / "docs" / "demo"
SPECIAL_KINDS = ("national", "public", "institute", "vendor")
SIZE_FACTOR = {"L": 1.0, "M": 0.75, "S": 0.5}
REQUEST_WEIGHT = {"L": 3.0, "M": 2.0, "S": 1.0}


class NetworkError(ValueError):
    """A problem in the demo's data files; the message names the file and the entry."""


@dataclass(frozen=True)
class Agency:
    symbol: str              # as registered in this run
    base: str                # as written in agencies.csv
    name: str
    roles: tuple[str, ...]
    province: str
    city: str
    kind: str
    size: str
    email: str
    finance_email: str

    @property
    def code(self) -> str:
        """The value part of the symbol, e.g. PKU, CN-SHL (used in request ids, addresses)."""
        return self.base.partition(":")[2]

    @property
    def domain(self) -> str:
        return self.email.rpartition("@")[2]

    @property
    def short_name(self) -> str:
        return self.name.removesuffix("图书馆") or self.name


@dataclass(frozen=True)
class Profile:
    """How one supplier behaves (simulation.toml); hidden from the hub."""

    stm_journals: float = 0.0
    hss_journals: float = 0.0
    books: float = 0.0
    doi_prefixes: float = 0.0
    accuracy: float = 1.0
    unlisted: float = 0.0
    fill: float = 1.0
    silent: float = 0.0
    cost_retry: float = 0.0
    answer_hours: tuple[float, float] = (1.0, 8.0)
    turnaround_hours: tuple[float, float] = (6.0, 48.0)


PROFILE_KEYS = tuple(f.name for f in fields(Profile))


@dataclass(frozen=True)
class Journal:
    title: str
    issn: str
    field: str                  # stm | hss
    doi_prefix: str
    chinese: bool


@dataclass(frozen=True)
class Book:
    title: str
    author: str
    publisher: str
    isbn: str                   # ISBN-13, 13 digits
    edition: int
    year: int


@dataclass
class Catalogue:
    journals: list[Journal]
    books: list[Book]
    doi_prefixes: list[str]
    nowhere: set[tuple[str, str]]          # items no library lists
    words: dict[str, list[str]]            # subjects and aspects for article titles


@dataclass
class Network:
    seed: int
    agencies: list[Agency]
    requesters: list[Agency]
    suppliers: list[Agency]
    profiles: dict[str, Profile]
    catalogue: Catalogue
    holdings: dict[str, set[tuple[str, str]]]
    requests: dict[str, Any]
    tag: str = ""
    texts: dict[str, str] = field(default_factory=dict)
    # Every symbol of agencies.csv as registered with this tag (also those not chosen
    # for this run: a previous run may have registered them).
    every_symbol: list[str] = field(default_factory=list)

    def symbol(self, base: str) -> str:
        return f"{self.tag}.{base}" if self.tag else base

    def by_symbol(self) -> dict[str, Agency]:
        return {a.symbol: a for a in self.agencies}


# --- reading the files ------------------------------------------------------------------

def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as f:
            return tomllib.load(f)
    except OSError as exc:
        raise NetworkError(f"cannot read {path}: {exc}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise NetworkError(f"{path}: {exc}") from exc


def read_agencies(path: Path) -> list[dict[str, str]]:
    try:
        with path.open(encoding="utf-8-sig", newline="") as f:
            rows = list(csv.DictReader(f))
    except OSError as exc:
        raise NetworkError(f"cannot read {path}: {exc}") from exc
    need = ("symbol", "name", "roles", "province", "city", "kind", "size", "email",
            "finance_email")
    for n, row in enumerate(rows, start=2):
        missing = [k for k in need if not (row.get(k) or "").strip()]
        if missing:
            raise NetworkError(f"{path.name} line {n}: missing {', '.join(missing)}")
        if row["size"] not in SIZE_FACTOR:
            raise NetworkError(f"{path.name} line {n}: size must be L, M or S")
    return rows


def _pair(value: Any, where: str) -> tuple[float, float]:
    if (not isinstance(value, list) or len(value) != 2
            or not all(isinstance(v, int | float) for v in value) or value[0] > value[1]
            or value[0] < 0):
        raise NetworkError(f"{where}: must be [low, high] with 0 <= low <= high")
    return float(value[0]), float(value[1])


def _profile(base: Profile, raw: dict[str, Any], where: str) -> Profile:
    changes: dict[str, Any] = {}
    for key, value in raw.items():
        if key not in PROFILE_KEYS:
            raise NetworkError(f"{where}: {key}: unknown key (known: {', '.join(PROFILE_KEYS)})")
        if key.endswith("_hours"):
            changes[key] = _pair(value, f"{where}.{key}")
        elif not isinstance(value, int | float) or not 0 <= value <= 1:
            raise NetworkError(f"{where}: {key}: must be a share between 0 and 1")
        else:
            changes[key] = float(value)
    return replace(base, **changes)


def _spread(rows: list[dict[str, str]], n: int) -> list[dict[str, str]]:
    """The first n rows taken round-robin over provinces, bigger libraries first."""
    by_province: dict[str, list[dict[str, str]]] = {}
    for row in sorted(rows, key=lambda r: "LMS".index(r["size"])):
        by_province.setdefault(row["province"], []).append(row)
    out: list[dict[str, str]] = []
    while len(out) < n and any(by_province.values()):
        for queue in by_province.values():
            if queue and len(out) < n:
                out.append(queue.pop(0))
    return out


def load_network(*, seed: int, requesters: int | None, suppliers: int | None,
                 tag: str = "", directory: Path = DEMO_DIR) -> Network:
    rows = read_agencies(directory / "agencies.csv")
    sim = _read_toml(directory / "simulation.toml")
    cat = _read_toml(directory / "catalogue.toml")

    can_request = [r for r in rows if "requester" in r["roles"]]
    can_supply = [r for r in rows if "supplier" in r["roles"]]
    n_req = len(can_request) if requesters is None else requesters
    n_sup = len(can_supply) if suppliers is None else suppliers
    if not 1 <= n_req <= len(can_request):
        raise NetworkError(f"--requesters must be 1..{len(can_request)} "
                           f"(agencies.csv has {len(can_request)} requesters)")
    if not 1 <= n_sup <= len(can_supply):
        raise NetworkError(f"--suppliers must be 1..{len(can_supply)} "
                           f"(agencies.csv has {len(can_supply)} suppliers)")
    # The national, public, institute and vendor suppliers first (they make the demo),
    # then universities in file order; requesters spread over the provinces.
    chosen_sup = ([r for r in can_supply if r["kind"] in SPECIAL_KINDS]
                  + [r for r in can_supply if r["kind"] not in SPECIAL_KINDS])[:n_sup]
    chosen_req = can_request if n_req == len(can_request) else _spread(can_request, n_req)
    sup_ids = {r["symbol"] for r in chosen_sup}
    req_ids = {r["symbol"] for r in chosen_req}

    def tagged(base: str) -> str:
        return f"{tag}.{base}" if tag else base

    agencies: list[Agency] = []
    for r in rows:
        roles = tuple(role for role, chosen in (("requester", req_ids), ("supplier", sup_ids))
                      if r["symbol"] in chosen)
        if roles:
            agencies.append(Agency(
                symbol=tagged(r["symbol"]), base=r["symbol"], name=r["name"], roles=roles,
                province=r["province"], city=r["city"], kind=r["kind"], size=r["size"],
                email=r["email"], finance_email=r["finance_email"]))

    kinds = sim.get("profile", {})
    per_supplier = sim.get("supplier", {})
    known = {r["symbol"] for r in rows}
    for base in per_supplier:
        if base not in known:
            raise NetworkError(f"simulation.toml: supplier.\"{base}\": not in agencies.csv")
    profiles: dict[str, Profile] = {}
    for a in agencies:
        if "supplier" not in a.roles:
            continue
        profile = _profile(Profile(), kinds.get(a.kind, {}), f"simulation.toml: profile.{a.kind}")
        if a.kind == "university":
            factor = SIZE_FACTOR[a.size]
            profile = replace(profile, stm_journals=profile.stm_journals * factor,
                              hss_journals=profile.hss_journals * factor,
                              books=profile.books * factor)
        profile = _profile(profile, per_supplier.get(a.base, {}),
                           f"simulation.toml: supplier.\"{a.base}\"")
        profiles[a.symbol] = profile

    rng = random.Random(seed)
    catalogue = build_catalogue(cat, sim.get("catalogue", {}), rows, rng)
    requesters_l = [a for a in agencies if "requester" in a.roles]
    suppliers_l = [a for a in agencies if "supplier" in a.roles]
    holdings = build_holdings(catalogue, suppliers_l, profiles, rng)
    return Network(seed=seed, agencies=agencies, requesters=requesters_l,
                   suppliers=suppliers_l, profiles=profiles, catalogue=catalogue,
                   holdings=holdings, requests=dict(sim.get("requests", {})), tag=tag,
                   every_symbol=[tagged(r["symbol"]) for r in rows],
                   texts={name: _adapt_text(directory / name, rows, sup_ids, tag)
                          for name in ("fees.toml", "policy.toml", "subsidy.toml")})


# --- the catalogue --------------------------------------------------------------------

def build_catalogue(cat: dict[str, Any], spec: dict[str, Any], agencies: list[dict[str, str]],
                    rng: random.Random) -> Catalogue:
    issns: set[str] = set()

    def new_issn(foreign: bool) -> str:
        while True:
            head = f"{rng.randint(0, 999):04d}" if foreign else f"{rng.randint(1000, 2099):04d}"
            issn = issn_with_check(head + f"{rng.randint(0, 999):03d}")
            if issn not in issns:
                issns.add(issn)
                return issn

    chinese_doi = str(cat.get("chinese_doi_prefix", "10.3969"))
    journals = [Journal(t, new_issn(False), "stm", chinese_doi, True)
                for t in cat.get("stm_journals", [])]
    journals += [Journal(t, new_issn(False), "hss", chinese_doi, True)
                 for t in cat.get("hss_journals", [])]
    for row in agencies:
        if row["kind"] == "university":
            school = row["name"].removesuffix("图书馆")
            journals.append(Journal(f"{school}学报（自然科学版）", new_issn(False), "stm",
                                    chinese_doi, True))
            journals.append(Journal(f"{school}学报（哲学社会科学版）", new_issn(False), "hss",
                                    chinese_doi, True))
    journals += [Journal(t, new_issn(True), "stm", prefix, False)
                 for t, prefix in cat.get("foreign_journals", [])]

    publishers: dict[str, str] = cat.get("publishers", {})
    used: set[str] = set()

    def new_isbn(prefix: str) -> str:
        if prefix not in publishers:
            raise NetworkError(f"catalogue.toml: publisher prefix {prefix!r} is not in "
                               "[publishers]")
        digits = "978" + prefix.replace("-", "")
        while True:
            body = digits + "".join(str(rng.randint(0, 9)) for _ in range(12 - len(digits)))
            if body not in used:
                used.add(body)
                return isbn13_with_check(body)

    low, high = spec.get("editions", [1, 3])
    books: list[Book] = []
    for title, author, prefix in cat.get("books", []):
        year = rng.randint(1980, 2005)
        for edition in range(1, rng.randint(int(low), int(high)) + 1):
            books.append(Book(title, author, publishers.get(prefix, prefix), new_isbn(prefix),
                              edition, min(2025, year + 6 * (edition - 1))))
    places, topics = cat.get("monograph_places", []), cat.get("monograph_topics", [])
    presses = cat.get("monograph_publishers", [])
    seen: set[str] = set()
    for _ in range(int(spec.get("monographs", 0))):
        if not (places and topics and presses):
            break
        title = f"{rng.choice(places)}{rng.choice(topics)}研究"
        if title in seen:
            continue
        seen.add(title)
        prefix = rng.choice(presses)
        books.append(Book(title, _person(rng), publishers.get(prefix, prefix), new_isbn(prefix),
                          1, rng.randint(1995, 2024)))

    # Which titles are popular has nothing to do with the order of the lists above.
    rng.shuffle(journals)
    rng.shuffle(books)
    share = float(spec.get("held_nowhere", 0.05))
    items = [("issn", j.issn) for j in journals] + [("isbn", b.isbn) for b in books]
    nowhere = {item for item in items if rng.random() < share}
    prefixes = sorted({j.doi_prefix for j in journals})
    words = {k: list(cat.get(k, [])) for k in (
        "stm_subjects", "stm_aspects", "hss_subjects", "hss_aspects", "english_subjects",
        "english_aspects")}
    return Catalogue(journals, books, prefixes, nowhere, words)


SURNAMES = [("王", "wang"), ("李", "li"), ("张", "zhang"), ("刘", "liu"), ("陈", "chen"),
            ("杨", "yang"), ("黄", "huang"), ("赵", "zhao"), ("吴", "wu"), ("周", "zhou"),
            ("徐", "xu"), ("孙", "sun"), ("马", "ma"), ("朱", "zhu"), ("胡", "hu"),
            ("郭", "guo"), ("何", "he"), ("高", "gao"), ("林", "lin"), ("罗", "luo"),
            ("欧阳", "ouyang"), ("司马", "sima")]
GIVEN = [("伟", "wei"), ("芳", "fang"), ("娜", "na"), ("敏", "min"), ("静", "jing"),
         ("丽", "li"), ("强", "qiang"), ("磊", "lei"), ("军", "jun"), ("洋", "yang"),
         ("勇", "yong"), ("艳", "yan"), ("杰", "jie"), ("娟", "juan"), ("涛", "tao"),
         ("明", "ming"), ("超", "chao"), ("秀英", "xiuying"), ("晓明", "xiaoming"),
         ("子涵", "zihan"), ("雨桐", "yutong"), ("浩然", "haoran"), ("思远", "siyuan"),
         ("欣怡", "xinyi"), ("宇轩", "yuxuan"), ("梓萱", "zixuan"), ("建国", "jianguo"),
         ("海燕", "haiyan"), ("文博", "wenbo"), ("嘉怡", "jiayi")]


def person(rng: random.Random) -> tuple[str, str, str, str]:
    """(surname, given name, surname pinyin, given-name pinyin)."""
    s, sp = rng.choice(SURNAMES)
    g, gp = rng.choice(GIVEN)
    return s, g, sp, gp


def _person(rng: random.Random) -> str:
    s, g, _, _ = person(rng)
    return s + g


# --- holdings -------------------------------------------------------------------------

def build_holdings(catalogue: Catalogue, suppliers: list[Agency], profiles: dict[str, Profile],
                   rng: random.Random) -> dict[str, set[tuple[str, str]]]:
    """What each supplier lists in the union catalogue (not what it really has)."""
    out: dict[str, set[tuple[str, str]]] = {}
    for a in suppliers:
        p = profiles[a.symbol]
        listed: set[tuple[str, str]] = set()
        for j in catalogue.journals:
            share = p.stm_journals if j.field == "stm" else p.hss_journals
            if rng.random() < share:
                listed.add(("issn", j.issn))
        for b in catalogue.books:
            if rng.random() < p.books:
                listed.add(("isbn", b.isbn))
        for prefix in catalogue.doi_prefixes:
            if rng.random() < p.doi_prefixes:
                listed.add(("doi_prefix", prefix))
        out[a.symbol] = listed - catalogue.nowhere
    return out


# --- the TOML files: symbols of this run, suppliers of this run --------------------------

_FEE_BLOCK = re.compile(r"^\[\[fee\]\]\s*$", re.MULTILINE)
_FEE_SUPPLIER = re.compile(r'^supplier\s*=\s*"([^"]+)"', re.MULTILINE)


def _adapt_text(path: Path, rows: Iterable[dict[str, str]], suppliers: set[str],
                tag: str) -> str:
    try:
        text = path.read_text("utf-8")
    except OSError as exc:
        raise NetworkError(f"cannot read {path}: {exc}") from exc
    if path.name == "fees.toml":
        # Fee entries of suppliers not in this run would name unregistered agencies.
        parts = _FEE_BLOCK.split(text)
        kept = [parts[0]]
        for block in parts[1:]:
            m = _FEE_SUPPLIER.search(block)
            if m is None or m.group(1) in suppliers:
                kept.append(block)
        text = "[[fee]]".join(kept)
    if tag:
        for row in rows:
            text = text.replace(f'"{row["symbol"]}"', f'"{tag}.{row["symbol"]}"')
    return text
