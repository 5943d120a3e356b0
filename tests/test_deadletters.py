"""Dead letters: listed for operators, replayed through the same intake after a fix."""

from __future__ import annotations

import json

from broker import deadletters
from broker.dispatch.dispatcher import Dispatcher
from broker.intake import Inbound, Intake
from schemas.settings import Settings
from tests.support import messages
from tests.support.cli import run


async def test_a_dead_letter_is_listed_and_replayed_once_after_a_fix(
        settings: Settings, make_agency, pool) -> None:
    symbol, _ = await make_agency()
    intake = Intake(settings, Dispatcher(settings))
    body = json.dumps(messages.request(symbol, request_id="DL-1")).encode()
    wrong = Inbound(body=body, sender=symbol, message_id="dl-1", routing_key="request",
                    content_type="text/plain", message_type="request", correlation_id="DL-1")
    assert await intake.process(pool, wrong) == "dead"
    rows = await deadletters.listing(pool, limit=500)
    mine = next(r for r in rows if r["message_id"] == "dl-1")
    assert "content_type is 'text/plain'" in mine["reason"]

    code, out, _ = await run(settings, "dead", "list", "--limit", "500")
    assert code == 0 and "content_type is 'text/plain'" in out

    # The operator fixes the stored property (the sender's system was fixed) and replays.
    await pool.execute("""UPDATE dead_letter SET properties = jsonb_set(properties,
                          '{content_type}', '"application/json"') WHERE id = $1""", mine["id"])
    code, out, err = await run(settings, "dead", "replay", str(mine["id"]))
    assert code == 0, err
    assert "replayed: ok" in out
    assert await pool.fetchval("SELECT state FROM ill_transaction WHERE requester = $1 "
                               "AND request_id = 'DL-1'", symbol) == "Unfilled"
    code, _, err = await run(settings, "dead", "replay", str(mine["id"]))
    assert code == 1 and "already replayed" in err
    code, _, err = await run(settings, "dead", "replay", "999999999")
    assert code == 1 and "no dead letter" in err
