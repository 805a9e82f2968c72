"""WHIP (RFC 9725): a call app or media server starts a session with one HTTP request.

    POST   /whip        Content-Type: application/sdp, body: the SDP offer
                        -> 201 Created, body: the SDP answer, Location: /whip/<session id>
    DELETE /whip/<id>   -> 200: the session ends and its peer is released
    PATCH  /whip/<id>   -> 405: no trickle ICE or ICE restart (the offer and the answer carry
                           every candidate; aiortc gathers them all before answering)
    OPTIONS /whip       -> 204 with Accept-Post: application/sdp

Sessions are the same peers `POST /offer` makes (PeerRegistry); the agent's voice goes back on
the offered audio transceiver, so a client that wants to hear it offers audio as sendrecv.
Configured STUN/TURN servers are announced in `Link: <url>; rel="ice-server"` headers. Errors are
plain text: 415 for a Content-Type other than application/sdp, 400 for an unusable offer (see
offer.py for which), 404 for an unknown session. Video in an offer is declined (port 0).
"""

from __future__ import annotations

import logging

from aiohttp import web

from agent.config import IceConfig

from .guard import Rejected, shown
from .offer import OfferError, check_sdp_offer
from .peers import PeerRegistry

log = logging.getLogger(__name__)

SDP = "application/sdp"


class WhipEndpoint:
    """The WHIP endpoint and its session resources, serving peers from a PeerRegistry."""

    def __init__(self, registry: PeerRegistry, ice: IceConfig) -> None:
        self.registry = registry
        self.ice = ice

    def add_routes(self, router: web.UrlDispatcher, path: str = "/whip") -> None:
        endpoint = router.add_resource(path)
        endpoint.add_route("POST", self.handle_post)
        endpoint.add_route("OPTIONS", self.handle_options)
        resource = router.add_resource(path.rstrip("/") + "/{session}")
        resource.add_route("DELETE", self.handle_delete)
        resource.add_route("PATCH", self.handle_patch)

    def _ice_links(self) -> list[str]:
        return [f'<{url}>; rel="ice-server"' for url in self.ice.servers]

    async def handle_options(self, request: web.Request) -> web.Response:
        headers = {"Accept-Post": SDP, "Allow": "POST, OPTIONS"}
        response = web.Response(status=204, headers=headers)
        for link in self._ice_links():
            response.headers.add("Link", link)
        return response

    async def handle_post(self, request: web.Request) -> web.Response:
        if request.content_type != SDP:
            got = request.headers.get("Content-Type", "none")
            return web.Response(status=415, text=f"Content-Type must be {SDP} (got {got!r})\n",
                                headers={"Accept-Post": SDP})
        body = await request.read()
        try:
            if not body.strip():
                raise OfferError(f"empty body: expected an SDP offer ({SDP})")
            try:
                sdp = body.decode("utf-8")
            except UnicodeDecodeError:
                raise OfferError("the body is not UTF-8 text: expected an SDP offer") from None
            offer = check_sdp_offer(sdp, "the body", self.registry.offer_policy)
            peer, answer = await self.registry.create(offer, request.remote)
        except Rejected as rejected:
            log.info("WHIP offer from %s refused: %s", request.remote, rejected.message)
            return rejected.response(json_body=False)
        except ValueError as exc:  # OfferError, or aiortc could not negotiate the offer
            log.info("rejected WHIP offer from %s: %s", request.remote, exc)
            return web.Response(status=getattr(exc, "status", 400), text=f"{exc}\n")
        location = f"{request.path.rstrip('/')}/{peer.id}"
        response = web.Response(status=201, body=answer.sdp.encode(), content_type=SDP,
                                headers={"Location": location})
        for link in self._ice_links():
            response.headers.add("Link", link)
        log.info("WHIP session %s created", peer.id[:8])
        return response

    async def handle_delete(self, request: web.Request) -> web.Response:
        peer = self.registry.get(request.match_info["session"])
        if peer is None:
            return _unknown_session(request)
        await self.registry.release(peer, "WHIP session deleted")
        return web.Response(status=200, text="session ended\n")

    async def handle_patch(self, request: web.Request) -> web.Response:
        if self.registry.get(request.match_info["session"]) is None:
            return _unknown_session(request)
        return web.Response(status=405, headers={"Allow": "DELETE"},
                            text="trickle ICE and ICE restarts are not supported: the offer must carry its "
                                 "candidates (non-trickle); DELETE ends the session\n")


def _unknown_session(request: web.Request) -> web.Response:
    return web.Response(status=404, text=f"no WHIP session {shown(request.match_info['session'])} "
                                         "(it ended, or never existed)\n")
