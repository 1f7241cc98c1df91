"""Dynamic micro-batching: requests that arrive together run as one batch, each caller gets its own result.

One loop takes the first waiting item, gathers more until the batch holds `max_batch` or `max_wait_ms` has
passed since it started waiting, and runs the batch in the model's single thread (off the event loop); what
arrives while a batch runs is already waiting when it ends, so under load batches fill without waiting at all.
Admission is bounded: past `max_pending` requests in the server, `admit` refuses (the caller answers 503). The
loop does not wait for a batch to fill when no admitted request is still being read or decoded.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

Item = TypeVar("Item")
Result = TypeVar("Result")


@dataclass
class Batched(Generic[Result]):
    """One caller's result with how it was produced."""

    value: Result
    batch_size: int
    queue_s: float  # from submit until its batch started running
    run_s: float  # the batch's model time


class Overloaded(Exception):
    """More requests are in the server than it admits."""


@dataclass
class Ticket:
    """One admitted request; `submitted` once its item is queued."""

    submitted: bool = False


class MicroBatcher(Generic[Item, Result]):
    """Runs `run_batch(items) -> results` (same order) on batches of concurrently submitted items."""

    def __init__(
        self,
        run_batch: Callable[[Sequence[Item]], Sequence[Result]],
        executor: Executor,
        *,
        max_batch: int,
        max_wait_ms: float,
        max_pending: int,
        on_batch: Callable[[int, list[float], float], None] | None = None,
    ) -> None:
        if max_batch < 1 or max_wait_ms < 0 or max_pending < 1:
            raise ValueError(f"max_batch {max_batch}, max_wait_ms {max_wait_ms}, max_pending {max_pending}")
        self.run_batch, self.executor, self.on_batch = run_batch, executor, on_batch
        self.max_batch, self.max_wait, self.max_pending = max_batch, max_wait_ms / 1000, max_pending
        self.pending = 0  # admitted requests not yet answered (decoding, queued or running)
        self.arriving = 0  # admitted requests whose item is not queued yet (reading or decoding their upload)
        self.queue: asyncio.Queue[tuple[Item, asyncio.Future, float]] = asyncio.Queue()
        self.task: asyncio.Task | None = None

    @contextlib.contextmanager
    def admit(self) -> Iterator[Ticket]:
        """Hold one of the `max_pending` places for the length of a request, or raise Overloaded."""
        if self.pending >= self.max_pending:
            raise Overloaded
        self.pending += 1
        self.arriving += 1
        ticket = Ticket()
        try:
            yield ticket
        finally:
            self.pending -= 1
            if not ticket.submitted:
                self.arriving -= 1

    def start(self) -> None:
        """Start the batching loop on the running event loop."""
        self.task = asyncio.get_running_loop().create_task(self.loop())

    async def stop(self) -> None:
        """Finish what is queued, then stop the loop."""
        while not self.queue.empty() and self.task is not None and not self.task.done():
            await asyncio.sleep(0.005)
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task

    async def submit(self, item: Item, ticket: Ticket | None = None) -> Batched[Result]:
        """Queue one item (of the admitted request `ticket`) and wait for its result from the batch it runs in."""
        if ticket is not None and not ticket.submitted:
            ticket.submitted = True
            self.arriving -= 1
        future = asyncio.get_running_loop().create_future()
        self.queue.put_nowait((item, future, time.perf_counter()))
        return await future

    async def loop(self) -> None:
        """Form batches forever; a failing batch fails its callers, not the loop."""
        while True:
            batch = await self.gather()
            started = time.perf_counter()
            items = [item for item, _, _ in batch]
            try:
                results = await asyncio.get_running_loop().run_in_executor(self.executor, self.run_batch, items)
            except Exception as error:
                for _, future, _ in batch:
                    if not future.done():
                        future.set_exception(error)
                continue
            run_s = time.perf_counter() - started
            waits = [started - queued for _, _, queued in batch]
            if self.on_batch is not None:
                self.on_batch(len(batch), waits, run_s)
            for (_, future, _), result, wait in zip(batch, results, waits, strict=True):
                if not future.done():  # the caller may have gone (client disconnected)
                    future.set_result(Batched(result, len(batch), wait, run_s))

    async def gather(self) -> list[tuple[Item, asyncio.Future, float]]:
        """The next batch: the first item, then whatever else comes within max_wait, up to max_batch. It does not
        wait when no admitted request is still on its way (a lone caller pays no batching delay)."""
        batch = [await self.queue.get()]
        deadline = time.perf_counter() + self.max_wait
        while len(batch) < self.max_batch:
            if not self.queue.empty():
                batch.append(self.queue.get_nowait())
                continue
            left = deadline - time.perf_counter()
            if left <= 0 or self.arriving == 0:
                break
            try:
                batch.append(await asyncio.wait_for(self.queue.get(), left))
            except asyncio.TimeoutError:
                break
        return batch


def describe(batched: Batched[Any]) -> dict[str, Any]:
    """What a response says about its batch."""
    return {
        "size": batched.batch_size,
        "queue_ms": round(batched.queue_s * 1000, 2),
        "model_ms": round(batched.run_s * 1000, 2),
    }
