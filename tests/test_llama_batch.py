"""`BatchedLlama`: every slot's answer in one llama.cpp decode per step.

The planning rules run without a model; the rest runs the real GGUF (the `models` fixture's
cascade, whose slots are one `BatchedLlama`'s sequences)."""

import asyncio
import contextlib
import json
import subprocess
import sys
from pathlib import Path

import pytest

from agent.brains.llama_batch import BatchedLlama, _Request
from agent.config import load_config
from agent.runtime.scheduler import Urgency


def planner(prompt_chunk: int = 64) -> BatchedLlama:
    """A BatchedLlama with no model: `_plan` reads only the config."""
    batched = object.__new__(BatchedLlama)
    batched.config = load_config(environ={}, overrides={"llm.prompt_chunk": str(prompt_chunk)}).llm
    return batched


def request(seq: int, deadline: float, *, streaming: bool = False, warm_up: bool = False) -> _Request:
    made = _Request(seq, [1, 2, 3], 0 if warm_up else 16, Urgency(lambda: deadline, f"call {seq}"))
    if streaming:
        made.pending, made.next_token = [], 7
    return made


def test_a_step_holds_every_streaming_answer_then_the_prompts_most_urgent_first():
    plan = planner()._plan([request(0, 5.0), request(1, 9.0, streaming=True), request(2, 1.0),
                            request(3, 2.0, streaming=True)])
    assert [(e.request.seq, e.streaming) for e in plan] == [(3, True), (1, True), (2, False), (0, False)]
    assert [e.tokens for e in plan if e.streaming] == [[7], [7]]


def test_a_warm_up_waits_for_a_step_without_answers():
    warm = request(0, -100.0, warm_up=True)  # even "due" long ago, nobody listens for it
    assert [e.request for e in planner()._plan([warm, request(1, 5.0, streaming=True)])][0].seq == 1
    assert len(planner()._plan([warm, request(1, 5.0, streaming=True)])) == 1
    assert [e.request for e in planner()._plan([warm])] == [warm]


def test_an_answer_whose_reader_lags_sits_out_the_next_steps():
    lagging = request(0, 1.0, streaming=True)
    lagging.unread = 2
    assert not lagging.ready
    lagging.unread = 1
    assert lagging.ready


@pytest.mark.models
async def test_four_answers_at_once_are_decoded_together_and_each_is_right(models):
    chat = models.brain.chat
    batched = chat.batched
    original = batched._decode_blocking
    step_sizes: list[int] = []
    batched._decode_blocking = lambda plan: (step_sizes.append(len(plan)), original(plan))[1]
    system = {"role": "system", "content": "You are a helpful voice assistant. Answer in one short sentence."}
    asked = {"What is the capital of France?": "paris", "How many legs does a spider have?": "eight",
             "What do bees make?": "honey", "What colour is the sky on a clear day?": "blue"}

    async def answer(seq: int, question: str) -> str:
        prompt = batched.prompt_tokens([system, {"role": "user", "content": question}])
        async with contextlib.aclosing(batched.generate(seq, prompt, 40)) as pieces:
            return "".join([piece async for piece in pieces])

    try:
        answers = await asyncio.gather(*(answer(seq, q) for seq, q in enumerate(asked)))
    finally:
        del batched._decode_blocking
    for (question, word), text in zip(asked.items(), answers):
        assert word in text.lower(), (question, text)
    assert max(step_sizes) == 4, step_sizes  # the four were in the same steps
    assert len(step_sizes) < sum(chat.tokens_in(text) for text in answers)


@pytest.mark.models
async def test_a_tool_call_under_a_grammar_is_the_schema_s_json(models):
    """A forced call's text is held to its JSON Schema by the answer's own sampler chain."""
    batched = models.brain.chat.batched
    shape = {"type": "object", "properties": {"name": {"const": "calculator"},
                                              "arguments": {"type": "object", "properties": {"expression": {"type": "string"}},
                                                            "required": ["expression"]}},
             "required": ["name", "arguments"]}
    prompt = batched.prompt_tokens([{"role": "user", "content": "What is twelve times eleven?"}])
    text = "".join([piece async for piece in batched.generate(1, prompt, 60, shape)])
    call = json.loads(text)
    assert call["name"] == "calculator" and "12" in call["arguments"]["expression"]


@pytest.mark.models
async def test_the_unbatched_cascade_still_answers(config):
    """`llm.batched = false`: a llama.cpp context per slot (`LlamaChat`), the shape before batching."""
    from agent.brains import cascade
    from agent.brains.llama_chat import LlamaChat
    from agent.runtime.model_files import ensure_files, resolve_cache_dir

    unbatched = config.replace(**{"llm.batched": False, "llm.slots": 1})
    paths = ensure_files(cascade.MODEL_FILES, resolve_cache_dir(unbatched.models.cache_dir), progress=False)
    brain = cascade.load(unbatched, paths)
    try:
        assert isinstance(brain.chat, LlamaChat)
        messages = [{"role": "system", "content": "Answer in one short sentence."},
                    {"role": "user", "content": "What is the capital of France?"}]
        assert "paris" in "".join([piece async for piece in brain.chat.stream(messages)]).lower()
    finally:
        brain.close()


@pytest.mark.models
def test_where_llama_cpp_repacks_the_weights_the_gguf_is_read_not_mapped():
    """The repacked weights are a copy; a mapped GGUF would stay resident beside them (~0.6 GB,
    agent/runtime/llama_cpu.py). Loaded in a fresh process: this one maps the GGUF elsewhere too."""
    code = """
import sys
from agent.brains import cascade, llama_batch, llama_chat
from agent.config import load_config
from agent.runtime.llama_cpu import map_weights
from agent.runtime.model_files import ensure_files, resolve_cache_dir
config = load_config(environ={})
paths = ensure_files(tuple(cascade.MODEL_FILES), resolve_cache_dir(config.models.cache_dir), progress=False)
gguf = paths[llama_chat.LLM_GGUF.relpath]
batched = llama_batch.BatchedLlama(gguf, config.replace(**{"llm.slots": 1}).llm)
mapped = str(gguf) in open("/proc/self/maps").read()
print(f"mapped={mapped} map_weights={map_weights()}")
batched.close()
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          cwd=Path(__file__).resolve().parent.parent)
    assert done.returncode == 0, done.stderr[-2000:]
    line = done.stdout.strip().splitlines()[-1]
    assert line in ("mapped=False map_weights=False", "mapped=True map_weights=True"), line
