"""The tools an answer's model asks for between its rounds, run one by one with their events.

A preemptive answer runs no tool: a tool may have side effects (book a slot, send a message),
and a preemptive answer may be thrown away, so its calls wait until it is confirmed; discarded,
it never called anything. Each call is a `tool_call` and a `tool_result` event and a span in the
timeline. A barge-in cancels the answer's task and with it the running tool, which sees the
CancelledError.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Callable

from agent.events import Event, ToolCallFinished, ToolCallStarted, TurnError
from agent.pipeline.timeline import TurnTimeline
from agent.tools.calls import ToolCall, ToolResult
from agent.tools.toolbox import ToolBox

log = logging.getLogger(__name__)

FAILED = ("error", "timeout")  # a result with one of these statuses ends the answer


class ToolRounds:
    def __init__(self, number: int, tools: ToolBox | None, timeline: TurnTimeline, emit: Callable[[Event], None],
                 confirmed: asyncio.Event, clock: Callable[[], float]) -> None:
        self.number = number
        self.tools = tools
        self.timeline = timeline
        self.emit = emit
        self.confirmed = confirmed
        self.clock = clock

    async def run(self, calls: list[ToolCall]) -> list[ToolResult]:
        """Run the round's calls in order (a failure stops the rest: the answer ends with the
        apology), once the answer is confirmed."""
        await self.confirmed.wait()
        results: list[ToolResult] = []
        for call in calls:
            result = await self._run_one(call)
            results.append(result)
            if result.status in FAILED:
                break
        return results

    async def _run_one(self, call: ToolCall) -> ToolResult:
        span = self.timeline.tool_started(call.name, self.clock())
        self.emit(ToolCallStarted(self.number, call.id, call.name, arguments_for_event(call.arguments)))
        try:
            if self.tools is None:
                result = ToolResult(call, "unknown", f"error: there is no tool named {call.name!r} (no tools are on)")
            else:
                result = await self.tools.run(call)
        except asyncio.CancelledError:  # barge-in or close: the tool was cancelled with the answer
            span.ended, span.status = self.clock(), "cancelled"
            self.emit(ToolCallFinished(self.number, call.id, call.name, "cancelled", "cancelled",
                                       round((span.ended - span.started) * 1000.0, 1)))
            raise
        span.ended, span.status = self.clock(), result.status
        log.info("turn %s: tool %s %s in %.0f ms", self.number, call.name, result.status, result.ms)
        self.emit(ToolCallFinished(self.number, call.id, call.name, result.status, result.content, result.ms))
        return result

    def failed(self, kind: str, message: str) -> None:
        """The answer ends on a failed tool (or too many rounds): an error event and log line."""
        self.timeline.outcome = "error"
        log.error("turn %s error (%s): %s", self.number, kind, message)
        self.emit(TurnError(self.number, kind, message))


def first_failure(results: list[ToolResult]) -> ToolResult | None:
    return next((r for r in results if r.status in FAILED), None)


def arguments_for_event(raw: str) -> dict | str:
    try:
        value = json.loads(raw)
    except json.JSONDecodeError:
        return raw
    return value if isinstance(value, dict) else raw
