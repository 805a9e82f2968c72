"""Serving the app: the one start-up used by `run.py serve`, the benchmark and the tests.

`running_server(config, models)` applies the aiortc adjustments, starts the aiohttp app on
`server.host:server.port` (port 0 = any free port) and yields a `RunningServer` with the URL it
actually listens on (and the load balancer's agent check on `server.agent_check_port`, if set:
agent_check.py); leaving the block closes every peer and the listening sockets.
`loopback_config` pins a config to 127.0.0.1 with no STUN server (tests and benchmarks).

Slow clients (aiohttp's settings, from `[server]`): a connection must deliver each request's
headers within `header_timeout_s` of opening or of its previous response (aiohttp's
`keepalive_timeout`, which is armed when a connection opens and closes it if no request has
arrived by then; idle keep-alive connections close after it too); a body must arrive within
`body_timeout_s` (guard.read_body, 408); after an early answer the rest of an unread body is
drained for at most LINGERING_S. On shutdown, requests still in flight get `shutdown_timeout_s`
(aiohttp's `shutdown_timeout`) before they are cancelled.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
import threading
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import AsyncIterator

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

from agent.config import Config
from agent.models import AgentModels

from . import aiortc_adjustments
from .agent_check import agent_check_line, agent_check_server
from .app import REGISTRY, create_app

log = logging.getLogger(__name__)

LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")
LINGERING_S = 1.0  # how long an unread request body is drained after the answer, so the client sees it
EXIT_GRACE_S = 1.0  # on top of twice server.shutdown_timeout_s: then the process exits whatever is left
SIGNALS = (signal.SIGINT, signal.SIGTERM)


def loopback_config(config: Config) -> Config:
    """The same config with the server on 127.0.0.1:0 and ICE pinned to loopback, no STUN."""
    return config.replace(**{
        "server.host": "127.0.0.1", "server.port": 0,
        "ice.host_addresses": ["127.0.0.1"], "ice.servers": [],
    })


class ClientErrorLog(logging.LoggerAdapter):
    """aiohttp's server log, with requests that do not parse as HTTP (a 4xx aiohttp answers
    itself: bad header bytes, over-long lines, an encoding it cannot decode) as one line with no
    traceback: a public endpoint meets them all the time. Anything else is logged as before."""

    def exception(self, msg, *args, exc_info=True, **kwargs) -> None:
        exc = exc_info if isinstance(exc_info, BaseException) else sys.exc_info()[1]
        if isinstance(exc, HttpProcessingError) and 400 <= (exc.code or 0) < 500:
            self.logger.info(msg + ": %d %s", *args, exc.code, " ".join(str(exc.message).split())[:200])
            return
        self.logger.exception(msg, *args, exc_info=exc_info, **kwargs)


SERVER_LOG = ClientErrorLog(logging.getLogger("aiohttp.server"), {})


@dataclass
class RunningServer:
    url: str  # e.g. http://127.0.0.1:8080
    app: web.Application


@asynccontextmanager
async def running_server(config: Config, models: AgentModels) -> AsyncIterator[RunningServer]:
    """Serve the agent's app until the block ends (see the module docstring)."""
    aiortc_adjustments.install()
    app = create_app(config, models)
    server = config.server
    runner = web.AppRunner(app, access_log=None, logger=SERVER_LOG, keepalive_timeout=server.header_timeout_s,
                           shutdown_timeout=server.shutdown_timeout_s, lingering_time=LINGERING_S)
    await runner.setup()
    site = web.TCPSite(runner, server.host, server.port)
    await site.start()
    host, port = runner.addresses[0][:2]
    host = f"[{host}]" if ":" in host else host
    try:
        async with contextlib.AsyncExitStack() as stack:
            if server.agent_check_port:
                admission = app[REGISTRY].admission
                await stack.enter_async_context(agent_check_server(
                    server.host, server.agent_check_port, lambda: agent_check_line(admission)))
            yield RunningServer(f"http://{host}:{port}", app)
    finally:
        await runner.cleanup()


async def serve_until_signalled(config: Config, models: AgentModels) -> None:
    """`run.py serve`: serve until SIGINT or SIGTERM, then close every peer and return.

    After the first signal the shutdown is bounded: peers get `server.shutdown_timeout_s` to
    close, requests in flight as long again, and a process still alive EXIT_GRACE_S after that
    exits at once (status 1). A second SIGINT or SIGTERM ends the process at once (the default
    action of the signal is restored, so it works even if the event loop is stuck)."""
    async with running_server(config, models) as server:
        log.info("voice agent ready: open %s/ (brain=%s, voice=%s)", server.url, models.brain.name, models.voice.name)
        if config.server.host not in LOCAL_HOSTS:
            log.warning("bound to %s: the agent is reachable from the network", config.server.host)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()

        def on_signal(sig: signal.Signals) -> None:
            log.info("%s: shutting down (a second signal exits at once)", sig.name)
            for each in SIGNALS:
                loop.remove_signal_handler(each)
                signal.signal(each, signal.SIG_DFL)
            exit_after(2 * config.server.shutdown_timeout_s + EXIT_GRACE_S)
            stop.set()

        for sig in SIGNALS:
            loop.add_signal_handler(sig, on_signal, sig)
        await stop.wait()
    log.info("shut down")


def exit_after(seconds: float) -> threading.Timer:
    """End the process (status 1) in `seconds` unless it has ended by then."""

    def hard_exit() -> None:
        log.error("shutdown still not finished %g s after the signal: exiting now", seconds)
        for handler in logging.getLogger().handlers:
            handler.flush()
        os._exit(1)

    timer = threading.Timer(seconds, hard_exit)
    timer.daemon = True
    timer.start()
    return timer
