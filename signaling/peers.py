"""Peer connections and their sessions: one RTCPeerConnection and one attached agent per peer.

The registry negotiates each peer from a checked offer (`offer.check_sdp_offer`) once admission
(`guard.Admission`) hands it a slot, and wires the agent onto it with `attach.attach_agent` (the
same code the embedding API offers). Sections the agent declines (video) are answered with
port 0 and never received. Each peer's inbound packets are budgeted (`aiortc_adjustments.
limit_inbound`), it may open at most `server.max_data_channels` data channels (only the first
"events" one is kept), and a watch task releases it when `liveness.PeerLiveness` says so (no
connection in time, too little audio, the longest call) or when it overruns the data channel
receive window. A peer is also released when its connection fails or closes, or when its
signaling says so (WHIP DELETE). Releasing always finishes: the peer connection is closed and the
slot freed even when closing the agent raises or hangs.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from dataclasses import dataclass, field
from typing import Callable

from aiortc import RTCDataChannel, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamTrack

from agent.config import Config
from agent.models import AgentModels
from agent.session import AgentSession

from .aiortc_adjustments import InboundLimits, limit_inbound, sctp_window_overrun
from .attach import AttachedAgent, attach_agent
from .guard import RETRY_AFTER_S, Admission, Rejected, Slot
from .ice import rtc_configuration, use_host_addresses
from .liveness import TICK_S, LivenessLimits, PeerLiveness
from .offer import CheckedOffer, OfferPolicy, decline_in_answer

log = logging.getLogger(__name__)

AgentObserver = Callable[[AttachedAgent], None]
RELEASE_STEP_S = 5.0  # the longest one step of a release (closing the agent, the peer connection) may take
NEGOTIATION_TIMEOUT_S = 15.0  # the longest answering an offer may take (gathering waits for STUN/TURN servers)


class CountedTrack(MediaStreamTrack):
    """Passes the inbound track's frames through, telling `heard` how many seconds each holds."""

    kind = "audio"

    def __init__(self, track: MediaStreamTrack, heard: Callable[[float], None]) -> None:
        super().__init__()
        self._track = track
        self._heard = heard

    async def recv(self):
        frame = await self._track.recv()
        if frame.sample_rate:
            self._heard(frame.samples / frame.sample_rate)
        return frame


@dataclass
class Peer:
    id: str
    pc: RTCPeerConnection
    agent: AttachedAgent
    slot: Slot
    liveness: PeerLiveness
    limits: InboundLimits | None = None
    closed: asyncio.Event = field(default_factory=asyncio.Event)
    watchdog: asyncio.Task | None = None
    data_channels: int = 0

    @property
    def session(self) -> AgentSession:
        return self.agent.session


class PeerRegistry:
    def __init__(self, config: Config, models: AgentModels) -> None:
        self.config = config
        self.models = models
        self.peers: dict[str, Peer] = {}
        self.admission = Admission(config.server, models.brain.capacity())
        self.offer_policy = OfferPolicy.from_config(config.server.max_sdp_bytes, config.ice)
        self.liveness_limits = LivenessLimits.from_config(config.server)
        self._ufrags: dict[str, str] = {}  # peer id -> the ICE username fragment of its offer
        # Called with each new peer's agent before negotiation (e.g. metrics.AgentMetrics.watch).
        self.observers: list[AgentObserver] = []

    def __len__(self) -> int:
        return len(self.peers)

    def get(self, peer_id: str) -> Peer | None:
        return self.peers.get(peer_id)

    async def create(self, offer: CheckedOffer, remote: str | None = None) -> tuple[Peer, RTCSessionDescription]:
        """Negotiate a new peer from a checked offer. Raises Rejected when admission control
        says no (503/429) or the offer was already answered (409), ValueError if aiortc rejects it."""
        ufrag = offer.ice_ufrag
        if ufrag is not None and ufrag in self._ufrags.values():
            raise Rejected(409, "this offer was already answered (same ICE credentials as a live session); "
                                "create a new offer for a new call")
        slot = self.admission.admit(remote)
        peer_id = str(uuid.uuid4())
        liveness = PeerLiveness(self.liveness_limits)
        try:
            pc = RTCPeerConnection(rtc_configuration(self.config.ice))
            agent = await attach_agent(pc, self.models, self.config, session_id=peer_id,
                                       wrap_inbound=lambda track: CountedTrack(track, liveness.heard))
        except BaseException:
            slot.release()
            raise
        peer = Peer(peer_id, pc, agent, slot, liveness)
        self.peers[peer.id] = peer
        if ufrag is not None:
            self._ufrags[peer.id] = ufrag
        for observer in self.observers:
            observer(agent)

        @pc.on("connectionstatechange")
        async def on_state() -> None:
            log.info("peer %s: connection %s", peer.id[:8], pc.connectionState)
            if pc.connectionState == "connected":
                liveness.connected()
            elif pc.connectionState in ("failed", "closed"):
                await self.release(peer, f"connection {pc.connectionState}")

        @pc.on("datachannel")
        def on_datachannel(channel: RTCDataChannel) -> None:
            self._police_channel(peer, channel)

        try:
            async with asyncio.timeout(NEGOTIATION_TIMEOUT_S):
                local = await self._negotiate(peer, offer)
        except TimeoutError:
            await self.release(peer, "negotiation timed out")
            raise Rejected(503, f"negotiating the call took longer than {NEGOTIATION_TIMEOUT_S:g} s; try again",
                           RETRY_AFTER_S) from None
        except Exception as exc:
            await self.release(peer, "negotiation failed")
            raise ValueError(f"the offer could not be negotiated: {type(exc).__name__}: {exc}") from exc
        except BaseException:  # cancelled (the server is shutting down): nothing may stay behind
            await self.release(peer, "negotiation cancelled")
            raise
        peer.watchdog = asyncio.create_task(self._watch(peer), name=f"peer-{peer.id[:8]}-watch")
        log.info("peer %s: negotiated (%d active)", peer.id[:8], len(self.peers))
        return peer, local

    async def _negotiate(self, peer: Peer, offer: CheckedOffer) -> RTCSessionDescription:
        """Apply the offer, decline what the agent does not serve, answer (gathering candidates)."""
        pc = peer.pc
        server = self.config.server
        await pc.setRemoteDescription(offer.description)
        peer.limits = limit_inbound(pc, server.max_inbound_packets_per_s, server.max_data_packets_per_s)
        for transceiver in pc.getTransceivers():
            if transceiver.mid in offer.declined_mids:
                transceiver.direction = "inactive"  # never received, never decoded
        answer = await pc.createAnswer()
        with use_host_addresses(self.config.ice.host_addresses):  # gathering happens here
            await pc.setLocalDescription(answer)
        local = pc.localDescription
        if offer.declined_mids:
            local = RTCSessionDescription(decline_in_answer(local.sdp, offer.declined_mids), local.type)
        return local

    def _police_channel(self, peer: Peer, channel: RTCDataChannel) -> None:
        """Only the events channel the agent took stays open; too many channels end the call."""
        peer.data_channels += 1
        if peer.data_channels > self.config.server.max_data_channels:
            self._release_soon(peer.id, f"opened more than {self.config.server.max_data_channels} data channels "
                                        "(server.max_data_channels)")
        elif channel is not peer.agent.events_channel:
            log.info("peer %s: data channel %s closed (only the first %r channel is served)", peer.id[:8],
                     ascii(channel.label[:40]), "events")
            channel.close()

    def _release_soon(self, peer_id: str, reason: str) -> None:
        peer = self.peers.get(peer_id)
        if peer is not None:
            asyncio.ensure_future(self.release(peer, reason))

    async def _watch(self, peer: Peer) -> None:
        while not peer.closed.is_set():
            await asyncio.sleep(TICK_S)
            reason = peer.liveness.verdict()
            if reason is None and sctp_window_overrun(peer.pc):
                reason = "sent data channel data beyond the receive window"
            if reason is not None:
                await self.release(peer, reason)
                return

    async def release(self, peer: Peer, reason: str) -> None:
        """Close the peer's agent and connection and free its slot; always finishes."""
        if peer.closed.is_set():
            return
        peer.closed.set()
        self.peers.pop(peer.id, None)
        self._ufrags.pop(peer.id, None)
        dropped = ""
        if peer.limits is not None and (peer.limits.dropped_media or peer.limits.dropped_dtls):
            dropped = f"; dropped {peer.limits.dropped_media} media and {peer.limits.dropped_dtls} DTLS packets over budget"
        log.info("peer %s: released (%s); %d active%s", peer.id[:8], reason, len(self.peers), dropped)
        if peer.watchdog is not None and peer.watchdog is not asyncio.current_task():
            peer.watchdog.cancel()
        try:
            await asyncio.wait_for(peer.agent.close(), RELEASE_STEP_S)
        except Exception as exc:  # a broken or hung agent must not keep the connection open
            log.warning("peer %s: closing its agent failed (%s: %s); closing the connection anyway",
                        peer.id[:8], type(exc).__name__, exc, exc_info=not isinstance(exc, TimeoutError))
        finally:
            peer.slot.release()
            try:
                await asyncio.wait_for(peer.pc.close(), RELEASE_STEP_S)
            except Exception as exc:
                log.warning("peer %s: closing its connection failed (%s: %s)", peer.id[:8], type(exc).__name__, exc)

    async def close_all(self, timeout_s: float | None = None) -> None:
        """Release every peer (in parallel, within `timeout_s` if given); no new ones from now on."""
        self.admission.closing = True  # late offers get 503 from here on
        releases = asyncio.gather(*(self.release(p, "server shutting down") for p in list(self.peers.values())))
        try:
            await asyncio.wait_for(releases, timeout_s)
        except TimeoutError:
            log.warning("releasing the peers took longer than %g s; going on with the shutdown", timeout_s)
