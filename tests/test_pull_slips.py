"""Pull slips and shipping labels (issue 19 item 7): agencies' postal addresses, the loans
a supplier must pull, the PDF read back (Chinese addresses, and the Code 128 barcode
decoded from the bars drawn on the page), `run.py pull-slips` and the daily mail."""

from __future__ import annotations

import email
import json
import re
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, timedelta
from email.message import Message
from email.policy import default
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import asyncpg
import pytest
from pypdf import PdfReader
from reportlab.graphics.barcode.code128 import _patterns as CODE128_PATTERNS
from reportlab.lib.units import mm

from app.cli import run_command
from broker import agency_addresses as addresses
from broker.agency_addresses import AddressError, PostalAddress, check_phone, check_postcode
from broker.dispatch.dispatcher import Dispatcher
from broker.intake import Inbound, Intake
from broker.pull_slip_mail import MAIL_KIND, send_pull_slips, slip_path
from broker.pull_slip_pdf import BAR_HEIGHT, MIN_BAR_WIDTH, render, transaction_barcode
from broker.pull_slips import (
    AddressFrom,
    Loan,
    NotASupplier,
    PullList,
    pull_list,
    suppliers_to_pull,
)
from schemas.settings import Settings
from tests.support import messages
from tests.support.agencies import sql_agencies

ZONE = ZoneInfo("Asia/Shanghai")

SHANGHAI = PostalAddress(recipient="文献提供中心 王老师", line1="淮海中路1555号",
                         line2="上海图书馆 馆际互借部", city="上海", province="上海",
                         postcode="200031", phone="021-64455555")
BEIJING = PostalAddress(recipient="馆际互借处 李老师", line1="颐和园路5号",
                        line2="北京大学图书馆东楼一层", city="北京", province="北京",
                        postcode="100871", phone="010-62751234")
# Where the requester asks this one loan to go: not its address on file.
ASKED = {"line1": "海淀区中关村北大街151号", "line2": "燕园大厦三层 分馆",
         "locality": "北京", "region": "北京", "postalCode": "100080", "country": "CN"}


# ---- the barcode, read from the bars on the page ---------------------------------------

_BAR = re.compile(r"(-?[\d.]+) (-?[\d.]+) (-?[\d.]+) (-?[\d.]+) re")
_SYMBOLS = {pattern: value for value, pattern in CODE128_PATTERNS.items()}


def decode_code128(content: str) -> list[str]:
    """The Code 128 barcode on a page (a label has one; [] if none), decoded from its
    bars (the `re` rectangles as tall as BAR_HEIGHT) by their widths and the gaps between
    them: what a scanner reads, without rendering the page. The symbol table is
    reportlab's; the check digit is verified."""
    bars = sorted((float(x), float(w)) for x, y, w, h in _BAR.findall(content)
                  if abs(float(h) - BAR_HEIGHT) < 0.01)
    if not bars:
        return []
    module = min(w for _x, w in bars)
    runs: list[str] = []  # 'A'..'D' a bar of 1..4 modules, 'a'..'d' a space
    for (x, w), (nx, _nw) in zip(bars, [*bars[1:], (bars[-1][0] + bars[-1][1], 0.0)],
                                 strict=True):
        runs.append("ABCD"[round(w / module) - 1])
        gap = round((nx - x - w) / module)
        if gap:
            runs.append("abcd"[gap - 1])
    values = []
    text = "".join(runs)
    while text:
        size = 7 if text.startswith(CODE128_PATTERNS[106]) else 6
        values.append(_SYMBOLS[text[:size]])
        text = text[size:]
    assert values[-1] == 106, "no stop symbol"
    start, data, check = values[0], values[1:-2], values[-2]
    assert (start + sum(i * v for i, v in enumerate(data, 1))) % 103 == check, "checksum"
    code = {103: "A", 104: "B", 105: "C"}[start]
    out = []
    for v in data:
        switch = {99: "C", 100: "B", 101: "A"}.get(v)
        if switch is not None and switch != code:
            code = switch
        elif code == "C":
            out.append(f"{v:02d}")
        else:
            out.append(chr(v + 32) if code == "B" or v < 64 else chr(v - 64))
    return ["".join(out)]


def pdf_pages(path: Path) -> list[tuple[str, str]]:
    """(text, content stream) of each page."""
    pages = []
    for page in PdfReader(str(path)).pages:
        content = page.get_contents()
        assert content is not None
        pages.append((page.extract_text(), content.get_data().decode("latin-1")))
    return pages


def flat(text: str) -> str:
    """Text without the line breaks and spaces the PDF's wrapping put in."""
    return re.sub(r"\s+", "", text)


# ---- pure: addresses, the PDF of a hand-made list --------------------------------------

@pytest.mark.parametrize("phone", ["13812345678", "138 1234 5678", "+86 138 1234 5678",
                                   "010-62751234", "(010) 6275 1234", "+86 10 6275 1234",
                                   "0571-88888888 转 123", "400-810-5588", "021-64455555 ext. 12"])
def test_chinese_phones_a_courier_can_call_are_accepted(phone: str) -> None:
    check_phone(phone, "CN")


@pytest.mark.parametrize(("phone", "why"), [
    ("12345", "not a Chinese phone number"), ("6275 1234", "not a Chinese phone number"),
    ("+1 555 123 4567", r"starts \+86"), ("电话", "digits"), ("010-6275-12a4", "digits")])
def test_other_phones_are_refused_with_the_reason(phone: str, why: str) -> None:
    with pytest.raises(AddressError, match=why):
        check_phone(phone, "CN")


def test_postcodes_have_six_digits_in_china_only() -> None:
    check_postcode("200031", "CN")
    check_postcode("SW1A 1AA", "GB")
    for bad in ("20003", "2000311", "2OOO31"):
        with pytest.raises(AddressError, match="6 digits"):
            check_postcode(bad, "CN")


def test_an_address_needs_its_lines_city_province_postcode_and_phone() -> None:
    assert SHANGHAI.check() == SHANGHAI
    with pytest.raises(AddressError, match="--phone is required"):
        PostalAddress(line1="淮海中路1555号", city="上海", province="上海",
                      postcode="200031").check()
    with pytest.raises(AddressError, match="--country"):
        PostalAddress(line1="x", city="x", province="x", postcode="1", phone="123456",
                      country="China").check()
    # One city-province (上海/上海) is written once, as Chinese post writes it.
    assert SHANGHAI.street() == "上海 淮海中路1555号 上海图书馆 馆际互借部"
    asked = PostalAddress.from_iso(ASKED)
    assert asked is not None and asked.street() == "北京 海淀区中关村北大街151号 燕园大厦三层 分馆"
    assert asked.post() == "邮编 100080"
    assert PostalAddress.from_iso({"locality": "北京"}) is None


def _loan(n: int, **given: Any) -> Loan:
    values: dict[str, Any] = dict(
        transaction_id=f"ILL-20261201-3F9A2C7B{n:02d}", request_id=f"REQ-{n}",
        requester="CALIS:100010", requester_name="北京大学图书馆", title=f"红楼梦 第{n}卷",
        author="曹雪芹", edition="第3版", call_number=f"I242.47/{n}", isbn="9787020002207",
        service_type="Loan", state="ExpectToSupply",
        forwarded_at=datetime(2026, 12, 1, 1, 0, tzinfo=UTC), due_at=None,
        deliver_to=BEIJING, address_from=AddressFrom.ON_FILE)
    return Loan(**{**values, **given})


def _pull(*loans: Loan) -> PullList:
    return PullList(supplier="ISIL:CN-SHL", supplier_name="上海图书馆", supplier_email=None,
                    ship_from=SHANGHAI, day=date(2026, 12, 1),
                    generated_at=datetime(2026, 12, 1, 0, 30, tzinfo=UTC), loans=loans)


def test_the_pdf_has_a_label_and_slip_per_loan_with_chinese_addresses_and_barcodes(
        tmp_path: Path) -> None:
    long_address = replace(BEIJING, line1="颐和园路5号" + "北京大学图书馆东楼一层馆际互借处" * 4)
    loans = (_loan(1), _loan(2, due_at=datetime(2027, 1, 15, 8, 0, tzinfo=UTC),
                             deliver_to=long_address, address_from=AddressFrom.REQUEST),
             _loan(3, deliver_to=None, address_from=AddressFrom.NONE, call_number=None))
    done = render(_pull(*loans), tmp_path / "slips.pdf", ZONE)
    assert done.pages == 3
    assert done.barcodes == done.qr_codes == tuple(x.transaction_id for x in loans)
    pages = pdf_pages(tmp_path / "slips.pdf")
    assert len(pages) == 3
    for (text, content), loan in zip(pages, loans, strict=True):
        assert decode_code128(content) == [loan.transaction_id]
        assert loan.transaction_id in text  # printed under the barcode
        assert "上海图书馆" in text and "淮海中路1555号" in text and "200031" in text
        assert loan.title in text and "曹雪芹" in text
    assert flat("北京 颐和园路5号 北京大学图书馆东楼一层") in flat(pages[0][0])
    assert "邮编 100871" in pages[0][0] and "010-62751234" in pages[0][0]
    assert "索书号 I242.47/1" in pages[0][0]
    # However long the address, it stays above the barcode (shrunk), whole.
    assert flat(long_address.street()) in flat(pages[1][0])
    assert "应还 Due 2027-01-15" in pages[1][0]
    assert "收件地址未知" in pages[2][0] and "未提供" in pages[2][0]


def test_the_barcode_encodes_the_transaction_id_in_bars_a_label_printer_prints_whole(
        ) -> None:
    code = transaction_barcode("ILL-20261201-3F9A2C7B01", 90 * mm)
    assert code.value == "ILL-20261201-3F9A2C7B01"
    assert code.barWidth >= MIN_BAR_WIDTH and code.width <= 90 * mm + 1e-6
    with pytest.raises(ValueError, match="too long"):
        transaction_barcode("ILL-20261201-3F9A2C7B01", 40 * mm)


def test_an_empty_list_is_one_page_saying_so(tmp_path: Path) -> None:
    done = render(_pull(), tmp_path / "none.pdf", ZONE)
    assert done.pages == 1 and done.barcodes == ()
    assert "今日无待取图书" in flat(pdf_pages(tmp_path / "none.pdf")[0][0])


# ---- pg: loans driven through the real intake and dispatch -----------------------------

@dataclass
class World:
    supplier: str
    other: str  # a second supplier, where an Unfilled loan goes next
    requester: str
    intake: Intake
    pool: asyncpg.Pool
    sent: int = 0

    async def deliver(self, sender: str, body: dict[str, Any]) -> None:
        kind = next(iter(body))
        self.sent += 1
        outcome = await self.intake.process(self.pool, Inbound(
            body=json.dumps(body, ensure_ascii=False).encode(), sender=sender,
            message_id=f"ps-{uuid.uuid4().hex}", routing_key=kind,
            content_type="application/json", message_type=kind,
            correlation_id=body[kind]["header"]["requestingAgencyRequestId"]))
        assert outcome == "ok", body

    async def request(self, request_id: str, service_type: str = "Loan",
                      **extra: Any) -> str:
        body = messages.request(self.requester, request_id=request_id, supplier=self.supplier,
                                service_type=service_type, title=f"红楼梦 {request_id}",
                                issn=None, max_cost=None, patron_id=request_id, **extra)
        body["request"]["bibliographicInfo"].update(
            author="曹雪芹", edition="第3版",
            bibliographicItemId=[{"bibliographicItemIdentifier": "9787020002207",
                                  "bibliographicItemIdentifierCode": "isbn"}])
        await self.deliver(self.requester, body)
        txn: str = await self.pool.fetchval(
            "SELECT id FROM ill_transaction WHERE requester = $1 AND request_id = $2",
            self.requester, request_id)
        return txn

    async def supplier_says(self, request_id: str, status: str, **info: Any) -> None:
        await self.deliver(self.supplier, messages.supplier_message(
            self.supplier, self.requester, request_id, status, "RequestResponse", **info))


@pytest.fixture
async def world(settings: Settings, pool: asyncpg.Pool) -> AsyncIterator[World]:
    """A supplier in Shanghai, another, a requester in Beijing; enabled for this test
    only (sql_agencies' rows are disabled, so no other test routes to them)."""
    supplier, other, requester = await sql_agencies(
        pool, "上海图书馆", "南京图书馆", "北京大学图书馆")
    await pool.execute("UPDATE agency SET email = $2 WHERE symbol = $1", supplier,
                       "ill@library.sh.cn")
    await addresses.put(pool, supplier, SHANGHAI)
    await addresses.put(pool, requester, BEIJING)
    await pool.execute("UPDATE agency SET enabled = true WHERE symbol = ANY($1::text[])",
                       [supplier, other, requester])
    try:
        yield World(supplier, other, requester, Intake(settings, Dispatcher(settings)), pool)
    finally:
        await pool.execute("UPDATE agency SET enabled = false WHERE symbol = ANY($1::text[])",
                           [supplier, other, requester])


async def _loans_to_pull(world: World) -> dict[str, str]:
    """request id -> transaction id of each loan on the list of the pull state."""
    ids = {}
    ids["asked-address"] = await world.request("asked-address", requestedDeliveryInfo=[
        {"sortOrder": 2, "address": {"physicalAddress": {"line1": "别处", "postalCode":
                                                          "100000"}}},
        {"sortOrder": 1, "address": {"physicalAddress": ASKED}}],
        requestingAgencyInfo={"name": "北京大学图书馆", "contactName": "分馆 赵老师"},
        supplierInfo=[{"supplierCode": {"agencyIdType": "OTHER", "agencyIdValue": "X"},
                       "callNumber": "K20/9"},
                      {"supplierCode": messages.agency_id(world.supplier),
                       "callNumber": "I242.47/C2"}])
    ids["on-file"] = await world.request("on-file")
    ids["will-supply"] = await world.request("will-supply")
    await world.supplier_says("will-supply", "WillSupply", answerYesNo="Y")
    ids["copy-or-loan"] = await world.request("copy-or-loan", service_type="CopyOrLoan")
    # Not to pull: a copy, a loan already Loaned, one Unfilled (gone to the next
    # supplier), one the requester asked to cancel.
    await world.request("copy", service_type="Copy")
    await world.request("loaned")
    await world.supplier_says("loaned", "Loaned")
    await world.request("unfilled")
    await world.supplier_says("unfilled", "Unfilled", answerYesNo="N",
                              reasonUnfilled="NotOnShelf")
    await world.request("cancelled")
    await world.deliver(world.requester, messages.requester_action(
        world.requester, world.supplier, "cancelled", "Cancel"))
    return ids


async def test_the_pull_list_holds_the_loans_forwarded_and_not_yet_answered(
        world: World, pool: asyncpg.Pool, tmp_path: Path) -> None:
    ids = await _loans_to_pull(world)
    today = datetime.now(UTC).astimezone(ZONE).date()
    async with pool.acquire() as conn:
        pull = await pull_list(conn, world.supplier, today, ZONE, datetime.now(UTC))
        yesterday = await pull_list(conn, world.supplier, today - timedelta(days=1), ZONE,
                                    datetime.now(UTC))
        assert world.supplier in await suppliers_to_pull(conn, today, ZONE)
        with pytest.raises(NotASupplier, match="no agency"):
            await pull_list(conn, "NOPE:1", today, ZONE, datetime.now(UTC))
    assert yesterday.loans == ()  # forwarded today: not on an earlier day's list
    by_request = {x.request_id: x for x in pull.loans}
    assert by_request.keys() == ids.keys()
    assert {x.transaction_id for x in pull.loans} == set(ids.values())
    asked = by_request["asked-address"]
    assert asked.address_from is AddressFrom.REQUEST
    assert asked.deliver_to is not None
    assert asked.deliver_to.street() == "北京 海淀区中关村北大街151号 燕园大厦三层 分馆"
    assert asked.deliver_to.recipient == "分馆 赵老师"
    assert asked.deliver_to.phone == BEIJING.phone  # the phone comes from the file
    assert asked.call_number == "I242.47/C2"  # the supplier's own entry
    assert asked.isbn == "9787020002207" and asked.author == "曹雪芹"
    assert by_request["on-file"].address_from is AddressFrom.ON_FILE
    assert by_request["on-file"].deliver_to == BEIJING
    assert by_request["will-supply"].state == "WillSupply"
    assert pull.loans[0] is asked  # shelf order: call numbers first
    assert pull.ship_from == SHANGHAI and pull.supplier_email == "ill@library.sh.cn"

    done = render(pull, tmp_path / "today.pdf", ZONE)
    pages = pdf_pages(tmp_path / "today.pdf")
    assert [decode_code128(c)[0] for _t, c in pages] == list(done.barcodes) \
        == [x.transaction_id for x in pull.loans]
    first = pages[0][0]
    assert "海淀区中关村北大街151号" in first and "100080" in first and "分馆 赵老师" in first
    assert "淮海中路1555号" in first and "红楼梦 asked-address" in first
    assert flat("北京 颐和园路5号 北京大学图书馆东楼一层") in flat(
        pages[[x.request_id for x in pull.loans].index("on-file")][0])


async def test_the_daily_mail_goes_once_per_supplier_and_day(
        world: World, settings: Settings, pool: asyncpg.Pool) -> None:
    ids = await _loans_to_pull(world)
    today = datetime.now(UTC).astimezone(ZONE).date()
    sent = await send_pull_slips(pool, settings, today, suppliers=[world.supplier, world.other])
    assert [(s.supplier, s.loans) for s in sent] == [(world.supplier, len(ids))]
    assert sent[0].path == slip_path(settings, today, world.supplier)
    assert sent[0].path.name == world.supplier.replace(":", "_") + ".pdf"
    assert await send_pull_slips(pool, settings, today, suppliers=[world.supplier]) == []
    rows = await pool.fetch("SELECT recipients, raw FROM mail_outbox WHERE kind = $1 AND "
                            "id = $2", MAIL_KIND, sent[0].mail_id)
    assert len(rows) == 1 and rows[0]["recipients"] == ["ill@library.sh.cn"]
    mail: Message = email.message_from_bytes(rows[0]["raw"], policy=default)
    assert "馆际互借取书单" in str(mail["Subject"])
    attached = [p for p in mail.walk() if p.get_content_type() == "application/pdf"]
    assert len(attached) == 1
    assert attached[0].get_filename() == (f"馆际互借取书单-{world.supplier.replace(':', '_')}"
                                          f"-{today.isoformat()}.pdf")
    payload = attached[0].get_payload(decode=True)
    assert isinstance(payload, bytes) and payload == sent[0].path.read_bytes()
    claims = await pool.fetch("SELECT supplier, loans, mail_id FROM pull_slip_mail WHERE "
                              "supplier = ANY($1::text[])", [world.supplier, world.other])
    assert [tuple(r) for r in claims] == [(world.supplier, len(ids), sent[0].mail_id)]


async def test_cli_pull_slips_and_agency_address(
        world: World, settings: Settings, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    ids = await _loans_to_pull(world)
    out = tmp_path / "cli.pdf"
    assert await run_command(settings, ["pull-slips", world.supplier, "--out", str(out)]) == 0
    said = capsys.readouterr().out
    assert f"{len(ids)} loan(s) to pull" in said and "I242.47/C2" in said
    assert {decode_code128(c)[0] for _t, c in pdf_pages(out)} == set(ids.values())
    assert await run_command(settings, ["pull-slips", world.supplier, "--date",
                                        "2026-13-01"]) == 2
    assert "--date '2026-13-01'" in capsys.readouterr().err
    assert await run_command(settings, ["pull-slips", "NOPE:1"]) == 2
    assert "no agency NOPE:1" in capsys.readouterr().err
    # Mailed from the CLI as the daily job would: once.
    assert await run_command(settings, ["pull-slips", world.supplier, "--mail"]) == 0
    assert "mailed to ill@library.sh.cn" in capsys.readouterr().out
    assert await run_command(settings, ["pull-slips", world.supplier, "--mail"]) == 0
    assert "mailed already" in capsys.readouterr().out
    assert await run_command(settings, ["pull-slips", world.other, "--mail"]) == 1
    assert "no e-mail address" in capsys.readouterr().err

    assert await run_command(settings, ["agency", "address", "show", world.other]) == 1
    assert "has no postal address" in capsys.readouterr().err
    assert await run_command(settings, [
        "agency", "address", "set", world.other, "--recipient", "馆际互借部", "--line1",
        "中山东路189号", "--city", "南京", "--province", "江苏", "--postcode", "21001",
        "--phone", "025-84356000"]) == 2
    assert "6 digits" in capsys.readouterr().err
    assert await run_command(settings, [
        "agency", "address", "set", world.other, "--recipient", "馆际互借部", "--line1",
        "中山东路189号", "--city", "南京", "--province", "江苏", "--postcode", "210018",
        "--phone", "025-84356000"]) == 0
    assert "江苏 南京 中山东路189号" in capsys.readouterr().out
    # Options not given keep their value.
    assert await run_command(settings, ["agency", "address", "set", world.other,
                                        "--phone", "13812345678"]) == 0
    capsys.readouterr()
    assert await run_command(settings, ["agency", "address", "show", world.other]) == 0
    shown = capsys.readouterr().out
    assert "江苏 南京 中山东路189号" in shown and "13812345678" in shown and "210018" in shown
    assert await run_command(settings, ["agency", "address", "set", "NOPE:1", "--line1", "x",
                                        "--city", "x", "--province", "x", "--postcode",
                                        "100000", "--phone", "13812345678"]) == 2
    assert "no agency NOPE:1" in capsys.readouterr().err
