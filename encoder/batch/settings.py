"""What a batch run is asked to do: the model options of ``tilepass-cli`` (the same names and defaults, so that a
batch run and a CLI run with the same options write the same files), and how the work is spread."""

from __future__ import annotations

import argparse
import dataclasses
from dataclasses import dataclass
from typing import Any, Sequence


class BatchError(Exception):
    """A batch run that cannot start or go on; ``usage`` for a bad request (the CLI's exit status 2), else 1."""

    def __init__(self, message: str, usage: bool = False) -> None:
        super().__init__(message)
        self.usage = usage


@dataclass(frozen=True)
class ModelSettings:
    """tilepass-cli's model options (encoder/cli.py add_model_options), --dpi and --parallel."""

    model: str
    mmproj: str
    prompt: str | None = None
    task: str | None = None
    mode: str | None = None
    min_tiles: int | None = None
    max_tiles: int | None = None
    n_predict: int = 8192
    ctx_size: int = 0
    precision: str = "auto"
    kv_type: str = "auto"
    temp: float = 0.0
    top_k: int = 0
    top_p: float = 1.0
    seed: int | None = None
    no_repeat_ngram: int | None = None
    no_repeat_window: int | None = None
    no_repeat_scope: str = "generated"
    raw: bool = False
    dpi: float = 144.0
    parallel: int = 0  # pages decoded together in one process (0: the CLI's default for its threads)
    images_per_pass: int | None = None  # pages encoded in one vision pass (None: 4, or parallel if larger)

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> "ModelSettings":
        return cls(**{f.name: getattr(args, f.name) for f in dataclasses.fields(cls) if hasattr(args, f.name)})

    def namespace(self, inputs: Sequence[str], output: str, force: bool, threads: int | None = None,
                  quiet: bool = False) -> argparse.Namespace:
        """The argparse namespace tilepass-cli's helpers (encoder/cli.py) take for a document run into -o DIR."""
        ns: dict[str, Any] = dataclasses.asdict(self)
        ns.update(inputs=list(inputs), image=[], output=output, force=force, threads=threads, quiet=quiet,
                  stream=False, json=False, boxes=None, interrupt=None)
        return argparse.Namespace(**ns)


__all__ = ["BatchError", "ModelSettings"]
