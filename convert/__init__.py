"""convert-hf-to-gguf: DeepSeek-OCR and DeepSeek-OCR-2 checkpoints (safetensors) to llama.cpp-compatible GGUF
files. The shared machinery is ``convert.base``; each model family is one module of ``convert/models/``.

Public entry points:
    convert(model_dir, *, mmproj=False, outtype="auto", outfile=None, ...) -> ConversionResult
    plan(model_dir, *, mmproj=False, outtype="auto") -> Plan        (what --dry-run prints)
    ConversionError                                                  (every user-facing failure)
"""
from .errors import ConversionError
from .converter import ConversionResult, Plan, convert, plan

__all__ = ["ConversionError", "ConversionResult", "Plan", "convert", "plan"]
