"""What the bundled model misreads, by kind of character and kind of line, on held-out pages.

    python examples/ocrtrain/error_kinds.py --pages 200 --mode gundam

Runs the product (convert-hf-to-gguf's F16 files through the C library, token-identical to transformers on
engine_check.py's pages) and aligns each page's text with its truth (difflib, characters). A truth character
counts as missed when the alignment replaces or drops it. Reported per class: truth characters, share missed.
This is a breakdown, not the CER: an alignment's misses are not a minimal edit count.
"""

from __future__ import annotations

import argparse
import difflib
import json
import sys
import tempfile
from collections import Counter
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(ROOT))

from evaluate import EVAL_SEED0  # noqa: E402
from gen import make_page  # noqa: E402


def char_kind(c: str) -> str:
    if c.isdigit():
        return "digit"
    if c.isalpha():
        return "letter"
    if c.isspace():
        return "space"
    return "punctuation/markup"


def line_kind(line: str) -> str:
    """The generator's markdown: headings, HTML table rows, bullet or numbered list items, paragraphs."""
    if not line.strip():
        return "blank"
    if line.startswith("#"):
        return "heading"
    if "<t" in line or "</t" in line:
        return "table"
    if line[:2] in ("- ", "* ") or (line[:1].isdigit() and ". " in line[:4]):
        return "list"
    return "paragraph"


def missed(truth: str, text: str) -> list[bool]:
    """Per truth character: replaced or dropped in the alignment of text to truth."""
    out = [False] * len(truth)
    for op, a0, a1, _, _ in difflib.SequenceMatcher(None, truth, text, autojunk=False).get_opcodes():
        if op in ("replace", "delete"):
            out[a0:a1] = [True] * (a1 - a0)
    return out


def tally(truth: str, text: str, chars: Counter, lines: Counter) -> None:
    """Adds (kind, "total") and (kind, "missed") counts of one page to chars and lines."""
    miss = missed(truth, text)
    pos = 0
    for line in truth.split("\n"):
        lk = line_kind(line)
        for j in range(pos, pos + len(line)):
            ck = char_kind(truth[j])
            chars[ck, "total"] += 1
            chars[ck, "missed"] += miss[j]
            lines[lk, "total"] += 1
            lines[lk, "missed"] += miss[j]
        pos += len(line) + 1


def shares(counts: Counter) -> dict:
    kinds = sorted({k for k, _ in counts})
    return {k: {"chars": counts[k, "total"], "missed": round(counts[k, "missed"] / max(1, counts[k, "total"]), 4)}
            for k in kinds}


def main() -> None:
    from encoder.pipeline import OcrPipeline

    from engine_check import PROMPT, convert_files, no_repeat_off

    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default=str(ROOT / "examples" / "model"))
    ap.add_argument("--pages", type=int, default=200)
    ap.add_argument("--mode", default="gundam")
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    chars: Counter = Counter()
    lines: Counter = Counter()
    with tempfile.TemporaryDirectory(prefix="tp-error-kinds-") as tmp:
        files = convert_files(Path(a.model), Path(tmp), ["f16"])
        pipe = OcrPipeline(*files["f16"], n_threads=a.threads)
        off = no_repeat_off()
        for i in range(a.pages):
            page = make_page(EVAL_SEED0 + i)
            prepared = pipe.prepare([page.image], a.mode)[0]
            emb = pipe.encode([prepared])[0][0]
            res = pipe.generate(pipe.prompt_ids(PROMPT, int(emb.shape[0])), emb, 700, no_repeat=off)
            tally(page.markdown, pipe.tokenizer.decode(res.tokens), chars, lines)
    print(json.dumps({"mode": a.mode, "pages": a.pages, "by_character": shares(chars), "by_line": shares(lines)},
                     indent=1))


if __name__ == "__main__":
    main()
