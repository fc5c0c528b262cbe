"""The C tokenizer of libtilepass (native/tokenizer/; tp_tokenizer, tp_detokenizer, tp_text_tokenize) against the
`tokenizers` library (and sentencepiece, and the ids the fixtures' references recorded), on the multilingual
corpus of tokenizer_corpus.py with every special token:

- the DeepSeek-OCR vocabulary shape (129,280 tokens, the real special ids: a byte-level BPE with DeepSeek-V3's
  pre-tokenizer trained here), from a GGUF holding only tokens, types and merges (what llama.cpp reads);
- the three llama.cpp-written fixture text files (DeepSeek-OCR v1, OCR-2: "gpt2" + "deepseek-v3";
  PaddleOCR-VL: SentencePiece "llama" with byte fallback), against the `tokenizers` object built from the same
  vocabulary and the fixtures' recorded prompt ids;
- SentencePiece BPE vocabularies: PaddleOCR-VL's with and without add_space_prefix, and sentencepiece models
  trained here with control and user-defined symbols (sentencepiece's own ids); SentencePiece Unigram ones
  (`tokenizers`' Unigram over the same vocabulary);
- a GPT-2-pre-tokenized vocabulary; unsupported vocabularies refused by name;
- detokenisation: the text back from the ids, whole and streamed (never a split UTF-8 character), with and
  without special tokens; tp_text_tokenize of a loaded text model.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import gguf
import numpy as np
import pytest
import sentencepiece as spm
from tokenizers import Tokenizer as HFTokenizer

sys.path.insert(0, str(Path(__file__).resolve().parent))
import reference_paddleocr as rp  # noqa: E402
from reference_models import SPECIAL_TOKENS, write_tokenizer  # noqa: E402
from test_tokenizer import train_deepseek_style  # noqa: E402
from test_tokenizer import write_vocab_gguf as write_bpe_gguf  # noqa: E402
from test_tokenizer_spm import CONTROL, USER, sp_encode, train_sp  # noqa: E402
from test_tokenizer_spm import write_vocab_gguf as write_spm_gguf  # noqa: E402
from tokenizer_corpus import CORPUS  # noqa: E402

from convert.tokenizer import load_spm_vocab, load_vocab, parse_sentencepiece_model  # noqa: E402
from encoder.native import TilepassError, lib  # noqa: E402
from encoder.native_tokenizer import NativeTokenizer  # noqa: E402
from encoder.tokenizer import TT_CONTROL, TT_UNKNOWN, TT_USER_DEFINED, Tokenizer, _read_tokenizer_kv  # noqa: E402

FIXTURES = Path(__file__).resolve().parents[1] / ".." / "shared" / "fixtures"
LLAMACPP = ["llamacpp-tiny-v1", "llamacpp-tiny-ocr2", "llamacpp-tiny-paddleocr-vl"]


def specials_of(path: Path, kinds=(TT_CONTROL, TT_USER_DEFINED, TT_UNKNOWN)) -> list[str]:
    kv = _read_tokenizer_kv(path)
    return [t for t, ty in zip(kv["tokenizer.ggml.tokens"], kv["tokenizer.ggml.token_type"]) if ty in kinds and t]


def with_specials(specials: list[str]) -> list[str]:
    """The corpus, every special token alone, all of them in a row, and each inside text."""
    joined = "".join(specials)
    inside = " ".join(f"x{s}y {s}\n" for s in specials)
    return CORPUS + specials + [joined, inside]


def check_ids(tok: NativeTokenizer, reference, texts: list[str], parse_special: bool = True) -> int:
    n = 0
    for s in texts:
        want = list(reference(s))
        got = tok.encode(s, parse_special=parse_special)
        assert got == want, (s[:80], got[:30], want[:30])
        n += len(got)
    return n


def check_round_trip(tok: NativeTokenizer, texts: list[str]) -> bool:
    """decode_bytes(encode(s)) == s; streamed pieces are whole UTF-8 characters joining to s. Returns whether a
    character was split over tokens somewhere (else the streaming check proved nothing)."""
    split_seen = False
    for s in texts:
        ids = tok.encode(s)
        assert tok.decode_bytes(ids) == s.encode(), s[:80]
        st = tok.stream()
        parts = []
        for i in ids:
            p = st.push(i)
            p.decode("utf-8")  # strict: never a partial character
            split_seen |= p == b"" and tok.token_bytes(i) != b""
            parts.append(p)
        parts.append(st.flush())
        assert b"".join(parts) == s.encode(), s[:80]
    return split_seen


# ---- the DeepSeek-OCR vocabulary shape ------------------------------------------------------------------
N_VOCAB_DEEPSEEK_OCR = 129280


def write_deepseek_gguf(model_dir: Path, out: Path) -> Path:
    """The converter's vocabulary of the checkpoint at the model's size (padded to 129,280 as the real
    DeepSeek-OCR's), as llama.cpp reads it: tokens, types, merges, no tokenizer.huggingface.json."""
    v = load_vocab(model_dir, N_VOCAB_DEEPSEEK_OCR, bos_id=0, eos_id=1, pad_id=2)
    w = gguf.GGUFWriter(str(out), "deepseek2-ocr")
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("deepseek-v3")
    w.add_token_list(v.tokens)
    w.add_token_types(v.token_types)
    w.add_token_merges(v.merges)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return out


@pytest.fixture(scope="module")
def deepseek(tmp_path_factory):
    d = train_deepseek_style(tmp_path_factory.mktemp("ds-native"))
    path = write_deepseek_gguf(d, d / "vocab.gguf")
    return NativeTokenizer.load(path), HFTokenizer.from_file(str(d / "tokenizer.json")), path


def test_deepseek_shape_same_ids(deepseek):
    tok, original, path = deepseek
    assert tok.n_vocab == N_VOCAB_DEEPSEEK_OCR
    texts = with_specials(list(SPECIAL_TOKENS.values()))
    n = check_ids(tok, lambda s: original.encode(s, add_special_tokens=False).ids, texts)
    assert n > 1500
    for i, t in SPECIAL_TOKENS.items():
        assert tok.encode(t) == [i] and tok.token_id(t) == i and tok.token_bytes(i) == t.encode()
        assert tok.is_special(i)
    # parse_special false: special tokens are text (tokenizers' encode_special_tokens)
    original.encode_special_tokens = True
    try:
        check_ids(tok, lambda s: original.encode(s, add_special_tokens=False).ids, texts, parse_special=False)
    finally:
        original.encode_special_tokens = False
    assert tok.encode("<image>", parse_special=False) != [128815]


def test_deepseek_shape_detokenize(deepseek):
    tok, original, _ = deepseek
    texts = with_specials(list(SPECIAL_TOKENS.values()))
    assert check_round_trip(tok, texts)
    for s in texts:
        ids = tok.encode(s)
        want = original.decode(ids, skip_special_tokens=True)
        assert tok.decode_bytes(ids, skip_special=True).decode() == want
        st = tok.stream(skip_special=True)
        assert (b"".join(st.push(i) for i in ids) + st.flush()).decode() == want


def test_speed_100kb(deepseek):
    """~100 KB of the corpus: well under a second (the figure is printed)."""
    tok, original, _ = deepseek
    text = ""
    while len(text.encode()) < 100_000:
        text += "\n".join(CORPUS) + "\n"
    t0 = time.perf_counter()
    ids = tok.encode(text)
    dt = time.perf_counter() - t0
    print(f"\ntp_tokenize: {len(text.encode())} bytes -> {len(ids)} ids in {dt * 1e3:.1f} ms")
    assert ids == original.encode(text, add_special_tokens=False).ids
    assert dt < 0.5


# ---- llama.cpp's fixture files ---------------------------------------------------------------------------
@pytest.mark.parametrize("name", LLAMACPP)
def test_llamacpp_files(name):
    path = FIXTURES / name / "text-f16.gguf"
    assert path.is_file(), f"{path} is missing"
    tok = NativeTokenizer.load(path)
    ref = Tokenizer.from_gguf(path).hf  # `tokenizers`, built from the same vocabulary
    texts = with_specials(specials_of(path))
    n = check_ids(tok, lambda s: ref.encode(s, add_special_tokens=False).ids, texts)
    assert n > 2000
    assert check_round_trip(tok, texts)
    z = np.load(FIXTURES / name / "reference.npz")
    if name == "llamacpp-tiny-paddleocr-vl":
        # the reference checkpoint's own tokenizer.json, and the recorded chat prompt
        hf = rp.hf_tokenizer()
        check_ids(tok, lambda s: hf.encode(s, add_special_tokens=False).ids, texts)
        n_img = int(np.prod(z["image_grid_thw"])) // 4
        assert tok.encode(rp.expand_image_tokens(rp.render_prompt(1, "OCR:"), [n_img])) == z["prompt_ids"].tolist()
        assert tok.token_bytes(3 + 0x41) == b"A" and tok.token_bytes(331) == b" "
    else:
        assert tok.encode("\n<|grounding|>Convert the document to markdown.") == z["prompt_text_ids"].tolist()
    assert tok.n_vocab == len(_read_tokenizer_kv(path)["tokenizer.ggml.tokens"])


def test_text_model_tokenize():
    """tp_text_load builds the tokenizer from the file: tp_text_tokenize gives the fixture's prompt ids."""
    from encoder.native import ffi, new_error
    from encoder.text_model import TextModel

    for name in ("llamacpp-tiny-v1", "llamacpp-tiny-paddleocr-vl"):
        path = FIXTURES / name / "text-f16.gguf"
        m = TextModel(path)
        tok = NativeTokenizer.load(path)
        own = m.tokenizer()
        for s in CORPUS[:6]:
            data = s.encode()
            n = ffi.new("int32_t *")
            ids = ffi.new("int32_t[]", 4096)
            err = new_error()
            assert lib.tp_text_tokenize(m._model, data, len(data), True, ids, 4096, n, err) == 0
            assert list(ids[0:n[0]]) == tok.encode(s) == own.encode(s) and n[0] > 0
        # the model's token bytes are the tokenizer's (SentencePiece: "▁" a space, <0xXX> its byte), as the
        # Python runtime decodes them
        py = Tokenizer.from_gguf(path)
        assert all(m.token_bytes(i) == py.token_bytes(i) == tok.token_bytes(i) for i in range(tok.n_vocab))
        del own, m


# ---- SentencePiece BPE -----------------------------------------------------------------------------------
@pytest.mark.parametrize("prefix", [None, True, False], ids=["key-absent", "prefix", "no-prefix"])
def test_spm_space_prefix(tmp_path, prefix):
    """PaddleOCR-VL's vocabulary (the fixture's tokens, scores and types) with tokenizer.ggml.add_space_prefix
    absent (llama.cpp's default: true), true, false: sentencepiece's ids, its dummy prefix as the key says ("▁"
    before each stretch of text between special tokens)."""
    fx = FIXTURES / "llamacpp-tiny-paddleocr-vl" / "text-f16.gguf"
    kv = _read_tokenizer_kv(fx)
    w = gguf.GGUFWriter(str(tmp_path / "v.gguf"), "paddleocr")
    w.add_tokenizer_model("llama")
    w.add_token_list(kv["tokenizer.ggml.tokens"])
    w.add_token_scores(kv["tokenizer.ggml.scores"])
    w.add_token_types(kv["tokenizer.ggml.token_type"])
    if prefix is not None:
        w.add_add_space_prefix(prefix)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    tok = NativeTokenizer.load(tmp_path / "v.gguf")
    v = rp.fixture_vocabulary()
    sp = spm.SentencePieceProcessor(model_proto=rp.sentencepiece_model_bytes(
        rp.SpmVocabulary(v.pieces, v.scores, v.types, add_dummy_prefix=prefix is not False)))
    specials = specials_of(fx)
    check_ids(tok, lambda s: sp_encode(sp, s, specials), with_specials(specials))


@pytest.mark.parametrize("prefix", [False, True])
def test_spm_trained_with_user_symbols(tmp_path, prefix):
    """A sentencepiece BPE trained here (merged multilingual pieces, control and user-defined symbols, byte
    fallback): sentencepiece's ids; user-defined symbols are matched whole even with parse_special false."""
    data = train_sp("bpe", prefix)
    sp = spm.SentencePieceProcessor(model_proto=data)
    m = parse_sentencepiece_model(data)
    d = tmp_path / "ckpt"
    d.mkdir()
    (d / "tokenizer.model").write_bytes(data)
    vocab = load_spm_vocab(d, len(m.pieces), bos_id=1, eos_id=2, pad_id=None)
    tok = NativeTokenizer.load(write_spm_gguf(tmp_path / "v.gguf", vocab, add_space_prefix=vocab.add_space_prefix))
    specials = CONTROL + USER + ["<s>", "</s>", "<unk>"]
    texts = with_specials(specials)
    n = check_ids(tok, lambda s: sp_encode(sp, s, specials), texts)
    assert n > 800
    if not prefix:
        assert check_round_trip(tok, texts)
    for t in USER:
        assert tok.encode(t, parse_special=False) == [sp.piece_to_id(t)] and not tok.is_special(sp.piece_to_id(t))
    for t in CONTROL:
        assert tok.encode(t, parse_special=False) != [sp.piece_to_id(t)] and tok.is_special(sp.piece_to_id(t))


@pytest.mark.parametrize("prefix", [False, True])
def test_spm_unigram(tmp_path, prefix):
    """A sentencepiece Unigram trained here (scores not whole numbers): the ids of `tokenizers`' Unigram over the
    same vocabulary (the Python runtime's rebuild, encoder/tokenizer.py: control, byte and unused pieces out of
    reach), on the corpus and on random strings of the corpus' characters and the special pieces."""
    import random

    data = train_sp("unigram", prefix)
    m = parse_sentencepiece_model(data)
    d = tmp_path / "ckpt"
    d.mkdir()
    (d / "tokenizer.model").write_bytes(data)
    vocab = load_spm_vocab(d, len(m.pieces) + 16, bos_id=1, eos_id=2, pad_id=None)
    path = write_spm_gguf(tmp_path / "v.gguf", vocab, add_space_prefix=vocab.add_space_prefix)
    ref = Tokenizer.from_gguf(path)
    assert ref.kind == "spm-unigram"
    tok = NativeTokenizer.load(path)
    specials = CONTROL + USER + ["<s>", "</s>", "<unk>"]
    texts = with_specials(specials) + ["<0x41> [PAD7] x<s >y"]
    n = check_ids(tok, lambda s: ref.hf.encode(s, add_special_tokens=False).ids, texts)
    assert n > 800
    if not prefix:
        assert check_round_trip(tok, texts)
    rng = random.Random(5)
    chars = sorted(set("".join(CORPUS))) + specials
    rand = ["".join(rng.choice(chars) for _ in range(rng.randrange(1, 30))) for _ in range(300)]
    check_ids(tok, lambda s: ref.hf.encode(s, add_special_tokens=False).ids, rand)


# ---- other vocabularies ----------------------------------------------------------------------------------
def test_gpt2_pre_tokenizer(tmp_path):
    write_tokenizer(tmp_path, vocab_size=1024)
    original = HFTokenizer.from_file(str(tmp_path / "tokenizer.json"))
    tok = NativeTokenizer.load(write_bpe_gguf(tmp_path, tmp_path / "v.gguf", False, pre="gpt2"))
    check_ids(tok, lambda s: original.encode(s, add_special_tokens=False).ids, with_specials([]))
    assert check_round_trip(tok, CORPUS)


def _vocab_file(path: Path, model: str, pre: str | None = None, scores=None) -> Path:
    w = gguf.GGUFWriter(str(path), "x")
    w.add_tokenizer_model(model)
    if pre:
        w.add_tokenizer_pre(pre)
    w.add_token_list(["<unk>", "a", "b", "ab"])
    w.add_token_types([2, 1, 1, 1])
    if scores is not None:
        w.add_token_scores(scores)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def test_unsupported_and_bad_files(tmp_path):
    cases = [
        (_vocab_file(tmp_path / "bert.gguf", "bert"), "tokenizer.ggml.model = 'bert' is not supported"),
        (_vocab_file(tmp_path / "pre.gguf", "gpt2", "llama-bpe"), "tokenizer.ggml.pre = 'llama-bpe' is not supported"),
        (_vocab_file(tmp_path / "noscores.gguf", "llama"), "needs tokenizer.ggml.scores"),
        (FIXTURES / "llamacpp-tiny-v1" / "mmproj-f32.gguf", "no tokenizer"),
    ]
    for path, message in cases:
        with pytest.raises(TilepassError, match=message) as e:
            NativeTokenizer.load(path)
        assert str(path) in str(e.value)
    ok = NativeTokenizer.load(_vocab_file(tmp_path / "spm.gguf", "llama", scores=[0.0, -1.0, -2.0, -3.0]))
    assert ok.encode("ab ab", parse_special=False) == [0, 3, 0, 3]  # "▁" unknown (no byte fallback), then "ab"
    with pytest.raises(TilepassError, match="not valid UTF-8 .byte 1"):
        ok.encode(b"a\xff")
    with pytest.raises(TilepassError, match="out of range"):
        ok.decode_bytes([4])
