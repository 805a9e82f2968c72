"""Why the in-process LLM is read into memory rather than mapped where llama.cpp repacks its
weights (agent/runtime/llama_cpu.py): the batched cascade's model with four slots, loaded each way,
each in a fresh process; its memory (PSS/RSS) after four answers, its load time and the answers' time.

    .venv/bin/python scripts/llama_load_mode.py
"""

import asyncio
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

if len(sys.argv) > 1:  # one way, in this process
    import llama_cpp

    from agent.brains import cascade, llama_batch, llama_chat
    from agent.config import load_config
    from agent.runtime.model_files import ensure_files, resolve_cache_dir
    from bench.memory import memory_mb

    mode = {"mmap": llama_cpp.llama_cpp.LLAMA_LOAD_MODE_MMAP, "read": llama_cpp.llama_cpp.LLAMA_LOAD_MODE_NONE}[sys.argv[1]]
    llama_batch.map_weights = lambda: mode == llama_cpp.llama_cpp.LLAMA_LOAD_MODE_MMAP
    config = load_config()
    paths = ensure_files(tuple(cascade.MODEL_FILES), resolve_cache_dir(config.models.cache_dir), progress=False)
    started = time.perf_counter()
    batched = llama_batch.BatchedLlama(paths[llama_chat.LLM_GGUF.relpath], config.replace(**{"llm.slots": 4}).llm)
    load_s = time.perf_counter() - started
    system = {"role": "system", "content": config.brain.system_prompt}

    async def answers() -> float:
        async def one(seq: int, question: str) -> None:
            async for _ in batched.generate(seq, batched.prompt_tokens([system, {"role": "user", "content": question}]), 16):
                pass
        await asyncio.gather(*(one(s, "What is the capital of France?") for s in range(4)))  # warm
        started = time.perf_counter()
        await asyncio.gather(*(one(s, q) for s, q in enumerate(("What is two plus two?", "Name a red fruit.",
                                                                 "How far is the moon?", "Who wrote Hamlet?"))))
        return time.perf_counter() - started

    answers_s = asyncio.run(answers())
    print(f"{sys.argv[1]:5s} load {load_s:.2f} s, four answers together {answers_s:.2f} s, memory {memory_mb()}")
    batched.close()
else:
    for way in ("mmap", "read"):
        subprocess.run([sys.executable, __file__, way], check=True)
