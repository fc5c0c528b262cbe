"""The bundled trained model (examples/model) reads a PDF as well as it reads the same pages as images.

Five held-out pages of the model's own generator (examples/ocrtrain/gen.py, seeds 2,000,000,000 + k, never
trained on) are put in one PDF, each page an image at 72/144 of a point per pixel, so that PDFium renders it at
the default 144 dpi to the page's own pixels. tilepass-cli reads the PDF (`doc.pdf -o DIR`) and, in another run,
the five PNG files (`--image`); base mode, the `Free OCR.` prompt the model was trained on, its text Q8_0 and
vision F16 files as `make demo` converts them. The merged markdown's CER against the generator's truth (the page
markers split off, pages joined by a blank line on both sides) is within 0.5 points of the per-image CER (edit
distance summed over the pages, over the truth's length). About 15 s on 2 cores.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "examples" / "ocrtrain"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import pdfmaker as pm  # noqa: E402
from bundled_model import bundled_gguf  # noqa: E402
from evaluate import EVAL_SEED0, edit_distance  # noqa: E402
from gen import make_page  # noqa: E402

N_PAGES = 5


@pytest.fixture(scope="module")
def model_files(tmp_path_factory) -> tuple[Path, Path]:
    return bundled_gguf(tmp_path_factory.mktemp("bundled"))


def cli(text: Path, vision: Path, *args) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "encoder.cli", "-m", str(text), "--mmproj", str(vision), "-t", "2", "-q",
           "--mode", "base", "-p", "<image>\nFree OCR.", "-n", "800", *map(str, args)]
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)


def test_pdf_reads_as_well_as_the_images(model_files, tmp_path):
    text, vision = model_files
    pages = [make_page(EVAL_SEED0 + k) for k in range(N_PAGES)]
    truth = [p.markdown.strip() for p in pages]
    images = []
    for k, p in enumerate(pages):
        images.append(tmp_path / f"page{k}.png")
        p.image.save(images[-1])
    pdf = tmp_path / "doc.pdf"
    pdf.write_bytes(pm.make_pdf([pm.PageSpec(p.image.width / 2, p.image.height / 2, image=p.image) for p in pages]))

    r = cli(text, vision, pdf, "-o", tmp_path / "pdf-out")
    assert r.returncode == 0, r.stderr  # every page ends with EOS
    merged = (tmp_path / "pdf-out" / "doc.md").read_text()
    parts = re.split(r"^<!-- page (\d+) -->$", merged, flags=re.M)
    assert parts[0] == "" and [int(n) for n in parts[1::2]] == list(range(1, N_PAGES + 1))
    doc_pages = [s.strip() for s in parts[2::2]]

    r = cli(text, vision, *[a for im in images for a in ("--image", im)], "-o", tmp_path / "img-out")
    assert r.returncode == 0, r.stderr
    image_pages = [(tmp_path / "img-out" / f"page{k}.md").read_text().strip() for k in range(N_PAGES)]

    per_image = sum(edit_distance(a, b) for a, b in zip(image_pages, truth)) / sum(len(t) for t in truth)
    joined = "\n\n".join(truth)
    merged_cer = edit_distance("\n\n".join(doc_pages), joined) / len(joined)
    same = sum(a == b for a, b in zip(doc_pages, image_pages))
    print(f"per-image CER {per_image:.4f}, merged-document CER {merged_cer:.4f}, {same}/{N_PAGES} pages identical")
    assert per_image < 0.06  # the model card's 2.8 % over 200 pages; these five read at about 2 %
    assert abs(merged_cer - per_image) <= 0.005
