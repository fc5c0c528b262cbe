"""The text model's tokenizer, rebuilt from a text GGUF with the `tokenizers` library.

Two sources, in this order:

1. ``tokenizer.huggingface.json`` (the original ``tokenizer.json`` kept verbatim by our converter):
   ``tokenizers.Tokenizer.from_str`` gives exactly the original tokenizer.
2. Otherwise (llama.cpp's files) the ``tokenizer.ggml.*`` keys, by ``tokenizer.ggml.model``:

   * ``gpt2``: a byte-level BPE over ``tokenizer.ggml.tokens`` / ``merges`` with the pre-tokenizer named
     by ``tokenizer.ggml.pre`` (``deepseek-v3``: the three regex splits of DeepSeek-V3's ``tokenizer.json``
     then a byte-level mapping without its own regex; ``gpt2``/``default``: the GPT-2 byte-level regex).
   * ``llama`` (SentencePiece; PaddleOCR-VL's ERNIE): tokens, ``scores`` and types. A BPE vocabulary (every
     NORMAL piece's score a whole number: sentencepiece gives BPE pieces -rank) becomes a ``tokenizers`` BPE
     whose merges are every split of a piece into two pieces, ordered by the piece's score (as
     transformers' ``generate_merges`` orders them, and as llama.cpp and sentencepiece merge the
     highest-scoring pair first); otherwise a Unigram over the scores (sentencepiece's Viterbi). Byte
     fallback when the vocabulary has ``<0xXX>`` BYTE pieces; spaces become "▁", and with
     ``tokenizer.ggml.add_space_prefix`` (llama.cpp's default, true, when the key is absent) a "▁" goes
     before the text and before the text after every special token, as llama.cpp does.

   Tokens of type CONTROL / USER_DEFINED (and, in a ``llama`` vocabulary, UNKNOWN) become added tokens
   (special but for USER_DEFINED), so they are matched whole in the input text, as in the original.

Decoding works on bytes: ``token_bytes(id)`` is a token's raw UTF-8 bytes (byte-level BPE symbols
mapped back to bytes; added tokens as their text), and ``StreamDecoder`` joins them with an
incremental UTF-8 decoder so that a character split over several tokens is printed only once it is
complete. ``decode(ids)`` equals the concatenated bytes decoded with ``errors="replace"``.

No BOS is added by ``encode``; callers build the input ids themselves (see pipeline.py).
"""

from __future__ import annotations

import codecs
import mmap
import os
import re
import struct
from dataclasses import dataclass, field
from typing import Iterable, Sequence

from tokenizers import AddedToken, Regex
from tokenizers import Tokenizer as HFTokenizer
from tokenizers import decoders, models, normalizers, pre_tokenizers

# tokenizer.ggml.token_type values (llama.cpp / gguf.TokenType)
TT_NORMAL, TT_UNKNOWN, TT_CONTROL, TT_USER_DEFINED, TT_UNUSED, TT_BYTE = 1, 2, 3, 4, 5, 6

# DeepSeek-V3's pre-tokenizer (its tokenizer.json, and llama.cpp's LLAMA_VOCAB_PRE_TYPE_DEEPSEEK3_LLM)
DEEPSEEK_V3_SPLITS = (
    r"\p{N}{1,3}",
    "[\u4e00-\u9fa5\u3040-\u309f\u30a0-\u30ff]+",
    r"[!\"#$%&'()*+,\-./:;<=>?@\[\\\]^_`{|}~][A-Za-z]+|[^\r\n\p{L}\p{P}\p{S}]?[\p{L}\p{M}]+| ?[\p{P}\p{S}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+",
)
KNOWN_PRE = ("deepseek-v3", "gpt2", "default")
SPM_SPACE = "\u2581"  # SentencePiece's "▁"
_BYTE_PIECE_TEXT = re.compile(r"^<0x([0-9A-Fa-f]{2})>$")


class TokenizerError(ValueError):
    """A GGUF whose tokenizer cannot be rebuilt."""


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's byte -> printable character map used by byte-level BPE."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {b: chr(c) for b, c in zip(bs, cs)}


BYTE_TO_CHAR = _bytes_to_unicode()
CHAR_TO_BYTE = {c: b for b, c in BYTE_TO_CHAR.items()}


def byte_level_to_bytes(token: str) -> bytes:
    """A byte-level BPE symbol string back to its bytes (characters outside the map as UTF-8)."""
    out = bytearray()
    for ch in token:
        b = CHAR_TO_BYTE.get(ch)
        if b is None:
            out += ch.encode("utf-8")
        else:
            out.append(b)
    return bytes(out)


def deepseek_v3_pre_tokenizer() -> pre_tokenizers.PreTokenizer:
    splits = [pre_tokenizers.Split(Regex(r), behavior="isolated", invert=False) for r in DEEPSEEK_V3_SPLITS]
    return pre_tokenizers.Sequence(splits + [pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True,
                                                                      use_regex=False)])


def build_bpe(tokens: Sequence[str], merges: Sequence[str], token_types: Sequence[int] | None = None,
              pre: str = "deepseek-v3") -> HFTokenizer:
    """A `tokenizers` byte-level BPE from GGUF-style vocabulary data."""
    if pre not in KNOWN_PRE:
        raise TokenizerError(f"tokenizer.ggml.pre = {pre!r} is not supported (known: {', '.join(KNOWN_PRE)})")
    types = list(token_types) if token_types is not None else [TT_NORMAL] * len(tokens)
    if len(types) != len(tokens):
        raise TokenizerError(f"{len(tokens)} tokens but {len(types)} token types")
    vocab: dict[str, int] = {}
    for i, t in enumerate(tokens):
        vocab.setdefault(t, i)
    pairs: list[tuple[str, str]] = []
    for k, m in enumerate(merges):
        parts = m.split(" ")
        if len(parts) != 2:
            # llama.cpp splits at the first space after position 0 too; tokens never hold a plain space
            j = m.find(" ", 1)
            if j < 0:
                raise TokenizerError(f"merge {k} {m!r} is not two tokens separated by a space")
            parts = [m[:j], m[j + 1:]]
        pairs.append((parts[0], parts[1]))
    model = models.BPE(vocab=vocab, merges=pairs, fuse_unk=False, byte_fallback=False)
    tok = HFTokenizer(model)
    if pre == "deepseek-v3":
        tok.pre_tokenizer = deepseek_v3_pre_tokenizer()
    else:
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    added = []
    for i, (t, ty) in enumerate(zip(tokens, types)):
        if ty in (TT_CONTROL, TT_USER_DEFINED) and vocab.get(t) == i:
            added.append(AddedToken(t, single_word=False, lstrip=False, rstrip=False, normalized=False,
                                    special=(ty == TT_CONTROL)))
    if added:
        tok.add_tokens(added)
    return tok


def spm_is_bpe(scores: Sequence[float], token_types: Sequence[int]) -> bool:
    """Whether a SentencePiece vocabulary is a BPE (sentencepiece scores BPE pieces -rank: whole numbers) rather
    than a Unigram (log probabilities)."""
    normal = [float(s) for s, t in zip(scores, token_types) if t == TT_NORMAL]
    return bool(normal) and all(s.is_integer() for s in normal)


def spm_piece_bytes(piece: str, token_type: int = TT_NORMAL) -> bytes:
    """A SentencePiece piece's bytes: ``<0xXX>`` BYTE pieces their byte, "▁" a space."""
    if token_type == TT_BYTE:
        m = _BYTE_PIECE_TEXT.match(piece)
        if m:
            return bytes([int(m.group(1), 16)])
    if token_type == TT_UNUSED:
        return b""
    return piece.replace(SPM_SPACE, " ").encode("utf-8")


def build_spm(tokens: Sequence[str], scores: Sequence[float], token_types: Sequence[int],
              add_space_prefix: bool = True, unk_id: int | None = None) -> HFTokenizer:
    """A `tokenizers` tokenizer for a SentencePiece (``llama``) vocabulary (see the module docstring)."""
    n = len(tokens)
    if len(scores) != n or len(token_types) != n:
        raise TokenizerError(f"{n} tokens but {len(scores)} scores and {len(token_types)} token types")
    vocab: dict[str, int] = {}
    for i, t in enumerate(tokens):
        vocab.setdefault(t, i)
    byte_fallback = any(ty == TT_BYTE for ty in token_types)
    if unk_id is None or not 0 <= unk_id < n:
        unk_id = next((i for i, ty in enumerate(token_types) if ty == TT_UNKNOWN), 0 if n else None)
    if spm_is_bpe(scores, token_types):
        normal = {t for t, ty in zip(tokens, token_types) if ty == TT_NORMAL}
        order = sorted((i for i, (t, ty) in enumerate(zip(tokens, token_types))
                        if ty == TT_NORMAL and len(t) > 1 and vocab[t] == i), key=lambda i: (-float(scores[i]), i))
        merges = []
        for i in order:
            t = tokens[i]
            for k in range(1, len(t)):
                if t[:k] in normal and t[k:] in normal:
                    merges.append((t[:k], t[k:]))
        model = models.BPE(vocab=vocab, merges=merges, unk_token=tokens[unk_id] if unk_id is not None else None,
                           fuse_unk=True, byte_fallback=byte_fallback, dropout=None)
    else:
        # sentencepiece's Viterbi never picks control, byte, unused or unknown pieces: keep them out of reach
        lattice = [(t, float(s) if ty in (TT_NORMAL, TT_USER_DEFINED) else -1e9)
                   for t, s, ty in zip(tokens, scores, token_types)]
        model = models.Unigram(lattice, unk_id=unk_id, byte_fallback=byte_fallback)
    tok = HFTokenizer(model)
    norms = ([normalizers.Prepend(SPM_SPACE)] if add_space_prefix else []) + [normalizers.Replace(" ", SPM_SPACE)]
    tok.normalizer = normalizers.Sequence(norms)
    tok.decoder = decoders.Sequence([decoders.Replace(SPM_SPACE, " "), decoders.ByteFallback(), decoders.Fuse()])
    added = []  # matched whole in the text, as llama.cpp does (control, user-defined and unknown tokens)
    for i, (t, ty) in enumerate(zip(tokens, token_types)):
        if ty in (TT_CONTROL, TT_USER_DEFINED, TT_UNKNOWN) and vocab.get(t) == i:
            added.append(AddedToken(t, single_word=False, lstrip=False, rstrip=False, normalized=False,
                                    special=(ty != TT_USER_DEFINED)))
    if added:
        tok.add_tokens(added)
    return tok


@dataclass
class Tokenizer:
    """Encode text to ids and ids back to bytes/text for one text model."""

    hf: HFTokenizer
    pieces: list[bytes]  # id -> raw bytes
    special_ids: frozenset[int] = field(default_factory=frozenset)
    bos_id: int | None = 0
    eos_id: int | None = 1
    pad_id: int | None = None
    source: str = ""  # "tokenizer.huggingface.json" or "tokenizer.ggml"
    unk_id: int | None = None
    kind: str = "bpe"  # "bpe" (byte-level), "spm-bpe" or "spm-unigram" (SentencePiece)
    add_space_prefix: bool = False  # SentencePiece: a "▁" before the text after every special token

    # ---- construction ----
    @classmethod
    def from_hf_json(cls, text: str, bos_id: int | None = None, eos_id: int | None = None,
                     pad_id: int | None = None, n_vocab: int | None = None) -> "Tokenizer":
        try:
            hf = HFTokenizer.from_str(text)
        except Exception as e:  # tokenizers raises plain Exception subclasses
            raise TokenizerError(f"tokenizer.huggingface.json cannot be loaded: {e}") from e
        size = max(hf.get_vocab_size(with_added_tokens=True), n_vocab or 0)
        added = hf.get_added_tokens_decoder()  # id -> AddedToken
        kind = _hf_json_kind(text)
        spm = kind != "bpe"
        pieces: list[bytes] = []
        for i in range(size):
            if i in added:
                pieces.append(added[i].content.encode("utf-8"))
                continue
            t = hf.id_to_token(i)
            if t is None:
                pieces.append(b"")
            elif spm:
                pieces.append(spm_piece_bytes(t, TT_BYTE if _BYTE_PIECE_TEXT.match(t) else TT_NORMAL))
            else:
                pieces.append(byte_level_to_bytes(t))
        special = frozenset(i for i, a in added.items() if a.special)
        return cls(hf, pieces, special, bos_id, eos_id, pad_id, "tokenizer.huggingface.json", kind=kind)

    @classmethod
    def from_vocab(cls, tokens: Sequence[str], merges: Sequence[str], token_types: Sequence[int] | None = None,
                   pre: str = "deepseek-v3", bos_id: int | None = None, eos_id: int | None = None,
                   pad_id: int | None = None) -> "Tokenizer":
        hf = build_bpe(tokens, merges, token_types, pre)
        types = list(token_types) if token_types is not None else [TT_NORMAL] * len(tokens)
        pieces = [t.encode("utf-8") if ty in (TT_CONTROL, TT_USER_DEFINED) else byte_level_to_bytes(t)
                  for t, ty in zip(tokens, types)]
        special = frozenset(i for i, ty in enumerate(types) if ty == TT_CONTROL)
        return cls(hf, pieces, special, bos_id, eos_id, pad_id, "tokenizer.ggml")

    @classmethod
    def from_spm(cls, tokens: Sequence[str], scores: Sequence[float], token_types: Sequence[int],
                 add_space_prefix: bool = True, bos_id: int | None = None, eos_id: int | None = None,
                 pad_id: int | None = None, unk_id: int | None = None) -> "Tokenizer":
        """A SentencePiece (``llama``) vocabulary: tokens, scores, token types (see the module docstring)."""
        types = [int(t) for t in token_types]
        hf = build_spm(tokens, scores, types, add_space_prefix, unk_id)
        pieces = [t.encode("utf-8") if ty in (TT_CONTROL, TT_USER_DEFINED, TT_UNKNOWN) else spm_piece_bytes(t, ty)
                  for t, ty in zip(tokens, types)]
        special = frozenset(i for i, ty in enumerate(types) if ty in (TT_CONTROL, TT_UNKNOWN))
        return cls(hf, pieces, special, bos_id, eos_id, pad_id, "tokenizer.ggml", unk_id=unk_id,
                   kind="spm-bpe" if spm_is_bpe(scores, types) else "spm-unigram", add_space_prefix=add_space_prefix)

    @classmethod
    def from_gguf(cls, path: str | os.PathLike, prefer_hf_json: bool = True) -> "Tokenizer":
        """Read the tokenizer of a text GGUF (its metadata only)."""
        kv = _read_tokenizer_kv(path)
        model = kv.get("tokenizer.ggml.model")
        if model is not None and model not in ("gpt2", "llama"):
            raise TokenizerError(f"{os.fspath(path)}: tokenizer.ggml.model = {model!r}; only byte-level BPE "
                                 "(\"gpt2\") and SentencePiece (\"llama\") are supported")
        ids = dict(bos_id=kv.get("tokenizer.ggml.bos_token_id"), eos_id=kv.get("tokenizer.ggml.eos_token_id"),
                   pad_id=kv.get("tokenizer.ggml.padding_token_id"))
        tokens = kv.get("tokenizer.ggml.tokens")
        hf_json = kv.get("tokenizer.huggingface.json")
        if prefer_hf_json and hf_json:
            tok = cls.from_hf_json(hf_json, n_vocab=len(tokens) if tokens else None, **ids)
            tok.unk_id = kv.get("tokenizer.ggml.unknown_token_id")
            return tok
        if not tokens:
            raise TokenizerError(f"{os.fspath(path)}: no tokenizer (neither tokenizer.huggingface.json nor "
                                 "tokenizer.ggml.tokens)")
        if model == "llama":
            scores, types = kv.get("tokenizer.ggml.scores"), kv.get("tokenizer.ggml.token_type")
            if scores is None or types is None:
                raise TokenizerError(f"{os.fspath(path)}: a SentencePiece vocabulary needs tokenizer.ggml.scores and "
                                     "tokenizer.ggml.token_type")
            try:
                return cls.from_spm(tokens, scores, types, bool(kv.get("tokenizer.ggml.add_space_prefix", True)),
                                    unk_id=kv.get("tokenizer.ggml.unknown_token_id"), **ids)
            except TokenizerError as e:
                raise TokenizerError(f"{os.fspath(path)}: {e}") from None
        merges = kv.get("tokenizer.ggml.merges") or []
        pre = kv.get("tokenizer.ggml.pre") or "default"
        try:
            return cls.from_vocab(tokens, merges, kv.get("tokenizer.ggml.token_type"), pre, **ids)
        except TokenizerError as e:
            raise TokenizerError(f"{os.fspath(path)}: {e}") from None

    # ---- use ----
    @property
    def n_vocab(self) -> int:
        return len(self.pieces)

    def encode(self, text: str) -> list[int]:
        """Token ids of text (special tokens written in the text are recognised; no BOS added)."""
        return list(self.hf.encode(text, add_special_tokens=False).ids)

    def token_id(self, text: str) -> int | None:
        return self.hf.token_to_id(text)

    def token_bytes(self, i: int) -> bytes:
        if 0 <= i < len(self.pieces):
            return self.pieces[i]
        return b""

    def decode_bytes(self, ids: Iterable[int], skip_special: bool = False) -> bytes:
        return b"".join(self.token_bytes(i) for i in ids if not (skip_special and i in self.special_ids))

    def decode(self, ids: Iterable[int], skip_special: bool = False) -> str:
        return self.decode_bytes(ids, skip_special).decode("utf-8", "replace")

    def stream(self, skip_special: bool = False) -> "StreamDecoder":
        return StreamDecoder(self, skip_special)


class StreamDecoder:
    """Turns token ids into text pieces without ever splitting a UTF-8 character: bytes of an
    incomplete character are held until the following token completes it (or flush() is called;
    then an invalid remainder becomes U+FFFD)."""

    def __init__(self, tok: Tokenizer, skip_special: bool = False) -> None:
        self.tok = tok
        self.skip_special = skip_special
        self._dec = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def push(self, i: int) -> str:
        if self.skip_special and i in self.tok.special_ids:
            return ""
        return self._dec.decode(self.tok.token_bytes(i), final=False)

    def push_bytes(self, b: bytes) -> str:
        return self._dec.decode(b, final=False)

    def flush(self) -> str:
        return self._dec.decode(b"", final=True)


_TOKENIZER_KEYS = ("tokenizer.ggml.model", "tokenizer.ggml.pre", "tokenizer.ggml.tokens", "tokenizer.ggml.token_type",
                   "tokenizer.ggml.merges", "tokenizer.ggml.bos_token_id", "tokenizer.ggml.eos_token_id",
                   "tokenizer.ggml.padding_token_id", "tokenizer.huggingface.json", "tokenizer.ggml.scores",
                   "tokenizer.ggml.unknown_token_id", "tokenizer.ggml.add_space_prefix")


def _hf_json_kind(hf_json: str) -> str:
    """"bpe" for a byte-level tokenizer.json; "spm-bpe" / "spm-unigram" for a SentencePiece-style one (spaces as
    "▁" through Metaspace / Replace, byte fallback), whose pieces decode with spm_piece_bytes."""
    import json

    try:
        data = json.loads(hf_json)
    except ValueError:
        return "bpe"
    text = json.dumps({k: data.get(k) for k in ("normalizer", "pre_tokenizer", "decoder")}, ensure_ascii=False)
    model = data.get("model") or {}
    if "ByteLevel" in text or not (SPM_SPACE in text or model.get("byte_fallback") or model.get("type") == "Unigram"):
        return "bpe"
    return "spm-unigram" if model.get("type") == "Unigram" else "spm-bpe"


def _read_tokenizer_kv(path: str | os.PathLike) -> dict:
    """The tokenizer keys of a GGUF, read straight from its metadata section (fast for the 129k-entry
    token list). Raises TokenizerError for a file that is not a GGUF."""
    path = os.fspath(path)
    try:
        with open(path, "rb") as f:
            mm = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    except FileNotFoundError:
        raise TokenizerError(f"{path}: no such file") from None
    except (OSError, ValueError) as e:  # ValueError: empty file
        raise TokenizerError(f"{path}: cannot read ({getattr(e, 'strerror', None) or e})") from None
    try:
        return _parse_kv(mm, frozenset(_TOKENIZER_KEYS))
    except (struct.error, IndexError, UnicodeDecodeError, ValueError) as e:
        raise TokenizerError(f"{path}: not a valid GGUF file ({e})") from None
    finally:
        mm.close()


_SCALARS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}
_NP = {0: "<u1", 1: "<i1", 2: "<u2", 3: "<i2", 4: "<u4", 5: "<i4", 6: "<f4", 7: "<u1", 10: "<u8", 11: "<i8", 12: "<f8"}


def _parse_kv(mm, wanted: frozenset) -> dict:
    import numpy as np

    if mm[:4] != b"GGUF":
        raise ValueError("bad magic")
    version, n_tensors, n_kv = struct.unpack_from("<IQQ", mm, 4)
    if version < 2:
        raise ValueError(f"GGUF version {version} is not supported")
    pos = 24
    size = len(mm)
    out: dict = {}

    def read_str(p: int) -> tuple[bytes, int]:
        (n,) = struct.unpack_from("<Q", mm, p)
        if p + 8 + n > size:
            raise ValueError("string past the end of the file")
        return mm[p + 8:p + 8 + n], p + 8 + n

    for _ in range(n_kv):
        kb, pos = read_str(pos)
        key = kb.decode("utf-8", "replace")
        (t,) = struct.unpack_from("<I", mm, pos)
        pos += 4
        keep = key in wanted
        if t == 8:
            b, pos = read_str(pos)
            if keep:
                out[key] = b.decode("utf-8", "replace")
        elif t == 9:
            et, n = struct.unpack_from("<IQ", mm, pos)
            pos += 12
            if et == 8:
                vals = []
                for _j in range(n):
                    b, pos = read_str(pos)
                    if keep:
                        vals.append(b.decode("utf-8", "replace"))
                if keep:
                    out[key] = vals
            elif et in _NP:
                w = struct.calcsize(_SCALARS[et])
                if pos + w * n > size:
                    raise ValueError("array past the end of the file")
                if keep:
                    out[key] = np.frombuffer(mm, dtype=_NP[et], count=n, offset=pos).tolist()
                pos += w * n
            else:
                raise ValueError(f"{key}: arrays of type {et} are not supported")
        elif t in _SCALARS:
            (v,) = struct.unpack_from(_SCALARS[t], mm, pos)
            pos += struct.calcsize(_SCALARS[t])
            if keep:
                out[key] = v
        else:
            raise ValueError(f"{key}: unknown value type {t}")
    return out
