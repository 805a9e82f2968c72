"""Every slot's answer in one llama.cpp decode: continuous batching inside the process.

`BatchedLlama` holds the pinned GGUF and one llama.cpp context of `llm.slots` sequences, one per
slot, each `llm.context_tokens` long. Whatever the slots have in progress (the next token of an
answer, the new tail of a prompt, a warm-up) is evaluated together, in one `llama_decode` per
step, and each answer samples its own next token from its row of logits with its own sampler
chain (its temperature, and its grammar when it must write a tool call). A token on its own
runs llama.cpp's matrix-vector path and several run its matrix-matrix path, so the step of four
answers costs far less than four steps of one: on this project's 2-core machine (repacked
weights), 107 ms for the four on 2 threads against 102 ms for one token on 1 thread and 58 ms
on 2 (`./dev.sh bench --floor`, which times that step through this class; `llama-batched-bench
-npp 16 -ntg 16 -npl 1,2,4` agrees: 100 ms against 108 and 60).
A context per slot (`LlamaChat`) decodes four answers one token after another and holds ~0.7 GB
each; here the slots share one KV cache allocation and one set of compute buffers.

`SequenceChat` is one slot's view with `LlamaChat`'s interface (`stream`, `warm`, `tokens_in`),
so `ChatSlots` leases either kind.

How a step is made (`_plan`, in the event loop; `_decode_blocking`, in the model thread):
- every answer with a sampled token not yet evaluated adds that token (nearly free);
- answers still evaluating their prompt add its tokens, most urgent first (the scheduler's
  deadlines), up to `llm.prompt_chunk` tokens in all when the step serves more than one answer
  (so the streaming answers' tokens keep coming, and the most urgent of several new prompts
  gets its first token first) and up to the batch size when it serves one;
- a warm-up (a prompt prefix evaluated ahead, nobody waiting) runs only in a step without any
  answer, so it never delays one.
The step leases `llm.threads` cores (the scheduler's known exception: a step of several tokens
runs on `llm.batch_threads`, see `_drive`) with the deadline of its most urgent answer, and its
wait is charged to every answer in it. A conversation's prompt reuses what its sequence already holds:
the common prefix, and a trimmed history shifted (`plan_cache_shift`).
"""

from __future__ import annotations

import asyncio
import codecs
import ctypes
import contextlib
import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import AsyncIterator, Sequence

from agent.config import LlmConfig
from agent.runtime.llama_cpu import extra_buffers_safe, map_weights
from agent.runtime.model_thread import ModelThread
from agent.runtime.scheduler import Urgency, clock, current_urgency

from .llama_chat import plan_cache_shift, template_messages

log = logging.getLogger(__name__)

BATCH_TOKENS = 512  # the most tokens one step evaluates (llama.cpp's n_batch)
MAX_AHEAD = 2  # an answer whose reader leaves this many pieces untaken sits out the next steps (backpressure)
PENALTY_LAST_N = 64  # the sampler chain of llama-cpp-python's chat completion: top-k 40, top-p 0.95,
TOP_K, TOP_P, MIN_P, REPEAT_PENALTY = 40, 0.95, 0.05, 1.1  # min-p 0.05, repeat penalty 1.1 over 64


@dataclass(eq=False)
class _Request:
    """One answer (or warm-up) in progress on sequence `seq`."""

    seq: int
    prompt: list[int]
    max_tokens: int  # 0: a warm-up, evaluate the prompt only
    urgency: Urgency | None
    sampler: object | None = None  # llama-cpp-python's LlamaSampler chain (None for a warm-up)
    asked: float = field(default_factory=clock)
    queue: asyncio.Queue = field(default_factory=asyncio.Queue)
    pending: list[int] | None = None  # prompt tokens still to evaluate (None: not started)
    next_token: int | None = None  # sampled, not yet evaluated
    produced: int = 0
    unread: int = 0  # pieces delivered and not yet taken
    stopped: bool = False
    done: bool = False
    decoder: codecs.IncrementalDecoder = field(default_factory=lambda: codecs.getincrementaldecoder("utf-8")("replace"))

    @property
    def is_warm_up(self) -> bool:
        return self.max_tokens == 0

    def deadline(self) -> float:
        return self.urgency.deadline() if self.urgency is not None else self.asked

    @property
    def ready(self) -> bool:
        """It has work for the next step: its prompt, or a token, and room to deliver a piece."""
        return not self.done and not self.stopped and self.unread < MAX_AHEAD


@dataclass
class _Entry:
    """What one request puts in a step: its sampled token (`streaming`) or a chunk of its prompt
    (taken in the model thread); `row` is the batch row whose logits it samples from (-1: none)."""

    request: _Request
    streaming: bool
    tokens: list[int] = field(default_factory=list)
    row: int = -1


class _StepUrgency(Urgency):
    """A step as urgent as its most urgent request; `spread` charges its wait to each of them."""

    def __init__(self, requests: list[_Request]) -> None:
        lead = min(requests, key=_Request.deadline)
        super().__init__(lambda: min(r.deadline() for r in requests),
                         lead.urgency.label if lead.urgency is not None else "")
        self.requests = requests

    def spread(self) -> None:
        for urgency in {id(r.urgency): r.urgency for r in self.requests if r.urgency is not None}.values():
            urgency.waited_s += self.waited_s
            urgency.steps += 1
            for model, waited in self.waited_by_model.items():
                urgency.waited_by_model[model] = urgency.waited_by_model.get(model, 0.0) + waited


class BatchedLlama:
    def __init__(self, model_path: Path, config: LlmConfig, name: str = "llm") -> None:
        from llama_cpp import _internals, llama_cpp
        from llama_cpp._logger import set_verbose
        from llama_cpp.llama_chat_format import Jinja2ChatFormatter

        started = time.perf_counter()
        set_verbose(False)  # llama.cpp's log off, as `Llama(verbose=False)` sets it
        self.config = config
        self._lib = llama_cpp
        self._internals = _internals
        model_params = llama_cpp.llama_model_default_params()
        model_params.use_extra_bufts = extra_buffers_safe()  # see agent/runtime/llama_cpu.py
        # read into memory where the weights are repacked (a mapped copy would stay resident too)
        model_params.load_mode = llama_cpp.LLAMA_LOAD_MODE_MMAP if map_weights() else llama_cpp.LLAMA_LOAD_MODE_NONE
        self._model = _internals.LlamaModel(path_model=str(model_path), params=model_params, verbose=False)
        params = llama_cpp.llama_context_default_params()
        params.n_ctx = config.context_tokens * config.slots
        params.n_batch = params.n_ubatch = BATCH_TOKENS
        params.n_seq_max = config.slots
        params.kv_unified = False  # each sequence its own llm.context_tokens of cache
        params.n_threads, params.n_threads_batch = config.threads, config.batch_threads
        self._ctx = _internals.LlamaContext(model=self._model, params=params, verbose=False)
        self._batch = _internals.LlamaBatch(n_tokens=BATCH_TOKENS, embd=0, n_seq_max=1, verbose=False)
        eos, bos = self._model.token_eos(), self._model.token_bos()
        self._formatter = Jinja2ChatFormatter(
            template=self._model.metadata()["tokenizer.chat_template"],
            eos_token=self._model.token_get_text(eos) if eos != -1 else "",
            bos_token=self._model.token_get_text(bos) if bos != -1 else "",
            stop_token_ids=[eos])
        self._cached: list[list[int]] = [[] for _ in range(config.slots)]  # each sequence's tokens in the cache
        self._requests: list[_Request] = []
        self._wake: asyncio.Event | None = None
        self._driver: asyncio.Task | None = None
        self._seed = 0
        self._piece_buffer = ctypes.create_string_buffer(64)
        self.thread = ModelThread(name, cores=config.threads)
        self.load_s = time.perf_counter() - started

    def chats(self) -> list["SequenceChat"]:
        return [SequenceChat(self, seq) for seq in range(self.config.slots)]

    # -- prompts --------------------------------------------------------------------------------
    def prompt_tokens(self, messages: list[dict], tools: Sequence[dict] | None = None) -> list[int]:
        """The chat template's prompt for `messages` (and `tools`), as tokens: the prompt
        llama-cpp-python's chat completion would evaluate."""
        result = self._formatter(messages=template_messages(messages), tools=list(tools) if tools else None)
        return self._model.tokenize(result.prompt.encode("utf-8"), add_bos=not result.added_special, special=True)

    def tokens_in(self, text: str) -> int:
        return len(self._model.tokenize(text.encode(), add_bos=False, special=True)) if text else 0

    def _sampler(self, shape: dict | None):
        from llama_cpp import LlamaGrammar

        sampler = self._internals.LlamaSampler()
        if shape is not None:
            sampler.add_grammar(self._model, LlamaGrammar.from_json_schema(json.dumps(shape), verbose=False))
        sampler.add_penalties(self._model.n_vocab(), PENALTY_LAST_N, REPEAT_PENALTY, 0.0, 0.0)
        if self.config.temperature <= 0:
            sampler.add_greedy()
            return sampler
        sampler.add_top_k(TOP_K)
        sampler.add_top_p(TOP_P, 1)
        sampler.add_min_p(MIN_P, 1)
        sampler.add_temp(self.config.temperature)
        self._seed += 1
        sampler.add_dist(self._seed)
        return sampler

    # -- the event loop's side --------------------------------------------------------------------
    async def generate(self, seq: int, prompt: list[int], max_tokens: int, shape: dict | None = None) -> AsyncIterator[str]:
        """The answer's text pieces on sequence `seq` (max_tokens 0: evaluate `prompt` only, a
        warm-up, yielding nothing). Closing the iterator stops the answer before its next step."""
        self.thread.check_usable()
        request = _Request(seq, list(prompt), max_tokens, current_urgency.get(),
                           self._sampler(shape) if max_tokens > 0 else None)
        self._requests.append(request)
        self._poke()
        try:
            while True:
                piece, error = await request.queue.get()
                if piece is None:
                    if error is not None:
                        raise error
                    return
                request.unread -= 1
                self._poke()
                yield piece
        finally:
            request.stopped = True
            if request in self._requests:
                self._requests.remove(request)

    def _poke(self) -> None:
        """Wake the driver (there is work, or room for it), starting one in this loop if none runs."""
        loop = asyncio.get_running_loop()
        if self._driver is None or self._driver.done() or self._driver.get_loop() is not loop:
            self._wake = asyncio.Event()
            self._driver = loop.create_task(self._drive(), name="llm batch")
        assert self._wake is not None
        self._wake.set()

    async def _drive(self) -> None:
        """Make and run steps while any request has work."""
        assert self._wake is not None
        while self._requests:
            self._wake.clear()
            ready = [r for r in self._requests if r.ready]
            plan = self._plan(ready)
            if not plan:
                await self._wake.wait()
                continue
            step = _StepUrgency([entry.request for entry in plan])
            waiting = [r.urgency for r in ready if r.urgency is not None]
            for urgency in waiting:  # waiting for the CPU or in a step: not a stalled model
                urgency.waiting += 1
            token = current_urgency.set(step)
            # The thread's lease, llm.threads cores, also for a step llama.cpp runs on
            # llm.batch_threads (several tokens): leasing both cores made every voice sentence wait
            # a whole step (four callers at once: median 2868 ms, worst 4162, voice queued 933 ms a
            # turn, against 2265 / 2866 and 0 ms with one core leased; `./dev.sh bench --concurrency
            # 4 --together --turns 3`, 2026-12-04, this machine).
            started = clock()
            try:
                pieces = await self.thread.run(self._decode_blocking, plan)
            except Exception as exc:  # noqa: BLE001 - a model failure ends the step's answers with it
                log.warning("an LLM batch step failed: %s", exc)
                for entry in plan:
                    self._finish(entry.request, exc)
                continue
            finally:
                current_urgency.reset(token)
                for urgency in waiting:
                    urgency.waiting -= 1
                step.spread()
            if log.isEnabledFor(logging.DEBUG):
                log.debug("llm step: %d tokens of %d sequences (%s), %.0f ms waiting, %.0f ms in all", sum(len(e.tokens) for e in plan),
                          len(plan), ", ".join(f"{e.request.seq}:{len(e.tokens)}{'s' if e.streaming else 'p'}" for e in plan),
                          step.waited_s * 1000, (clock() - started) * 1000)
            for entry, (piece, finished) in zip(plan, pieces):
                request = entry.request
                if request.stopped:
                    continue
                if piece:
                    request.unread += 1
                    request.queue.put_nowait((piece, None))
                if finished:
                    self._finish(request, None)
            await asyncio.sleep(0)  # the readers take their pieces before the next step is planned

    def _finish(self, request: _Request, error: BaseException | None) -> None:
        request.done = True
        request.queue.put_nowait((None, error))
        if request in self._requests:
            self._requests.remove(request)

    def _plan(self, ready: list[_Request]) -> list[_Entry]:
        """The next step's requests (see the module docstring): every streaming answer, then the
        answers evaluating their prompt, most urgent first; a warm-up only when no answer is ready."""
        answers = [r for r in ready if not r.is_warm_up]
        chosen = sorted(answers, key=_Request.deadline) if answers else ready[:1]
        streaming = [_Entry(r, True, [r.next_token]) for r in chosen if r.next_token is not None]
        return streaming + [_Entry(r, False) for r in chosen if r.next_token is None]

    # -- the model thread -----------------------------------------------------------------------
    def _start(self, request: _Request) -> None:
        """Reuse what `request`'s sequence holds: the common prefix, else a shifted trim."""
        seq, prompt = request.seq, request.prompt
        cached = self._cached[seq]
        shift = plan_cache_shift(cached, prompt)
        memory = self._ctx.memory
        if shift is not None:
            head, start, run = shift.head, shift.start, shift.run
            self._lib.llama_memory_seq_rm(memory, seq, start + run, -1)
            self._lib.llama_memory_seq_rm(memory, seq, head, start)
            self._lib.llama_memory_seq_add(memory, seq, start, start + run, head - start)
            cached[head:] = cached[start:start + run]
        common = 0
        for old, new in zip(cached, prompt):
            if old != new:
                break
            common += 1
        if common == len(prompt) and not request.is_warm_up:
            common -= 1  # the last prompt token is evaluated again for its logits
        # Everything of this sequence from `common` on leaves the cache, also what a failed step
        # may have left there beyond what `cached` records.
        self._lib.llama_memory_seq_rm(memory, seq, common, -1)
        del cached[common:]
        request.pending = prompt[common:]

    def _decode_blocking(self, plan: list[_Entry]) -> list[tuple[str, bool]]:
        """Evaluate the step and sample each answer's next token: (text piece, finished) per entry."""
        lib = self._lib
        streaming = sum(1 for e in plan if e.streaming)
        budget = BATCH_TOKENS - streaming
        if len(plan) > 1:  # the others' next (or first) tokens come soon
            budget = min(budget, self.config.prompt_chunk)
        batch = self._batch.batch
        batch.n_tokens = 0
        for entry in plan:
            request = entry.request
            if not entry.streaming:  # a chunk of its prompt, most urgent first, while the budget lasts
                if request.pending is None:
                    self._start(request)
                take = max(0, min(len(request.pending), budget))  # type: ignore[arg-type]
                entry.tokens, request.pending = request.pending[:take], request.pending[take:]  # type: ignore[index]
                budget -= take
                wants_logits = not request.pending and not request.is_warm_up
            else:
                wants_logits = True
            position = len(self._cached[request.seq])
            for i, token in enumerate(entry.tokens):
                j = batch.n_tokens
                batch.token[j], batch.pos[j] = token, position + i
                batch.seq_id[j][0], batch.n_seq_id[j] = request.seq, 1
                batch.logits[j] = False
                batch.n_tokens += 1
            if entry.tokens and wants_logits:
                batch.logits[batch.n_tokens - 1] = True
                entry.row = batch.n_tokens - 1
        if batch.n_tokens:
            result = lib.llama_decode(self._ctx.ctx, batch)
            if result != 0:
                for entry in plan:  # what this step held is not in the cache
                    lib.llama_memory_seq_rm(self._ctx.memory, entry.request.seq, len(self._cached[entry.request.seq]), -1)
                raise RuntimeError(f"llama_decode failed ({result}) on a step of {batch.n_tokens} tokens")
        out: list[tuple[str, bool]] = []
        for entry in plan:
            request = entry.request
            self._cached[request.seq].extend(entry.tokens)
            if entry.streaming:
                request.next_token = None
            if request.is_warm_up:
                out.append(("", not request.pending))
                continue
            if entry.row < 0:
                out.append(("", False))
                continue
            token = lib.llama_sampler_sample(request.sampler.sampler, self._ctx.ctx, entry.row)
            if lib.llama_vocab_is_eog(self._model.vocab, token):
                out.append((request.decoder.decode(b"", final=True), True))
                continue
            request.produced += 1
            request.next_token = token
            piece = request.decoder.decode(self._piece(token))
            out.append((piece, request.produced >= request.max_tokens))
        return out

    def _piece(self, token: int) -> bytes:
        """The bytes of `token`'s text (a piece of a UTF-8 character, possibly)."""
        lib = self._lib
        size = len(self._piece_buffer)
        n = lib.llama_token_to_piece(self._model.vocab, token, self._piece_buffer, size, 0, False)
        if n < 0:  # longer than the buffer: -n bytes
            self._piece_buffer = ctypes.create_string_buffer(-n)
            n = lib.llama_token_to_piece(self._model.vocab, token, self._piece_buffer, -n, 0, False)
        return self._piece_buffer.raw[:n]

    def close(self) -> None:
        """Stop the steps and free nothing in use: the model thread finishes its step first."""
        if self._driver is not None and not self._driver.done():
            self._driver.cancel()
        self.thread.shutdown()


class SequenceChat:
    """One slot of a `BatchedLlama`: its sequence, with `LlamaChat`'s interface."""

    max_ahead = 1

    def __init__(self, batched: BatchedLlama, seq: int) -> None:
        self.batched = batched
        self.seq = seq
        self.config = batched.config
        self.thread = batched.thread
        self.load_s = batched.load_s if seq == 0 else 0.0  # one model load serves every slot

    def tokens_in(self, text: str) -> int:
        return self.batched.tokens_in(text)

    def close(self) -> None:
        self.batched.close()

    async def warm(self, messages: list[dict], tools: Sequence[dict] | None = None) -> None:
        async with contextlib.aclosing(self.batched.generate(self.seq, self.batched.prompt_tokens(messages, tools), 0)) as nothing:
            async for _ in nothing:
                pass

    def stream(self, messages: list[dict], tools: Sequence[dict] | None = None,
               shape: dict | None = None) -> AsyncIterator[str]:
        prompt = self.batched.prompt_tokens(messages, tools)
        return self.batched.generate(self.seq, prompt, self.config.max_tokens, shape)
