"""Copyright on copies (issue 19 item 6): each copy request's declaration is kept and
counted per library, journal and year (recent issues only); past the consortium's limit
a `route` rule puts the licensed pay-per-view supplier first, `hold` answers
RetryPossible, `flag` flags; a copy without an accepted category is flagged."""

from __future__ import annotations

import asyncio
import datetime
import secrets
from pathlib import Path

import asyncpg
import pytest

from broker import copyright
from broker.copyright import Check, Declaration, Journal, Rule, Vocabulary, VocabularyError
from broker.dispatch.explain import explain
from broker.dispatch.policies import load_policy
from broker.policy import CopyrightAction, Policy, PolicyError, RequestFacts, SupplierFacts
from illclient.client import AgencyClient
from infra import flags
from infra.flags import FlagKind
from infra.locks import Lock
from schemas.settings import Copyright as CopyrightSettings
from schemas.settings import Settings
from settlement.statement_model import BOM
from tests.support import messages
from tests.support.agencies import MakeAgency
from tests.support.cli import run
from tests.support.hub import Party
from tests.support.network import Network

NATURE = "0028-0836"
SCIENCE = "0036-8075"


# ---- pure ---------------------------------------------------------------------------

def test_vocabularies_accept_each_countrys_categories_in_any_spelling(tmp_path: Path) -> None:
    cn = copyright.vocabulary(CopyrightSettings())
    assert cn.accept("CN-FAIR-USE") == cn.accept("合理使用") == cn.accept(" cn_fair use ") \
        == cn.accept("ＣＮ－ＦＡＩＲ－ＵＳＥ") == "CN-FAIR-USE"
    assert cn.accept("US-CCG") is None and cn.accept("") is None and cn.accept(None) is None
    us = copyright.vocabulary(CopyrightSettings(country="US"))
    assert us.accept("US_CCG") == us.accept("ccg") == "US-CCG"
    assert us.accept("CCL") == "US-CCL"
    assert copyright.vocabulary(CopyrightSettings(country="UK")).accept("S42A") == "UK-S42A"
    assert copyright.vocabulary(CopyrightSettings(country="AU")).accept("AU-S50") == "AU-S50"
    only = copyright.vocabulary(CopyrightSettings(categories=["CN-LICENSED"]))
    assert set(only.categories) == {"CN-LICENSED"} and only.accept("合理使用") is None
    with pytest.raises(VocabularyError, match="no vocabulary"):
        copyright.vocabulary(CopyrightSettings(country="XX"))
    own = tmp_path / "vocabulary.toml"
    own.write_text('[categories]\n"HK-FD" = "公平处理 fair dealing"\n[aliases]\n"公平处理" = '
                   '"HK-FD"\n', encoding="utf-8")
    hk = copyright.vocabulary(CopyrightSettings(country="HK", vocabulary_file=str(own)))
    assert hk.accept("公平处理") == hk.accept("FD") == "HK-FD"
    bad = tmp_path / "bad.toml"
    bad.write_text('[aliases]\n"x" = "NOPE"\n', encoding="utf-8")
    with pytest.raises(VocabularyError, match="categories"):
        copyright.vocabulary(CopyrightSettings(vocabulary_file=str(bad)))


def _request(**parts: object) -> dict[str, object]:
    return {"request": {"bibliographicInfo": {"title": "Nature", "author": "Smith, J."},
                        "serviceInfo": {"serviceType": "Copy"}, **parts}}


def test_the_declaration_is_read_from_iso18626_or_the_hub_extension() -> None:
    vocab = Vocabulary.of("CN", copyright.VOCABULARIES["CN"])
    d = copyright.declaration_of(_request(serviceInfo={"serviceType": "Copy",
                                                       "copyrightCompliance": "合理使用"}), vocab)
    assert (d.category, d.source) == ("CN-FAIR-USE", "copyrightCompliance")
    # Free text in copyrightCompliance, the category in the extension: both kept.
    ext = {"copyright": {"category": "CN-FAIR-USE", "declaredBy": "张三",
                         "declaredAt": "2026-09-01T10:00:00Z", "text": "本人声明仅用于个人学习"}}
    d = copyright.declaration_of(_request(
        serviceInfo={"serviceType": "Copy", "copyrightCompliance": "for my thesis"},
        hubExtensions=ext), vocab)
    assert d == Declaration("CN-FAIR-USE", "CN-FAIR-USE", "张三", "2026-09-01T10:00:00Z",
                            "本人声明仅用于个人学习", "hubExtensions.copyright")
    d = copyright.declaration_of(_request(serviceInfo={"serviceType": "Copy",
                                                       "copyrightCompliance": "whatever"}), vocab)
    assert (d.category, d.given) == (None, "whatever")
    assert copyright.declaration_of(_request(), vocab).category is None


def test_journal_key_publication_year_and_the_recent_window() -> None:
    assert Journal.of(_request(), [("issn", NATURE), ("title_key", "nature|smith")]) == \
        Journal(f"issn:{NATURE}", f"ISSN {NATURE}")
    # Without an ISSN: the journal title alone, not the article's author.
    a = Journal.of(_request(), [("title_key", "nature|smith")])
    b = Journal.of({"request": {"bibliographicInfo": {"title": "NATURE ", "author": "Li"}}}, [])
    assert a is not None and b is not None and a.key == b.key and a.key.startswith("title:")
    assert Journal.of({"request": {"bibliographicInfo": {}}}, []) is None
    for date, year in (("2025", 2025), ("2025-03-01", 2025), ("2025年3月", 2025),
                       ("２０２４", 2024), ("spring", None), (None, None)):
        info = {"publicationInfo": {"publicationDate": date}} if date else {}
        assert copyright.publication_year(_request(**info)) == year
    assert [copyright.is_recent(y, 2026, 5) for y in (2027, 2026, 2022, 2021, None)] == \
        [True, True, True, False, True]
    assert [copyright.ordinal(n) for n in (1, 2, 3, 6, 11, 12, 21)] == \
        ["1st", "2nd", "3rd", "6th", "11th", "12th", "21st"]


def test_a_check_past_the_limit_says_what_the_rule_does() -> None:
    decl = Declaration("US-CCG", "CCG")
    journal = Journal(f"issn:{NATURE}", f"ISSN {NATURE}")
    route = Rule("r", CopyrightAction.ROUTE, 5, 5, "VENDOR:PPV", "CONTU")
    fifth = Check(decl, journal, 2025, 2026, True, 5, route)
    assert not fifth.over and fifth.route_to is None and fifth.action == "none"
    sixth = Check(decl, journal, 2025, 2026, True, 6, route)
    assert sixth.route_to == "VENDOR:PPV" and sixth.action == "routed"
    assert sixth.reason() == ("copyright: 6th copy of ISSN 0028-0836 this year (limit 5, "
                              "CONTU): routed to the licensed pay-per-view supplier")
    old = Check(decl, journal, 2001, 2026, False, 6, route)
    assert not old.over
    held = Check(decl, journal, 2025, 2026, True, 6,
                 Rule("h", CopyrightAction.HOLD, 5, 5))
    assert held.held and held.action == "held" and "rule 'h'" in held.reason()
    undeclared = Check(Declaration(None, None), journal, 2025, 2026, True, 1,
                       Rule("f", CopyrightAction.FLAG, 5, 5))
    assert undeclared.undeclared and undeclared.action == "flagged"
    assert not Check(Declaration(None, None), journal, None, 2026, True, 1, None).undeclared


def _facts(first: tuple[str, str] | None = None) -> RequestFacts:
    return RequestFacts(requester="CALIS:SHU", province="上海", city="上海",
                        service_type="Copy", service_kind="DocumentDelivery",
                        id_types=frozenset({"issn"}), max_cost_minor=None,
                        named_supplier=None, today=datetime.date(2026, 9, 16), first=first)


def _supplier(symbol: str, holds: bool = True, city: str = "上海") -> SupplierFacts:
    return SupplierFacts(symbol=symbol, province=city, city=city,
                         holds=frozenset({"issn"}) if holds else frozenset(),
                         quote_minor=None, fill_rate=0.9, turnaround_hours=10,
                         open_requests=0, forwarded_today=0)


def test_the_copyright_action_is_read_and_puts_its_supplier_first() -> None:
    p = Policy.from_toml('''
[[rule]]
name = "CONTU"
when = { service_type = ["Copy"] }
copyright = { action = "route", supplier = "VENDOR:PPV", limit = 5, basis = "CONTU" }
''')
    [(name, limit)] = p.copyright_limits(_facts())
    assert (name, limit.action, limit.limit, limit.recent_years, limit.supplier) == (
        "CONTU", CopyrightAction.ROUTE, 5, None, "VENDOR:PPV")
    assert "VENDOR:PPV" in p.all_extra_suppliers()
    assert Policy.from_dict(p.to_dict()).copyright_limits(_facts()) == ((name, limit),)
    suppliers = [_supplier("CALIS:SH"), _supplier("VENDOR:PPV", holds=False, city="北京")]
    assert p.rota(_facts(), suppliers).symbols == ("CALIS:SH",)
    why = "copyright: 6th copy ..."
    rota = p.rota(_facts(first=("VENDOR:PPV", why)), suppliers)
    assert rota.symbols == ("VENDOR:PPV", "CALIS:SH")
    assert rota.ranked[0].tier == 1 and why in rota.ranked[0].reasons
    for bad, says in (('{ action = "ask" }', "copyright.action"),
                      ('{ action = "route" }', "copyright.supplier: is required"),
                      ('{ action = "flag", supplier = "V:P" }', "only action"),
                      ('{ action = "flag", limit = -1 }', "copyright.limit"),
                      ('{ action = "flag", undeclared = "maybe" }', "copyright.undeclared"),
                      ('{ action = "flag", x = 1 }', "x")):
        with pytest.raises(PolicyError, match=says):
            Policy.from_toml(f'[[rule]]\nname = "c"\ncopyright = {bad}\n')


# ---- with the dispatch test world -----------------------------------------------------

def _copy(req: Party, request_id: str, issn: str, year: str | None,
          category: str | None = "合理使用") -> dict[str, object]:
    service: dict[str, object] = {"serviceType": "Copy", "serviceLevel": "Normal"}
    if category:
        service["copyrightCompliance"] = category
    extra: dict[str, object] = {"serviceInfo": service}
    if year:
        extra["publicationInfo"] = {"publicationDate": year}
    # One patron per request: the same journal is the same "item" to the duplicate check.
    return messages.request(req.symbol, request_id=request_id, issn=issn, title="Nature",
                            patron_id=f"P-{request_id}", **extra)


async def _send(network: Network, request_id: str, issn: str = NATURE,
                year: str | None = "2025", **kw: str | None) -> None:
    req = network["req"]
    await req.send("request", _copy(req, request_id, issn, year, **kw))
    await req.confirmed()
    await req.status("ExpectToSupply", "RequestResponse")


async def _txn(pool: asyncpg.Pool, requester: str, request_id: str) -> str:
    txn: str = await pool.fetchval("SELECT id FROM ill_transaction WHERE requester = $1 "
                                   "AND request_id = $2", requester, request_id)
    return txn


async def _first(pool: asyncpg.Pool, txn: str) -> str:
    first: str = await pool.fetchval("SELECT supplier FROM rota_entry WHERE transaction_id = $1 "
                                     "AND position = 1", txn)
    return first


async def test_the_sixth_copy_goes_to_the_pay_per_view_supplier(
        network: Network, pool: asyncpg.Pool, make_agency: MakeAgency,
        settings: Settings, tmp_path: Path) -> None:
    ppv, _ = await make_agency(f"9PPV-{secrets.token_hex(3)}", province="北京", city="北京",
                               roles=("supplier",), name="付费下载 Pay-per-view vendor")
    other, other_pw = await make_agency(f"8REQ-{secrets.token_hex(3)}", province="上海",
                                        city="上海", roles=("requester",))
    client = AgencyClient(settings, other, other_pw)
    await client.connect()
    try:
        await _copyright_world(network, pool, settings, tmp_path, ppv, other, client)
    finally:
        await load_policy(pool, 'version = "no rules"', "reset.toml")
        await client.close()


async def _copyright_world(network: Network, pool: asyncpg.Pool, settings: Settings,
                           tmp_path: Path, ppv: str, other: str, client: AgencyClient) -> None:
    req, sh = network["req"], network["sh"]
    await pool.executemany("INSERT INTO holding (id_type, id_value, symbol) "
                           "VALUES ('issn', $1, $2)", [(NATURE, sh.symbol),
                                                       (SCIENCE, sh.symbol)])
    await load_policy(pool, f'''
version = "test-copyright"
[[rule]]
name = "rule of five"
when = {{ requester = ["{req.symbol}", "{other}"], service_type = ["Copy"] }}
copyright = {{ action = "route", supplier = "{ppv}", limit = 5, recent_years = 5, basis = "CONTU" }}
''', "copyright.toml")
    for n in range(1, 6):
        await _send(network, f"C-{n}")
        assert await _first(pool, await _txn(pool, req.symbol, f"C-{n}")) == sh.symbol
    # An issue from 2001 is not recent: it does not count, and goes as usual.
    await _send(network, "C-OLD", year="2001")
    assert await _first(pool, await _txn(pool, req.symbol, "C-OLD")) == sh.symbol
    # The sixth recent copy: the pay-per-view supplier first, the others after it.
    await _send(network, "C-6")
    txn = await _txn(pool, req.symbol, "C-6")
    rota = [r["supplier"] for r in await pool.fetch(
        "SELECT supplier FROM rota_entry WHERE transaction_id = $1 ORDER BY position", txn)]
    assert rota[0] == ppv and sh.symbol in rota[1:]
    text = "\n".join(await explain(pool, txn))
    assert ("copyright: 6th copy of ISSN 0028-0836 this year (limit 5, CONTU): routed "
            "to the licensed pay-per-view supplier") in text
    assert await flags.of_transaction(pool, txn) == []
    # Another library is not affected by this one's count.
    other_party = Party(other, client)
    await other_party.send("request", _copy(other_party, "O-1", NATURE, "2025"))
    await other_party.confirmed()
    await other_party.status("ExpectToSupply", "RequestResponse")
    assert await _first(pool, await _txn(pool, other, "O-1")) == sh.symbol
    # Without an accepted category: forwarded, and flagged.
    await _send(network, "C-NONE", issn=SCIENCE, category="for fun")
    none = await _txn(pool, req.symbol, "C-NONE")
    assert await _first(pool, none) == sh.symbol
    [flag] = await flags.of_transaction(pool, none, kinds=[FlagKind.COPYRIGHT])
    assert "without an accepted copyright declaration" in flag.detail
    assert "'for fun'" in flag.detail

    rows = {r.journal: r for r in await copyright.report(pool, requester=req.symbol)}
    nature, science = rows[f"ISSN {NATURE}"], rows[f"ISSN {SCIENCE}"]
    assert (nature.copies, nature.counted, nature.limit, nature.routed, nature.undeclared) \
        == (7, 6, 5, 1, 0)
    assert (science.copies, science.counted, science.flagged, science.undeclared) == \
        (1, 1, 1, 1)
    [theirs] = await copyright.report(pool, requester=other)
    assert (theirs.copies, theirs.counted, theirs.routed) == (1, 1, 0)

    out = tmp_path / "copyright.csv"
    code, _, stderr = await run(settings, "copyright", "report", "--requester",
                                     req.symbol, "--csv", str(out))
    assert code == 0, stderr
    data = out.read_bytes().decode("utf-8")
    assert data.startswith(BOM + "年份 Year,申请馆 Requester,期刊 Journal")
    assert f"ISSN {NATURE},7,6,5,1,0,0,0" in data
    code, _, stderr = await run(settings, "copyright", "report", "--year", "99")
    assert code == 2 and "error: --year 99" in stderr


async def test_hold_answers_retry_possible_and_flags(network: Network,
                                                     pool: asyncpg.Pool) -> None:
    req, sh = network["req"], network["sh"]
    await pool.execute("INSERT INTO holding (id_type, id_value, symbol) VALUES ('issn', $1, $2)",
                       NATURE, sh.symbol)
    await load_policy(pool, f'''
version = "test-copyright-hold"
[[rule]]
name = "hold past two"
when = {{ requester = ["{req.symbol}"] }}
copyright = {{ action = "hold", limit = 2 }}
''', "copyright-hold.toml")
    try:
        await _send(network, "H-1")
        await _send(network, "H-2", year=None)      # no year: counted as recent
        await req.send("request", _copy(req, "H-3", NATURE, "2026"))
        await req.confirmed()
        got = await req.status("RetryPossible", "RequestResponse")
        assert "3rd copy of ISSN 0028-0836 this year (limit 2, rule 'hold past two'): held" \
            in got.content["messageInfo"]["note"]
        txn = await _txn(pool, req.symbol, "H-3")
        assert await pool.fetchval("SELECT count(*) FROM rota_entry WHERE transaction_id = $1 "
                                   "AND outcome <> 'pending'", txn) == 0
        [flag] = await flags.of_transaction(pool, txn, kinds=[FlagKind.COPYRIGHT])
        assert "held for an operator's approval" in flag.detail
        # The held copy is not counted: the next one is the 3rd again.
        await req.send("request", _copy(req, "H-4", NATURE, "2026"))
        await req.confirmed()
        got = await req.status("RetryPossible", "RequestResponse")
        assert "3rd copy" in got.content["messageInfo"]["note"]
        # A rule may refuse a copy request without an accepted category outright.
        await load_policy(pool, f'''
version = "test-copyright-refuse"
[[rule]]
name = "declare or nothing"
when = {{ requester = ["{req.symbol}"] }}
copyright = {{ action = "flag", undeclared = "refuse" }}
''', "copyright-refuse.toml")
        await req.send("request", _copy(req, "H-5", SCIENCE, "2026", category=None))
        got = await req.confirmed(ok=False)
        assert "copyrightCompliance: a copy request needs an accepted copyright category" \
            in got.content["errorData"]["errorValue"]
        assert await _txn(pool, req.symbol, "H-5") is None
    finally:
        await load_policy(pool, 'version = "no rules"', "reset.toml")


async def test_purge_deletes_declarations_older_than_keep_years(pool: asyncpg.Pool,
                                                                settings: Settings) -> None:
    tag = secrets.token_hex(4)
    today = datetime.date(2026, 9, 16)
    insert = """INSERT INTO copyright_copy (transaction_id, requester, journal_key, journal,
                    request_year, recent, copy_number, created_at)
                VALUES ($1, 'CALIS:PURGE', 'issn:0028-0836', 'ISSN 0028-0836', 2020, true,
                        1, $2)"""
    zone = datetime.timezone(datetime.timedelta(hours=8))
    await pool.execute(insert, f"OLD-{tag}", datetime.datetime(2020, 9, 15, 23, 0, tzinfo=zone))
    await pool.execute(insert, f"KEPT-{tag}", datetime.datetime(2020, 9, 16, 1, 0, tzinfo=zone))
    try:
        assert await copyright.purge_declarations(pool, settings, today) >= 1
        left = await pool.fetch("SELECT transaction_id FROM copyright_copy "
                                "WHERE transaction_id LIKE $1", f"%-{tag}")
        assert [r["transaction_id"] for r in left] == [f"KEPT-{tag}"]
        longer = settings.updated(copyright__keep_years=10)
        assert await copyright.purge_declarations(pool, longer, today) == 0
    finally:
        await pool.execute("DELETE FROM copyright_copy WHERE transaction_id LIKE $1", f"%-{tag}")


async def test_two_copies_at_once_are_counted_one_after_the_other(pool: asyncpg.Pool) -> None:
    """The count is taken under the journal's lock and on a snapshot taken after it was
    granted (migration 0036): the second of two concurrent copies counts the first one,
    committed while it waited. With the count on the statement's own snapshot (taken
    before the wait) both would be the first copy."""
    library, journal = f"CALIS:LOCK-{secrets.token_hex(3)}", f"issn:{NATURE}"
    count = f"SELECT {copyright.counted_sql('$1', '$2', '$3', '$4')}"
    args = (int(Lock.COPYRIGHT_COUNT), library, journal, 2026)
    insert = """INSERT INTO copyright_copy (transaction_id, requester, journal_key, journal,
                    request_year, recent, copy_number)
                VALUES ($1, $2, $3, 'ISSN', 2026, true, $4)"""
    first, second = await pool.acquire(), await pool.acquire()
    try:
        t1 = first.transaction()
        await t1.start()
        assert await first.fetchval(count, *args) == 0
        await first.execute(insert, f"{library}-1", library, journal, 1)
        async with second.transaction():
            waiting = asyncio.create_task(second.fetchval(count, *args))
            await asyncio.sleep(0.3)
            assert not waiting.done()  # queued on the lock
            await t1.commit()
            assert await asyncio.wait_for(waiting, 10) == 1
    finally:
        await pool.release(first)
        await pool.release(second)
        await pool.execute("DELETE FROM copyright_copy WHERE requester = $1", library)
