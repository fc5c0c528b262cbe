"""Small PDFs written by hand for the document tests: pages of any size and /Rotate, content streams (text in
Helvetica, ruled tables, filled marks at known user-space places), whole images as pages, an empty document, and
the standard security handler (RC4, 40-bit key, revision 2) for a password-protected file.

Nothing here uses the PDF library the runtime reads PDFs with, so the tests read what another writer wrote.
"""

from __future__ import annotations

import hashlib
import io
import zlib
from dataclasses import dataclass, field

from PIL import Image

PAD = bytes.fromhex("28BF4E5E4E758A4164004E56FFFA01082E2E00B6D0683E802F0CA9FE6453697A")  # PDF 1.7, 7.6.3.3


@dataclass
class PageSpec:
    width: float = 612.0  # points (MediaBox width, unrotated)
    height: float = 792.0
    rotate: int = 0
    content: bytes = b""
    origin: tuple[float, float] = (0.0, 0.0)  # the MediaBox's lower-left corner
    image: Image.Image | None = None  # drawn over the whole page (an RGB image)
    extra: dict = field(default_factory=dict)


def text(x: float, y: float, s: str, size: float = 24) -> bytes:
    esc = s.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)")
    return f"BT /F1 {size:g} Tf {x:g} {y:g} Td ({esc}) Tj ET\n".encode("latin-1")


def rect(x: float, y: float, w: float, h: float, gray: float = 0.0) -> bytes:
    """A filled rectangle (user space: x, y its lower-left corner)."""
    return f"{gray:g} g {x:g} {y:g} {w:g} {h:g} re f 0 g\n".encode()


def table(x: float, y: float, cols: int, rows: int, cw: float, rh: float) -> bytes:
    """A ruled grid of cols x rows cells, its top-left corner at (x, y), with a number in each cell."""
    out = [b"1 w\n"]
    for r in range(rows + 1):
        out.append(f"{x:g} {y - r * rh:g} m {x + cols * cw:g} {y - r * rh:g} l S\n".encode())
    for c in range(cols + 1):
        out.append(f"{x + c * cw:g} {y:g} m {x + c * cw:g} {y - rows * rh:g} l S\n".encode())
    for r in range(rows):
        for c in range(cols):
            out.append(text(x + c * cw + 6, y - (r + 1) * rh + 6, f"{r * cols + c + 1}", 12))
    return b"".join(out)


def _rc4(key: bytes, data: bytes) -> bytes:
    s = list(range(256))
    j = 0
    for i in range(256):
        j = (j + s[i] + key[i % len(key)]) % 256
        s[i], s[j] = s[j], s[i]
    out = bytearray()
    i = j = 0
    for b in data:
        i = (i + 1) % 256
        j = (j + s[i]) % 256
        s[i], s[j] = s[j], s[i]
        out.append(b ^ s[(s[i] + s[j]) % 256])
    return bytes(out)


def _pad(pw: str) -> bytes:
    return (pw.encode("latin-1") + PAD)[:32]


class _Security:
    """Standard security handler, V 1 / R 2 (RC4 with a 40-bit key): PDF 1.7 algorithms 2, 3 and 4."""

    def __init__(self, user: str, owner: str, file_id: bytes, permissions: int = -4) -> None:
        self.p = permissions
        self.o = _rc4(hashlib.md5(_pad(owner)).digest()[:5], _pad(user))
        self.key = hashlib.md5(_pad(user) + self.o + (permissions & 0xFFFFFFFF).to_bytes(4, "little")
                               + file_id).digest()[:5]
        self.u = _rc4(self.key, PAD)

    def encrypt(self, num: int, gen: int, data: bytes) -> bytes:
        k = hashlib.md5(self.key + num.to_bytes(3, "little") + gen.to_bytes(2, "little")).digest()[:10]
        return _rc4(k, data)

    def dictionary(self) -> bytes:
        return (f"<< /Filter /Standard /V 1 /R 2 /O <{self.o.hex()}> /U <{self.u.hex()}> /P {self.p} >>").encode()


def make_pdf(pages: list[PageSpec], password: str | None = None, compress: bool = True) -> bytes:
    """The bytes of a PDF with these pages (no pages: an empty /Pages tree). password: the user password of
    the standard security handler (the owner password is its reverse)."""
    file_id = hashlib.md5(repr([(p.width, p.height, p.rotate, p.content) for p in pages]).encode()).digest()
    sec = _Security(password, password[::-1] or "owner", file_id) if password is not None else None
    objs: dict[int, bytes] = {}
    n = 3  # 1 catalog, 2 pages, 3 font
    kids = []
    for spec in pages:
        page_num, content_num = n + 1, n + 2
        n += 2
        xobj = b""
        content = spec.content
        if spec.image is not None:
            n += 1
            img_num = n
            im = spec.image.convert("RGB")
            raw = zlib.compress(im.tobytes())
            if sec is not None:
                raw = sec.encrypt(img_num, 0, raw)
            objs[img_num] = (f"<< /Type /XObject /Subtype /Image /Width {im.width} /Height {im.height} "
                             f"/ColorSpace /DeviceRGB /BitsPerComponent 8 /Filter /FlateDecode /Length {len(raw)} >>\n"
                             "stream\n").encode() + raw + b"\nendstream"
            xobj = f" /XObject << /Im1 {img_num} 0 R >>".encode()
            x0, y0 = spec.origin
            content = (f"q {spec.width:g} 0 0 {spec.height:g} {x0:g} {y0:g} cm /Im1 Do Q\n".encode() + content)
        data = zlib.compress(content) if compress else content
        filt = b" /Filter /FlateDecode" if compress else b""
        if sec is not None:
            data = sec.encrypt(content_num, 0, data)
        objs[content_num] = b"<< /Length %d%s >>\nstream\n" % (len(data), filt) + data + b"\nendstream"
        x0, y0 = spec.origin
        rot = f" /Rotate {spec.rotate}" if spec.rotate else ""
        objs[page_num] = (f"<< /Type /Page /Parent 2 0 R /MediaBox [{x0:g} {y0:g} {x0 + spec.width:g} "
                          f"{y0 + spec.height:g}]{rot} /Resources << /Font << /F1 3 0 R >>").encode() \
            + xobj + f" >> /Contents {content_num} 0 R >>".encode()
        kids.append(page_num)
    objs[1] = b"<< /Type /Catalog /Pages 2 0 R >>"
    objs[2] = f"<< /Type /Pages /Kids [{' '.join(f'{k} 0 R' for k in kids)}] /Count {len(kids)} >>".encode()
    objs[3] = b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica /Encoding /WinAnsiEncoding >>"
    if sec is not None:
        n += 1
        objs[n] = sec.dictionary()
    buf = io.BytesIO()
    buf.write(b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n")
    offsets = {}
    for num in sorted(objs):
        offsets[num] = buf.tell()
        buf.write(f"{num} 0 obj\n".encode() + objs[num] + b"\nendobj\n")
    xref = buf.tell()
    size = max(objs) + 1
    buf.write(f"xref\n0 {size}\n0000000000 65535 f \n".encode())
    for num in range(1, size):
        buf.write(f"{offsets[num]:010d} 00000 n \n".encode() if num in offsets else b"0000000000 65535 f \n")
    enc = f" /Encrypt {n} 0 R" if sec is not None else ""
    buf.write(f"trailer\n<< /Size {size} /Root 1 0 R{enc} /ID [<{file_id.hex()}> <{file_id.hex()}>] >>\n"
              f"startxref\n{xref}\n%%EOF\n".encode())
    return buf.getvalue()


def sample_pages() -> list[PageSpec]:
    """Four pages: text (US letter), a ruled table (A4), a page with /Rotate 90 (letter) and a small landscape
    page; each has a black 36 x 36 pt mark at its user-space top-left corner (inset 36 pt) to find its
    orientation by."""
    def mark(w: float, h: float, x0: float = 0, y0: float = 0) -> bytes:
        return rect(x0 + 36, y0 + h - 72, 36, 36)

    return [
        PageSpec(612, 792, content=mark(612, 792) + text(100, 700, "Page one: plain text")
                 + text(100, 660, "The quick brown fox jumps over the lazy dog.", 14)),
        PageSpec(595, 842, content=mark(595, 842) + text(100, 760, "Page two: a table") + table(100, 700, 4, 5, 80, 30)),
        PageSpec(612, 792, rotate=90, content=mark(612, 792) + text(100, 700, "Page three: rotated")),
        PageSpec(420, 298, origin=(10, 20), content=mark(420, 298, 10, 20) + text(110, 200, "Page four: small")),
    ]
