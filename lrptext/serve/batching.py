"""Concurrent requests merged into one pass through the kernels.

Every request becomes a job: a key (what it asks: model, composite, method, labels), its inputs, a `prepare` that
checks them and a `run` that explains prepared inputs. One worker thread does all the computing, so the kernels
never compete for the cores; while it computes, new jobs queue. When it is free it takes the oldest job and, with
batching on, every queued job with the same key, up to `max_items` inputs, and explains them in one `run`.
Nothing waits for a batch to fill: a lone request is explained at once, and batches form only under load.

A job's inputs are prepared one job at a time, so a bad document fails its own request only. Should a merged
`run` fail all the same, each of its jobs is run again alone and gets its own result or error."""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable, Hashable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

logger = logging.getLogger("lrptext.serve")


class Busy(RuntimeError):
    """Too much is queued already: the client should retry later (503)."""


class TooSlow(RuntimeError):
    """A job did not finish within its time limit (503)."""


@dataclass
class Job:
    key: Hashable
    items: list[Any]
    prepare: Callable[[list[Any]], list[Any]]
    run: Callable[[list[Any]], list[Any]]
    future: asyncio.Future
    prepared: list[Any] | None = None
    results: list[Any] | None = None
    error: BaseException | None = None


@dataclass
class Stats:
    batches: int = 0     # passes through `run`
    jobs: int = 0        # jobs answered (with a result or an error)
    items: int = 0       # inputs explained
    largest: int = 0     # the most jobs merged into one pass


@dataclass
class Batcher:
    enabled: bool = True
    max_items: int = 64          # inputs per merged pass
    max_queued: int = 2048       # queued inputs before submit() raises Busy
    timeout_s: float = 30.0      # a job's time from submit() to its result before it raises TooSlow
    stats: Stats = field(default_factory=Stats)

    def __post_init__(self) -> None:
        self._queue: deque[Job] = deque()
        self._queued_items = 0
        self._wake: asyncio.Event | None = None
        self._worker: asyncio.Task | None = None
        self._executor: ThreadPoolExecutor | None = None

    async def start(self) -> None:
        self._wake = asyncio.Event()
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="lrptext-explain")
        self._worker = asyncio.get_running_loop().create_task(self._work())

    async def stop(self) -> None:
        if self._worker is not None:
            self._worker.cancel()
            try:
                await self._worker
            except asyncio.CancelledError:
                pass
        if self._executor is not None:
            self._executor.shutdown(wait=True)
        for job in self._queue:
            if not job.future.done():
                job.future.set_exception(Busy("the server is shutting down"))
        self._queue.clear()

    async def submit(self, key: Hashable, items: list[Any], prepare: Callable[[list[Any]], list[Any]],
                     run: Callable[[list[Any]], list[Any]]) -> list[Any]:
        """The results of `run` for `items` (one each), computed alone or with other jobs of the same key."""
        if self._worker is None:
            raise RuntimeError("the batcher is not started (the application's lifespan starts it)")
        if self._queued_items + len(items) > self.max_queued:
            raise Busy(f"{self._queued_items} inputs are waiting already (at most {self.max_queued}); retry later")
        job = Job(key, list(items), prepare, run, asyncio.get_running_loop().create_future())
        self._queue.append(job)
        self._queued_items += len(job.items)
        self._wake.set()
        try:
            return await asyncio.wait_for(asyncio.shield(job.future), self.timeout_s)
        except asyncio.TimeoutError:
            job.future.cancel()  # not computed if it is still queued
            raise TooSlow(f"the request took longer than the server's limit of {self.timeout_s:g} s; send fewer "
                          "or shorter documents") from None

    async def _work(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._queue:
                batch = self._take()
                if batch:
                    await loop.run_in_executor(self._executor, self._compute, batch)
                    for job in batch:
                        self._answer(job)

    def _take(self) -> list[Job]:
        """The oldest job that is still wanted and, with batching, the queued jobs of its key that fit with it."""
        first = self._pop()
        if first is None:
            return []
        batch, size = [first], len(first.items)
        if self.enabled:
            rest = deque()
            while self._queue:
                job = self._queue.popleft()
                if job.key == first.key and size + len(job.items) <= self.max_items and not job.future.done():
                    batch.append(job)
                    size += len(job.items)
                    self._queued_items -= len(job.items)
                else:
                    rest.append(job)
            self._queue = rest
        return batch

    def _pop(self) -> Job | None:
        while self._queue:
            job = self._queue.popleft()
            self._queued_items -= len(job.items)
            if not job.future.done():  # a job whose client gave up is dropped
                return job
        return None

    def _compute(self, batch: list[Job]) -> None:
        """In the worker thread: prepare each job, then one `run` over the inputs of those that are ready."""
        for job in batch:
            try:
                job.prepared = job.prepare(job.items)
            except Exception as error:  # the job's own fault: answered alone
                job.error = error
        ready = [job for job in batch if job.error is None]
        if not ready:
            return
        try:
            results = ready[0].run([x for job in ready for x in job.prepared])
        except Exception as error:
            if len(ready) == 1:
                ready[0].error = error
                return
            logger.warning("a merged pass of %d requests failed (%s); running them one by one", len(ready), error)
            for job in ready:
                self._run_alone(job)
            return
        self._record(ready)
        start = 0
        for job in ready:
            job.results, start = results[start: start + len(job.prepared)], start + len(job.prepared)

    def _run_alone(self, job: Job) -> None:
        try:
            job.results = job.run(job.prepared)
        except Exception as error:
            job.error = error
            return
        self._record([job])

    def _record(self, jobs: list[Job]) -> None:
        self.stats.batches += 1
        self.stats.items += sum(len(job.items) for job in jobs)
        self.stats.largest = max(self.stats.largest, len(jobs))

    def _answer(self, job: Job) -> None:
        self.stats.jobs += 1
        if job.future.done():
            return
        if job.error is not None:
            job.future.set_exception(job.error)
        else:
            job.future.set_result(job.results)

    @property
    def queued(self) -> int:
        return self._queued_items
