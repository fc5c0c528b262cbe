"""Loading one input image: decode, check, apply EXIF orientation, convert to RGB.

This mirrors the official DeepSeek-OCR loader (``Image.open`` -> ``ImageOps.exif_transpose`` ->
``.convert("RGB")``) and adds the checks a command-line tool needs: every failure to read or decode,
a zero-size image and an image above ``MAX_PIXELS`` become an ``ImageError`` whose message names the
file and the problem. The pixel limit is checked on the header's size, before any pixel data is
decoded, so an absurd size is refused without allocating it.

RGBA / LA / P-with-transparency inputs are converted with ``convert("RGB")`` exactly as the reference
does: the alpha channel is dropped, not composited over a background.
"""

from __future__ import annotations

import io
import os
import warnings
from pathlib import Path

from PIL import Image, ImageOps

# The model never looks at more than 9 tiles of 640x640 plus a 1024x1024 (or 1280x1280) view, i.e. at
# most about 4.7 M input pixels in its default range; 40 M pixels is more than an A4 page scanned at
# 600 dpi (4960x7016 = 34.8 M) and keeps the peak memory of loading (decoded image, EXIF-transposed
# copy, RGB copy: about 3 bytes x 3 copies per pixel) near 360 MB. Larger images are refused.
MAX_PIXELS: int = 40_000_000


class ImageError(ValueError):
    """An input image that cannot be used: unreadable, zero-size, or above the pixel limit."""


def _source_name(source) -> str:
    if isinstance(source, (str, os.PathLike)):
        return os.fspath(source)
    if isinstance(source, (bytes, bytearray, memoryview)):
        return f"<{len(source)} bytes in memory>"
    if isinstance(source, Image.Image):
        name = getattr(source, "filename", "") or ""
        return name if name else "<PIL image>"
    name = getattr(source, "name", None)
    return str(name) if isinstance(name, str) else f"<{type(source).__name__}>"


def check_size(width: int, height: int, name: str, max_pixels: int = MAX_PIXELS) -> None:
    """Raise ImageError for a zero-size image or one with more than ``max_pixels`` pixels."""
    if width <= 0 or height <= 0:
        raise ImageError(f"{name}: image has zero size ({width}x{height})")
    if width * height > max_pixels:
        raise ImageError(
            f"{name}: image is too large ({width}x{height} = {width * height} pixels; "
            f"the limit is {max_pixels} pixels)"
        )


def normalise_image(image: Image.Image, name: str | None = None, max_pixels: int = MAX_PIXELS) -> Image.Image:
    """Check an already opened PIL image, apply its EXIF orientation and convert it to RGB.

    Returns a new image; the input is left untouched. An image already transposed (its orientation
    tag removed by ``exif_transpose``) is not transposed again.
    """
    if name is None:
        name = _source_name(image)
    check_size(image.width, image.height, name, max_pixels)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image.load()
            out = ImageOps.exif_transpose(image)
            out = out.convert("RGB")
    except ImageError:
        raise
    except Exception as e:  # anything Pillow raises while decoding: OSError, SyntaxError, ...
        raise ImageError(f"{name}: cannot decode image ({type(e).__name__}: {e})") from e
    check_size(out.width, out.height, name, max_pixels)
    return out


def load_image(source, max_pixels: int = MAX_PIXELS) -> Image.Image:
    """Load an image as the reference does: open, EXIF transpose, convert to RGB.

    ``source`` is a path (str or PathLike), the file's bytes, a binary file object, or a PIL image.
    Raises ImageError (a ValueError) naming the source and the problem when the image cannot be
    used; returns a fully decoded RGB image independent of any file.
    """
    name = _source_name(source)
    if isinstance(source, Image.Image):
        return normalise_image(source, name, max_pixels)
    if isinstance(source, (bytes, bytearray, memoryview)):
        if len(source) == 0:
            raise ImageError(f"{name}: empty input (0 bytes)")
        fp = io.BytesIO(bytes(source))
    elif isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if not path.exists():
            raise ImageError(f"{name}: no such file")
        if path.is_dir():
            raise ImageError(f"{name}: is a directory, not an image file")
        try:
            if path.stat().st_size == 0:
                raise ImageError(f"{name}: empty file (0 bytes)")
        except OSError as e:
            raise ImageError(f"{name}: cannot read file ({e})") from e
        fp = path
    else:
        fp = source
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            opened = Image.open(fp)
    except Image.DecompressionBombError as e:
        raise ImageError(
            f"{name}: image is too large (the limit is {max_pixels} pixels; Pillow refused it: {e})"
        ) from e
    except Exception as e:  # UnidentifiedImageError, OSError, SyntaxError, ValueError, ...
        raise ImageError(f"{name}: cannot read image ({type(e).__name__}: {e})") from e
    with opened:
        # the header's size, before any pixel data is decoded
        check_size(opened.width, opened.height, name, max_pixels)
        return normalise_image(opened, name, max_pixels)
