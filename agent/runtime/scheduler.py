"""Who gets the CPU next: model work ordered by how soon each call's listener hears silence.

Every model step (one transcription, one LLM token, one synthesised sentence, one end-of-turn
verdict) runs in its model's thread (`ModelThread`) and first takes a lease of the cores it uses
from the process's `ComputeScheduler`. Leases are granted earliest deadline first: a step's
deadline is the moment its call's listener would hear silence without it (`Urgency`). A caller
still waiting for the first word of an answer has a deadline in the past (the end of their turn)
and goes before the fifth phrase of a caller with seconds of audio queued (a deadline seconds
ahead); among callers waiting for a first word, whose turn ended first goes first. No call
starves: a waiting step's deadline does not move, and every newer step's is later.

A step leases the cores its model thread declares (`ModelThread.cores`: the threads its model
is configured to run a step on, e.g. `asr.threads`, `llm.threads`, `tts.threads`; 0 for a model
on a GPU, which takes no lease). A step waits until its cores are free, and no step jumps the
head of the queue to take cores it is waiting for, so a step of several threads is not starved
and no voice runs half-speed beside another model's step that leased its cores.

One exception, known and measured: llama.cpp evaluates a prompt (the first step of an answer's
stream, and every prompt warm-up), and in the batched cascade every step of more than one
token (several answers' tokens together, `agent/brains/llama_batch.py`), on `llm.batch_threads`
(2) threads, but its steps lease `llm.threads` (1) core, so such a step oversubscribes the cores
by one thread while it runs beside another step (leasing both for a batched step made every
voice sentence wait a whole step; figures in llama_batch's `_drive`). The setting measured that way, tokens on one thread and one-core
leases for all LLM steps, beat two threads and two-core leases for all of them (commit 7bfb89b:
one call 776 vs 917 ms voice to voice; four at once 1878 vs 2399 ms median, longest gap 360 vs
1360 ms); a two-core lease for the prompt step alone has not been measured.

`Urgency` travels with the work through a context variable: the session sets one for each turn
(and one for its own quick work) and every `ModelThread` call made in that context carries it.
Each `Urgency` sums the time its steps waited for the CPU (the turn's `queue_wait`), also per
model (which stage's queue a caller waited in).

A step that runs far longer than any step should (`stuck_after_s`: a model hung in native code)
has its lease written off, so the other calls go on; its model is reported stuck (`ModelThread`).
"""

from __future__ import annotations

import asyncio
import contextvars
import heapq
import itertools
import logging
import os
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Coroutine

log = logging.getLogger(__name__)

clock = time.perf_counter  # deadlines are perf_counter times, like the turn timelines


@dataclass(eq=False)
class Urgency:
    """How urgent a call's model work is: `deadline()` is the perf_counter time its listener would
    hear silence without it (in the past: they already wait)."""

    deadline: Callable[[], float]
    label: str = ""
    waited_s: float = 0.0  # time this call's steps spent waiting for the CPU (or an LLM slot)
    waited_by_model: dict[str, float] = field(default_factory=dict)  # the same, per model ("asr", "voice", ...)
    steps: int = 0
    waiting: int = 0  # its steps waiting right now (behind other calls' work: not a stalled model)


def due_now(label: str = "") -> Urgency:
    """Work someone waits for now (e.g. an end-of-turn verdict): its deadline is when it was asked."""
    asked = clock()
    return Urgency(lambda: asked, label)


def before_all(label: str = "") -> Urgency:
    """Small work on every caller's critical path (an end-of-turn verdict, ~30 ms): ahead of every
    deadline, so it never waits behind other calls' tokens or sentences, only for a step already
    running to finish (first come, first served among such work)."""
    return Urgency(lambda: float("-inf"), label)


IDLE_SLACK_S = 10.0


def when_idle(label: str = "") -> Urgency:
    """Work nobody waits for (warming a cache): its deadline stays `IDLE_SLACK_S` ahead of now, so
    any call with audio due sooner goes first."""
    return Urgency(lambda: clock() + IDLE_SLACK_S, label)


current_urgency: contextvars.ContextVar[Urgency | None] = contextvars.ContextVar("current_urgency", default=None)


def task_with_urgency(work: Coroutine, urgency: Urgency, name: str | None = None) -> asyncio.Task:
    """A task whose model work (and that of the tasks it starts) carries `urgency`."""
    context = contextvars.copy_context()
    context.run(current_urgency.set, urgency)
    return asyncio.create_task(work, name=name, context=context)


@dataclass
class SchedulerStats:
    steps: int = 0
    waited_s: float = 0.0  # all steps' time waiting for the CPU
    max_wait_s: float = 0.0
    stuck_steps: int = 0  # leases written off (a step that never returned)
    by_model: dict[str, list[float]] = field(default_factory=dict)  # model -> [steps, waited_s, ran_s]


@dataclass(order=True)
class _Waiter:
    deadline: float
    seq: int
    cores: int = field(compare=False)
    granted: threading.Event = field(compare=False, default_factory=threading.Event)


def _cores(configured: int | None) -> int:
    """The cores to share: as configured, or (0/None) every core of the machine."""
    return max(1, configured or os.cpu_count() or 1)


class ComputeScheduler:
    """Grants `cores` CPU cores to model steps, earliest deadline first (see the module docstring)."""

    def __init__(self, cores: int | None = None, stuck_after_s: float = 60.0) -> None:
        self.cores = _cores(cores)
        self.stuck_after_s = stuck_after_s
        self._lock = threading.Lock()
        self._free = self.cores
        self._waiting: list[_Waiter] = []
        self._seq = itertools.count()
        self._running: dict[int, tuple[float, int, str]] = {}  # lease id -> (since, cores, model)
        self.stats = SchedulerStats()

    def acquire(self, cores: int, deadline: float, urgency: Urgency | None = None, model: str = "") -> tuple[int, float]:
        """Block until `cores` cores are this step's, waiting behind steps with earlier deadlines;
        return (lease id, seconds waited). The wait is added to `urgency`."""
        cores = min(max(1, cores), self.cores)
        waiter = _Waiter(deadline, next(self._seq), cores)
        started = clock()
        if urgency is not None:
            urgency.waiting += 1
        with self._lock:
            heapq.heappush(self._waiting, waiter)
            self._grant()
        try:
            while not waiter.granted.wait(timeout=1.0):
                with self._lock:
                    self._write_off_stuck()
                    self._grant()
        finally:
            if urgency is not None:
                urgency.waiting -= 1
        waited = clock() - started
        lease = waiter.seq
        with self._lock:
            self._running[lease] = (clock(), cores, model)
            self.stats.steps += 1
            self.stats.waited_s += waited
            self.stats.max_wait_s = max(self.stats.max_wait_s, waited)
            per_model = self.stats.by_model.setdefault(model, [0, 0.0, 0.0])
            per_model[0] += 1
            per_model[1] += waited
        if urgency is not None:
            urgency.waited_s += waited
            urgency.waited_by_model[model] = urgency.waited_by_model.get(model, 0.0) + waited
            urgency.steps += 1
        return lease, waited

    def release(self, lease: int) -> None:
        with self._lock:
            held = self._running.pop(lease, None)
            if held is not None:
                self._free += held[1]
                per_model = self.stats.by_model.get(held[2])
                if per_model is not None:
                    per_model[2] += clock() - held[0]
            self._grant()

    def load(self) -> float:
        """Cores busy or asked for, over the cores there are (above 1: work waits)."""
        with self._lock:
            wanted = sum(w.cores for w in self._waiting)
            return (self.cores - self._free + wanted) / self.cores

    def _grant(self) -> None:
        """Hand free cores to waiters in deadline order; the head waits for all its cores (no
        smaller step may jump it, or a two-core step could wait forever)."""
        while self._waiting and self._waiting[0].cores <= self._free:
            waiter = heapq.heappop(self._waiting)
            self._free -= waiter.cores
            waiter.granted.set()

    def _write_off_stuck(self) -> None:
        now = clock()
        for lease, (since, cores, model) in list(self._running.items()):
            if now - since > self.stuck_after_s:
                del self._running[lease]
                self._free += cores
                self.stats.stuck_steps += 1
                log.error("a %s step has run for %.0f s: its CPU lease is written off so other calls go on",
                          model or "model", now - since)


_shared: ComputeScheduler | None = None
_shared_lock = threading.Lock()


def shared_scheduler() -> ComputeScheduler:
    """The process's scheduler (every model shares the same cores)."""
    global _shared
    with _shared_lock:
        if _shared is None:
            _shared = ComputeScheduler()
        return _shared


def configure_shared_scheduler(cores: int, stuck_after_s: float) -> ComputeScheduler:
    """Set the process's scheduler's cores and stuck-step limit (at model loading, from config)."""
    scheduler = shared_scheduler()
    with scheduler._lock:
        scheduler._free += _cores(cores) - scheduler.cores
        scheduler.cores = _cores(cores)
        scheduler.stuck_after_s = stuck_after_s
    return scheduler
