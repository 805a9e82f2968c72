"""Run blocking model work off the event loop, one step at a time, most urgent first.

Each model gets its own worker thread (`ModelThread`), which keeps the loop free and serialises
access to a model object that is not thread-safe. Work is cut into steps: `run()` is one step,
and `stream()` turns a blocking iterator (LLM tokens, TTS chunks) into an async iterator whose
every item is one step. Between steps the thread takes its most urgent pending work (by the
deadline of the call it serves, see `scheduler.Urgency`), so two calls' phrases interleave on a
shared voice instead of queueing whole, and before each step it takes a CPU lease from the
process's `ComputeScheduler`, so all models together never run more steps than there are cores.

Closing the async iterator (a cancelled turn) stops the stream before its next step, work
cancelled before it started never runs, and an exception inside a step is re-raised in the
caller. A stream with `max_ahead` unconsumed items waits without holding the thread.

A step that runs longer than the scheduler's `stuck_after_s` (a model hung in native code) makes
the model `stuck`: new work for it fails at once with `ModelStuck` (a clear turn error instead of
a wait), `stuck_models()` names it for /healthz, and the thread is a daemon, so the process can
still exit.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import threading
import weakref
from typing import AsyncIterator, Callable, Iterator, TypeVar

from .scheduler import ComputeScheduler, Urgency, clock, current_urgency, shared_scheduler

log = logging.getLogger(__name__)

T = TypeVar("T")
_DONE = object()
_threads: "weakref.WeakSet[ModelThread]" = weakref.WeakSet()


class ModelStuck(RuntimeError):
    """The model's thread has been inside one step for too long: it takes no more work."""


class _Job:
    def __init__(self, seq: int, urgency: Urgency | None) -> None:
        self.seq = seq
        self.urgency = urgency
        self.asked = clock()

    def deadline(self) -> float:
        """When its call's listener hears silence without it (work outside a call: when it was asked)."""
        return self.urgency.deadline() if self.urgency is not None else self.asked

    @property
    def abandoned(self) -> bool:
        """Nobody waits for this job any more: skip its next step."""
        return False

    def step(self) -> bool:
        """Run one step; True if the job has more steps and should go back in the queue."""
        raise NotImplementedError

    def abandon(self) -> None:
        """Called instead of `step` when the job is dropped (cancelled, or the thread shut down)."""


class _Call(_Job):
    def __init__(self, seq, urgency, loop: asyncio.AbstractEventLoop, future: asyncio.Future, fn, args) -> None:
        super().__init__(seq, urgency)
        self.loop, self.future, self.fn, self.args = loop, future, fn, args

    @property
    def abandoned(self) -> bool:
        return self.future.cancelled()

    def step(self) -> bool:
        try:
            result = self.fn(*self.args)
        except BaseException as exc:  # noqa: BLE001 - re-raised in the caller
            self._settle(None, exc)
        else:
            self._settle(result, None)
        return False

    def _settle(self, result, error) -> None:
        def settle() -> None:
            if self.future.done():
                return
            if error is not None:
                self.future.set_exception(error)
            else:
                self.future.set_result(result)

        try:
            self.loop.call_soon_threadsafe(settle)
        except RuntimeError:  # the loop is closed: nobody is listening any more
            pass

    def abandon(self) -> None:
        try:
            self.loop.call_soon_threadsafe(self.future.cancel)
        except RuntimeError:
            pass


class _Stream(_Job):
    def __init__(self, seq, urgency, loop: asyncio.AbstractEventLoop, make_iterator, max_ahead: int | None,
                 thread: "ModelThread") -> None:
        super().__init__(seq, urgency)
        self.loop, self.make_iterator, self.max_ahead, self.thread = loop, make_iterator, max_ahead, thread
        self.queue: asyncio.Queue = asyncio.Queue()
        self.stop = threading.Event()
        self.iterator: Iterator | None = None
        self.lock = threading.Lock()
        self.ahead = 0  # items delivered and not yet consumed
        self.parked = False  # out of the queue until the consumer takes an item (or goes away)
        self.finished = False

    @property
    def abandoned(self) -> bool:
        return self.stop.is_set()

    def step(self) -> bool:
        try:
            if self.iterator is None:
                self.iterator = iter(self.make_iterator(self.stop))
            item = next(self.iterator)
        except StopIteration:
            self._finish(None)
            return False
        except BaseException as exc:  # noqa: BLE001 - re-raised in the consumer
            self._finish(exc)
            return False
        self._deliver(item, None)
        with self.lock:
            self.ahead += 1
            if self.max_ahead and self.ahead >= self.max_ahead and not self.stop.is_set():
                self.parked = True
                return False
        return True

    def consumed(self) -> None:
        """The consumer took an item: a parked stream goes back in the queue."""
        with self.lock:
            self.ahead -= 1
            wake = self.parked
            self.parked = False
        if wake:
            self.thread._submit(self)

    def close(self) -> None:
        """The consumer went away: stop before the next step (the worker closes the iterator)."""
        self.stop.set()
        with self.lock:
            wake = self.parked and not self.finished
            self.parked = False
        if wake:
            self.thread._submit(self)

    def abandon(self) -> None:
        self._finish(None)

    def _finish(self, error) -> None:
        if self.finished:
            return
        self.finished = True
        close = getattr(self.iterator, "close", None)
        if close is not None:
            try:
                close()
            except Exception:  # noqa: BLE001 - closing a model's generator must not kill the thread
                log.debug("closing a %s stream failed", self.thread.name, exc_info=True)
        self._deliver(_DONE, error)

    def _deliver(self, item, error) -> None:
        try:
            self.loop.call_soon_threadsafe(self.queue.put_nowait, (item, error))
        except RuntimeError:  # the loop is closed: nobody is listening any more
            self.stop.set()


class ModelThread:
    def __init__(self, name: str, cores: int = 1, scheduler: ComputeScheduler | None = None) -> None:
        self.name = name
        self.cores = cores  # CPU threads one step of this model uses (its lease); 0: on a GPU, no lease
        self._scheduler = scheduler
        self._jobs: list[_Job] = []
        self._cond = threading.Condition()
        self._seq = itertools.count()
        self._closed = False
        self._step_since: float | None = None
        self._thread = threading.Thread(target=self._serve, name=name, daemon=True)
        self._thread.start()
        _threads.add(self)

    @property
    def scheduler(self) -> ComputeScheduler:
        return self._scheduler if self._scheduler is not None else shared_scheduler()

    # -- the event loop's side --------------------------------------------------------------
    async def run(self, fn: Callable[..., T], *args) -> T:
        self.check_usable()
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self._submit(_Call(next(self._seq), current_urgency.get(), loop, future, fn, args))
        return await future

    async def stream(self, make_iterator: Callable[[threading.Event], Iterator[T]],
                     max_ahead: int | None = None) -> AsyncIterator[T]:
        """Iterate `make_iterator(stop)` in the model thread, a step per item, and yield here.

        `stop` is set when the consumer goes away; the thread checks it between items and the
        iterator may check it too (e.g. a generation stopping criterion). With `max_ahead`, the
        stream pauses when that many items wait unconsumed (backpressure: a consumer that stops
        pulling for a while, e.g. to give the CPU to the voice, pauses the model too)."""
        self.check_usable()
        job = _Stream(next(self._seq), current_urgency.get(), asyncio.get_running_loop(), make_iterator, max_ahead,
                      self)
        self._submit(job)
        try:
            while True:
                item, error = await job.queue.get()
                if item is _DONE:
                    if error is not None:
                        raise error
                    break
                job.consumed()
                yield item
        finally:
            job.close()

    def stuck_for(self) -> float:
        """Seconds the step now running has taken (0 when idle)."""
        since = self._step_since
        return 0.0 if since is None else clock() - since

    @property
    def stuck(self) -> bool:
        return self.stuck_for() > self.scheduler.stuck_after_s

    def shutdown(self, wait_s: float = 5.0) -> None:
        """Take no more work, drop what is queued, and wait (up to `wait_s`) for the step now
        running: freeing a model while its thread is still inside it would crash the process.
        A stuck model is not waited for (its daemon thread cannot keep the process alive)."""
        with self._cond:
            self._closed = True
            jobs, self._jobs = self._jobs, []
            self._cond.notify_all()
        for job in jobs:
            job.abandon()
        if not self.stuck and self._thread is not threading.current_thread():
            self._thread.join(wait_s)

    def check_usable(self) -> None:
        """Raise at once if the thread takes no more work (shut down, or stuck in a step)."""
        if self._closed:
            raise RuntimeError(f"the {self.name} model is shut down")
        if self.stuck:
            raise ModelStuck(f"the {self.name} model has been stuck in one step for {self.stuck_for():.0f} s")

    def _submit(self, job: _Job) -> None:
        with self._cond:
            if self._closed:
                closed = True
            else:
                closed = False
                self._jobs.append(job)
                self._cond.notify()
        if closed:
            job.abandon()

    # -- the model thread ---------------------------------------------------------------------
    def _next_job(self) -> _Job | None:
        with self._cond:
            while not self._jobs and not self._closed:
                self._cond.wait()
            if self._closed:
                return None
            job = min(self._jobs, key=lambda j: (j.deadline(), j.seq))
            self._jobs.remove(job)
            return job

    def _serve(self) -> None:
        while (job := self._next_job()) is not None:
            if job.abandoned:
                job.abandon()
                continue
            scheduler = self.scheduler
            lease, waited, deadline = None, 0.0, job.deadline()
            if self.cores > 0:  # a model on a GPU takes no CPU lease
                lease, waited = scheduler.acquire(self.cores, deadline, job.urgency, self.name)
            self._step_since = started = clock()
            try:
                again = job.step()
            finally:
                self._step_since = None
                if lease is not None:
                    scheduler.release(lease)
            if log.isEnabledFor(logging.DEBUG):
                log.debug("%s step for %s: deadline %+.0f ms, waited %.0f ms, ran %.0f ms", self.name,
                          job.urgency.label if job.urgency is not None else "-", (deadline - started) * 1000,
                          waited * 1000, (clock() - started) * 1000)
            if again:
                self._submit(job)


def stuck_models() -> list[str]:
    """The models whose thread is stuck in one step (for /healthz)."""
    return sorted({t.name for t in list(_threads) if t.stuck})
