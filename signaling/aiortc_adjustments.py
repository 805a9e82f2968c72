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
"""

from __future__ import annotations

import contextlib
import contextvars
import math
from typing import Iterator

import aioice.ice
import numpy as np
from aiortc import rtp
from aiortc.jitterbuffer import JitterBuffer, JitterFrame
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


# -- installing -------------------------------------------------------------------------------
def install() -> None:
    """Apply the process-wide adjustments (1 and 2). Idempotent."""
    rtp.compute_audio_level_dbov = compute_audio_level_dbov
    aioice.ice.get_host_addresses = _configured_host_addresses


def installed() -> bool:
    return (rtp.compute_audio_level_dbov is compute_audio_level_dbov
            and aioice.ice.get_host_addresses is _configured_host_addresses)
