"""Sanity check of the training recipe on a trivially easy reading task (tiny mode, 512-px view, 73 image tokens).

    python examples/ocrtrain/probe.py --task word20 --steps 300            # CPU: ~3.5 s a step at --bs 8
    python examples/ocrtrain/probe.py --task word20 --pixel-probe 0        # the recipe of runs 1-4
    python examples/ocrtrain/probe.py --oracle                             # decoder alone, fed word codes

Tasks: `word20` one word of a fixed set of 20 in a 72-px font anywhere on the card (`word20fixed`: always at the
same place), `words3` 1-3 words of the whole word list, `line` 1-4 lines of 36-px text. `--bag-probe W` adds
train.BagProbe. Prints, every --every
steps: the caption loss, `acc1` (share of cards whose first target token is predicted right; chance on word20 is
~0.07), `img_frac` (share of the projected features that depends on the image, train.image_fraction), `pix`
(train.PixelProbe loss), the feature regulariser, and the gradient norm of each part of the model.
`--oracle` replaces the vision tower by a fixed random code of the word at one random image token: it shows
whether the decoder alone can find and read an image token (it does, in ~100 steps).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch
from PIL import Image, ImageDraw

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (PROMPT_FREE, build_ids, glyph_views, load_tokenizer, make_views, n_image_tokens,  # noqa: E402
                    normalize, special_ids, transformers_config)
from gen import draw_text, font, words  # noqa: E402
from train import BagProbe, GlyphProbe, PixelProbe, feature_regulariser, image_fraction  # noqa: E402

GROUPS = {"sam": "vision_tower.sam_encoder", "clip": "vision_tower.vision_encoder", "proj": "multi_modal_projector",
          "text": "language_model", "head": "lm_head"}


def card(rng: random.Random, task: str, vocab: list[str], word20: list[str]) -> tuple[Image.Image, str, Image.Image]:
    s = 512
    img = Image.new("L", (s, s), 255)
    glyphs = Image.new("L", (s, s), 0)
    d, gd = ImageDraw.Draw(img), ImageDraw.Draw(glyphs)
    if task.startswith("word20"):
        text, f = rng.choice(word20), font(72)
        x, y = rng.randint(10, max(11, s - 10 - int(f.getlength(text)))), rng.randint(10, s - 100)
        if task == "word20fixed":
            x, y = 40, 200
        draw_text(d, gd, (x, y), text, f, 0)
        return img.convert("RGB"), text, glyphs
    lines: list[str] = []
    if task == "words3":
        f, y = font(56), rng.randint(10, 60)
        for _ in range(rng.randint(1, 3)):
            t = rng.choice(vocab)
            draw_text(d, gd, (rng.randint(10, max(11, s - 10 - int(f.getlength(t)))), y), t, f, 0)
            lines.append(t)
            y += 80 + rng.randint(0, 60)
            if y > s - 80:
                break
    else:  # line
        f, y = font(36), rng.randint(10, 40)
        for _ in range(rng.randint(1, 4)):
            t = rng.choice(vocab)
            while f.getlength(t + " " + (w := rng.choice(vocab))) <= s - 30:
                t += " " + w
            draw_text(d, gd, (15, y), t, f, 0)
            lines.append(t)
            y += 60 + rng.randint(0, 40)
            if y > s - 60:
                break
    return img.convert("RGB"), " ".join(lines), glyphs


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--task", default="word20", choices=["word20", "word20fixed", "words3", "line"])
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--bs", type=int, default=8)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--warm", type=int, default=30)
    ap.add_argument("--feat-reg", type=float, default=1.0)
    ap.add_argument("--pixel-probe", type=float, default=0.1)
    ap.add_argument("--bag-probe", type=float, default=0.0)
    ap.add_argument("--glyph-probe", type=float, default=1.0)
    ap.add_argument("--oracle", action="store_true")
    ap.add_argument("--every", type=int, default=10)
    ap.add_argument("--max-minutes", type=float, default=9.0)
    ap.add_argument("--ckpt", default="", help="resume from / save to this file (to split a probe into short runs)")
    ap.add_argument("--tok", default=str(Path(__file__).resolve().parents[1] / "model"))
    a = ap.parse_args()

    dev = "cuda" if torch.cuda.is_available() else "cpu"
    if dev == "cpu":
        torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    tok = load_tokenizer(a.tok)
    ids = special_ids(tok)
    vocab = [w for w in words() if 4 <= len(w) <= 8]
    word20 = random.Random(123).sample(vocab, 20)

    from transformers import UnlimitedOcrForConditionalGeneration

    cfg = transformers_config(tok.get_vocab_size(), ids)
    cfg.text_config.initializer_range = 0.02
    torch.manual_seed(0)
    model = UnlimitedOcrForConditionalGeneration(cfg).to(dev).train()
    probe = torch.nn.ModuleDict({"pixel": PixelProbe(cfg.text_config.hidden_size),
                                 "glyph": GlyphProbe(cfg.text_config.hidden_size),
                                 "bag": BagProbe(cfg.text_config.hidden_size, cfg.text_config.vocab_size)}).to(dev)
    params = list(model.parameters()) + list(probe.parameters())
    opt = torch.optim.AdamW(params, lr=a.lr, betas=(0.9, 0.95), weight_decay=0.05)
    step0 = 0
    if a.ckpt and os.path.exists(a.ckpt):
        st = torch.load(a.ckpt, map_location=dev, weights_only=False)
        model.load_state_dict(st["model"])
        probe.load_state_dict(st["probe"])
        opt.load_state_dict(st["opt"])
        step0 = st["step"]

    projected: list = []
    model.model.multi_modal_projector.register_forward_hook(lambda _m, _i, o: projected.append(o))
    if a.oracle:  # the decoder alone: a fixed random code of the word at one random image token
        g = torch.Generator().manual_seed(7)
        codes = {w: torch.randn(cfg.text_config.hidden_size, generator=g) for w in word20}
        background = torch.randn(n_image_tokens(512), cfg.text_config.hidden_size, generator=g) * 0.5
        current: dict = {}

        def oracle_features(*_args, **_kw):
            feats = []
            for t in current["texts"]:
                f = background.clone()
                f[current["rng"].randint(0, len(f) - 2)] += codes[t]
                feats.append(f.to(dev))
            return SimpleNamespace(pooler_output=feats)

        model.model.get_image_features = oracle_features

    rng = random.Random(1 + step0)
    t0, hist = time.time(), []
    for step in range(step0 + 1, step0 + a.steps + 1):
        for grp in opt.param_groups:
            grp["lr"] = a.lr * min(1.0, step / a.warm)
        samples, glyph_targets = [], []
        for _ in range(a.bs):
            im, text, glyph_img = card(rng, a.task, vocab, word20)
            glob, _tiles, grid = make_views(im, "tiny")
            glyph_targets.append(torch.from_numpy(glyph_views(glyph_img, "tiny")[0]))
            inp, lab = build_ids(tok, n_image_tokens(glob.shape[-1], grid), PROMPT_FREE, text, ids)
            samples.append((glob, inp, lab, text))
        n = max(len(x[1]) for x in samples)
        inp = torch.full((a.bs, n), ids["pad"])
        lab = torch.full((a.bs, n), -100)
        att = torch.zeros((a.bs, n), dtype=torch.long)
        for i, x in enumerate(samples):
            inp[i, :len(x[1])], lab[i, :len(x[2])], att[i, :len(x[1])] = torch.tensor(x[1]), torch.tensor(x[2]), 1
        pix = normalize(torch.from_numpy(np.stack([x[0] for x in samples]))).to(dev)
        inp, lab, att = inp.to(dev), lab.to(dev), att.to(dev)
        if a.oracle:
            current.update(texts=[x[3] for x in samples], rng=rng)
        with torch.autocast(device_type=dev, dtype=torch.bfloat16, enabled=dev == "cuda"):
            out = model(input_ids=inp, pixel_values=pix, attention_mask=att, labels=lab)
        loss = out.loss
        reg = rec = bag = gly = gacc = torch.zeros((), device=dev)
        frac = float("nan")
        if projected:
            reg, frac = feature_regulariser(projected), float(image_fraction(projected[0]))
            rec = probe["pixel"](projected[0], pix)
            if a.bag_probe:
                bag = probe["bag"](list(projected[0]), lab)
            if a.glyph_probe:
                gly, gacc = probe["glyph"](projected[0], torch.stack(glyph_targets).to(dev))
            loss = loss + a.feat_reg * reg + a.pixel_probe * rec + a.bag_probe * bag + a.glyph_probe * gly
        projected.clear()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        show = step % a.every == 0 or step == step0 + 1
        gns = {k: math.sqrt(sum(float(p.grad.pow(2).sum()) for n_, p in model.named_parameters()
                                if v in n_ and p.grad is not None)) for k, v in GROUPS.items()} if show else {}
        gn = float(torch.nn.utils.clip_grad_norm_(params, 1.0))
        opt.step()
        first = (lab != -100).float().argmax(1)
        rows = torch.arange(a.bs, device=dev)
        acc1 = float((out.logits[rows, first - 1].argmax(-1) == lab[rows, first]).float().mean())
        hist.append((out.loss.item(), acc1, rec.item(), frac, reg.item(), bag.item(), gly.item(), gacc.item()))
        if show:
            m = np.nanmean(np.array(hist), 0)
            hist = []
            print(json.dumps(dict(step=step, s=round(time.time() - t0), loss=round(m[0], 3), acc1=round(m[1], 2),
                                  pix=round(m[2], 3), bag=round(m[5], 3),
                                  glyph=round(m[6], 3), glyph_acc=round(m[7], 3), img_frac=round(m[3], 4), reg=round(m[4], 4),
                                  gn=round(gn, 2),
                                  **{f"g_{k}": round(v, 3) for k, v in gns.items()})), flush=True)
        if time.time() - t0 > a.max_minutes * 60:
            break
    if a.ckpt:
        torch.save({"model": model.state_dict(), "probe": probe.state_dict(), "opt": opt.state_dict(), "step": step},
                   a.ckpt)


if __name__ == "__main__":
    main()
