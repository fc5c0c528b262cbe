"""Fast CPU tests of examples/ocrtrain: generator, tokenizer, model build/forward, bundled checkpoint layout."""

import json
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "examples" / "ocrtrain"))
MODEL = ROOT / "examples" / "model"

import common  # noqa: E402
import gen  # noqa: E402

SMALL = dict(sam_width=32, sam_layers=2, sam_heads=2, sam_global=(1,), sam_mlp=64, sam_neck=16, sam_down=(16, 32),
             clip_layers=1, clip_heads=4, clip_mlp=64, text_hidden=32, text_layers=2, text_heads=4,
             text_dense_mlp=48, experts=4, expert_mlp=16, topk=2, shared=1)


def test_generator_deterministic():
    a, b, c = gen.make_page(123), gen.make_page(123), gen.make_page(124)
    assert a.markdown == b.markdown and a.grounding == b.grounding
    assert np.array_equal(np.asarray(a.image), np.asarray(b.image))
    assert a.markdown != c.markdown
    assert "<|ref|>" in a.grounding and "<|det|>[[" in a.grounding
    for blk in a.blocks:
        assert blk.markdown in a.markdown


def test_grounding_coordinates_in_range():
    import re

    for s in range(5):
        p = gen.make_page(s)
        for box in re.findall(r"<\|det\|>\[\[(.*?)\]\]<\|/det\|>", p.grounding):
            v = [int(x) for x in box.split(",")]
            assert len(v) == 4 and all(0 <= x <= 999 for x in v) and v[0] <= v[2] and v[1] <= v[3]


def test_tokenizer_special_tokens_round_trip():
    tok = common.load_tokenizer(MODEL)
    ids = common.special_ids(tok)
    for s in common.SPECIALS:
        i = tok.token_to_id(s)
        assert i is not None and tok.encode(s, add_special_tokens=False).ids == [i]
    cfg = json.loads((MODEL / "tokenizer_config.json").read_text())
    assert {int(k): v["content"] for k, v in cfg["added_tokens_decoder"].items()}[ids["image"]] == "<image>"
    p = gen.make_page(7)
    for text in (p.markdown, p.grounding):
        assert tok.decode(tok.encode(text, add_special_tokens=False).ids, skip_special_tokens=False) == text


@pytest.mark.parametrize("seed", [11, 12, 13, 14])  # 11 and 14 are rotated
def test_located_characters_sit_on_their_glyphs(seed):
    """gen.locate's centres against the independently painted glyph map: each drawn character of the markdown
    and of the grounded form lies on a pixel of its own glyph class (rotated pages included)."""
    p = gen.make_page(seed)
    glyphs = np.asarray(p.glyphs)
    for text, xy in ((p.markdown, p.markdown_xy), (p.grounding, p.grounding_xy)):
        at = np.nonzero(~np.isnan(xy[:, 0]))[0]
        assert len(at) > 0.4 * sum(not c.isspace() for c in p.markdown)
        got = glyphs[np.round(xy[at, 1]).astype(int), np.round(xy[at, 0]).astype(int)]
        assert (got == [gen.glyph_class(text[i]) for i in at]).all()
        assert not any(text[i] in "#<>[]" for i in at)  # markdown syntax and tags are never located


@pytest.mark.parametrize("mode", ["tiny", "base", "gundam"])
def test_image_cells_show_their_characters(mode):
    """common.image_cells against the glyph map cut by the view code (common._cut, nearest-neighbour): the 64x64
    view pixels of the image token named for a character hold that character's class, in the tiles and in the
    global view."""
    from PIL import Image

    hits = total = 0
    for seed in (3, 4, 5):
        p = gen.make_page(seed)
        g, tiled, grid = common._cut(p.glyphs, mode, Image.NEAREST, 0)
        g, tiled = np.asarray(g), None if tiled is None else np.asarray(tiled)
        cells = common.image_cells(p.markdown_xy, p.image.width, p.image.height, mode, grid)
        q = common.MODES[mode] // 64
        cols, rows = grid
        n_local = 10 * rows * (10 * cols + 1)
        assert (cells[:, 0] >= 0).any() == (tiled is not None)
        for i in np.nonzero(cells[:, 1] >= 0)[0]:
            if p.markdown[i].isspace():
                continue
            cls = gen.glyph_class(p.markdown[i])
            r, c = divmod(int(cells[i, 1]) - n_local, q + 1)
            assert 0 <= r < q and 0 <= c < q
            hits += cls in g[r * 64:(r + 1) * 64, c * 64:(c + 1) * 64]
            total += 1
            if cells[i, 0] >= 0:
                r, c = divmod(int(cells[i, 0]), 10 * cols + 1)
                hits += cls in tiled[r * 64:(r + 1) * 64, c * 64:(c + 1) * 64]
                total += 1
    assert total > 500 and hits / total > 0.995


def test_views_and_token_counts():
    p = gen.make_page(3)
    g, t, grid = common.make_views(p.image, "tiny")
    assert g.shape == (3, 512, 512) and t is None and common.n_image_tokens(512) == 73
    g, t, grid = common.make_views(p.image, "base")
    assert g.shape == (3, 1024, 1024) and common.n_image_tokens(1024) == 273
    g, t, grid = common.make_views(p.image, "gundam")
    assert t.shape == (grid[0] * grid[1], 3, 640, 640)
    assert common.tile_grid(1240, 1754) == (2, 3) and common.tile_grid(1000, 1000) == (2, 2)
    assert common.tile_grid(1920, 1080) == (4, 2)


def test_small_model_forward_and_original_config(tmp_path):
    torch = pytest.importorskip("torch")
    from transformers import UnlimitedOcrForConditionalGeneration

    tok = common.load_tokenizer(MODEL)
    ids = common.special_ids(tok)
    cfg = common.transformers_config(tok.get_vocab_size(), ids, SMALL)
    model = UnlimitedOcrForConditionalGeneration(cfg).eval()
    p = gen.make_page(5)
    g, tiles, grid = common.make_views(p.image, "gundam")
    inp, lab = common.build_ids(tok, common.n_image_tokens(1024, grid), common.PROMPT_FREE, p.markdown, ids)
    with torch.no_grad():
        out = model(input_ids=torch.tensor([inp]), labels=torch.tensor([lab]),
                    pixel_values=common.normalize(torch.from_numpy(g[None])),
                    pixel_values_local=common.normalize(torch.from_numpy(tiles)),
                    num_local_patches=[len(tiles)], patches_grid=[list(grid)])
    assert out.logits.shape == (1, len(inp), tok.get_vocab_size()) and torch.isfinite(out.loss)
    common.save_bundle(model, MODEL, tmp_path)
    d = json.loads((tmp_path / "config.json").read_text())
    assert "language_config" in d and "sam_vit_b" in d["vision_config"]["width"]
    m2 = common.load_model(tmp_path)
    with torch.no_grad():
        o2 = m2(input_ids=torch.tensor([inp]), pixel_values=common.normalize(torch.from_numpy(g[None])),
                pixel_values_local=common.normalize(torch.from_numpy(tiles)),
                num_local_patches=[len(tiles)], patches_grid=[list(grid)])
    ref = model.to(torch.bfloat16).float()(input_ids=torch.tensor([inp]),
                                           pixel_values=common.normalize(torch.from_numpy(g[None])),
                                           pixel_values_local=common.normalize(torch.from_numpy(tiles)),
                                           num_local_patches=[len(tiles)], patches_grid=[list(grid)])
    assert torch.allclose(o2.logits, ref.logits, atol=1e-3)


def test_reading_attention_loss_against_output_attentions():
    """train.ReadingAttention's hooked loss against the same loss computed here from transformers' own
    output_attentions (eager): for each query that predicts a located target token, -log of the attention mass
    of head 0 on the image tokens common.reading_cells names (next-token layers) or names for the token before
    (current-token layer)."""
    torch = pytest.importorskip("torch")
    from transformers import UnlimitedOcrForConditionalGeneration

    from train import READ_K, ReadingAttention, read_positions

    tok = common.load_tokenizer(MODEL)
    ids = common.special_ids(tok)
    cfg = common.transformers_config(tok.get_vocab_size(), ids, dict(SMALL, text_layers=4))
    torch.manual_seed(0)
    model = UnlimitedOcrForConditionalGeneration(cfg)
    reading = ReadingAttention(model.model.language_model)
    model.train()
    p = gen.make_page(6)
    g, _, grid = common.make_views(p.image, "base")
    inp, _ = common.build_ids(tok, common.n_image_tokens(1024, grid), common.PROMPT_FREE, p.markdown, ids)
    cells = common.reading_cells(tok, p.markdown, p.markdown_xy, p.image.width, p.image.height, "base", grid, READ_K)
    read = read_positions([inp], [cells], len(inp), ids["image"])
    with torch.no_grad():
        out = model(input_ids=torch.tensor([inp]), pixel_values=common.normalize(torch.from_numpy(g[None])),
                    output_attentions=True)
        got = float(reading.loss(read))
    att = [a[0, 0].double() for a in out.attentions]  # per layer, head 0: [queries, keys]

    def nll(a, targets):
        terms = [-torch.log(a[q, [k for k in row if k >= 0]].sum()) for q, row in enumerate(targets.tolist())
                 if any(k >= 0 for k in row)]
        return torch.stack(terms).mean()

    previous = torch.full_like(read[0], -1)
    previous[1:] = read[0, :-1]
    want = torch.stack([nll(att[2], read[0]), nll(att[3], read[0]), nll(att[1], previous)]).mean()
    assert (read[0] >= 0).any(-1).sum() > 50
    assert abs(got - float(want)) < 1e-4 * abs(float(want))


def test_edit_distance():
    from evaluate import edit_distance

    assert edit_distance("kitten", "sitting") == 3 and edit_distance("", "abc") == 3 and edit_distance("ab", "ab") == 0


def test_error_kinds_tally():
    """error_kinds.py's breakdown on a hand-made page: one digit and one letter misread, a table row intact, a
    list item dropped."""
    from collections import Counter

    import error_kinds as ek

    truth = "# Title\nWe paid 42 euro.\n<tr><td>7</td></tr>\n- gone"
    text = "# Title\nWe paid 47 eurp.\n<tr><td>7</td></tr>\n"
    assert ek.missed("abc", "abc") == [False] * 3
    assert ek.missed("a1c", "a2c") == [False, True, False]
    assert [ek.line_kind(x) for x in truth.split("\n")] == ["heading", "paragraph", "table", "list"]
    assert ek.line_kind("12. item") == "list" and ek.line_kind("") == "blank"
    chars, lines = Counter(), Counter()
    ek.tally(truth, text, chars, lines)
    by_char, by_line = ek.shares(chars), ek.shares(lines)
    assert by_char["digit"] == {"chars": 3, "missed": round(1 / 3, 4)}  # 4, 2 -> 7, the table's 7
    assert by_line["heading"] == {"chars": 7, "missed": 0.0}
    assert by_line["table"] == {"chars": 19, "missed": 0.0}
    assert by_line["paragraph"] == {"chars": 16, "missed": round(2 / 16, 4)}  # "2" and "o"
    assert by_line["list"] == {"chars": 6, "missed": 1.0}


def test_bundle_checkpoint_layout(tmp_path):
    """The demo model's architecture (default size), saved by save_bundle: bf16 shards within the size
    limits, the original tensor names, the original config layout and the bundled tokenizer."""
    from safetensors import safe_open
    from transformers import UnlimitedOcrForConditionalGeneration

    tok = common.load_tokenizer(MODEL)
    model = UnlimitedOcrForConditionalGeneration(common.transformers_config(tok.get_vocab_size(), common.special_ids(tok)))
    common.save_bundle(model.to(__import__("torch").bfloat16), MODEL, tmp_path)
    shards = sorted(tmp_path.glob("model*.safetensors"))
    assert shards and all(f.stat().st_size <= 16 * 1024 * 1024 for f in shards)
    assert sum(f.stat().st_size for f in tmp_path.iterdir()) <= 24 * 1024 * 1024
    names = {}
    for f in shards:
        with safe_open(str(f), "np") as s:
            for k in s.keys():
                names[k] = s.get_slice(k).get_dtype()
    assert set(names.values()) == {"BF16"}
    for must in ("model.sam_model.patch_embed.proj.weight", "model.view_seperator", "model.image_newline",
                 "model.projector.layers.weight", "lm_head.weight", "model.embed_tokens.weight",
                 "model.vision_model.transformer.layers.0.self_attn.qkv_proj.weight",
                 "model.layers.1.mlp.experts.0.gate_proj.weight", "model.layers.1.mlp.shared_experts.up_proj.weight",
                 "model.layers.1.mlp.gate.weight", "model.sam_model.net_3.weight"):
        assert must in names, must
    cfg = json.loads((tmp_path / "config.json").read_text())
    assert cfg["model_type"] == "deepseek_vl_v2" and cfg["language_config"]["vocab_size"] == tok.get_vocab_size()
    assert (tmp_path / "tokenizer.json").exists() and (tmp_path / "tokenizer_config.json").exists()


def test_average_bundles(tmp_path, monkeypatch):
    """average.py: every tensor of the written bundle is the weighted mean of the inputs' (read back from the
    safetensors files, to bf16 rounding), trainer.json names the steps averaged, the tokenizer comes along."""
    torch = pytest.importorskip("torch")
    from safetensors.torch import load_file
    from transformers import UnlimitedOcrForConditionalGeneration

    import average

    tok = common.load_tokenizer(MODEL)
    cfg = common.transformers_config(tok.get_vocab_size(), common.special_ids(tok), SMALL)
    dirs = []
    for step in (100, 200):
        torch.manual_seed(step)
        d = tmp_path / f"b{step}"
        common.save_bundle(UnlimitedOcrForConditionalGeneration(cfg).eval(), MODEL, d)
        (d / "trainer.json").write_text(json.dumps({"step": step, "trained_s": 1.0, "salt": 0}))
        dirs.append(d)
    out = tmp_path / "avg"
    monkeypatch.setattr(sys, "argv", ["average.py", str(out), *map(str, dirs), "--weights", "1", "3"])
    assert average.main() == 0

    def tensors(d):
        t = {}
        for f in sorted(d.glob("model*.safetensors")):
            t.update(load_file(str(f)))
        return t

    a, b, got = tensors(dirs[0]), tensors(dirs[1]), tensors(out)
    assert set(got) == set(a) and len(got) > 90
    for name, g in got.items():
        want = 0.25 * a[name].float() + 0.75 * b[name].float()
        assert g.dtype == torch.bfloat16 and g.shape == want.shape, name
        assert torch.all((g.float() - want).abs() <= want.abs() * 2**-8 + 1e-30), name
    assert json.loads((out / "trainer.json").read_text())["averaged"] == {"steps": [100, 200], "weights": [1.0, 3.0]}
    assert (out / "tokenizer.json").exists()
