"""Every SQL statement of dispatch, by name.

Kept as Python constants rather than `.sql` files: several statements are built from
shared parts (the scorecard upsert, the supplier's day count, the audit row of a
forward, the candidate query), and the state and outcome names they write come from
`broker.states`, so a rule is written once and a renamed state cannot drift from its
SQL. Files read by name would need a template language for both, and package data to
install them.

Dispatch's tables are ill_transaction, rota_entry, rota_excluded, audit_log,
scorecard, supplier_day and policy_version, and a loan's loan, loan_shipment and
loan_notice. Other packages' data is read only through
what they publish: agency, holding and holding_answer (broker; the answers are written
through broker/holdings_trust.py), `fee_terms_in_force()` (settlement,
schemas/migrations/0014_fee_view.sql).

Most statements take positional parameters ($1...). The two that are assembled from
parts take named ones (`:name`), numbered once by `named()`, so the parts can share
them and a caller passes each by name: `NEW_TRANSACTION.args({...})`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from broker.borrower_trust import history_sql
from broker.copyright import counted_sql, insert_from_json
from broker.holdings_trust import WINDOW_DAYS
from broker.states import AWAITING_SUPPLIER, TERMINAL, EntryOutcome, HubEvent, State

# A string literal (left as it is) or a `:name` parameter (not a `::type` cast).
_PARAM = re.compile(r"'(?:[^']|'')*'|(?<![:\w]):([a-z_][a-z0-9_]*)")


@dataclass(frozen=True)
class Named:
    """A statement written with `:name` parameters, as asyncpg takes it ($1..$n)."""

    text: str
    names: tuple[str, ...]

    def args(self, values: Mapping[str, object]) -> tuple[object, ...]:
        """The positional arguments; every name exactly once, nothing else."""
        if values.keys() != set(self.names):
            missing = sorted(set(self.names) - values.keys())
            extra = sorted(values.keys() - set(self.names))
            raise TypeError(f"statement parameters: missing {missing}, unknown {extra}")
        return tuple(values[name] for name in self.names)


def named(text: str) -> Named:
    """Number a statement's `:name` parameters in order of first use."""
    names: list[str] = []

    def number(match: re.Match[str]) -> str:
        name = match.group(1)
        if name is None:
            return match.group(0)
        if name not in names:
            names.append(name)
        return f"${names.index(name) + 1}"

    return Named(_PARAM.sub(number, text), tuple(names))


def _quoted(values: frozenset[State]) -> str:
    return ", ".join(f"'{v}'" for v in sorted(values))


# ---- policy versions ------------------------------------------------------------------

POLICY_NEWEST = "SELECT version, normalised FROM policy_version ORDER BY version DESC LIMIT 1"
POLICY_OF_VERSION = "SELECT normalised FROM policy_version WHERE version = $1"
POLICY_ACTIVE = ("SELECT version, loaded_at, file_name, source FROM policy_version "
                 "ORDER BY version DESC LIMIT 1")
POLICY_INSERT = ("INSERT INTO policy_version (source, normalised, file_name) "
                 "VALUES ($1, $2::jsonb, $3) RETURNING version")

# ---- the transaction row --------------------------------------------------------------

# What dispatch reads of a transaction (store.Txn has one field for each).
TXN_COLUMNS = ("id, requester, request_id, service_type, service_kind, service_level, "
               "returnable, state, supplier, rota_position, deadline_at, cancel_requested_at, "
               "request, max_cost_minor, currency, quote_minor, quote_currency, "
               "quote_logistics_minor")

TXN_FIND = (f"SELECT {TXN_COLUMNS} FROM ill_transaction "
            "WHERE requester = $1 AND request_id = $2 FOR UPDATE")
TXN_PAST_DEADLINE = f"""
SELECT {TXN_COLUMNS} FROM ill_transaction WHERE deadline_at <= $1
ORDER BY deadline_at LIMIT $2 FOR UPDATE SKIP LOCKED"""

# A state change: the deadline runs only while the supplier owes an answer, and a
# terminal state closes the transaction.
SET_STATE = f"""
UPDATE ill_transaction SET state = $2::text, updated_at = $3::timestamptz,
       returnable = coalesce($4::boolean, returnable),
       deadline_at = CASE WHEN $2::text IN ({_quoted(AWAITING_SUPPLIER)}) THEN deadline_at END,
       closed_at = CASE WHEN $2::text IN ({_quoted(TERMINAL)}) THEN $3::timestamptz END
WHERE id = $1"""
SET_DUE = "UPDATE ill_transaction SET due_at = $2 WHERE id = $1"
SET_CANCEL_REQUESTED = "UPDATE ill_transaction SET cancel_requested_at = $2 WHERE id = $1"
OFFER_RETRY = f"""
UPDATE ill_transaction SET supplier = $2, state = '{State.RETRY_POSSIBLE}',
       quote_minor = $3, quote_currency = $4, updated_at = $5, quote_logistics_minor = $6
WHERE id = $1"""

# Another open request of the patron for the item, besides the one a Retry supersedes.
OTHER_DUPLICATE = """
SELECT id, request_id FROM ill_transaction
WHERE requester = $1 AND patron_key = $2 AND item_key = $3 AND closed_at IS NULL
  AND id <> $4
LIMIT 1"""

# ---- the rota -------------------------------------------------------------------------

CLOSE_ENTRY = """
UPDATE rota_entry SET outcome = $3, answered_at = $4
WHERE transaction_id = $1 AND position = $2 RETURNING forwarded_at"""
IS_ROTA_PARTY = "SELECT true FROM rota_entry WHERE transaction_id = $1 AND supplier = $2 LIMIT 1"
# The next supplier still pending, among the enabled agencies.
NEXT_POSITION = f"""
SELECT e.position FROM rota_entry e JOIN agency a ON a.symbol = e.supplier
WHERE e.transaction_id = $1 AND e.position > $2 AND e.outcome = '{EntryOutcome.PENDING}'
  AND a.enabled
ORDER BY e.position LIMIT 1"""

# ---- one rule, one place: scorecard, day count, audit log ------------------------------

# A supplier's scorecard and its requests of the day are counters that many batches
# bump at once: each bump is a change row (migration 0016), folded into the totals by
# FOLD_SCORECARDS / FOLD_SUPPLIER_DAYS. The change comes from a CTE `score_change`
# (supplier, forwarded, filled, unfilled, timed_out, turnaround, open_requests) of the
# statement it is part of.
_SCORE_CHANGE_INSERT = """
INSERT INTO scorecard_change (supplier, forwarded, filled, unfilled, timed_out,
                              turnaround_total, open_requests)
SELECT supplier, forwarded, filled, unfilled, timed_out, turnaround, open_requests
FROM score_change"""

_SCORE_CHANGE = "score_change (supplier, forwarded, filled, unfilled, timed_out, turnaround, " \
                "open_requests)"

SCORE = f"""
WITH {_SCORE_CHANGE} AS (
    VALUES ($1::text, $2::int, $3::int, $4::int, $5::int, $6::float8, $7::int))
{_SCORE_CHANGE_INSERT}"""

# The audit log's columns; each statement that writes it brings its rows.
_AUDIT_INSERT = ("INSERT INTO audit_log (transaction_id, at, actor, event, from_state, "
                 "to_state, message_id, detail)")

AUDIT = f"{_AUDIT_INSERT} VALUES ($1, $2, $3, $4, $5, $6, $7, $8::jsonb)"


def _forwarded_to(source: str) -> str:
    """CTEs counting one more request forwarded to the supplier `source` yields: its
    scorecard and its day count (daily caps). Parameter :today."""
    return f"""
{_SCORE_CHANGE} AS (
    SELECT supplier, 1, 0, 0, 0, 0::float8, 1 FROM {source}),
score AS ({_SCORE_CHANGE_INSERT}),
day AS (
    INSERT INTO supplier_day_change (supplier, day) SELECT supplier, :today FROM {source})"""


def _forward_audit_row(source: str, position: str, from_state: str) -> str:
    """The audit row of a forward to the supplier `source` yields. Parameters :id, :at,
    :deadline_text."""
    return f"""
    SELECT :id::text, :at::timestamptz, 'hub', '{HubEvent.FORWARD}', {from_state},
           '{State.EXPECT_TO_SUPPLY}', NULL::text,
           jsonb_build_object('supplier', supplier, 'position', {position},
                              'deadline', :deadline_text::text)
    FROM {source}"""


# The changes so far into the totals, in one short transaction (one hub at a time:
# Lock.COUNTS). A change committed while this runs is not in its snapshot and waits for
# the next fold. open_requests never falls below zero, as the views show it.
FOLD_SCORECARDS = """
WITH moved AS (
    DELETE FROM scorecard_change RETURNING supplier, forwarded, filled, unfilled, timed_out,
                                           turnaround_total, open_requests),
sums AS (
    SELECT supplier, sum(forwarded)::int AS forwarded, sum(filled)::int AS filled,
           sum(unfilled)::int AS unfilled, sum(timed_out)::int AS timed_out,
           sum(turnaround_total) AS turnaround_total, sum(open_requests)::int AS open_requests
    FROM moved GROUP BY supplier)
INSERT INTO scorecard_total AS s (supplier, forwarded, filled, unfilled, timed_out,
                                  turnaround_total, open_requests)
SELECT supplier, forwarded, filled, unfilled, timed_out, turnaround_total,
       greatest(open_requests, 0)
FROM sums
ON CONFLICT (supplier) DO UPDATE SET
    forwarded = s.forwarded + excluded.forwarded, filled = s.filled + excluded.filled,
    unfilled = s.unfilled + excluded.unfilled, timed_out = s.timed_out + excluded.timed_out,
    turnaround_total = s.turnaround_total + excluded.turnaround_total,
    open_requests = greatest(s.open_requests + (
        SELECT c.open_requests FROM sums c WHERE c.supplier = s.supplier), 0),
    updated_at = now()"""

# The change tables' dead rows (what folds deleted) removed, so that routing's reads of
# the views scan a few pages, not every change since autovacuum last came by. Without
# truncation: that needs an exclusive lock, which would queue every routing read behind
# it. SKIP_LOCKED: a vacuum already under way (another hub's, autovacuum's) does it.
VACUUM_CHANGES = ("VACUUM (SKIP_LOCKED, TRUNCATE false) scorecard_change, "
                  "supplier_day_change")

FOLD_SUPPLIER_DAYS = """
WITH moved AS (DELETE FROM supplier_day_change RETURNING supplier, day, forwarded)
INSERT INTO supplier_day_total AS d (supplier, day, forwarded)
SELECT supplier, day, sum(forwarded)::int FROM moved GROUP BY supplier, day
ON CONFLICT (supplier, day) DO UPDATE SET forwarded = d.forwarded + excluded.forwarded"""


# ---- forwarding -----------------------------------------------------------------------

# Rota entry, transaction, scorecard, the supplier's day count and the audit row in one
# statement.
FORWARD = named(f"""
WITH e AS (
    UPDATE rota_entry SET outcome = '{EntryOutcome.FORWARDED}', forwarded_at = :now
    WHERE transaction_id = :id AND position = :position
    RETURNING supplier, quote_minor, quote_currency, quote_logistics_minor),
t AS (
    UPDATE ill_transaction SET supplier = e.supplier, rota_position = :position,
           deadline_at = :deadline, state = '{State.EXPECT_TO_SUPPLY}', updated_at = :now,
           quote_minor = e.quote_minor, quote_currency = e.quote_currency,
           quote_logistics_minor = e.quote_logistics_minor
    FROM e WHERE id = :id),
{_forwarded_to("e")},
audit AS ({_AUDIT_INSERT}
    {_forward_audit_row("e", ":position::int", ":from_state::text")})
SELECT supplier FROM e""")

# A new transaction with its rota, exclusions, audit row and a copy request's copyright
# row (broker/copyright.py `row`; NULL for none). With :forward (the usual
# case) it is forwarded at once to the rota's first supplier, as FORWARD does: written in
# ExpectToSupply with that supplier, the first entry forwarded, scorecard and day count
# bumped, and the audit trail gets both steps (New, then the forward). Without, it stays
# New for the caller to go on step by step (a Retry, a price above maximumCosts, no
# supplier at all).
NEW_TRANSACTION = named(f"""
WITH t AS (
    INSERT INTO ill_transaction (id, requester, request_id, service_type, service_kind,
        service_level, returnable, state, request, confirmation, max_cost_minor, currency,
        patron_key, item_key, duplicate_of, policy_version, created_at, updated_at,
        supplier, rota_position, deadline_at, quote_minor, quote_currency,
        quote_logistics_minor)
    SELECT :id, :requester, :request_id, :service_type, :service_kind, :service_level,
           :returnable,
           CASE WHEN :forward THEN '{State.EXPECT_TO_SUPPLY}' ELSE '{State.NEW}' END,
           :request::jsonb, :confirmation::jsonb, :max_cost_minor, :currency, :patron_key,
           :item_key, :duplicate_of, :policy_version, :now, :now, first->>'supplier',
           CASE WHEN :forward THEN 1 END, :deadline, (first->>'quote_minor')::bigint,
           first->>'quote_currency', (first->>'quote_logistics_minor')::bigint
    FROM (SELECT CASE WHEN :forward THEN :ranked::jsonb->0 END AS first) f
    RETURNING {TXN_COLUMNS}),
rota AS (
    INSERT INTO rota_entry (transaction_id, position, supplier, tier, score, reasons,
                            quote_minor, quote_currency, quote_logistics_minor, outcome,
                            forwarded_at)
    SELECT :id, e.n, e.v->>'supplier', (e.v->>'tier')::int, (e.v->>'score')::float8,
           ARRAY(SELECT jsonb_array_elements_text(e.v->'reasons')),
           (e.v->>'quote_minor')::bigint, e.v->>'quote_currency',
           (e.v->>'quote_logistics_minor')::bigint,
           CASE WHEN :forward AND e.n = 1 THEN '{EntryOutcome.FORWARDED}'
                ELSE '{EntryOutcome.PENDING}' END,
           CASE WHEN :forward AND e.n = 1 THEN :now::timestamptz END
    FROM jsonb_array_elements(:ranked::jsonb) WITH ORDINALITY AS e(v, n)),
excluded AS (
    INSERT INTO rota_excluded (transaction_id, supplier, reason)
    SELECT :id, x->>'supplier', x->>'reason' FROM jsonb_array_elements(:excluded::jsonb) AS x),
copy AS ({insert_from_json(":copyright")}),
{_forwarded_to("t WHERE t.supplier IS NOT NULL")},
audit AS ({_AUDIT_INSERT}
    SELECT :id::text, :at::timestamptz, :requester::text, '{HubEvent.REQUEST}', NULL,
           '{State.NEW}',
           :message_id::text, :detail::jsonb
    UNION ALL
    {_forward_audit_row("t WHERE t.supplier IS NOT NULL", "1", f"'{State.NEW}'")})
SELECT * FROM t""")

# ---- what a new request reads ---------------------------------------------------------


def _candidates(types: str, values: str, extra: str, requester: str, kind: str,
                today: str) -> str:
    """The suppliers that hold the item (an index-only probe of holding) and those the
    policy may add, with what ranking needs: region, scorecard, today's count, the fee
    terms in force (with their shipping legs, `out_*`/`ret_*`: issue 19), and what their
    answers taught (broker/holdings_trust.py): `doubted`, why a holding of this item is
    in doubt (its latest answer said not held, after the holding was loaded: the rule of
    the view `holding_doubt`, probed per identifier; the holding's row is read only
    then), and `listed_asked` / `listed_not_held`, its answers about listed items of the
    matched id types over the window. `eligible` = an enabled supplier other than the requester."""
    return f"""
WITH held AS (
    SELECT h.symbol, array_agg(DISTINCT h.id_type) AS matched,
           (array_agg(format('answered %s for %s %s on %s (%s)', x.reason, h.id_type,
                             h.id_value, to_char(x.answered_at AT TIME ZONE 'UTC',
                                                 'YYYY-MM-DD HH24:MI "UTC"'),
                             x.transaction_id) ORDER BY x.answered_at DESC)
            FILTER (WHERE x.answered_at IS NOT NULL))[1] AS doubted
    FROM unnest({types}::text[], {values}::text[]) AS q(id_type, id_value)
    JOIN holding h ON h.id_type = q.id_type AND h.id_value = q.id_value
    LEFT JOIN LATERAL (
        SELECT last.reason, last.answered_at, last.transaction_id
        FROM (SELECT ha.not_held, ha.reason, ha.answered_at, ha.transaction_id
              FROM holding_answer ha
              WHERE ha.supplier = h.symbol AND ha.id_type = h.id_type
                AND ha.id_value = h.id_value
              ORDER BY ha.answered_at DESC LIMIT 1) last
        WHERE last.not_held AND last.answered_at > (
            SELECT l.loaded_at FROM holding l WHERE l.id_type = h.id_type
              AND l.id_value = h.id_value AND l.symbol = h.symbol)) x ON true
    GROUP BY h.symbol),
cand AS (
    SELECT symbol, matched, doubted FROM held
    UNION ALL
    SELECT x, NULL, NULL FROM unnest({extra}::text[]) AS x
    WHERE x NOT IN (SELECT symbol FROM held))
SELECT c.symbol, c.matched, c.doubted, a.province, a.city,
       coalesce(a.enabled AND 'supplier' = ANY(a.roles), false) AS eligible,
       s.filled, s.unfilled, s.timed_out, s.turnaround_total,
       coalesce(s.open_requests, 0) AS open_requests,
       coalesce(d.forwarded, 0) AS forwarded_today,
       f.entry, f.supplier, f.service_kind, f.currency, f.effective_from, f.effective_to,
       f.fixed_minor, f.per_page_minor, f.per_hour_minor, f.assumed_pages, f.assumed_hours,
       f.out_city_minor, f.out_province_minor, f.out_national_minor,
       f.out_per_extra_item_minor, f.ret_city_minor, f.ret_province_minor,
       f.ret_national_minor, f.ret_per_extra_item_minor,
       k.listed_asked, k.listed_not_held,
       to_jsonb(cat) AS catalogue
FROM cand c
LEFT JOIN agency a ON a.symbol = c.symbol
LEFT JOIN scorecard s ON s.supplier = c.symbol
LEFT JOIN supplier_day d ON d.supplier = c.symbol AND d.day = {today}
LEFT JOIN fee_terms_in_force({kind}, {today}) f ON f.supplier = c.symbol
-- its catalogue, asked before routing where it has one (broker/catalogue, issue 18)
LEFT JOIN supplier_catalogue cat ON cat.symbol = c.symbol AND cat.enabled
LEFT JOIN LATERAL (
    SELECT count(*)::int AS listed_asked,
           count(*) FILTER (WHERE ha.not_held)::int AS listed_not_held
    FROM holding_answer ha
    WHERE c.matched IS NOT NULL AND ha.supplier = c.symbol AND ha.id_type = ANY(c.matched)
      AND ha.answered_at >= ({today} - {WINDOW_DAYS})::timestamptz) k ON true
WHERE c.symbol <> {requester}"""


# In one round trip: an earlier copy of this request, an open duplicate, the requester's
# region and its borrowing history (borrower_*, broker/borrower_trust.py), the policy
# version in force, a copy request's copyright count (taking its journal's lock, see
# broker/copyright.py; NULL without a journal), and every candidate supplier with its
# facts.
# $1 requester, $2 request id, $3 patron key, $4 item key, $5/$6 identifier types and
# values, $7 suppliers the policy may add, $8 service kind, $9 consortium-local day,
# $10 the copyright count's lock, $11 the journal to count or NULL, $12 the year counted.
REQUEST_FACTS = f"""
SELECT t.id AS earlier_id, t.confirmation AS earlier_confirmation,
       dup.id AS duplicate_of, dup.request_id AS duplicate_request_id,
       r.province AS requester_province, r.city AS requester_city,
       bt.loans AS borrower_loans, bt.late_days AS borrower_late_days,
       bt.losses AS borrower_losses,
       (SELECT max(version) FROM policy_version) AS policy_version,
       (SELECT {counted_sql("$10::bigint", "$1", "$11::text", "$12::int")}
        WHERE $11::text IS NOT NULL) AS copyright_counted, c.*
FROM agency r
LEFT JOIN ill_transaction t ON t.requester = $1 AND t.request_id = $2
LEFT JOIN LATERAL (
    SELECT id, request_id FROM ill_transaction
    WHERE requester = $1 AND patron_key = $3 AND item_key = $4 AND closed_at IS NULL
    LIMIT 1) dup ON true
LEFT JOIN LATERAL ({history_sql("$1", "$9::date")}) bt ON true
LEFT JOIN LATERAL ({_candidates("$5", "$6", "$7", "$1", "$8::text", "$9::date")}) c ON true
WHERE r.symbol = $1"""

# The facts of named suppliers only: $1 symbols, $2 requester, $3 service kind, $4 day.
CANDIDATES_ONLY = _candidates("'{}'", "'{}'", "$1", "$2", "$3::text", "$4::date")

# ---- quotas ---------------------------------------------------------------------------

# Requests of one kind a library (or, with $4, one of its readers) made since $3, not
# counting those the hub refused for a quota or held for copyright (never served).
# $1 requester, $2 service kind, $3 period start (instant), $4 patron key or NULL.
QUOTA_USED = f"""
SELECT count(*) FROM ill_transaction t
WHERE t.requester = $1 AND t.service_kind = $2 AND t.created_at >= $3
  AND ($4::text IS NULL OR t.patron_key = $4)
  AND NOT EXISTS (SELECT 1 FROM audit_log a WHERE a.transaction_id = t.id
                  AND a.event IN ('{HubEvent.QUOTA_REACHED}', '{HubEvent.COPYRIGHT_HELD}'))"""

# ---- loans (broker/dispatch/loans.py; migration 0031) ---------------------------------

LOAN_PLACES = "SELECT symbol, province, city FROM agency WHERE symbol = ANY($1)"
# The loan starts once: a re-sent Loaned (or a renewal) keeps its distance.
LOAN_START = """
INSERT INTO loan (transaction_id, distance, transit_days, loaned_at, recall_after_days,
                  recall_rule)
VALUES ($1, $2, $3, $4, $5, $6)
ON CONFLICT (transaction_id) DO NOTHING"""
LOAN_SHIPMENT = """
INSERT INTO loan_shipment (transaction_id, leg, carrier, tracking_number, shipped_on, parcels,
                           sent_via, item_id, sender, message_id, recorded_at)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
ON CONFLICT (transaction_id, leg) DO UPDATE SET
    carrier = excluded.carrier, tracking_number = excluded.tracking_number,
    shipped_on = excluded.shipped_on, parcels = excluded.parcels,
    sent_via = excluded.sent_via, item_id = excluded.item_id, sender = excluded.sender,
    message_id = excluded.message_id, recorded_at = excluded.recorded_at"""
# The book went back at $2 ($3: with its transit still to go, true for a ShippedReturn,
# false when the supplier says LoanCompleted without one): the first time only. Days
# late: by when it could be back at the supplier, after the due date, rounded up.
LOAN_RETURNED = """
UPDATE loan l SET returned_at = $2,
       days_late = CASE WHEN t.due_at IS NULL THEN 0 ELSE greatest(0, ceil(extract(epoch FROM
           $2::timestamptz + CASE WHEN $3 THEN l.transit_days ELSE 0 END * interval '1 day'
           - t.due_at) / 86400))::int END
FROM ill_transaction t
WHERE l.transaction_id = $1 AND t.id = l.transaction_id AND l.returned_at IS NULL"""

# Open loans at a stage the sweep has not taken for their due date yet, locked, those
# another process holds skipped. $1 now, $2 reminder days, $3 recall days (unless the
# loan's policy rule set its own), $4 batch.
LOANS_DUE = f"""
SELECT {TXN_COLUMNS}, due_at, transit_days, stage
FROM ill_transaction JOIN loan ON loan.transaction_id = ill_transaction.id
CROSS JOIN LATERAL (SELECT CASE
    WHEN state IN ('{State.LOANED}', '{State.RECEIVED}') AND due_at <= $1 THEN 'overdue'
    WHEN state = '{State.OVERDUE}'
         AND due_at + coalesce(loan.recall_after_days, $3) * interval '1 day' <= $1
         THEN 'recall'
    WHEN state IN ('{State.LOANED}', '{State.RECEIVED}')
         AND due_at - (transit_days + $2) * interval '1 day' <= $1 THEN 'reminder'
    END AS stage) s
WHERE closed_at IS NULL AND due_at IS NOT NULL AND s.stage IS NOT NULL
  AND state IN ('{State.LOANED}', '{State.RECEIVED}', '{State.OVERDUE}')
  AND NOT EXISTS (SELECT 1 FROM loan_notice n WHERE n.transaction_id = ill_transaction.id
                  AND n.stage = s.stage AND n.due_at = ill_transaction.due_at)
ORDER BY due_at LIMIT $4 FOR UPDATE OF ill_transaction SKIP LOCKED"""
LOAN_NOTICE_CLAIM = """
INSERT INTO loan_notice (transaction_id, stage, due_at, at) VALUES ($1, $2, $3, $4)
ON CONFLICT DO NOTHING RETURNING stage"""
LOAN_NOTICE_MAIL = """
UPDATE loan_notice SET mail_id = $4 WHERE transaction_id = $1 AND stage = $2 AND due_at = $3"""
LOAN_CONTACT = "SELECT name, email FROM agency WHERE symbol = $1"

EXPLAIN_LOAN = """
SELECT l.*, t.due_at, t.requester FROM loan l JOIN ill_transaction t ON t.id = l.transaction_id
WHERE l.transaction_id = $1"""
EXPLAIN_SHIPMENTS = "SELECT * FROM loan_shipment WHERE transaction_id = $1 ORDER BY leg DESC"
EXPLAIN_NOTICES = "SELECT * FROM loan_notice WHERE transaction_id = $1 ORDER BY at, stage"

# ---- delivery -------------------------------------------------------------------------

AGENCY_NAMES = "SELECT symbol, name FROM agency WHERE symbol = ANY($1)"

# ---- explain --------------------------------------------------------------------------

EXPLAIN_TRANSACTION = "SELECT * FROM ill_transaction WHERE id = $1"
EXPLAIN_ROTA = "SELECT * FROM rota_entry WHERE transaction_id = $1 ORDER BY position"
EXPLAIN_EXCLUDED = ("SELECT supplier, reason FROM rota_excluded WHERE transaction_id = $1 "
                    "ORDER BY supplier")
EXPLAIN_AUDIT = "SELECT * FROM audit_log WHERE transaction_id = $1 ORDER BY id"
