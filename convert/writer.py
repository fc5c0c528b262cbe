"""Streaming GGUF output: header, KV pairs and tensor infos first, then each tensor's data row chunk
by row chunk, into a temporary file next to the target that is renamed only once complete."""
from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import gguf
from gguf import GGUFValueType as VT

from .arch_deepseek_ocr import KV, TensorPlan
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


def write_gguf(outfile: Path, arch: str, kv: Sequence[KV], tensors: Sequence[TensorPlan], *, force: bool = False,
               progress: bool | None = None, on_tensor: Callable[[TensorPlan], None] | None = None) -> None:
    """Write one GGUF file atomically (a ``<name>.tmp*`` file renamed at the end; removed on failure)."""
    outfile = Path(outfile)
    check_output_path(outfile, force)
    try:
        fd, tmp_name = tempfile.mkstemp(prefix=outfile.name + ".tmp", dir=outfile.parent)
    except OSError as e:
        raise ConversionError(outfile, f"cannot write output: {e.strerror or e}") from None
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        _write(tmp, arch, kv, tensors, progress, on_tensor)
        if outfile.exists() and not force:  # appeared meanwhile
            raise ConversionError(outfile, "output file exists (use --force to overwrite)")
        os.replace(tmp, outfile)
    except BaseException as e:
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
