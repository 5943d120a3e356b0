"""`/audit`: the audit of people's actions as a page (Permission.VIEW_AUDIT).

Who did what, when, from where, to what, with the before and after where data
changed (accounts/audit.py writes it; the table is append-only). Filters: who (login),
action prefix (`person.`, `token.`, `transaction.cancel`), from and to date
(consortium-local days). Newest first, a page at a time (`before` = the last id seen).

Reach: the consortium's auditors and operators see every row; a regional one sees the
actions of, and on, people who hold a grant over an agency or region in their reach
(filtered in the query). `run.py audit` reads the same rows from the command line.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from typing import Any
from urllib.parse import urlencode
from zoneinfo import ZoneInfo

import asyncpg
from aiohttp import web

from accounts.roles import Permission, Reach
from infra.database import Connection, read_snapshot
from schemas.settings import Settings
from web.auth import require
from web.operators.html import Clock, Safe, cat, esc, layout, link, table, tag
from web.operators.pages import html_response

PATH = "/audit"
PAGE_SIZE = 100
MAX_PAGE = 500
TEXT_MAX = 200

# Until accounts/audit.py publishes a read with reach and paging (see the report),
# the page's one query. Rows of people in reach: the actor, or the person acted on
# (person.* and token.* actions name the account as their target).
PAGE = """SELECT x.id, x.at, x.login, x.source, x.action, x.target, x.before, x.after
FROM people_audit x
WHERE ($1::boolean OR EXISTS (
        SELECT 1 FROM person p JOIN role_grant g ON g.person_id = p.id
        WHERE (p.id = x.person_id OR p.login = x.target)
          AND ((g.scope_kind = 'region' AND g.scope = ANY($2::text[]))
               OR (g.scope_kind = 'agency' AND (g.scope = ANY($3::text[])
                   OR g.scope IN (SELECT symbol FROM agency
                                  WHERE province = ANY($2::text[])))))))
  AND ($4::text IS NULL OR x.login = $4)
  AND ($5::text IS NULL OR starts_with(x.action, $5))
  AND ($6::timestamptz IS NULL OR x.at >= $6)
  AND ($7::timestamptz IS NULL OR x.at < $7)
  AND ($8::bigint IS NULL OR x.id < $8)
ORDER BY x.id DESC
LIMIT $9"""


class FilterError(ValueError):
    """A filter that cannot be read; the message names it."""


@dataclass(frozen=True)
class Filters:
    login: str | None
    action: str | None
    since: date | None
    until: date | None          # inclusive
    before: int | None
    limit: int

    def query(self, **changed: Any) -> str:
        values = {"login": self.login, "action": self.action,
                  "since": self.since.isoformat() if self.since else None,
                  "until": self.until.isoformat() if self.until else None,
                  "limit": self.limit if self.limit != PAGE_SIZE else None} | changed
        return urlencode({k: v for k, v in values.items() if v not in (None, "")})


def _text(query: Any, name: str) -> str | None:
    value = (query.get(name) or "").strip()
    if len(value) > TEXT_MAX:
        raise FilterError(f"{name}: at most {TEXT_MAX} characters")
    return value or None


def _day(query: Any, name: str) -> date | None:
    value = _text(query, name)
    try:
        return date.fromisoformat(value) if value else None
    except ValueError:
        raise FilterError(f"{name}: a date YYYY-MM-DD, not {value!r}") from None


def _whole(query: Any, name: str, low: int, high: int) -> int | None:
    value = _text(query, name)
    if value is None:
        return None
    if not value.isdigit() or not low <= int(value) <= high:
        raise FilterError(f"{name}: a whole number from {low} to {high}, not {value!r}")
    return int(value)


def parse_filters(query: Any) -> Filters:
    login = _text(query, "login")
    return Filters(login=login.lower() if login else None, action=_text(query, "action"),
                   since=_day(query, "since"), until=_day(query, "until"),
                   before=_whole(query, "before", 1, 2**62),
                   limit=_whole(query, "limit", 1, MAX_PAGE) or PAGE_SIZE)


def _start(day: date | None, zone: ZoneInfo) -> datetime | None:
    return datetime.combine(day, time(), zone) if day else None


async def read_page(conn: Connection, reach: Reach, f: Filters, tz: str
                    ) -> list[asyncpg.Record]:
    """The rows of a page, newest first, and one more if there are older ones."""
    zone = ZoneInfo(tz)
    until = f.until + timedelta(days=1) if f.until else None
    return list(await conn.fetch(PAGE, *reach.sql_args(), f.login, f.action,
                                 _start(f.since, zone), _start(until, zone), f.before,
                                 f.limit + 1))


def _change(value: str | None) -> Safe:
    if value is None:
        return Safe("")
    shown = json.dumps(json.loads(value), ensure_ascii=False, sort_keys=True)
    return tag("code", shown)


def _form(f: Filters) -> Safe:
    def field(name: str, label: str, value: Any, kind: str = "text") -> Safe:
        return tag("label", label, " ", tag("input", type=kind, name=name, id=f"f-{name}",
                                            value="" if value is None else str(value)))
    return tag("form",
               field("login", "Who 人员", f.login),
               field("action", "Action 操作 (prefix)", f.action),
               field("since", "From 起", f.since, "date"),
               field("until", "To 止", f.until, "date"),
               tag("button", "Filter 筛选", type="submit"),
               method="get", action=PATH, class_="filters", id="audit-filters")


def audit_page(found: list[asyncpg.Record], f: Filters, clock: Clock) -> str:
    """The page for `found`: read_page's rows, one more than the page when there are."""
    rows = found[:f.limit]
    body = [tag("h1", "People's actions 操作审计"), _form(f),
            table(["When 时间", "Who 人员", "From 来源", "Action 操作", "Target 对象",
                   "Before 之前", "After 之后"],
                  [[clock(r["at"]), r["login"], r["source"], r["action"], r["target"],
                    _change(r["before"]), _change(r["after"])] for r in rows],
                  empty="no actions match 无匹配记录", id="audit",
                  row_attrs=[{"data-id": str(r["id"])} for r in rows])]
    if len(found) > f.limit:
        body.append(tag("p", link(f"{PATH}?{f.query(before=rows[-1]['id'])}",
                                  "Older 更早 →", id="older")))
    if f.before is not None:
        body.append(tag("p", link(f"{PATH}?{f.query()}", "← Newest 最新", id="newest")))
    return layout("People's actions · ILL Hub", cat(body), signed_in=False)


def error_page(message: str) -> str:
    return layout("Bad filter · ILL Hub", cat([
        tag("h1", "Bad filter 筛选条件有误"), tag("p", esc(message), role="alert"),
        tag("p", link(PATH, "All actions 全部记录"))]), signed_in=False)


def add_audit_routes(app: web.Application, settings: Settings, pool: asyncpg.Pool) -> None:
    clock = Clock(settings.timezone)

    async def audit(request: web.Request) -> web.StreamResponse:
        reach = require(request, Permission.VIEW_AUDIT)
        try:
            f = parse_filters(request.query)
        except FilterError as exc:
            return html_response(error_page(str(exc)), 400)
        rows = await read_snapshot(pool, lambda conn: read_page(conn, reach, f, settings.timezone))
        return html_response(audit_page(rows, f, clock))

    app.router.add_get(PATH, audit)


__all__ = ["add_audit_routes", "audit_page", "parse_filters", "read_page"]
