"""Top level: checkpoint directory -> plan -> GGUF file."""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path


from .arch_deepseek_ocr import ARCHITECTURES, KV, ModelPlan, TensorPlan
from .config import OcrConfig, load_config
from .errors import ConversionError
from .quant_policy import K_QUANTS, OutType, resolve_outtype
from .safetensors_reader import Checkpoint
from .tokenizer import load_vocab


@dataclass
class Plan:
    """Everything a conversion would write (what ``--dry-run`` prints)."""

    model_dir: Path
    config: OcrConfig
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
    text_cls, vision_cls = ARCHITECTURES[cfg.architecture]
    vocab = None
    if not mmproj:
        t = cfg.text
        vocab = load_vocab(model_dir, t.vocab_size, bos_id=t.bos_token_id, eos_id=t.eos_token_id,
                           pad_id=t.pad_token_id)
        if cfg.image_token_id is None:
            cfg.image_token_id = vocab.special.get("<image>")
    if cfg.image_token_id is None:
        cfg.image_token_id = 128815
    if vocab_only:
        part = text_cls(cfg, None)  # type: ignore[arg-type]
        kv = part.kv_pairs(chosen=chosen, vocab=vocab)
        return Plan(model_dir, cfg, mmproj, outtype, chosen, part.gguf_arch, kv, [])
    ckpt = Checkpoint(model_dir)
    part = vision_cls(cfg, ckpt) if mmproj else text_cls(cfg, ckpt)
    mp: ModelPlan = part.build(chosen, vocab=vocab)
    if any(t.qtype in K_QUANTS for t in mp.tensors):
        from . import native_quant
        native_quant._native()  # fail now, with a clear message, rather than half-way through writing
    return Plan(model_dir, cfg, mmproj, outtype, chosen, mp.arch, mp.kv, mp.tensors, mp.dropped, mp.skipped,
                input_bytes=sum(t.source_bytes for t in mp.tensors))


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
