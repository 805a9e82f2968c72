"""What tools cost the cascade's LLM: `run.py bench --tool-prompt`.

First-token latency (prompt evaluation + one token) of the production `LlamaChat` for plain
questions, with no tools in the prompt, with the tools prompt (the configured tools in the
chat template's system turn) whose prefix is cached as a conversation leaves it (warmed when it
opens and after each turn), and with the same prompt cold (what a first turn pays if nothing
warmed it). Then the whole calculator round trip through `CascadeConversation`: the question
given as text (ASR is not what is measured), the forced call written, the tool run, and the
first piece of the spoken answer. Last, how often the model, left to choose, calls the calculator
for a product of two-digit numbers (without `tools.force_arithmetic`). Medians over the
questions; results in tool-prompt.json.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import statistics
import time

import numpy as np

from agent.brains import cascade, llama_chat
from agent.config import Config
from agent.runtime.model_files import ensure_files, resolve_cache_dir
from agent.tools import ToolCall
from agent.tools.toolbox import toolbox_for

from .report import write_json

QUESTIONS = ("What is the capital of France?", "How many legs does a spider have?", "Why is the sea salty?",
             "Who wrote the play Romeo and Juliet?", "Tell me a joke about cats.")
PRODUCTS = ("What is 47 times 38?", "How much is 83 times 19?", "What's 62 multiplied by 57?")
# Spoken-style products for the calculator choice without tools.force_arithmetic.
CHOICE = ("Can you multiply 92 by 68?", "How much is 28 times 66?", "What is 86 x 39?", "What's 30 multiplied by 53?",
          "Can you multiply 97 by 53?", "How much is 94 times 43?", "What is 59 times 79?", "What's 17 times 83?",
          "Can you multiply 66 by 24?", "What is 61 times 21?", "How much is 77 times 95?", "What is 35 x 19?")


class GivenText:
    """Stands in for whisper: the 'audio' of a question is its text."""

    def __init__(self) -> None:
        self.text = ""

    async def transcribe(self, _audio) -> str:
        return self.text


async def first_token_s(chat: llama_chat.LlamaChat, messages: list[dict], tools) -> float:
    started = time.perf_counter()
    async with contextlib.aclosing(chat.stream(messages, tools)) as pieces:
        async for piece in pieces:
            if piece:
                return time.perf_counter() - started
    return time.perf_counter() - started


async def measure(config: Config) -> dict:
    paths = ensure_files((llama_chat.LLM_GGUF,), resolve_cache_dir(config.models.cache_dir), progress=False)
    chat = llama_chat.LlamaChat(paths[llama_chat.LLM_GGUF.relpath], config.llm)
    brain = cascade.CascadeBrain(GivenText(), [chat], config.brain)  # type: ignore[arg-type]
    box = toolbox_for(config)
    prompt = box.prompt()
    try:
        results: dict[str, list[float]] = {"no_tools": [], "tools_cached": [], "tools_cold": []}
        for question in QUESTIONS:
            user = {"role": "user", "content": question}
            await chat.warm(brain.next_prompt_prefix([]))
            results["no_tools"].append(await first_token_s(chat, [brain.system_message(), user], None))
            await chat.warm(brain.next_prompt_prefix([], prompt), prompt.specs)
            results["tools_cached"].append(await first_token_s(chat, [brain.system_message(prompt), user], prompt.specs))
            await chat.warm([{"role": "system", "content": "x"}, {"role": "user", "content": ""}])  # evict it
            results["tools_cold"].append(await first_token_s(chat, [brain.system_message(prompt), user], prompt.specs))
        trips = []
        for question in PRODUCTS:
            brain.transcriber.text = question  # type: ignore[attr-defined]
            conversation = brain.new_conversation(prompt)
            if conversation._warming is not None:
                await conversation._warming
            started = time.perf_counter()
            calls = [item async for item in conversation.reply(np.zeros(1, np.int16), lambda _t: True)
                     if isinstance(item, ToolCall)]
            called = time.perf_counter()
            outcome = [await box.run(call) for call in calls]
            ran = time.perf_counter()
            first = None
            async with contextlib.aclosing(conversation.continue_reply(outcome)) as answer:
                async for piece in answer:
                    if isinstance(piece, str) and piece:
                        first = time.perf_counter()
                        break
            trips.append({"question": question, "call_s": round(called - started, 3), "tool_s": round(ran - called, 4),
                          "answer_first_token_s": round((first or ran) - ran, 3),
                          "total_s": round((first or ran) - started, 3), "result": outcome[0].content if outcome else ""})
        chose = 0  # the model left to choose (no forced call): did it take the calculator?
        free = dataclasses.replace(prompt, required=())
        for question in CHOICE:
            brain.transcriber.text = question  # type: ignore[attr-defined]
            conversation = brain.new_conversation(free)
            items = [item async for item in conversation.reply(np.zeros(1, np.int16), lambda _t: True)]
            chose += any(isinstance(item, ToolCall) and item.name == "calculator" for item in items)
        prefix_tokens = {
            "no_tools": len(chat._llm.tokenize(_render(chat, brain.next_prompt_prefix([]), None).encode(), special=True)),
            "tools": len(chat._llm.tokenize(_render(chat, brain.next_prompt_prefix([], prompt), prompt.specs).encode(),
                                            special=True)),
        }
    finally:
        chat.thread.shutdown()
    return {"first_token_median_s": {k: round(statistics.median(v), 3) for k, v in results.items()},
            "first_token_s": {k: [round(x, 3) for x in v] for k, v in results.items()},
            "prompt_prefix_tokens": prefix_tokens, "calculator_round_trips": trips, "tools": list(box.names),
            "calculator_chosen_unforced": {"chosen": chose, "of": len(CHOICE)}}


def _render(chat: llama_chat.LlamaChat, messages: list[dict], tools) -> str:
    from llama_cpp.llama_chat_format import Jinja2ChatFormatter

    llm = chat._llm
    formatter = Jinja2ChatFormatter(llm.metadata["tokenizer.chat_template"], eos_token="<|im_end|>",
                                    bos_token="<|endoftext|>")
    return formatter(messages=messages, tools=list(tools) if tools else None).prompt


def run_tool_prompt(config: Config, out_dir: str | None = None) -> dict:
    result = asyncio.run(measure(config))
    medians = result["first_token_median_s"]
    tokens = result["prompt_prefix_tokens"]
    print(f"prompt prefix: {tokens['no_tools']} tokens without tools, {tokens['tools']} with {result['tools']}")
    print("first token (median of %d questions): no tools %.0f ms, tools cached %.0f ms, tools cold %.0f ms" % (
        len(QUESTIONS), medians["no_tools"] * 1000, medians["tools_cached"] * 1000, medians["tools_cold"] * 1000))
    for trip in result["calculator_round_trips"]:
        print(f"{trip['question']!r}: call written {trip['call_s'] * 1000:.0f} ms, tool {trip['tool_s'] * 1000:.1f} ms, "
              f"answer's first token {trip['answer_first_token_s'] * 1000:.0f} ms later ({trip['result']})")
    choice = result["calculator_chosen_unforced"]
    print(f"without tools.force_arithmetic the model called the calculator for {choice['chosen']} of {choice['of']} products")
    write_json("tool-prompt.json", result, out_dir)
    return result
