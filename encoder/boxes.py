"""Draw grounding regions on the original image (``tilepass-cli --boxes OUT.png``)."""

from __future__ import annotations

import hashlib
from typing import Sequence

from PIL import Image, ImageDraw, ImageFont

from .grounding import Region, to_pixels

_PALETTE = [(230, 25, 75), (60, 180, 75), (0, 130, 200), (245, 130, 48), (145, 30, 180), (70, 240, 240),
            (240, 50, 230), (128, 128, 0), (0, 128, 128), (170, 110, 40), (128, 0, 0), (0, 0, 128)]


def label_color(label: str | None) -> tuple[int, int, int]:
    h = hashlib.md5((label or "").encode("utf-8")).digest()[0]
    return _PALETTE[h % len(_PALETTE)]


def draw_regions(image: Image.Image, regions: Sequence[Region], line_width: int | None = None) -> Image.Image:
    """A copy of image (RGB) with every region's boxes outlined, filled lightly and labelled."""
    base = image.convert("RGB")
    w, h = base.size
    lw = line_width or max(2, round(min(w, h) / 400))
    overlay = Image.new("RGBA", base.size, (0, 0, 0, 0))
    od = ImageDraw.Draw(overlay)
    out = base.copy()
    d = ImageDraw.Draw(out)
    try:
        font = ImageFont.load_default(size=max(12, round(min(w, h) / 60)))
    except TypeError:  # Pillow < 10.1: no size argument
        font = ImageFont.load_default()
    labels = []
    for r in regions:
        color = label_color(r.label)
        for b in r.boxes:
            x1, y1, x2, y2 = (int(v) for v in to_pixels(b, w, h))
            od.rectangle([x1, y1, x2, y2], fill=color + (40,))
            d.rectangle([x1, y1, x2, y2], outline=color, width=lw)
            labels.append((x1, y1, r.label or "?", color))
    out = Image.alpha_composite(out.convert("RGBA"), overlay).convert("RGB")
    d = ImageDraw.Draw(out)
    for x1, y1, text, color in labels:
        tb = d.textbbox((0, 0), text, font=font)
        tw, th = tb[2] - tb[0], tb[3] - tb[1]
        ty = y1 - th - 4 if y1 - th - 4 >= 0 else y1
        d.rectangle([x1, ty, x1 + tw + 4, ty + th + 4], fill=color)
        d.text((x1 + 2 - tb[0], ty + 2 - tb[1]), text, fill=(255, 255, 255), font=font)
    return out
