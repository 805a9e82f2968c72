"""Request guards for the signaling endpoints: who may call, how often, and how many at once.

- allowed origins: a browser request whose Origin is not configured is refused (403);
- bearer token: when `server.auth_token` is set, signaling needs `Authorization: Bearer <token>`
  (401), compared in constant time and never logged;
- rate limit: new sessions per client address per minute (429 + Retry-After);
- size: a body over `server.max_body_bytes` is refused before it is read (413);
- admission: at most `server.capacity_calls` calls at once (what one process holds within the
  latency budget; 0: the models' own capacity) and never more than `server.max_sessions`, and none while shutting down
  (503 + Retry-After); existing calls are never touched.
Pages (`/`, `/static`, `/healthz`, `/client-config`) stay open; `/metrics` follows the token.
"""

from __future__ import annotations

import hmac
import time
from collections import OrderedDict, deque
from typing import Awaitable, Callable

from aiohttp import web

from agent.config import ServerConfig

GUARDED_PREFIXES = ("/offer", "/whip", "/metrics")
RETRY_AFTER_S = 5


class Rejected(Exception):
    """A request the server refuses on purpose; becomes an HTTP error with a message."""

    def __init__(self, status: int, message: str, retry_after_s: int | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.retry_after_s = retry_after_s

    def response(self, json_body: bool) -> web.Response:
        headers = {"Retry-After": str(self.retry_after_s)} if self.retry_after_s is not None else {}
        if self.status == 401:
            headers["WWW-Authenticate"] = 'Bearer realm="voice-agent"'
        if json_body:
            return web.json_response({"error": self.message}, status=self.status, headers=headers)
        return web.Response(status=self.status, text=self.message + "\n", headers=headers)


class RateLimiter:
    """At most `per_minute` events per key in any 60 s window; remembers at most `max_keys` keys."""

    def __init__(self, per_minute: int, max_keys: int = 10000, clock: Callable[[], float] = time.monotonic) -> None:
        self.per_minute = per_minute
        self.max_keys = max_keys
        self.clock = clock
        self._events: OrderedDict[str, deque[float]] = OrderedDict()

    def check(self, key: str) -> None:
        if self.per_minute <= 0:
            return
        now = self.clock()
        events = self._events.pop(key, None) or deque()
        while events and now - events[0] >= 60.0:
            events.popleft()
        if len(events) >= self.per_minute:
            self._events[key] = events
            retry = max(1, int(60.0 - (now - events[0])) + 1)
            raise Rejected(429, f"too many new sessions from this address (at most {self.per_minute} a minute)", retry)
        events.append(now)
        self._events[key] = events
        while len(self._events) > self.max_keys:
            self._events.popitem(last=False)


class Admission:
    """Admission control for new sessions: capacity, the hard cap, and the per-address rate.

    `server.capacity_calls` is how many calls this process holds within the latency budget (what
    `run.py bench --concurrency K --together` measured; 0: the loaded models' own figure, e.g.
    the cascade's LLM slots); `load()` is the calls open over it, the
    number /healthz and /metrics give a load balancer. A call that would take the load past 1.0
    gets 503 + Retry-After, so the calls already here keep their latency instead of everyone
    degrading. `server.max_sessions` stays the hard cap whatever the capacity says."""

    def __init__(self, config: ServerConfig, active: Callable[[], int], models_capacity: int | None = None) -> None:
        self.config = config
        self.active = active
        self.models_capacity = models_capacity  # what the loaded models hold (None: no limit of their own)
        self.limiter = RateLimiter(config.rate_limit_per_minute)
        self.closing = False

    @property
    def capacity(self) -> int:
        """Calls admitted: `server.capacity_calls`, or (0) the models' own capacity, within the hard cap."""
        capacity = self.config.capacity_calls or self.models_capacity or self.config.max_sessions
        return max(1, min(self.config.max_sessions, capacity))

    def load(self) -> float:
        """Calls open over the capacity: 1.0 = full, new calls are refused."""
        return round(self.active() / self.capacity, 3)

    def admit(self, remote: str | None) -> None:
        if self.closing:
            raise Rejected(503, "the server is shutting down", RETRY_AFTER_S)
        if self.active() >= self.config.max_sessions:
            raise Rejected(503, f"the agent is at its limit of {self.config.max_sessions} concurrent calls; "
                                "try again shortly", RETRY_AFTER_S)
        if self.active() >= self.capacity:
            raise Rejected(503, f"the agent is at capacity: {self.capacity} calls is what it holds within its "
                                "latency budget (server.capacity_calls); try again shortly or another instance",
                           self.config.capacity_retry_after_s)
        self.limiter.check(remote or "unknown")


def wants_json(request: web.Request) -> bool:
    return request.path.startswith("/offer")


def security_middleware(config: ServerConfig):
    token = config.auth_token.encode()
    origins = set(config.allowed_origins)

    @web.middleware
    async def guard(request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]):
        if not request.path.startswith(GUARDED_PREFIXES):
            return await handler(request)
        try:
            if request.content_length is not None and request.content_length > config.max_body_bytes:
                raise Rejected(413, f"the request body is larger than {config.max_body_bytes} bytes")
            origin = request.headers.get("Origin")
            if origins and origin is not None and origin not in origins:
                raise Rejected(403, f"origin {origin!r} is not allowed (server.allowed_origins)")
            if token and request.method != "OPTIONS":
                supplied = request.headers.get("Authorization", "")
                scheme, _, value = supplied.partition(" ")
                if scheme.lower() != "bearer" or not hmac.compare_digest(value.strip().encode(), token):
                    raise Rejected(401, "a valid bearer token is required (Authorization: Bearer <token>)")
        except Rejected as rejected:
            return rejected.response(wants_json(request))
        response = await handler(request)
        if origins and origin in origins:
            response.headers["Access-Control-Allow-Origin"] = origin
            response.headers["Vary"] = "Origin"
        return response

    return guard
