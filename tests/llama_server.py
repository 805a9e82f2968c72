"""A real OpenAI-compatible engine for the tests: llama-cpp-python's server
(`python -m llama_cpp.server`, the `[server]` extra in requirements-test.txt) serving the
project's GGUF (Qwen2.5-Coder-1.5B-Instruct) on 127.0.0.1, with an API key, as a child process
that the tests can stop, kill mid-answer and start again on the same port."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from .helpers import free_port


class LlamaServer:
    def __init__(self, model: Path, api_key: str, log_path: Path, threads: int = 2, context: int = 2048) -> None:
        self.model = model
        self.api_key = api_key
        self.log_path = log_path
        self.threads = threads
        self.context = context
        self.port = free_port()
        self.process: subprocess.Popen | None = None
        self.starts = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def start(self, timeout_s: float = 180.0) -> None:
        """Start the server and return once it answers GET /v1/models (with the key)."""
        assert not self.running()
        command = [sys.executable, "-m", "llama_cpp.server", "--model", str(self.model), "--host", "127.0.0.1",
                   "--port", str(self.port), "--n_threads", str(self.threads), "--n_threads_batch", str(self.threads),
                   "--n_ctx", str(self.context), "--api_key", self.api_key, "--verbose", "False"]
        log = open(self.log_path, "a")
        log.write(f"\n=== start {self.starts + 1}: port {self.port}\n")
        log.flush()
        self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT,
                                        env={**os.environ, "PYTHONUNBUFFERED": "1"})
        log.close()
        self.starts += 1
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"llama_cpp.server exited with {self.process.returncode}:\n{self.log()[-3000:]}")
            request = urllib.request.Request(self.url + "/v1/models", headers={"Authorization": f"Bearer {self.api_key}"})
            try:
                with urllib.request.urlopen(request, timeout=2) as response:
                    if response.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.25)
        self.stop()
        raise RuntimeError(f"llama_cpp.server not ready after {timeout_s:g} s:\n{self.log()[-3000:]}")

    def ensure_running(self) -> None:
        if not self.running():
            self.start()

    def kill(self) -> None:
        """SIGKILL: the engine dies mid-whatever, with no goodbye."""
        if self.running():
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(10)

    def stop(self) -> None:
        if self.running():
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
