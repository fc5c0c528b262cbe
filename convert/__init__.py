"""convert-hf-to-gguf: DeepSeek-OCR and DeepSeek-OCR-2 checkpoints (safetensors) to llama.cpp-compatible GGUF
files. The shared machinery is ``convert.base``; each model family is one module of ``convert/models/``.

Public entry points:
    convert(model_dir, *, mmproj=False, outtype="auto", outfile=None, ...) -> ConversionResult
    plan(model_dir, *, mmproj=False, outtype="auto") -> Plan        (what --dry-run prints)
    ConversionError                                                  (every user-facing failure)
    __version__                                                      (the project's, recorded in every file
                                                                      as tilepass.writer_version)
"""
import re as _re
from pathlib import Path as _Path


def _version() -> str:
    """The project's version: the TILEPASS_VERSION_* macros of tilepass.h, the one place it is written. The
    header is ../include/tilepass.h from this folder both in a checkout (include/) and installed
    (tilepass/include/, this folder being tilepass/convert/)."""
    text = (_Path(__file__).resolve().parent.parent / "include" / "tilepass.h").read_text()
    return ".".join(_re.search(rf"^#define\s+TILEPASS_VERSION_{k}\s+(\d+)\s*$", text, _re.M).group(1)  # type: ignore[union-attr]
                    for k in ("MAJOR", "MINOR", "PATCH"))


__version__ = _version()  # before the modules below: convert.base writes it into every file

from .errors import ConversionError  # noqa: E402
from .converter import ConversionResult, Plan, convert, plan  # noqa: E402

__all__ = ["ConversionError", "ConversionResult", "Plan", "__version__", "convert", "plan"]
