"""`run.py serve` as a child process on 127.0.0.1, the way an operator starts the agent: for the
tests that need a real process (SIGTERM, a load balancer in front of several agents)."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import time
from pathlib import Path

import aiohttp
import pytest

from .helpers import free_port

REPO = Path(__file__).resolve().parent.parent
START_TIMEOUT_S = 240.0  # loading the real models on a busy 2-core CI machine took over 60 s


class AgentProcess:
    """One agent process. `overrides` are `--set key=value` config overrides; its output goes to
    `log_path`, shown when it fails to start. With `agent_check` it also serves HAProxy's agent
    check, on `check_port`."""

    def __init__(self, name: str, log_path: Path, env: dict[str, str],
                 overrides: dict[str, str] | None = None, agent_check: bool = False) -> None:
        self.name, self.port, self.log_path = name, free_port(), log_path
        self.check_port = free_port() if agent_check else None
        overrides = dict(overrides or {})
        if self.check_port is not None:
            overrides["server.agent_check_port"] = str(self.check_port)
        args = [sys.executable, "run.py", "serve", "--port", str(self.port), "--ice-host", "127.0.0.1"]
        for key, value in overrides.items():
            args += ["--set", f"{key}={value}"]
        self.log = open(self.log_path, "w")
        self.process = subprocess.Popen(args, cwd=REPO, env=env, stdout=self.log, stderr=subprocess.STDOUT)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def output(self, last_chars: int = 3000) -> str:
        self.log.flush()
        return self.log_path.read_text()[-last_chars:]

    async def health(self) -> dict:
        async with aiohttp.ClientSession() as http:
            async with http.get(f"{self.url}/healthz") as response:
                return await response.json()

    async def wait_ready(self, timeout_s: float = START_TIMEOUT_S) -> None:
        """Until /healthz answers; fails the test, with the agent's output, if the process exits or
        does not answer within `timeout_s`."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            assert self.process.poll() is None, self.output()
            try:
                await self.health()
                return
            except aiohttp.ClientError:
                await asyncio.sleep(0.2)
        pytest.fail(f"agent {self.name} did not answer /healthz within {timeout_s:.0f} s:\n{self.output()}")

    async def sessions(self) -> int:
        return (await self.health())["sessions"]

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.log.close()
