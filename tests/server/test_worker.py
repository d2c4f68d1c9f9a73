"""SerialWorker: blocking calls run in one thread, in order, results back on the loop."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from raftkv.server.worker import SerialWorker


def test_calls_run_in_order_in_one_other_thread() -> None:
    async def main() -> tuple[list[int], set[int], list[int]]:
        worker = SerialWorker("test-worker")
        done: list[int] = []
        threads: set[int] = set()

        def job(i: int) -> int:
            threads.add(threading.get_ident())
            time.sleep(0.002 * (5 - i))  # earlier jobs are slower: order must still hold
            done.append(i)
            return i * 10

        results = await asyncio.gather(*(worker.run(job, i) for i in range(5)))
        worker.close()
        return done, threads, list(results)

    done, threads, results = asyncio.run(main())
    assert done == [0, 1, 2, 3, 4]
    assert results == [0, 10, 20, 30, 40]
    assert len(threads) == 1 and threading.get_ident() not in threads


def test_an_exception_reaches_the_caller_and_the_worker_goes_on() -> None:
    async def main() -> int:
        worker = SerialWorker("test-worker")

        def boom() -> None:
            raise OSError(5, "I/O error")

        with pytest.raises(OSError, match="I/O error"):
            await worker.run(boom)
        value = await worker.run(lambda: 7)
        worker.close()
        with pytest.raises(RuntimeError, match="closed"):
            worker.run(lambda: 8)
        return value

    assert asyncio.run(main()) == 7


def test_a_cancelled_wait_lets_the_call_finish() -> None:
    async def main() -> list[str]:
        worker = SerialWorker("test-worker")
        trace: list[str] = []
        release = threading.Event()

        def slow() -> None:
            release.wait(5)
            trace.append("slow finished")

        fut = worker.run(slow)
        fut.cancel()
        release.set()
        await worker.run(lambda: trace.append("next ran"))
        worker.close()
        return trace

    assert asyncio.run(main()) == ["slow finished", "next ran"]
