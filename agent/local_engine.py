"""The project's own engine on this machine: llama-server (`agent/runtime/llama_server.py`) with
the project's GGUF on 127.0.0.1, every slot warmed with the openai brain's first-turn request
(the persona, the tools' instructions and specs), and the config that points an agent at it.

`run.py engine` serves one on its own (for agents started separately); the benchmark runs
callers on one (`local_engine`, BENCHMARKS.md) beside the in-process cascade.
"""

from __future__ import annotations

import contextlib
import socket
import time
from pathlib import Path
from typing import Iterator

from agent.brains.llama_chat import LLM_GGUF
from agent.brains.openai_compat import OpenAICompatibleBrain
from agent.config import Config
from agent.runtime.llama_server import LlamaServer, LlamaServerError, binary_path, is_built
from agent.runtime.model_files import ensure_files, resolve_cache_dir
from agent.tools.toolbox import toolbox_for


def first_turn_request(config: Config) -> dict:
    """The request the openai brain sends for a first turn, up to the user's words (as a session
    gives it its tools): what every slot's prompt cache should hold."""
    brain = OpenAICompatibleBrain(None, None, config.openai, config.brain)  # type: ignore[arg-type]  # request() only
    return brain.first_turn_request(toolbox_for(config).prompt())


def pointed_at(config: Config, url: str, api_key_env: str | None = None) -> Config:
    """`config` with the openai brain on the engine at `url` (whisper stays local)."""
    settings = {"brain.kind": "openai", "openai.base_url": url, "openai.mode": "text", "openai.transcription": "local"}
    if api_key_env:
        settings["openai.api_key_env"] = api_key_env
    return config.replace(**settings)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextlib.contextmanager
def local_engine(config: Config, parallel: int, context: int, threads: int, port: int = 0,
                 log_path: Path | None = None) -> Iterator[tuple[LlamaServer, float]]:
    """llama-server started (`port` 0: a free one) and warmed, stopped when the block ends; yields
    it and the seconds warming took. A LlamaServerError when it was never built (`./dev.sh
    install` builds it) or does not start."""
    cache_dir = resolve_cache_dir(config.models.cache_dir)
    if not is_built(cache_dir):
        raise LlamaServerError(f"llama-server is not built in {binary_path(cache_dir).parent}: run `./dev.sh install` "
                               "(or `python run.py engine --build-only`)")
    gguf = ensure_files((LLM_GGUF,), cache_dir, progress=False)[LLM_GGUF.relpath]
    server = LlamaServer(binary_path(cache_dir), gguf, port or free_port(), parallel=parallel, context=context,
                         threads=threads, log_path=log_path)
    try:
        server.start()
        started = time.perf_counter()
        server.warm_slots(first_turn_request(config))
        yield server, time.perf_counter() - started
    finally:
        server.stop()
