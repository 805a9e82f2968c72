"""A model stage that goes silent fails the answer instead of hanging it."""

from __future__ import annotations

import asyncio
import contextlib
from typing import AsyncIterator

from agent.runtime.scheduler import Urgency


class StageStalled(TimeoutError):
    """A model produced nothing for longer than brain.stall_timeout_s."""


QUEUE_CHECK_S = 0.25  # how often the stall guard looks whether the stage is waiting behind other calls


async def stall_guard(stream: AsyncIterator, timeout_s: float, stage: str,
                      urgency: Urgency | None = None) -> AsyncIterator:
    """Yield from `stream`, failing if it goes `timeout_s` without producing anything (a hung or
    stalled model). A long but steady answer is never cut, and while the stage's work waits
    behind other calls' (`urgency.waiting`: for the CPU or an LLM slot) the clock does not run."""
    loop = asyncio.get_running_loop()
    async with contextlib.aclosing(stream) as items:
        iterator = items.__aiter__()
        while True:
            try:
                # asyncio.timeout, not wait_for: in Python 3.11 wait_for can swallow a cancellation
                # that races with a result, and a barge-in must never let one more chunk through.
                async with asyncio.timeout(timeout_s) as window:
                    def extend_while_queued() -> None:
                        nonlocal check
                        if urgency is not None and urgency.waiting:
                            window.reschedule(loop.time() + timeout_s)
                        check = loop.call_later(QUEUE_CHECK_S, extend_while_queued)

                    check = loop.call_later(QUEUE_CHECK_S, extend_while_queued)
                    try:
                        item = await iterator.__anext__()
                    finally:
                        check.cancel()
            except StopAsyncIteration:
                return
            except TimeoutError:
                raise StageStalled(f"the {stage} produced nothing for {timeout_s:g} s") from None
            yield item
