"""Held-out character error rate of a checkpoint in transformers.

    python examples/ocrtrain/evaluate.py --model examples/model --pages 200 --modes base gundam
Held-out pages use seeds 2_000_000_000 + i (training never draws seeds >= 1_900_000_000).
CER = sum(edit distance) / sum(len(truth)) over the pages, on the `Free OCR.` prompt against the markdown truth.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (PROMPT_FREE, PROMPT_GROUNDING, build_ids, decode, load_model, load_tokenizer,  # noqa: E402
                    make_views, n_image_tokens, normalize, special_ids)
from gen import make_page  # noqa: E402

EVAL_SEED0 = 2_000_000_000


def edit_distance(a: str, b: str) -> int:
    if not a:
        return len(b)
    if not b:
        return len(a)
    bb = np.frombuffer(b.encode("utf-32-le"), dtype=np.uint32)
    n = len(bb)
    idx = np.arange(n + 1)
    prev = idx.copy()
    for i, ch in enumerate(np.frombuffer(a.encode("utf-32-le"), dtype=np.uint32), 1):
        tmp = np.empty(n + 1, dtype=np.int64)
        tmp[0] = i
        tmp[1:] = np.minimum(prev[1:] + 1, prev[:-1] + (bb != ch))
        prev = np.minimum.accumulate(tmp - idx) + idx
    return int(prev[-1])


@__import__("torch").no_grad()
def greedy(model, tok, images, mode, prompt=PROMPT_FREE, max_new=600, device="cpu", batch=32, amp=False):
    """Greedy decoding without repetition rule. Returns list of strings (in order of images)."""
    import torch

    ids = special_ids(tok)
    views = [make_views(im, mode) for im in images]
    out = [None] * len(images)
    groups: dict = {}
    for i, v in enumerate(views):
        groups.setdefault(v[2], []).append(i)
    for grid, members in groups.items():
        for s in range(0, len(members), batch):
            mb = members[s:s + batch]
            gsz = views[mb[0]][0].shape[-1]
            inp, _ = build_ids(tok, n_image_tokens(gsz, grid), prompt, None, ids)
            input_ids = torch.tensor([inp] * len(mb), device=device)
            pv = normalize(torch.from_numpy(np.stack([views[i][0] for i in mb])).to(device))
            kw = {}
            if grid != (0, 0):
                kw["pixel_values_local"] = normalize(torch.from_numpy(np.concatenate([views[i][1] for i in mb])).to(device))
                kw["num_local_patches"] = [grid[0] * grid[1]] * len(mb)
                kw["patches_grid"] = [list(grid)] * len(mb)
            with torch.autocast(device_type="cuda" if "cuda" in str(device) else "cpu", dtype=torch.bfloat16,
                                enabled=amp):
                o = model(input_ids=input_ids, pixel_values=pv, use_cache=True, logits_to_keep=1, **kw)
                past = o.past_key_values
                nxt = o.logits[:, -1].argmax(-1)
                gen = [nxt]
                done = nxt == ids["eos"]
                for _ in range(max_new - 1):
                    if bool(done.all()):
                        break
                    o = model(input_ids=nxt[:, None], past_key_values=past, use_cache=True)
                    past = o.past_key_values
                    nxt = o.logits[:, -1].argmax(-1)
                    gen.append(nxt)
                    done |= nxt == ids["eos"]
            g = torch.stack(gen, 1).tolist()
            for k, i in enumerate(mb):
                out[i] = decode(tok, g[k], ids["eos"])
    return out


def _sum_over_ranks(a: int, b: int, device) -> tuple[int, int]:
    import torch
    import torch.distributed as dist

    t = torch.tensor([a, b], dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return int(t[0].item()), int(t[1].item())


def evaluate(model, tok, n_pages=200, modes=("base", "gundam"), device="cpu", seed0=EVAL_SEED0, amp=False,
             grounding=False, show=0, max_new=600, rank=0, world=1):
    """CER per mode; with world > 1 each rank reads every world-th page and the sums are all-reduced."""
    pages = [make_page(seed0 + i) for i in range(n_pages) if i % world == rank]
    res = {}
    for mode in modes:
        t = time.time()
        preds = greedy(model, tok, [p.image for p in pages], mode, device=device, amp=amp, max_new=max_new)
        dist = sum(edit_distance(pr, p.markdown) for pr, p in zip(preds, pages))
        tot = sum(len(p.markdown) for p in pages)
        if world > 1:
            dist, tot = _sum_over_ranks(dist, tot, device)
        res[mode] = {"cer": dist / tot, "pages": n_pages, "chars": tot, "seconds": round(time.time() - t, 1)}
        for k in range(show):
            print(f"--- {mode} page {k} truth:\n{pages[k].markdown}\n--- pred:\n{preds[k]}")
        if grounding:
            import re

            preds = greedy(model, tok, [p.image for p in pages], mode, prompt=PROMPT_GROUNDING, device=device,
                           amp=amp, max_new=max_new + 300)
            strip = lambda s: re.sub(r"<\|ref\|>.*?<\|/ref\|><\|det\|>.*?<\|/det\|>\n", "", s)  # noqa: E731
            dist = sum(edit_distance(strip(pr), p.markdown) for pr, p in zip(preds, pages))
            if world > 1:
                dist, _ = _sum_over_ranks(dist, 0, device)
            res[mode]["cer_grounding_text"] = dist / tot
    return res


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default=str(Path(__file__).resolve().parents[1] / "model"))
    ap.add_argument("--pages", type=int, default=200)
    ap.add_argument("--modes", nargs="+", default=["base", "gundam"])
    ap.add_argument("--device", default="cuda" if __import__("torch").cuda.is_available() else "cpu")
    ap.add_argument("--grounding", action="store_true")
    ap.add_argument("--show", type=int, default=0)
    a = ap.parse_args()
    m = load_model(a.model, device=a.device)
    tk = load_tokenizer(a.model)
    r = evaluate(m, tk, a.pages, a.modes, a.device, amp=a.device != "cpu", grounding=a.grounding, show=a.show)
    print(json.dumps(r, indent=1))
