"""Every adjustment this project makes to aiortc's and aioice's internals, in one place.

aiortc offers no setting for any of these, so each reaches into a private detail; each is guarded
by a test (tests/test_aiortc_adjustments.py) that fails loudly if an aiortc or aioice upgrade
moves it. Nothing here happens on import: `install()` applies the process-wide ones, and is
called explicitly at start-up (`signaling.server`, `attach_agent`, the headless client).

1. Audio level (process-wide, `install`): aiortc computes the RFC 6465 level of every outbound
   audio frame in a pure-Python loop, on the event loop, 50 times a second per call. The same
   integer is computed with numpy: 2 us instead of 55 us per 20 ms frame here, measured with
   `python -m timeit -s "import av, numpy as np; from aiortc import rtp; f = av.AudioFrame.
   from_ndarray(np.ones((1, 960), np.int16), format='s16', layout='mono')" "rtp.
   compute_audio_level_dbov(f)"` (and the same with this module's function).
2. ICE host addresses (`install` + a context variable): aioice gathers host candidates from
   every interface except 127.0.0.1, with no setting. The installed lookup returns aioice's own
   answer unless `host_addresses` are set for the current context (`use_host_addresses`), so
   the agent's peers can be pinned (e.g. to 127.0.0.1 in a loopback-only namespace) without
   touching the host application's other peer connections.
3. Receive jitter buffer (per receiver, `set_jitter_prefetch`): aiortc's audio receiver
   buffers 4 packets (~80 ms) before decoding, and releases a frame only when a packet of the
   NEXT frame has arrived (it was written for multi-packet video frames): even prefetch=1 holds
   every audio packet for one packet interval. n >= 1 gives aiortc's buffer with that prefetch;
   n = 0 gives `ImmediateAudioJitterBuffer`, which hands each in-order audio packet to the
   decoder as soon as it arrives. The agent's inbound side feeds a VAD, not a loudspeaker, so
   holding packets back there buys nothing and costs end-of-turn latency.
4. Inbound packet limits (per peer connection, `limit_inbound`): aiortc decrypts and parses every
   packet a peer sends, on the event loop, and decodes every audio frame, however fast they come.
   Each ICE transport's receive function is wrapped: RTP/RTCP packets and DTLS packets (the
   handshake, then data channels) each pass a token bucket; the excess is dropped before any
   decryption. A peer sending faster than real time costs little more than a peer that does not.
5. Stopping a receiver's decoder (process-wide, `install`): aiortc's `RTCRtpReceiver` stops its
   decoder thread by queueing a sentinel behind every frame still waiting and then joining the
   thread, on the event loop: a receiver with a backlog (a flood) blocks every call while it is
   decoded. The installed version drops the backlog, queues the sentinel and does not join (the
   thread ends after the frame it is decoding).
6. Data channel receive window (`sctp_window_overrun`): aiortc's SCTP counts down its advertised
   receive window (1 MiB) as fragments arrive but never refuses a chunk beyond it, so a peer that
   ignores the window (fragments of a message never finished) grows memory without bound. The
   check says when a peer has gone past it; the server releases such a peer.
7. Empty audio packets (process-wide, `install`): an RTP packet with an empty payload reaches
   aiortc's audio decoder as an empty packet, which FFmpeg takes as "flush": the decoder then
   fails every later frame ("End of file") and the agent is deaf for the rest of the call. The
   installed receiver drops audio packets without payload before they are decoded.
"""

from __future__ import annotations

import contextlib
import contextvars
import math
import time
from dataclasses import dataclass, field
from typing import Awaitable, Callable, Iterator

import aioice.ice
import numpy as np
from aiortc import rtp
from aiortc.jitterbuffer import JitterBuffer, JitterFrame
from aiortc import RTCPeerConnection
from aiortc.rtcrtpreceiver import RTCRtpReceiver

# -- 1. audio level ---------------------------------------------------------------------------
MIN_AUDIO_LEVEL = -127
AIORTC_AUDIO_LEVEL = rtp.compute_audio_level_dbov


def compute_audio_level_dbov(frame) -> int:
    """RFC 6465 Appendix A, as aiortc computes it (all samples in the frame's plane)."""
    samples = np.frombuffer(frame.planes[0], dtype=np.int16).astype(np.float64)
    energy = float(np.dot(samples, samples))
    rms = math.sqrt(energy / (frame.samples * 32767.0 * 32767.0))
    if rms <= 0:
        return MIN_AUDIO_LEVEL
    return round(min(0.0, max(float(MIN_AUDIO_LEVEL), 20 * math.log10(rms))))


# -- 2. ICE host addresses --------------------------------------------------------------------
AIOICE_HOST_ADDRESSES = aioice.ice.get_host_addresses
# None: aioice's own lookup. A list: only these addresses ([] = every interface plus 127.0.0.1).
_host_addresses: contextvars.ContextVar[list[str] | None] = contextvars.ContextVar("host_addresses", default=None)
_process_host_addresses: list[str] | None = None


def _configured_host_addresses(use_ipv4: bool, use_ipv6: bool) -> list[str]:
    addresses = _host_addresses.get()
    if addresses is None:
        addresses = _process_host_addresses
    if addresses is None:
        return AIOICE_HOST_ADDRESSES(use_ipv4=use_ipv4, use_ipv6=use_ipv6)
    if not addresses:  # every interface, plus 127.0.0.1 (which aioice skips)
        found = AIOICE_HOST_ADDRESSES(use_ipv4=use_ipv4, use_ipv6=use_ipv6)
        return found + ["127.0.0.1"] if use_ipv4 else found
    return [a for a in addresses if (":" in a and use_ipv6) or (":" not in a and use_ipv4)]


@contextlib.contextmanager
def use_host_addresses(addresses: list[str]) -> Iterator[None]:
    """Within this block (this task and the tasks it starts), peer connections gather host
    candidates only on `addresses` ([] = every interface plus 127.0.0.1). Wrap the
    setLocalDescription() of the peers it should apply to."""
    install()
    token = _host_addresses.set(list(addresses))
    try:
        yield
    finally:
        _host_addresses.reset(token)


def set_process_host_addresses(addresses: list[str] | None) -> None:
    """The host addresses for every peer connection of the process that is not inside
    `use_host_addresses` (None = aioice's own lookup)."""
    global _process_host_addresses
    install()
    _process_host_addresses = None if addresses is None else list(addresses)


# -- 3. receive jitter buffer -----------------------------------------------------------------
_JITTER_ATTRIBUTE = "_RTCRtpReceiver__jitter_buffer"


class ImmediateAudioJitterBuffer(JitterBuffer):
    """Releases the next in-order packet at once; a gap (loss or reordering) waits, as aiortc's
    buffer does, until the missing packet arrives or the buffer overflows and skips it."""

    def __init__(self, capacity: int) -> None:
        super().__init__(capacity=capacity, prefetch=0)

    def _remove_frame(self, sequence_number: int) -> JitterFrame | None:
        packet = self._packets[self._origin % self.capacity]
        if packet is None:
            return None
        self.remove(1)
        return JitterFrame(data=packet._data, timestamp=packet.timestamp)  # type: ignore[attr-defined]


def set_jitter_prefetch(receiver: RTCRtpReceiver, prefetch: int) -> bool:
    """Give an audio receiver a jitter buffer holding `prefetch` packets. Call it before media
    flows (e.g. in the "track" event). Returns False if aiortc's internals changed."""
    current = getattr(receiver, _JITTER_ATTRIBUTE, None)
    if not isinstance(current, JitterBuffer):
        return False
    buffer = ImmediateAudioJitterBuffer(current.capacity) if prefetch == 0 else JitterBuffer(current.capacity, prefetch)
    setattr(receiver, _JITTER_ATTRIBUTE, buffer)
    return True


# -- 4. inbound packet limits -----------------------------------------------------------------
class TokenBucket:
    """At most `rate` events a second on average, `burst` at once."""

    def __init__(self, rate: float, burst: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.rate = rate
        self.burst = burst
        self.clock = clock
        self._tokens = burst
        self._at = clock()

    def take(self) -> bool:
        now = self.clock()
        self._tokens = min(self.burst, self._tokens + (now - self._at) * self.rate)
        self._at = now
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return True
        return False


@dataclass
class InboundLimits:
    """One peer's inbound packet budgets, and what they dropped."""

    media: TokenBucket  # SRTP and SRTCP
    dtls: TokenBucket   # DTLS records: the handshake, then SCTP (data channels)
    dropped_media: int = 0
    dropped_dtls: int = 0
    wrapped: list = field(default_factory=list)  # the ICE transports whose receive is wrapped

    def admit(self, data: bytes) -> bool:
        first = data[0] if data else 0
        if 127 < first < 192:  # RTP or RTCP (RFC 7983)
            if self.media.take():
                return True
            self.dropped_media += 1
            return False
        if 19 < first < 64:  # DTLS
            if self.dtls.take():
                return True
            self.dropped_dtls += 1
            return False
        return True  # aiortc ignores anything else anyway


def limit_inbound(pc: RTCPeerConnection, media_per_s: float, dtls_per_s: float) -> InboundLimits:
    """Budget the packets `pc`'s remote peer may send (each: that many a second, a second's worth
    at once); call it after setRemoteDescription (the transports exist then) and before media
    flows. Returns the limits, whose counters say what was dropped."""
    limits = InboundLimits(TokenBucket(media_per_s, media_per_s), TokenBucket(dtls_per_s, dtls_per_s))
    transports = [t.receiver.transport.transport for t in pc.getTransceivers()]
    if pc.sctp is not None:
        transports.append(pc.sctp.transport.transport)
    for ice in {id(t): t for t in transports}.values():
        ice._recv = _limited_receive(ice._recv, limits)
        limits.wrapped.append(ice)
    return limits


def _limited_receive(receive: Callable[[], Awaitable[bytes]], limits: InboundLimits) -> Callable[[], Awaitable[bytes]]:
    async def limited() -> bytes:
        while True:
            data = await receive()
            if limits.admit(data):
                return data

    return limited


# -- 5. stopping a receiver's decoder ---------------------------------------------------------
AIORTC_STOP_DECODER = RTCRtpReceiver._RTCRtpReceiver__stop_decoder  # type: ignore[attr-defined]


def _stop_decoder_without_join(self: RTCRtpReceiver) -> None:
    thread = self._RTCRtpReceiver__decoder_thread  # type: ignore[attr-defined]
    if thread:
        backlog = self._RTCRtpReceiver__decoder_queue  # type: ignore[attr-defined]
        with backlog.mutex:
            backlog.queue.clear()  # frames still waiting are dropped: the receiver is going away
        backlog.put(None)  # the worker ends its track and exits after the frame in hand
        self._RTCRtpReceiver__decoder_thread = None  # type: ignore[attr-defined]


# -- 7. empty audio packets ------------------------------------------------------------------
AIORTC_HANDLE_RTP_PACKET = RTCRtpReceiver._handle_rtp_packet


async def _handle_rtp_packet_with_payload(self: RTCRtpReceiver, packet, arrival_time_ms: int) -> None:
    if not packet.payload and self._RTCRtpReceiver__kind == "audio":  # type: ignore[attr-defined]
        return
    await AIORTC_HANDLE_RTP_PACKET(self, packet, arrival_time_ms)


# -- 6. data channel receive window -----------------------------------------------------------
def sctp_window_overrun(pc: RTCPeerConnection) -> bool:
    """True when the remote peer has sent data channel fragments beyond the receive window
    aiortc advertised (which aiortc does not enforce)."""
    sctp = pc.sctp
    window = getattr(sctp, "_advertised_rwnd", None) if sctp is not None else None
    return isinstance(window, int) and window < 0


# -- installing -------------------------------------------------------------------------------
def install() -> None:
    """Apply the process-wide adjustments (1, 2, 5 and 7). Idempotent."""
    rtp.compute_audio_level_dbov = compute_audio_level_dbov
    aioice.ice.get_host_addresses = _configured_host_addresses
    RTCRtpReceiver._RTCRtpReceiver__stop_decoder = _stop_decoder_without_join  # type: ignore[attr-defined]
    RTCRtpReceiver._handle_rtp_packet = _handle_rtp_packet_with_payload


def installed() -> bool:
    return (rtp.compute_audio_level_dbov is compute_audio_level_dbov
            and aioice.ice.get_host_addresses is _configured_host_addresses
            and RTCRtpReceiver._RTCRtpReceiver__stop_decoder is _stop_decoder_without_join  # type: ignore[attr-defined]
            and RTCRtpReceiver._handle_rtp_packet is _handle_rtp_packet_with_payload)
