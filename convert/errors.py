"""The one exception type of the converter."""
from __future__ import annotations

import os


class ConversionError(Exception):
    """A problem with the input or output that stops the conversion.

    ``path`` names the file concerned (config, shard, tokenizer, output) and ``problem`` says what is
    wrong with it; ``str(err)`` is ``"<path>: <problem>"``, the form the CLI prints.
    """

    def __init__(self, path: str | os.PathLike[str] | None, problem: str):
        self.path = str(path) if path is not None else None
        self.problem = problem
        super().__init__(f"{self.path}: {problem}" if self.path else problem)
