"""What passes between a brain and the tools: a call the model asked for, and its result.

A brain makes `ToolCall`s from whatever its model produced (OpenAI `tool_calls`, Qwen's
`<tool_call>` markup, ...); the tool box runs them and gives back `ToolResult`s, which the brain
hands to the model in its own format. Arguments stay the model's raw JSON text until the tool box
parses and validates them, so every brain gets the same checks and error messages.

`ToolCall` itself is defined below the tools, in `agent.runtime.tool_call` (the engines' HTTP
client yields them), and is the same class here.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Callable, Literal

from agent.runtime.tool_call import ToolCall

# ok: the tool ran and returned; invalid: the arguments did not match the schema (or were not
# JSON); unknown: no tool by that name; error: the tool raised; timeout: it ran past
# tools.timeout_s; cancelled: the user spoke over the answer while it ran.
ToolStatus = Literal["ok", "invalid", "unknown", "error", "timeout", "cancelled"]


@dataclass(frozen=True)
class ToolResult:
    """What became of a `ToolCall`: `content` is the text the model reads next (the tool's result,
    or a short error message it can act on)."""

    call: ToolCall
    status: ToolStatus
    content: str
    ms: float = 0.0  # how long the tool ran (0 when it was never called)

    @property
    def ok(self) -> bool:
        return self.status == "ok"


@dataclass(frozen=True)
class ToolPrompt:
    """What a brain tells its model about the tools of a conversation: `specs` in the OpenAI
    `tools` format ({"type": "function", "function": {name, description, parameters}}),
    `instructions`, text to add to the system prompt (when to use which tool), and `required`:
    (tool name, predicate on the user's words) pairs; `required_tool(text)` names the tool the
    model must call in the first round of its answer to `text` (OpenAI's `tool_choice`);
    `call_from_words(text, ...)` is that call made without the model, when the tool reads its
    arguments from the words (`Tool.arguments_from`): the brain yields it as its first round."""

    specs: tuple[dict, ...]
    instructions: str = ""
    required: tuple[tuple[str, Callable[[str], bool]], ...] = ()
    readers: tuple[tuple[str, Callable[[str], dict | None]], ...] = ()  # (tool name, its `arguments_from`)

    def required_tool(self, user_text: str) -> str | None:
        return next((name for name, applies in self.required if applies(user_text)), None)

    def call_from_words(self, user_text: str, call_id: Callable[[], str]) -> ToolCall | None:
        """The call `user_text` requires, with its arguments read from the words themselves, or
        None (no tool is required, or its arguments must come from the model)."""
        name = self.required_tool(user_text)
        read = dict(self.readers).get(name) if name is not None else None
        arguments = read(user_text) if read is not None else None
        if arguments is None:
            return None
        return ToolCall(call_id(), name, json.dumps(arguments))

    def spec(self, name: str) -> dict:
        return next(spec for spec in self.specs if spec["function"]["name"] == name)

    def call_schema(self, name: str) -> dict:
        """The JSON schema of one call of tool `name` written as text (`{"name": ..., "arguments":
        {...}}`): what a forced round's output is constrained to (a llama.cpp grammar in process, the
        engine's `response_format` remotely)."""
        return {"type": "object", "required": ["name", "arguments"], "additionalProperties": False,
                "properties": {"name": {"const": name}, "arguments": self.spec(name)["function"]["parameters"]}}

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(spec["function"]["name"] for spec in self.specs)
