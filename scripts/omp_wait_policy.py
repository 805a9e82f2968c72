"""Why the agent sets OMP_WAIT_POLICY=PASSIVE: two llama.cpp contexts (two LLM slots) taking
turns token by token, as the scheduler runs them for two calls, with a little numpy work between.

    OMP_WAIT_POLICY=ACTIVE  .venv/bin/python scripts/omp_wait_policy.py
    OMP_WAIT_POLICY=PASSIVE .venv/bin/python scripts/omp_wait_policy.py

With libgomp's default (spin before sleeping), each context's idle OpenMP threads spin while the
other works, and on 2 cores a token takes several times longer.
"""

import os
import time

import numpy as np
from llama_cpp import Llama

from agent.config import load_config
from agent.runtime.model_files import resolve_cache_dir

gguf = resolve_cache_dir(load_config().models.cache_dir) / "qwen2.5-coder-1.5b-instruct-q4_k_m.gguf"
slots = [Llama(model_path=str(gguf), n_ctx=1024, n_threads=2, n_threads_batch=2, verbose=False) for _ in range(2)]
messages = [{"role": "user", "content": "Tell me a long story about a lighthouse."}]
streams = [slot.create_chat_completion(messages=messages, stream=True, max_tokens=40, temperature=0) for slot in slots]
started, tokens = time.perf_counter(), 0
for _ in range(40):
    for stream in streams:
        next(stream, None)
        tokens += 1
        a = np.random.rand(200, 200)
        (a @ a).sum()
print(f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', '(default)')}: "
      f"{(time.perf_counter() - started) * 1000 / tokens:.1f} ms per token")
