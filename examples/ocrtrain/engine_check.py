"""The bundled model through the whole product against transformers, on held-out pages.

    python examples/ocrtrain/engine_check.py --pages 200 --modes base gundam --types f32 f16 q8_0 q4_k q4_k_m

For each page: transformers (float32, the bf16 checkpoint upcast) greedy-decodes from the preprocessed views;
tilepass (convert-hf-to-gguf's files, the C library, the same views) greedy-decodes from the same ids, with
the no-repeat rule off on both sides. Per text file type it reports how many pages give exactly the
reference's tokens, the first position where the others part, and the CER of tilepass's text against the
page's truth (the quantisation ladder), beside the share of pages that hit the token limit without EOS.
Vision files: F32 beside the F32 text file, F16 beside every other type (as `make demo` ships).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(ROOT))

from evaluate import EVAL_SEED0, edit_distance  # noqa: E402
from gen import make_page  # noqa: E402

PROMPT = "<image>\nFree OCR."


@dataclass
class TypeReport:
    pages: int = 0
    identical: int = 0
    first_diff: list[int] = field(default_factory=list)  # per differing page
    edits: int = 0
    chars: int = 0
    hit_limit: int = 0

    @property
    def cer(self) -> float:
        return self.edits / max(1, self.chars)

    def as_dict(self) -> dict:
        return {"pages": self.pages, "identical": self.identical, "first_diff": self.first_diff,
                "cer": round(self.cer, 4), "hit_limit": self.hit_limit}


def convert_files(model_dir: Path, out: Path, types: list[str]) -> dict[str, tuple[Path, Path]]:
    """{text type: (text GGUF, vision GGUF)} written by the project's converter (types share a vision file)."""
    from convert.converter import convert

    files = {}
    for t in types:
        vt = "f32" if t == "f32" else "f16"
        text, vision = out / f"text-{t}.gguf", out / f"mmproj-{vt}.gguf"
        if not text.exists():
            convert(model_dir, outtype=t, outfile=text, progress=False)
        if not vision.exists():
            convert(model_dir, mmproj=True, outtype=vt, outfile=vision, progress=False)
        files[t] = (text, vision)
    return files


class Reference:
    """transformers UnlimitedOcr in float32 on our preprocessed views."""

    def __init__(self, model) -> None:
        import torch

        self.torch, self.model = torch, model

    @classmethod
    def load(cls, model_dir: Path, n_threads: int = 2) -> "Reference":
        import torch

        from common import load_model

        torch.set_num_threads(n_threads)
        return cls(load_model(model_dir, dtype=torch.float32))

    def _kw(self, prepared) -> dict:
        t = self.torch
        kw = {"pixel_values": t.from_numpy(np.ascontiguousarray(prepared.global_view.transpose(2, 0, 1)))[None]}
        if prepared.tiles.shape[0]:
            kw.update(pixel_values_local=t.from_numpy(np.ascontiguousarray(prepared.tiles.transpose(0, 3, 1, 2))),
                      num_local_patches=[prepared.tiles.shape[0]], patches_grid=[list(prepared.grid)])
        return kw

    def greedy(self, ids: list[int], prepared, max_new: int, eos: int) -> list[int]:
        t = self.torch
        with t.no_grad():
            out = self.model.generate(input_ids=t.tensor([ids]), max_new_tokens=max_new, do_sample=False, num_beams=1,
                                      eos_token_id=eos, pad_token_id=eos, **self._kw(prepared))
        toks = out[0, len(ids):].tolist()
        return toks[:toks.index(eos)] if eos in toks else toks

    def logits(self, ids: list[int], prepared):
        with self.torch.no_grad():
            return self.model(input_ids=self.torch.tensor([ids]), **self._kw(prepared)).logits[0].float().numpy()


def no_repeat_off():
    """The pipeline's no-repeat rule switched off (transformers' greedy reference has none)."""
    from encoder.generate import NoRepeat

    return NoRepeat(ngram=0, window=0, whitelist=frozenset(), scope="generated")


def encode_once(pipes: dict, files: dict, prepared) -> dict:
    """{text type: the page's image embeddings}, each vision file encoded once (several text types share one)."""
    by_vision: dict = {}
    for t, pipe in pipes.items():
        if files[t][1] not in by_vision:
            by_vision[files[t][1]] = pipe.encode([prepared])[0][0]
    return {t: by_vision[files[t][1]] for t in pipes}


def run(model_dir: Path, n_pages: int, modes: list[str], types: list[str], max_new: int, work: Path,
        n_threads: int = 2, log=print, kv_type: str | None = None, vision_precision: int = 0) -> dict:
    from encoder.pipeline import OcrPipeline

    files = convert_files(model_dir, work, types)
    ref = Reference.load(model_dir, n_threads)
    pages = [make_page(EVAL_SEED0 + i) for i in range(n_pages)]
    pipes = {t: OcrPipeline(*files[t], n_threads=n_threads, kv_type=kv_type, vision_precision=vision_precision)
             for t in types}
    off = no_repeat_off()
    report: dict = {}
    for mode in modes:
        reps = {t: TypeReport() for t in types}
        t0 = time.time()
        for k, page in enumerate(pages):
            any_pipe = pipes[types[0]]
            prepared = any_pipe.prepare([page.image], mode)[0]
            embs = encode_once(pipes, files, prepared)
            ids = any_pipe.prompt_ids(PROMPT, int(embs[types[0]].shape[0]))
            want = ref.greedy(ids, prepared, max_new, any_pipe.eos_id)
            for t in types:
                res = pipes[t].generate(ids, embs[t], max_new, no_repeat=off)
                got, r = res.tokens, reps[t]
                r.pages += 1
                if got == want:
                    r.identical += 1
                else:
                    r.first_diff.append(next((i for i, (a, b) in enumerate(zip(got, want)) if a != b),
                                             min(len(got), len(want))))
                text = pipes[t].tokenizer.decode(got)
                r.edits += edit_distance(text, page.markdown)
                r.chars += len(page.markdown)
                r.hit_limit += res.stop_reason != "eos"
            if (k + 1) % 10 == 0 or k + 1 == len(pages):
                log(f"{mode}: {k + 1}/{len(pages)} pages, {time.time() - t0:.0f} s: "
                    + ", ".join(f"{t} {reps[t].identical}/{reps[t].pages} identical, CER {reps[t].cer:.3f}" for t in types))
        report[mode] = {t: reps[t].as_dict() for t in types}
    return report


def main() -> None:
    from encoder.cli import PRECISIONS
    from encoder.text_model import TextModel

    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default=str(ROOT / "examples" / "model"))
    ap.add_argument("--pages", type=int, default=200)
    ap.add_argument("--modes", nargs="+", default=["base", "gundam"])
    ap.add_argument("--types", nargs="+", default=["f32", "f16", "q8_0", "q4_k", "q4_k_m"])
    ap.add_argument("--max-new", type=int, default=700)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--work", default=None, help="keep the GGUF files here (default: a temporary directory)")
    ap.add_argument("--kv-type", default="auto", choices=tuple(TextModel.KV_TYPES),
                    help="KV cache of every text file (default auto: the runtime's, f32 for an F32 file, else f16)")
    ap.add_argument("--vision-precision", default="f32", choices=tuple(PRECISIONS),
                    help="vision arithmetic of every file, as tilepass-cli --precision (default f32: exact)")
    a = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="tp-engine-check-") as tmp:
        work = Path(a.work) if a.work else Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        r = run(Path(a.model), a.pages, a.modes, a.types, a.max_new, work, a.threads,
                log=lambda s: print(s, file=sys.stderr, flush=True), kv_type=a.kv_type,
                vision_precision=PRECISIONS[a.vision_precision])
    print(json.dumps(r, indent=1))


if __name__ == "__main__":
    main()
