"""What every model family of the converter shares.

* ``KV`` / ``TensorPlan`` / ``ModelPlan``: what a GGUF file will hold (KV pairs; each tensor's sources,
  shape and type), the form the writer streams out and ``--dry-run`` prints.
* ``Expect``: one expected output tensor, as a family derives it from the config: its checkpoint
  source(s), the shape each source must have, the output shape, and whether llama.cpp keeps it F32.
* ``ModelBase``: one output file of one model family (``TextModel``: ``general.type = model``;
  ``MmprojModel``: the vision file). A family subclasses them and registers the classes under its
  architecture names (``config.json`` ``architectures[0]``), as llama.cpp's converter does::

      @ModelBase.register("DeepseekOCR2ForCausalLM", "DeepseekOcr2ForConditionalGeneration")
      class DeepseekOcr2VisionModel(MmprojModel): ...

  The shared machinery (``build``) then checks the config's counts against the checkpoint before anything
  is sized by them (a hostile ``num_hidden_layers = 10**12`` fails at once), fills what the config leaves
  open from tensor shapes (``resolve``), builds the full list of expected tensors (``expectations``),
  checks every one against the checkpoint (present, float, shaped as the config implies) and rejects
  every checkpoint tensor that is neither expected, deliberately dropped, nor owned by the family's other
  file.

Adding a family = one module in ``convert/models/`` that defines its config reader and its two parts,
registered with ``ModelBase.register``, plus its import in ``convert/models/__init__.py``.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Iterator

import numpy as np
import gguf
from gguf import GGMLQuantizationType as QT
from gguf import GGUFValueType as VT
from gguf import Keys

from . import __version__ as WRITER_VERSION  # the project's (include/tilepass.h)
from .errors import ConversionError
from .quant_policy import OutType, choose_type
from .safetensors_reader import Checkpoint, TensorRef, iter_rows_f32

# ---- our own keys shared by every file (see convert/README_SECTION.md) --------------------------------
KEY_FORMAT_VERSION = "tilepass.format_version"
FORMAT_VERSION = 1


def tname(t: Any, bid: int | None = None, suffix: str = "") -> str:
    """A GGUF tensor name from the gguf package's constants (or a plain format string of our own)."""
    base = t if isinstance(t, str) else gguf.TENSOR_NAMES[t]
    return (base.format(bid=bid) if "{bid}" in base else base) + suffix


@dataclass
class KV:
    key: str
    value: Any
    vtype: VT
    sub_type: VT | None = None


@dataclass
class TensorPlan:
    """One output tensor: where its data comes from and how it is stored."""

    name: str
    sources: list[TensorRef]  # several = stacked along a new first axis (experts)
    shape: tuple[int, ...]  # numpy/PyTorch order (GGUF's ne is the reverse)
    qtype: QT
    note: str = ""

    @property
    def row_len(self) -> int:
        return self.shape[-1]

    @property
    def n_elements(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))

    @property
    def nbytes(self) -> int:
        blk, size = gguf.GGML_QUANT_SIZES[self.qtype]
        return self.n_elements // blk * size

    @property
    def source_bytes(self) -> int:
        return sum(s.nbytes for s in self.sources)

    def iter_rows(self, max_chunk_bytes: int = 4 << 20) -> Iterator[np.ndarray]:
        """float32 [rows, row_len] chunks, in output order."""
        for src in self.sources:
            for chunk in iter_rows_f32(src, max_chunk_bytes):
                yield chunk.reshape(-1, self.row_len)

    def read_f32(self) -> np.ndarray:
        parts = list(self.iter_rows())
        return np.concatenate(parts, axis=0).reshape(self.shape)


@dataclass
class Expect:
    """One expected output tensor, derived from the config."""

    gguf_name: str
    sources: list[str]
    src_shape: tuple[int, ...]  # each source's shape
    out_shape: tuple[int, ...]
    force_f32: bool = False  # llama.cpp keeps it F32 (norms, biases, position tables, convs, ...)
    conv_f16_only: bool = False  # F16 with --outtype f16, else F32 (SAM's patch embedding)


def expect(name: str, src: str, shape: tuple, out: tuple | None = None, f32: bool = False,
           conv: bool = False) -> Expect:
    """A one-source ``Expect`` (most tensors)."""
    return Expect(name, [src], tuple(shape), tuple(out or shape), f32, conv)


@dataclass
class ModelPlan:
    arch: str
    kv: list[KV]
    tensors: list[TensorPlan]
    dropped: list[str] = field(default_factory=list)  # source tensors intentionally not written
    skipped: list[str] = field(default_factory=list)  # source tensors that belong to the other file


@dataclass(kw_only=True)
class ModelConfig:
    """What every family's config reader returns (families add their own fields)."""

    layout: str  # the config layout: "original" | "hf"
    architecture: str
    path: Path  # config.json, for error messages
    image_token_id: int | None = None
    name: str | None = None
    image_mean: list[float] = field(default_factory=lambda: [0.5, 0.5, 0.5])
    image_std: list[float] = field(default_factory=lambda: [0.5, 0.5, 0.5])
    raw: dict[str, Any] = field(default_factory=dict, repr=False)


@dataclass(frozen=True)
class Count:
    """A config count (layers, experts, ...) that sizes the expected-tensor list, and the checkpoint names
    that hold one index per item (``pattern``: a regex whose first group is the index)."""

    key: str  # the config key, as the error names it
    value: int
    pattern: str
    what: str  # e.g. "layers (model.layers.N.*)"


class ModelBase:
    """One GGUF file of one model family: expected tensors, KV pairs and the checks between them."""

    family: ClassVar[str] = ""  # e.g. "DeepSeek-OCR v1": error messages name the family being converted
    gguf_arch: ClassVar[str] = ""  # general.architecture
    file_kind: ClassVar[str] = ""  # general.type: "model" (text) or "mmproj" (vision)
    architectures: ClassVar[tuple[str, ...]] = ()  # set by register()
    _registry: ClassVar[dict[str, dict[str, type["ModelBase"]]]] = {"model": {}, "mmproj": {}}

    # ---- registry ----
    @classmethod
    def register(cls, *names: str):
        """Class decorator: convert checkpoints whose ``architectures[0]`` is one of ``names`` with this part."""

        def deco(part: type[ModelBase]) -> type[ModelBase]:
            reg = ModelBase._registry.get(part.file_kind)
            if reg is None:
                raise TypeError(f"{part.__name__}: register a TextModel or MmprojModel subclass")
            for n in names:
                if reg.get(n, part) is not part:
                    raise ValueError(f"architecture {n!r} already has a {part.file_kind} part: {reg[n].__name__}")
                reg[n] = part
            part.architectures = tuple(dict.fromkeys(part.__dict__.get("architectures", ()) + names))
            return part

        return deco

    @staticmethod
    def lookup(arch: str, mmproj: bool) -> type["ModelBase"] | None:
        return ModelBase._registry["mmproj" if mmproj else "model"].get(arch)

    @staticmethod
    def known_architectures() -> list[str]:
        return list(dict.fromkeys(list(ModelBase._registry["model"]) + list(ModelBase._registry["mmproj"])))

    @staticmethod
    def registered_parts() -> list[type["ModelBase"]]:
        return list(dict.fromkeys(list(ModelBase._registry["model"].values())
                                  + list(ModelBase._registry["mmproj"].values())))

    # ---- the family's config reader (both parts of a family share it) ----
    @classmethod
    def guess_architecture(cls, data: dict[str, Any]) -> str | None:
        """The architecture a config without ``architectures`` belongs to, if it is recognisably this family's."""
        return None

    @classmethod
    def read_config(cls, path: Path, top: Any, arch: str) -> ModelConfig:
        """``config.json`` (a ``config.Getter`` over it) -> the family's typed config."""
        raise NotImplementedError

    # ---- per file ----
    def __init__(self, cfg: Any, ckpt: Checkpoint | None):
        self.cfg = cfg
        self.ckpt = ckpt

    @property
    def mmproj(self) -> bool:
        return self.file_kind == "mmproj"

    @classmethod
    def owns_name(cls, name: str) -> bool:
        """Whether a checkpoint tensor belongs to this file."""
        raise NotImplementedError

    def owns(self, name: str) -> bool:
        return self.owns_name(name)

    def drops(self, name: str) -> bool:
        """Checkpoint tensors of this file that are deliberately not written (unused by the graph)."""
        return False

    def other_owns(self, name: str) -> bool:
        """Whether the family's other file writes this tensor (then this file skips it)."""
        other = ModelBase.lookup(self.cfg.architecture, not self.mmproj)
        return other is not None and other.owns_name(name)

    def counts(self) -> list[Count]:
        """The config counts that size ``expectations()``; checked against the checkpoint first."""
        return []

    def resolve(self) -> None:
        """Fill what the config leaves open from tensor shapes; check what must agree."""

    def expectations(self) -> list[Expect]:
        raise NotImplementedError

    def kv_pairs(self, **extra: Any) -> list[KV]:
        raise NotImplementedError

    @property
    def n_layer(self) -> int:
        """The text model's block count (what the _M mixture's layer rule counts)."""
        return self.cfg.text.num_hidden_layers

    # ---- helpers ----
    def _where(self) -> str:
        idx = self.ckpt.dir / "model.safetensors.index.json"
        return str(idx if idx.exists() else self.ckpt.dir)

    def _ref(self, name: str) -> TensorRef:
        ref = self.ckpt.tensors.get(name)
        if ref is None:
            raise ConversionError(self._where(), f"missing tensor {name!r}")
        return ref

    def _dim(self, name: str, axis: int) -> int:
        ref = self._ref(name)
        if len(ref.shape) <= axis:
            raise ConversionError(ref.path, f"tensor {name!r} has shape {list(ref.shape)}, expected at least "
                                            f"{axis + 1} dimensions")
        return ref.shape[axis]

    def present(self, pattern: str) -> int:
        """1 + the largest index the checkpoint holds for ``pattern`` (a regex, first group = the index);
        0 when no name matches."""
        rx = re.compile(pattern)
        top = -1
        for name in self.ckpt.tensors:
            m = rx.match(name)
            if m is not None:
                top = max(top, int(m.group(1)))
        return top + 1

    def check_counts(self) -> None:
        """Every count of the config is at most what the checkpoint holds, before anything is sized by it:
        memory stays bounded by the checkpoint, whatever the config says."""
        for c in self.counts():
            have = self.present(c.pattern)
            if c.value > have:
                raise ConversionError(self.cfg.path, f"\"{c.key}\" is {c.value} but the checkpoint holds {have} "
                                                     f"{c.what} ({self.family})")

    def _general(self, chosen: OutType) -> list[KV]:
        return [
            KV(Keys.General.TYPE, self.file_kind, VT.STRING),
            KV(Keys.General.NAME, self.cfg.name or self.family, VT.STRING),
            KV(Keys.General.FILE_TYPE, chosen.file_type, VT.UINT32),
            KV(Keys.General.QUANTIZATION_VERSION, gguf.GGML_QUANT_VERSION, VT.UINT32),
            KV(KEY_FORMAT_VERSION, FORMAT_VERSION, VT.UINT32),
            KV("tilepass.writer_version", WRITER_VERSION, VT.STRING),
        ]

    def build(self, chosen: OutType, **kv_extra: Any) -> ModelPlan:
        """Counts checked, open values resolved, every expected tensor listed and checked against the
        checkpoint, nothing unknown; then the KV pairs."""
        self.check_counts()
        self.resolve()
        exps = self.expectations()
        expected_sources: set[str] = set()
        tensors: list[TensorPlan] = []
        tied_head = not any(e.gguf_name == "output.weight" for e in exps)  # llama.cpp reuses token_embd
        for e in exps:
            refs = []
            for s in e.sources:
                ref = self._ref(s)
                if tuple(ref.shape) != tuple(e.src_shape):
                    raise ConversionError(ref.path, f"tensor {s!r} has shape {list(ref.shape)} but the config implies "
                                                    f"{list(e.src_shape)}")
                if ref.dtype not in ("F32", "F16", "BF16", "F64"):
                    raise ConversionError(ref.path, f"tensor {s!r} has non-float dtype {ref.dtype}")
                refs.append(ref)
                expected_sources.add(s)
            tc = choose_type(chosen.tensor_type(e.gguf_name, self.n_layer, tied_head), e.out_shape[-1], force_f32=e.force_f32,
                             conv_f16_only=e.conv_f16_only)
            tensors.append(TensorPlan(e.gguf_name, refs, tuple(e.out_shape), tc.qtype, tc.note))
        dropped, skipped = [], []
        for name, ref in self.ckpt.tensors.items():
            if name in expected_sources:
                continue
            if self.drops(name):
                dropped.append(name)
            elif self.owns(name) or not self.other_owns(name):
                raise ConversionError(ref.path, f"unexpected tensor {name!r} (not part of {self.family} as "
                                                f"configured)")
            else:
                skipped.append(name)
        kv = self.kv_pairs(chosen=chosen, **kv_extra)
        return ModelPlan(self.gguf_arch, kv, tensors, dropped, skipped)


class TextModel(ModelBase):
    """The text GGUF of a family."""

    file_kind = "model"

    @classmethod
    def load_vocab(cls, model_dir: Path, cfg: Any) -> Any:
        """The tokenizer the text file carries (``None``: none)."""
        return None


class MmprojModel(ModelBase):
    """The vision ("mmproj") GGUF of a family."""

    file_kind = "mmproj"
    gguf_arch = gguf.MODEL_ARCH_NAMES[gguf.MODEL_ARCH.MMPROJ]
