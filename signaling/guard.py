"""Request guards for the signaling endpoints: who may call, how often, how many at once, and
what a request must look like before a handler sees it.

Every request (pages included):
- caller: a request from a load balancer in `server.trusted_proxies` is taken as coming from the
  last address its X-Forwarded-For names (HAProxy's `option forwardfor`), so the per-address
  limits below count callers; from anyone else the header is ignored (it could be forged);
- host: the Host header must name this server (`server.allowed_hosts`; by default, when bound to
  a loopback address, only localhost, 127.0.0.1 and ::1), so a web page that rebinds its own DNS
  name to 127.0.0.1 cannot reach the agent (403).
Signaling and metrics (`/offer`, `/whip`, `/metrics`):
- size: a body over `server.max_body_bytes` is refused before it is read (413);
- origin: a browser request whose Origin is not allowed is refused (403): `server.allowed_origins`,
  by default loopback origins when bound to a loopback address; `Origin: null` always;
- bearer token: when `server.auth_token` is set, `Authorization: Bearer <token>` (401), compared
  in constant time as bytes (any header bytes, UTF-8 or not) and never logged;
- body: a POST body is read here, whole, within `server.body_timeout_s` (408); a Content-Encoding
  other than gzip or deflate is a 415, a body that does not decode a 400.
Admission (`Admission.admit`, the one place that says whether a new call may start): none while
shutting down, at most `server.capacity_calls` at once (what one process holds within the latency
budget; 0: the models' own capacity) and never more than `server.max_sessions` (503 +
Retry-After), at most
`server.max_sessions_per_address` from one address at once and `server.rate_limit_per_minute` new
ones a minute (429 + Retry-After). An admitted call holds a `Slot` until it is released; existing
calls are never touched.
"""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
import logging
import time
from collections import Counter, OrderedDict, deque
from typing import Awaitable, Callable
from urllib.parse import urlsplit

from aiohttp import web
from aiohttp.http_exceptions import ContentEncodingError
from aiohttp.web_protocol import RequestPayloadError

from agent.config import ServerConfig

log = logging.getLogger(__name__)

GUARDED_PREFIXES = ("/offer", "/whip", "/metrics")
RETRY_AFTER_S = 5
LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})
DECODED_ENCODINGS = frozenset({"", "identity", "gzip", "deflate"})  # what aiohttp decodes itself
SHOWN_CHARS = 80  # the most of a client's header value quoted back in a message


class Rejected(Exception):
    """A request the server refuses on purpose; becomes an HTTP error with a message."""

    def __init__(self, status: int, message: str, retry_after_s: int | None = None, close: bool = False) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.retry_after_s = retry_after_s
        self.close = close  # end the connection after the answer (its request body was not read to the end)

    def response(self, json_body: bool) -> web.Response:
        headers = {"Retry-After": str(self.retry_after_s)} if self.retry_after_s is not None else {}
        if self.status == 401:
            headers["WWW-Authenticate"] = 'Bearer realm="voice-agent"'
        if json_body:
            response = web.json_response({"error": self.message}, status=self.status, headers=headers)
        else:
            response = web.Response(status=self.status, text=self.message + "\n", headers=headers)
        if self.close:
            response.force_close()
        return response


def shown(value: str) -> str:
    """A client-supplied value, quoted for a message: ASCII only, cut to SHOWN_CHARS."""
    cut = value[:SHOWN_CHARS]
    return ascii(cut) + ("..." if len(value) > SHOWN_CHARS else "")


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


class Slot:
    """One admitted call's place, held from the offer until the call is released."""

    def __init__(self, admission: "Admission", address: str) -> None:
        self.admission = admission
        self.address = address
        self.released = False

    def release(self) -> None:
        """Give the place back (idempotent)."""
        if not self.released:
            self.released = True
            self.admission._free(self)


class Admission:
    """May a new call be admitted? Every rule in `admit`, which hands out a Slot.

    `server.capacity_calls` is how many calls this process holds within the latency budget (what
    `run.py bench --concurrency K --together` measured; 0: the loaded models' own figure, e.g.
    the cascade's LLM slots); `load()` is the calls open over it, the number /healthz and
    /metrics give a load balancer. A call that would take the load past 1.0 gets 503 +
    Retry-After, so the calls already here keep their latency instead of everyone degrading.
    `server.max_sessions` stays the hard cap whatever the capacity says."""

    def __init__(self, config: ServerConfig, models_capacity: int | None = None) -> None:
        self.config = config
        self.models_capacity = models_capacity  # what the loaded models hold (None: no limit of their own)
        self.limiter = RateLimiter(config.rate_limit_per_minute)
        self.closing = False
        self._per_address: Counter[str] = Counter()
        self._active = 0

    @property
    def capacity(self) -> int:
        """Calls admitted: `server.capacity_calls`, or (0) the models' own capacity, within the hard cap."""
        capacity = self.config.capacity_calls or self.models_capacity or self.config.max_sessions
        return max(1, min(self.config.max_sessions, capacity))

    def load(self) -> float:
        """Calls open over the capacity: 1.0 = full, new calls are refused."""
        return round(self._active / self.capacity, 3)

    @property
    def active(self) -> int:
        """Calls holding a slot (negotiating or connected)."""
        return self._active

    def admit(self, remote: str | None) -> Slot:
        """A Slot for a new call from `remote`, or Rejected (503/429 with Retry-After) saying why not."""
        address = remote or "unknown"
        if self.closing:
            raise Rejected(503, "the server is shutting down", RETRY_AFTER_S)
        if self._active >= self.config.max_sessions:
            raise Rejected(503, f"the agent is at its limit of {self.config.max_sessions} concurrent calls; "
                                "try again shortly", RETRY_AFTER_S)
        if self._active >= self.capacity:
            raise Rejected(503, f"the agent is at capacity: {self.capacity} calls is what it holds within its "
                                "latency budget (server.capacity_calls); try again shortly or another instance",
                           self.config.capacity_retry_after_s)
        if self._per_address[address] >= self.config.max_sessions_per_address:
            raise Rejected(429, f"this address already has {self._per_address[address]} calls, the most one address "
                                "may hold at once (server.max_sessions_per_address)", RETRY_AFTER_S)
        self.limiter.check(address)
        self._active += 1
        self._per_address[address] += 1
        return Slot(self, address)

    def _free(self, slot: Slot) -> None:
        self._active -= 1
        self._per_address[slot.address] -= 1
        if self._per_address[slot.address] <= 0:
            del self._per_address[slot.address]


def wants_json(request: web.Request) -> bool:
    return request.path.startswith("/offer")


def is_loopback_bind(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def host_name(value: str) -> str:
    """The name in a Host header, without its port and brackets, lower case."""
    value = value.strip().lower()
    if value.startswith("["):
        return value[1:value.find("]")] if "]" in value else value
    if value.count(":") == 1:
        return value.split(":", 1)[0]
    return value


class HostPolicy:
    """Which Host headers and browser Origins may reach the server."""

    def __init__(self, config: ServerConfig) -> None:
        loopback = is_loopback_bind(config.host)
        hosts = [h.lower() for h in config.allowed_hosts]
        self.any_host = "*" in hosts or (not hosts and not loopback)
        self.hosts = frozenset(hosts) if hosts else LOOPBACK_NAMES
        self.origins = frozenset(config.allowed_origins)
        self.loopback_origins_only = not self.origins and loopback

    def check_host(self, request: web.Request) -> None:
        if self.any_host:
            return
        value = request.headers.get("Host")
        if value is None:  # HTTP/1.0 without Host: no browser sends that, so no rebinding either
            return
        if host_name(value) not in self.hosts:
            raise Rejected(403, f"host {shown(value)} is not served here (server.allowed_hosts; this server answers "
                                f"to {', '.join(sorted(self.hosts))})")

    def check_origin(self, origin: str | None) -> None:
        if origin is None:  # not a browser, or a same-origin GET
            return
        if origin.strip().lower() == "null":
            raise Rejected(403, "origin 'null' (a sandboxed page, a file or a redirect) is not allowed")
        if self.origins:
            if origin not in self.origins:
                raise Rejected(403, f"origin {shown(origin)} is not allowed (server.allowed_origins)")
        elif self.loopback_origins_only and not _is_loopback_origin(origin):
            raise Rejected(403, f"origin {shown(origin)} is not allowed: a server bound to a loopback address "
                                "accepts only loopback origins unless server.allowed_origins names others")


def _is_loopback_origin(origin: str) -> bool:
    try:
        parts = urlsplit(origin.strip())
        parts.port  # noqa: B018 - raises ValueError for a port that is not one
    except ValueError:  # a port out of range, a broken IPv6 literal
        return False
    return parts.scheme in ("http", "https") and (parts.hostname or "") in LOOPBACK_NAMES and not parts.path


def token_matches(supplied: str, token: bytes) -> bool:
    """Constant-time bearer token check on the header's raw bytes (aiohttp keeps non-UTF-8
    bytes as surrogate escapes)."""
    scheme, _, value = supplied.partition(" ")
    raw = value.strip().encode("utf-8", "surrogateescape")
    return scheme.lower() == "bearer" and hmac.compare_digest(raw, token)


async def read_body(request: web.Request, config: ServerConfig) -> bytes:
    """The whole request body (decoded), read once (aiohttp keeps it for the handler's own
    `request.read()`); Rejected with 408, 413, 415 or 400 when it cannot be had."""
    encoding = request.headers.get("Content-Encoding", "").strip().lower()
    if encoding not in DECODED_ENCODINGS:
        raise Rejected(415, f"Content-Encoding {shown(encoding)} is not supported (use gzip, deflate or none)")
    try:
        async with asyncio.timeout(config.body_timeout_s):
            return await request.read()
    except TimeoutError:
        _abandon_body(request)
        raise Rejected(408, f"the request body did not arrive within {config.body_timeout_s:g} s "
                            "(server.body_timeout_s)", close=True) from None
    except web.HTTPRequestEntityTooLarge:
        raise Rejected(413, f"the request body is larger than {config.max_body_bytes} bytes") from None
    except (RequestPayloadError, ContentEncodingError) as exc:
        _abandon_body(request)
        cause = exc.__cause__ or exc
        reason = getattr(cause, "message", "") or str(cause) or type(cause).__name__
        raise Rejected(400, f"the request body could not be read ({encoding or 'no'} Content-Encoding): "
                            f"{reason.strip()}", close=True) from None


def _abandon_body(request: web.Request) -> None:
    """Stop reading a body that stalled or does not decode: aiohttp would otherwise drain it
    after the answer (and log a decoding error as an unhandled exception); the connection is
    closed after the answer instead."""
    request.content.feed_eof()


def forwarded_for_middleware(config: ServerConfig):
    """`request.remote` as the caller's address behind a trusted balancer (the module docstring)."""
    proxies = [ipaddress.ip_network(value, strict=False) for value in config.trusted_proxies]

    def trusted(address: str | None) -> bool:
        try:
            ip = ipaddress.ip_address(address or "")
        except ValueError:
            return False
        return any(ip in network for network in proxies)

    @web.middleware
    async def caller_address(request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]):
        forwarded = request.headers.getall("X-Forwarded-For", [])
        if proxies and forwarded and trusted(request.remote):
            last = ",".join(forwarded).split(",")[-1].strip()
            try:
                request = request.clone(remote=str(ipaddress.ip_address(last)))
            except ValueError:
                return web.json_response({"error": "X-Forwarded-For does not end with an IP address"}, status=400)
        return await handler(request)

    return caller_address


def security_middleware(config: ServerConfig):
    token = config.auth_token.encode()
    hosts = HostPolicy(config)

    @web.middleware
    async def guard(request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]):
        guarded = request.path.startswith(GUARDED_PREFIXES)
        origin = request.headers.get("Origin")
        try:
            hosts.check_host(request)
            if not guarded:
                return await handler(request)
            if request.content_length is not None and request.content_length > config.max_body_bytes:
                raise Rejected(413, f"the request body is larger than {config.max_body_bytes} bytes")
            hosts.check_origin(origin)
            if token and request.method != "OPTIONS":
                if not token_matches(request.headers.get("Authorization", ""), token):
                    raise Rejected(401, "a valid bearer token is required (Authorization: Bearer <token>)")
            if request.method == "POST":
                await read_body(request, config)
        except Rejected as rejected:
            log.info("%s %s from %s refused: %d %s", request.method, shown(request.path), request.remote,
                     rejected.status, rejected.message)
            return rejected.response(wants_json(request))
        response = await handler(request)
        if origin is not None and (origin in hosts.origins):
            response.headers["Access-Control-Allow-Origin"] = origin
            response.headers["Vary"] = "Origin"
        return response

    return guard
