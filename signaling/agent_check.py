"""HAProxy's agent check: a TCP port (`server.agent_check_port`) where the load balancer reads
this process's state as one line, every `agent-inter` (deploy/haproxy.cfg, docs/DEPLOYMENT.md).

    "up ready 75%"   room for calls: the weight is the free share of the capacity (1-100 %)
    "up drain"       at capacity (load 1.0): no new calls; the calls here go on
    "down"           a model is stuck (the case where /healthz answers 503) or the process is
                     shutting down: no new calls

With `balance leastconn` HAProxy sends a new connection to the server with the lowest
(connections + 1) / weight; a signaling request lasts one request, so connections are ~0 and
the agent with the most free capacity gets the call: least load, not round robin. The line is
what `Admission.load` and `stuck_models` say when the balancer asks; nothing is pushed.
(The protocol: HAProxy's configuration manual, "agent-check".)
"""

from __future__ import annotations

import asyncio
import logging
from contextlib import asynccontextmanager
from typing import AsyncIterator, Callable

from agent.runtime.model_thread import stuck_models

from .guard import Admission

log = logging.getLogger(__name__)


def agent_check_line(admission: Admission, stuck: list[str] | None = None) -> str:
    """What the balancer reads for `admission` now (see the module docstring)."""
    stuck = stuck_models() if stuck is None else stuck
    if stuck or admission.closing:
        return "down\n"
    load = admission.load()
    if load >= 1.0:
        return "up drain\n"
    return f"up ready {max(1, round((1.0 - load) * 100))}%\n"


@asynccontextmanager
async def agent_check_server(host: str, port: int, line: Callable[[], str]) -> AsyncIterator[int]:
    """Answer `line()` to every connection on host:port until the block ends; yields the port
    (0 picks a free one)."""

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            writer.write(line().encode("ascii"))
            await writer.drain()
        except (ConnectionError, OSError):
            pass  # the balancer gave up on this check; it asks again at the next one
        finally:
            writer.close()

    server = await asyncio.start_server(answer, host, port)
    bound = server.sockets[0].getsockname()[1]
    log.info("agent check for the load balancer on %s:%d", host, bound)
    try:
        yield bound
    finally:
        server.close()
        await server.wait_closed()
