"""A chat-completion request's JSON (OpenAI's format) into what the engine needs: the page images (decoded and
checked), the user's text and the settings. Every problem is an ApiError 400 naming the field (``param``).

- Messages: ``system`` messages are ignored (the OCR models have no system turn); the request is the last
  ``user`` message; an ``assistant`` or ``tool`` message (a conversation) is refused: the models take one turn.
- Content: a string (text only: refused, there is no image) or a list of parts ``{"type": "text", "text"}`` and
  ``{"type": "image_url", "image_url": {"url": ...}}``; each image is a page, the texts joined are the prompt
  (none: the server's prompt, -p / --task or the model family's default).
- Image URLs: ``data:[type];base64,...``; ``file://PATH`` only under the directory ``--allow-files`` names;
  anything else (http, https, ...) refused: the server fetches nothing.
- Settings: ``max_tokens`` (or ``max_completion_tokens``), ``temperature``, ``top_p``, ``seed``, ``n`` (1 only),
  ``stream``, ``stream_options.include_usage``; extra fields ``top_k``, ``no_repeat_ngram_size``,
  ``no_repeat_window``, ``no_repeat_scope``, ``mode``, ``raw``. Others are ignored, as OpenAI-compatible servers do.
"""

from __future__ import annotations

import base64
import binascii
import math
import os
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..images import ImageError, load_image
from .errors import bad_request

SEED_MAX = 2**64 - 1
INT_MAX = 2**31 - 1


@dataclass
class ChatRequest:
    images: list[Any]  # PIL RGB images, one per page, in the order given
    text: str | None  # the user's text (None: the server's prompt)
    stream: bool = False
    include_usage: bool = False
    settings: dict[str, Any] = field(default_factory=dict)  # only the fields the request gave


@dataclass(frozen=True)
class Limits:
    max_image_pixels: int
    max_images: int
    allow_files: Path | None = None  # file:// URLs only below this directory (resolved)


def _int(body: dict, name: str, lo: int, hi: int) -> int | None:
    v = body.get(name)
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, int):
        raise bad_request(f"'{name}' must be an integer, not {type(v).__name__}", name, "invalid_type")
    if not lo <= v <= hi:
        raise bad_request(f"'{name}' must be in {lo} .. {hi} (got {v})", name, "invalid_value")
    return v


def _number(body: dict, name: str, lo: float, hi: float, lo_open: bool = False) -> float | None:
    v = body.get(name)
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise bad_request(f"'{name}' must be a number, not {type(v).__name__}", name, "invalid_type")
    v = float(v)
    if not math.isfinite(v) or v < lo or v > hi or (lo_open and v == lo):
        raise bad_request(f"'{name}' must be in {'(' if lo_open else '['}{lo}, {hi}] (got {v})", name,
                          "invalid_value")
    return v


def _bool(body: dict, name: str) -> bool | None:
    v = body.get(name)
    if v is None:
        return None
    if not isinstance(v, bool):
        raise bad_request(f"'{name}' must be a boolean, not {type(v).__name__}", name, "invalid_type")
    return v


def _str(body: dict, name: str) -> str | None:
    v = body.get(name)
    if v is None:
        return None
    if not isinstance(v, str):
        raise bad_request(f"'{name}' must be a string, not {type(v).__name__}", name, "invalid_type")
    return v


def parse_settings(body: dict) -> dict[str, Any]:
    out: dict[str, Any] = {}
    mt = _int(body, "max_tokens", 1, INT_MAX)
    mct = _int(body, "max_completion_tokens", 1, INT_MAX)
    if mt is not None or mct is not None:
        out["max_tokens"] = mt if mt is not None else mct
    for name, lo, hi, lo_open in (("temperature", 0.0, 1e6, False), ("top_p", 0.0, 1.0, True)):
        v = _number(body, name, lo, hi, lo_open)
        if v is not None:
            out[name] = v
    for name, lo, hi in (("seed", -(2**63), SEED_MAX), ("top_k", 0, INT_MAX), ("no_repeat_ngram_size", 0, INT_MAX),
                         ("no_repeat_window", 0, INT_MAX)):
        v = _int(body, name, lo, hi)
        if v is not None:
            out[name] = v
    if "seed" in out and out["seed"] < 0:  # OpenAI's seed is any integer; -1 as llama.cpp: a random one
        if out["seed"] != -1:
            raise bad_request(f"'seed' must be -1 (random) or 0 .. {SEED_MAX} (got {out['seed']})", "seed",
                              "invalid_value")
        del out["seed"]
    n = _int(body, "n", 1, INT_MAX)
    if n is not None and n != 1:
        raise bad_request(f"'n' must be 1: one completion per request (got {n})", "n", "invalid_value")
    scope = _str(body, "no_repeat_scope")
    if scope is not None:
        if scope not in ("generated", "all"):
            raise bad_request(f"'no_repeat_scope' must be 'generated' or 'all' (got {scope!r})", "no_repeat_scope",
                              "invalid_value")
        out["no_repeat_scope"] = scope
    mode = _str(body, "mode")
    if mode is not None:
        out["mode"] = mode
    raw = _bool(body, "raw")
    if raw is not None:
        out["raw"] = raw
    model = _str(body, "model")  # any name: the server has one model
    if model is not None:
        out["model"] = model
    return out


def parse_chat(body: Any, limits: Limits) -> ChatRequest:
    """The request (a decoded JSON value) checked and its images decoded; ApiError 400 for anything wrong."""
    if not isinstance(body, dict):
        raise bad_request(f"the request body must be a JSON object, not {type(body).__name__}", None, "invalid_type")
    settings = parse_settings(body)
    stream = bool(_bool(body, "stream"))
    so = body.get("stream_options")
    include_usage = False
    if so is not None:
        if not isinstance(so, dict):
            raise bad_request("'stream_options' must be an object", "stream_options", "invalid_type")
        include_usage = bool(_bool(so, "include_usage"))
    messages = body.get("messages")
    if messages is None:
        raise bad_request("'messages' is required", "messages", "missing_required_parameter")
    if not isinstance(messages, list) or not messages:
        raise bad_request("'messages' must be a non-empty array of messages", "messages", "invalid_type")
    user = None
    for i, m in enumerate(messages):
        where = f"messages[{i}]"
        if not isinstance(m, dict):
            raise bad_request(f"'{where}' must be an object", where, "invalid_type")
        role = m.get("role")
        if role in ("system", "developer"):
            continue
        if role == "user":
            user = (i, m)
            continue
        if role in ("assistant", "tool", "function"):
            raise bad_request(f"'{where}': a {role} message; this server does one turn (one user message with the "
                              "page images)", f"{where}.role", "unsupported_value")
        raise bad_request(f"'{where}.role' must be 'user' or 'system' (got {role!r})", f"{where}.role",
                          "invalid_value")
    if user is None:
        raise bad_request("no user message", "messages", "missing_required_parameter")
    i, msg = user
    texts, images = _content(msg.get("content"), f"messages[{i}].content", limits)
    if not images:
        raise bad_request("the user message has no image: give the page as an image_url part "
                          "(a data: URI with the image's bytes)", f"messages[{i}].content", "missing_image")
    text = "\n".join(texts) if texts else None
    return ChatRequest(images=images, text=text, stream=stream, include_usage=include_usage, settings=settings)


def _content(content: Any, where: str, limits: Limits) -> tuple[list[str], list[Any]]:
    if isinstance(content, str):
        return [content], []
    if not isinstance(content, list):
        raise bad_request(f"'{where}' must be a string or an array of content parts", where, "invalid_type")
    texts: list[str] = []
    images: list[Any] = []
    for k, part in enumerate(content):
        pw = f"{where}[{k}]"
        if not isinstance(part, dict):
            raise bad_request(f"'{pw}' must be an object", pw, "invalid_type")
        kind = part.get("type")
        if kind == "text":
            t = part.get("text")
            if not isinstance(t, str):
                raise bad_request(f"'{pw}.text' must be a string", f"{pw}.text", "invalid_type")
            texts.append(t)
        elif kind == "image_url":
            iu = part.get("image_url")
            url = iu.get("url") if isinstance(iu, dict) else iu
            if not isinstance(url, str):
                raise bad_request(f"'{pw}.image_url.url' must be a string", f"{pw}.image_url", "invalid_type")
            if len(images) >= limits.max_images:
                raise bad_request(f"more than {limits.max_images} images in one request (--max-images)", pw,
                                  "too_many_images")
            images.append(load_url(url, pw, limits))
        else:
            raise bad_request(f"'{pw}.type' must be 'text' or 'image_url' (got {kind!r})", f"{pw}.type",
                              "invalid_value")
    return texts, images


def load_url(url: str, where: str, limits: Limits) -> Any:
    """The image an image_url names: a data: URI's bytes, or a file below --allow-files; decoded and checked."""
    scheme = url.split(":", 1)[0].lower() if ":" in url else ""
    if scheme == "data":
        head, sep, payload = url.partition(",")
        if not sep or not head.lower().endswith(";base64"):
            raise bad_request(f"'{where}': a data: URI must be base64 (data:image/png;base64,...)", where,
                              "invalid_image_url")
        try:
            data: Any = base64.b64decode(payload.strip(), validate=True)
        except (binascii.Error, ValueError) as e:
            raise bad_request(f"'{where}': the data: URI is not valid base64 ({e})", where, "invalid_image_url") from None
        name = f"image {where}"
    elif scheme == "file":
        if limits.allow_files is None:
            raise bad_request(f"'{where}': file:// URLs are refused (the server was not started with --allow-files)",
                              where, "invalid_image_url")
        parsed = urllib.parse.urlparse(url)
        if parsed.netloc not in ("", "localhost"):
            raise bad_request(f"'{where}': a file:// URL names a host ({parsed.netloc})", where, "invalid_image_url")
        path = Path(os.path.realpath(urllib.parse.unquote(parsed.path)))
        root = limits.allow_files
        if path != root and root not in path.parents:
            raise bad_request(f"'{where}': {path} is outside the --allow-files directory", where, "invalid_image_url")
        data, name = path, str(path)
    else:
        raise bad_request(f"'{where}': only data: URIs (and file:// with --allow-files) are taken; the server fetches "
                          f"no {scheme or 'relative'} URLs", where, "invalid_image_url")
    try:
        return load_image(data, max_pixels=limits.max_image_pixels)
    except ImageError as e:
        msg = str(e)
        code = "image_too_large" if "too large" in msg else "invalid_image"
        raise bad_request(msg.replace(f"<{len(data)} bytes in memory>", name) if not isinstance(data, Path) else msg,
                          where, code) from None
