"""Shared pytest fixtures: `pool`, a thread pool of 1 and of 2 threads (every op test runs both)."""

import warnings

import pytest

# the same warning again when the interpreter exits (outside any test): see pyproject.toml's filterwarnings
warnings.filterwarnings("ignore", message="builtin type .* has no __module__ attribute", category=DeprecationWarning)

from encoder.graph import ThreadPool  # noqa: E402


@pytest.fixture(params=[1, 2], ids=["1thread", "2threads"])
def pool(request):
    return ThreadPool(request.param)
