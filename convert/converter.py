"""Top level: checkpoint directory -> plan -> GGUF file.

The family is the one registered for the config's ``architectures[0]`` (``convert.base.ModelBase.register``;
the families are in ``convert/models/``); its text or vision part decides every tensor and KV pair.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

from .base import KV, ModelBase, ModelConfig, ModelPlan, TensorPlan
from .config import load_config
from .errors import ConversionError
from .quant_policy import K_QUANTS, OutType, resolve_outtype
from .safetensors_reader import Checkpoint


@dataclass
class Plan:
    """Everything a conversion would write (what ``--dry-run`` prints)."""

    model_dir: Path
    config: ModelConfig
    mmproj: bool
    outtype: str
    chosen: OutType
    arch: str
    kv: list[KV]
    tensors: list[TensorPlan]
    dropped: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    input_bytes: int = 0

    @property
    def output_bytes(self) -> int:
        return sum(t.nbytes for t in self.tensors)

    def default_outfile(self) -> Path:
        name = self.config.name or self.model_dir.resolve().name
        kind = self.outtype.lower() if self.outtype.lower() != "auto" else self.chosen.name.lower()
        return self.model_dir / (f"mmproj-{name}-{kind}.gguf" if self.mmproj else f"{name}-{kind}.gguf")


@dataclass
class ConversionResult:
    outfile: Path
    plan: Plan
    seconds: float


def plan(model_dir: str | Path, *, mmproj: bool = False, outtype: str = "auto", vocab_only: bool = False) -> Plan:
    """Read config, checkpoint headers and tokenizer; decide every tensor's name, shape and type.

    Reads no tensor data. Raises ``ConversionError`` for any problem with the input.
    """
    model_dir = Path(model_dir)
    cfg = load_config(model_dir)
    chosen = resolve_outtype(outtype, mmproj)
    if vocab_only and mmproj:
        raise ConversionError(None, "--vocab-only applies to the text GGUF, not to --mmproj")
    part_cls = ModelBase.lookup(cfg.architecture, mmproj)
    if part_cls is None:
        raise ConversionError(cfg.path, f"{cfg.architecture} has no {'vision' if mmproj else 'text'} part in this "
                                        f"converter")
    ckpt = None
    if not vocab_only:
        ckpt = Checkpoint(model_dir)
    elif _has_checkpoint(model_dir):  # --vocab-only needs no weights, but their headers bound the config
        try:
            ckpt = Checkpoint(model_dir)
        except ConversionError:
            ckpt = None
    part = part_cls(cfg, ckpt)
    if ckpt is not None:
        part.check_counts()  # before the config sizes anything (the token list, the tensor list)
    vocab = None if mmproj else part_cls.load_vocab(model_dir, cfg)
    if vocab_only:
        kv = part.kv_pairs(chosen=chosen, vocab=vocab)
        return Plan(model_dir, cfg, mmproj, outtype, chosen, part.gguf_arch, kv, [])
    mp: ModelPlan = part.build(chosen, vocab=vocab)
    if any(t.qtype in K_QUANTS for t in mp.tensors):
        from . import native_quant
        native_quant._native()  # fail now, with a clear message, rather than half-way through writing
    return Plan(model_dir, cfg, mmproj, outtype, chosen, mp.arch, mp.kv, mp.tensors, mp.dropped, mp.skipped,
                input_bytes=sum(t.source_bytes for t in mp.tensors))


def _has_checkpoint(model_dir: Path) -> bool:
    return (model_dir / "model.safetensors.index.json").exists() or any(model_dir.glob("*.safetensors"))


def convert(model_dir: str | Path, *, mmproj: bool = False, outtype: str = "auto", outfile: str | Path | None = None,
            vocab_only: bool = False, force: bool = False, progress: bool | None = None) -> ConversionResult:
    """Convert a checkpoint directory to one GGUF file; returns where it went."""
    from .writer import check_output_path, write_gguf

    t0 = time.perf_counter()
    if outfile is not None:
        check_output_path(Path(outfile), force)  # before reading anything big
    p = plan(model_dir, mmproj=mmproj, outtype=outtype, vocab_only=vocab_only)
    out = Path(outfile) if outfile is not None else p.default_outfile()
    write_gguf(out, p.arch, p.kv, p.tensors, force=force, progress=progress)
    return ConversionResult(out, p, time.perf_counter() - t0)
