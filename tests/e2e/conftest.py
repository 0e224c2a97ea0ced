"""A running stack (gateway and worker processes on PostgreSQL and Redis) per test module."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.stack import Stack, make_stack, redis_broker_url


@pytest.fixture(scope="module")
def stack(postgresql_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    s = make_stack(tmp_path_factory.mktemp("stack"), postgresql_url, redis_broker_url())
    s.start_gateway()
    s.start_worker()
    yield s
    s.close()
