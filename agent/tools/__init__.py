"""Tools the model may call during a turn: Python functions described to the model, validated,
run with a timeout and cancelled with the turn.

- `schema`: a function -> `Tool` (name, description and JSON-Schema parameters from its
  signature and docstring); `tool()` makes one.
- `validation`: the model's arguments checked against that schema before any call.
- `toolbox`: `ToolBox`, a conversation's tools and the runner (timeout, errors as results,
  cancellation let through); `toolbox_for(config, extra)` builds one from config.
- `builtins`: the calculator and the clock.
- `calls`: `ToolCall`, `ToolResult`, `ToolPrompt`, what passes between a brain and the tools.

The flow within a turn (when the model asks, events, the apology) is `agent.answer`'s (`PhraseProducer`, `ToolRounds`).
"""

from .calls import ToolCall, ToolPrompt, ToolResult, ToolStatus
from .schema import Tool, ToolDefinitionError, tool

__all__ = ["Tool", "ToolCall", "ToolDefinitionError", "ToolPrompt", "ToolResult", "ToolStatus", "tool"]
