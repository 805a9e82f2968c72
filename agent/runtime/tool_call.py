"""`ToolCall`: a tool call a model asked for, as a model's runner produces it.

It sits here, below `agent.tools`, because the runners make them: the engines' HTTP client
(`openai_api`) gathers them from `delta.tool_calls`, and the brains from their models' text.
`agent.tools` (which runs them) and the brains take it from `agent.tools.calls`, where it is
re-exported beside `ToolResult`.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ToolCall:
    """The model asks for tool `name` with `arguments` (a JSON object, as text)."""

    id: str  # unique within the conversation; OpenAI's `tool_call_id` where the engine gives one
    name: str
    arguments: str = "{}"
