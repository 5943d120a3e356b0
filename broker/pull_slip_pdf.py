"""A supplier's pull slips as one PDF: a page per loan, each a shipping label and a
pull slip (broker/pull_slips.py says which loans).

The page is 100 x 150 mm, the common thermal label size of Chinese couriers' printers
(and it fits A6 paper, 105 x 148 mm, with 2.5 mm to spare on each side when printed at
actual size). Its upper part is the shipping label: from the supplier's address on file
to the requester's delivery address, in Chinese, the recipient's large, and the
transaction id as a Code 128 barcode (the id printed under it) for the parcel to be
scanned at both ends. Below a cut line is the pull slip that goes into the book: the
call number large (what the shelver looks for), title, author, ISBN, the requester and
a QR code of the same id for a phone. Pages come in shelf order (call number).

Code 128 bars are at least 0.25 mm wide: two dots of a 203 dpi label printer, the
coarsest in common use, so every bar prints whole.

reportlab draws everything: the CID font STSong-Light as settlement registers it (no
font files), Chinese lines wrapped by its Paragraph (wordWrap CJK), the barcodes by
reportlab.graphics.barcode. Files are reproducible: invariant mode, and the only time
printed is the list's generation time.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from xml.sax.saxutils import escape
from zoneinfo import ZoneInfo

from reportlab.graphics import renderPDF
from reportlab.graphics.barcode.code128 import Code128
from reportlab.graphics.barcode.qr import QrCodeWidget
from reportlab.graphics.shapes import Drawing
from reportlab.lib.styles import ParagraphStyle
from reportlab.lib.units import mm
from reportlab.pdfgen import canvas
from reportlab.platypus import Paragraph

from broker.agency_addresses import PostalAddress
from broker.pull_slips import AddressFrom, Loan, PullList
from settlement.statement_pdf import CJK_FONT, LATIN_BOLD, in_bmp, register_fonts

__all__ = ["LABEL_SIZE", "MIN_BAR_WIDTH", "Rendered", "render", "transaction_barcode"]

LABEL_SIZE = (100 * mm, 150 * mm)
MIN_BAR_WIDTH = 0.25 * mm
MAX_BAR_WIDTH = 0.4 * mm
BAR_HEIGHT = 14 * mm
# Clear space each side of the bars: Code 128 asks for 10 bar widths, 4 mm at the widest.
QUIET_ZONE = 4 * mm
QR_SIZE = 24 * mm
_MARGIN = 5 * mm
_CUT = 52 * mm  # the cut line's height above the page's foot: the slip below it


@dataclass(frozen=True)
class Rendered:
    """A written PDF: its pages and the value of each barcode drawn, in page order."""

    path: Path
    pages: int
    barcodes: tuple[str, ...]
    qr_codes: tuple[str, ...]


def transaction_barcode(transaction_id: str, width: float) -> Code128:
    """The Code 128 barcode of a transaction id, as wide as `width` allows (bars between
    MIN_BAR_WIDTH and MAX_BAR_WIDTH); ValueError if it cannot fit."""
    probe = Code128(transaction_id, barWidth=1, quiet=False, humanReadable=False)
    modules = probe.width  # bars and spaces, in bar widths
    bar = min(MAX_BAR_WIDTH, (width - 2 * QUIET_ZONE) / modules)
    if bar < MIN_BAR_WIDTH:
        raise ValueError(f"transaction id {transaction_id!r} is too long for a "
                         f"{width / mm:.0f} mm barcode")
    return Code128(transaction_id, barWidth=bar, barHeight=BAR_HEIGHT, quiet=True,
                   lquiet=QUIET_ZONE, rquiet=QUIET_ZONE, humanReadable=False)


def render(pull: PullList, path: Path, zone: ZoneInfo) -> Rendered:
    """Write the PDF of `pull` to `path` (atomically: a reader never sees half a file)."""
    register_fonts()
    path.parent.mkdir(parents=True, exist_ok=True)
    part = path.with_name(path.name + ".part")
    pdf = canvas.Canvas(str(part), pagesize=LABEL_SIZE, invariant=1, pageCompression=1)
    pdf.setTitle(f"馆际互借取书单 Pull slips {pull.supplier} {pull.day.isoformat()}")
    pdf.setAuthor("ILL Hub")
    pdf.setCreator("ILL Hub pull slips")
    barcodes: list[str] = []
    qr_codes: list[str] = []
    if not pull.loans:
        _nothing(pdf, pull)
        pdf.showPage()
    for number, loan in enumerate(pull.loans, start=1):
        barcodes.append(_label(pdf, pull, loan, number))
        qr_codes.append(_slip(pdf, pull, loan, zone))
        pdf.showPage()
    pdf.save()
    os.replace(part, path)
    return Rendered(path=path, pages=max(1, len(pull.loans)), barcodes=tuple(barcodes),
                    qr_codes=tuple(qr_codes))


def _style(size: float) -> ParagraphStyle:
    return ParagraphStyle(f"cjk{size:g}", fontName=CJK_FONT, fontSize=size,
                          leading=size * 1.22, wordWrap="CJK")


Block = list[tuple[str, float]]  # paragraphs of text, each at its font size


def _block(pdf: canvas.Canvas, block: Block, x: float, top: float, width: float,
           floor: float) -> float:
    """Paragraphs wrapped to `width` from `top` down, shrunk as far as needed (to 60 %)
    to stay above `floor` (a long Chinese address must not run into the barcode);
    returns the height under the last one."""
    for scale in (1.0, 0.9, 0.8, 0.7, 0.6):
        paras = [Paragraph(escape(in_bmp(text)), _style(size * scale))
                 for text, size in block if text]
        heights = [p.wrap(width, 1000)[1] for p in paras]
        if top - sum(heights) >= floor:
            break
    for para, height in zip(paras, heights, strict=True):
        top -= height
        para.drawOn(pdf, x, top)
    return top


def _text(pdf: canvas.Canvas, x: float, y: float, text: str, size: float) -> None:
    pdf.setFont(CJK_FONT, size)
    pdf.drawString(x, y, in_bmp(text))


def _address(who: str, address: PostalAddress | None, size: float, missing: str) -> Block:
    """An address as Chinese post writes it: the agency, who takes it and the phone,
    the address from province down, the postcode."""
    if address is None:
        return [(who, size * 1.15), (missing, size * 0.8)]
    contact = "  ".join(x for x in (address.recipient,
                                    f"电话 Tel {address.phone}" if address.phone else "") if x)
    return [(who, size * 1.15), (contact, size), (address.street(), size),
            (address.post(), size * 0.9)]


def _label(pdf: canvas.Canvas, pull: PullList, loan: Loan, number: int) -> str:
    """The shipping label (upper part); returns the barcode's encoded value."""
    width, height = LABEL_SIZE
    top = height - _MARGIN
    column = _MARGIN + 12 * mm
    text_width = width - column - _MARGIN
    _text(pdf, _MARGIN, top - 9, "馆际互借 图书寄送 ILL book loan", 9)
    pdf.setFont(CJK_FONT, 7)
    pdf.drawRightString(width - _MARGIN, top - 9,
                        f"{pull.day.isoformat()}  {number}/{len(pull.loans)}")
    pdf.setLineWidth(0.6)
    pdf.line(_MARGIN, top - 13, width - _MARGIN, top - 13)
    _text(pdf, _MARGIN, top - 24, "寄件", 8)
    _text(pdf, _MARGIN, top - 33, "From", 7)
    y = _block(pdf, _address(pull.supplier_name, pull.ship_from, 7.5,
                             "（寄件地址未登记：run.py agency address set）"),
               column, top - 16, text_width, top - 34 * mm)
    pdf.line(_MARGIN, y - 4, width - _MARGIN, y - 4)
    _text(pdf, _MARGIN, y - 20, "收件", 12)
    _text(pdf, _MARGIN, y - 31, "To", 9)
    code = transaction_barcode(loan.transaction_id, width - 2 * _MARGIN)
    bar_y = _CUT + 12 * mm
    _block(pdf, _address(loan.requester_name, loan.deliver_to, 12,
                         "（收件地址未知，请向申请馆确认 delivery address unknown: ask the "
                         "requester）"),
           column, y - 8, text_width, bar_y + BAR_HEIGHT + 3 * mm)
    code.drawOn(pdf, (width - code.width) / 2, bar_y)
    pdf.setFont(LATIN_BOLD, 10)
    pdf.drawCentredString(width / 2, bar_y - 11, loan.transaction_id)
    pdf.setFont(CJK_FONT, 7)
    pdf.drawCentredString(width / 2, bar_y - 20,
                          f"申请号 Request {loan.request_id}  ({loan.requester})")
    pdf.setDash(3, 2)
    pdf.line(0, _CUT, width, _CUT)
    pdf.setDash()
    _text(pdf, _MARGIN, _CUT + 2, "沿虚线剪下，取书单夹入书中 cut here: the slip goes into "
                                  "the book", 6)
    value: str = code.value
    return value


def _slip(pdf: canvas.Canvas, pull: PullList, loan: Loan, zone: ZoneInfo) -> str:
    """The pull slip (below the cut line); returns the QR code's value."""
    width = LABEL_SIZE[0]
    text_width = width - 2 * _MARGIN - QR_SIZE - 2 * mm
    top = _CUT - 4 * mm
    _text(pdf, _MARGIN, top - 8, "取书单 Pull slip", 8)
    details = "  ".join(d for d in (f"著者 {loan.author}" if loan.author else "",
                                     f"版本 {loan.edition}" if loan.edition else "",
                                     f"ISBN {loan.isbn}" if loan.isbn else "") if d)
    due = (f"应还 Due {loan.due_at.astimezone(zone):%Y-%m-%d}" if loan.due_at
           else "应还日期：借出时确定 due date set when loaned")
    where = {AddressFrom.REQUEST: "地址据申请 address from the request",
             AddressFrom.ON_FILE: "地址据登记 address on file",
             AddressFrom.NONE: "地址未知 no address"}[loan.address_from]
    _block(pdf, [
        (f"索书号 {loan.call_number or '（未提供 not given）'}", 12),
        (f"题名 {loan.title}", 8.5),
        (details, 7.5),
        (f"申请馆 {loan.requester_name}  {loan.requester}", 7.5),
        (f"{due}；{where}", 7),
        (f"转发 Forwarded {loan.forwarded_at.astimezone(zone):%Y-%m-%d %H:%M}；"
         f"打印 Printed {pull.generated_at.astimezone(zone):%Y-%m-%d %H:%M}", 6.5),
    ], _MARGIN, top - 10, text_width, _MARGIN)
    qr = QrCodeWidget(loan.transaction_id)
    x0, y0, x1, y1 = qr.getBounds()
    drawing = Drawing(QR_SIZE, QR_SIZE, transform=[QR_SIZE / (x1 - x0), 0, 0,
                                                   QR_SIZE / (y1 - y0), 0, 0])
    drawing.add(qr)
    renderPDF.draw(drawing, pdf, width - _MARGIN - QR_SIZE, top - QR_SIZE)
    pdf.setFont(CJK_FONT, 6)
    pdf.drawCentredString(width - _MARGIN - QR_SIZE / 2, top - QR_SIZE - 7,
                          loan.transaction_id)
    value: str = qr.value
    return value


def _nothing(pdf: canvas.Canvas, pull: PullList) -> None:
    width, height = LABEL_SIZE
    _block(pdf, [(f"{pull.supplier_name}（{pull.supplier}）{pull.day.isoformat()}：今日无待取"
                  "图书。No loans to pull today.", 11)],
           _MARGIN, height - _MARGIN, width - 2 * _MARGIN, _MARGIN)
