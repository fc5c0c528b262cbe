"""The tokenizer part of the text GGUF, read from ``tokenizer.json`` / ``tokenizer.model`` +
``tokenizer_config.json``.

Byte-level BPE vocabularies (DeepSeek-OCR; ``load_vocab``) are written the way llama.cpp's ``_set_vocab_gpt2``
writes them; SentencePiece vocabularies (PaddleOCR-VL's ERNIE; ``load_spm_vocab``) the way its
``_set_vocab_sentencepiece`` does (see the section below).

Byte-level BPE: written the way llama.cpp's ``_set_vocab_gpt2`` writes it: ``gpt2`` model, one token per id up to the
model's vocab size (ids without a token become ``[PAD<id>]``, type UNUSED), special added tokens
CONTROL, other added tokens USER_DEFINED, merges as ``"a b"`` strings, and the special ids. The
original ``tokenizer.json`` is kept verbatim under ``tokenizer.huggingface.json``.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from gguf import TokenType

from .errors import ConversionError

PRE_TOKENIZER = "deepseek-v3"
DEFAULT_CHAT_TEMPLATE = "{% for m in messages %}{{m['content']}}{% endfor %}"


@dataclass
class Vocab:
    tokens: list[str]
    token_types: list[int]
    merges: list[str]
    bos_id: int | None
    eos_id: int | None
    pad_id: int | None
    add_bos: bool
    add_eos: bool
    chat_template: str
    hf_json: str
    special: dict[str, int] = field(default_factory=dict)


def _token_content(tok) -> str | None:
    if isinstance(tok, str):
        return tok
    if isinstance(tok, dict):
        c = tok.get("content")
        return c if isinstance(c, str) else None
    return None


def load_vocab(model_dir: Path, vocab_size: int, *, bos_id: int | None, eos_id: int | None,
               pad_id: int | None) -> Vocab:
    model_dir = Path(model_dir)
    tj = model_dir / "tokenizer.json"
    try:
        hf_json = tj.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConversionError(tj, "tokenizer.json not found (needed for the text GGUF; use --mmproj for the "
                                  "vision file)") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConversionError(tj, f"cannot read tokenizer.json: {getattr(e, 'strerror', None) or e}") from None
    try:
        tok = json.loads(hf_json)
    except json.JSONDecodeError as e:
        raise ConversionError(tj, f"invalid JSON: {e}") from None
    model = tok.get("model") if isinstance(tok, dict) else None
    if not isinstance(model, dict) or model.get("type", "BPE") != "BPE" or not isinstance(model.get("vocab"), dict):
        raise ConversionError(tj, "not a BPE tokenizer (expected model.type \"BPE\" with a vocab)")

    tc_path = model_dir / "tokenizer_config.json"
    tc: dict = {}
    if tc_path.exists():
        try:
            tc = json.loads(tc_path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError) as e:
            raise ConversionError(tc_path, f"cannot read tokenizer_config.json: {e}") from None
        except json.JSONDecodeError as e:
            raise ConversionError(tc_path, f"invalid JSON: {e}") from None
        if not isinstance(tc, dict):
            raise ConversionError(tc_path, "not a JSON object")

    id_to_tok: dict[int, str] = {}
    for t, i in model["vocab"].items():
        if not isinstance(i, int):
            raise ConversionError(tj, f"vocab entry {t!r} has a non-integer id {i!r}")
        id_to_tok[i] = t
    added: dict[int, bool] = {}  # id -> special
    for a in tok.get("added_tokens") or []:
        try:
            i, content, special = int(a["id"]), a["content"], bool(a.get("special", False))
        except (KeyError, TypeError, ValueError):
            raise ConversionError(tj, f"malformed added_tokens entry {a!r}") from None
        id_to_tok[i] = content
        added[i] = special
    for i_str, a in (tc.get("added_tokens_decoder") or {}).items():
        try:
            i = int(i_str)
        except ValueError:
            raise ConversionError(tc_path, f"added_tokens_decoder key {i_str!r} is not an id") from None
        content = _token_content(a)
        if content is not None and i not in id_to_tok:
            id_to_tok[i] = content
        if content is not None:
            added[i] = bool(a.get("special", added.get(i, False))) if isinstance(a, dict) else added.get(i, False)

    if id_to_tok and max(id_to_tok) >= vocab_size:
        raise ConversionError(tj, f"token id {max(id_to_tok)} ({id_to_tok[max(id_to_tok)]!r}) does not fit the "
                                  f"model's vocab_size {vocab_size}")
    tokens: list[str] = []
    types: list[int] = []
    for i in range(vocab_size):
        t = id_to_tok.get(i)
        if t is None:
            tokens.append(f"[PAD{i}]")
            types.append(int(TokenType.UNUSED))
        elif i in added:
            tokens.append(t)
            types.append(int(TokenType.CONTROL if added[i] else TokenType.USER_DEFINED))
        else:
            tokens.append(t)
            types.append(int(TokenType.NORMAL))

    merges: list[str] = []
    for m in model.get("merges") or []:
        if isinstance(m, str):
            merges.append(m)
        elif isinstance(m, (list, tuple)) and len(m) == 2 and all(isinstance(x, str) for x in m):
            merges.append(f"{m[0]} {m[1]}")
        else:
            raise ConversionError(tj, f"malformed merge {m!r}")

    tok_to_id = {t: i for i, t in id_to_tok.items()}

    def special_id(key: str, fallback: int | None) -> int | None:
        content = _token_content(tc.get(key))
        if content is not None:
            if content not in tok_to_id:
                raise ConversionError(tc_path, f"{key} {content!r} is not in tokenizer.json")
            return tok_to_id[content]
        return fallback

    bos = special_id("bos_token", bos_id)
    eos = special_id("eos_token", eos_id)
    pad = special_id("pad_token", pad_id)
    add_bos = tc.get("add_bos_token", True)
    add_eos = tc.get("add_eos_token", False)
    template = tc.get("chat_template")
    if not isinstance(template, str) or not template:
        template = DEFAULT_CHAT_TEMPLATE
    special = {t: i for i, t in id_to_tok.items() if added.get(i)}
    return Vocab(tokens=tokens, token_types=types, merges=merges, bos_id=bos, eos_id=eos, pad_id=pad,
                 add_bos=bool(add_bos), add_eos=bool(add_eos), chat_template=template, hf_json=hf_json,
                 special=special)


# ---- SentencePiece ("llama") vocabularies ----------------------------------------------------------------
# Written the way llama.cpp's ``_create_vocab_sentencepiece`` writes them (``tokenizer.ggml.model = "llama"``):
# one token, score and type per id up to the model's vocab size (ids without a piece: ``[PAD<id>]``, score
# -10000, UNUSED), the pieces of ``tokenizer.model`` with their scores and types, then the tokens of
# ``tokenizer_config.json``'s ``added_tokens_decoder`` over their ids (special -> CONTROL, else USER_DEFINED;
# score -1000). A checkpoint with only ``tokenizer.json`` gets the same vocabulary built from it (its vocab; for
# a BPE, scores from its merges' ranks so that llama.cpp's score-ordered merging reproduces them), which
# llama.cpp's converter cannot do. ``tokenizer.model`` is parsed here (protobuf wire format): the converter
# needs no sentencepiece package.

SPM_MODEL_TYPES = {1: "unigram", 2: "bpe", 3: "word", 4: "char"}
_BYTE_PIECE = re.compile(r"^<0x[0-9A-Fa-f]{2}>$")


@dataclass
class SpmModel:
    """What a SentencePiece ``tokenizer.model`` holds (the fields the GGUF vocabulary needs)."""

    pieces: list[tuple[str, float, int]]  # (piece, score, type: gguf.TokenType numbering)
    model_type: str = "unigram"
    byte_fallback: bool = False
    unk_id: int = 0
    bos_id: int = 1
    eos_id: int = 2
    pad_id: int = -1
    normalizer: str = ""
    add_dummy_prefix: bool = True
    remove_extra_whitespaces: bool = True
    escape_whitespaces: bool = True


def _pb_fields(data: bytes):
    """(field number, wire type, value) of one protobuf message; value is an int (varint, fixed32/64 as raw
    little-endian ints) or bytes (length-delimited)."""
    pos, n = 0, len(data)

    def varint() -> int:
        nonlocal pos
        shift = result = 0
        while True:
            if pos >= n:
                raise ValueError("truncated varint")
            b = data[pos]
            pos += 1
            result |= (b & 0x7F) << shift
            if not b & 0x80:
                return result
            shift += 7
            if shift > 63:
                raise ValueError("varint too long")

    while pos < n:
        key = varint()
        field_no, wire = key >> 3, key & 7
        if wire == 0:
            yield field_no, wire, varint()
        elif wire == 1:
            if pos + 8 > n:
                raise ValueError("truncated fixed64")
            yield field_no, wire, int.from_bytes(data[pos:pos + 8], "little")
            pos += 8
        elif wire == 2:
            ln = varint()
            if pos + ln > n:
                raise ValueError("truncated length-delimited field")
            yield field_no, wire, data[pos:pos + ln]
            pos += ln
        elif wire == 5:
            if pos + 4 > n:
                raise ValueError("truncated fixed32")
            yield field_no, wire, int.from_bytes(data[pos:pos + 4], "little")
            pos += 4
        else:
            raise ValueError(f"unsupported wire type {wire}")


def _int32(v: int) -> int:
    """A protobuf int32 varint (negative values are sign-extended to 64 bits)."""
    v &= (1 << 64) - 1
    return v - (1 << 64) if v >= 1 << 63 else v


def parse_sentencepiece_model(data: bytes, path: Path | None = None) -> SpmModel:
    """``tokenizer.model`` (a sentencepiece ``ModelProto``) -> ``SpmModel``."""
    import struct

    m = SpmModel(pieces=[])
    try:
        for f, wire, v in _pb_fields(data):
            if f == 1 and wire == 2:  # SentencePiece
                piece, score, typ = "", 0.0, 1
                for pf, pw, pv in _pb_fields(v):
                    if pf == 1 and pw == 2:
                        piece = pv.decode("utf-8")
                    elif pf == 2 and pw == 5:
                        score = struct.unpack("<f", pv.to_bytes(4, "little"))[0]
                    elif pf == 3 and pw == 0:
                        typ = pv
                if typ not in (1, 2, 3, 4, 5, 6):
                    raise ValueError(f"piece {len(m.pieces)} {piece!r} has unknown type {typ}")
                m.pieces.append((piece, score, typ))
            elif f == 2 and wire == 2:  # TrainerSpec
                for tf, tw, tv in _pb_fields(v):
                    if tw != 0:
                        continue
                    if tf == 3:
                        m.model_type = SPM_MODEL_TYPES.get(tv, f"type {tv}")
                    elif tf == 35:
                        m.byte_fallback = bool(tv)
                    elif tf == 40:
                        m.unk_id = _int32(tv)
                    elif tf == 41:
                        m.bos_id = _int32(tv)
                    elif tf == 42:
                        m.eos_id = _int32(tv)
                    elif tf == 43:
                        m.pad_id = _int32(tv)
            elif f == 3 and wire == 2:  # NormalizerSpec
                for nf, nw, nv in _pb_fields(v):
                    if nf == 1 and nw == 2:
                        m.normalizer = nv.decode("utf-8")
                    elif nf == 3 and nw == 0:
                        m.add_dummy_prefix = bool(nv)
                    elif nf == 4 and nw == 0:
                        m.remove_extra_whitespaces = bool(nv)
                    elif nf == 5 and nw == 0:
                        m.escape_whitespaces = bool(nv)
    except (ValueError, UnicodeDecodeError) as e:
        raise ConversionError(path, f"not a SentencePiece model ({e})") from None
    if not m.pieces:
        raise ConversionError(path, "not a SentencePiece model (no pieces)")
    return m


@dataclass
class SpmVocab:
    """The ``llama`` vocabulary of a text GGUF (``tokenizer.ggml.*``) and what comes with it."""

    tokens: list[str]
    scores: list[float]
    token_types: list[int]
    model_type: str  # "bpe" | "unigram": what the vocabulary came from (not written: llama.cpp has no key)
    source: str  # "tokenizer.model" | "tokenizer.json"
    bos_id: int | None
    eos_id: int | None
    unk_id: int | None
    pad_id: int | None
    add_bos: bool
    add_eos: bool
    add_space_prefix: bool
    chat_template: str | None
    hf_json: str | None  # the checkpoint's tokenizer.json, verbatim
    special: dict[str, int] = field(default_factory=dict)  # CONTROL token -> id


def _read_json_file(path: Path, what: str):
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise ConversionError(path, f"cannot read {what}: {getattr(e, 'strerror', None) or e}") from None
    try:
        return text, json.loads(text)
    except json.JSONDecodeError as e:
        raise ConversionError(path, f"invalid JSON: {e}") from None


def _looks_special(token: str) -> bool:
    """llama.cpp's ``does_token_look_special`` (the rules that concern SentencePiece vocabularies)."""
    return token in ("<pad>", "<mask>", "<2mass>", "[@BOS@]") or (token.startswith("<|") and token.endswith("|>")) \
        or (token.startswith("<｜") and token.endswith("｜>")) or (token.startswith("<start_of_") and token.endswith(">"))


def _prefix_space_of_tokenizer_json(tok: dict) -> bool | None:
    """Whether a tokenizer.json puts "▁" before the text (a Prepend("▁") normalizer or a Metaspace that
    prepends); None when it says nothing either way."""
    def walk(node, kinds):
        if isinstance(node, dict):
            if node.get("type") == "Sequence":
                for k in ("normalizers", "pretokenizers"):
                    for sub in node.get(k) or []:
                        yield from walk(sub, kinds)
            elif node.get("type") in kinds:
                yield node

    for n in walk(tok.get("normalizer"), ("Prepend",)):
        if n.get("prepend") == "\u2581":
            return True
    for n in walk(tok.get("pre_tokenizer"), ("Metaspace",)):
        scheme = n.get("prepend_scheme", "always" if n.get("add_prefix_space", True) else "never")
        return scheme != "never"
    if tok.get("normalizer") is not None or tok.get("pre_tokenizer") is not None:
        return False
    return None


def _chat_template(model_dir: Path, tc: dict) -> str | None:
    """llama.cpp's order: tokenizer_config.json's ``chat_template``, else ``chat_template.jinja``, else
    ``chat_template.json``'s (a list of named templates: the one named "default")."""
    def pick(t):
        if isinstance(t, str) and t:
            return t
        if isinstance(t, list):
            for item in t:
                if isinstance(item, dict) and item.get("name") == "default" and isinstance(item.get("template"), str):
                    return item["template"]
        return None

    t = pick(tc.get("chat_template"))
    if t is not None:
        return t
    jinja = model_dir / "chat_template.jinja"
    if jinja.is_file():
        try:
            return jinja.read_text(encoding="utf-8") or None
        except (OSError, UnicodeDecodeError) as e:
            raise ConversionError(jinja, f"cannot read chat_template.jinja: {e}") from None
    cj = model_dir / "chat_template.json"
    if cj.is_file():
        _, data = _read_json_file(cj, "chat_template.json")
        return pick(data.get("chat_template")) if isinstance(data, dict) else None
    return None


def load_spm_vocab(model_dir: Path, vocab_size: int, *, bos_id: int | None, eos_id: int | None,
                   pad_id: int | None, unk_id: int | None = None) -> SpmVocab:
    """The ``llama`` (SentencePiece) vocabulary of a checkpoint: from ``tokenizer.model`` when there is one (as
    llama.cpp), else from ``tokenizer.json``; ``tokenizer.json`` is kept verbatim whenever present. The ids
    given are ``config.json``'s, used where ``tokenizer_config.json`` names no token."""
    model_dir = Path(model_dir)
    tm_path, tj_path, tc_path = (model_dir / n for n in ("tokenizer.model", "tokenizer.json", "tokenizer_config.json"))
    has_tm, has_tj = tm_path.is_file(), tj_path.is_file()
    if not has_tm and not has_tj:
        raise ConversionError(tm_path, "tokenizer.model not found, nor tokenizer.json (one is needed for the text "
                                       "GGUF; use --mmproj for the vision file)")
    tc: dict = {}
    if tc_path.is_file():
        _, tc = _read_json_file(tc_path, "tokenizer_config.json")
        if not isinstance(tc, dict):
            raise ConversionError(tc_path, "not a JSON object")
    hf_json, tj = None, None
    if has_tj:
        hf_json, tj = _read_json_file(tj_path, "tokenizer.json")
        if not isinstance(tj, dict) or not isinstance(tj.get("model"), dict):
            raise ConversionError(tj_path, "not a tokenizer.json (no \"model\" object)")

    tokens = [f"[PAD{i}]" for i in range(vocab_size)]
    scores = [-10000.0] * vocab_size
    types = [int(TokenType.UNUSED)] * vocab_size

    def put(i: int, tok: str, score: float, typ: int, where: Path) -> None:
        if not 0 <= i < vocab_size:
            raise ConversionError(where, f"token id {i} ({tok!r}) does not fit the model's vocab_size {vocab_size}")
        tokens[i], scores[i], types[i] = tok, float(score), int(typ)

    spm_unk = None
    if has_tm:
        try:
            data = tm_path.read_bytes()
        except OSError as e:
            raise ConversionError(tm_path, f"cannot read tokenizer.model: {e.strerror or e}") from None
        spm = parse_sentencepiece_model(data, tm_path)
        if spm.model_type not in ("bpe", "unigram"):
            raise ConversionError(tm_path, f"SentencePiece model type {spm.model_type!r} is not supported (bpe, "
                                           "unigram)")
        if len(spm.pieces) > vocab_size:
            raise ConversionError(tm_path, f"{len(spm.pieces)} pieces do not fit the model's vocab_size {vocab_size}")
        for i, (piece, score, typ) in enumerate(spm.pieces):
            put(i, piece, score, typ, tm_path)
        model_type, source = spm.model_type, "tokenizer.model"
        spm_unk = spm.unk_id if 0 <= spm.unk_id < len(spm.pieces) else None
        default_prefix = spm.add_dummy_prefix
    else:
        model_type, spm_unk = _vocab_from_tokenizer_json(tj, tj_path, put)
        source, default_prefix = "tokenizer.json", False

    # added tokens: tokenizer.json's, added_tokens.json (llama.cpp reads it), tokenizer_config.json's decoder;
    # one whose id is beyond the model's vocabulary is skipped, as llama.cpp's converter does (no embedding row)
    added_json: dict[str, int] = {}
    for a in (tj or {}).get("added_tokens") or []:
        try:
            i, content, special = int(a["id"]), a["content"], bool(a.get("special", False))
        except (KeyError, TypeError, ValueError):
            raise ConversionError(tj_path, f"malformed added_tokens entry {a!r}") from None
        if not 0 <= i < vocab_size:
            continue
        added_json[content] = i
        # an added token is matched whole (CONTROL when special, else USER_DEFINED); a piece keeps its score
        typ = TokenType.CONTROL if special or _looks_special(content) else TokenType.USER_DEFINED
        put(i, content, scores[i] if tokens[i] == content else -1000.0, typ, tj_path)
    at_path = model_dir / "added_tokens.json"
    if at_path.is_file():
        _, at = _read_json_file(at_path, "added_tokens.json")
        for content, i in (at.items() if isinstance(at, dict) else ()):
            if not isinstance(i, int):
                raise ConversionError(at_path, f"{content!r} has a non-integer id {i!r}")
            if 0 <= i < vocab_size:
                put(i, content, -1000.0, TokenType.USER_DEFINED, at_path)
    for i_str, a in (tc.get("added_tokens_decoder") or {}).items():
        content = _token_content(a)
        try:
            i = int(i_str)
        except ValueError:
            raise ConversionError(tc_path, f"added_tokens_decoder key {i_str!r} is not an id") from None
        if content is None:
            raise ConversionError(tc_path, f"added_tokens_decoder entry {i_str!r} has no content")
        if not 0 <= i < vocab_size:
            continue
        if (isinstance(a, dict) and a.get("special")) or _looks_special(content):
            put(i, content, -1000.0, TokenType.CONTROL, tc_path)
        else:  # llama.cpp pre-normalises a user-defined token's spaces
            put(i, content.replace("\u2581", " "), -1000.0, TokenType.USER_DEFINED, tc_path)

    first: dict[str, int] = {}
    for i, t in enumerate(tokens):
        first.setdefault(t, i)

    def special_id(key: str, fallback: int | None) -> int | None:
        """tokenizer_config.json's token by name (tokenizer.json's added tokens first, as llama.cpp), else the id
        config.json gives (also where the name is in neither: llama.cpp's converter falls back the same way)."""
        content = _token_content(tc.get(key))
        if content is not None:
            if content in added_json:
                return added_json[content]
            if content in first:
                return first[content]
        return fallback

    unk_fallback = unk_id if unk_id is not None else spm_unk
    ids = {k: special_id(f"{k}_token", f) for k, f in (("bos", bos_id), ("eos", eos_id), ("unk", unk_fallback),
                                                        ("pad", pad_id))}
    for k, v in ids.items():
        if v is not None and not 0 <= v < vocab_size:
            raise ConversionError(tc_path if tc_path.is_file() else model_dir / "config.json",
                                  f"{k} token id {v} does not fit the model's vocab_size {vocab_size}")
    prefix = tc.get("add_prefix_space")
    if not isinstance(prefix, bool):
        from_json = _prefix_space_of_tokenizer_json(tj) if tj is not None else None
        prefix = from_json if from_json is not None else default_prefix
    add_bos, add_eos = tc.get("add_bos_token", False), tc.get("add_eos_token", False)
    return SpmVocab(tokens=tokens, scores=scores, token_types=types, model_type=model_type, source=source,
                    bos_id=ids["bos"], eos_id=ids["eos"], unk_id=ids["unk"], pad_id=ids["pad"],
                    add_bos=add_bos if isinstance(add_bos, bool) else False,
                    add_eos=add_eos if isinstance(add_eos, bool) else False, add_space_prefix=prefix,
                    chat_template=_chat_template(model_dir, tc), hf_json=hf_json,
                    special={t: i for i, t in enumerate(tokens) if types[i] == TokenType.CONTROL})


def _vocab_from_tokenizer_json(tj: dict, path: Path, put) -> tuple[str, int | None]:
    """A SentencePiece-style tokenizer.json (BPE with byte fallback, or Unigram) into ``put(id, token, score,
    type)``; returns (model type, unk id)."""
    model = tj["model"]
    kind = model.get("type", "BPE")
    byte_fallback = bool(model.get("byte_fallback", False))

    def typ(tok: str) -> int:
        return int(TokenType.BYTE if byte_fallback and _BYTE_PIECE.match(tok) else TokenType.NORMAL)

    if kind == "Unigram":
        vocab = model.get("vocab")
        if not isinstance(vocab, list):
            raise ConversionError(path, "Unigram model without a vocab list")
        for i, entry in enumerate(vocab):
            if not (isinstance(entry, (list, tuple)) and len(entry) == 2 and isinstance(entry[0], str)
                    and isinstance(entry[1], (int, float))):
                raise ConversionError(path, f"malformed Unigram vocab entry {i}: {entry!r}")
            put(i, entry[0], 0.0 if typ(entry[0]) == TokenType.BYTE else entry[1], typ(entry[0]), path)
        unk = model.get("unk_id")
        if isinstance(unk, int) and 0 <= unk < len(vocab):
            put(unk, vocab[unk][0], 0.0, TokenType.UNKNOWN, path)
            return "unigram", unk
        return "unigram", None
    if kind != "BPE" or not isinstance(model.get("vocab"), dict):
        raise ConversionError(path, f"model.type {kind!r} is not a SentencePiece-style vocabulary (BPE, Unigram)")
    if not byte_fallback and (tj.get("decoder") or {}).get("type") == "ByteLevel":
        raise ConversionError(path, "a byte-level BPE (GPT-2 style) is not a SentencePiece vocabulary")
    vocab: dict = model["vocab"]
    merges = model.get("merges") or []
    first_rank: dict[str, int] = {}
    for r, m in enumerate(merges):
        if isinstance(m, str):
            parts = m.split(" ")
        elif isinstance(m, (list, tuple)):
            parts = list(m)
        else:
            parts = []
        if len(parts) != 2 or not all(isinstance(x, str) for x in parts):
            raise ConversionError(path, f"malformed merge {r}: {m!r}")
        first_rank.setdefault(parts[0] + parts[1], r)
    n_merges = len(merges)
    for tok, i in vocab.items():
        if not isinstance(i, int):
            raise ConversionError(path, f"vocab entry {tok!r} has a non-integer id {i!r}")
        t = typ(tok)
        # llama.cpp merges the adjacent pair whose result scores highest: the merge rank, negated
        score = 0.0 if t == TokenType.BYTE else -float(first_rank[tok] if tok in first_rank else n_merges + i)
        put(i, tok, score, t, path)
    unk_tok = model.get("unk_token")
    unk = vocab.get(unk_tok) if isinstance(unk_tok, str) else None
    if isinstance(unk, int):
        put(unk, unk_tok, 0.0, TokenType.UNKNOWN, path)
    return "bpe", unk
