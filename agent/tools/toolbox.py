"""The tools of one conversation and how they run: `ToolBox.run(call)` looks the tool up,
validates the model's arguments, calls it under a timeout and turns whatever happened into a
`ToolResult` the model can read. It never raises for a tool's failure; it does let a
cancellation through (the user spoke over the answer: the tool itself sees CancelledError).

Async tools run on the event loop, in the turn's own task (they must await, not block: the
playout clock shares the loop); plain functions run in a worker thread, which a timeout or a
cancellation abandons (a thread cannot be stopped) while the turn goes on.
"""

from __future__ import annotations

import asyncio
import importlib
import inspect
import json
import logging
import time
from typing import Any, Callable, Iterable

from agent.config import Config

from .builtins import builtin_tools
from .calls import ToolCall, ToolPrompt, ToolResult
from .schema import Tool, ToolDefinitionError, tool
from .validation import InvalidArguments, checked_arguments

log = logging.getLogger(__name__)

ToolLike = Tool | Callable[..., Any]


class ToolBox:
    """A conversation's tools by name (see the module docstring)."""

    def __init__(self, tools: Iterable[ToolLike] = (), timeout_s: float = 10.0, max_result_chars: int = 1000,
                 instructions: str = "") -> None:
        self.instructions = instructions  # how to use tools at all; each tool adds when to use it
        self.timeout_s = timeout_s
        self.max_result_chars = max_result_chars
        self.tools: dict[str, Tool] = {}
        for item in tools:
            made = tool(item)
            if made.name in self.tools:
                raise ToolDefinitionError(f"two tools are named {made.name!r}")
            self.tools[made.name] = made

    def __len__(self) -> int:
        return len(self.tools)

    def __bool__(self) -> bool:
        return bool(self.tools)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(self.tools)

    def prompt(self) -> ToolPrompt:
        """What the brain puts in its prompt about these tools."""
        lines = [self.instructions, *(t.instructions for t in self.tools.values())]
        instructions = " ".join(line for line in lines if line)
        required = tuple((t.name, t.required_when) for t in self.tools.values() if t.required_when is not None)
        readers = tuple((t.name, t.arguments_from) for t in self.tools.values() if t.arguments_from is not None)
        return ToolPrompt(tuple(t.spec() for t in self.tools.values()), instructions, required, readers)

    async def run(self, call: ToolCall) -> ToolResult:
        """Run one call; the result says what happened (a CancelledError passes through)."""
        found = self.tools.get(call.name)
        if found is None:
            # What the model reads next: a small model told "there is no tool named ..." read it
            # out ("The tool named William Shakespeare does not exist. The available tools are
            # calculator and clock."), so it is told to answer itself instead.
            return ToolResult(call, "unknown", f"No tool is named {call.name!r}. Answer the user's question "
                                               "yourself, from what you know, and do not mention tools.")
        try:
            arguments = checked_arguments(call.arguments, found.parameters)
        except InvalidArguments as exc:
            return ToolResult(call, "invalid", f"error: invalid arguments for {call.name}: {exc}")
        started = time.perf_counter()

        def ms() -> float:
            return round((time.perf_counter() - started) * 1000.0, 1)

        try:
            async with asyncio.timeout(self.timeout_s) as deadline:
                value = await _call(found.fn, arguments)
        except TimeoutError:
            if deadline.expired():
                log.warning("tool %s timed out after %g s", call.name, self.timeout_s)
                return ToolResult(call, "timeout", f"error: {call.name} did not answer within {self.timeout_s:g} s", ms())
            return self._failed(call, TimeoutError("timed out"), ms())
        except Exception as exc:  # a tool's failure is the model's (and the apology's) business, not a crash
            return self._failed(call, exc, ms())
        return ToolResult(call, "ok", self._as_text(value), ms())

    def _failed(self, call: ToolCall, exc: BaseException, ms: float) -> ToolResult:
        log.warning("tool %s raised %s: %s", call.name, type(exc).__name__, exc)
        return ToolResult(call, "error", f"error: {call.name} failed: {type(exc).__name__}: {exc}", ms)

    def _as_text(self, value: Any) -> str:
        if value is None:
            text = "done"
        elif isinstance(value, str):
            text = value
        else:
            text = json.dumps(value, ensure_ascii=False, default=str)
        if len(text) > self.max_result_chars:
            text = text[: self.max_result_chars] + " ... (cut)"
        return text


async def _call(fn: Callable[..., Any], arguments: dict[str, Any]) -> Any:
    if inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(getattr(fn, "__call__", None)):
        return await fn(**arguments)
    value = await asyncio.to_thread(fn, **arguments)
    if inspect.isawaitable(value):  # e.g. a partial of an async function
        value = await value
    return value


def configured_tools(config: Config) -> list[Tool]:
    """The tools config turns on: the built-ins in `tools.builtin`, then `tools.custom`
    ("package.module:name", a function, a Tool, or a list of them)."""
    tools: list[Tool] = list(builtin_tools(config.tools.builtin, config.tools.time_zone, config.tools.force_arithmetic))
    for target in config.tools.custom:
        module_name, _, attribute = target.partition(":")
        if not module_name or not attribute:
            raise ToolDefinitionError(f"tools.custom entry {target!r} must look like 'package.module:function'")
        try:
            found = getattr(importlib.import_module(module_name), attribute)
        except (ImportError, AttributeError) as exc:
            raise ToolDefinitionError(f"tools.custom entry {target!r}: {exc}") from exc
        tools.extend(tool(item) for item in (found if isinstance(found, (list, tuple)) else [found]))
    return tools


def toolbox_for(config: Config, extra: Iterable[ToolLike] = ()) -> ToolBox:
    """The tools of one conversation: those config turns on, plus `extra` (the attach API's)."""
    return ToolBox([*configured_tools(config), *extra], config.tools.timeout_s, config.tools.max_result_chars,
                   config.tools.instructions)
