"""Reading a checkpoint's ``config.json``: the typed JSON access every family's reader uses, and
``load_config``, which picks the family by ``architectures[0]`` (the registry of ``convert.base``) and
lets its reader parse the file.

The families' own config types and readers live with them in ``convert/models/`` (DeepSeek-OCR v1:
``models/deepseek_ocr.py``; DeepSeek-OCR-2: ``models/deepseek_ocr2.py``). Values a config does not state
are left ``None`` there and resolved from tensor shapes by the family's parts.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .base import ModelBase, ModelConfig
from .errors import ConversionError


class Getter:
    """Typed access to one JSON object with errors naming the config file and the key path."""

    def __init__(self, path: Path, obj: Any, where: str):
        self.path, self.obj, self.where = path, obj, where
        if not isinstance(obj, dict):
            raise ConversionError(path, f"{where or 'config'} is not a JSON object")

    def _key(self, k: str) -> str:
        return f"{self.where}.{k}" if self.where else k

    def has(self, k: str) -> bool:
        return k in self.obj and self.obj[k] is not None

    def sub(self, k: str) -> "Getter":
        if not self.has(k):
            raise ConversionError(self.path, f"missing \"{self._key(k)}\"")
        return Getter(self.path, self.obj[k], self._key(k))

    def int(self, k: str, default: Any = ..., minimum: int = 0) -> Any:
        if not self.has(k):
            if default is ...:
                raise ConversionError(self.path, f"missing \"{self._key(k)}\"")
            return default
        v = self.obj[k]
        if isinstance(v, bool) or not isinstance(v, int) or v < minimum:
            raise ConversionError(self.path, f"\"{self._key(k)}\" must be an integer >= {minimum}, got {v!r}")
        return v

    def float(self, k: str, default: Any = ...) -> Any:
        if not self.has(k):
            if default is ...:
                raise ConversionError(self.path, f"missing \"{self._key(k)}\"")
            return default
        v = self.obj[k]
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise ConversionError(self.path, f"\"{self._key(k)}\" must be a number, got {v!r}")
        return float(v)

    def bool(self, k: str, default: bool) -> bool:
        if not self.has(k):
            return default
        v = self.obj[k]
        if not isinstance(v, bool):
            raise ConversionError(self.path, f"\"{self._key(k)}\" must be true or false, got {v!r}")
        return v

    def int_list(self, k: str, default: Any = ...) -> Any:
        if not self.has(k):
            if default is ...:
                raise ConversionError(self.path, f"missing \"{self._key(k)}\"")
            return default
        v = self.obj[k]
        if not isinstance(v, list) or not all(isinstance(x, int) and not isinstance(x, bool) for x in v):
            raise ConversionError(self.path, f"\"{self._key(k)}\" must be a list of integers, got {v!r}")
        return list(v)

    def size(self, k: str, default: Any = ...) -> Any:
        """An image/patch size: an int or a square [n, n] pair."""
        if self.has(k) and isinstance(self.obj[k], (list, tuple)):
            v = self.obj[k]
            if len(v) != 2 or v[0] != v[1] or not isinstance(v[0], int):
                raise ConversionError(self.path, f"\"{self._key(k)}\" must be a square size, got {v!r}")
            return v[0]
        return self.int(k, default, minimum=1)

    def rope_theta(self, default: float) -> float:
        """``rope_parameters.rope_theta`` (transformers 5) or ``rope_theta``; only plain RoPE is supported."""
        if self.has("rope_parameters"):
            rp = self.sub("rope_parameters")
            rtype = rp.obj.get("rope_type", "default")
            if rtype != "default":
                raise ConversionError(self.path, f"{rp.where}.rope_type {rtype!r} is not supported")
            return rp.float("rope_theta", default)
        return self.float("rope_theta", default)


_Getter = Getter  # the name before the per-family split


def load_json(path: Path, what: str) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConversionError(path, f"{what} not found") from None
    except IsADirectoryError:
        raise ConversionError(path, f"{what} is a directory") from None
    except PermissionError:
        raise ConversionError(path, f"cannot read {what}: permission denied") from None
    except UnicodeDecodeError:
        raise ConversionError(path, f"cannot read {what}: not UTF-8 text") from None
    except OSError as e:
        raise ConversionError(path, f"cannot read {what}: {e.strerror or e}") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise ConversionError(path, f"invalid JSON: {e}") from None
    if not isinstance(data, dict):
        raise ConversionError(path, f"{what} is not a JSON object")
    return data


_load_json = load_json


def _family_part(arch: str) -> type[ModelBase] | None:
    return ModelBase.lookup(arch, False) or ModelBase.lookup(arch, True)


def load_config(model_dir: Path) -> ModelConfig:
    """Read ``config.json`` (and ``processor_config.json`` when present) of a checkpoint directory."""
    from . import models  # noqa: F401  (registers every family)

    model_dir = Path(model_dir)
    if not model_dir.exists():
        raise ConversionError(model_dir, "model directory not found")
    if not model_dir.is_dir():
        raise ConversionError(model_dir, "not a directory")
    path = model_dir / "config.json"
    data = load_json(path, "config.json")
    top = Getter(path, data, "")
    archs = data.get("architectures") or []
    if not isinstance(archs, list):
        raise ConversionError(path, f"\"architectures\" must be a list, got {archs!r}")
    arch = archs[0] if archs else None
    if arch is None:  # recognise a family by its config's shape
        guesses = {g for part in ModelBase.registered_parts() if (g := part.guess_architecture(data))}
        arch = guesses.pop() if len(guesses) == 1 else None
    part = _family_part(arch) if isinstance(arch, str) else None
    if part is None:
        known = ", ".join(ModelBase.known_architectures())
        raise ConversionError(path, f"unknown architecture {arch or data.get('model_type')!r} "
                                    f"(this converter handles {known})")
    cfg = part.read_config(path, top, arch)
    cfg.architecture = arch
    cfg.raw = data
    name = data.get("_name_or_path")
    cfg.name = Path(name).name if isinstance(name, str) and name else model_dir.resolve().name
    # preprocessing facts, where the checkpoint states them
    pp = model_dir / "processor_config.json"
    if pp.exists():
        pdata = load_json(pp, "processor_config.json")
        for key in ("image_mean", "image_std"):
            v = pdata.get(key)
            if v is not None:
                if not (isinstance(v, list) and len(v) == 3 and all(isinstance(x, (int, float)) for x in v)):
                    raise ConversionError(pp, f"\"{key}\" must be a list of 3 numbers, got {v!r}")
                setattr(cfg, key, [float(x) for x in v])
    return cfg


def __getattr__(name: str) -> Any:
    """The DeepSeek-OCR v1 config types, at their old place."""
    if name in ("TextConfig", "SamConfig", "ClipConfig", "OcrConfig"):
        from .models import deepseek_ocr, sam
        return getattr(sam if name == "SamConfig" else deepseek_ocr, name)
    raise AttributeError(name)
