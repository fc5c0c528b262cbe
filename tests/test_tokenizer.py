"""The tokenizer rebuilt from a text GGUF (encoder/tokenizer.py) against the original tokenizer.json:
the same ids on multilingual text (Latin, CJK, kana, digits, markdown, HTML tables, emoji), with and
without the stored tokenizer.huggingface.json; streaming detokenisation that never splits a UTF-8
character."""

from __future__ import annotations

import sys
from pathlib import Path

import gguf
import numpy as np
import pytest
from tokenizers import Tokenizer as HFTokenizer
from tokenizers import decoders, models, pre_tokenizers, processors, trainers

from convert.tokenizer import load_vocab
from encoder.tokenizer import Tokenizer, TokenizerError, deepseek_v3_pre_tokenizer

sys.path.insert(0, str(Path(__file__).resolve().parent))
from reference_models import BOS, SPECIAL_TOKENS, write_tokenizer  # noqa: E402

FIXTURE = (Path(__file__).resolve().parents[1] / "../shared/fixtures/llamacpp-tiny-v1")
if not FIXTURE.exists():
    FIXTURE = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "llamacpp-tiny-v1"

CORPUS = [
    "# Annual Report 2024\n\nThe quick brown fox jumps over the lazy dog. Revenue grew 12.5% to $4,200,000.",
    "## 第一章 概述\n\n本文档介绍了系统的设计与实现。数据来源于2023年的调查，共有12345名参与者。",
    "日本語のテキストです。カタカナとひらがなを含みます。東京タワーは333メートルです。",
    "<table><tr><td>名称</td><td>Value</td></tr><tr><td>alpha</td><td>1.5</td></tr></table>",
    "| Column A | Column B |\n|---|---|\n| **bold** | _italic_ |\n| `code` | [link](http://example.com) |",
    "Emoji: 😀 👍🏽 🇫🇷 ❤️ — ünïcödé naïve café, Ελληνικά, русский текст, עברית, العربية.",
    "Formula: $E = mc^2$, \\frac{a}{b} \\coloneqq x_1 + x_2; tabs\tand  double  spaces\r\nCRLF lines\n\n\n",
    "1234567890 12 345 6789 3.14159 -42 +7 1e10 0x1F 2024-06-01 12:30:45",
]
SAMPLES = CORPUS + [
    "<image>\n<|grounding|>Convert the document to markdown.",
    "<|ref|>title<|/ref|><|det|>[[12, 34, 567, 890]]<|/det|>\n# 标题 Title 😀\n",
    "Unseen words: xylophone quizzically 鬱 鑑 ヴ 🧑‍🔬 𝔘𝔫𝔦𝔠𝔬𝔡𝔢 ​zero-width",
    "   leading spaces and trailing   ",
    "<td></td><tr></tr><|User|><|Assistant|> mixed<td>cell</td>",
    "",
    "\n\n\n",
    "a" * 300 + " " + "数" * 100,
]


def train_deepseek_style(model_dir: Path, vocab_size: int = 2000) -> Path:
    """A byte-level BPE with DeepSeek-V3's pre-tokenizer, the DeepSeek-OCR special tokens at their ids
    (vocabulary filled up to the real size), saved as tokenizer.json + tokenizer_config.json."""
    import json

    tok = HFTokenizer(models.BPE())
    tok.pre_tokenizer = deepseek_v3_pre_tokenizer()
    tok.decoder = decoders.ByteLevel()
    specials = [SPECIAL_TOKENS[i] for i in (0, 1, 2)]
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=specials, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(CORPUS * 3, trainer)
    tok.post_processor = processors.TemplateProcessing(single=f"{BOS} $A", special_tokens=[(BOS, 0)])
    data = json.loads(tok.to_str())
    vocab = data["model"]["vocab"]
    high = {i: t for i, t in SPECIAL_TOKENS.items() if i >= 3}
    n = max(SPECIAL_TOKENS) + 1
    used = set(vocab.values())
    for i in range(n):
        if i not in used:
            vocab[high.get(i, f"<|unused_{i}|>")] = i
    data["added_tokens"] = [{"id": i, "content": t, "single_word": False, "lstrip": False, "rstrip": False,
                             "normalized": False, "special": True} for i, t in sorted(SPECIAL_TOKENS.items())]
    model_dir.mkdir(parents=True, exist_ok=True)
    (model_dir / "tokenizer.json").write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")
    (model_dir / "tokenizer_config.json").write_text(json.dumps({"add_bos_token": True, "bos_token": BOS}),
                                                     encoding="utf-8")
    return model_dir


def write_vocab_gguf(model_dir: Path, out: Path, with_hf_json: bool, pre: str = "deepseek-v3") -> Path:
    """A text GGUF holding only the tokenizer keys, written from the converter's own vocabulary reader."""
    n = len(HFTokenizer.from_file(str(model_dir / "tokenizer.json")).get_vocab(with_added_tokens=True))
    v = load_vocab(model_dir, n, bos_id=0, eos_id=1, pad_id=2)
    w = gguf.GGUFWriter(str(out), "deepseek2-ocr")
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre(pre)
    w.add_token_list(v.tokens)
    w.add_token_types(v.token_types)
    w.add_token_merges(v.merges)
    w.add_bos_token_id(0)
    w.add_eos_token_id(1)
    w.add_pad_token_id(2)
    if with_hf_json:
        w.add_string(gguf.Keys.Tokenizer.HF_JSON, v.hf_json)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return out


@pytest.fixture(scope="module")
def deepseek_dir(tmp_path_factory) -> Path:
    return train_deepseek_style(tmp_path_factory.mktemp("ds-tok"))


@pytest.fixture(scope="module")
def original(deepseek_dir) -> HFTokenizer:
    return HFTokenizer.from_file(str(deepseek_dir / "tokenizer.json"))


@pytest.mark.parametrize("with_hf_json", [True, False], ids=["hf-json", "tokens+merges"])
def test_same_ids_as_original(deepseek_dir, original, tmp_path, with_hf_json):
    path = write_vocab_gguf(deepseek_dir, tmp_path / "vocab.gguf", with_hf_json)
    tok = Tokenizer.from_gguf(path)
    assert tok.source == ("tokenizer.huggingface.json" if with_hf_json else "tokenizer.ggml")
    assert (tok.bos_id, tok.eos_id, tok.pad_id) == (0, 1, 2)
    for s in SAMPLES:
        ref = original.encode(s, add_special_tokens=False).ids
        assert tok.encode(s) == ref, s
        assert tok.decode(ref) == original.decode(ref, skip_special_tokens=False)
    # the special tokens are whole tokens at their ids
    for i, t in SPECIAL_TOKENS.items():
        assert tok.encode(t) == [i]
        assert tok.token_bytes(i) == t.encode()
    assert tok.token_id("<image>") == 128815


def test_gpt2_style_tokenizer_via_hf_json(tmp_path):
    """The converter tests' tokenizer (plain GPT-2 byte-level pre-tokenizer): exact through the stored JSON."""
    write_tokenizer(tmp_path, vocab_size=1024)
    original = HFTokenizer.from_file(str(tmp_path / "tokenizer.json"))
    tok = Tokenizer.from_gguf(write_vocab_gguf(tmp_path, tmp_path / "v.gguf", True, pre="gpt2"))
    tok2 = Tokenizer.from_gguf(write_vocab_gguf(tmp_path, tmp_path / "v2.gguf", False, pre="gpt2"))
    for s in SAMPLES:
        ref = original.encode(s, add_special_tokens=False).ids
        assert tok.encode(s) == ref
        assert tok2.encode(s) == ref


def test_llamacpp_file_prompt_ids():
    """llama.cpp's file (no tokenizer.huggingface.json): the reference's prompt ids."""
    path = FIXTURE / "text-f16.gguf"
    tok = Tokenizer.from_gguf(path)
    ref = np.load(FIXTURE / "reference.npz")["prompt_text_ids"].tolist()
    assert tok.encode("\n<|grounding|>Convert the document to markdown.") == ref
    assert tok.n_vocab == 129280


def test_stream_never_splits_utf8(deepseek_dir, original):
    tok = Tokenizer.from_hf_json((deepseek_dir / "tokenizer.json").read_text(encoding="utf-8"))
    split_seen = False
    for s in SAMPLES:
        ids = original.encode(s, add_special_tokens=False).ids
        sd = tok.stream()
        pieces = []
        for i in ids:
            p = sd.push(i)
            if p == "" and tok.token_bytes(i):
                split_seen = True
            assert "\ufffd" not in p
            pieces.append(p)
        pieces.append(sd.flush())
        assert "".join(pieces) == s
    assert split_seen, "no sample split a character over tokens: the test would prove nothing"
    # an invalid remainder becomes U+FFFD only at flush
    sd = tok.stream()
    assert sd.push_bytes("😀".encode()[:2]) == ""
    assert sd.flush() == "\ufffd"


def test_bad_files(tmp_path):
    with pytest.raises(TokenizerError, match="no such file"):
        Tokenizer.from_gguf(tmp_path / "missing.gguf")
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"not a gguf at all")
    with pytest.raises(TokenizerError, match="not a valid GGUF"):
        Tokenizer.from_gguf(bad)
    empty = tmp_path / "empty.gguf"
    empty.write_bytes(b"")
    with pytest.raises(TokenizerError):
        Tokenizer.from_gguf(empty)
    # a vision file has no tokenizer
    mm = FIXTURE / "mmproj-f32.gguf"
    if mm.exists():
        with pytest.raises(TokenizerError, match="no tokenizer"):
            Tokenizer.from_gguf(mm)
    with pytest.raises(TokenizerError, match="not supported"):
        Tokenizer.from_vocab(["a", "b"], [], pre="llama-bpe")
