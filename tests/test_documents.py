"""Documents (encoder/documents.py, pdf.py, layout.py, manifest.py, progress.py and the CLI's document runs):
PDFs written by tests/pdfmaker.py (text, a ruled table, a page with /Rotate 90, mixed page sizes, a crop-box
origin, a password-protected one, a truncated one, an empty page tree) rendered with PDFium at the asked dpi;
page ranges and bad inputs; the output layout; resume refusing a changed model, setting or input unless
--force; Ctrl-C; the progress line. The model runs are the llama.cpp-written tiny fixture pair in tiny mode
(random weights: what is checked is the files, not the text)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
import pdfmaker as pm  # noqa: E402

from encoder.cli import main  # noqa: E402
from encoder.documents import RangeSyntaxError, expand_inputs, parse_ranges, split_input  # noqa: E402
from encoder.manifest import MANIFEST_NAME  # noqa: E402
from encoder.pdf import PdfDocument, PdfError  # noqa: E402
from output_tree import tree  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
FIXTURE = ROOT.parent / "shared" / "fixtures" / "llamacpp-tiny-v1"
TEXT, VISION, PAGE = FIXTURE / "text-f16.gguf", FIXTURE / "mmproj-f32.gguf", FIXTURE / "page.png"
QUICK = ("--mode", "tiny", "-n", "3", "--no-repeat-ngram", "0", "-t", "2")


def run_cli(capsys, *args, text: Path = TEXT) -> tuple[int, str, str]:
    rc = main([str(a) for a in ("-m", text, "--mmproj", VISION, *args)])
    cap = capsys.readouterr()
    return rc, cap.out, cap.err


def error_lines(err: str) -> list[str]:
    return [line for line in err.splitlines() if ": error:" in line]


@pytest.fixture
def pdfs(tmp_path) -> dict[str, Path]:
    d = tmp_path / "in"
    d.mkdir()
    good = pm.make_pdf(pm.sample_pages())
    files = {"sample": good, "locked": pm.make_pdf(pm.sample_pages()[:1], password="secret"),
             "cut": good[: len(good) // 2], "empty": pm.make_pdf([]), "zero": b""}
    out = {}
    for name, data in files.items():
        (d / f"{name}.pdf").write_bytes(data)
        out[name] = d / f"{name}.pdf"
    return out


# ---- rendering ------------------------------------------------------------------------------------------
def dark(img: Image.Image, box: tuple[float, float, float, float]) -> float:
    """Share of dark pixels inside box (x1, y1, x2, y2) of the image."""
    a = np.asarray(img.convert("L"))[int(box[1]):int(box[3]), int(box[0]):int(box[2])]
    return float((a < 100).mean())


@pytest.mark.parametrize("dpi", [144, 72, 100])
def test_pages_render_at_the_dpi_with_their_orientation(pdfs, dpi):
    """Each page is ceil(points * dpi / 72) pixels each way, as displayed (a /Rotate 90 page is landscape); the
    mark drawn at each page's user-space top-left corner shows where PDFium put it: top-left on the upright
    pages, top-right on the page turned 90 degrees clockwise."""
    s = dpi / 72
    specs = pm.sample_pages()
    with PdfDocument(pdfs["sample"]) as doc:
        assert doc.n_pages == 4
        for n, spec in enumerate(specs, 1):
            page = doc.render(n, dpi)
            w, h = (spec.height, spec.width) if spec.rotate in (90, 270) else (spec.width, spec.height)
            assert page.image.size == (int(np.ceil(w * s)), int(np.ceil(h * s))), n
            assert page.image.mode == "RGB"
            assert (page.geometry.rotation, page.geometry.dpi) == (spec.rotate, dpi)
            upright_mark = (36 * s + 2, 36 * s + 2, 72 * s - 2, 72 * s - 2)
            turned_mark = ((w - 72) * s + 2, 36 * s + 2, (w - 36) * s - 2, 72 * s - 2)
            mark, elsewhere = (turned_mark, upright_mark) if spec.rotate == 90 else (upright_mark, turned_mark)
            assert dark(page.image, mark) > 0.95, n
            assert dark(page.image, elsewhere) < 0.05, n
    with PdfDocument(pdfs["sample"]) as doc:
        img = doc.render(1, dpi).image  # text: "Page one: plain text" at (100, 700), 24 pt
        assert 0.02 < dark(img, (100 * s, (792 - 720) * s, 330 * s, (792 - 695) * s)) < 0.6
        img = doc.render(2, dpi).image  # the table: 6 rules across at y = 700, 670, ... 550 (A4: 842 pt high)
        a = np.asarray(img.convert("L")) < 160
        x0, x1 = int(110 * s), int(410 * s)
        for r in range(6):
            y = (842 - (700 - 30 * r)) * s
            rows = a[max(0, int(y) - 1):int(y) + 2, x0:x1]
            assert rows.any(axis=0).mean() > 0.95, (dpi, r)
        between = (842 - 685) * s  # halfway between two rules: only digits, no rule
        assert a[int(between), x0:x1].mean() < 0.3


def test_pixel_boxes_to_pdf_points(pdfs):
    """The mark found in each rendered page maps back to where it was drawn in PDF user space (36 pt in from the
    top-left corner of the MediaBox, whose origin is (10, 20) on page 4), rotation undone."""
    for n, spec in enumerate(pm.sample_pages(), 1):
        with PdfDocument(pdfs["sample"]) as doc:
            page = doc.render(n, 144)
        a = np.asarray(page.image.convert("L")) < 100
        w, h = page.image.size
        # the mark is the only dark square in its corner of the page
        corner = np.zeros_like(a)
        xs = slice(w - 200, w) if spec.rotate == 90 else slice(0, 200)
        corner[:200, xs] = a[:200, xs]
        ys, xs_ = np.nonzero(corner)
        box = (xs_.min(), ys.min(), xs_.max() + 1, ys.max() + 1)
        x0, y0 = spec.origin
        want = (x0 + 36, y0 + spec.height - 72, x0 + 72, y0 + spec.height - 36)
        assert np.allclose(page.geometry.to_points(box), want, atol=1.0), (n, page.geometry.to_points(box), want)


def test_broken_pdfs_are_clear_errors(pdfs, tmp_path):
    cases = {"locked": "password-protected", "cut": "damaged or truncated", "empty": "page tree with no pages",
             "zero": r"empty file \(0 bytes\)"}
    for name, words in cases.items():
        with pytest.raises(PdfError, match=words) as e:
            PdfDocument(pdfs[name])
        assert str(pdfs[name]) in str(e.value)
    with pytest.raises(PdfError, match="no such file"):
        PdfDocument(tmp_path / "nope.pdf")
    with PdfDocument(pdfs["sample"]) as doc:
        with pytest.raises(PdfError, match=r"no page 5 \(the PDF has 4 pages\)"):
            doc.render(5)
        with pytest.raises(PdfError, match="use a lower --dpi"):
            doc.render(1, dpi=144, max_pixels=1000)


# ---- inputs ---------------------------------------------------------------------------------------------
def test_page_ranges():
    assert parse_ranges("3-7,12,20-", "x") == ((3, 7), (12, 12), (20, None))
    assert split_input("doc.pdf:2") == ("doc.pdf", ((2, 2),))
    assert split_input("doc.pdf") == ("doc.pdf", None)
    assert split_input("dir/a:b.pdf") == ("dir/a:b.pdf", None)  # not a range: not split
    for bad, words in (("doc.pdf:0", "page numbers start at 1"), ("doc.pdf:9-3", "runs backwards"),
                       ("doc.pdf:", "no pages after ':'"), ("doc.pdf:1,,2", "empty page range"),
                       ("doc.pdf:1-2-3", "not a page or a range")):
        with pytest.raises(RangeSyntaxError, match=words):
            split_input(bad)


def test_a_path_with_a_colon_that_exists_is_not_split(tmp_path, pdfs):
    p = tmp_path / "odd:2"
    shutil.copy(pdfs["sample"], p)
    ex = expand_inputs([str(p)])  # found by its %PDF- header
    assert [(d.path, d.kind, d.pages) for d in ex.documents] == [(str(p), "pdf", (1, 2, 3, 4))]


def test_expansion_of_directories_globs_and_ranges(tmp_path, pdfs):
    d = tmp_path / "docs"
    (d / "sub").mkdir(parents=True)
    for name in ("b.pdf", "a.PDF", "sub/c.pdf"):
        shutil.copy(pdfs["sample"], d / name)
    shutil.copy(PAGE, d / "scan.png")
    shutil.copy(PAGE, d / ".hidden.png")
    (d / "notes.txt").write_text("x")
    (tmp_path / "nothing").mkdir()
    ex = expand_inputs([str(d)])
    assert [Path(x.path).name for x in ex.documents] == ["a.PDF", "b.pdf", "scan.png"]
    assert [x.name for x in ex.documents] == ["a", "b", "scan"]
    assert ex.document_mode and ex.errors == [] and ex.n_pages == 9
    assert ex.notes == [f"{d}: 2 PDFs, 1 image: {d / 'a.PDF'}, {d / 'b.pdf'}, {d / 'scan.png'}"]
    ex = expand_inputs([str(d / "**" / "*.pdf"), f"{pdfs['sample']}:2-3", f"{pdfs['sample']}:4,1",
                        str(tmp_path / "nothing"), str(tmp_path / "none*.pdf"), f"{pdfs['sample']}:3-9",
                        str(pdfs["locked"]), str(pdfs["cut"])])
    assert [(Path(x.path).name, x.pages, x.name) for x in ex.documents] == [
        ("b.pdf", (1, 2, 3, 4), "b"), ("c.pdf", (1, 2, 3, 4), "c"), ("sample.pdf", (1, 2, 3, 4), "sample")]
    assert ex.errors == [
        f"{tmp_path / 'nothing'}: no PDF or image in this directory (looked for *.pdf and the image suffixes *.png, "
        "*.jpg, *.tif ...; not in subfolders)",
        f"{tmp_path / 'none*.pdf'}: no PDF or image matches this pattern",
        f"{pdfs['sample']}: page 9 is past the end (the PDF has 4 pages)",
        f"{pdfs['locked']}: the PDF is password-protected (encrypted); it cannot be read without its password",
        f"{pdfs['cut']}: not a readable PDF (damaged or truncated, not a PDF, or a page tree with no pages)"]
    # files inside the output directory are left out of directories and globs
    ex = expand_inputs([str(d / "**" / "*.pdf")], exclude_under=d / "sub")
    assert [Path(x.path).name for x in ex.documents] == ["b.pdf"]
    # images only: not a document run (the single-image CLI as before)
    assert not expand_inputs([str(PAGE), "missing.png"]).document_mode


# ---- the CLI on documents -------------------------------------------------------------------------------


def test_pdf_and_image_into_a_directory(tmp_path, pdfs, capsys):
    """A PDF, an image and two unusable PDFs: exit 1, one error line each for the bad ones, the layout for the
    others; the pages' JSON carries the rendered size, the points and the rotation; the merged markdown has one
    marker per page, in order."""
    out = tmp_path / "out"
    rc, stdout, err = run_cli(capsys, *QUICK, pdfs["sample"], "--image", PAGE, pdfs["locked"], pdfs["cut"],
                              "-o", out)
    assert rc == 1 and stdout == "", err
    errs = error_lines(err)
    assert len(errs) == 2 and "locked.pdf: the PDF is password-protected" in errs[0] and "cut.pdf" in errs[1]
    names = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file())
    assert names == [MANIFEST_NAME, "page.json", "page.md", "page/page-0001.json", "page/page-0001.md",
                     "sample.json", "sample.md"] + [f"sample/page-000{n}.{e}" for n in range(1, 5) for e in ("json", "md")]
    md = (out / "sample.md").read_text()
    assert [line for line in md.splitlines() if line.startswith("<!--")] == [f"<!-- page {n} -->" for n in range(1, 5)]
    for n in range(1, 5):
        assert (out / "sample" / f"page-000{n}.md").read_text().strip() in md
    doc = json.loads((out / "sample.json").read_text())
    assert (doc["name"], doc["kind"], doc["n_pages"], doc["dpi"]) == ("sample", "pdf", 4, 144.0)
    sizes = [(p["page"], p["width"], p["height"], p["size_pt"], p["rotation"]) for p in doc["pages"]]
    assert sizes == [(1, 1224, 1584, [612, 792], 0), (2, 1190, 1684, [595, 842], 0),
                     (3, 1584, 1224, [792, 612], 90), (4, 840, 596, [420, 298], 0)]
    for p in doc["pages"]:
        assert p["hit_limit"] is True and p["complete"] is False and p["tokens"]["generated"] == 3
        assert set(p["timings_ms"]) == {"encode_batch", "prefill", "decode"}
    man = json.loads((out / MANIFEST_NAME).read_text())
    assert sorted(man["documents"]) == ["page", "sample"]
    assert {k: v["status"] for k, v in man["documents"]["sample"]["pages"].items()} == {str(n): "done" for n in range(1, 5)}
    assert man["settings"]["mode"] == "tiny" and man["settings"]["dpi"] == 144.0
    assert "summary: 0 pages ok, 5 hit -n (written, incomplete), 0 failed" in err
    assert "progress: 5/5 pages, 2/2 documents" in err
    # stdout without -o: the pages with their markers, as for several images
    rc, stdout, err = run_cli(capsys, *QUICK, f"{pdfs['sample']}:2-3")
    assert rc == 3 and stdout.count("<!-- page ") == 2 and f"{pdfs['sample']}:3 -->" in stdout


@pytest.mark.parametrize("case", ["missing pdf", "missing image", "empty dir", "glob", "range 0", "backwards",
                                  "past the end", "range on an image", "boxes"])
def test_bad_inputs(tmp_path, pdfs, capsys, case):
    (tmp_path / "empty").mkdir()
    arg, rc_want, words = {
        "missing pdf": (tmp_path / "nope.pdf", 1, "nope.pdf: no such file"),
        "missing image": (tmp_path / "nope.png", 1, "nope.png: no such file"),
        "empty dir": (tmp_path / "empty", 1, "no PDF or image in this directory"),
        "glob": (tmp_path / "x*.pdf", 1, "no PDF or image matches this pattern"),
        "range 0": (f"{pdfs['sample']}:0", 2, "page numbers start at 1"),
        "backwards": (f"{pdfs['sample']}:9-3", 2, "the range 9-3 runs backwards"),
        "past the end": (f"{pdfs['sample']}:3-5", 1, "page 5 is past the end (the PDF has 4 pages)"),
        "range on an image": (f"{PAGE}:1", 1, "page ranges are for a PDF"),
        "boxes": (pdfs["sample"], 2, "--boxes is for images"),
    }[case]
    extra = ("--boxes", tmp_path / "b") if case == "boxes" else ()
    rc, out, err = run_cli(capsys, *QUICK, arg, *extra, "-o", tmp_path / "out")
    assert rc == rc_want and out == "", err
    assert words in error_lines(err)[0] and "Traceback" not in err
    if rc_want == 2 or case != "missing image":
        assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_resume_refuses_changes_unless_forced(tmp_path, pdfs, capsys):
    out = tmp_path / "out"
    args = (*QUICK, pdfs["sample"], "-o", out)
    rc, _, err = run_cli(capsys, *args)
    assert rc == 3, err
    first = tree(out)
    mtimes = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()}
    # the same command: nothing to do, nothing rewritten
    rc, _, err = run_cli(capsys, *args)
    assert rc == 3 and "nothing to do" in err and "encoding" not in err
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()} == mtimes
    # an output setting changed: refused, nothing touched
    rc, _, err = run_cli(capsys, *QUICK[:2], "-n", "4", *QUICK[4:], pdfs["sample"], "-o", out)
    assert rc == 2, err
    assert "holds 4 pages made differently: n_predict was 3, now 4" in error_lines(err)[0] and "--force" in err
    assert tree(out) == first
    # with --force: redone with 4 tokens
    rc, _, err = run_cli(capsys, *QUICK[:2], "-n", "4", *QUICK[4:], pdfs["sample"], "-o", out, "--force")
    assert rc == 3, err
    assert all(p["tokens"]["generated"] == 4 for p in json.loads((out / "sample.json").read_text())["pages"])
    assert json.loads((out / MANIFEST_NAME).read_text())["settings"]["n_predict"] == 4
    # a copy of the model is the same model; one whose weights differ is not
    text = tmp_path / "text.gguf"
    shutil.copy(TEXT, text)
    rc, _, err = run_cli(capsys, *QUICK[:2], "-n", "4", *QUICK[4:], pdfs["sample"], "-o", out, text=text)
    assert rc == 3 and "nothing to do" in err, err
    with open(text, "r+b") as f:  # one byte of the last tensor's weights
        f.seek(-100, os.SEEK_END)
        b = f.read(1)
        f.seek(-100, os.SEEK_END)
        f.write(bytes([b[0] ^ 1]))
    rc, _, err = run_cli(capsys, *QUICK[:2], "-n", "4", *QUICK[4:], pdfs["sample"], "-o", out, text=text)
    assert rc == 2 and "the text model is not the one used before" in err, err
    # another input file under the same name: refused; with --force only that document is redone
    shutil.copy(PAGE, tmp_path / "in" / "pic.png")
    rc, _, err = run_cli(capsys, *QUICK[:2], "-n", "4", *QUICK[4:], pdfs["sample"], tmp_path / "in" / "pic.png",
                         "-o", out)
    assert rc == 3, err
    pdfs["sample"].write_bytes(pm.make_pdf(pm.sample_pages()[:2]))
    rc, _, err = run_cli(capsys, *QUICK[:2], "-n", "4", *QUICK[4:], pdfs["sample"], tmp_path / "in" / "pic.png",
                         "-o", out)
    assert rc == 2 and "sample: the input is not the file its pages were made from" in err, err
    rc, _, err = run_cli(capsys, *QUICK[:2], "-n", "4", *QUICK[4:], pdfs["sample"], tmp_path / "in" / "pic.png",
                         "-o", out, "--force")
    assert rc == 3, err
    assert "resuming" in err and "1 of 3 pages done before" in err  # pic's page kept, sample's 2 pages redone
    assert [p["page"] for p in json.loads((out / "sample.json").read_text())["pages"]] == [1, 2]


def test_failed_pages_are_tried_again(tmp_path, capsys):
    """An image that cannot be read fails alone (recorded as failed); once it is readable the next run does only
    that page."""
    d = tmp_path / "in"
    d.mkdir()
    shutil.copy(PAGE, d / "a.png")
    (d / "b.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    out = tmp_path / "out"
    rc, _, err = run_cli(capsys, *QUICK, d, "-o", out)
    assert rc == 1 and "b.png" in error_lines(err)[0], err
    man = json.loads((out / MANIFEST_NAME).read_text())
    assert man["documents"]["b"]["pages"]["1"]["status"] == "failed"
    assert "summary: 0 pages ok, 1 hit -n (written, incomplete), 1 failed" in err
    shutil.copy(PAGE, d / "b.png")
    # b.png changed since it failed: a failed page is not a made page, so nothing to refuse
    rc, _, err = run_cli(capsys, *QUICK, d, "-o", out)
    assert rc == 3 and "1 of 2 pages done before" in err and "[1/1]" in err, err
    assert (out / "b.md").exists()


def test_figures_are_cropped_and_linked(tmp_path):
    """A page whose model output has an `image` region: the crop from the rendered page, the link in the page file
    (relative to DIR/NAME/) and in the document (relative to DIR), the region's figure and boxes in points."""
    from encoder.documents import Document
    from encoder.grounding import GroundingParser, page_json
    from encoder.layout import DocumentOutputs, page_record
    from encoder.manifest import DocInput, Manifest, reconcile_inputs

    pdf = tmp_path / "my doc.pdf"
    pdf.write_bytes(pm.make_pdf(pm.sample_pages()[:1]))
    doc = Document(str(pdf), "pdf", (1,), 1, name="my doc")
    with PdfDocument(pdf) as d:
        page = d.render(1, 144)
    out = tmp_path / "out"
    out.mkdir()
    m = Manifest(out)
    reconcile_inputs(m, {}, [DocInput("my doc", str(pdf), "pdf", 1, None)], force=False)
    docs = DocumentOutputs(out, m, 144, {})
    docs.open_documents([doc])
    raw = ("<|ref|>title<|/ref|><|det|>[[100, 50, 600, 90]]<|/det|>\n# Page one\n\n"
           "<|ref|>image<|/ref|><|det|>[[0, 0, 500, 500]]<|/det|>\n\nAfter the figure.")
    parser = GroundingParser(image_link=docs.image_link(1))
    text = parser.feed(raw) + parser.finish()
    assert "![](figures/page-0001-0.jpg)" in text
    w, h = page.image.size
    record = page_record(page_json(text, raw, parser.regions, w, h), doc, 1, page.geometry, hit_limit=False)
    docs.write_page(doc, 1, text, record, page.image, parser.regions, "eos")
    crop = Image.open(out / "my doc" / "figures" / "page-0001-0.jpg")
    assert crop.size == (int(500 / 999 * w), int(500 / 999 * h))
    assert "![](my%20doc/figures/page-0001-0.jpg)" in (out / "my doc.md").read_text()
    assert (out / "my doc" / "page-0001.md").read_text() == text
    reg = json.loads((out / "my doc" / "page-0001.json").read_text())["regions"][1]
    assert reg["label"] == "image" and reg["figure"] == "figures/page-0001-0.jpg"
    # the box [0, 0, 500, 500] of the page's 0..999 grid: the top-left quarter of the 612 x 792 pt page, y up
    assert np.allclose(reg["boxes_pt"][0], [0, 792 - 500 / 999 * 792, 500 / 999 * 612, 792], atol=0.6)
    assert json.loads((out / MANIFEST_NAME).read_text())["documents"]["my doc"]["pages"]["1"]["figures"] == [
        "page-0001-0.jpg"]


def test_one_run_per_directory(tmp_path, pdfs, capsys):
    from encoder.outputs import DirectoryLock

    out = tmp_path / "out"
    out.mkdir()
    with DirectoryLock(out):
        rc, _, err = run_cli(capsys, *QUICK, pdfs["sample"], "-o", out)
    assert rc == 1 and "another tilepass-cli run is writing to this directory" in err
    assert list(out.iterdir()) == []


def test_progress_line_on_a_terminal():
    import io

    from encoder.progress import Progress

    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    now = [0.0]
    s = Tty()
    p = Progress(total_pages=10, total_docs=2, stream=s, clock=lambda: now[0])
    p.start_page("a.pdf:1")
    for k in range(4):
        now[0] += 15.0
        p.page_done(ok=k != 3, hit_limit=k == 1, document_done=k == 2)
    line = s.getvalue().rsplit("\r\x1b[K", 1)[1]
    assert line.startswith("[########------------] 4/10 pages, 1/2 documents, 4.0 pages/min, ETA 1m30s, 1 failed")
    p.clear()
    assert s.getvalue().endswith("\r\x1b[K")
    assert p.summary() == "2 pages ok, 1 hit -n (written, incomplete), 1 failed; 4 pages in 1m00s (240 pages/hour)"


def test_ctrl_c_keeps_finished_pages_and_says_how_to_resume(tmp_path, pdfs):
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "encoder.cli", "-m", str(TEXT), "--mmproj", str(VISION), "--mode", "tiny", "-t", "2",
           "-n", "150", "--no-repeat-ngram", "0", "--images-per-pass", "1", str(pdfs["sample"]), "-o", str(out)]
    # about a second per page: SIGINT as soon as page 1 is written lands in page 2
    p = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        lines = []
        t_end = time.time() + 120
        while time.time() < t_end:
            line = p.stderr.readline()
            lines.append(line)
            if "wrote" in line or not line:
                break
        p.send_signal(signal.SIGINT)
        rc = p.wait(timeout=60)
    finally:
        if p.poll() is None:
            p.kill()
    err = "".join(lines) + p.stderr.read()
    assert rc == 130, err
    assert "interrupted; the page being decoded was not written" in err
    assert "run the same command again to do the rest" in err
    assert not [q for q in out.rglob("*") if q.name.endswith(".part")]
    done = json.loads((out / MANIFEST_NAME).read_text())["documents"]["sample"]["pages"]
    assert "1" in done and done["1"]["status"] == "done"
    assert (out / "sample.md").read_text().count("<!-- page") == len(done)
    r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 3 and f"resuming in {out}: {len(done)} of 4 pages done before" in r.stderr, r.stderr
    assert (out / "sample.md").read_text().count("<!-- page") == 4
