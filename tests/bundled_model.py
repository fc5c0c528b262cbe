"""The model bundled in examples/model as GGUF files, converted as `make demo` converts it (text Q8_0, vision
F16): for the tests and benchmarks that run the CLI, tilepass-batch or the documents path on a trained model."""

from __future__ import annotations

from pathlib import Path

MODEL = Path(__file__).resolve().parents[1] / "examples" / "model"


def bundled_gguf(out_dir: Path) -> tuple[Path, Path]:
    """(text, vision) GGUF files in out_dir, converted unless they are there already."""
    from convert.converter import convert

    if not (MODEL / "config.json").exists():
        raise FileNotFoundError(f"the trained model is not bundled in {MODEL}")
    text, vision = out_dir / "text-q8_0.gguf", out_dir / "mmproj-f16.gguf"
    if not text.exists():
        convert(MODEL, outtype="q8_0", outfile=text, progress=False)
    if not vision.exists():
        convert(MODEL, mmproj=True, outtype="f16", outfile=vision, progress=False)
    return text, vision
