"""``tilepass-batch`` and its Python API: documents -> tilepass-cli's output directory, the pages decoded in this
process or by a pool of Ray actors (``pip install tilepass[ray]``)::

    from tilepass.batch import ModelSettings, run_batch
    summary = run_batch(["scans/"], "out/", ModelSettings("text.gguf", "mmproj.gguf"), use_ray=True)

driver.py runs it (the checks, the manifest, the files), work.py renders and decodes pages, raypool.py puts
the decoders in Ray actors, cli.py is the command line."""

from .driver import BatchSummary, Log, run_batch
from .raypool import RayMissing
from .settings import BatchError, ModelSettings

__all__ = ["BatchError", "BatchSummary", "Log", "ModelSettings", "RayMissing", "run_batch"]
