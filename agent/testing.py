"""Stand-ins for tests and for measuring the pipeline alone: a scripted brain, a tone voice, and
a vowel-like sound the VAD takes for speech.

They are never used by `serve`; the benchmark's --stub mode and the tests use them, and they say
so in every event (`brain: "stub"`, transcripts marked "(stub)").
"""

from __future__ import annotations

import asyncio
from typing import AsyncIterator, Sequence

import numpy as np

from agent.brains.base import Brain, Conversation, ReplyItem, ToolCall, ToolPrompt, ToolResult, TranscriptCallback
from agent.models import AgentModels
from agent.voices.base import Voice

DEFAULT_SCRIPT = ("Sure. This is the scripted stub answer, spoken as a tone, "
                  "so the pipeline and the transport can be measured by themselves.")


def vowel_sound(ms: int, rate: int = 16000, f0: float = 140.0, seed: int = 0) -> np.ndarray:
    """A vowel-like int16 signal that webrtcvad accepts as speech: harmonics of f0 with
    formant-shaped amplitudes, syllable-rate amplitude modulation and a little noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(rate * ms // 1000) / rate
    signal = np.zeros_like(t)
    for k in range(1, 30):
        f = k * f0
        if f > 3800:
            break
        gain = np.exp(-((f - 700) / 300) ** 2) + 0.6 * np.exp(-((f - 1200) / 400) ** 2) + 0.3 * np.exp(-((f - 2500) / 500) ** 2)
        signal += gain * np.sin(2 * np.pi * f * t + rng.uniform(0, 2 * np.pi))
    envelope = 0.6 + 0.4 * np.sin(2 * np.pi * 4.0 * t)
    signal = signal * envelope / np.max(np.abs(signal)) * 0.5
    signal += rng.normal(0, 0.003, len(t))
    return (signal * 32767).astype(np.int16)


class ScriptedBrain(Brain):
    """Answers every utterance with the same script, word by word, after an optional delay.

    With `rounds`, a reply is those rounds instead: each a list of text and `ToolCall`s, the
    first yielded by `reply()`, the next by each `continue_reply()` (which keeps the results it
    was given in `conversation.tool_results`)."""

    name = "stub"
    supports_tools = True

    def __init__(self, script: str = DEFAULT_SCRIPT, first_token_delay_s: float = 0.0,
                 token_interval_s: float = 0.0, rounds: Sequence[Sequence[str | ToolCall]] | None = None) -> None:
        self.script = script
        self.first_token_delay_s = first_token_delay_s
        self.token_interval_s = token_interval_s
        self.rounds = [list(r) for r in rounds] if rounds is not None else [[script]]

    def new_conversation(self, tools: ToolPrompt | None = None) -> "ScriptedConversation":
        return ScriptedConversation(self, tools)


class ScriptedConversation(Conversation):
    def __init__(self, brain: ScriptedBrain, tools: ToolPrompt | None = None) -> None:
        self.brain = brain
        self.tools = tools
        self.history: list[tuple[str, str]] = []
        self.tool_results: list[ToolResult] = []
        self._reply_start: int | None = None
        self._round = 0

    async def reply(self, audio: np.ndarray, on_transcript: TranscriptCallback) -> AsyncIterator[ReplyItem]:
        self._reply_start = len(self.history)
        self._round = 0
        if on_transcript(f"(stub) {len(audio) * 1000 // 16000} ms of speech") is False:
            return
        self.history.append(("user", "(stub)"))
        if self.brain.first_token_delay_s:
            await asyncio.sleep(self.brain.first_token_delay_s)
        async for item in self._speak_round():
            yield item

    async def continue_reply(self, results: Sequence[ToolResult]) -> AsyncIterator[ReplyItem]:
        self.tool_results.extend(results)
        self.history.extend(("tool", r.content) for r in results)
        self._round += 1
        async for item in self._speak_round():
            yield item

    async def _speak_round(self) -> AsyncIterator[ReplyItem]:
        rounds = self.brain.rounds
        items = rounds[self._round] if self._round < len(rounds) else []
        words = 0
        for item in items:
            if isinstance(item, ToolCall):
                yield item
                continue
            for word in item.split(" "):
                if words and self.brain.token_interval_s:
                    await asyncio.sleep(self.brain.token_interval_s)
                yield word if words == 0 else " " + word
                words += 1

    async def transcribe(self, audio: np.ndarray) -> str:
        return f"(stub) {len(audio) * 1000 // 16000} ms of speech"

    def record_agent_reply(self, spoken_text: str) -> None:
        start, self._reply_start = self._reply_start, None
        if start is not None and start < len(self.history) and self.history[start][0] == "user":  # not a filler
            self.history.append(("assistant", spoken_text))

    def rollback(self) -> None:
        if self._reply_start is not None:
            del self.history[self._reply_start:]
            self._reply_start = None


class ToneVoice(Voice):
    """Speaks any phrase as a 440 Hz tone, `seconds_per_word` long, in 40 ms chunks, instantly."""

    name = "tone"
    sample_rate = 24000

    def __init__(self, seconds_per_word: float = 0.2, chunk_ms: int = 40) -> None:
        self.seconds_per_word = seconds_per_word
        self.chunk = self.sample_rate * chunk_ms // 1000

    async def speak(self, text: str) -> AsyncIterator[np.ndarray]:
        n = int(len(text.split()) * self.seconds_per_word * self.sample_rate)
        t = np.arange(n) / self.sample_rate
        tone = (0.3 * np.sin(2 * np.pi * 440.0 * t) * 32767).astype(np.int16)
        for start in range(0, n, self.chunk):
            yield tone[start:start + self.chunk]


def stub_models() -> AgentModels:
    """The scripted brain and the tone voice, as the models of an agent."""
    return AgentModels(ScriptedBrain(), ToneVoice(), load_s=0.0)
