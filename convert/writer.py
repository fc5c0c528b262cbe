"""Streaming GGUF output: header, KV pairs and tensor infos first, then each tensor's data row chunk
by row chunk, into a temporary file next to the target that is renamed only once complete.

The file gets the permissions ``open(outfile, "w")`` would give it (0o666 less the umask, or an existing
file's own), and a symlink at ``outfile`` is written through (its target replaced), not replaced."""
from __future__ import annotations

import os
import secrets
import stat
import sys
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import gguf
from gguf import GGUFValueType as VT

from .base import KV, TensorPlan
from .errors import ConversionError
from .quant_policy import quantize_rows


def _add_kv(w: gguf.GGUFWriter, kv: KV) -> None:
    if kv.vtype == VT.ARRAY and len(kv.value) == 0:
        return  # GGUF has no empty arrays (llama.cpp skips them too)
    w.add_key_value(kv.key, kv.value, kv.vtype, kv.sub_type)


def check_output_path(outfile: Path, force: bool) -> None:
    """Fail early (before any work) when the target cannot or must not be written."""
    if outfile.exists() and outfile.is_dir():
        raise ConversionError(outfile, "output path is a directory")
    if outfile.exists() and not force:
        raise ConversionError(outfile, "output file exists (use --force to overwrite)")
    parent = outfile.parent
    if not parent.exists():
        raise ConversionError(outfile, f"cannot write output: directory {parent} does not exist")
    if not parent.is_dir():
        raise ConversionError(outfile, f"cannot write output: {parent} is not a directory")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise ConversionError(outfile, f"cannot write output: directory {parent} is not writable")


def _link_target(path: Path) -> Path:
    """Where writing to path lands: a symlink's (final) target, else path itself."""
    return Path(os.path.realpath(path)) if path.is_symlink() else path


def _create_temp(tmp: Path, target: Path) -> None:
    """Create tmp (never an existing file) with the mode open(target, "w") would leave: 0o666 less the umask
    for a new file (tempfile.mkstemp would give 0o600), an existing target's own permission bits."""
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), 0o666)
    try:
        st = os.stat(target)
        if stat.S_ISREG(st.st_mode):
            os.fchmod(fd, stat.S_IMODE(st.st_mode) & 0o777)
    except FileNotFoundError:
        pass
    finally:
        os.close(fd)


def write_gguf(outfile: Path, arch: str, kv: Sequence[KV], tensors: Sequence[TensorPlan], *, force: bool = False,
               progress: bool | None = None, on_tensor: Callable[[TensorPlan], None] | None = None) -> None:
    """Write one GGUF file atomically (a ``<name>.tmp*`` file renamed at the end; removed on failure, on
    KeyboardInterrupt too, which is what the CLI turns SIGTERM and SIGHUP into)."""
    outfile = Path(outfile)
    check_output_path(outfile, force)
    target = _link_target(outfile)
    # the name is chosen before the file exists, so that an interruption at any point finds it to remove it
    tmp = target.parent / f"{target.name}.tmp{secrets.token_hex(4)}"
    try:
        _create_temp(tmp, target)
        _write(tmp, arch, kv, tensors, progress, on_tensor)
        if target.exists() and not force:  # appeared meanwhile
            raise ConversionError(outfile, "output file exists (use --force to overwrite)")
        os.replace(tmp, target)
    except BaseException as e:
        if not isinstance(e, FileExistsError):  # a FileExistsError: the random name was someone else's
            try:
                tmp.unlink()
            except FileNotFoundError:
                pass
        if isinstance(e, OSError):
            raise ConversionError(outfile, f"cannot write output: {e.strerror or e}") from None
        raise


def _write(tmp: Path, arch: str, kv: Sequence[KV], tensors: Sequence[TensorPlan], progress: bool | None,
           on_tensor: Callable[[TensorPlan], None] | None) -> None:
    w = gguf.GGUFWriter(tmp, arch)
    for item in kv:
        _add_kv(w, item)
    for t in tensors:
        # a non-uint8 dtype with raw_dtype keeps the logical shape as given
        w.add_tensor_info(t.name, t.shape, np.dtype(np.float32), t.nbytes, raw_dtype=t.qtype)
    w.write_header_to_file(tmp)
    w.write_kv_data_to_file()
    w.write_ti_data_to_file()
    assert w.fout is not None
    fout = w.fout[0]
    total = sum(t.source_bytes for t in tensors)
    if progress is None:
        progress = sys.stderr.isatty() and total > (256 << 20)
    bar = None
    if progress:
        from tqdm import tqdm
        bar = tqdm(total=total, unit="B", unit_scale=True, desc=tmp.name.split(".tmp")[0], file=sys.stderr,
                   leave=False)
    try:
        for t in tensors:
            w.write_padding(fout, fout.tell())
            written = 0
            done_src = 0
            for rows in t.iter_rows():
                data = quantize_rows(rows, t.qtype)
                fout.write(memoryview(np.ascontiguousarray(data)).cast("B"))
                written += data.nbytes
                if bar is not None:
                    step = rows.shape[0] * rows.shape[1] * (t.source_bytes / max(1, t.n_elements))
                    done_src += step
                    bar.update(step)
            if written != t.nbytes:
                raise ConversionError(t.sources[0].path if t.sources else None,
                                      f"tensor {t.name}: wrote {written} bytes, expected {t.nbytes}")
            w.write_padding(fout, t.nbytes)
            if on_tensor is not None:
                on_tensor(t)
        fout.flush()
        os.fsync(fout.fileno())
    finally:
        if bar is not None:
            bar.close()
        w.close()
