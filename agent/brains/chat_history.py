"""One session's conversation as chat messages for a text LLM: the persona (system prompt) and a
bounded history that holds what the user said and only what the agent actually said.

Shared by the brains that talk to a chat LLM (the in-process cascade, the OpenAI-compatible
engine), so they keep the same semantics: the newest `history_turns` exchanges, always starting
with a user turn; the reply in progress forgotten on `rollback()` (a preemptive answer the user
talked over); an utterance that is not answered (fillers, noise) never stored.
"""

from __future__ import annotations


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

    def record_agent_reply(self, spoken_text: str) -> bool:
        """Store what the agent actually said (the part that was played) after the user's turn.
        False when there was no answered user turn to record it for (nothing changed)."""
        self._reply_start = None
        if not self.messages or self.messages[-1]["role"] != "user":
            return False
        if spoken_text.strip():
            self.messages.append({"role": "assistant", "content": spoken_text.strip()})
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
        if len(self.messages) > keep:
            del self.messages[: len(self.messages) - keep]
        while self.messages and self.messages[0]["role"] != "user":
            self.messages.pop(0)
