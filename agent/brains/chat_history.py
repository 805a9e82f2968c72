"""One session's conversation as chat messages for a text LLM: the persona (system prompt) and a
bounded history that holds what the user said and only what the agent actually said.

Every brain that talks to a chat LLM keeps its conversation here (the in-process cascade, the
OpenAI-compatible engine), so they share the same semantics:

- bounded by exchanges: an exchange is a user turn and all that follows it (the spoken answer,
  tool rounds). While a reply is in progress the history holds the newest `history_turns`
  exchanges, the one being answered included (always: also with `history_turns = 0`); when the
  reply ends it keeps `history_turns - 1`, leaving room for the next question, so the prompt
  prefix warmed between turns is the next turn's. The history always starts with a user turn.
- bounded by tokens, when a token count is given (`tokens_in`, `budget`: the cascade's
  `llm.context_tokens` less room for the answer): the oldest exchanges go first, and a user
  message too long on its own (a runaway transcript) is cut to what fits, rather than fail turn
  after turn. Without one (a remote engine) only exchanges bound it.
- only what was played: `record_agent_reply()` stores the words whose audio was heard; the reply
  in progress is forgotten on `rollback()` (a preemptive answer the user talked over); an
  utterance that is not answered (fillers, noise) is never stored.
- tool rounds (OpenAI format, `arguments` as the model's JSON text, as in `ToolCall`): while the
  reply goes on, `add_tool_round()` keeps the assistant's `tool_calls` message and one `tool`
  message per result, so the next round's prompt has them. When the reply ends, the rounds stay
  (the model sees how it got its answer) with their text cleared, and what was actually spoken
  follows as one assistant message, so every spoken word is in the history once; with nothing
  spoken, or on `rollback()`, the rounds go too. A model whose template wants something else
  (llama.cpp's Jinja templates want the arguments as an object) converts at its own edge. A call
  read from the user's words that succeeded is no round: its result is added to the question.
"""

from __future__ import annotations

import json
import logging
from typing import Callable, Sequence

from agent.tools.calls import ToolCall, ToolPrompt, ToolResult

log = logging.getLogger(__name__)

MESSAGE_OVERHEAD_TOKENS = 6  # a chat message's own framing: <|im_start|>role\n ... <|im_end|>\n


def persona(system_prompt: str, tools: ToolPrompt | None = None) -> str:
    """The system prompt, followed by the tools' instructions when there are any."""
    if tools is not None and tools.instructions:
        return f"{system_prompt} {tools.instructions}"
    return system_prompt


class ChatHistory:
    def __init__(self, system_prompt: str, history_turns: int, tokens_in: Callable[[str], int] | None = None,
                 budget: int | None = None) -> None:
        self.system_prompt = system_prompt
        self.history_turns = history_turns
        self.tokens_in = tokens_in  # the LLM's token count of a text (None: no token bound)
        self.budget = budget  # tokens the system message and the history may take together
        self.messages: list[dict] = []  # user/assistant/tool messages, oldest first
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
        self._trim(max(1, self.history_turns))  # the question being answered always stays
        self._reply_start = min(self._reply_start, len(self.messages) - 1)
        self.fit()

    def add_tool_round(self, said: str, calls: Sequence[ToolCall], results: Sequence[ToolResult],
                       read_from_words: bool = False) -> None:
        """A round of the reply in progress that asked for tools: what the model said before its
        calls, the calls (arguments as the model's JSON text) and their results. Calls read from
        the user's words (`ToolPrompt.call_from_words`: no model round wrote them) that all
        succeeded are given with the question instead ("What time is it?\n(clock: ...)"): the
        round's markup was ~35 more tokens of prompt before the first word ("Can you tell me the
        time?" and the clock's result: 65 new tokens as a round, ~30 so, in the cascade's template).
        Real-shaped calls, the same hour (`./dev.sh bench --real-call`, 2026-12-06): arithmetic
        p50 1667 -> 1226 ms, the time 1686 -> 1234 ms (worst 2043 -> 1608)."""
        asked = self.messages[-1] if self.messages and self.messages[-1]["role"] == "user" else None
        if read_from_words and asked is not None and results and all(r.ok for r in results):
            notes = "".join(f"\n({result.call.name}: {result.content})" for result in results)
            self.messages[-1] = {**asked, "content": asked["content"] + notes}
            self.fit()
            return
        self.messages.append({"role": "assistant", "content": said.strip(), "tool_calls": [
            {"id": call.id, "type": "function", "function": {"name": call.name, "arguments": call.arguments}}
            for call in calls]})
        for result in results:
            self.messages.append({"role": "tool", "tool_call_id": result.call.id, "content": result.content})
        self.fit()

    def record_agent_reply(self, spoken_text: str) -> bool:
        """Store what the agent actually said (the part that was played) after the user's turn,
        after the reply's tool rounds (see the module docstring). False when there was no
        answered user turn to record it for (nothing changed)."""
        start, self._reply_start = self._reply_start, None
        if start is None or start >= len(self.messages) or self.messages[start]["role"] != "user":
            return False  # nothing was asked (only fillers or noise, or the reply never began)
        spoken = spoken_text.strip()
        if spoken:
            for message in self.messages[start + 1:]:
                if message.get("tool_calls"):
                    message["content"] = ""
            self.messages.append({"role": "assistant", "content": spoken})
        else:
            del self.messages[start + 1:]  # nothing was heard: the question alone stays
        self._trim(self.history_turns - 1)  # leave room for the next question
        return True

    def rollback(self) -> None:
        """Forget the reply in progress as if it had never been asked."""
        if self._reply_start is not None:
            del self.messages[self._reply_start:]
            self._reply_start = None

    def _trim(self, exchanges: int) -> None:
        """Keep the last `exchanges` user turns and what followed each (answers, tool rounds)."""
        users = [i for i, message in enumerate(self.messages) if message["role"] == "user"]
        if exchanges <= 0:
            self.messages.clear()
        elif len(users) > exchanges:
            del self.messages[: users[-exchanges]]
        while self.messages and self.messages[0]["role"] != "user":
            self.messages.pop(0)

    def _size(self, message: dict) -> int:
        assert self.tokens_in is not None
        calls = json.dumps(message["tool_calls"]) if message.get("tool_calls") else ""
        return self.tokens_in(str(message.get("content") or "") + calls) + MESSAGE_OVERHEAD_TOKENS

    def fit(self) -> None:
        """Keep the prompt within `budget` tokens: drop the oldest exchanges, then cut a user
        message too long on its own (the newest) to what fits. Without a token count: nothing."""
        if self.tokens_in is None or self.budget is None:
            return
        fixed = self._size(self.system_message())
        sizes = [self._size(m) for m in self.messages]
        while fixed + sum(sizes) > self.budget and sum(m["role"] == "user" for m in self.messages) > 1:
            drop = next(i for i, m in enumerate(self.messages) if i and m["role"] == "user")  # the oldest exchange
            del self.messages[:drop], sizes[:drop]
            if self._reply_start is not None:
                self._reply_start = max(0, self._reply_start - drop)
        over = fixed + sum(sizes) - self.budget
        last = self.messages[-1] if self.messages else None
        if over > 0 and last is not None and last["role"] == "user":
            text = last["content"]
            keep = max(0, len(text) * (sizes[-1] - over) // max(1, sizes[-1]) - 16)
            log.warning("a %d-token user message does not fit the LLM's context: cut to %d characters",
                        sizes[-1], keep)
            last["content"] = text[:keep]
