"""The routing lab's world: libraries, suppliers, items and a year of demand, from a seed.

What the hub may see of it: each supplier's symbol, location, fee and the items it
lists (the union catalogue). What it never sees (the lab's hidden truth): which items
a supplier really holds, how often it supplies, how fast, when it is closed, how much
it can handle at once, and what its own catalogue answers. The calibration against the
CALIS report is in the package docstring.
"""

from __future__ import annotations

import bisect
import datetime
import math
import random
from dataclasses import dataclass, field
from itertools import accumulate

# The CALIS year of the report's figures: 2011-06-01 (the centre's start) to 2012-05-31.
START = datetime.date(2011, 6, 1)
DAYS = 366

COPY, LOAN = "DocumentDelivery", "BookLoan"
ISSN, ISBN = "issn", "isbn"

# 31 provinces: cities (the capital first) and a weight for their share of member
# universities (roughly the number of universities there).
PROVINCES: tuple[tuple[str, tuple[str, ...], float], ...] = (
    ("北京", ("北京",), 9), ("上海", ("上海",), 6), ("天津", ("天津",), 3),
    ("重庆", ("重庆",), 3), ("江苏", ("南京", "苏州", "徐州"), 8),
    ("浙江", ("杭州", "宁波", "温州"), 6), ("广东", ("广州", "深圳", "汕头"), 7),
    ("湖北", ("武汉", "宜昌"), 6), ("山东", ("济南", "青岛", "烟台"), 7),
    ("四川", ("成都", "绵阳"), 5), ("陕西", ("西安", "咸阳"), 5), ("湖南", ("长沙", "湘潭"), 5),
    ("河南", ("郑州", "开封", "洛阳"), 6), ("河北", ("石家庄", "保定"), 5),
    ("辽宁", ("沈阳", "大连"), 5), ("吉林", ("长春",), 3), ("黑龙江", ("哈尔滨",), 4),
    ("安徽", ("合肥", "芜湖"), 5), ("福建", ("福州", "厦门"), 4), ("江西", ("南昌",), 4),
    ("山西", ("太原",), 3), ("内蒙古", ("呼和浩特",), 2), ("广西", ("南宁", "桂林"), 3),
    ("海南", ("海口",), 1), ("贵州", ("贵阳",), 2), ("云南", ("昆明",), 3),
    ("西藏", ("拉萨",), 0.5), ("甘肃", ("兰州",), 2), ("青海", ("西宁",), 0.5),
    ("宁夏", ("银川",), 0.5), ("新疆", ("乌鲁木齐",), 1.5),
)

# Requests by month from June (the CALIS centre grew all year; vacations are quiet).
MONTH_WEIGHT = {6: 0.8, 7: 0.5, 8: 0.4, 9: 0.9, 10: 1.0, 11: 1.2, 12: 1.2, 1: 0.8,
                2: 0.5, 3: 1.2, 4: 1.3, 5: 1.4}
WEEKDAY_WEIGHT = (1.0, 1.0, 1.0, 1.0, 0.9, 0.35, 0.3)

VENDOR = "VENDOR:CNKI"
# Holdings: share of items held by no library (rising to base + tail for the rarest),
# holders per item (1 + Poisson(tail + popular / (1 + 40 x rank share))), and wrong
# listings per true listing.
NOWHERE_BASE, NOWHERE_TAIL = 0.09, 0.2
HOLDERS_TAIL, HOLDERS_POPULAR = 0.5, 5.0
WRONG_LISTINGS = 0.2
# Share of service libraries whose ILL office is weak: slower, less reliable, smaller.
WEAK_OFFICES = 0.3


@dataclass(frozen=True)
class Library:
    symbol: str
    province: str
    city: str
    size: float          # 0..1, the biggest member 1
    request_weight: float


@dataclass(frozen=True)
class Supplier:
    """One supplier and its hidden behaviour."""

    index: int
    symbol: str
    kind: str                     # university | national | public | centre | vendor
    province: str
    city: str
    journals: float               # weight for holding journals (relative breadth)
    books: float                  # weight for holding books
    accuracy: float               # share of its listings it really holds
    unlisted: float               # share of its real holdings it does not list
    reliability: float            # supplies, given the item is on the shelf and it is open
    silent: float                 # forwarded requests it never answers
    answer_hours: float           # median hours to its first answer
    turnaround_hours: float       # median hours to a filled request (copy); loans x3
    capacity: int                 # open requests it handles before it slows down
    closed: tuple[tuple[int, int], ...]   # day ranges [from, to) it does not answer
    catalogue: float | None       # its catalogue tells the truth this often; None: none
    fee_copy: int | None          # fen
    fee_loan: int | None
    listed_in_union: bool = True  # False: the vendor, known only to policy rules

    def fee(self, kind: str) -> int | None:
        return self.fee_copy if kind == COPY else self.fee_loan

    def closed_on(self, day: int) -> bool:
        return any(a <= day < b for a, b in self.closed)


@dataclass(frozen=True)
class Item:
    index: int
    id_type: str                  # issn (a journal: copies) | isbn (a book: loans)
    holders: frozenset[int]       # suppliers that really hold it
    listed: frozenset[int]        # suppliers whose union-catalogue holdings list it


@dataclass(frozen=True)
class Request:
    index: int
    hours: float                  # arrival, hours since START
    requester: int                # index into World.libraries
    item: int
    kind: str
    max_cost: int | None          # fen; None: no limit
    rush: bool
    patience_hours: float         # the reader gives up after this long unfilled


@dataclass
class World:
    seed: int
    libraries: list[Library]
    suppliers: list[Supplier]
    n_journals: int
    n_books: int
    requests: list[Request]
    vendor_index: int | None = None   # the pay-per-view vendor: outside the union catalogue
    _items: dict[int, Item] = field(default_factory=dict)
    _tables: _Tables | None = None

    @property
    def tables(self) -> _Tables:
        if self._tables is None:
            self._tables = _tables(self)
        return self._tables

    def item(self, index: int) -> Item:
        """An item's real and listed holders, made on first use (same seed, same item)."""
        got = self._items.get(index)
        if got is None:
            got = self._items[index] = _make_item(self, index)
        return got

    def by_symbol(self) -> dict[str, int]:
        return {s.symbol: s.index for s in self.suppliers}

    @property
    def vendor(self) -> Supplier | None:
        return None if self.vendor_index is None else self.suppliers[self.vendor_index]


def unit(*keys: int) -> float:
    """A uniform 0..1 from integer keys: the same draw for the same request and supplier
    in every configuration, so configurations differ only by routing. (A tuple of ints
    hashes the same in every process: PYTHONHASHSEED only salts str and bytes.)"""
    x = (hash(keys) * 0x9E3779B97F4A7C15) & 0xFFFFFFFFFFFFFFFF
    x ^= x >> 29
    x = (x * 0xBF58476D1CE4E5B9) & 0xFFFFFFFFFFFFFFFF
    return (x >> 11) / 9007199254740992.0


def lognormal(median: float, u: float, sigma: float = 0.6) -> float:
    """A log-normal draw by its median, from one uniform (clamped away from 0 and 1)."""
    u = min(max(u, 1e-6), 1 - 1e-6)
    return median * math.exp(sigma * _probit(u))


def _probit(p: float) -> float:
    # Acklam's rational approximation of the normal quantile (|error| < 1.2e-9).
    a = (-3.969683028665376e+01, 2.209460984245205e+02, -2.759285104469687e+02,
         1.383577518672690e+02, -3.066479806614716e+01, 2.506628277459239e+00)
    b = (-5.447609879822406e+01, 1.615858368580409e+02, -1.556989798598866e+02,
         6.680131188771972e+01, -1.328068155288449e+01)
    c = (-7.784894002430293e-03, -3.223964580411365e-01, -2.400758277161838e+00,
         -2.549671064564058e+00, 4.374587759200069e+00, 2.938163982698783e+00)
    d = (7.784695709041462e-03, 3.224671290700398e-01, 2.445134137142996e+00,
         3.754408661907416e+00)
    if p < 0.02425:
        q = math.sqrt(-2 * math.log(p))
        return (((((c[0] * q + c[1]) * q + c[2]) * q + c[3]) * q + c[4]) * q + c[5]) / \
            ((((d[0] * q + d[1]) * q + d[2]) * q + d[3]) * q + 1)
    if p > 1 - 0.02425:
        return -_probit(1 - p)
    q = p - 0.5
    r = q * q
    return (((((a[0] * r + a[1]) * r + a[2]) * r + a[3]) * r + a[4]) * r + a[5]) * q / \
        (((((b[0] * r + b[1]) * r + b[2]) * r + b[3]) * r + b[4]) * r + 1)


# --- building it ------------------------------------------------------------------------

def build_world(*, seed: int = 2012, requests: int = 100_929, libraries: int = 900,
                suppliers: int = 281) -> World:
    """The default is the CALIS centre's first year: 100,929 requests from 900-odd
    members, 281 of them supplying, plus the national library, Shanghai Library, two
    national centres and a pay-per-view vendor."""
    if requests < 1 or libraries < 2 or not 1 <= suppliers <= libraries:
        raise ValueError("need requests >= 1, libraries >= 2 and 1 <= suppliers <= libraries")
    rng = random.Random(seed)
    libs = _libraries(rng, libraries)
    sups = _suppliers(rng, libs, suppliers)
    # The catalogue grows with the demand, so a small world keeps its repeat requests.
    n_journals = max(200, round(requests * 0.09))
    n_books = max(200, round(requests * 0.22))
    world = World(seed=seed, libraries=libs, suppliers=sups, n_journals=n_journals,
                  n_books=n_books, requests=[], vendor_index=len(sups) - 1)
    world.requests = demand(rng, world, requests)
    return world


def _libraries(rng: random.Random, n: int) -> list[Library]:
    names = [p for p, _, _ in PROVINCES]
    weights = [w for _, _, w in PROVINCES]
    raw = sorted((rng.paretovariate(1.1) for _ in range(n)), reverse=True)
    top = raw[0]
    out = []
    for i, r in enumerate(raw):
        # The biggest members sit in the big university cities; the rest anywhere.
        if i < n // 20:
            province = rng.choices(names[:12], weights[:12])[0]
        else:
            province = rng.choices(names, weights)[0]
        cities = next(c for p, c, _ in PROVINCES if p == province)
        city = cities[0] if rng.random() < 0.7 or len(cities) == 1 else rng.choice(cities[1:])
        size = min(1.0, r / top * 4)   # a few giants; most members small
        out.append(Library(f"CALIS:L{i + 1:04d}", province, city, size,
                           request_weight=size ** 1.1))
    return out


def _closures(rng: random.Random, university: bool) -> tuple[tuple[int, int], ...]:
    """Days a supplier's ILL office does not answer: vacations it never announces."""
    def day(month: int, dom: int) -> int:
        year = 2011 if month >= 6 else 2012
        return (datetime.date(year, month, dom) - START).days

    out = []
    if not university:
        return ((day(1, 22), day(1, 25)),)     # Spring Festival, three days
    if rng.random() < 0.7:                      # winter vacation around 2012-01-23
        a = day(1, 8) + rng.randint(0, 14)
        out.append((a, a + rng.randint(14, 28)))
    if rng.random() < 0.5:                      # summer vacation
        a = day(7, 5) + rng.randint(0, 25)
        out.append((a, a + rng.randint(14, 35)))
    if rng.random() < 0.6:                      # National Day week
        out.append((day(10, 1), day(10, 8)))
    return tuple(out)


def _suppliers(rng: random.Random, libs: list[Library], n: int) -> list[Supplier]:
    # Service libraries are mostly the big members, with some small ones (the report
    # names 温州医学院 and 绍兴文理学院).
    pool = list(range(len(libs)))
    chosen: list[int] = []
    weights = [libs[i].size ** 0.6 + 0.02 for i in pool]
    while len(chosen) < n:
        i = rng.choices(pool, weights)[0]
        k = pool.index(i)
        chosen.append(pool.pop(k))
        weights.pop(k)
    out: list[Supplier] = []
    for i in sorted(chosen):
        lib = libs[i]
        # Uneven service (§4.3): a minority of weak offices, slow or unreliable.
        weak = rng.random() < WEAK_OFFICES
        has_catalogue = rng.random() < 0.85
        out.append(Supplier(
            index=len(out), symbol=lib.symbol, kind="university", province=lib.province,
            city=lib.city, journals=0.05 + lib.size, books=0.05 + lib.size,
            # Holdings disclosure "not accurate enough" (§3.4, §4.1): most catalogues
            # are decent, some poor.
            accuracy=rng.uniform(0.55, 0.8) if rng.random() < 0.25 else rng.uniform(0.85, 0.98),
            unlisted=rng.uniform(0.03, 0.15),
            reliability=rng.uniform(0.55, 0.8) if weak else rng.uniform(0.88, 0.99),
            silent=rng.uniform(0.06, 0.15) if weak else rng.uniform(0.005, 0.03),
            answer_hours=rng.uniform(6, 30) if weak else rng.uniform(1, 10),
            turnaround_hours=rng.uniform(60, 140) if weak else rng.uniform(14, 60),
            capacity=max(4, round(8 + 60 * lib.size * (0.5 if weak else 1.0))),
            closed=_closures(rng, True),
            catalogue=rng.uniform(0.85, 0.97) if has_catalogue else None,
            fee_copy=100 * rng.choice((8, 10, 10, 12, 15, 20)),
            fee_loan=100 * rng.choice((25, 30, 35, 40, 50)) if rng.random() < 0.6 else None))

    def special(symbol: str, kind: str, province: str, journals: float, books: float,
                turnaround: float, capacity: int, fee_copy: int | None,
                fee_loan: int | None, listed: bool = True) -> Supplier:
        return Supplier(
            index=len(out), symbol=symbol, kind=kind, province=province, city=province,
            journals=journals, books=books, accuracy=0.96, unlisted=0.1 if listed else 1.0,
            reliability=0.97 if listed else 0.995, silent=0.01 if listed else 0.0,
            answer_hours=4.0 if listed else 0.1, turnaround_hours=turnaround,
            capacity=capacity, closed=_closures(rng, False) if listed else (),
            catalogue=0.97 if listed else None, fee_copy=fee_copy, fee_loan=fee_loan,
            listed_in_union=listed)

    # Absolute holding shares for these (see _make_item), not relative weights.
    out.append(special("NLC:CN", "national", "北京", 0.45, 0.75, 60, 120, 1500, 4000))
    out.append(special("ISIL:CN-SHL", "public", "上海", 0.30, 0.45, 50, 80, 1200, 3000))
    out.append(special("NSTL:CN", "centre", "北京", 0.50, 0.0, 20, 200, 1200, None))
    out.append(special("CASHL:CN", "centre", "北京", 0.20, 0.0, 30, 60, 1000, None))
    out.append(special(VENDOR, "vendor", "北京", 0.70, 0.0, 0.5, 10_000, 2500, None,
                       listed=False))
    return out


def _zipf_cumulative(n: int, s: float = 0.95) -> list[float]:
    return list(accumulate(1.0 / (r + 1) ** s for r in range(n)))


def demand(rng: random.Random, world: World, n: int) -> list[Request]:
    """`n` requests over the year: by month and weekday, by requester weight, Zipf items."""
    day_weights = []
    for d in range(DAYS):
        date = START + datetime.timedelta(days=d)
        day_weights.append(MONTH_WEIGHT[date.month] * WEEKDAY_WEIGHT[date.weekday()])
    day_cum = list(accumulate(day_weights))
    req_cum = list(accumulate(lib.request_weight for lib in world.libraries))
    journal_cum = _zipf_cumulative(world.n_journals)
    book_cum = _zipf_cumulative(world.n_books)
    out: list[Request] = []
    for _ in range(n):
        day = bisect.bisect(day_cum, rng.random() * day_cum[-1])
        hours = day * 24 + rng.uniform(8, 22)
        requester = bisect.bisect(req_cum, rng.random() * req_cum[-1])
        # Document delivery (copies of journal articles) is most of CALIS's traffic;
        # national book loans were new (Shanghai Library, §3.3).
        if rng.random() < 0.8:
            kind = COPY
            item = bisect.bisect(journal_cum, rng.random() * journal_cum[-1])
            max_cost = rng.choice((1500, 2000, 3000, 3000, 5000, None))
        else:
            kind = LOAN
            item = world.n_journals + bisect.bisect(book_cum, rng.random() * book_cum[-1])
            max_cost = rng.choice((4000, 6000, 6000, None))
        rush = rng.random() < 0.15
        patience = rng.uniform(3, 8) * 24 if rush else rng.uniform(7, 21) * 24
        out.append(Request(len(out), hours, requester, item, kind, max_cost, rush, patience))
    out.sort(key=lambda r: r.hours)
    return [Request(i, r.hours, r.requester, r.item, r.kind, r.max_cost, r.rush,
                    r.patience_hours) for i, r in enumerate(out)]


@dataclass(frozen=True)
class _Tables:
    """Per-world lists _make_item draws from (made once, kept on the world)."""

    univ: list[int]
    journal_cum: list[float]
    book_cum: list[float]
    others: list[int]
    # Who lists an item it does not hold: weight (1 - accuracy) / accuracy x breadth.
    wrong_journal_cum: list[float]
    wrong_book_cum: list[float]
    listers: list[int]


def _tables(world: World) -> _Tables:
    sups = world.suppliers
    univ = [s.index for s in sups if s.kind == "university"]
    listers = [s.index for s in sups if s.listed_in_union]

    def wrong(s: Supplier, breadth: float) -> float:
        return (1 - s.accuracy) / s.accuracy * (breadth if s.kind == "university" else 0.3)

    return _Tables(
        univ=univ, journal_cum=list(accumulate(sups[i].journals for i in univ)),
        book_cum=list(accumulate(sups[i].books for i in univ)),
        others=[s.index for s in sups if s.kind not in ("university", "vendor")],
        wrong_journal_cum=list(accumulate(wrong(sups[i], sups[i].journals) for i in listers)),
        wrong_book_cum=list(accumulate(wrong(sups[i], sups[i].books) for i in listers)),
        listers=listers)


def _make_item(world: World, index: int) -> Item:
    t = world.tables
    rng = random.Random(world.seed * 1_000_003 + index)
    journal = index < world.n_journals
    rank = index if journal else index - world.n_journals
    share = rank / (world.n_journals if journal else world.n_books)
    holders: set[int] = set()
    # Rare items are more often held nowhere in the network (only, for a Chinese
    # journal, perhaps by the vendor's full-text database).
    if rng.random() >= NOWHERE_BASE + NOWHERE_TAIL * share:
        # Popular titles are held widely, the long tail by a few.
        count = 1 + _poisson(rng, HOLDERS_TAIL + HOLDERS_POPULAR / (1.0 + 40 * share))
        picks = rng.choices(t.univ, cum_weights=t.journal_cum if journal else t.book_cum,
                            k=count * 2)
        for h in picks:
            if len(holders) >= count:
                break
            holders.add(h)
        for i in t.others:
            s = world.suppliers[i]
            if rng.random() < (s.journals if journal else s.books):
                holders.add(i)
    vendor = world.vendor
    if vendor is not None and journal and rng.random() < vendor.journals:
        holders.add(vendor.index)
    listed = {h for h in holders if world.suppliers[h].listed_in_union
              and rng.random() >= world.suppliers[h].unlisted}
    # Listings of items it does not hold (stale, withdrawn, mis-catalogued): about as
    # many per item as the listers' accuracies imply.
    for _ in range(_poisson(rng, WRONG_LISTINGS * max(1, len(listed)))):
        h = t.listers[bisect.bisect(t.wrong_journal_cum if journal else t.wrong_book_cum,
                                    rng.random() * (t.wrong_journal_cum if journal
                                                    else t.wrong_book_cum)[-1])]
        if h not in holders:
            listed.add(h)
    return Item(index, ISSN if journal else ISBN, frozenset(holders), frozenset(listed))


def _poisson(rng: random.Random, lam: float) -> int:
    limit, k, p = math.exp(-lam), 0, rng.random()
    while p > limit:
        k += 1
        p *= rng.random()
    return k
