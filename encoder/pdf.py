"""PDF pages as images, rendered with PDFium (the pypdfium2 package), as the official DeepSeek-OCR PDF runner
renders them with PyMuPDF: at ``dpi / 72`` pixels per point (default 144 dpi), the page's own /Rotate applied,
annotations drawn, on a white background, RGB. A page's pixel size is ``ceil(width_pt * dpi / 72)`` by
``ceil(height_pt * dpi / 72)`` of the page as displayed (its crop box, rotated).

Grounding boxes come back in the rendered page's pixels; ``PageGeometry.to_points`` turns them into PDF user
space (points, y up, the crop box's origin and the page rotation undone) through PDFium's own device-to-page
transform for that rendering, so a box can be drawn back onto the PDF.

Every failure is a ``PdfError`` (a ValueError) whose message names the file and the problem: not found, empty
(0 bytes), password-protected, an unsupported security scheme, damaged / not a PDF, no pages, a page number
past the end, a page too large to render at the asked dpi.
"""

from __future__ import annotations

import ctypes
import math
import os
from dataclasses import dataclass
from typing import Any

from PIL import Image

from .images import MAX_PIXELS

DEFAULT_DPI = 144  # the official DeepSeek-OCR PDF runner's (run_dpsk_ocr_pdf.py: pdf_to_images_high_quality)
MIN_DPI, MAX_DPI = 18, 1200


class PdfError(ValueError):
    """A PDF (or one of its pages) that cannot be used; the message names the file."""


def _pdfium() -> Any:
    try:
        import pypdfium2
    except ImportError as e:  # a run-time dependency: only a broken install lacks it
        raise PdfError(f"reading PDFs needs the pypdfium2 package ({e}); pip install pypdfium2") from None
    return pypdfium2


@dataclass(frozen=True)
class PageGeometry:
    """How a rendered page's pixels map to the PDF page: the size in pixels, the dpi, the page's /Rotate, its
    displayed size in points, and the affine device -> user-space transform
    (x_pt = a*px + c*py + e, y_pt = b*px + d*py + f)."""

    width_px: int
    height_px: int
    dpi: float
    rotation: int
    width_pt: float
    height_pt: float
    affine: tuple[float, float, float, float, float, float]

    def point(self, x: float, y: float) -> tuple[float, float]:
        a, b, c, d, e, f = self.affine
        return a * x + c * y + e, b * x + d * y + f

    def to_points(self, box: tuple[float, float, float, float]) -> tuple[float, float, float, float]:
        """A box in page pixels (x1, y1, x2, y2; y down) as PDF user-space points (x1, y1, x2, y2 with
        x1 <= x2, y1 <= y2; y up)."""
        x1, y1, x2, y2 = box
        pts = [self.point(x, y) for x, y in ((x1, y1), (x2, y2))]
        xs, ys = sorted(p[0] for p in pts), sorted(p[1] for p in pts)
        return xs[0], ys[0], xs[1], ys[1]


@dataclass
class RenderedPage:
    image: Image.Image  # RGB
    geometry: PageGeometry


def _reset_last_error(pdfium: Any) -> None:
    """PDFium keeps its last error per thread and some failed loads (an empty page tree) set none, which would
    show the previous document's error: a failing load of zero bytes sets it to FPDF_ERR_FORMAT first."""
    buf = ctypes.create_string_buffer(1)
    handle = pdfium.raw.FPDF_LoadMemDocument(buf, 0, None)
    if handle:
        pdfium.raw.FPDF_CloseDocument(handle)


def _open_error(path: str, err: Any) -> PdfError:
    pdfium = _pdfium()
    code = getattr(err, "err_code", None)
    raw = pdfium.raw
    if code == raw.FPDF_ERR_PASSWORD:
        return PdfError(f"{path}: the PDF is password-protected (encrypted); it cannot be read without its password")
    if code == raw.FPDF_ERR_SECURITY:
        return PdfError(f"{path}: the PDF is encrypted with a security scheme PDFium does not support")
    if code == raw.FPDF_ERR_FILE:
        return PdfError(f"{path}: cannot read the file")
    if code == raw.FPDF_ERR_FORMAT:
        return PdfError(f"{path}: not a readable PDF (damaged or truncated, not a PDF, or a page tree with no pages)")
    return PdfError(f"{path}: not a readable PDF (PDFium could not load it: damaged, or a page tree with no pages)")


class PdfDocument:
    """An open PDF. ``n_pages``; ``page_size(n)`` (points, as displayed); ``render(n, dpi)``. Page numbers
    start at 1. Use as a context manager or close()."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = os.fspath(path)
        if not os.path.exists(self.path):
            raise PdfError(f"{self.path}: no such file")
        if os.path.isdir(self.path):
            raise PdfError(f"{self.path}: is a directory, not a PDF")
        try:
            if os.path.getsize(self.path) == 0:
                raise PdfError(f"{self.path}: empty file (0 bytes)")
        except OSError as e:
            raise PdfError(f"{self.path}: cannot read the file ({e.strerror or e})") from None
        pdfium = _pdfium()
        _reset_last_error(pdfium)
        try:
            self._doc = pdfium.PdfDocument(self.path)
        except pdfium.PdfiumError as e:
            raise _open_error(self.path, e) from None
        except OSError as e:
            raise PdfError(f"{self.path}: cannot read the file ({e.strerror or e})") from None
        self.n_pages = len(self._doc)
        if self.n_pages <= 0:
            self.close()
            raise PdfError(f"{self.path}: the PDF has no pages")

    def __enter__(self) -> "PdfDocument":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        doc = getattr(self, "_doc", None)
        if doc is not None:
            doc.close()
            self._doc = None

    def _page(self, number: int) -> Any:
        if not 1 <= number <= self.n_pages:
            raise PdfError(f"{self.path}: no page {number} (the PDF has {self.n_pages} page"
                           f"{'s' if self.n_pages != 1 else ''})")
        try:
            return self._doc[number - 1]
        except _pdfium().PdfiumError as e:
            raise PdfError(f"{self.path}: page {number} cannot be loaded ({e})") from None

    def page_size(self, number: int) -> tuple[float, float]:
        page = self._page(number)
        try:
            return float(page.get_width()), float(page.get_height())
        finally:
            page.close()

    def render(self, number: int, dpi: float = DEFAULT_DPI, max_pixels: int = MAX_PIXELS) -> RenderedPage:
        """Page ``number`` (from 1) as an RGB image at ``dpi``, with its geometry."""
        pdfium = _pdfium()
        page = self._page(number)
        try:
            w_pt, h_pt = float(page.get_width()), float(page.get_height())
            scale = dpi / 72.0
            w_px, h_px = math.ceil(w_pt * scale), math.ceil(h_pt * scale)  # pypdfium2's own rounding
            if w_px <= 0 or h_px <= 0:
                raise PdfError(f"{self.path}: page {number} has zero size ({w_pt:g} x {h_pt:g} pt)")
            if w_px * h_px > max_pixels:
                raise PdfError(f"{self.path}: page {number} at {dpi:g} dpi would be {w_px}x{h_px} = {w_px * h_px} "
                               f"pixels (the limit is {max_pixels}); use a lower --dpi")
            try:
                bitmap = page.render(scale=scale, fill_color=(255, 255, 255, 255), draw_annots=True)
                image = bitmap.to_pil().convert("RGB")
            except pdfium.PdfiumError as e:
                raise PdfError(f"{self.path}: page {number} cannot be rendered ({e})") from None
            if image.size != (w_px, h_px):  # pypdfium2 changed its rounding: keep the geometry true to the image
                w_px, h_px = image.size
            rotation = int(page.get_rotation())
            return RenderedPage(image, PageGeometry(w_px, h_px, float(dpi), rotation, w_pt, h_pt,
                                                    _device_to_page(pdfium, page, w_px, h_px)))
        finally:
            page.close()


def _device_to_page(pdfium: Any, page: Any, w: int, h: int) -> tuple[float, float, float, float, float, float]:
    """The affine map PDFium uses for a (0, 0, w, h) rendering, from three device points (FPDF_DeviceToPage)."""
    px, py = ctypes.c_double(), ctypes.c_double()

    def to_page(dx: int, dy: int) -> tuple[float, float]:
        pdfium.raw.FPDF_DeviceToPage(page.raw, 0, 0, w, h, 0, dx, dy, ctypes.byref(px), ctypes.byref(py))
        return px.value, py.value

    e, f = to_page(0, 0)
    xw, yw = to_page(w, 0)
    xh, yh = to_page(0, h)
    return (xw - e) / w, (yw - f) / w, (xh - e) / h, (yh - f) / h, e, f


def count_pages(path: str | os.PathLike[str]) -> int:
    with PdfDocument(path) as doc:
        return doc.n_pages


__all__ = ["DEFAULT_DPI", "MAX_DPI", "MIN_DPI", "PageGeometry", "PdfDocument", "PdfError", "RenderedPage",
           "count_pages"]
