"""Quotas (issue 19 item 5): policy rules limit requests per library or per reader, per
month or year and service kind; past one, the request is answered with the quota named
(RetryPossible NotCurrentAvailableForILL for a month, Unfilled PolicyProblem for a year)
and never forwarded."""

from __future__ import annotations

import datetime

import pytest

from broker.dispatch.explain import explain
from broker.dispatch.policies import load_policy
from broker.policy import Policy, PolicyError, QuotaPeriod, QuotaScope, RequestFacts
from tests.support import messages
from tests.support.network import start, state_of


def _facts(kind: str = "DocumentDelivery") -> RequestFacts:
    return RequestFacts(requester="CALIS:SHU", province="上海", city="上海",
                        service_type="Copy", service_kind=kind, id_types=frozenset({"issn"}),
                        max_cost_minor=None, named_supplier=None,
                        today=datetime.date(2026, 9, 16))


def test_quota_rules_are_read_checked_and_matched_by_their_when() -> None:
    p = Policy.from_toml('''
[[rule]]
name = "读者借书 reader loans"
when = { service_kind = ["BookLoan"] }
quota = { per = "reader", period = "year", limit = 10 }
[[rule]]
name = "articles"
when = { service_kind = ["DocumentDelivery"] }
quota = { per = "library", period = "month", limit = 200 }
''')
    [(name, q)] = p.quotas(_facts("BookLoan"))
    assert (name, q.per, q.period, q.limit) == ("读者借书 reader loans", QuotaScope.READER,
                                                QuotaPeriod.YEAR, 10)
    assert [n for n, _ in p.quotas(_facts())] == ["articles"]
    for bad, says in (('{ per = "patron", period = "year", limit = 1 }', "quota.per"),
                      ('{ per = "reader", period = "week", limit = 1 }', "quota.period"),
                      ('{ per = "reader", period = "year", limit = -1 }', "quota.limit"),
                      ('{ per = "reader", period = "year" }', "quota.limit: is required"),
                      ('{ per = "reader", period = "year", limit = 1, x = 2 }', "x")):
        with pytest.raises(PolicyError, match=says):
            Policy.from_toml(f'[[rule]]\nname = "q"\nquota = {bad}\n')


# Five journals, so that one reader's requests are not duplicates of each other.
JOURNALS = ("0028-0836", "0036-8075", "0092-8674", "0140-6736", "1476-4687")


async def test_reader_and_library_quotas_refuse_with_the_quota_named(network, pool) -> None:
    req = network["req"]
    await pool.executemany("INSERT INTO holding (id_type, id_value, symbol) "
                           "VALUES ('issn', $1, $2)",
                           [(j, network["sh"].symbol) for j in JOURNALS])
    await load_policy(pool, f'''
version = "test-quotas"
[[rule]]
name = "读者配额 reader quota"
when = {{ requester = ["{req.symbol}"], service_kind = ["DocumentDelivery"] }}
quota = {{ per = "reader", period = "year", limit = 2 }}
[[rule]]
name = "library month"
when = {{ requester = ["{req.symbol}"] }}
quota = {{ per = "library", period = "month", limit = 3 }}
''', "quotas.toml")
    try:
        await start(network, "Q-1", patron_id="P-1", issn=JOURNALS[0])
        await start(network, "Q-2", patron_id="P-1", issn=JOURNALS[1])
        # The reader's third article this year: Unfilled, PolicyProblem, the quota named.
        await req.send("request", messages.request(req.symbol, request_id="Q-3",
                                                   patron_id="P-1", issn=JOURNALS[2]))
        await req.confirmed()
        got = await req.status("Unfilled", "RequestResponse")
        info = got.content["messageInfo"]
        assert info["reasonUnfilled"] == "PolicyProblem"
        assert info["note"].startswith("quota '读者配额 reader quota' reached: 2 of 2 this "
                                       "reader's requests this year")
        assert await state_of(pool, req.symbol, "Q-3") == "Unfilled"
        # Another reader is not held to it; the refused request does not count for the
        # library's month, Q-4 = 3 of 3.
        await start(network, "Q-4", patron_id="P-2", issn=JOURNALS[3])
        await req.send("request", messages.request(req.symbol, request_id="Q-5",
                                                   patron_id="P-3", issn=JOURNALS[4]))
        await req.confirmed()
        got = await req.status("RetryPossible", "RequestResponse")
        info = got.content["messageInfo"]
        assert info["reasonRetry"] == "NotCurrentAvailableForILL"
        assert "quota 'library month' reached: 3 of 3 the library's requests" in info["note"]
        retry_after = datetime.datetime.fromisoformat(info["retryAfter"].replace("Z", "+00:00"))
        local = retry_after.astimezone(datetime.timezone(datetime.timedelta(hours=8)))
        assert (local.day, local.hour, local.minute) == (1, 0, 0)
        txn = await pool.fetchval("SELECT id FROM ill_transaction WHERE requester = $1 "
                                  "AND request_id = 'Q-5'", req.symbol)
        text = "\n".join(await explain(pool, txn))
        assert "quota reached" in text
        assert await pool.fetchval(
            "SELECT count(*) FROM rota_entry WHERE transaction_id = $1 "
            "AND outcome <> 'pending'", txn) == 0                 # never forwarded
    finally:
        await load_policy(pool, 'version = "no rules"', "reset.toml")
