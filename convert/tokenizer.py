"""The tokenizer part of the text GGUF, read from ``tokenizer.json`` + ``tokenizer_config.json``.

Written the way llama.cpp's ``_set_vocab_gpt2`` writes it: ``gpt2`` model, one token per id up to the
model's vocab size (ids without a token become ``[PAD<id>]``, type UNUSED), special added tokens
CONTROL, other added tokens USER_DEFINED, merges as ``"a b"`` strings, and the special ids. The
original ``tokenizer.json`` is kept verbatim under ``tokenizer.huggingface.json``.
"""
from __future__ import annotations

import json
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
