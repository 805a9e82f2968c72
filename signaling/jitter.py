"""A settable receive jitter buffer for aiortc's audio receivers (a small, tested shim).

aiortc's audio receiver buffers 4 packets (~80 ms) before decoding, with no setting, and its
buffer only releases a frame when a packet of the NEXT frame has arrived (it was written for
multi-packet video frames): even prefetch=1 holds every audio packet for one packet interval.

`set_jitter_prefetch(receiver, n)` replaces the receiver's (private) buffer: n >= 1 gives
aiortc's buffer with that prefetch; n = 0 gives `ImmediateAudioJitterBuffer`, which hands each
in-order audio packet (one Opus packet = one frame) to the decoder as soon as it arrives. That
suits the agent's inbound side: it feeds a VAD, not a loudspeaker, so holding packets back buys
nothing and costs end-of-turn latency.
"""

from __future__ import annotations

from aiortc.jitterbuffer import JitterBuffer, JitterFrame
from aiortc.rtcrtpreceiver import RTCRtpReceiver

_ATTRIBUTE = "_RTCRtpReceiver__jitter_buffer"


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
    current = getattr(receiver, _ATTRIBUTE, None)
    if not isinstance(current, JitterBuffer):
        return False
    buffer = ImmediateAudioJitterBuffer(current.capacity) if prefetch == 0 else JitterBuffer(current.capacity, prefetch)
    setattr(receiver, _ATTRIBUTE, buffer)
    return True
