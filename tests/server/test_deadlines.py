"""``Deadlines``: the one timer behind every proposal's ``request timed out``."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from raftkv import errors
from raftkv.server.deadlines import Deadlines


def test_a_future_still_waiting_at_its_deadline_gets_the_error() -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        deadlines = Deadlines(0.01, errors.ERR_TIMEOUT)
        waiting: asyncio.Future[Any] = loop.create_future()
        answered: asyncio.Future[Any] = loop.create_future()
        abandoned: asyncio.Future[Any] = loop.create_future()
        for fut in (waiting, answered, abandoned):
            deadlines.add(fut, loop)
        answered.set_result("ok")
        abandoned.cancel()
        with pytest.raises(errors.ERR_TIMEOUT) as caught:
            await asyncio.wait_for(waiting, 10)
        assert caught.value.message == "etcdserver: request timed out"
        assert answered.result() == "ok"  # answered in time: left alone
        assert abandoned.cancelled()
        assert deadlines.pending() == 0

    asyncio.run(main())


def test_later_requests_keep_their_own_deadline() -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        deadlines = Deadlines(0.05, errors.ERR_TIMEOUT)
        first: asyncio.Future[Any] = loop.create_future()
        deadlines.add(first, loop)
        with pytest.raises(errors.ERR_TIMEOUT):
            await asyncio.wait_for(first, 10)
        # Registered after the first expired: not failed by that expiry, only by its own.
        second: asyncio.Future[Any] = loop.create_future()
        second_deadline = deadlines.add(second, loop)
        assert not second.done()
        with pytest.raises(errors.ERR_TIMEOUT):
            await asyncio.wait_for(second, 10)
        assert loop.time() >= second_deadline

    asyncio.run(main())


def test_close_forgets_everything_and_fails_nothing() -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        deadlines = Deadlines(0.01, errors.ERR_TIMEOUT)
        fut: asyncio.Future[Any] = loop.create_future()
        deadlines.add(fut, loop)
        deadlines.close()
        other: asyncio.Future[Any] = loop.create_future()
        loop.call_later(0.05, other.set_result, None)
        await asyncio.wait_for(other, 10)  # well past the closed deadline
        assert not fut.done()
        assert deadlines.pending() == 0

    asyncio.run(main())
