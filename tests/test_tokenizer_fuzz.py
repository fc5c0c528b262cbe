"""Fuzzing the C tokenizer (tp_tokenize, tp_detokenize, tp_detokenizer) on the llama.cpp fixture vocabularies
(DeepSeek-OCR's byte-level BPE with the deepseek-v3 pre-tokenizer, PaddleOCR-VL's SentencePiece BPE):

- random byte strings: never a crash; invalid UTF-8 refused naming the byte (Python's strict decoder says which
  strings are valid); valid ones give the ids of `tokenizers` built from the same vocabulary and come back
  byte for byte;
- random strings of assigned code points of every plane, and of an alphabet of the pre-tokenizer's edge cases:
  `tokenizers`' ids;
- random id streams through the streaming detokenizer: every piece whole UTF-8 characters, joined equal to
  Python's bytes.decode(errors="replace") of the tokens' bytes.

Also run under ASan + UBSan by `make santest`."""

from __future__ import annotations

import random
import sys
import unicodedata
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from tokenizer_corpus import CORPUS  # noqa: E402

from encoder.native import TilepassError  # noqa: E402
from encoder.native_tokenizer import NativeTokenizer  # noqa: E402
from encoder.tokenizer import Tokenizer, _read_tokenizer_kv  # noqa: E402

FIXTURES = Path(__file__).resolve().parents[1] / ".." / "shared" / "fixtures"
NAMES = ["llamacpp-tiny-v1", "llamacpp-tiny-paddleocr-vl"]

EDGE = [" ", "  ", "\t", "\n", "\r", "\r\n", "\u3000", "\u00a0", "\x0b", "\x85", "\u2028", "a", "Z", "é", "e\u0301",
        "\u0301", "\u093f", "1", "23", "456", "٣", "½", "²", "'", "'s", "'ll", "(", ".", "!", "$", "+", "<", ">", "|",
        "-", "_", "`", "~", "数", "の", "カ", "ー", "한", "ب", "😀", "\u200d", "\ufe0f", "🇫", "🏽", "\x00", "\x1b",
        "Hello", "<td>", "<|", "|>", "▁", "\ue000", "ǅ", "ß"]


@pytest.fixture(scope="module", params=NAMES)
def pair(request):
    path = FIXTURES / request.param / "text-f16.gguf"
    assert path.is_file(), f"{path} is missing"
    kv = _read_tokenizer_kv(path)
    specials = [t for t, ty in zip(kv["tokenizer.ggml.tokens"], kv["tokenizer.ggml.token_type"]) if ty == 3]
    return NativeTokenizer.load(path), Tokenizer.from_gguf(path).hf, specials


def text_back(tok: NativeTokenizer, text: str) -> bytes:
    """The text that comes back from its ids: SentencePiece writes spaces as "▁", so a "▁" comes back a space."""
    spm = tok.token_id("<0x41>") is not None
    return (text.replace("\u2581", " ") if spm else text).encode()


def random_bytes(rng: random.Random) -> bytes:
    n = rng.randrange(0, 40)
    mode = rng.randrange(4)
    if mode == 0:
        return bytes(rng.randrange(256) for _ in range(n))
    if mode == 1:
        return bytes(rng.randrange(128) for _ in range(n))
    # valid UTF-8 (mode 2), then a byte changed, cut or inserted (mode 3)
    b = "".join(rng.choice(EDGE) for _ in range(n // 3 + 1)).encode()
    if mode == 3 and b:
        i = rng.randrange(len(b))
        op = rng.randrange(3)
        b = b[:i] + bytes([rng.randrange(256)]) + b[i + 1:] if op == 0 else b[:i] if op == 1 else \
            b[:i] + bytes([rng.randrange(128, 256)]) + b[i:]
    return b


def test_random_bytes(pair):
    tok, ref, _ = pair
    rng = random.Random(1234)
    valid = invalid = 0
    for _ in range(4000):
        b = random_bytes(rng)
        try:
            text = b.decode("utf-8")
        except UnicodeDecodeError as e:
            with pytest.raises(TilepassError, match=f"not valid UTF-8 .byte {e.start}:"):
                tok.encode(b)
            invalid += 1
            continue
        ids = tok.encode(b)
        assert ids == ref.encode(text, add_special_tokens=False).ids, b
        assert tok.decode_bytes(ids) == text_back(tok, text)
        valid += 1
    assert valid > 1500 and invalid > 1000


def assigned_char(rng: random.Random) -> str:
    while True:
        plane = rng.choice([0, 0, 0, 1, 2, 14, 15])
        cp = plane << 16 | rng.randrange(0x10000)
        if not 0xD800 <= cp <= 0xDFFF and unicodedata.category(chr(cp)) != "Cn":
            return chr(cp)


def test_random_strings(pair):
    tok, ref, specials = pair
    rng = random.Random(99)
    pool = EDGE + specials
    for k in range(3000):
        if k % 2:
            s = "".join(rng.choice(pool) for _ in range(rng.randrange(1, 24)))
        else:
            s = "".join(assigned_char(rng) if rng.random() < 0.5 else rng.choice(EDGE) for _ in range(rng.randrange(1, 16)))
        ids = tok.encode(s)
        assert ids == ref.encode(s, add_special_tokens=False).ids, s
        assert tok.decode_bytes(ids) == text_back(tok, s)


def test_random_id_streams(pair):
    tok, _, _ = pair
    rng = random.Random(7)
    n = tok.n_vocab
    short = [i for i in range(min(n, 2000)) if 0 < len(tok.token_bytes(i)) <= 2]  # byte pieces: split characters
    corpus_ids = [i for s in CORPUS for i in tok.encode(s)]
    for _ in range(1000):
        ids = [rng.choice(short) if rng.random() < 0.6 else rng.choice(corpus_ids) if rng.random() < 0.8
               else rng.randrange(n) for _ in range(rng.randrange(0, 30))]
        st = tok.stream()
        parts = [st.push(i) for i in ids] + [st.flush()]
        for p in parts:
            p.decode("utf-8")  # whole characters only
        want = b"".join(tok.token_bytes(i) for i in ids).decode("utf-8", "replace").encode()
        assert b"".join(parts) == want, ids
    with pytest.raises(TilepassError, match="out of range"):
        tok.stream().push(n)
    with pytest.raises(IndexError):
        tok.token_bytes(-1)
