"""The 'scanned' articles that simulated suppliers deliver: small, valid one-page PDFs."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sim.messages import symbol_of


def document_pdf(message: dict[str, Any], supplier: str, supplier_name: str,
                 names: dict[str, str]) -> bytes:
    """The article a request asks for, with its citation; `names`: symbol -> library name."""
    req = message.get("request", {})
    bib = req.get("bibliographicInfo", {})
    requester = symbol_of(req.get("header", {}).get("requestingAgencyId")) or ""
    cjk_lines: list[tuple[float, str]] = [
        (18, str(bib.get("titleOfComponent") or bib.get("title") or "文献")),
        (12, str(bib.get("authorOfComponent") or bib.get("author") or "")),
        (12, f"{bib.get('title', '')}  第{bib.get('volume', '-')}卷 "
             f"第{bib.get('issue', '-')}期  页码 {bib.get('pagesRequested', '-')}"),
        (11, f"提供馆：{supplier_name}    申请馆：{names.get(requester, requester)}"),
        (11, "本文件由 ILL Hub 模拟系统生成，仅供演示文献传递流程。")]
    filler = ("馆际互借与文献传递是图书馆资源共享的重要方式。" * 3)
    cjk_lines += [(10.5, filler[i:i + 38]) for i in range(0, len(filler), 38)]
    ids = ", ".join(i.get("bibliographicItemIdentifier", "") for i in
                    bib.get("bibliographicItemId") or [])
    ascii_lines = [f"ILL Hub simulation - document delivery - {ids}",
                   f"Supplied {datetime.now(UTC):%Y-%m-%d %H:%M} UTC by {supplier}"]
    return make_pdf(cjk_lines, ascii_lines, title=str(cjk_lines[0][1]))


def _pdf_text(text: str) -> str:
    return "(" + text.encode("latin-1", "replace").decode("latin-1").replace(
        "\\", "\\\\").replace("(", "\\(").replace(")", "\\)") + ")"


def _pdf_hex(text: str) -> str:
    return "<" + text.encode("utf-16-be", "replace").hex().upper() + ">"


def _page_stream(cjk_lines: list[tuple[float, str]], ascii_lines: list[str]) -> bytes:
    ops = ["BT", "/F1 9 Tf", "56 800 Td", f"{_pdf_text(ascii_lines[0])} Tj", "ET"]
    y = 760.0
    for size, line in cjk_lines:
        if line:
            ops += ["BT", f"/F2 {size:g} Tf", f"56 {y:.0f} Td", f"{_pdf_hex(line)} Tj", "ET"]
        y -= size * 1.9
    for line in ascii_lines[1:]:
        ops += ["BT", "/F1 9 Tf", f"56 {y - 10:.0f} Td", f"{_pdf_text(line)} Tj", "ET"]
        y -= 14
    return "\n".join(ops).encode("latin-1")


def make_pdf(cjk_lines: list[tuple[float, str]], ascii_lines: list[str], *,
             title: str = "") -> bytes:
    """A PDF 1.4 page with Chinese lines (Adobe's STSong-Light, not embedded: every
    PDF reader has it or a substitute) and Latin lines in Helvetica."""
    stream = _page_stream(cjk_lines, ascii_lines)
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 595 842] "
        b"/Resources << /Font << /F1 5 0 R /F2 6 0 R >> >> /Contents 4 0 R >>",
        b"<< /Length %d >>\nstream\n" % len(stream) + stream + b"\nendstream",
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica /Encoding /WinAnsiEncoding >>",
        b"<< /Type /Font /Subtype /Type0 /BaseFont /STSong-Light /Encoding /UniGB-UCS2-H "
        b"/DescendantFonts [7 0 R] >>",
        b"<< /Type /Font /Subtype /CIDFontType0 /BaseFont /STSong-Light "
        b"/CIDSystemInfo << /Registry (Adobe) /Ordering (GB1) /Supplement 2 >> "
        b"/FontDescriptor 8 0 R /DW 1000 /W [1 95 500] >>",
        b"<< /Type /FontDescriptor /FontName /STSong-Light /Flags 6 "
        b"/FontBBox [-25 -254 1000 880] /ItalicAngle 0 /Ascent 880 /Descent -120 "
        b"/CapHeight 880 /StemV 93 >>",
        ("<< /Title " + _pdf_hex("\ufeff" + title)
         + f" /Producer (ILL Hub simulation) /CreationDate (D:{datetime.now(UTC):%Y%m%d%H%M%S}Z)"
           " >>").encode("latin-1"),
    ]
    out = bytearray(b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n")
    offsets = []
    for n, obj in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % n + obj + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % off for off in offsets)
    out += (b"trailer\n<< /Size %d /Root 1 0 R /Info %d 0 R >>\nstartxref\n%d\n%%%%EOF\n"
            % (len(objects) + 1, len(objects), xref))
    return bytes(out)
