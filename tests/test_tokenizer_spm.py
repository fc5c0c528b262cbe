"""SentencePiece (``llama``) vocabularies: the runtime tokenizer rebuilt from a GGUF (encoder/tokenizer.py) gives
the ids of the original tokenizer, and the converter writes such vocabularies (convert/tokenizer.py).

The originals: sentencepiece itself (``SentencePieceProcessor`` on the ``tokenizer.model``; it does not match
control pieces written in the text, so the text is split at them first, as every tokenizer that treats them as
special does), the ``tokenizers`` tokenizer of the checkpoint's ``tokenizer.json`` and transformers'
``AutoTokenizer`` on the checkpoint. Files: llama.cpp's own PaddleOCR-VL text file (its ``prompt_ids`` are the
ground truth for the prompt), the files our converter writes from a tiny checkpoint with ``tokenizer.model``
only, ``tokenizer.json`` only and both, and sentencepiece models trained here (BPE and Unigram, with control and
user-defined symbols, with and without the dummy prefix) on a multilingual corpus.
"""
from __future__ import annotations

import io
import re
import shutil
from pathlib import Path

import gguf
import numpy as np
import pytest
import sentencepiece as spm  # a test dependency (pyproject's test extra): the original tokenizer

import reference_paddleocr as rp
from convert import convert
from convert.tokenizer import load_spm_vocab, parse_sentencepiece_model
from encoder.tokenizer import Tokenizer, TokenizerError

FIXTURE = rp.FIXTURE_DIR
SPECIALS = sorted(rp.SPECIAL_TOKENS.values(), key=len, reverse=True)

CORPUS = [
    # Latin with accents, other scripts
    "Ünïcödé naïve café — Straße, façade, coöperate, Œuvre, ångström, jalapeño, Ærø. «Guillemets» „Zitat“",
    "Ελληνικά κείμενα, русский текст с ёлкой, עברית, ไทย, हिन्दी में पाठ, 한국어 문장입니다.",
    # CJK
    "第一章 概述\n本文档介绍了系统的设计与实现。数据来源于2023年的调查，共有12345名参与者。",
    "日本語のテキストです。カタカナとひらがなを含みます。東京タワーは333メートルです。鬱 鑑 ヴ",
    # Arabic (right to left, with digits)
    "مرحبا بالعالم! هذا نص عربي للاختبار ١٢٣ و 456.",
    # emoji, including sequences with joiners and variation selectors
    "Emoji: 😀 👍🏽 🇫🇷 ❤️ 🧑‍🔬 👨‍👩‍👧‍👦 — 𝔘𝔫𝔦𝔠𝔬𝔡𝔢 ​zero-width",
    # digit runs
    "1234567890 0000000000000000 3.14159265358979 -42 +7 1e10 0x1F 2024-06-01 12:30:45 ½ ¾",
    # code
    "def f(x):\n    return {'a': [x ** 2, x // 3]}  # comment\n\tif (a && b) { c->d = e[0]; }",
    "<table><tr><td>名称</td><td>Value</td></tr></table> | Column A | Column B |\n|---|---|",
    "$$\\frac{a}{b} \\coloneqq x_1 + x_2^{n}$$ and \\begin{align} y &= mx + c \\end{align}",
    # whitespace runs
    "   leading spaces and trailing   ",
    "tabs\t\tand  double  spaces\r\nCRLF lines\n\n\n   \n\u3000ideographic space\u00a0nbsp",
    " ",
    "",
    # every special token, alone, adjacent and inside text
    "<|begin_of_sentence|>User: <|IMAGE_START|><|IMAGE_PLACEHOLDER|><|IMAGE_PLACEHOLDER|><|IMAGE_END|>OCR:\n"
    "Assistant: ",
    "<s>Hello</s><unk> x<|IMAGE_END|> y <|IMAGE_START|>z<|begin_of_sentence|><|begin_of_sentence|>",
    "not special: <|IMAGE_PLACE HOLDER|> <s > <0x41> [PAD7] <|unused_400|>",
    # long runs
    "a" * 300 + " " + "数" * 100 + " " + "😀" * 20,
]
# OTSL table markers, as the model writes tables
CORPUS.append("<fcel>Name<fcel>Value<nl><fcel>α<fcel>1.5<nl><ecel><lcel><nl>")


def split_specials(text: str, specials: list[str]) -> list[tuple[bool, str]]:
    """Text split at whole special tokens (leftmost, longest first): [(is_special, piece)]."""
    if not specials:
        return [(False, text)] if text else []
    rx = re.compile("|".join(re.escape(s) for s in sorted(specials, key=len, reverse=True)))
    out, pos = [], 0
    for m in rx.finditer(text):
        if m.start() > pos:
            out.append((False, text[pos:m.start()]))
        out.append((True, m.group(0)))
        pos = m.end()
    if pos < len(text):
        out.append((False, text[pos:]))
    return out


def sp_encode(sp, text: str, specials: list[str]) -> list[int]:
    """sentencepiece's ids, the text split at the special pieces first (each segment encoded on its own: a model
    with a dummy prefix puts "▁" before each, which is what llama.cpp's add_space_prefix does)."""
    ids: list[int] = []
    for is_special, piece in split_specials(text, specials):
        ids += [sp.piece_to_id(piece)] if is_special else list(sp.encode(piece))
    return ids


def sp_from_gguf_vocab(path: Path, add_dummy_prefix: bool = False):
    """The sentencepiece model a llama.cpp ``llama`` vocabulary came from (pieces, scores; sentencepiece's own
    types: control pieces CONTROL, ``<unk>`` UNKNOWN), as sentencepiece loads it."""
    v = rp.fixture_vocabulary() if path == FIXTURE / "text-f16.gguf" else None
    assert v is not None
    v = rp.SpmVocabulary(v.pieces, v.scores, v.types, add_dummy_prefix=add_dummy_prefix)
    return spm.SentencePieceProcessor(model_proto=rp.sentencepiece_model_bytes(v))


def write_vocab_gguf(path: Path, vocab, *, add_space_prefix: bool | None = True, hf_json: bool = False) -> Path:
    """A text GGUF holding only a ``llama`` vocabulary (convert.tokenizer.load_spm_vocab's), as the converter
    writes it; ``add_space_prefix=None`` leaves the key out, as llama.cpp does without tokenizer_config's."""
    w = gguf.GGUFWriter(str(path), "paddleocr")
    w.add_tokenizer_model("llama")
    w.add_tokenizer_pre("default")
    w.add_token_list(vocab.tokens)
    w.add_token_scores(vocab.scores)
    w.add_token_types(vocab.token_types)
    for fn, v in ((w.add_bos_token_id, vocab.bos_id), (w.add_eos_token_id, vocab.eos_id),
                  (w.add_unk_token_id, vocab.unk_id), (w.add_pad_token_id, vocab.pad_id)):
        if v is not None:
            fn(v)
    if add_space_prefix is not None:
        w.add_add_space_prefix(add_space_prefix)
    if hf_json and vocab.hf_json:
        w.add_string(gguf.Keys.Tokenizer.HF_JSON, vocab.hf_json)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def check_same_ids(tok: Tokenizer, reference, texts, *, round_trip: bool = True) -> int:
    """``reference(text) -> ids`` equals ``tok.encode``; decoding gives the text back. Returns the tokens seen."""
    n = 0
    for s in texts:
        want = reference(s)
        got = tok.encode(s)
        assert got == want, (s, got[:40], want[:40])
        if round_trip:
            assert tok.decode(got) == s, s
        n += len(got)
    return n


# ---- llama.cpp's PaddleOCR-VL file ----------------------------------------------------------------------
@pytest.fixture(scope="module")
def fixture_tok() -> Tokenizer:
    assert (FIXTURE / "text-f16.gguf").is_file(), f"{FIXTURE} is missing"
    return Tokenizer.from_gguf(FIXTURE / "text-f16.gguf")


def test_llamacpp_file_prompt_ids(fixture_tok):
    """No tokenizer.huggingface.json: the vocabulary is rebuilt from tokens/scores/types; the chat-templated
    prompt gives exactly the reference's ids (no "▁" after the special tokens: add_space_prefix false)."""
    tok = fixture_tok
    assert (tok.source, tok.kind, tok.add_space_prefix) == ("tokenizer.ggml", "spm-bpe", False)
    assert (tok.bos_id, tok.eos_id, tok.unk_id, tok.pad_id, tok.n_vocab) == (1, 2, 0, 0, 103424)
    ref = np.load(FIXTURE / "reference.npz")
    n_img = int(np.prod(ref["image_grid_thw"])) // 4
    text = rp.expand_image_tokens(rp.render_prompt(1, "OCR:"), [n_img])
    assert tok.encode(text) == ref["prompt_ids"].tolist()
    assert tok.encode("<|begin_of_sentence|>User: ") == [100273, 300, 341, 331]
    assert tok.encode("OCR:\nAssistant: ") == [382, 309, 277, 304, 341, 331]


def test_llamacpp_file_against_sentencepiece(fixture_tok):
    """The multilingual corpus (every special token, byte fallback for every character the 400-piece vocabulary
    lacks): the ids of sentencepiece and of the reference tokenizer.json; the text back from the ids."""
    sp = sp_from_gguf_vocab(FIXTURE / "text-f16.gguf")
    hf = rp.hf_tokenizer()
    n = check_same_ids(fixture_tok, lambda s: sp_encode(sp, s, SPECIALS), CORPUS)
    check_same_ids(fixture_tok, lambda s: hf.encode(s, add_special_tokens=False).ids, CORPUS)
    assert n > 1500
    for i, t in rp.SPECIAL_TOKENS.items():
        assert fixture_tok.encode(t) == [i] and fixture_tok.token_bytes(i) == t.encode()
        assert i in fixture_tok.special_ids and fixture_tok.decode([i], skip_special=True) == ""
    # byte pieces decode to their byte, "▁" to a space
    assert fixture_tok.token_bytes(3 + 0x41) == b"A" and fixture_tok.token_bytes(331) == b" "


def test_space_prefix_defaults_to_true(tmp_path):
    """A ``llama`` file without tokenizer.ggml.add_space_prefix: llama.cpp's SentencePiece default, a "▁" before
    the text and after every special token, as sentencepiece with its dummy prefix gives per segment."""
    vocab = load_spm_vocab(rp.get_tiny_paddleocr(tokenizer="model"), 103424, bos_id=1, eos_id=2, pad_id=0)
    for key, prefix in ((None, True), (True, True), (False, False)):
        tok = Tokenizer.from_gguf(write_vocab_gguf(tmp_path / f"v{key}.gguf", vocab, add_space_prefix=key))
        assert tok.add_space_prefix is prefix
        sp = sp_from_gguf_vocab(FIXTURE / "text-f16.gguf", add_dummy_prefix=prefix)
        check_same_ids(tok, lambda s: sp_encode(sp, s, SPECIALS), CORPUS, round_trip=not prefix)
    tok = Tokenizer.from_gguf(tmp_path / "vNone.gguf")
    assert tok.encode("<|begin_of_sentence|>User: ")[:3] == [100273, 331, 300]  # "▁" "User"


def test_stream_never_splits_utf8(fixture_tok):
    """Byte-fallback pieces of one character (emoji: 4 bytes) come out only once the character is complete."""
    split_seen = False
    for s in CORPUS:
        ids = fixture_tok.encode(s)
        sd = fixture_tok.stream()
        parts = []
        for i in ids:
            p = sd.push(i)
            split_seen |= p == "" and bool(fixture_tok.token_bytes(i))
            assert "\ufffd" not in p
            parts.append(p)
        parts.append(sd.flush())
        assert "".join(parts) == s
    assert split_seen


# ---- what our converter writes from a checkpoint ------------------------------------------------------
@pytest.fixture(scope="module")
def converted(tmp_path_factory) -> dict[str, Path]:
    """Text files (--vocab-only) of the tiny reference checkpoint with tokenizer.model only, tokenizer.json only
    and both."""
    out = {}
    root = tmp_path_factory.mktemp("spm-files")
    for kind in ("model", "json", "both"):
        out[kind] = root / f"{kind}.gguf"
        convert(rp.get_tiny_paddleocr(tokenizer=kind), outfile=out[kind], vocab_only=True, progress=False)
    return out


@pytest.mark.parametrize("kind", ["model", "json", "both"])
@pytest.mark.parametrize("use_hf_json", [True, False], ids=["hf-json", "llama-vocab"])
def test_converted_files_same_ids(converted, kind, use_hf_json):
    """Each file, through its stored tokenizer.json (where it has one) and through its ``llama`` vocabulary
    alone (what llama.cpp reads): sentencepiece's ids, tokenizer.json's and transformers', and the prompt."""
    tok = Tokenizer.from_gguf(converted[kind], prefer_hf_json=use_hf_json)
    from_json = use_hf_json and kind != "model"
    assert tok.source == ("tokenizer.huggingface.json" if from_json else "tokenizer.ggml")
    assert tok.kind == "spm-bpe" and (tok.bos_id, tok.eos_id, tok.unk_id, tok.pad_id) == (1, 2, 0, 0)
    sp = spm.SentencePieceProcessor(model_proto=rp.sentencepiece_model_bytes(rp.fixture_vocabulary()))
    check_same_ids(tok, lambda s: sp_encode(sp, s, SPECIALS), CORPUS)
    hf = rp.hf_tokenizer()
    check_same_ids(tok, lambda s: hf.encode(s, add_special_tokens=False).ids, CORPUS)
    ref = np.load(FIXTURE / "reference.npz")
    text = rp.expand_image_tokens(rp.render_prompt(1, "OCR:"), [1472])
    assert tok.encode(text) == ref["prompt_ids"].tolist()


def test_transformers_tokenizer_agrees(converted):
    """transformers' own tokenizer of the checkpoint (LlamaTokenizer from tokenizer.json + tokenizer_config.json)
    gives the same ids as the runtime's rebuilt vocabulary."""
    from transformers import AutoTokenizer

    t = AutoTokenizer.from_pretrained(rp.get_tiny_paddleocr(tokenizer="json"))
    tok = Tokenizer.from_gguf(converted["json"], prefer_hf_json=False)
    check_same_ids(tok, lambda s: t.encode(s, add_special_tokens=False), CORPUS)


def test_converted_vocabularies_agree(converted):
    """The three files hold the same tokens and types as llama.cpp's file (the same tokenizer: our reference
    checkpoints carry the fixture's vocabulary); tokenizer.model's scores are sentencepiece's as llama.cpp writes
    them, tokenizer.json's come from the merge ranks (ordered as the pieces)."""
    kv = {k: _tok_kv(p) for k, p in converted.items()}
    theirs = _tok_kv(FIXTURE / "text-f16.gguf")
    for k in ("model", "json", "both"):
        assert kv[k]["tokenizer.ggml.tokens"] == theirs["tokenizer.ggml.tokens"], k
        assert kv[k]["tokenizer.ggml.token_type"] == theirs["tokenizer.ggml.token_type"], k
        assert kv[k]["tokenizer.ggml.add_space_prefix"] is False
        assert ("tokenizer.huggingface.json" in kv[k]) == (k != "model")
    assert kv["model"]["tokenizer.ggml.scores"] == theirs["tokenizer.ggml.scores"]
    assert kv["both"]["tokenizer.ggml.scores"] == theirs["tokenizer.ggml.scores"]
    s_json = np.asarray(kv["json"]["tokenizer.ggml.scores"])
    s_ref = np.asarray(theirs["tokenizer.ggml.scores"])
    merged = np.asarray(theirs["tokenizer.ggml.token_type"]) == 1
    merged[:259] = False
    merged[np.asarray([len(t) < 2 for t in theirs["tokenizer.ggml.tokens"]])] = False
    order = lambda s: np.argsort(-s[merged], kind="stable")  # noqa: E731
    assert np.array_equal(order(s_json), order(s_ref))


def _tok_kv(path: Path) -> dict:
    from encoder.tokenizer import _read_tokenizer_kv
    return _read_tokenizer_kv(path)


# ---- sentencepiece models trained here ------------------------------------------------------------------
TRAIN = [s for s in CORPUS if s.strip()] * 4 + [
    "The quick brown fox jumps over the lazy dog. Revenue grew 12.5% to $4,200,000 in fiscal 2024.",
    "Le cœur a ses raisons que la raison ne connaît point. Über allen Gipfeln ist Ruh.",
    "机器学习是人工智能的一个分支。深度学习使用多层神经网络。",
] * 8
CONTROL = ["<|begin_of_sentence|>", "<|IMAGE_PLACEHOLDER|>", "<|IMAGE_START|>", "<|IMAGE_END|>"]
USER = ["<fcel>", "<ecel>", "<lcel>", "<nl>"]


def train_sp(model_type: str, add_dummy_prefix: bool) -> bytes:
    buf = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(TRAIN), model_writer=buf, model_type=model_type, vocab_size=900, byte_fallback=True,
        add_dummy_prefix=add_dummy_prefix, normalization_rule_name="identity", remove_extra_whitespaces=False,
        hard_vocab_limit=False, control_symbols=CONTROL, user_defined_symbols=USER, split_digits=False,
        allow_whitespace_only_pieces=True, character_coverage=0.9995, minloglevel=2, num_threads=1)
    return buf.getvalue()


@pytest.mark.parametrize("model_type,prefix", [("bpe", False), ("bpe", True), ("unigram", False),
                                               ("unigram", True)])
@pytest.mark.parametrize("files", ["model", "json"])
def test_trained_models(tmp_path, model_type, prefix, files):
    """A real SentencePiece BPE / Unigram (trained on the corpus: merged multilingual pieces, whitespace-run
    pieces, control and user-defined symbols), from tokenizer.model or from the tokenizer.json transformers
    builds for it: the converter's ``llama`` vocabulary rebuilt by the runtime gives sentencepiece's ids (a
    dummy prefix = add_space_prefix: "▁" before every segment)."""
    data = train_sp(model_type, prefix)
    sp = spm.SentencePieceProcessor(model_proto=data)
    m = parse_sentencepiece_model(data)
    # the parser against sentencepiece's own view of the model
    assert len(m.pieces) == sp.vocab_size() and m.model_type == model_type and m.byte_fallback
    assert (m.unk_id, m.bos_id, m.eos_id, m.add_dummy_prefix) == (0, 1, 2, prefix)
    for i, (p, s, t) in enumerate(m.pieces):
        assert p == sp.id_to_piece(i) and s == pytest.approx(sp.get_score(i), rel=1e-6)
        assert t == (2 if sp.is_unknown(i) else 3 if sp.is_control(i) else 6 if sp.is_byte(i) else
                     5 if sp.is_unused(i) else 4 if p in USER else 1), (i, p, t)
    v = rp.SpmVocabulary([p for p, _, _ in m.pieces], [s for _, s, _ in m.pieces], [t for _, _, t in m.pieces],
                         model_type=model_type, add_dummy_prefix=prefix)
    d = tmp_path / "ckpt"
    d.mkdir()
    if files == "model":
        (d / "tokenizer.model").write_bytes(data)
    else:
        (d / "tokenizer.json").write_text(rp.tokenizer_json(v, add_prefix_space=prefix), encoding="utf-8")
    vocab = load_spm_vocab(d, len(m.pieces) + 16, bos_id=1, eos_id=2, pad_id=None)
    assert vocab.model_type == model_type and vocab.add_space_prefix is prefix
    assert vocab.tokens[-1] == f"[PAD{len(m.pieces) + 15}]" and vocab.token_types[-1] == 5
    tok = Tokenizer.from_gguf(write_vocab_gguf(tmp_path / "v.gguf", vocab, add_space_prefix=vocab.add_space_prefix))
    assert tok.kind == f"spm-{model_type}"
    # split at user-defined symbols too: llama.cpp matches them whole and then prefixes the text after them
    specials = CONTROL + USER + ["<s>", "</s>", "<unk>"]
    if model_type == "bpe":
        n = check_same_ids(tok, lambda s: sp_encode(sp, s, specials), CORPUS, round_trip=not prefix)
    else:
        # sentencepiece's ids, but where two segmentations score the same: Viterbi ties (runs of a repeated piece)
        # break differently (sentencepiece sums float32 scores). (transformers' Unigram tokenizer.json is no
        # reference here: it lets byte and control pieces match their literal text, "<0x41>", sentencepiece not.)
        score = dict(enumerate(s for _, s, _ in m.pieces))
        n, ties = 0, 0
        for s in CORPUS:
            got, want = tok.encode(s), sp_encode(sp, s, specials)
            n += len(got)
            if not prefix:
                assert tok.decode(got) == s
            if got != want:
                ties += 1
                assert len(got) == len(want) and sum(map(score.get, got)) == pytest.approx(sum(map(score.get, want)),
                                                                                          abs=1e-9), s
        assert ties <= 4
    assert n > 400
    for t in CONTROL + USER:
        assert tok.encode(t) == [sp.piece_to_id(t)]


def test_bad_spm_inputs(tmp_path):
    with pytest.raises(Exception, match="not a SentencePiece model"):
        parse_sentencepiece_model(b"\x0a\xff\xff")
    d = tmp_path / "m"
    d.mkdir()
    from convert import ConversionError
    with pytest.raises(ConversionError, match="tokenizer.model not found, nor tokenizer.json"):
        load_spm_vocab(d, 100, bos_id=1, eos_id=2, pad_id=0)
    (d / "tokenizer.model").write_bytes(rp.sentencepiece_model_bytes(rp.fixture_vocabulary()))
    with pytest.raises(ConversionError, match="103424 pieces do not fit the model's vocab_size 1000"):
        load_spm_vocab(d, 1000, bos_id=1, eos_id=2, pad_id=0)
    # a GGUF with a llama vocabulary but no scores
    w = gguf.GGUFWriter(str(tmp_path / "x.gguf"), "paddleocr")
    w.add_tokenizer_model("llama")
    w.add_token_list(["<unk>", "a"])
    w.add_token_types([2, 1])
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    with pytest.raises(TokenizerError, match="needs tokenizer.ggml.scores"):
        Tokenizer.from_gguf(tmp_path / "x.gguf")
    shutil.rmtree(d)
