"""What a supplier's catalogue is: where its SRU server answers, which record schema it
serves, where availability is in the record, and which CQL index finds each identifier
type. One row of supplier_catalogue (migration 0027), as data; checked here once for the
CLI and the table's CHECKs alike."""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any
from urllib.parse import urlsplit

import asyncpg

log = logging.getLogger(__name__)

SRU_VERSIONS = ("1.1", "1.2", "2.0")
# The identifier types a catalogue is searched by (the hub's item identifiers).
ID_TYPES = ("isbn", "issn")
DEFAULT_INDEXES: Mapping[str, str] = {"isbn": "bath.isbn", "issn": "bath.issn"}
_ITEM_FIELD = re.compile(r"^([0-9]{3})\$([a-z0-9])$")
# A CQL index name: an optional context set prefix and a name (bath.isbn, dc.identifier).
_INDEX = re.compile(r"^[A-Za-z][A-Za-z0-9_-]*(\.[A-Za-z][A-Za-z0-9_-]*)?$")


class Reader(StrEnum):
    """How availability is read from a record."""

    MARC = "marc"  # MARCXML: one item per occurrence of `item_field`, its status there
    ISO20775 = "iso20775"  # ISO 20775 holdings: copies' availabilityStatus, or the summary


class CatalogueError(ValueError):
    """A catalogue setting that cannot work; the message names it."""


@dataclass(frozen=True)
class CatalogueConfig:
    symbol: str
    sru_url: str
    sru_version: str = "1.2"
    record_schema: str = "marcxml"
    reader: Reader = Reader.MARC
    item_field: str = "876$j"
    available_values: tuple[str, ...] = ("Available",)
    indexes: Mapping[str, str] = field(default_factory=lambda: dict(DEFAULT_INDEXES))
    budget_ms: int | None = None
    enabled: bool = True

    def __post_init__(self) -> None:
        check(self)

    @property
    def item_tag(self) -> tuple[str, str]:
        """`item_field` as (tag, subfield code): 876$j -> ("876", "j")."""
        m = _ITEM_FIELD.match(self.item_field)
        if m is None:
            raise CatalogueError(f"item field {self.item_field!r}: expected TAG$CODE")
        return m.group(1), m.group(2)

    def available(self, status: str) -> bool:
        wanted = {v.strip().casefold() for v in self.available_values}
        return status.strip().casefold() in wanted

    @classmethod
    def from_row(cls, row: Mapping[str, Any] | asyncpg.Record) -> CatalogueConfig:
        """From a supplier_catalogue row, or its to_jsonb (the candidates query)."""
        indexes = row["indexes"]
        if isinstance(indexes, str):
            indexes = json.loads(indexes)
        return cls(symbol=row["symbol"], sru_url=row["sru_url"],
                   sru_version=row["sru_version"], record_schema=row["record_schema"],
                   reader=Reader(row["reader"]), item_field=row["item_field"],
                   available_values=tuple(row["available_values"]), indexes=dict(indexes),
                   budget_ms=row["budget_ms"], enabled=row["enabled"])


def check(c: CatalogueConfig) -> None:
    """Raise CatalogueError naming the first setting that cannot work."""
    url = urlsplit(c.sru_url)
    if url.scheme not in ("http", "https") or not url.hostname or any(
            ch.isspace() for ch in c.sru_url):
        raise CatalogueError(f"SRU URL {c.sru_url!r}: expected http(s)://host[:port]/database")
    if c.sru_version not in SRU_VERSIONS:
        raise CatalogueError(f"SRU version {c.sru_version!r}: one of {', '.join(SRU_VERSIONS)}")
    if not c.record_schema.strip() or len(c.record_schema) > 200:
        raise CatalogueError("record schema: the name the server gives it, e.g. marcxml")
    if _ITEM_FIELD.match(c.item_field) is None:
        raise CatalogueError(f"item field {c.item_field!r}: expected TAG$CODE, e.g. 876$j "
                             "(the subfield holding each item's status)")
    if not c.available_values or not all(v.strip() for v in c.available_values):
        raise CatalogueError("available values: at least one item status meaning 'on the "
                             "shelf', e.g. Available")
    if not c.indexes:
        raise CatalogueError("indexes: at least one, e.g. isbn=bath.isbn")
    for id_type, index in c.indexes.items():
        if id_type not in ID_TYPES:
            raise CatalogueError(f"index for {id_type!r}: a catalogue is searched by "
                                 f"{' or '.join(ID_TYPES)}")
        if _INDEX.match(index) is None:
            raise CatalogueError(f"index {index!r} for {id_type}: a CQL index name, e.g. "
                                 "bath.isbn or dc.identifier")
    if c.budget_ms is not None and c.budget_ms <= 0:
        raise CatalogueError(f"budget {c.budget_ms} ms: must be above 0")


def parse_indexes(items: list[str]) -> dict[str, str]:
    """`isbn=bath.isbn issn=bath.issn` from the command line."""
    found: dict[str, str] = {}
    for item in items:
        id_type, sep, index = item.partition("=")
        if not sep or not id_type.strip() or not index.strip():
            raise CatalogueError(f"index {item!r}: expected TYPE=INDEX, e.g. isbn=bath.isbn")
        found[id_type.strip().lower()] = index.strip()
    return found


def of_candidates(rows: Iterable[Mapping[str, Any] | asyncpg.Record]) -> list[CatalogueConfig]:
    """The catalogues of the eligible candidate rows that have one (the `catalogue`
    column of broker/dispatch/sql.py's candidates: the row as JSON). A row that does not
    validate (the table's CHECKs are looser than `check`) is logged and left out: a
    broken catalogue setting never stops routing."""
    found = []
    for r in rows:
        raw = r["catalogue"]
        if raw is None or not r["eligible"]:
            continue
        try:
            found.append(CatalogueConfig.from_row(json.loads(raw) if isinstance(raw, str)
                                                  else raw))
        except (CatalogueError, ValueError, KeyError) as exc:
            log.warning("catalogue of %s not asked: %s", r["symbol"], exc)
    return found
