"""Average the weights of checkpoints of one run (checkpoint averaging, as in "Attention Is All You Need" §6.1).

    python examples/ocrtrain/average.py OUT_DIR BUNDLE [BUNDLE ...] [--weights W ...]
    python examples/ocrtrain/average.py OUT_DIR BUNDLE ... --validate 60   # and compare it with the last

Bundles late in one schedule (low learning rate, one basin) average into a model that is often a little better
than any of them. OUT_DIR gets the average as a bundle (bf16, original layout config, the tokenizer (`--tokenizer`, default the
last bundle's), the last bundle's trainer.json, which records the steps averaged). `--validate N` measures the CER of the last bundle (the one the
average would replace) and of the average on N validation pages (seeds 2_100_000_000 + i: neither training's, < 1.9e9, nor the held-out test
pages', 2_000_000_000 + i), so the choice is not made on the pages the model card reports.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import load_model, load_tokenizer, save_bundle  # noqa: E402

VALIDATION_SEED0 = 2_100_000_000


def average(bundles: list[Path], weights: list[float]):
    """A float32 model whose every parameter and buffer is the weighted mean of the bundles'."""
    import torch

    models = [load_model(b) for b in bundles]
    total = float(sum(weights))
    states = [m.state_dict() for m in models]
    out = models[-1]
    avg = {}
    for name, value in states[-1].items():
        if not torch.is_floating_point(value):
            avg[name] = value
            continue
        avg[name] = sum(w / total * s[name].float() for w, s in zip(weights, states)).to(value.dtype)
    out.load_state_dict(avg)
    return out


def _trainer_state(bundle: Path) -> dict:
    """A bundle's trainer.json ({} if it has none)."""
    f = bundle / "trainer.json"
    return json.loads(f.read_text()) if f.exists() else {}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", type=Path)
    ap.add_argument("bundles", type=Path, nargs="+")
    ap.add_argument("--weights", type=float, nargs="+", help="one per bundle (default: equal)")
    ap.add_argument("--validate", type=int, default=0, metavar="N", help="CER of the last bundle and of the average "
                    "on N validation pages")
    ap.add_argument("--modes", nargs="+", default=["base", "gundam"])
    ap.add_argument("--tokenizer", type=Path, help="directory of tokenizer.json (default: the last bundle; device "
                    "bundles have none: examples/model)")
    a = ap.parse_args()
    weights = a.weights or [1.0] * len(a.bundles)
    if len(weights) != len(a.bundles):
        ap.error("--weights needs one value per bundle")
    model = average(a.bundles, weights)
    last = a.bundles[-1]
    tok_dir = a.tokenizer or last
    save_bundle(model, tok_dir, a.out)
    if (last / "transformers_config.json").exists():  # the same model; save_pretrained of an fp32-loaded one
        shutil.copy(last / "transformers_config.json", a.out / "transformers_config.json")  # adds sub-config dtypes
    trainer = _trainer_state(last)
    trainer["averaged"] = {"steps": [_trainer_state(b).get("step") for b in a.bundles], "weights": weights}
    (a.out / "trainer.json").write_text(json.dumps(trainer))
    if (last / "probe_heads.pt").exists():  # training-only heads: a resumed run keeps the last ones
        shutil.copy(last / "probe_heads.pt", a.out / "probe_heads.pt")
    if a.validate:
        from evaluate import evaluate

        tok = load_tokenizer(tok_dir)
        for name, path in ((str(last), last), ("average", a.out)):
            res = evaluate(load_model(path), tok, a.validate, tuple(a.modes), seed0=VALIDATION_SEED0)
            print(json.dumps({"model": name, **{m: round(r["cer"], 5) for m, r in res.items()}}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
