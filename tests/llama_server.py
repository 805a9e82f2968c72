"""A real OpenAI-compatible engine for the tests: llama.cpp's own server (`llama-server`, built
from the pinned llama-cpp-python sdist's sources by the install step, i.e. `python run.py engine
--build-only`) serving the project's GGUF (Qwen2.5-Coder-1.5B-Instruct) on 127.0.0.1, with an
API key, as a child process that the tests can stop, kill mid-answer and start again on the same
port."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.runtime.llama_server import LlamaServer as _LlamaServer
from agent.runtime.llama_server import binary_path, is_built

from .helpers import free_port

CANCELLED = "cancel task, id_task ="  # llama-server's log line when a client leaves mid-answer


def built_llama_server(cache_dir: Path) -> Path:
    """The cached llama-server; a test failure naming the install step when it was never built
    (the build takes minutes: it belongs to the install, not to a test with a timeout)."""
    if not is_built(cache_dir):
        pytest.fail(f"llama-server is not built in {binary_path(cache_dir).parent}: run `./dev.sh install` "
                    "(or `.venv/bin/python run.py engine --build-only`) first", pytrace=False)
    return binary_path(cache_dir)


class LlamaServer(_LlamaServer):
    def __init__(self, binary: Path, model: Path, api_key: str, log_path: Path, threads: int = 2,
                 context: int = 2048, parallel: int = 1) -> None:
        super().__init__(binary, model, free_port(), parallel=parallel, context=context, threads=threads,
                         api_key=api_key, log_path=log_path)

    def ensure_running(self) -> None:
        if not self.running():
            self.start()

    def generating(self) -> list[dict]:
        """The slots decoding a request now (`GET /slots`)."""
        return [slot for slot in self.get("/slots") if slot.get("is_processing")]

    def cancelled_tasks(self) -> int:
        """Requests the engine stopped before their end because the client left (its log's
        "stop: cancel task, id_task = N", over every start)."""
        return self.log().count(CANCELLED)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
