"""tilepass installed as a library: the sdist, the wheel pip builds from it (libtilepass.so compiled by `make lib`
with the system compiler, shipped in the package with tilepass.h), installed into a fresh virtualenv outside the
checkout, without torch, and used from another directory: the console scripts, the Python API, a C program built
against the installed header and library. Also: every version is the header's; a missing or mismatched library,
or a machine without a C compiler, is one clear message; TILEPASS_LIB wins over the packaged library; the old
`encoder`/`convert` import paths are deprecated aliases once installed (and do not warn in the checkout).

The run-time dependencies of the fresh venv come from a folder installed once per dependency list
(~/.cache/tilepass-tests/install/), put on the venv's path with a .pth file; the wheel itself is built and installed anew
every run. About a minute on 2 cores (the library's compile is most of it), plus ~15 s the first time.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import tarfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

import gguf
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
import reference_models as rm  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
HEADER = ROOT / "include" / "tilepass.h"
# outside the checkout: the installed package must import with nothing of the checkout on sys.path
CACHE = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "tilepass-tests" / "install"
FIXTURE = ROOT.parent / "shared" / "fixtures" / "llamacpp-tiny-v1"
PAGE = ROOT / "examples" / "page.png"
RUNTIME = {"numpy", "gguf", "safetensors", "cffi", "tokenizers", "pillow", "pypdfium2"}
# rows of 256: the text file's matrices take Q4_K, made by the native quantisers through the installed package
DIMS = rm.OcrDims(vocab_size=1024, text_hidden=256, text_heads=2, text_kv_heads=2, text_ffn=256, moe_ffn=128,
                  n_experts=4)
_DROP_ENV = ("PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP", "PYTHONWARNINGS", "TILEPASS_LIB", "VIRTUAL_ENV",
             "LD_PRELOAD", "ASAN_OPTIONS", "UBSAN_OPTIONS")


def header_version() -> str:
    text = HEADER.read_text()
    return ".".join(re.search(rf"^#define TILEPASS_VERSION_{k} (\d+)$", text, re.M).group(1)
                    for k in ("MAJOR", "MINOR", "PATCH"))


VERSION = header_version()


def run(cmd, *, cwd: Path, env: dict | None = None, check: bool = True, timeout: float = 300):
    p = subprocess.run([str(c) for c in cmd], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    if check and p.returncode != 0:
        raise AssertionError(f"{' '.join(map(str, cmd))} exited {p.returncode}\n--- stdout\n{p.stdout[-3000:]}\n"
                             f"--- stderr\n{p.stderr[-5000:]}")
    return p


def clean_env(venv: Path | None = None, **extra: str) -> dict:
    """The environment of a user's shell: nothing of the test run's (no PYTHONPATH, no TILEPASS_LIB, no
    sanitizer preload), the venv's bin/ first on PATH."""
    env = {k: v for k, v in os.environ.items() if k not in _DROP_ENV}
    if venv is not None:
        env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
        env["VIRTUAL_ENV"] = str(venv)
    env.update(extra)
    return env


@dataclass
class Dists:
    sdist: Path
    wheel: Path


@dataclass
class Venv:
    path: Path
    site: Path
    work: Path  # a directory outside the checkout, the cwd of every command

    @property
    def python(self) -> Path:
        return self.path / "bin" / "python"

    def bin(self, name: str) -> Path:
        return self.path / "bin" / name

    def env(self, **extra: str) -> dict:
        return clean_env(self.path, **extra)

    def py(self, code: str, *args, env: dict | None = None, check: bool = True):
        return run([self.python, "-c", code, *args], cwd=self.work, env=env or self.env(), check=check)


@pytest.fixture(scope="module")
def dists(tmp_path_factory) -> Dists:
    out = tmp_path_factory.mktemp("dist")
    # the sdist through setuptools' PEP 517 hook (this venv's setuptools satisfies build-system.requires)
    p = run([sys.executable, "-c", "import sys; from setuptools import build_meta as b; print(b.build_sdist(sys.argv[1]))",
             out], cwd=ROOT, env=clean_env())
    sdist = out / p.stdout.strip().splitlines()[-1]
    # the wheel from the sdist, as pip builds it: an isolated build env, `make lib` in the unpacked sources
    run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-w", out, sdist], cwd=out, env=clean_env(), timeout=600)
    return Dists(sdist, next(out.glob("tilepass-*.whl")))


def runtime_requirements(wheel: Path) -> list[str]:
    with zipfile.ZipFile(wheel) as z:
        meta = z.read(next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))).decode()
    return sorted(line.split(":", 1)[1].strip() for line in meta.splitlines()
                  if line.startswith("Requires-Dist:") and "extra ==" not in line)


def runtime_deps_dir(requirements: list[str]) -> Path:
    """The run-time dependencies installed once (pip --target) per requirement list and Python version."""
    key = hashlib.sha256(json.dumps([sys.version_info[:2], requirements]).encode()).hexdigest()[:16]
    d = CACHE / f"deps-{key}"
    if not (d / ".complete").exists():
        tmp = CACHE / f"deps-{key}.tmp{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        run([sys.executable, "-m", "pip", "install", "-q", "--target", tmp, *requirements], cwd=ROOT, env=clean_env(),
            timeout=600)
        (tmp / ".complete").write_text("\n".join(requirements) + "\n")
        shutil.rmtree(d, ignore_errors=True)
        tmp.rename(d)
    return d


@pytest.fixture(scope="module")
def venv(dists, tmp_path_factory) -> Venv:
    base = tmp_path_factory.mktemp("user")
    v = base / "venv"
    run([sys.executable, "-m", "venv", "--without-pip", v], cwd=base, env=clean_env())
    site = Path(run([v / "bin" / "python", "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                    cwd=base, env=clean_env()).stdout.strip())
    deps = runtime_deps_dir(runtime_requirements(dists.wheel))
    (site / "runtime-deps.pth").write_text(f"{deps}\n")
    run([sys.executable, "-m", "pip", "--python", v / "bin" / "python", "install", "-q", "--no-deps", dists.wheel],
        cwd=base, env=clean_env())
    work = base / "elsewhere"
    work.mkdir()
    return Venv(v, site, work)


# ---- the distributions ---------------------------------------------------------------------------------------
def test_sdist_holds_what_make_lib_needs(dists):
    with tarfile.open(dists.sdist) as t:
        names = {n.split("/", 1)[1] for n in t.getnames() if "/" in n}
    want = {"Makefile", "pyproject.toml", "include/tilepass.h", "native/build_hook.py", "encoder/native.py",
            "convert/cli.py"}
    want |= {str(p.relative_to(ROOT)) for p in (ROOT / "native").rglob("*") if p.suffix in (".c", ".h")}
    want.add("native/tokenizer/gen_unicode.py")  # the tokenizer's Unicode tables are generated by make lib
    assert want <= names, sorted(want - names)
    assert not any(n.startswith("tests/") for n in names)


def test_wheel_holds_the_library_and_the_header(dists):
    plat = sysconfig.get_platform().replace("-", "_").replace(".", "_")
    assert dists.wheel.name == f"tilepass-{VERSION}-py3-none-{plat}.whl"
    with zipfile.ZipFile(dists.wheel) as z:
        names = set(z.namelist())
        assert z.read("tilepass/include/tilepass.h") == HEADER.read_bytes()
        wheel_meta = z.read(f"tilepass-{VERSION}.dist-info/WHEEL").decode()
        meta = z.read(f"tilepass-{VERSION}.dist-info/METADATA").decode()
    assert {"tilepass/lib/libtilepass.so", "tilepass/__init__.py", "tilepass/native.py", "tilepass/cli.py",
            "tilepass/convert/__init__.py", "tilepass/convert/cli.py", "tilepass/convert/models/deepseek_ocr.py",
            "encoder/__init__.py", "convert/__init__.py"} <= names
    assert "Root-Is-Purelib: false" in wheel_meta
    assert re.search(rf"^Version: {re.escape(VERSION)}$", meta, re.M)
    reqs = runtime_requirements(dists.wheel)
    assert {re.split(r"[<>=!~ ;]", r)[0].lower() for r in reqs} == RUNTIME, reqs
    extras = [ln for ln in meta.splitlines() if ln.startswith("Requires-Dist:") and "extra ==" in ln]
    assert any("torch" in ln for ln in extras) and any("transformers" in ln for ln in extras)


# ---- the installed package, used from elsewhere ------------------------------------------------------------
API_SNIPPET = r"""
import importlib.util, json, sys
root = sys.argv[1]
assert not any(p and (p == root or p.startswith(root + "/")) for p in sys.path), sys.path
assert importlib.util.find_spec("torch") is None and importlib.util.find_spec("transformers") is None
import tilepass
from tilepass import OcrPipeline, TextModel, VisionEncoder
import tilepass.native as native
vision = VisionEncoder(sys.argv[2], n_threads=2)
views = vision.encode([sys.argv[4]], mode="tiny")
text = TextModel(sys.argv[3], n_threads=2)
pipe = OcrPipeline(sys.argv[3], sys.argv[2], n_threads=2)
prepared = pipe.prepare([sys.argv[4]], "tiny")
embd, _ = pipe.encode(prepared)
page = pipe.run_page("page", prepared[0], embd[0], "<image>\nFree OCR.", 4)
print(json.dumps({"file": tilepass.__file__, "lib": str(native.LIBRARY), "origin": tilepass.library_path()[1],
                  "include": tilepass.get_include(), "tokens": list(views[0].shape), "n_embd": text.info.n_embd,
                  "family": vision.family, "page": type(page).__name__}))
"""


@pytest.fixture(scope="module")
def converted(venv, tmp_path_factory) -> tuple[Path, Path]:
    """convert-hf-to-gguf of the installed package, run from elsewhere on a synthetic checkpoint (no torch)."""
    d = tmp_path_factory.mktemp("model")
    model = rm.build_synthetic_ocr(d / "ckpt", DIMS, n_shards=2)
    text, vision = d / "text-q4_k.gguf", d / "mmproj-f16.gguf"
    conv = venv.bin("convert-hf-to-gguf")
    run([conv, model, "--outtype", "q4_k", "--outfile", text, "--no-progress"], cwd=venv.work, env=venv.env())
    run([conv, model, "--mmproj", "--outtype", "f16", "--outfile", vision, "--no-progress"], cwd=venv.work,
        env=venv.env())
    return text, vision


def test_converter_console_script(converted):
    text, vision = converted
    for path in (text, vision):
        r = gguf.GGUFReader(path)
        assert r.fields["tilepass.writer_version"].contents() == VERSION, path
    types = {t.tensor_type for t in gguf.GGUFReader(text).tensors}
    assert gguf.GGMLQuantizationType.Q4_K in types  # the native quantisers, loaded from the installed package


def test_cli_console_script(venv, converted, tmp_path):
    text, vision = converted
    out = tmp_path / "page.md"
    p = run([venv.bin("tilepass-cli"), "-m", text, "--mmproj", vision, "--image", PAGE, "--mode", "tiny", "-n", "4",
             "-t", "2", "-o", out], cwd=venv.work, env=venv.env(), check=False)
    assert p.returncode in (0, 3), p.stderr  # 3: random weights stop at -n
    assert out.exists() and "Traceback" not in p.stderr and "done in" in p.stderr


@pytest.mark.skipif(not (FIXTURE / "text-f16.gguf").exists(), reason="no ../shared/fixtures/llamacpp-tiny-v1")
def test_cli_on_the_llamacpp_fixture_pair(venv):
    p = run([venv.bin("tilepass-cli"), "-m", FIXTURE / "text-f16.gguf", "--mmproj", FIXTURE / "mmproj-f32.gguf",
             "--image", PAGE, "-n", "4", "-t", "2", "--json"], cwd=venv.work, env=venv.env(), check=False)
    assert p.returncode in (0, 3), p.stderr
    assert json.loads(p.stdout)  # the page's JSON document


def test_python_api(venv, converted):
    text, vision = converted
    info = json.loads(venv.py(API_SNIPPET, ROOT, vision, text, PAGE).stdout)
    pkg = venv.site / "tilepass"
    assert Path(info["file"]) == pkg / "__init__.py"
    assert Path(info["lib"]) == pkg / "lib" / "libtilepass.so" and info["origin"] == "package"
    assert Path(info["include"]) == pkg / "include"
    assert info["family"] == "deepseek_ocr" and info["tokens"][1] == info["n_embd"] == DIMS.text_hidden
    assert info["page"] == "PageResult"


def test_server_without_its_extra_is_one_clear_line(venv, tmp_path):
    """The wheel's runtime dependencies have no FastAPI / uvicorn: tilepass-server says how to get them."""
    p = run([venv.bin("tilepass-server"), "-m", tmp_path / "t.gguf", "--mmproj", tmp_path / "v.gguf"], cwd=venv.work,
            env=venv.env(), check=False)
    assert p.returncode == 1 and "Traceback" not in p.stderr
    assert p.stderr.startswith("tilepass-server: error: the server needs FastAPI and uvicorn")
    assert "pip install 'tilepass[server]'" in p.stderr


def test_batch_ray_without_its_extra_is_one_clear_line(venv, converted, tmp_path):
    """The wheel's runtime dependencies have no Ray: tilepass-batch --ray says which extra brings it, before any
    work (no output directory made)."""
    text, vision = converted
    p = run([venv.bin("tilepass-batch"), "-m", text, "--mmproj", vision, PAGE, "-o", tmp_path / "out", "--ray"],
            cwd=venv.work, env=venv.env(), check=False)
    assert p.returncode == 1 and "Traceback" not in p.stderr and len(p.stderr.splitlines()) == 1, p.stderr
    assert p.stderr.startswith("tilepass-batch: error: --ray needs Ray Data")
    assert "pip install 'tilepass[ray]'" in p.stderr
    assert not (tmp_path / "out").exists()


def test_versions_agree(venv, tmp_path):
    """The CLIs, the package metadata, the modules, tp_version() and TILEPASS_VERSION: all the header's."""
    assert run([venv.bin("tilepass-cli"), "--version"], cwd=venv.work, env=venv.env()).stdout.strip() == \
        f"tilepass-cli {VERSION}"
    assert run([venv.bin("convert-hf-to-gguf"), "--version"], cwd=venv.work, env=venv.env()).stdout.strip() == \
        f"convert-hf-to-gguf {VERSION}"
    assert run([venv.bin("tilepass-server"), "--version"], cwd=venv.work, env=venv.env()).stdout.strip() == \
        f"tilepass-server {VERSION}"
    assert run([venv.bin("tilepass-batch"), "--version"], cwd=venv.work, env=venv.env()).stdout.strip() == \
        f"tilepass-batch {VERSION}"
    got = json.loads(venv.py(
        "import importlib.metadata as m, json, tilepass, tilepass.convert, tilepass.native as n; "
        "print(json.dumps([tilepass.__version__, tilepass.convert.__version__, m.version('tilepass'), n.VERSION, "
        "n.ffi.string(n.lib.tp_version()).decode(), tilepass.get_include(), tilepass.get_lib()]))").stdout)
    assert got[:5] == [VERSION] * 5, got
    # a C program built against the installed header and library, as tilepass.get_include()/get_lib() give them
    src = tmp_path / "v.c"
    src.write_text('#include <stdio.h>\n#include <string.h>\n#include "tilepass.h"\nint main(void) {\n'
                   '    printf("%s %s\\n", TILEPASS_VERSION, tp_version());\n'
                   '    return strcmp(TILEPASS_VERSION, tp_version()) != 0;\n}\n')
    cc = os.environ.get("CC", "cc")
    run([cc, "-std=c11", f"-I{got[5]}", src, f"-L{got[6]}", "-ltilepass", f"-Wl,-rpath,{got[6]}", "-o",
         tmp_path / "v"], cwd=tmp_path, env=clean_env())
    assert run([tmp_path / "v"], cwd=venv.work, env=clean_env()).stdout.split() == [VERSION, VERSION]


def _fake_library(tmp_path: Path, version: str) -> Path:
    src = tmp_path / "fake.c"
    src.write_text(f'const char *tp_version(void) {{ return "{version}"; }}\n')
    lib = tmp_path / "libtilepass.so"
    run([os.environ.get("CC", "cc"), "-shared", "-fPIC", src, "-o", lib], cwd=tmp_path, env=clean_env())
    return lib


def test_library_errors_are_one_clear_line(venv, tmp_path):
    cli = [venv.bin("tilepass-cli"), "-m", "t.gguf", "--mmproj", "v.gguf", "--image", PAGE]
    (venv.work / "t.gguf").write_bytes(b"")
    (venv.work / "v.gguf").write_bytes(b"")

    def cli_error(env: dict) -> str:
        p = run(cli, cwd=venv.work, env=env, check=False)
        assert p.returncode == 1 and "Traceback" not in p.stderr, p.stderr
        lines = p.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("tilepass-cli: error: libtilepass "), p.stderr
        return lines[0]

    # TILEPASS_LIB naming no file
    assert "does not exist" in cli_error(venv.env(TILEPASS_LIB=str(tmp_path / "none.so")))
    # a library of another version: the CLI and the Python API refuse it, naming both files
    fake = _fake_library(tmp_path, "0.0.0-other")
    line = cli_error(venv.env(TILEPASS_LIB=str(fake)))
    assert "version mismatch" in line and str(fake) in line and "0.0.0-other" in line and VERSION in line
    p = venv.py("import tilepass.native", env=venv.env(TILEPASS_LIB=str(fake)), check=False)
    assert p.returncode == 1 and "tilepass.LibraryError: libtilepass version mismatch" in p.stderr, p.stderr
    p = venv.py("import tilepass\ntry:\n    from tilepass import VisionEncoder\nexcept ImportError as e:\n"
                "    print(type(e).__name__, isinstance(e, tilepass.LibraryError))",
                env=venv.env(TILEPASS_LIB=str(fake)))
    assert p.stdout.split() == ["LibraryError", "True"]
    # a file that is not libtilepass
    not_lib = tmp_path / "not.so"
    not_lib.write_text("not a library")
    assert "cannot be loaded" in cli_error(venv.env(TILEPASS_LIB=str(not_lib)))
    # TILEPASS_LIB wins over the packaged library (the sanitizer runs rely on it)
    other = tmp_path / "other" / "libtilepass.so"
    other.parent.mkdir()
    packaged = venv.site / "tilepass" / "lib" / "libtilepass.so"
    shutil.copyfile(packaged, other)
    p = venv.py("import tilepass, tilepass.native as n; print(n.LIBRARY, tilepass.library_path()[1])",
                env=venv.env(TILEPASS_LIB=str(other)))
    assert p.stdout.split() == [str(other), "TILEPASS_LIB"]
    # the package's own library gone: reinstall, says the message
    hidden = packaged.with_name("hidden.so")
    packaged.rename(hidden)
    try:
        line = cli_error(venv.env())
        assert "not found" in line and str(packaged) in line and "reinstall" in line
    finally:
        hidden.rename(packaged)


def test_no_c_compiler_is_one_clear_message(dists, tmp_path):
    """A machine without cc (nor make): the build says so and how to get one, without a traceback."""
    env = clean_env()
    env.pop("CC", None)
    env["PATH"] = str(Path(sys.executable).parent)  # this venv's python and pip, no compiler
    p = run([sys.executable, "-m", "pip", "wheel", "--no-build-isolation", "--no-deps", "-w", tmp_path, dists.sdist],
            cwd=tmp_path, env=env, check=False)
    out = p.stdout + p.stderr
    assert p.returncode != 0 and not list(tmp_path.glob("*.whl"))
    assert "no C compiler found" in out and "apt-get install build-essential" in out, out[-3000:]
    assert "Traceback" not in out, out[-3000:]


def test_old_import_paths_are_deprecated_aliases(venv):
    """Installed, `encoder` and `convert` are `tilepass` and `tilepass.convert` (the same modules, one library),
    with a DeprecationWarning for a user's import and none for the package's own use."""
    code = r"""
import json, sys, warnings
def deprecations(w):
    return [str(x.message) for x in w if issubclass(x.category, DeprecationWarning) and "import path" in str(x.message)]
with warnings.catch_warnings(record=True) as w:
    warnings.simplefilter("always")
    import tilepass.convert.native_quant as nq
    ok = nq.available()  # the converter's K-quants import encoder.native: through the alias, silently
internal = deprecations(w)
with warnings.catch_warnings(record=True) as w:
    warnings.simplefilter("always")
    import convert
user = deprecations(w)
import encoder, encoder.native, tilepass, tilepass.native
print(json.dumps({"ok": ok, "internal": internal, "user": user, "same": encoder is tilepass and
                  encoder.native is tilepass.native and convert is tilepass.convert}))
"""
    got = json.loads(venv.py(code).stdout)
    assert got["ok"] and got["same"] and got["internal"] == [], got
    assert len(got["user"]) == 1 and "`tilepass.convert`" in got["user"][0], got
    assert run([venv.python, "-m", "convert", "--version"], cwd=venv.work, env=venv.env()).stdout.strip() == \
        f"convert-hf-to-gguf {VERSION}"


def test_checkout_packages_do_not_warn():
    """In the checkout (the test suite's imports), `encoder` and `convert` are the real packages: no warning."""
    code = ("import warnings\nwith warnings.catch_warnings(record=True) as w:\n    warnings.simplefilter('always')\n"
            "    import encoder, encoder.native, encoder.cli, convert, convert.cli, convert.native_quant\n"
            "print(sum(issubclass(x.category, DeprecationWarning) and 'import path' in str(x.message) for x in w), "
            "encoder.__file__)")
    p = run([sys.executable, "-c", code], cwd=ROOT, env=clean_env())
    n, path = p.stdout.split()
    assert n == "0" and Path(path) == ROOT / "encoder" / "__init__.py"
