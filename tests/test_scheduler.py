"""The CPU scheduler and the model threads: earliest deadline first, no oversubscription, streams
that interleave and pause without holding their thread, cancelled work that never runs, and a
stuck model that cannot wedge the others."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from agent.runtime.model_thread import ModelStuck, ModelThread, stuck_models
from agent.runtime.scheduler import ComputeScheduler, Urgency, before_all, current_urgency


def _urgency(deadline: float, label: str = "") -> Urgency:
    return Urgency(lambda: deadline, label)


def test_leases_go_earliest_deadline_first():
    scheduler = ComputeScheduler(cores=1)
    first, _ = scheduler.acquire(1, 0.0)  # the core is busy
    order: list[str] = []

    def wait(label: str, deadline: float) -> None:
        lease, _ = scheduler.acquire(1, deadline)
        order.append(label)
        scheduler.release(lease)

    threads = [threading.Thread(target=wait, args=(label, deadline))
               for label, deadline in (("late", 30.0), ("urgent", 10.0), ("middle", 20.0))]
    for t in threads:
        t.start()
    while len(scheduler._waiting) < 3:
        time.sleep(0.01)
    scheduler.release(first)
    for t in threads:
        t.join(5)
    assert order == ["urgent", "middle", "late"]
    assert scheduler.stats.steps == 4


def test_a_two_core_step_is_not_jumped_by_later_one_core_steps():
    scheduler = ComputeScheduler(cores=2)
    held, _ = scheduler.acquire(1, 0.0)
    order: list[str] = []

    def wait(label: str, cores: int, deadline: float) -> None:
        lease, _ = scheduler.acquire(cores, deadline)
        order.append(label)
        time.sleep(0.05)
        scheduler.release(lease)

    big = threading.Thread(target=wait, args=("two cores", 2, 1.0))
    big.start()
    while not scheduler._waiting:
        time.sleep(0.01)
    small = threading.Thread(target=wait, args=("one core", 1, 2.0))
    small.start()
    time.sleep(0.1)
    assert order == []  # one core is free, but the earlier two-core step comes first
    scheduler.release(held)
    big.join(5)
    small.join(5)
    assert order == ["two cores", "one core"]


async def test_the_more_urgent_stream_gets_the_shared_model_first():
    scheduler = ComputeScheduler(cores=1)
    thread = ModelThread("voice", scheduler=scheduler)
    gate = threading.Event()
    steps: list[str] = []

    def phrases(label: str):
        def make(_stop):
            for i in range(3):
                gate.wait(5)
                steps.append(f"{label}{i}")
                yield i
        return make

    async def consume(label: str, deadline: float) -> None:
        current_urgency.set(_urgency(deadline, label))
        async for _ in thread.stream(phrases(label)):
            pass

    relaxed = asyncio.create_task(consume("relaxed", 100.0))  # seconds of audio queued
    await asyncio.sleep(0.05)  # its first step is running (blocked on the gate)
    waiting = asyncio.create_task(consume("waiting", 1.0))  # still waiting for a first word
    await asyncio.sleep(0.05)
    gate.set()
    await asyncio.gather(relaxed, waiting)
    thread.shutdown()
    assert steps == ["relaxed0", "waiting0", "waiting1", "waiting2", "relaxed1", "relaxed2"]


async def test_a_paused_stream_does_not_hold_its_thread_and_closing_it_closes_the_iterator():
    thread = ModelThread("llm", scheduler=ComputeScheduler(cores=1))
    closed_in: list[str] = []

    def tokens(_stop):
        try:
            for i in range(100):
                yield i
        finally:
            closed_in.append(threading.current_thread().name)

    stream = thread.stream(tokens, max_ahead=1)
    assert await stream.__anext__() == 0
    # The stream is parked (one item unconsumed); other work on the same model still runs.
    assert await asyncio.wait_for(thread.run(lambda: "other"), 5) == "other"
    await stream.aclose()
    for _ in range(100):
        if closed_in:
            break
        await asyncio.sleep(0.01)
    assert closed_in == ["llm"]  # closed by the model's own thread, as llama.cpp needs
    thread.shutdown()


async def test_work_cancelled_before_it_starts_never_runs():
    thread = ModelThread("asr", scheduler=ComputeScheduler(cores=1))
    gate = threading.Event()
    ran: list[str] = []
    blocker = asyncio.ensure_future(thread.run(gate.wait, 5))
    await asyncio.sleep(0.05)
    cancelled = asyncio.ensure_future(thread.run(ran.append, "cancelled"))
    await asyncio.sleep(0.05)
    cancelled.cancel()
    gate.set()
    await blocker
    assert await thread.run(ran.append, "after") is None
    assert ran == ["after"]
    thread.shutdown()


async def test_errors_in_a_step_reach_the_caller():
    thread = ModelThread("voice", scheduler=ComputeScheduler(cores=1))

    def broken(_stop):
        yield 1
        raise ValueError("model exploded")

    with pytest.raises(ValueError, match="exploded"):
        async for _ in thread.stream(broken):
            pass
    with pytest.raises(ZeroDivisionError):
        await thread.run(lambda: 1 / 0)
    thread.shutdown()


async def test_a_model_stuck_in_native_code_fails_fast_and_does_not_wedge_the_others():
    scheduler = ComputeScheduler(cores=1, stuck_after_s=0.3)
    hung = ModelThread("hung-llm", scheduler=scheduler)
    other = ModelThread("voice", scheduler=scheduler)
    release = threading.Event()
    hang = asyncio.ensure_future(hung.run(release.wait, 30))  # blocks its thread, not the loop
    await asyncio.sleep(0.5)
    assert hung.stuck and "hung-llm" in stuck_models()
    with pytest.raises(ModelStuck, match="hung-llm"):
        await hung.run(lambda: None)
    # The stuck step's lease is written off: another model still gets the (single) core.
    assert await asyncio.wait_for(other.run(lambda: "spoken"), 5) == "spoken"
    assert scheduler.stats.stuck_steps == 1
    release.set()
    await hang
    assert not hung.stuck
    hung.shutdown()
    other.shutdown()


async def test_each_call_is_told_how_long_it_waited_for_the_cpu():
    scheduler = ComputeScheduler(cores=1)
    thread = ModelThread("llm", scheduler=scheduler)
    other = ModelThread("asr", scheduler=scheduler)
    first = _urgency(0.0, "first")
    second = _urgency(1.0, "second")

    async def call(urgency: Urgency, model: ModelThread) -> None:
        current_urgency.set(urgency)
        await model.run(time.sleep, 0.2)

    held, _ = scheduler.acquire(1, -1.0)  # the core is busy until both calls wait for it
    calls = asyncio.gather(call(second, other), call(first, thread))
    while len(scheduler._waiting) < 2:
        await asyncio.sleep(0.01)
    scheduler.release(held)
    await calls
    assert second.waited_s >= first.waited_s + 0.15  # the second waited for the first's step too
    assert first.steps == second.steps == 1
    thread.shutdown()
    other.shutdown()
    assert set(second.waited_by_model) == {"asr"} and second.waited_by_model["asr"] == second.waited_s


def test_an_end_of_turn_verdict_goes_before_callers_already_waiting_for_their_first_word():
    scheduler = ComputeScheduler(cores=1)
    held, _ = scheduler.acquire(1, 0.0)  # a token step is running
    order: list[str] = []

    def wait(label: str, urgency: Urgency) -> None:
        lease, _ = scheduler.acquire(1, urgency.deadline(), urgency)
        order.append(label)
        scheduler.release(lease)

    waiting = [threading.Thread(target=wait, args=(label, urgency)) for label, urgency in (
        ("token of a caller waiting 2 s", _urgency(time.perf_counter() - 2.0)),
        ("sentence of a caller waiting 1 s", _urgency(time.perf_counter() - 1.0)))]
    for t in waiting:
        t.start()
    while len(scheduler._waiting) < 2:
        time.sleep(0.01)
    verdict = threading.Thread(target=wait, args=("end-of-turn verdict", before_all("verdict")))
    verdict.start()
    while len(scheduler._waiting) < 3:
        time.sleep(0.01)
    scheduler.release(held)
    for t in (*waiting, verdict):
        t.join(5)
    assert order[0] == "end-of-turn verdict", order
