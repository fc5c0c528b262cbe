"""cffi binding (ABI mode) over include/tilepass.h and the built libtilepass.so.

The header's region between TP_CDEF_BEGIN and TP_CDEF_END is plain C declarations; preprocessor
lines are dropped (integer #defines are turned into cffi constants), so every public function is
bound without a hand-kept list.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import cffi

REPO_ROOT = Path(__file__).resolve().parents[1]
HEADER = REPO_ROOT / "include" / "tilepass.h"


class TilepassError(RuntimeError):
    """A failure reported by libtilepass: its status code and message."""

    def __init__(self, status: int, message: str) -> None:
        self.status = status
        super().__init__(message)


def _cdef_source(header_text: str) -> str:
    begin = header_text.index("/* TP_CDEF_BEGIN */")
    end = header_text.index("/* TP_CDEF_END */")
    lines = []
    for line in header_text[begin:end].splitlines():
        stripped = line.strip()
        m = re.match(r"#define\s+(\w+)\s+(-?\d+)\s*$", stripped)
        if m:
            lines.append(f"#define {m.group(1)} {m.group(2)}")
        elif stripped.startswith("#"):
            continue
        else:
            lines.append(line)
    return "\n".join(lines)


def _library_path() -> Path:
    env = os.environ.get("TILEPASS_LIB")
    if env:
        return Path(env)
    return REPO_ROOT / "build" / "libtilepass.so"


ffi = cffi.FFI()
ffi.cdef(_cdef_source(HEADER.read_text()))
_path = _library_path()
if not _path.exists():
    raise ImportError(f"{_path} not found: build the library with `make` first")
lib: Any = ffi.dlopen(str(_path))


def check_error(status: int, err: Any = None, what: str = "") -> None:
    """Raise TilepassError when status is not TP_OK, with the tp_error message if given."""
    if status == lib.TP_OK:
        return
    message = ffi.string(err.message).decode("utf-8", "replace") if err is not None else ""
    if not message:
        message = ffi.string(lib.tp_status_string(status)).decode()
    raise TilepassError(status, f"{what}: {message}" if what else message)


def check_context(ctx: Any, status: int | None = None) -> None:
    """Raise TilepassError carrying the context's first recorded error, if any."""
    st = lib.tp_context_status(ctx) if status is None or status == lib.TP_OK else status
    if st == lib.TP_OK and (status is None or status == lib.TP_OK):
        return
    message = ffi.string(lib.tp_context_error(ctx)).decode("utf-8", "replace")
    raise TilepassError(st, message or ffi.string(lib.tp_status_string(st)).decode())


def new_error() -> Any:
    return ffi.new("tp_error *")
