"""cffi binding (ABI mode) over tilepass.h and libtilepass.so.

The pair is found by the package (``tilepass.library_path()``, ``tilepass.header_path()``): TILEPASS_LIB when set,
else the installed package's own library and header, else a checkout's build/libtilepass.so and
include/tilepass.h. The library must report the header's version (tp_version() == TILEPASS_VERSION), else
importing this module raises LibraryError (an ImportError) saying which files disagree.

The header's region between TP_CDEF_BEGIN and TP_CDEF_END is plain C declarations; preprocessor
lines are dropped (integer #defines are turned into cffi constants), so every public function is
bound without a hand-kept list.
"""

from __future__ import annotations

import re
from typing import Any

import cffi

from . import LibraryError, __version__, header_path, library_path

HEADER = header_path()


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


_HOW_TO_GET = {
    "TILEPASS_LIB": "unset TILEPASS_LIB to use the package's own library, or point it at a libtilepass.so",
    "package": "the installed package is incomplete: reinstall it (pip install --force-reinstall tilepass, or "
               "pip install . in a checkout)",
    "checkout": "build it with `make lib` in the checkout",
}


def _load(ffi: cffi.FFI) -> tuple[Any, Any, str]:
    """dlopen the library library_path() names and check its version against the header's."""
    path, origin = library_path()
    where = f"{path} (from TILEPASS_LIB)" if origin == "TILEPASS_LIB" else str(path)
    if not path.is_file():
        raise LibraryError(f"libtilepass not found: {where} does not exist; {_HOW_TO_GET[origin]}")
    try:
        lib = ffi.dlopen(str(path))
        version = ffi.string(lib.tp_version()).decode()
    except (OSError, AttributeError) as e:  # not a loadable library / not libtilepass (no tp_version)
        raise LibraryError(f"libtilepass cannot be loaded from {where}: {e}; {_HOW_TO_GET[origin]}") from None
    if version != __version__:
        raise LibraryError(f"libtilepass version mismatch: {where} is {version}, but the header {HEADER} is "
                           f"{__version__}: the library and the header must come from the same build; "
                           f"{_HOW_TO_GET[origin]}")
    return lib, path, version


ffi = cffi.FFI()
ffi.cdef(_cdef_source(HEADER.read_text()))
lib, LIBRARY, VERSION = _load(ffi)  # LIBRARY: the file loaded; VERSION: its tp_version()


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
