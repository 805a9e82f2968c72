"""Serving the app: the one start-up used by `run.py serve`, the benchmark and the tests.

`running_server(config, models)` applies the aiortc adjustments, starts the aiohttp app on
`server.host:server.port` (port 0 = any free port) and yields a `RunningServer` with the URL it
actually listens on; leaving the block closes every peer and the listening socket.
`loopback_config` pins a config to 127.0.0.1 with no STUN server (tests and benchmarks).
"""

from __future__ import annotations

import asyncio
import logging
import signal
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import AsyncIterator

from aiohttp import web

from agent.config import Config
from agent.models import AgentModels

from . import aiortc_adjustments
from .app import create_app

log = logging.getLogger(__name__)

LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")


def loopback_config(config: Config) -> Config:
    """The same config with the server on 127.0.0.1:0 and ICE pinned to loopback, no STUN."""
    return config.replace(**{
        "server.host": "127.0.0.1", "server.port": 0,
        "ice.host_addresses": ["127.0.0.1"], "ice.servers": [],
    })


@dataclass
class RunningServer:
    url: str  # e.g. http://127.0.0.1:8080
    app: web.Application


@asynccontextmanager
async def running_server(config: Config, models: AgentModels) -> AsyncIterator[RunningServer]:
    """Serve the agent's app until the block ends (see the module docstring)."""
    aiortc_adjustments.install()
    app = create_app(config, models)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, config.server.host, config.server.port)
    await site.start()
    host, port = runner.addresses[0][:2]
    host = f"[{host}]" if ":" in host else host
    try:
        yield RunningServer(f"http://{host}:{port}", app)
    finally:
        await runner.cleanup()


async def serve_until_signalled(config: Config, models: AgentModels) -> None:
    """`run.py serve`: serve until SIGINT or SIGTERM, then close every peer and return."""
    async with running_server(config, models) as server:
        log.info("voice agent ready: open %s/ (brain=%s, voice=%s)", server.url, models.brain.name, models.voice.name)
        if config.server.host not in LOCAL_HOSTS:
            log.warning("bound to %s: the agent is reachable from the network", config.server.host)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        log.info("shutting down")
