"""What the demo's readers ask for: patrons of each library and ISO 18626 requests.

A request is for an item of the generated catalogue (a popular title more often than
others, Zipf-like, preferably one the library does not hold itself): an article by ISSN, a book
by ISBN-13 or, now and then, the ISBN-10 printed in older editions, or a pay-per-view
article by DOI. `Demand.new` also returns the item as the holdings name it, which
the simulated world remembers (a supplier's shelves are decided per item).
"""

from __future__ import annotations

import bisect
import functools
import itertools
import random
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from sim.chance import Item, Odds
from sim.identifiers import hyphenate_isbn, isbn10_of
from sim.messages import agency_id, now_iso
from sim.network import Agency, Book, Journal, Network, person

KIND_MIX = (("DocumentDelivery", 0.57), ("BookLoan", 0.3), ("PayPerView", 0.13))
# Longest first, so 7-5325 wins over a shorter prefix.
_PUBLISHER_PREFIXES = sorted(["7-02", "7-03", "7-04", "7-100", "7-101", "7-108", "7-111",
                              "7-117", "7-118", "7-121", "7-300", "7-301", "7-302", "7-307",
                              "7-309", "7-5097", "7-5197", "7-5325"], key=len, reverse=True)


@dataclass
class Patron:
    patron_id: str
    surname: str
    given: str
    email: str
    kind: str

    def info(self) -> dict[str, Any]:
        return {"patronId": self.patron_id, "surname": self.surname, "givenName": self.given,
                "patronType": self.kind, "address": [{"electronicAddress": {
                    "electronicAddressType": "email", "electronicAddressData": self.email}}]}


@dataclass
class Wanted:
    """One new request: its body, the reader's cost limit, and the item it is for."""

    request_id: str
    kind: str
    body: dict[str, Any]
    max_cost: Decimal
    item: Item


class Demand:
    """One requesting library's readers and what they ask for."""

    def __init__(self, agency: Agency, network: Network, odds: Odds) -> None:
        self.agency = agency
        self.network = network
        self.odds = odds
        self.patrons: list[Patron] = []
        self.seq = 0

    def new(self) -> Wanted:
        self.seq += 1
        request_id = f"{self.agency.code}-{self.seq:05d}"
        mix = {k: self.odds.share(k, d) for k, d in KIND_MIX}
        kind = self.odds.rng.choices(list(mix), list(mix.values()))[0]
        header: dict[str, Any] = {"requestingAgencyId": agency_id(self.agency.symbol),
                                  "timestamp": now_iso(), "requestingAgencyRequestId": request_id}
        service: dict[str, Any] = {"requestType": "New", "requestSubType": ["PatronRequest"]}
        if kind == "BookLoan":
            request, max_cost, item = self._loan(header, service)
        elif kind == "PayPerView":
            request, max_cost, item = self._pay_per_view(service)
        else:
            request, max_cost, item = self._copy(service)
        request.update(header=header, serviceInfo=service, patronInfo=self.patron().info(),
                       billingInfo={"paymentMethod": "Account", "maximumCosts": {
                           "currencyCode": "CNY", "monetaryValue": max_cost}})
        return Wanted(request_id, kind, {"request": request}, Decimal(max_cost), item)

    def _loan(self, header: dict[str, Any], service: dict[str, Any]
              ) -> tuple[dict[str, Any], str, Item]:
        a, rng = self.agency, self.odds.rng
        book = self._pick(self.network.catalogue.books, lambda b: ("isbn", b.isbn))
        bib, pub = _book_info(book, rng, self.odds.share("isbn10", 0.2))
        service.update(serviceType="Loan", serviceLevel="Normal")
        max_cost = self.odds.pick("max_cost_loan", ["40.00"])
        nlc = self.network.symbol("NLC:CN")
        if (any(s.symbol == nlc for s in self.network.suppliers)
                and self.odds.happens("named_supplier", 0.05)):
            # A reader who wants 国家图书馆's copy, at less than its loan fee.
            header["supplyingAgencyId"] = agency_id(nlc)
            max_cost = "30.00"
        return {"bibliographicInfo": bib, "publicationInfo": pub, "requestedDeliveryInfo": [
            {"address": {"physicalAddress": {
                "line1": f"{a.name} 馆际互借处", "locality": a.city, "region": a.province,
                "country": "CN"}}}]}, max_cost, ("isbn", book.isbn)

    def _pay_per_view(self, service: dict[str, Any]) -> tuple[dict[str, Any], str, Item]:
        journal = self.odds.rng.choice(self.network.catalogue.journals)
        bib, pub = _ppv_info(journal, self.odds.rng, self.network.catalogue.words)
        service.update(serviceType="Copy", serviceLevel="Rush")
        return ({"bibliographicInfo": bib, "publicationInfo": pub,
                 "hubExtensions": {"serviceKind": "PayPerView"}},
                self.odds.pick("max_cost_ppv", ["20.00"]), ("doi_prefix", journal.doi_prefix))

    def _copy(self, service: dict[str, Any]) -> tuple[dict[str, Any], str, Item]:
        journal = self._pick(self.network.catalogue.journals, lambda j: ("issn", j.issn))
        bib, pub = _article_info(journal, self.odds.rng, self.network.catalogue.words)
        level = "Rush" if self.odds.happens("rush", 0.15) else "Normal"
        service.update(serviceType="Copy", serviceLevel=level)
        return ({"bibliographicInfo": bib, "publicationInfo": pub},
                self.odds.pick("max_cost_copy", ["30.00"]), ("issn", journal.issn))

    def _pick(self, items: list[Any], key: Any) -> Any:
        """A popular title, preferably one this library does not hold itself."""
        held = self.network.holdings.get(self.agency.symbol, set())
        for _ in range(6):
            item = _popular(self.odds.rng, items, self.odds.share("popularity", 1.0))
            if key(item) not in held:
                break
        return item

    def patron(self) -> Patron:
        pool, rng = self.patrons, self.odds.rng
        if len(pool) < 40 and (not pool or rng.random() < 0.5):
            s, g, sp, gp = person(rng)
            year = rng.randint(2018, 2025)
            kind = rng.choices(["Undergraduate", "Postgraduate", "Faculty"], [3, 4, 2])[0]
            n = len(pool) + 1
            pool.append(Patron(f"{self.agency.code}{year}{n:04d}", s, g,
                               f"{sp}{gp}{n:02d}@{self.agency.domain}", kind))
            return pool[-1]
        return rng.choice(pool)


def _popular(rng: random.Random, items: list[Any], exponent: float) -> Any:
    """Some titles are asked for much more often than others: the k-th most popular in
    proportion to 1 / k**exponent (Zipf's law, as ILL and document-delivery demand is
    concentrated on core journals and textbooks), so a popular title is asked for again
    within weeks, by other readers and other libraries."""
    cumulative = _zipf(len(items), exponent)
    return items[bisect.bisect_right(cumulative, rng.random() * cumulative[-1])]


@functools.cache
def _zipf(n: int, exponent: float) -> tuple[float, ...]:
    return tuple(itertools.accumulate(1 / k ** exponent for k in range(1, n + 1)))


def _name(rng: random.Random) -> str:
    s, g, _, _ = person(rng)
    return s + g


def _article_info(j: Journal, rng: random.Random,
                  words: dict[str, list[str]]) -> tuple[dict[str, Any], dict[str, Any]]:
    year = rng.randint(2008, 2025)
    start = rng.randint(1, 180)
    end = start + rng.randint(3, 17)
    if j.chinese:
        subjects, aspects = (("stm_subjects", "stm_aspects") if j.field == "stm"
                             else ("hss_subjects", "hss_aspects"))
        title = rng.choice(words[subjects]) + rng.choice(words[aspects])
        authors = "，".join(_name(rng) for _ in range(rng.randint(1, 3)))
    else:
        title = f"{rng.choice(words['english_aspects'])} {rng.choice(words['english_subjects'])}"
        authors = "; ".join(f"{p[3].capitalize()} {p[2].capitalize()}"
                            for p in (person(rng) for _ in range(rng.randint(1, 4))))
    bib = {"title": j.title, "titleOfComponent": title, "authorOfComponent": authors,
           "volume": str(year - 1980 if j.chinese else year - 1950),
           "issue": str(rng.randint(1, 12)), "pagesRequested": f"{start}-{end}",
           "bibliographicItemId": [{"bibliographicItemIdentifier": j.issn,
                                    "bibliographicItemIdentifierCode": "ISSN"}]}
    return bib, {"publicationDate": str(year), "publicationType": "Journal"}


def _ppv_info(j: Journal, rng: random.Random,
              words: dict[str, list[str]]) -> tuple[dict[str, Any], dict[str, Any]]:
    bib, pub = _article_info(j, rng, words)
    year = pub["publicationDate"]
    if j.chinese:
        doi = f"{j.doi_prefix}/j.issn.{j.issn}.{year}.{int(bib['issue']):02d}." \
              f"{rng.randint(1, 40):03d}"
    else:
        doi = f"{j.doi_prefix}/s{rng.randint(10000, 99999)}-{year}-{rng.randint(1, 99999):05d}"
    # By DOI only: pay-per-view is bought from the vendor that sells the registrant.
    bib["bibliographicItemId"] = [{"bibliographicItemIdentifier": doi,
                                   "bibliographicItemIdentifierCode": "DOI"}]
    return bib, pub


def _book_info(b: Book, rng: random.Random,
               isbn10_share: float) -> tuple[dict[str, Any], dict[str, Any]]:
    prefix = next((p for p in _PUBLISHER_PREFIXES if b.isbn.startswith("978" + p.replace(
        "-", ""))), None)
    if rng.random() < isbn10_share and (ten := isbn10_of(b.isbn)) and prefix:
        group, pub = prefix.split("-")
        cut = len(group) + len(pub)
        isbn = f"{ten[:len(group)]}-{ten[len(group):cut]}-{ten[cut:9]}-{ten[9]}"
    elif prefix:
        isbn = hyphenate_isbn(b.isbn, prefix)
    else:
        isbn = b.isbn
    bib: dict[str, Any] = {"title": b.title, "author": b.author,
                           "bibliographicItemId": [{"bibliographicItemIdentifier": isbn,
                                                    "bibliographicItemIdentifierCode": "ISBN"}]}
    if b.edition > 1:
        bib["edition"] = f"第{b.edition}版"
    return bib, {"publisher": b.publisher, "publicationDate": str(b.year),
                 "publicationType": "Book"}
