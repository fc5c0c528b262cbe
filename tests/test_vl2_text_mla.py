"""DeepSeek-VL2 small and base text decoders (architecture ``deepseek2``: multi-head latent attention run as MQA
over the cached latent, the softmax-greedy and sigmoid ``noaux_tc`` MoE gates) against
../shared/reference/deepseek_vl2_ref.py (plain PyTorch, checked against the official code): random models of its
``tiny_config("small")`` (MLA without q LoRA, softmax greedy) and ``tiny_config("base")`` (q LoRA, sigmoid +
correction bias, renormalised, x2.0), saved in the official layout, converted by our converter, run by our
engine.

* F32: the logits of a whole image prompt within 1e-4 (relative to the largest) and 32 greedy tokens identical,
  for a small image (1x1 tiles: every prompt row) and a wide one (4x2: its 1807 image rows prefilled in 4
  batches of 512, later batches reading the cached latents, then the text rows, whose logits are compared; all
  1822 rows of 129280 logits would be ~1 GB per copy), through the pipeline (prompt ids checked too). The
  greedy check runs the reference once over the prompt + our 32 tokens and asks that each token be the argmax
  of the row before it (by induction the same as the reference's generate(), which recomputes the sequence
  per token: minutes here);
* three sequences decoded together (tp_text_eval_batch: one pass per step, each its own latent cache, different
  prompt and output lengths): prompt logits within 1e-4 and greedy tokens the reference's;
* the file's info (ids, widths) and the cache length: n_ctx tokens fit, one more is refused; F32 / F16 / Q8_0
  caches of the latent (batches of 7: every batch reads the cache);
* bad files (head_count_kv, key_length, kv_lora_rank against the tensors, gating function, yarn, group-limited
  routing, a missing tensor) refused with the problem named;
* quantised text files: cosine floors of the prompt logits against the reference, on the tiny models (64-wide
  rows: Q4_K falls back to Q5_0 there) and on ``wide_config`` models whose rows take Q4_K (text prompt).
  Measured (2-core x86, AVX-512): tiny small / base f16 0.999999 / 0.999801, q8_0 0.998929 / 0.995489,
  q4_k 0.961838 / 0.938769; wide small / base f16 0.999981 / 0.999979, q8_0 0.986169 / 0.972698,
  q4_k 0.734853 / 0.656047 (the MHA wide tiny model: 0.999993, 0.989506, 0.750173: random std-0.2 weights
  amplify the rounding; MLA is no worse). Floors below leave a margin under these.
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from convert import convert
from encoder.native import TilepassError
from encoder.pipeline import OcrPipeline
from encoder.text_model import BatchItem, TextModel
from encoder.vision import VisionEncoder

sys.path.insert(0, str(Path(__file__).resolve().parent))
import reference_vl2 as rv  # noqa: E402
from test_vision_reference import cosine, page_image  # noqa: E402
from tp_testing import rel_err  # noqa: E402

F32_TOL = 1e-4
KINDS = ("small", "base")
QUESTION = "Describe this image in detail."
IMAGES = {"small": ((300, 200), (1, 1)), "wide": ((1600, 500), (4, 2))}
# cosine of all prompt logits against the reference (measured values in the docstring)
TINY_COSINE = {"f16": 0.999, "q8_0": 0.98, "q4_k": 0.90}
WIDE_COSINE = {"f16": 0.9995, "q8_0": 0.95, "q4_k": 0.55}
WIDE_PROMPT = "The quick brown fox jumps over the lazy dog, then writes a long markdown table of numbers 12345."


@pytest.fixture(scope="module")
def ref():
    return rv.ref()


@pytest.fixture(scope="module", params=KINDS)
def kind(request) -> str:
    return request.param


@pytest.fixture(scope="module")
def files(kind, tmp_path_factory) -> dict[str, Path]:
    d = rv.get_vl2(kind)
    out = tmp_path_factory.mktemp(f"vl2-{kind}")
    got = {"dir": d, "mmproj": convert(d, mmproj=True, outtype="f32", outfile=out / "mmproj.gguf",
                                       progress=False).outfile}
    for t in ("f32", "f16", "q8_0", "q4_k"):
        got[t] = convert(d, outtype=t, outfile=out / f"text-{t}.gguf", progress=False).outfile
    return got


def _inputs(ref, kind: str, model_dir: Path, img):
    tok = ref.load_tokenizer(model_dir)
    return ref.build_inputs(tok, "<image>\n" + QUESTION, [img], rv.tiny_config(kind))


def _reference_logits(kind: str, ids, images, generated: list[int], first_row: int = 0) -> np.ndarray:
    """The reference's logits of rows first_row.. of the prompt followed by `generated` (their embeddings appended
    as its generate() does): row len(ids) - 1 + i predicts generated token i. One pass instead of generate()'s
    recomputation per token: a greedy run whose every token is the argmax of its row IS the reference's greedy
    output."""
    m = rv.get_model(kind)
    with torch.no_grad():
        x = m.embed(ids, images)
        x = torch.cat([x, m.language.model.embed_tokens.weight[torch.tensor(generated, dtype=torch.long)]])
        return m.language.lm_head(m.language.model(x)[first_row:]).float().numpy()


@pytest.fixture(scope="module")
def small_case(ref, kind, files):
    """The small image's prompt, its image rows (our F32 vision file) and the reference's prompt logits."""
    img = page_image(*IMAGES["small"][0], seed=5)
    ids, images = _inputs(ref, kind, files["dir"], img)
    (emb,) = VisionEncoder(files["mmproj"], n_threads=2).encode([img])
    return ids, emb, _reference_logits(kind, ids, images, [])


def test_file_info_and_cache_length(kind, files):
    t = rv.tiny_config(kind)["language_config"]
    m = TextModel(files["f32"], n_threads=2, n_ctx=40)
    R = rv.ref()
    assert (m.info.n_vocab, m.info.n_embd, m.info.n_layer, m.info.n_ctx) == (R.VOCAB, t["hidden_size"],
                                                                            t["num_hidden_layers"], 40)
    assert (m.info.bos_id, m.info.eos_id, m.info.pad_id, m.info.image_token_id) == (R.BOS_ID, R.EOS_ID, R.PAD_ID,
                                                                                    R.IMAGE_TOKEN_ID)
    assert m.info.n_pos_axes == 1
    m.eval(list(range(3, 43)))  # exactly n_ctx tokens fit the one-head latent cache
    assert m.n_past == 40
    with pytest.raises(TilepassError):
        m.eval([5])
    assert m.n_past == 40


@pytest.mark.parametrize("image", list(IMAGES))
def test_prompt_logits_and_greedy_tokens(ref, kind, files, image):
    size, grid = IMAGES[image]
    img = page_image(*size, seed=5)
    ids, images = _inputs(ref, kind, files["dir"], img)
    pipe = OcrPipeline(files["f32"], files["mmproj"], n_threads=2)
    (prepared,) = pipe.prepare([img])
    assert prepared.grid == grid
    (emb,), _ = pipe.encode([prepared])
    prompt = pipe.prompt(QUESTION, prepared.n_tokens, prepared.token_grid)
    assert prompt.ids == [int(i) for i in ids]
    text = pipe.text
    n = len(prompt.ids)
    text.reset()
    if image == "small":  # every row of the prompt
        first = 0
        logits = text.eval(prompt.ids, embd=emb, all_logits=True)
    else:  # [1807 image rows, 4 batches of 512] then the text rows: the row before them and theirs
        split = max(i for i, t in enumerate(prompt.ids) if t == text.info.image_token_id) + 1
        first = split - 1
        logits = np.vstack([text.eval(prompt.ids[:split], embd=emb), text.eval(prompt.ids[split:], all_logits=True)])
    text.reset()
    greedy = text.greedy(prompt.ids, 32, embd=emb)
    ref_logits = _reference_logits(kind, ids, images, greedy, first)
    assert logits.shape[0] == n - first
    assert rel_err(logits, ref_logits[:n - first]) < F32_TOL
    assert greedy == [int(t) for t in np.argmax(ref_logits[n - 1 - first:], axis=1)[:32]]


def test_sequences_decoded_together_match_the_reference(kind, files):
    """Three text prompts of different lengths in one tp_text_eval_batch per step (each sequence its own latent
    cache): every prompt's logits within 1e-4 of the reference, and every sequence's greedy tokens (different
    counts: the shorter ones finish while the others go on) the argmax of the reference's rows."""
    R = rv.ref()
    rng = np.random.default_rng(3)
    prompts = [[R.BOS_ID] + [int(t) for t in rng.integers(10, 1000, n)] for n in (5, 19, 11)]
    n_new = (9, 3, 6)
    m = TextModel(files["f32"], n_threads=2, n_ctx=64)
    seqs = [m.new_sequence(40) for _ in prompts]
    outs = m.eval_batch([BatchItem(s, ids, all_logits=True) for s, ids in zip(seqs, prompts)])
    toks: list[list[int]] = [[int(np.argmax(o[-1]))] for o in outs]
    while True:
        live = [i for i in range(len(prompts)) if len(toks[i]) < n_new[i]]
        if not live:
            break
        step = m.eval_batch([BatchItem(seqs[i], [toks[i][-1]]) for i in live])
        for i, logits in zip(live, step):
            toks[i].append(int(np.argmax(logits)))
    for i, ids in enumerate(prompts):
        ref_logits = _reference_logits(kind, torch.tensor(ids, dtype=torch.long), [], toks[i])
        assert rel_err(outs[i], ref_logits[:len(ids)]) < F32_TOL, f"sequence {i}: prompt logits"
        assert toks[i] == [int(t) for t in np.argmax(ref_logits[len(ids) - 1:], axis=1)[:n_new[i]]], f"sequence {i}"
        assert seqs[i].n_past == len(ids) + n_new[i] - 1


@pytest.mark.parametrize("outtype", ["f16", "q8_0", "q4_k"])
def test_quantised_text_cosine(kind, files, small_case, outtype, record_property):
    ids, emb, ref_logits = small_case
    logits = TextModel(files[outtype], n_threads=2).eval(ids.numpy(), embd=emb, all_logits=True)
    c = cosine(logits, ref_logits)
    record_property(f"cosine_{kind}_{outtype}", c)
    print(f"{kind} {outtype}: prompt logits cosine {c:.6f}")
    assert c >= TINY_COSINE[outtype]


def test_quantised_wide_text_cosine(ref, kind, tmp_path, record_property):
    """Rows of 256 / 512 take the K-quants (the tiny models' 64-wide rows fall back)."""
    cfg = rv.wide_config(kind)
    d = rv.get_vl2(kind, config=cfg)
    reference = rv.get_model(kind, config=cfg)
    tok = ref.load_tokenizer(d)
    ids = torch.tensor([ref.BOS_ID] + tok.encode(WIDE_PROMPT, add_special_tokens=False).ids)
    with torch.no_grad():
        ref_logits = reference(ids).numpy()
    for outtype in ("f32", "f16", "q8_0", "q4_k"):
        f = convert(d, outtype=outtype, outfile=tmp_path / f"{outtype}.gguf", progress=False).outfile
        logits = TextModel(f, n_threads=2).eval(ids.numpy(), all_logits=True)
        if outtype == "f32":
            assert rel_err(logits, ref_logits) < F32_TOL
            continue
        c = cosine(logits, ref_logits)
        record_property(f"wide_cosine_{kind}_{outtype}", c)
        print(f"wide {kind} {outtype}: prompt logits cosine {c:.6f}")
        assert c >= WIDE_COSINE[outtype], outtype


def _copy_gguf(src: Path, dst: Path, keys: dict, drop: str | None = None) -> Path:
    """src with some keys set (gguf value type, value) and one tensor left out."""
    import gguf
    from gguf import GGUFValueType as VT

    r = gguf.GGUFReader(src)
    w = gguf.GGUFWriter(str(dst), r.fields["general.architecture"].contents())
    for k, f in r.fields.items():
        if k.startswith("GGUF.") or k == "general.architecture" or k in keys:
            continue
        if f.types[0] == VT.ARRAY:
            w.add_key_value(k, f.contents(), VT.ARRAY, sub_type=f.types[-1])
        else:
            w.add_key_value(k, f.contents(), f.types[0])
    for k, (vt, v) in keys.items():
        w.add_key_value(k, v, vt)
    for t in r.tensors:
        if t.name != drop:
            w.add_tensor(t.name, np.asarray(t.data), raw_dtype=t.tensor_type)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return dst


def test_bad_files_are_refused_with_the_problem_named(tmp_path):
    from gguf import GGUFValueType as VT

    d = rv.get_vl2("small", config=rv.wide_config("small"))
    src = convert(d, outtype="f16", outfile=tmp_path / "src.gguf", progress=False).outfile
    TextModel(src)  # the untouched copy loads
    cases = [
        ({"deepseek2.attention.head_count_kv": (VT.UINT32, 2)}, None, "head_count_kv is 2"),
        ({"deepseek2.attention.key_length": (VT.UINT32, 999)}, None, "key_length 999"),
        ({"deepseek2.attention.kv_lora_rank": (VT.UINT32, 128)}, None, "attn_kv_a_mqa"),
        ({"deepseek2.expert_gating_func": (VT.UINT32, 3)}, None, "gating function 3"),
        ({"deepseek2.rope.scaling.type": (VT.STRING, "yarn")}, None, "rope scaling 'yarn'"),
        ({"deepseek2.expert_group_count": (VT.UINT32, 4), "deepseek2.expert_group_used_count": (VT.UINT32, 2)}, None,
         "group-limited"),
        ({}, "blk.1.attn_k_b.weight", "blk.1.attn_k_b.weight"),
    ]
    for i, (keys, drop, want) in enumerate(cases):
        f = _copy_gguf(src, tmp_path / f"bad{i}.gguf", keys, drop)
        with pytest.raises(TilepassError, match=want.replace("(", r"\(")):
            TextModel(f)


def test_kv_cache_types_on_the_latent(ref, kind, tmp_path, record_property):
    """The F32 weights of a wide model (cached key 256 + 64, value 256: Q8_0 blocks fit) prefilled 7 tokens per
    batch: an F32 cache within 1e-4; F16 and Q8_0 caches by cosine (measured: small / base 0.9999981 / 0.9999984
    and 0.9981945 / 0.9983334)."""
    cfg = rv.wide_config(kind)
    d = rv.get_vl2(kind, config=cfg)
    tok = ref.load_tokenizer(d)
    ids = torch.tensor([ref.BOS_ID] + tok.encode(WIDE_PROMPT, add_special_tokens=False).ids)
    with torch.no_grad():
        ref_logits = rv.get_model(kind, config=cfg)(ids).numpy()
    f = convert(d, outtype="f32", outfile=tmp_path / "f32.gguf", progress=False).outfile
    for kv, floor in (("f32", None), ("f16", 0.9999), ("q8_0", 0.995)):
        logits = TextModel(f, n_threads=2, kv_type=kv, n_batch=7).eval(ids.numpy(), all_logits=True)
        if floor is None:
            assert rel_err(logits, ref_logits) < F32_TOL
            continue
        c = cosine(logits, ref_logits)
        record_property(f"kv_{kv}_cosine_{kind}", c)
        assert c >= floor, kv
