"""The offline CPU brain: faster-whisper (tiny.en, `whisper_asr`) transcribes, llama.cpp streams
the answer: `llm.slots` answers at once, decoded together in one context (`llama_batch`, the
default) or each in a context of its own (`llama_chat`, `llm.batched = false`).

Both models are loaded once and shared by every session; each runs in its own model thread.
llama-cpp-python reuses the KV cache for the longest prompt prefix it has already evaluated,
so the system prompt (warmed at load) and a session's earlier turns are not evaluated again.
A conversation's history is a `ChatHistory` bounded by turns and by the LLM's context; after
each answer the next turn's prompt prefix is evaluated in the background, in the conversation's
slot when one is free.

Tools: the prompt is the GGUF's own chat template (Qwen2.5's, through llama-cpp-python's
Jinja2 formatter) given the tools, which lists them in the system turn; the tool box's
instructions (e.g. "call the calculator for any calculation") follow the persona. The model's
text streams through a `ToolMarkupScanner`, so what it says before a call is spoken at once and
the call's markup never is. When the user's words require a tool (`ToolPrompt.required_tool`,
e.g. a calculation), the first round is that call: read from the words when the tool can
(`ToolPrompt.call_from_words`: "twelve times eleven" is `12 * 11`, no model round, and its
result is given with the question, `ChatHistory.add_tool_round`), else written by the model
under a llama.cpp grammar that holds it to a JSON call of that tool. A conversation with tools
warms its own prompt prefix (system turn with the tools) when it opens, so the tools cost no
prompt time on the first turn.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from pathlib import Path
from typing import AsyncIterator, Sequence

import numpy as np

from agent.config import AsrConfig, BrainConfig, Config, LlmConfig
from agent.runtime.scheduler import current_urgency, when_idle

from .base import Brain, BrainKind, Conversation, ReplyItem, ToolCall, ToolPrompt, ToolResult, TranscriptCallback
from .chat_history import ChatHistory, persona
from .llama_batch import BatchedLlama, SequenceChat
from .llama_chat import LLM_GGUF, ChatSlots, LlamaChat
from .tool_markup import ToolMarkupScanner
from .whisper_asr import WHISPER_FILES, WhisperTranscriber, whisper_dir

log = logging.getLogger(__name__)

MODEL_FILES = (*WHISPER_FILES, LLM_GGUF)
CONTEXT_MARGIN_TOKENS = 32  # slack for what the size estimate leaves out (template tokens, the tools' framing)


class CascadeBrain(Brain):
    name = "cascade"
    supports_tools = True

    def __init__(self, transcriber: WhisperTranscriber, chats: Sequence[LlamaChat | SequenceChat],
                 config: BrainConfig) -> None:
        self.transcriber = transcriber
        self.slots = ChatSlots(chats)
        self.config = config

    @property
    def chat(self) -> LlamaChat | SequenceChat:
        """The first slot's chat (for measuring one LLM alone)."""
        return self.slots.chats[0]

    @classmethod
    def load(cls, whisper_dir: Path, gguf: Path, brain: BrainConfig, asr: AsrConfig, llm: LlmConfig) -> "CascadeBrain":
        transcriber = WhisperTranscriber(whisper_dir, asr)
        if llm.batched:
            chats: Sequence[LlamaChat | SequenceChat] = BatchedLlama(gguf, llm).chats()
        else:
            chats = [LlamaChat(gguf, llm, name=f"llm{i + 1}" if llm.slots > 1 else "llm") for i in range(llm.slots)]
        log.info("cascade brain loaded: whisper %.2fs, llm %.2fs (%d slot%s)", transcriber.load_s,
                 sum(c.load_s for c in chats), llm.slots, "" if llm.slots == 1 else "s")
        return cls(transcriber, chats, brain)

    def new_history(self, tools: ToolPrompt | None = None) -> ChatHistory:
        """A conversation's history, bounded by `brain.history_turns` and by the LLM's context
        (`llm.context_tokens`, leaving `llm.max_tokens` for the answer and room for the tools)."""
        chat = self.chat
        budget = chat.config.context_tokens - chat.config.max_tokens - CONTEXT_MARGIN_TOKENS
        if tools is not None and tools.specs:
            budget -= chat.tokens_in(json.dumps(tools.specs))
        return ChatHistory(persona(self.config.system_prompt, tools), self.config.history_turns,
                           tokens_in=chat.tokens_in, budget=budget)

    def system_message(self, tools: ToolPrompt | None = None) -> dict:
        return {"role": "system", "content": persona(self.config.system_prompt, tools)}

    def next_prompt_prefix(self, history: list[dict], tools: ToolPrompt | None = None) -> list[dict]:
        """Messages whose formatted prompt is a prefix of the next turn's prompt: an empty user
        turn renders the same role header the real one will have."""
        return [self.system_message(tools), *history, {"role": "user", "content": ""}]

    def new_conversation(self, tools: ToolPrompt | None = None) -> "CascadeConversation":
        return CascadeConversation(self, tools if tools is not None and tools.specs else None)

    async def warm_up(self, tools: ToolPrompt | None = None) -> None:
        started = time.perf_counter()
        await self.transcriber.transcribe(np.zeros(16000, dtype=np.int16))
        tools = tools if tools is not None and tools.specs else None
        for chat in self.slots.chats:
            # Each slot caches the system turn (with the tools: ~316 tokens, ~2 s to evaluate on
            # 2 cores, `./dev.sh bench --tool-prompt`), so a first turn on any slot starts warm.
            await chat.warm(self.next_prompt_prefix([], tools), tools.specs if tools is not None else None)
        log.info("cascade brain warmed up in %.2fs", time.perf_counter() - started)

    def capacity(self) -> int:
        """One call per LLM slot. On the 2-core machines measured, 4 batched slots answer 4 callers
        asking at once at a median of 2.3-2.5 s and at most 2.9 s, 3 within the budget (1.7 / 1.9 s;
        `./dev.sh bench --concurrency K --together`, docs/DEPLOYMENT.md "In process, batched")."""
        return len(self.slots.chats)

    def load_times(self) -> dict[str, float]:
        return {"asr": self.transcriber.load_s, "llm": sum(c.load_s for c in self.slots.chats)}

    def close(self) -> None:
        self.transcriber.thread.shutdown()
        self.slots.close()


def _log_warm_failure(future: asyncio.Future) -> None:
    if not future.cancelled() and future.exception() is not None:
        log.warning("prompt cache warm-up failed: %s", future.exception())


class CascadeConversation(Conversation):
    def __init__(self, brain: CascadeBrain, tools: ToolPrompt | None = None) -> None:
        self.brain = brain
        self.tools = tools
        self.chat_history = brain.new_history(tools)
        self._warming: asyncio.Future | None = None
        self._heard: tuple[np.ndarray, str] | None = None  # the last transcribe(): reply() reuses it
        # the last round's text, its calls, and whether they were read from the user's words
        self._round: tuple[str, list[ToolCall], bool] | None = None
        self._slot: int | None = None  # the LLM slot this conversation used last (its prompt is cached there)
        self._call_ids = 0
        if tools is not None:
            self._warm_next_prompt()  # the system turn with the tools, before the first question

    @property
    def history(self) -> list[dict]:
        return self.chat_history.messages

    @property
    def _specs(self) -> tuple[dict, ...] | None:
        return self.tools.specs if self.tools is not None else None

    def _warm_next_prompt(self) -> None:
        """Evaluate the next turn's prompt prefix in the background (off the critical path)."""
        try:
            self._warming = asyncio.ensure_future(self._warm(self.chat_history.next_prompt_prefix()))
        except RuntimeError:  # no event loop (a conversation made outside one): the first turn pays
            return
        self._warming.add_done_callback(_log_warm_failure)

    async def _warm(self, prefix: list[dict]) -> None:
        """Evaluate `prefix` in this conversation's slot if one is free (an idle moment's work: it
        never waits for a slot, and it yields the CPU to any call with audio due)."""
        async with self.brain.slots.lease(self._slot, wait=False, owner=self) as slot:
            if slot is None:
                return
            self._slot = slot
            token = current_urgency.set(when_idle("prompt warm-up"))
            try:
                await self.brain.slots.chats[slot].warm(prefix, self._specs)
            finally:
                current_urgency.reset(token)

    async def _stop_warming(self) -> None:
        """A reply needs the slot now: a warm-up that has not started never will (the reply
        evaluates its prompt itself), and one in its step finishes there, ahead of the reply, in
        the same slot (the slot's thread runs one step at a time)."""
        warming, self._warming = self._warming, None
        if warming is not None and not warming.done():
            warming.cancel()
            await asyncio.wait([warming])  # until it has given its slot back (our own cancel still raises)

    async def transcribe(self, audio: np.ndarray) -> str:
        text = await self.brain.transcriber.transcribe(audio)
        self._heard = (audio, text)
        return text

    async def reply(self, audio: np.ndarray, on_transcript: TranscriptCallback) -> AsyncIterator[ReplyItem]:
        self.chat_history.begin_reply()
        self._round = None
        heard, self._heard = self._heard, None
        if heard is not None and np.array_equal(heard[0], audio):
            text = heard[1]
        else:
            text = await self.brain.transcriber.transcribe(audio)
        if on_transcript(text) is False or not text:
            return
        self.chat_history.add_user(text)
        ready = self.tools.call_from_words(text, self._new_call_id) if self.tools is not None else None
        if ready is not None:  # the words hold the call itself (arithmetic): no model round writes it
            self._round = ("", [ready], True)
            yield ready
            return
        required = self.tools.required_tool(text) if self.tools is not None else None
        async with contextlib.aclosing(self._generate(required)) as items:
            async for item in items:
                yield item

    async def continue_reply(self, results: Sequence[ToolResult]) -> AsyncIterator[ReplyItem]:
        if self._round is None or not self._round[1]:
            raise RuntimeError("continue_reply() without a round that asked for tools")
        said, calls, from_words = self._round
        self._round = None
        self.chat_history.add_tool_round(said, calls, results, from_words)
        async with contextlib.aclosing(self._generate()) as items:
            async for item in items:
                yield item

    async def _generate(self, required: str | None = None) -> AsyncIterator[ReplyItem]:
        """One round: the model's answer to the history so far (a call to tool `required`, if
        given: a grammar holds its text to that call's JSON)."""
        messages = self.chat_history.prompt()
        await self._stop_warming()
        async with self.brain.slots.lease(self._slot, owner=self) as slot:
            self._slot = slot
            chat = self.brain.slots.chats[slot]
            async with contextlib.aclosing(self._round_items(chat, messages, required)) as items:
                async for item in items:
                    yield item

    async def _round_items(self, chat: LlamaChat | SequenceChat, messages: list[dict], required: str | None) -> AsyncIterator[ReplyItem]:
        if self.tools is None:
            async with contextlib.aclosing(chat.stream(messages)) as pieces:
                async for piece in pieces:
                    yield piece
            return
        scanner = ToolMarkupScanner(self._new_call_id)
        shape = None
        if required is not None:
            log.debug("the user's words call for %s: the model must call it", required)
            shape = self.tools.call_schema(required)
        async with contextlib.aclosing(chat.stream(messages, self._specs, shape)) as pieces:
            async for piece in pieces:
                # An empty piece while a call is being written: the model is working (stall guard).
                yield scanner.feed(piece)
        rest, calls = scanner.finish()
        if calls:
            log.debug("the model asks for %s", ", ".join(f"{c.name}({c.arguments})" for c in calls))
            self._round = (scanner.spoken_before_markup, calls, False)
            for call in calls:
                yield call
        elif rest:
            yield rest

    def _new_call_id(self) -> str:
        self._call_ids += 1
        return f"call_{self._call_ids}"

    def rollback(self) -> None:
        self.chat_history.rollback()
        self._round = None

    def record_agent_reply(self, spoken_text: str) -> None:
        self._round = None
        if self.chat_history.record_agent_reply(spoken_text):
            # The history is trimmed now, leaving room for the next user message: evaluate the
            # resulting prompt prefix in the background. When trimming drops the oldest exchange
            # the cached prefix no longer matches, and re-evaluating the whole history would
            # otherwise land on the next turn's critical path (~1 s here).
            self._warm_next_prompt()


def load(config: Config, paths) -> CascadeBrain:
    return CascadeBrain.load(whisper_dir=whisper_dir(paths), gguf=paths[LLM_GGUF.relpath],
                             brain=config.brain, asr=config.asr, llm=config.llm)


KIND = BrainKind(
    name="cascade",
    model_files=lambda _config: MODEL_FILES,
    load=load,
    why="the offline CPU cascade (whisper -> llama.cpp) runs anywhere",
)
