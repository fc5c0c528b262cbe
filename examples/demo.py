"""`make demo`: the main job on the bundled example.

1. the model: the trained small DeepSeek-OCR v1 in examples/model/ when it is bundled, else a tiny one
   with RANDOM weights built with transformers (it will not read: the output is noise, which the demo
   says plainly);
2. convert-hf-to-gguf writes its text GGUF (Q8_0) and vision GGUF (F16);
3. tilepass-cli turns examples/page.png into markdown.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BUILD = ROOT / "build" / "demo"
TRAINED = ROOT / "examples" / "model"
PAGE = ROOT / "examples" / "page.png"


def say(msg: str) -> None:
    print(f"[demo] {msg}", flush=True)


def random_model(out: Path) -> Path:
    sys.path.insert(0, str(ROOT / "tests"))
    from reference_models import TINY, build_tiny_ocr

    if not (out / "config.json").exists():
        build_tiny_ocr(out, seed=0, dims=TINY)
    return out


def status_lines() -> list[str]:
    """The model card's status paragraph (the `>` lines at its top), so the demo says how well it reads."""
    card = TRAINED / "README.md"
    if not card.exists():
        return ["(no model card)"]
    return [ln[1:].strip().replace("**", "") for ln in card.read_text().splitlines() if ln.startswith(">")]


def example_page() -> Path:
    if PAGE.exists():
        return PAGE
    from PIL import Image, ImageDraw

    out = BUILD / "page.png"
    img = Image.new("RGB", (900, 1200), "white")
    d = ImageDraw.Draw(img)
    d.text((80, 80), "# tilepass demo page", fill="black")
    for i in range(12):
        d.text((80, 160 + 40 * i), f"Line {i + 1}: the quick brown fox jumps over the lazy dog.", fill="black")
    img.save(out)
    return out


def run(cmd: list[str]) -> subprocess.CompletedProcess:
    say("$ " + " ".join(str(c) for c in cmd))
    return subprocess.run(cmd, check=False)


def main() -> int:
    BUILD.mkdir(parents=True, exist_ok=True)
    trained = (TRAINED / "config.json").exists()
    if trained:
        model_dir = TRAINED
        say(f"model: the small DeepSeek-OCR v1 trained by the project, bundled in {TRAINED.relative_to(ROOT)}")
        for line in status_lines():
            say(f"       {line}")
    else:
        say("model: no trained model is bundled yet, so this demo builds a tiny DeepSeek-OCR v1 with RANDOM")
        say("       weights (transformers UnlimitedOcr). It runs the whole pipeline, but its text is noise.")
        model_dir = random_model(BUILD / "random-model")
    text = BUILD / "text-q8_0.gguf"
    vision = BUILD / "mmproj-f16.gguf"
    py = sys.executable
    t0 = time.perf_counter()
    for args, out in (([], text), (["--mmproj"], vision)):
        outtype = "f16" if args else "q8_0"
        r = run([py, "-m", "convert", str(model_dir), *args, "--outtype", outtype, "--outfile", str(out), "--force"])
        if r.returncode != 0:
            return r.returncode
    say(f"converted in {time.perf_counter() - t0:.1f} s")
    page = example_page()
    say(f"page: {page.relative_to(ROOT)}; markdown follows on stdout")
    r = run([py, "-m", "encoder.cli", "-m", str(text), "--mmproj", str(vision), "--image", str(page),
             "--mode", "gundam", "-n", "256" if not trained else "2048", "-t", "2"])
    if not trained:
        say("(random weights: the text above is noise; it shows the pipeline, not recognition)")
    elif page.with_suffix(".md").exists():
        say(f"what the page says ({page.with_suffix('.md').relative_to(ROOT)}), to compare with the output above:")
        for line in page.with_suffix(".md").read_text().splitlines():
            say(f"  | {line}")
    # exit status 3 = the page hit -n without EOS: expected of random weights
    return 0 if r.returncode in (0, 3) and not (trained and r.returncode == 3) else r.returncode


if __name__ == "__main__":
    raise SystemExit(main())
