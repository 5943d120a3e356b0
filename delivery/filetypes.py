"""Which files the drop accepts, judged by their first bytes rather than their names."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from schemas.settings import FileTypeName


@dataclass(frozen=True)
class FileType:
    name: FileTypeName
    mime: str
    label: str
    magic: tuple[bytes, ...]
    extension: str


KNOWN_TYPES: dict[FileTypeName, FileType] = {
    t.name: t for t in (
        FileType(FileTypeName.PDF, "application/pdf", "PDF", (b"%PDF-",), ".pdf"),
        FileType(FileTypeName.TIFF, "image/tiff", "TIFF", (b"II*\x00", b"MM\x00*"), ".tif"),
        FileType(FileTypeName.JPEG, "image/jpeg", "JPEG", (b"\xff\xd8\xff",), ".jpg"),
        FileType(FileTypeName.PNG, "image/png", "PNG", (b"\x89PNG\r\n\x1a\n",), ".png"),
    )
}
HEAD_BYTES = 16


def sniff(head: bytes, allowed: Sequence[FileTypeName]) -> FileType | None:
    for name in allowed:
        kind = KNOWN_TYPES[name]
        if any(head.startswith(m) for m in kind.magic):
            return kind
    return None


def describe_mismatch(head: bytes, allowed: Sequence[FileTypeName]) -> str:
    """`is not a PDF (starts with 'PK\\x03\\x04')`: what a supplier needs to see."""
    labels = [KNOWN_TYPES[n].label for n in allowed]
    wanted = f"a {labels[0]}" if len(labels) == 1 else f"one of {', '.join(labels)}"
    shown = repr(head[:8])[2:-1]  # bytes repr without b'' keeps escapes readable
    return f"is not {wanted} (starts with '{shown}')"
