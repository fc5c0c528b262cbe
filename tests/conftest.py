"""Shared pytest fixtures: `pool`, a thread pool of 1 and of 2 threads (every op test runs both)."""

import pytest

from encoder.graph import ThreadPool


@pytest.fixture(params=[1, 2], ids=["1thread", "2threads"])
def pool(request):
    return ThreadPool(request.param)
