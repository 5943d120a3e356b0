"""A transaction's full path for operators: rota with reasons, exclusions, a loan's
parcels, due-date stages and borrower trust, audit trail."""

from __future__ import annotations

import json
from datetime import date

from broker.dispatch import loans, sql
from broker.dispatch.desk import iso
from infra.database import Connection
from schemas.settings import Loans


async def explain(conn: Connection, txn_id: str, terms: Loans | None = None,
                  today: date | None = None) -> list[str]:
    """The lines `run.py explain` prints; LookupError if there is no such transaction.
    With the loans settings and the consortium-local day: the borrower's trust too."""
    txn = await conn.fetchrow(sql.EXPLAIN_TRANSACTION, txn_id)
    if txn is None:
        raise LookupError(f"no transaction {txn_id}")
    lines = [f"transaction {txn['id']}: request {txn['request_id']!r} from {txn['requester']}",
             f"  {txn['service_type']} / {txn['service_kind']}, level "
             f"{txn['service_level'] or 'Normal'}; state {txn['state']}; current supplier "
             f"{txn['supplier'] or '-'}; policy version {txn['policy_version'] or 'default'}"]
    if txn["duplicate_of"]:
        lines.append(f"  flagged: duplicate of open transaction {txn['duplicate_of']}")
    lines.append("rota:")
    for e in await conn.fetch(sql.EXPLAIN_ROTA, txn_id):
        lines.append(f"  {e['position']}. {e['supplier']}  tier {e['tier']}  score "
                     f"{e['score']:.3f}  [{e['outcome']}]")
        lines += [f"       - {r}" for r in e["reasons"]]
    excluded = await conn.fetch(sql.EXPLAIN_EXCLUDED, txn_id)
    if excluded:
        lines.append("excluded:")
        lines += [f"  {x['supplier']}: {x['reason']}" for x in excluded]
    lines += await loans.explain_lines(conn, txn_id, terms, today)
    lines.append("audit trail:")
    for a in await conn.fetch(sql.EXPLAIN_AUDIT, txn_id):
        detail = json.loads(a["detail"]) if a["detail"] else {}
        lines.append(f"  {iso(a['at'])}  {a['actor']:<20} {a['event']:<24} "
                     f"{a['from_state'] or '-'} -> {a['to_state'] or '-'}"
                     + (f"  {json.dumps(detail, ensure_ascii=False)}" if detail else ""))
    return lines
