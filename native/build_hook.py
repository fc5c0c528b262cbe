"""The Python build's steps for tilepass (setuptools; pyproject.toml names them under [tool.setuptools.cmdclass]
and reads VERSION from here).

- ``VERSION``: the TILEPASS_VERSION_MAJOR/MINOR/PATCH macros of include/tilepass.h, the one place the version
  is written (tp_version() returns the same string, the runtime reads the same header).
- ``BuildPy``: after the Python files, builds libtilepass.so with the Makefile's ``lib`` target (the system C
  compiler, the Makefile's flags; the Makefile first runs native/tokenizer/gen_unicode.py with this Python
  (``PYTHON=``) into build/gen/: the tokenizer's Unicode tables, from this Python's unicodedata) and puts it in
  the package with the public header:
  ``tilepass/lib/libtilepass.so``, ``tilepass/include/tilepass.h``. A machine without a C compiler or make gets
  one clear message instead of a compiler traceback. Editable installs (``pip install -e .``, the checkout's
  .venv) skip this: the runtime then loads the checkout's build/libtilepass.so, which ``make lib`` keeps fresh.
  It also writes the deprecated ``encoder`` and ``convert`` import aliases of ``tilepass``/``tilepass.convert``
  (kept for one release).
- ``Sdist``: the C sources, the header, the Makefile, the generator of the Unicode tables and this file go into
  the source distribution, so that a wheel builds from it.
- ``BdistWheel``: the wheel holds a native library, so it is tagged for the platform (``py3-none-<platform>``:
  the library is loaded with cffi's ABI mode, so it does not depend on the Python version).
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

from setuptools.command.build_py import build_py as _build_py
from setuptools.command.sdist import sdist as _sdist
from setuptools.errors import CompileError

try:  # setuptools >= 70.1 has its own; older ones take it from the `wheel` package
    from setuptools.command.bdist_wheel import bdist_wheel as _bdist_wheel
except ImportError:  # pragma: no cover
    from wheel.bdist_wheel import bdist_wheel as _bdist_wheel  # type: ignore[no-redef]

ROOT = Path(__file__).resolve().parents[1]
HEADER = ROOT / "include" / "tilepass.h"
PACKAGE = "tilepass"


def read_version(header: Path = HEADER) -> str:
    """"MAJOR.MINOR.PATCH" from the header's TILEPASS_VERSION_* macros."""
    text = header.read_text()
    parts = []
    for key in ("MAJOR", "MINOR", "PATCH"):
        m = re.search(rf"^#define\s+TILEPASS_VERSION_{key}\s+(\d+)\s*$", text, re.M)
        if m is None:
            raise ValueError(f"{header}: no #define TILEPASS_VERSION_{key}")
        parts.append(m.group(1))
    return ".".join(parts)


VERSION = read_version()

NO_COMPILER = """\
tilepass: cannot build libtilepass.so: {what}.
  tilepass is a C library with a Python binding; pip builds the library from its C sources with the
  system C compiler and make (`make lib`). Install them and run the install again:
    Debian/Ubuntu: apt-get install build-essential      Fedora/RHEL: dnf install gcc make
    Alpine: apk add build-base                          macOS: xcode-select --install
  (CC=... chooses another compiler.)"""


def check_toolchain(env: dict[str, str] | None = None) -> tuple[str, list[str]]:
    """(make, the compiler command) found on PATH, or CompileError with NO_COMPILER's message."""
    env = dict(os.environ if env is None else env)
    make = env.get("MAKE") or "make"
    cc = shlex.split(env.get("CC") or "cc") or ["cc"]
    path = env.get("PATH")
    if shutil.which(cc[0], path=path) is None:
        raise CompileError(NO_COMPILER.format(what=f"no C compiler found (`{cc[0]}` is not on PATH)"))
    if shutil.which(make, path=path) is None:
        raise CompileError(NO_COMPILER.format(what=f"`{make}` is not on PATH"))
    return make, cc


def build_library(root: Path = ROOT) -> Path:
    """Run the Makefile's `lib` target in `root` (incremental: an up-to-date build/libtilepass.so is kept)."""
    make, _ = check_toolchain()
    jobs = str(max(1, os.cpu_count() or 1))
    # PYTHON: the interpreter that runs the build-time generator (native/tokenizer/gen_unicode.py -> build/gen/)
    cmd = [make, "-C", str(root), f"-j{jobs}", f"PYTHON={sys.executable}", "lib"]
    print("tilepass: building libtilepass.so: " + " ".join(cmd), flush=True)
    r = subprocess.run(cmd, check=False)
    if r.returncode != 0:
        raise CompileError(f"tilepass: `{' '.join(cmd)}` failed (exit status {r.returncode}): the compiler's "
                           "messages are above")
    lib = root / "build" / "libtilepass.so"
    if not lib.is_file():
        raise CompileError(f"tilepass: `make lib` did not produce {lib}")
    return lib


# The deprecated top-level import paths, for one release: `encoder` and `convert` (the checkout's folder names)
# resolve to `tilepass` and `tilepass.convert`, module for module (tilepass.__init__._deprecated_alias).
ALIASES = {"encoder": PACKAGE, "convert": f"{PACKAGE}.convert"}
ALIAS_SOURCE = '''"""Deprecated: the `{old}` import path is now `{new}`; this alias goes in the next release."""
from tilepass import _deprecated_alias

_deprecated_alias(__name__, "{new}")
'''


class BuildPy(_build_py):
    def run(self) -> None:
        editable = getattr(self, "editable_mode", False)
        if not editable:
            check_toolchain()  # first: a machine without a compiler is told so before anything is built
        super().run()
        if editable:
            return
        lib = build_library()
        pkg = Path(self.build_lib) / PACKAGE
        for src, dst in ((lib, pkg / "lib" / "libtilepass.so"), (HEADER, pkg / "include" / "tilepass.h")):
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src, dst)
            if src == lib:
                os.chmod(dst, 0o755)
        for old, new in ALIASES.items():
            init = Path(self.build_lib) / old / "__init__.py"
            init.parent.mkdir(parents=True, exist_ok=True)
            init.write_text(ALIAS_SOURCE.format(old=old, new=new))


class Sdist(_sdist):
    """Adds what `make lib` needs to the source distribution, and leaves out the test files setuptools picks by
    default (tests/test*.py without their helpers and fixtures: the test suite runs from a checkout)."""

    def make_release_tree(self, base_dir: str, files: list[str]) -> None:
        extra = ["Makefile", "include/tilepass.h", "native/build_hook.py"]
        for dirpath, _, names in os.walk(ROOT / "native"):
            for n in sorted(names):
                if n.endswith((".c", ".h")) or n == "gen_unicode.py":
                    extra.append(os.path.relpath(os.path.join(dirpath, n), ROOT))
        keep = {f for f in files if not f.replace(os.sep, "/").startswith("tests/")}
        super().make_release_tree(base_dir, sorted(keep | set(extra)))


class BdistWheel(_bdist_wheel):
    def finalize_options(self) -> None:
        # a native library inside: the package goes to platlib (the wheel's root), as with an extension module
        self.distribution.has_ext_modules = lambda: True  # type: ignore[method-assign]
        super().finalize_options()
        self.root_is_pure = False

    def get_tag(self) -> tuple[str, str, str]:
        _, _, plat = super().get_tag()
        return "py3", "none", plat
