"""The brain interface: a user utterance (audio) in, the agent's answer out as streamed text.

Each brain module (`agent/brains/<name>.py`) also exposes `KIND`, a `BrainKind` that says which
model files it needs, whether it can run here (for `brain.kind = auto`) and how to load it; the
registry in `agent/brains/__init__.py` maps config names to those modules.

A `Brain` holds the loaded models and is shared by all sessions; each session opens its own
`Conversation`, which keeps that session's bounded history. `reply()` is an async iterator of
text pieces and is cancelled by closing it (the session cancels the task that iterates it).

Tools (a brain with `supports_tools = True`)
--------------------------------------------
The brain only talks to its model; the turn (`agent.turn.AnswerTurn`) runs the tools, sends the
events, applies the timeout and the apology, and cancels a tool on barge-in. One turn is one or
more rounds:

    conversation = brain.new_conversation(tools)        # tools: ToolPrompt (specs + instructions)
    stream = conversation.reply(audio, on_transcript)   # round 1
    while True:
        text pieces (str) are spoken as they come;      # "Let me check." before a call
        ToolCall items come after the round's text;     # the round then ends
        if the round asked for no tool: done
        results = [await toolbox.run(call) for call in calls]
        stream = conversation.continue_reply(results)   # the next round: the model reads them

- `new_conversation(tools)`: `tools.specs` are OpenAI `tools` entries
  (`{"type": "function", "function": {"name", "description", "parameters"}}`), ready to pass as
  the `tools` of a chat completion request; add `tools.instructions` to the system prompt.
  Without tools (None) a brain behaves exactly as before and never yields a ToolCall.
- In the first round, `tools.required_tool(user_text)` may name a tool the model must call
  (e.g. the calculator for "47 times 38"): for OpenAI constrain that request's output to the call written as JSON
  (`response_format` with `tools.call_schema(name)`); the cascade uses a grammar of the same schema.
- `reply()` / `continue_reply()` yield `str` (speakable text, never tool-call markup; an empty
  string says the model is still working, e.g. writing a call, so the turn's stall guard
  does not take a long call for a hung model) and then,
  if the model asked for tools, one `ToolCall(id, name, arguments)` per call, `arguments` being
  the model's JSON text as it came (the tool box parses and validates it). An OpenAI-compatible
  brain streams `delta.content` as text, gathers `delta.tool_calls` by `index` (id, name,
  argument fragments) and yields them when `finish_reason == "tool_calls"`.
- `continue_reply(results)` adds the round to the conversation and asks the model again: for
  the OpenAI format an assistant message `{"role": "assistant", "content": <the round's text,
  "" when none: some servers refuse null>, "tool_calls": [{"id", "type": "function", "function": {"name", "arguments"}}]}` and one
  `{"role": "tool", "tool_call_id": result.call.id, "content": result.content}` per result.
  Every result's `content` is text for the model, also for failures ("error: ...").
- The turn may stop between rounds (a tool failed: it apologises itself; barge-in; too many
  rounds): `record_agent_reply()` or `rollback()` then closes the turn as usual. History keeps
  the tool rounds whose results the model used, then what was actually spoken.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import AsyncIterator, Callable, Iterable, Protocol, Sequence

import numpy as np

from agent.runtime.choice import Kind
from agent.tools.calls import ToolCall, ToolPrompt, ToolResult

__all__ = ["Brain", "BrainKind", "Conversation", "ReplyItem", "ToolCall", "ToolPrompt", "ToolResult",
           "ToolsUnsupported", "TranscriptCallback", "check_tools"]

# Called with what the user said; returning False means "do not answer it" (only fillers or
# noise): the brain then stops without answering and keeps nothing of the turn.
TranscriptCallback = Callable[[str], bool | None]
# What a reply streams: speakable text, then (only with tools) the calls the model asked for.
ReplyItem = str | ToolCall


class ToolsUnsupported(RuntimeError):
    """Tools were configured for a brain that cannot call them (the message says what to do)."""


class Conversation(ABC):
    @abstractmethod
    def reply(self, audio: np.ndarray, on_transcript: TranscriptCallback) -> AsyncIterator[ReplyItem]:
        """Answer one user utterance (int16, 16 kHz mono), streaming text pieces (and, with
        tools, the round's `ToolCall`s after its text; see the module docstring).

        Calls `on_transcript(text)` once with what the user said, as soon as it is known
        (before the first piece for a cascade; possibly later for a speech-LLM). If it returns
        False before any piece, the reply ends there and the utterance is not kept."""

    def continue_reply(self, results: Sequence[ToolResult]) -> AsyncIterator[ReplyItem]:
        """The next round of the reply in progress: the model reads the results of the calls
        the last round asked for, and goes on (text, and maybe more calls)."""
        raise ToolsUnsupported(f"{type(self).__name__} cannot call tools")

    async def transcribe(self, audio: np.ndarray) -> str | None:
        """What the user said in `audio`, without answering it (to judge a sound made over the
        agent). None: this brain cannot tell before it answers."""
        return None

    @abstractmethod
    def record_agent_reply(self, spoken_text: str) -> None:
        """Store what the agent actually said (only the part that was played) in the history."""

    @abstractmethod
    def rollback(self) -> None:
        """Forget the reply in progress as if it had never been asked (a preemptive answer the
        user talked over). A no-op once `record_agent_reply` has stored it."""


class Brain(ABC):
    name: str
    supports_tools: bool = False  # new_conversation(tools) works, and its replies may ask for them
    tools_hint: str = "or use brain.kind = cascade"  # the other way out when tools are refused

    @abstractmethod
    def new_conversation(self, tools: ToolPrompt | None = None) -> Conversation:
        """A conversation for one session; with `tools` its model may call them (a brain with
        `supports_tools = False` raises ToolsUnsupported: `check_tools`)."""

    async def warm_up(self, tools: ToolPrompt | None = None) -> None:
        """Run the models once so the first real turn is not slower than the rest (with `tools`:
        the tools every conversation will have, so their prompt is ready too)."""

    def capacity(self) -> int | None:
        """Calls this brain holds at once within the latency budget (admission's default), or None
        when it sets no limit of its own (e.g. a remote engine that scales elsewhere)."""
        return None

    def load_times(self) -> dict[str, float]:
        """Seconds each model took to load, by model name (for /metrics)."""
        load_s = getattr(self, "load_s", None)
        return {"brain": float(load_s)} if isinstance(load_s, (int, float)) else {}

    def close(self) -> None:
        """Release model threads."""


class _Named(Protocol):
    @property
    def names(self) -> tuple[str, ...]: ...


def check_tools(brain: Brain | type[Brain], tools: _Named | Iterable[str] | None) -> None:
    """Refuse tools for a brain that cannot call them, saying what to change: the one place a
    brain's tools are refused (at model loading, for each session, for each conversation).
    `tools`: a `ToolBox` or `ToolPrompt`, or the tools' names; `brain` may be a brain class
    when the refusal comes before any weights load (Voxtral)."""
    names = tuple(tools.names if hasattr(tools, "names") else tools or ())
    if names and not brain.supports_tools:
        raise ToolsUnsupported(
            f"the {brain.name} brain cannot call tools, but tools are on ({', '.join(names)}): "
            f"set tools.builtin = [] and tools.custom = [] (and pass no tools to attach_agent), {brain.tools_hint}")


BrainKind = Kind[Brain]  # how a brain is chosen and loaded (each brain module's `KIND`)
