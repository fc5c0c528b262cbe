"""Train the small DeepSeek-OCR v1 (transformers UnlimitedOcr, all layers full attention) on synthetic pages.

Time-boxed and resumable; one process per GPU under torchrun (gradients all-reduced by hand, so experts a
batch does not route to need no special handling):
    torchrun --nproc-per-node 4 examples/ocrtrain/train.py ...

    python examples/ocrtrain/train.py --minutes 8 --total-minutes 16 --state /tmp/ocr/state.pt \
        --bundle $OUT/model --log $OUT/train.log
run it again with the same --state to continue; the learning-rate schedule follows trained time over
--total-minutes. Data is rendered on the fly by DataLoader workers; each batch is one mode (tiny/base/gundam).
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing as mp
import os
import random
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (GLYPH_PX, PROMPT_FREE, PROMPT_GROUNDING, build_ids, glyph_views, load_tokenizer,  # noqa: E402
                    make_views, n_image_tokens, normalize, reading_cells, save_bundle, special_ids,
                    transformers_config)
from gen import GLYPH_CLASSES, make_card, make_page  # noqa: E402

TRAIN_SEED_MAX = 1_900_000_000  # evaluation uses seeds >= 2_000_000_000
MODE_W = {"tiny": 0.1, "base": 0.5, "gundam": 0.4}
MODE_BS = {"tiny": 48, "base": 24, "gundam": 12}
READ_K = 12  # image tokens named per target token at most (a long title token covers 4 tile + 4 global cells)


def read_positions(inputs: list, cells: list, length: int, image_id: int) -> torch.Tensor:
    """ReadingAttention's targets for a batch: [batch, length, READ_K] positions in the prompt of the image tokens
    that the token predicted at each position shows (common.reading_cells per sample, moved from the image block
    to prompt positions; the position that predicts target token j is the one before it); -1 elsewhere."""
    read = torch.full((len(inputs), length, READ_K), -1, dtype=torch.long)
    for i, (inp, c) in enumerate(zip(inputs, cells)):
        first_image, first_target = inp.index(image_id), len(inp) - len(c)
        c = torch.from_numpy(c)
        read[i, first_target - 1:len(inp) - 1] = torch.where(c >= 0, c + first_image, -1)
    return read


class PageBatches(torch.utils.data.IterableDataset):
    def __init__(self, tok_dir, salt, progress, bs_scale=1.0, p_grounding=0.3, read_cells=False):
        self.tok_dir, self.salt, self.progress, self.bs_scale, self.pg = tok_dir, salt, progress, bs_scale, p_grounding
        self.read_cells = read_cells  # ReadingAttention's targets: only when it is on (they tokenize the target again)

    def __iter__(self):
        wi = torch.utils.data.get_worker_info()
        wid = wi.id if wi else 0
        tok = load_tokenizer(self.tok_dir)
        ids = special_ids(tok)
        rng = random.Random(self.salt * 7919 + wid)
        k = 0
        while True:
            prog = self.progress.value
            mode = rng.choices(list(MODE_W), weights=list(MODE_W.values()))[0]
            bs = max(1, int(MODE_BS[mode] * self.bs_scale))
            d = min(1.0, 0.15 + prog * 2.5)
            if mode == "tiny":
                d = min(d, 0.2)
            samples = []
            for _ in range(bs):
                seed = (self.salt * 1_000_003 + wid * 100_000_007 + k * 613) % TRAIN_SEED_MAX
                k += 1
                if rng.random() < max(0.0, 0.6 - 1.2 * prog):  # curriculum: large-print cards first
                    p = make_card(seed)
                else:
                    p = make_page(seed, difficulty=d * rng.uniform(0.8, 1.0) if rng.random() < 0.3 else d)
                g, tiles, grid = make_views(p.image, mode)
                gg, gt = glyph_views(p.glyphs, mode)
                grounding = rng.random() < self.pg
                target, target_xy = (p.grounding, p.grounding_xy) if grounding else (p.markdown, p.markdown_xy)
                inp, lab = build_ids(tok, n_image_tokens(g.shape[-1], grid),
                                     PROMPT_GROUNDING if grounding else PROMPT_FREE, target, ids)
                cells = reading_cells(tok, target, target_xy, p.image.width, p.image.height, mode, grid, READ_K) \
                    if self.read_cells else None
                samples.append((g, tiles, grid, inp, lab, gg, gt, cells))
            L = max(len(s[3]) for s in samples)
            inp = torch.full((bs, L), ids["pad"], dtype=torch.long)
            lab = torch.full((bs, L), -100, dtype=torch.long)
            att = torch.zeros((bs, L), dtype=torch.long)
            for i, s in enumerate(samples):
                inp[i, :len(s[3])] = torch.tensor(s[3])
                lab[i, :len(s[4])] = torch.tensor(s[4])
                att[i, :len(s[3])] = 1
            batch = {"mode": mode, "pixel_values": torch.from_numpy(np.stack([s[0] for s in samples])),
                     "input_ids": inp, "labels": lab, "attention_mask": att,
                     "glyphs": torch.from_numpy(np.stack([s[5] for s in samples]))}
            if self.read_cells:
                batch["read_cells"] = read_positions([s[3] for s in samples], [s[7] for s in samples], L, ids["image"])
            if any(s[1] is not None for s in samples):
                batch["pixel_values_local"] = torch.from_numpy(np.concatenate([s[1] for s in samples if s[1] is not None]))
                batch["num_local_patches"] = [0 if s[1] is None else len(s[1]) for s in samples]
                batch["patches_grid"] = [list(s[2]) for s in samples]
                batch["glyphs_local"] = torch.from_numpy(np.concatenate([s[6] for s in samples if s[6] is not None]))
            yield batch


def feature_regulariser(projected: list) -> torch.Tensor:
    """Penalty on the projected image features: their per-image mean over tokens (a constant the decoder could
    use as a free bias) and any mean square above 1. Without it, training from scratch finds the degenerate
    solution first: SAM's convolutions align into a huge image-independent vector (features of std ~1000
    differing by ~0.2 between pages), which bf16 then rounds the page away from. Training only; the
    architecture is unchanged."""
    reg = projected[0].new_zeros((), dtype=torch.float32)
    for f in projected:  # [views, tokens, width]
        f = f.float()
        reg = reg + f.mean(1).pow(2).mean() + torch.relu(f.pow(2).mean() - 1.0)
    return reg


class PixelProbe(torch.nn.Module):
    """Training-only head (never bundled): predicts, from each projected image token, the 16x16 grey levels
    (4-px averages) of the 64-px cell of the view that the token covers.

    Why: without it the vision tower loses the page within tens of steps (probe.py --pixel-probe 0: the share of
    the projected features that depends on the image, `img_frac`, is 0.05 at init, 0.008 after 50 steps, 0.0002
    after 250; run5_probes.log). Under Adam, every bias, position embedding and the patch embedding's response to
    the white background grow a constant that the decoder uses as a free bias, while the page-dependent part,
    squeezed by SAM's neck LayerNorm, vanishes; a decoder fed features that no longer depend on the page can only
    learn the language-model prior (runs 1-4).
    `feature_regulariser` bounded the constant but did not stop this. Asking the features to keep the pixels of
    their cell does (img_frac 0.5-0.85 in run 5). Necessary, not sufficient: the model still does not read words
    (README, run 5)."""

    CELL, POOL = 64, 4  # one token = 64x64 view pixels (16-px SAM patches, two stride-2 convs)

    def __init__(self, width: int):
        super().__init__()
        self.lin = torch.nn.Linear(width, (self.CELL // self.POOL) ** 2)

    def forward(self, feats: torch.Tensor, pixels: torch.Tensor) -> torch.Tensor:
        """feats [views, g*g, width] in row-major token order; pixels [views, 3, S, S] normalised to [-1, 1];
        returns the mean squared error over the target's variance (1.0 = no better than the mean grey)."""
        v, _, s, _ = pixels.shape
        g, k = s // self.CELL, self.CELL // self.POOL
        t = torch.nn.functional.avg_pool2d(pixels.float().mean(1, keepdim=True), self.POOL)
        t = t.reshape(v, g, k, g, k).permute(0, 1, 3, 2, 4).reshape(v, g * g, k * k)
        return (self.lin(feats.float()) - t).pow(2).mean() / t.var().clamp_min(1e-3)


class GlyphProbe(torch.nn.Module):
    """Training-only head (never bundled): from each projected image token, the glyph class (gen.glyph_class) at
    each of the 8x8 points of its 64-px cell (one per GLYPH_PX pixels), i.e. which character lies where.

    Why: with only the caption loss the vision tower never learned to tell one word from another at an arbitrary
    place (README, run 5: probe.py word20 at chance after 800 steps); its only gradient comes through decoder
    attention that starts out uniform. This gives every token a dense, local reading target, so glyph detectors
    form in SAM first and the decoder then has characters at known places to put in order. Background points
    weigh 0.2: most of a page is blank."""

    def __init__(self, width: int):
        super().__init__()
        self.k = 64 // GLYPH_PX
        self.lin = torch.nn.Linear(width, self.k * self.k * GLYPH_CLASSES)
        weight = torch.ones(GLYPH_CLASSES)
        weight[0] = 0.2
        self.register_buffer("weight", weight, persistent=False)

    def forward(self, feats: torch.Tensor, glyphs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """feats [views, g*g, width] (row-major tokens); glyphs [views, g*k, g*k] uint8 classes. Returns the
        weighted cross-entropy and the accuracy on the points that hold a character."""
        v, n, _ = feats.shape
        g, k = int(round(n ** 0.5)), self.k
        y = glyphs.long().reshape(v, g, k, g, k).permute(0, 1, 3, 2, 4).reshape(-1)
        logits = self.lin(feats.float()).reshape(-1, GLYPH_CLASSES)
        loss = torch.nn.functional.cross_entropy(logits, y, weight=self.weight)
        ink = y > 0
        acc = (logits.argmax(-1)[ink] == y[ink]).float().mean() if bool(ink.any()) else logits.new_zeros(())
        return loss, acc.detach()


class BagProbe(torch.nn.Module):
    """Training-only head (never bundled): which tokens of the target text are on the page, from the image tokens
    alone. The score of each vocabulary entry is the maximum over the image tokens of a linear score (multiple
    instances, no position), trained with binary cross-entropy. Why: PixelProbe keeps the page in the features, but
    the decoder still has to discover which tokens hold text and what it says, and its gradient reaches the vision
    tower only through attention that starts out uniform. This gives the vision tower a direct reading signal
    (glyph/word detectors at the tokens where the text is). Measured in run 5: no gain yet (probe.py word20, 800
    steps: chance either way), so it is off by default."""

    def __init__(self, width: int, vocab: int):
        super().__init__()
        self.lin = torch.nn.Linear(width, vocab)
        torch.nn.init.constant_(self.lin.bias, -8.0)  # prior ~3e-4 per entry: the sum over the vocabulary starts ~1

    def forward(self, feats: list[torch.Tensor], labels: torch.Tensor) -> torch.Tensor:
        """feats: per sample, all its projected image tokens [n, width]; labels [samples, L] (-100 = not target)."""
        logits = torch.stack([self.lin(f.float()).max(0).values for f in feats])
        y = torch.zeros_like(logits)
        for i, lab in enumerate(labels):
            y[i, lab[lab >= 0]] = 1.0
        bce = torch.nn.functional.binary_cross_entropy_with_logits(logits, y, reduction="none").sum(1)
        return (bce / (y.sum(1) + 1.0)).mean()


class ReadingAttention:
    """Training-only guidance of a few decoder attention heads (no parameters; the architecture is unchanged):
    at the position that predicts target token j, one head of the `next` layers is asked to put its attention on
    the image tokens that show token j's characters, and one head of the `current` layers on those of token j-1
    (the one just read: where the reading is). The loss is -log of the attention mass on those cells, over the
    positions whose token is drawn on the page (gen.locate, common.reading_cells).

    Why: run 6's vision tower tells glyphs apart (GlyphProbe, 0.91), but the decoder learns slowly to find, token
    by token, the place on the page to read next: its only signal is the caption loss through attention that
    starts out uniform over ~300-1400 image tokens. This names the place. Needs eager attention (weights out)."""

    def __init__(self, text_model, current=(1,), nxt=(2, 3), head=0):
        text_model.config._attn_implementation = "eager"
        self.weights: dict[int, torch.Tensor] = {}
        self.current, self.next, self.head = tuple(current), tuple(nxt), head
        for layer in set(self.current) | set(self.next):
            text_model.layers[layer].self_attn.register_forward_hook(self._keep(layer))

    def _keep(self, layer):
        def hook(module, _inputs, output):
            if module.training:
                self.weights[layer] = output[1][:, self.head]  # [batch, queries, keys]
        return hook

    @staticmethod
    def _nll(att: torch.Tensor, cells: torch.Tensor) -> torch.Tensor:
        valid = cells >= 0
        mass = (att.float().gather(-1, cells.clamp_min(0)) * valid).sum(-1)  # [batch, queries]
        rows = valid.any(-1)
        if not bool(rows.any()):
            return att.new_zeros((), dtype=torch.float32)
        return -mass[rows].clamp_min(1e-6).log().mean()

    def loss(self, read_cells: torch.Tensor) -> torch.Tensor:
        """read_cells [batch, L, K]: for each query position, the image-token positions of the token it predicts."""
        previous = torch.full_like(read_cells, -1)
        previous[:, 1:] = read_cells[:, :-1]
        terms = [self._nll(self.weights[layer], read_cells) for layer in self.next]
        terms += [self._nll(self.weights[layer], previous) for layer in self.current]
        self.weights.clear()
        return torch.stack(terms).mean()


def per_sample_tokens(projected: list, num_local: list | None) -> list:
    """All projected image tokens of each sample: its global view and, in gundam mode, its tiles."""
    glob = projected[0]
    if len(projected) < 2 or not num_local:
        return list(glob)
    tiles = torch.split(projected[1], num_local, dim=0)
    return [torch.cat([g, t.reshape(-1, t.shape[-1])]) for g, t in zip(glob, tiles)]


def image_fraction(f: torch.Tensor) -> torch.Tensor:
    """Share of the energy of projected features [views, tokens, width] that differs between the views of a batch
    at the same token position (0: the features ignore the image); a 0-d tensor on f's device."""
    f = f.detach().float()
    return (f - f.mean(0)).pow(2).mean() / f.pow(2).mean().clamp_min(1e-12)


# what the log averages over the steps between two lines, besides the caption loss per mode
STATS = ("reg", "feat_rms", "pix", "bag", "img_frac", "glyph", "glyph_acc", "read")
STAT_DIGITS = (4, 3, 3, 3, 4, 3, 3, 3)


def all_reduce_grads(model, world, extra=()):
    """Average gradients over ranks in one flat buffer; a parameter without a gradient (an expert no token of
    this rank's batch chose) contributes zeros."""
    import torch.distributed as dist

    params = list(model.parameters()) + list(extra)
    flat = torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1).float() for p in params])
    dist.all_reduce(flat)
    flat /= world
    off = 0
    for p in params:
        n = p.numel()
        p.grad = flat[off:off + n].view_as(p).to(p.dtype)
        off += n


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--tok", default=str(Path(__file__).resolve().parents[1] / "model"))
    ap.add_argument("--state", default="/tmp/ocrtrain/state.pt")
    ap.add_argument("--init", default=None, help="start weights from a bundled checkpoint dir (no optimizer state)")
    ap.add_argument("--bundle", default=None, help="write the bf16 checkpoint here at the end")
    ap.add_argument("--logfile", default=None)
    ap.add_argument("--no-tok-copy", action="store_true", help="bundle without tokenizer files")
    ap.add_argument("--minutes", type=float, default=8.0)
    ap.add_argument("--total-minutes", type=float, default=16.0)
    ap.add_argument("--max-steps", type=int, default=0)
    ap.add_argument("--workers", type=int, default=max(1, (os.cpu_count() or 2) - 1))
    ap.add_argument("--bs-scale", type=float, default=1.0)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--feat-reg", type=float, default=1.0,
                    help="weight of the image-feature regulariser (see feature_regulariser)")
    ap.add_argument("--pixel-probe", type=float, default=0.1,
                    help="weight of the pixel-reconstruction loss of the training-only PixelProbe (0: off)")
    ap.add_argument("--glyph-probe", type=float, default=1.0,
                    help="weight of the dense glyph-class loss of the training-only GlyphProbe (0: off)")
    ap.add_argument("--read-attn", type=float, default=0.0,
                    help="weight of the decoder attention guidance of ReadingAttention (0: off)")
    ap.add_argument("--bag-probe", type=float, default=0.0,
                    help="weight of the bag-of-tokens loss of the training-only BagProbe (0: off)")
    ap.add_argument("--eval-every", type=float, default=4.0, help="minutes between held-out CER checks")
    ap.add_argument("--eval-pages", type=int, default=24)
    ap.add_argument("--final-eval-pages", type=int, default=0)
    ap.add_argument("--final-eval-modes", nargs="+", default=["base", "gundam"])
    ap.add_argument("--size", default="{}", help="JSON overrides of common.DEFAULT_SIZE")
    a = ap.parse_args()

    rank, world = int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    if world > 1:
        import torch.distributed as dist

        if dev == "cuda":
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
        dist.init_process_group("nccl" if dev == "cuda" else "gloo")
    if dev == "cuda":
        dev = f"cuda:{torch.cuda.current_device()}"
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    if a.logfile and rank == 0:
        Path(a.logfile).parent.mkdir(parents=True, exist_ok=True)
    logf = open(a.logfile, "a") if a.logfile and rank == 0 else None

    def log(**kw):
        if rank:
            return
        line = json.dumps(kw)
        print(line, flush=True)
        if logf:
            logf.write(line + "\n")
            logf.flush()

    tok = load_tokenizer(a.tok)
    ids = special_ids(tok)
    from transformers import UnlimitedOcrForConditionalGeneration

    state = torch.load(a.state, map_location="cpu", weights_only=False) if a.state and os.path.exists(a.state) else None
    if state is not None:
        cfg = transformers_config(tok.get_vocab_size(), ids, state["size"])
        size = state["size"]
    else:
        size = json.loads(a.size)
        cfg = transformers_config(tok.get_vocab_size(), ids, size)
    cfg.text_config.initializer_range = 0.02
    torch.manual_seed(0)
    if a.init and state is None:
        from common import load_model

        model = load_model(a.init)
    else:
        model = UnlimitedOcrForConditionalGeneration(cfg)
    model.to(dev).train()
    probe = torch.nn.ModuleDict({"pixel": PixelProbe(cfg.text_config.hidden_size),
                                 "glyph": GlyphProbe(cfg.text_config.hidden_size),
                                 "bag": BagProbe(cfg.text_config.hidden_size, cfg.text_config.vocab_size)}).to(dev)
    nparam = sum(p.numel() for p in model.parameters())
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2 and "pos" not in n and "embed" not in n]
    nodecay = [p for n, p in model.named_parameters() if not (p.ndim >= 2 and "pos" not in n and "embed" not in n)]
    decay += list(probe.parameters())
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.05}, {"params": nodecay, "weight_decay": 0.0}],
                            lr=a.lr, betas=(0.9, 0.95), fused=dev.startswith("cuda"))
    step, trained_s, salt = 0, 0.0, 1
    warm, step0 = 300, 0
    if state is not None:
        model.load_state_dict(state["model"])
        if "probe" in state:
            probe.load_state_dict(state["probe"], strict=False)
            opt.load_state_dict(state["opt"])
        step, trained_s, salt = state["step"], state["trained_s"], state["salt"] + 1
    elif a.init:
        if (Path(a.init) / "probe_heads.pt").exists():  # the training-only heads of the run that made the bundle
            probe.load_state_dict(torch.load(Path(a.init) / "probe_heads.pt", map_location=dev), strict=False)
        if (Path(a.init) / "trainer.json").exists():
            # weights only (the bundle): continue the schedule, re-warm the fresh optimizer moments briefly
            t = json.loads((Path(a.init) / "trainer.json").read_text())
            step, trained_s, salt = t["step"], t["trained_s"], t["salt"] + 1
            warm, step0 = 50, step
        else:
            warm = 100  # trained weights, fresh schedule
    log(event="start", params=nparam, step=step, trained_s=round(trained_s, 1), device=dev,
        gpu=torch.cuda.get_device_name() if dev != "cpu" else None, world=world, size=size)

    total_s = a.total_minutes * 60
    progress = mp.Value("d", trained_s / total_s)
    ds = PageBatches(a.tok, salt * 64 + rank, progress, a.bs_scale, read_cells=a.read_attn > 0)
    dl = torch.utils.data.DataLoader(ds, batch_size=None, num_workers=a.workers, pin_memory=dev != "cpu",
                                     prefetch_factor=4 if a.workers else None, persistent_workers=False)

    def save_state():
        if not a.state or rank:
            return
        Path(a.state).parent.mkdir(parents=True, exist_ok=True)
        torch.save({"model": model.state_dict(), "probe": probe.state_dict(), "opt": opt.state_dict(), "step": step,
                    "trained_s": trained_s, "salt": salt, "size": size}, a.state + ".tmp")
        os.replace(a.state + ".tmp", a.state)

    def held_out(n, modes=("base", "gundam")):
        from evaluate import evaluate

        model.eval()
        r = evaluate(model, tok, n, modes, dev, amp=dev != "cpu", rank=rank, world=world)
        model.train()
        return {m: round(v["cer"], 4) for m, v in r.items()}

    t_run = time.time()
    t_last = time.time()
    t_eval = time.time()
    # per step since the last log line: (mode, caption loss, the STATS), all still on the device: read back
    # once per log line, not once per value per step (each read waits for the GPU)
    hist: list = []
    projected: list = []  # projector outputs of this step: global views, then local tiles (gundam)
    model.model.multi_modal_projector.register_forward_hook(
        lambda m, _i, o: projected.append(o) if m.training else None)
    reading = ReadingAttention(model.model.language_model) if a.read_attn else None
    batches = iter(dl)
    data_wait = 0.0  # seconds this rank waited for the DataLoader since the last log line (data-bound if large)
    while True:
        t_fetch = time.time()
        batch = next(batches, None)
        if batch is None:
            break
        now = time.time()
        data_wait += now - t_fetch
        trained_s += now - t_last
        t_last = now
        prog = min(1.0, trained_s / total_s)
        progress.value = prog
        lr = a.lr * min(1.0, (step - step0 + 1) / warm) * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * prog)))
        for g in opt.param_groups:
            g["lr"] = lr
        mode = batch.pop("mode")
        glyph_targets = [batch.pop("glyphs")] + ([batch.pop("glyphs_local")] if "glyphs_local" in batch else [])
        read_cells = batch.pop("read_cells", None)
        kw = {k: (v.to(dev, non_blocking=True) if torch.is_tensor(v) else v) for k, v in batch.items()}
        kw["pixel_values"] = normalize(kw["pixel_values"])
        if "pixel_values_local" in kw:
            kw["pixel_values_local"] = normalize(kw["pixel_values_local"])
        with torch.autocast(device_type=dev.split(":")[0], dtype=torch.bfloat16, enabled=dev != "cpu"):
            out = model(**kw)
        reg = feature_regulariser(projected)
        feat_rms = torch.cat([f.detach().float().reshape(-1) for f in projected]).pow(2).mean().sqrt()
        views = [kw["pixel_values"]] + ([kw["pixel_values_local"]] if "pixel_values_local" in kw else [])
        rec = sum(probe["pixel"](f, px) for f, px in zip(projected, views)) / len(views)
        bag = probe["bag"](per_sample_tokens(projected, kw.get("num_local_patches")), kw["labels"]) \
            if a.bag_probe else torch.zeros((), device=rec.device)
        gly, gacc = torch.zeros((), device=rec.device), torch.zeros((), device=rec.device)
        if a.glyph_probe:
            for f, gt in zip(projected, glyph_targets):
                lo, ac = probe["glyph"](f, gt.to(dev, non_blocking=True))
                gly, gacc = gly + lo / len(views), gacc + ac / len(views)
        frac = image_fraction(projected[0])
        projected.clear()
        read = reading.loss(read_cells.to(dev, non_blocking=True)) if reading else torch.zeros((), device=rec.device)
        loss = (out.loss + a.feat_reg * reg + a.pixel_probe * rec + a.bag_probe * bag + a.glyph_probe * gly
                + a.read_attn * read)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if world > 1:
            all_reduce_grads(model, world, probe.parameters())
        gn = torch.nn.utils.clip_grad_norm_(list(model.parameters()) + list(probe.parameters()), 1.0)
        opt.step()
        step += 1
        hist.append((mode, out.loss.detach().float(),
                     torch.stack([reg, feat_rms, rec, bag, frac, gly, gacc, read]).detach().float()))
        if step % 50 == 0 or step <= 3:
            caption = torch.stack([h[1] for h in hist]).tolist()
            stats = torch.stack([h[2] for h in hist]).mean(0).tolist()
            losses = {m: [c for (hm, _, _), c in zip(hist, caption) if hm == m] for m in MODE_W}
            log(step=step, t=round(trained_s, 1), lr=round(lr, 6), gn=round(float(gn), 3), prog=round(prog, 3),
                data_wait=round(data_wait, 2),
                **{k: round(v, d) for k, v, d in zip(STATS, stats, STAT_DIGITS)},
                **{f"loss_{m}": round(float(np.mean(v)), 4) for m, v in losses.items() if v})
            hist = []
            data_wait = 0.0
        done = (time.time() - t_run > a.minutes * 60) or prog >= 1.0 or (a.max_steps and step >= a.max_steps)
        if world > 1:  # every rank stops at the same step (rank 0's clock decides)
            flag = torch.tensor([1.0 if done else 0.0], device=dev)
            dist.broadcast(flag, 0)
            done = bool(flag.item())
        if a.eval_every > 0 and (time.time() - t_eval > a.eval_every * 60) and not done:
            t0 = time.time()
            log(step=step, eval=held_out(a.eval_pages))
            t_eval = time.time()
            t_last += time.time() - t0  # eval time is not training time
        if done:
            break
    save_state()
    log(event="saved", step=step, trained_s=round(trained_s, 1), run_s=round(time.time() - t_run, 1))
    if a.bundle and rank == 0:
        save_bundle(model, a.tok, a.bundle, copy_tokenizer=not a.no_tok_copy)
        (Path(a.bundle) / "trainer.json").write_text(json.dumps({"step": step, "trained_s": trained_s, "salt": salt}))
        # training-only: never in examples/model. bf16 and without an unused bag head, so that a bundle carried to
        # the device for the next call stays small (the device takes 64 MiB with the repository)
        heads = {k: v.to(torch.bfloat16) for k, v in probe.state_dict().items()
                 if a.bag_probe or not k.startswith("bag.")}
        torch.save(heads, Path(a.bundle) / "probe_heads.pt")
        log(event="bundled", dir=a.bundle)
    if a.final_eval_pages:
        from evaluate import evaluate

        model.eval()
        r = evaluate(model, tok, a.final_eval_pages, tuple(a.final_eval_modes), dev, amp=dev != "cpu", rank=rank, world=world)
        log(event="final_eval", **r)
    if world > 1:
        dist.barrier()
    os._exit(0)  # do not wait for the data workers


if __name__ == "__main__":
    main()
