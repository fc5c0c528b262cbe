"""tilepass: run document-OCR vision-language models (DeepSeek-OCR, DeepSeek-OCR-2) from GGUF files.

    from tilepass import VisionEncoder, TextModel, OcrPipeline
    enc = VisionEncoder("mmproj-dsocr-f16.gguf", n_threads=8)
    tokens = enc.encode(["page1.png"], mode="gundam")

This folder (encoder/ in the checkout) is the ``tilepass`` package once installed; the converter (the checkout's
convert/) is ``tilepass.convert``. The public names below are imported on first use, so ``import tilepass``
loads no library: the binding (``tilepass.native``) loads libtilepass.so when a name that needs it is used.

Where the library and its header come from (``library_path()``, ``get_include()``; the CLIs, the Python API and
the tests all go through here):
  1. ``TILEPASS_LIB``, when set: that file (the tests' sanitizer runs load the ASan build this way);
  2. the installed package's own copy, ``tilepass/lib/libtilepass.so`` (with ``tilepass/include/tilepass.h``);
  3. a checkout's ``build/libtilepass.so`` (``make lib``; with ``include/tilepass.h``).
A missing library, or one whose tp_version() differs from the header's TILEPASS_VERSION, is a LibraryError.
"""

from __future__ import annotations

import importlib
import os
import re
import sys
from pathlib import Path
from typing import Any

_HERE = Path(__file__).resolve().parent
_CHECKOUT = _HERE.parent  # the repository root when this is the checkout's encoder/ folder


class LibraryError(ImportError):
    """libtilepass.so cannot be used: not found, not loadable, or not the version of the header."""


def _installed() -> bool:
    """Whether this is an installed package (the wheel puts the header next to the modules)."""
    return (_HERE / "include" / "tilepass.h").is_file()


def get_include() -> str:
    """The folder that holds tilepass.h (compile C against the library with ``-I`` this)."""
    return str(_HERE / "include" if _installed() else _CHECKOUT / "include")


def header_path() -> Path:
    return Path(get_include()) / "tilepass.h"


def library_path() -> tuple[Path, str]:
    """The libtilepass.so the binding loads and where the choice came from: "TILEPASS_LIB", "package" or
    "checkout". The file may not exist (the binding then says so)."""
    env = os.environ.get("TILEPASS_LIB")
    if env:
        return Path(env), "TILEPASS_LIB"
    if _installed():
        return _HERE / "lib" / "libtilepass.so", "package"
    return _CHECKOUT / "build" / "libtilepass.so", "checkout"


def get_lib() -> str:
    """The folder of the libtilepass.so the binding would load (link C with ``-L`` this ``-ltilepass``)."""
    return str(library_path()[0].parent)


def _read_version(header: Path) -> str:
    """"MAJOR.MINOR.PATCH" from the header's TILEPASS_VERSION_* macros (the one place the version is written)."""
    try:
        text = header.read_text()
    except OSError as e:
        raise LibraryError(f"tilepass: cannot read the header {header}: {e.strerror or e}") from None
    parts = [re.search(rf"^#define\s+TILEPASS_VERSION_{k}\s+(\d+)\s*$", text, re.M) for k in ("MAJOR", "MINOR", "PATCH")]
    if not all(parts):
        raise LibraryError(f"tilepass: {header} has no TILEPASS_VERSION_MAJOR/MINOR/PATCH macros")
    return ".".join(m.group(1) for m in parts if m)


__version__ = _read_version(header_path())

# The public API: name -> the module that defines it, imported when the name is first used.
_EXPORTS = {
    "VisionEncoder": ".vision",
    "TextModel": ".text_model",
    "TextInfo": ".text_model",
    "OcrPipeline": ".pipeline",
    "PageResult": ".pipeline",
    "PipelineError": ".pipeline",
    "Tokenizer": ".tokenizer",
    "TokenizerError": ".tokenizer",
    "Sampling": ".generate",
    "NoRepeat": ".generate",
    "GenerationResult": ".generate",
    "GGUFFile": ".gguf_file",
    "ImageError": ".images",
    "load_image": ".images",
    "TilepassError": ".native",
}
__all__ = ["LibraryError", "__version__", "get_include", "get_lib", "library_path", *_EXPORTS]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))


def _console_script(name: str, module: str) -> None:
    """Run the console script ``name``: the ``main`` of tilepass.<module>, with a library that cannot be loaded
    reported as one line (exit status 1) instead of a traceback."""
    import importlib

    try:
        status = importlib.import_module(f"{__name__}.{module}").main()
    except LibraryError as e:
        print(f"{name}: error: {e}", file=sys.stderr)
        status = 1
    sys.exit(status)


def _cli_main() -> None:
    """The ``tilepass-cli`` console script."""
    _console_script("tilepass-cli", "cli")


def _server_main() -> None:
    """The ``tilepass-server`` console script."""
    _console_script("tilepass-server", "server.cli")


def _batch_main() -> None:
    """The ``tilepass-batch`` console script."""
    _console_script("tilepass-batch", "batch.cli")


def _deprecated_alias(old: str, new: str) -> None:
    """Make the module ``old`` (an installed alias package, see native/build_hook.py) be ``new``, submodules
    included (``old.x`` is ``new.x``: one module, one loaded library), with a DeprecationWarning for imports
    from outside tilepass."""
    import importlib.abc
    import importlib.util
    import warnings

    caller = sys._getframe(1).f_back  # past the alias module's own frame
    while caller is not None and "importlib" in caller.f_code.co_filename and "_bootstrap" in caller.f_code.co_filename:
        caller = caller.f_back
    caller_name = caller.f_globals.get("__name__", "") if caller is not None else ""
    if caller is not None and caller_name.partition(".")[0] != "tilepass":
        warnings.warn_explicit(f"the `{old}` import path is deprecated and goes in the next release: import "
                               f"`{new}` instead", DeprecationWarning, caller.f_code.co_filename, caller.f_lineno,
                               module=caller_name, registry=caller.f_globals.setdefault("__warningregistry__", {}))

    class _Alias(importlib.abc.MetaPathFinder, importlib.abc.Loader):
        def _real(self, fullname: str) -> str:
            return new + fullname[len(old):]

        def find_spec(self, fullname: str, path: Any = None, target: Any = None) -> Any:
            if not fullname.startswith(old + "."):
                return None
            spec = importlib.util.find_spec(self._real(fullname))
            if spec is None:
                return None
            return importlib.util.spec_from_loader(fullname, self,
                                                   is_package=spec.submodule_search_locations is not None)

        def create_module(self, spec: Any) -> Any:
            return importlib.import_module(self._real(spec.name))

        def exec_module(self, module: Any) -> None:
            pass

        def get_code(self, fullname: str) -> Any:  # python -m old.sub
            real = self._real(fullname)
            return importlib.util.find_spec(real).loader.get_code(real)

    if not any(getattr(f, "_tilepass_alias", None) == old for f in sys.meta_path):
        finder = _Alias()
        finder._tilepass_alias = old  # type: ignore[attr-defined]
        sys.meta_path.insert(0, finder)
    sys.modules[old] = importlib.import_module(new)
