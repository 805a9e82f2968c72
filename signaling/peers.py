"""Peer connections and their sessions: one RTCPeerConnection and one attached agent per peer.

The registry negotiates each peer from a validated offer and wires the agent onto it with
`attach.attach_agent` (the same code the embedding API offers). A peer is released (session
closed, tasks cancelled, peer connection closed) when its connection fails or closes, when ICE
does not connect in time, when its inbound audio stops arriving (a peer that vanished without a
goodbye) for longer than the idle timeout, or when its signaling says so (WHIP DELETE).
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from dataclasses import dataclass, field
from typing import Callable

from aiortc import RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from agent.config import Config
from agent.models import AgentModels
from agent.session import AgentSession

from .attach import AttachedAgent, attach_agent
from .guard import Admission, Rejected
from .ice import rtc_configuration, use_host_addresses

log = logging.getLogger(__name__)

AgentObserver = Callable[[AttachedAgent], None]


class WatchedTrack(MediaStreamTrack):
    """Wraps the inbound track: once audio has flowed, a recv() that waits longer than
    `idle_timeout_s` ends the track and reports the peer as gone (RTP stopped: the peer
    vanished). The first frame may take up to `first_timeout_s` (ICE and DTLS set-up)."""

    kind = "audio"

    def __init__(self, track: MediaStreamTrack, idle_timeout_s: float, first_timeout_s: float, on_idle) -> None:
        super().__init__()
        self._track = track
        self._idle_timeout_s = idle_timeout_s
        self._timeout_s = first_timeout_s
        self._on_idle = on_idle

    async def recv(self):
        try:
            async with asyncio.timeout(self._timeout_s):
                frame = await self._track.recv()
        except TimeoutError:
            self._on_idle()
            raise MediaStreamError from None
        self._timeout_s = self._idle_timeout_s
        return frame


@dataclass
class Peer:
    id: str
    pc: RTCPeerConnection
    agent: AttachedAgent
    closed: asyncio.Event = field(default_factory=asyncio.Event)
    watchdog: asyncio.Task | None = None

    @property
    def session(self) -> AgentSession:
        return self.agent.session


class PeerRegistry:
    def __init__(self, config: Config, models: AgentModels) -> None:
        self.config = config
        self.models = models
        self.peers: dict[str, Peer] = {}
        self.admission = Admission(config.server, lambda: len(self.peers), models.brain.capacity())
        self._ufrags: dict[str, str] = {}  # peer id -> the ICE username fragment of its offer
        # Called with each new peer's agent before negotiation (e.g. metrics.AgentMetrics.watch).
        self.observers: list[AgentObserver] = []

    def __len__(self) -> int:
        return len(self.peers)

    def get(self, peer_id: str) -> Peer | None:
        return self.peers.get(peer_id)

    async def create(self, offer: RTCSessionDescription, remote: str | None = None) -> tuple[Peer, RTCSessionDescription]:
        """Negotiate a new peer from a validated offer. Raises Rejected when admission control
        says no (503/429) or the offer was already answered (409), ValueError if aiortc rejects it."""
        ufrag = _ice_ufrag(offer.sdp)
        if ufrag is not None and ufrag in self._ufrags.values():
            raise Rejected(409, "this offer was already answered (same ICE credentials as a live session); "
                                "create a new offer for a new call")
        self.admission.admit(remote)
        pc = RTCPeerConnection(rtc_configuration(self.config.ice))
        peer_id = str(uuid.uuid4())
        server = self.config.server

        def watch_inbound(track: MediaStreamTrack) -> MediaStreamTrack:
            return WatchedTrack(track, server.peer_idle_timeout_s, server.ice_connect_timeout_s,
                                lambda: self._release_soon(peer_id, "inbound audio stopped"))

        agent = await attach_agent(pc, self.models, self.config, session_id=peer_id, wrap_inbound=watch_inbound)
        peer = Peer(peer_id, pc, agent)
        self.peers[peer.id] = peer
        if ufrag is not None:
            self._ufrags[peer.id] = ufrag
        for observer in self.observers:
            observer(agent)

        @pc.on("connectionstatechange")
        async def on_state() -> None:
            log.info("peer %s: connection %s", peer.id[:8], pc.connectionState)
            if pc.connectionState in ("failed", "closed"):
                await self.release(peer, f"connection {pc.connectionState}")

        try:
            await pc.setRemoteDescription(offer)
            answer = await pc.createAnswer()
            with use_host_addresses(self.config.ice.host_addresses):  # gathering happens here
                await pc.setLocalDescription(answer)
        except Exception as exc:
            await self.release(peer, "negotiation failed")
            raise ValueError(f"the offer could not be negotiated: {exc}") from exc
        peer.watchdog = asyncio.create_task(self._connect_watchdog(peer))
        log.info("peer %s: negotiated (%d active)", peer.id[:8], len(self.peers))
        return peer, pc.localDescription

    def _release_soon(self, peer_id: str, reason: str) -> None:
        peer = self.peers.get(peer_id)
        if peer is not None:
            asyncio.ensure_future(self.release(peer, reason))

    async def _connect_watchdog(self, peer: Peer) -> None:
        await asyncio.sleep(self.config.server.ice_connect_timeout_s)
        if peer.pc.connectionState != "connected":
            await self.release(peer, "ICE did not connect in time")

    async def release(self, peer: Peer, reason: str) -> None:
        if peer.closed.is_set():
            return
        peer.closed.set()
        self.peers.pop(peer.id, None)
        self._ufrags.pop(peer.id, None)
        log.info("peer %s: released (%s); %d active", peer.id[:8], reason, len(self.peers))
        if peer.watchdog is not None and peer.watchdog is not asyncio.current_task():
            peer.watchdog.cancel()
        await peer.agent.close()
        await peer.pc.close()

    async def close_all(self) -> None:
        self.admission.closing = True  # late offers get 503 from here on
        await asyncio.gather(*(self.release(p, "server shutting down") for p in list(self.peers.values())))


def _ice_ufrag(sdp: str) -> str | None:
    for line in sdp.splitlines():
        if line.startswith("a=ice-ufrag:"):
            return line.split(":", 1)[1].strip()
    return None
