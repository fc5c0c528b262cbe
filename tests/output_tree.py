"""An output directory as comparable data: the tests that check two runs wrote the same files (resume, the
documents CLI, tilepass-batch) compare these, every file byte for byte, the JSON ones without their timings."""

from __future__ import annotations

import json
from pathlib import Path

TIMING_KEYS = ("timings_ms", "tokens_per_s")


def without_timings(obj):
    """obj (parsed JSON) without the keys that hold times, which differ from run to run."""
    if isinstance(obj, dict):
        return {k: without_timings(v) for k, v in obj.items() if k not in TIMING_KEYS}
    if isinstance(obj, list):
        return [without_timings(v) for v in obj]
    return obj


def tree(d: Path) -> dict[str, object]:
    """Every file under d (relative name -> bytes, or the JSON without its timings)."""
    out: dict[str, object] = {}
    for p in sorted(d.rglob("*")):
        if p.is_file():
            rel = str(p.relative_to(d))
            out[rel] = without_timings(json.loads(p.read_bytes())) if p.suffix == ".json" else p.read_bytes()
    return out
