"""The aiohttp app: web client, `POST /offer` and WHIP signaling, `/healthz`, `/metrics`,
`/client-config`.

`POST /offer` takes `{"sdp": str, "type": "offer"}` and answers `{"sdp", "type": "answer",
"session"}`. `POST /whip` takes the raw SDP offer (RFC 9725, see whip.py). Anything malformed
is a 4xx with a message that says what is wrong; the server keeps serving everyone else.
`GET /metrics` is the Prometheus text format (see metrics.py).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from aiohttp import web
from agent.brains.base import check_tools
from agent.config import Config
from agent.models import AgentModels
from agent.runtime.model_thread import stuck_models
from agent.tools.toolbox import toolbox_for

from .guard import Rejected, forwarded_for_middleware, security_middleware
from .metrics import AgentMetrics
from .offer import CheckedOffer, OfferError, OfferPolicy, check_sdp_offer
from .peers import PeerRegistry
from .whip import WhipEndpoint

log = logging.getLogger(__name__)

def _web_dir() -> Path:
    """web/ in a source checkout; the copy packaged as signaling/web/ when installed."""
    here = Path(__file__).resolve().parent
    for candidate in (here.parent / "web", here / "web"):
        if (candidate / "index.html").is_file():
            return candidate
    raise FileNotFoundError("the web client (web/index.html) is missing from this installation")


WEB_DIR = _web_dir()
REGISTRY = web.AppKey("registry", PeerRegistry)
CONFIG = web.AppKey("config", Config)
METRICS = web.AppKey("metrics", AgentMetrics)


def parse_offer(body: bytes, policy: OfferPolicy | None = None) -> CheckedOffer:
    """Validate an /offer body (JSON around an SDP offer); raise OfferError naming the problem."""
    if not body:
        raise OfferError("empty body: expected JSON {\"sdp\": \"...\", \"type\": \"offer\"}")
    try:
        data = json.loads(body)
    except RecursionError:
        raise OfferError("body is not valid JSON: it is nested too deeply") from None
    except ValueError as exc:  # not UTF-8, not JSON, or an integer longer than Python converts
        if "integer string conversion" in str(exc):
            raise OfferError("body is not valid JSON for an offer: it holds a number with thousands of digits") from None
        raise OfferError(f"body is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise OfferError(f"expected a JSON object, got {type(data).__name__}")
    for key in ("sdp", "type"):
        if key not in data:
            raise OfferError(f"missing field {key!r}")
        if not isinstance(data[key], str):
            raise OfferError(f"field {key!r} must be a string, got {type(data[key]).__name__}")
    if data["type"] != "offer":
        raise OfferError(f"field 'type' must be \"offer\", got {data['type']!r}")
    return check_sdp_offer(data["sdp"], "field 'sdp'", policy)


async def handle_offer(request: web.Request) -> web.Response:
    if request.content_type != "application/json":
        return web.json_response({"error": f"Content-Type must be application/json (got "
                                           f"{request.headers.get('Content-Type', 'none')!r})"}, status=415)
    registry = request.app[REGISTRY]
    try:
        offer = parse_offer(await request.read(), registry.offer_policy)
    except OfferError as exc:
        log.info("rejected offer from %s: %s", request.remote, exc)
        return web.json_response({"error": str(exc)}, status=exc.status)
    try:
        peer, answer = await registry.create(offer, request.remote)
    except Rejected as rejected:
        log.info("offer from %s refused: %s", request.remote, rejected.message)
        return rejected.response(json_body=True)
    except ValueError as exc:
        log.info("offer from %s could not be negotiated: %s", request.remote, exc)
        return web.json_response({"error": str(exc)}, status=400)
    return web.json_response({"sdp": answer.sdp, "type": answer.type, "session": peer.id})


async def handle_health(request: web.Request) -> web.Response:
    """Liveness and load for a load balancer: 200 with `load` (calls / capacity; at 1.0 new calls
    get 503), or 503 when a model is stuck (its turns fail; send calls elsewhere)."""
    registry = request.app[REGISTRY]
    stuck = stuck_models()
    body = {"status": "unhealthy" if stuck else "ok", "sessions": len(registry), "load": registry.admission.load(),
            "capacity": registry.admission.capacity}
    if stuck:
        body["stuck_models"] = stuck
    return web.json_response(body, status=503 if stuck else 200)


async def handle_metrics(request: web.Request) -> web.Response:
    body, content_type = request.app[METRICS].exposition()
    return web.Response(body=body, headers={"Content-Type": content_type})


async def handle_client_config(request: web.Request) -> web.Response:
    """What the web client needs to build its RTCPeerConnection (the same ICE servers)."""
    config = request.app[CONFIG]
    return web.json_response({"iceServers": [{"urls": url} for url in config.ice.servers],
                              "authRequired": bool(config.server.auth_token)})


async def handle_index(request: web.Request) -> web.FileResponse:
    return web.FileResponse(WEB_DIR / "index.html")


def create_app(config: Config, models: AgentModels) -> web.Application:
    # The configured tools are made (and checked against the brain) now, not at the first call.
    check_tools(models.brain, toolbox_for(config))
    app = web.Application(client_max_size=config.server.max_body_bytes,
                          middlewares=[forwarded_for_middleware(config.server), security_middleware(config.server)])
    registry = PeerRegistry(config, models)
    metrics = AgentMetrics(active_sessions=lambda: len(registry), load=registry.admission.load)
    metrics.record_models(models)
    registry.observers.append(metrics.watch)
    app[REGISTRY] = registry
    app[CONFIG] = config
    app[METRICS] = metrics
    app.router.add_get("/", handle_index)
    app.router.add_post("/offer", handle_offer)
    WhipEndpoint(registry, config.ice).add_routes(app.router, "/whip")
    app.router.add_get("/healthz", handle_health)
    app.router.add_get("/metrics", handle_metrics)
    app.router.add_get("/client-config", handle_client_config)
    app.router.add_static("/static/", WEB_DIR, show_index=False)

    async def on_shutdown(_app: web.Application) -> None:
        await registry.close_all(config.server.shutdown_timeout_s)

    app.on_shutdown.append(on_shutdown)
    return app
