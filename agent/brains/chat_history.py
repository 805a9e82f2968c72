"""One session's conversation as chat messages for a text LLM: the persona (system prompt) and a
bounded history that holds what the user said and only what the agent actually said.

Shared by the brains that talk to a chat LLM (the in-process cascade, the OpenAI-compatible
engine), so they keep the same semantics: the newest `history_turns` exchanges, always starting
with a user turn; the reply in progress forgotten on `rollback()` (a preemptive answer the user
talked over); an utterance that is not answered (fillers, noise) never stored.

Tool rounds (OpenAI format): `add_tool_round()` keeps the assistant's `tool_calls` message and one
`tool` message per result while the reply goes on, so the next round's prompt has them. When the
reply ends, the rounds whose results were used stay (the model sees how it got its answer) with
their text cleared, and what was actually spoken follows as one assistant message, so every
spoken word is in the history once; with nothing spoken, or on `rollback()`, the rounds go too.
Tool rounds do not count against `history_turns`: an exchange is a user turn and all that follows it.
"""

from __future__ import annotations

from typing import Sequence

from agent.tools.calls import ToolCall, ToolResult


class ChatHistory:
    def __init__(self, system_prompt: str, history_turns: int) -> None:
        self.system_prompt = system_prompt
        self.history_turns = history_turns
        self.messages: list[dict] = []  # user/assistant messages, oldest first
        self._reply_start: int | None = None  # len(messages) before the reply in progress

    def system_message(self) -> dict:
        return {"role": "system", "content": self.system_prompt}

    def prompt(self) -> list[dict]:
        """The messages to send for the reply in progress: the persona and the history."""
        return [self.system_message(), *self.messages]

    def next_prompt_prefix(self) -> list[dict]:
        """Messages whose formatted prompt is a prefix of the next turn's prompt: an empty user
        turn renders the same role header the real one will have (to warm a prompt cache)."""
        return [*self.prompt(), {"role": "user", "content": ""}]

    def begin_reply(self) -> None:
        """A reply starts: `rollback()` from now on forgets everything it adds."""
        self._reply_start = len(self.messages)

    def add_user(self, text: str) -> None:
        """What the user said in the reply in progress (only when it is answered)."""
        if self._reply_start is None:
            self._reply_start = len(self.messages)
        self.messages.append({"role": "user", "content": text})
        self._trim()
        self._reply_start = min(self._reply_start, len(self.messages) - 1)

    def add_tool_round(self, said: str, calls: Sequence[ToolCall], results: Sequence[ToolResult]) -> None:
        """A round of the reply in progress that asked for tools: what the model said before its
        calls, the calls (arguments as the model's JSON text) and their results."""
        self.messages.append({"role": "assistant", "content": said.strip(), "tool_calls": [
            {"id": call.id, "type": "function", "function": {"name": call.name, "arguments": call.arguments}}
            for call in calls]})
        for result in results:
            self.messages.append({"role": "tool", "tool_call_id": result.call.id, "content": result.content})

    def _user_turn_of_reply(self) -> int | None:
        """The index of the reply's user message (None: the reply answered nothing)."""
        start = self._reply_start
        if start is not None and start < len(self.messages) and self.messages[start]["role"] == "user":
            return start
        if self.messages and self.messages[-1]["role"] == "user":
            return len(self.messages) - 1
        return None

    def record_agent_reply(self, spoken_text: str) -> bool:
        """Store what the agent actually said (the part that was played) after the user's turn,
        after the reply's tool rounds (see the module docstring). False when there was no
        answered user turn to record it for (nothing changed)."""
        start = self._user_turn_of_reply()
        self._reply_start = None
        if start is None:
            return False
        spoken = spoken_text.strip()
        if spoken:
            for message in self.messages[start + 1:]:
                if message.get("tool_calls"):
                    message["content"] = ""
            self.messages.append({"role": "assistant", "content": spoken})
        else:
            del self.messages[start + 1:]  # nothing was heard: the question alone stays
        self._trim(reserve=1)  # leave room for the next user message
        return True

    def rollback(self) -> None:
        """Forget the reply in progress as if it had never been asked."""
        if self._reply_start is not None:
            del self.messages[self._reply_start:]
            self._reply_start = None

    def _trim(self, reserve: int = 0) -> None:
        """Keep the last history_turns exchanges (minus `reserve` messages), starting with a user turn."""
        keep = max(0, 2 * self.history_turns - reserve)
        counted = 0  # user turns and spoken answers from the end (tool rounds go with their exchange)
        cut = 0
        for index in range(len(self.messages) - 1, -1, -1):
            message = self.messages[index]
            if message["role"] == "tool" or message.get("tool_calls"):
                continue
            counted += 1
            if counted > keep:
                cut = index + 1
                break
        del self.messages[:cut]
        while self.messages and self.messages[0]["role"] != "user":
            self.messages.pop(0)
