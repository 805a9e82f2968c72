"""Whether a peer still earns its place: it connects in time, keeps sending audio, and does not
outstay the longest call.

A peer is released when
- its connection (ICE and DTLS) is not up `server.ice_connect_timeout_s` after the offer;
- once connected, the audio it delivered over the last `server.peer_idle_timeout_s` is less than
  `server.min_inbound_audio_ratio` of that time (it vanished, muted its track at the RTP level,
  never opened one, or sends a packet every few seconds to hold the slot); the first window
  starts when it connects;
- its call has lasted `server.max_call_s`.
`PeerLiveness` is the bookkeeping (fed with each inbound frame's duration, asked for a verdict
on a clock); `signaling/peers.py` runs one watch task per peer that asks every TICK_S.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass
from typing import Callable

from agent.config import ServerConfig

TICK_S = 0.5  # how often a peer's watch task asks for a verdict


@dataclass(frozen=True)
class LivenessLimits:
    connect_timeout_s: float
    idle_timeout_s: float
    min_audio_ratio: float
    max_call_s: float

    @classmethod
    def from_config(cls, server: ServerConfig) -> "LivenessLimits":
        return cls(server.ice_connect_timeout_s, server.peer_idle_timeout_s, server.min_inbound_audio_ratio,
                   server.max_call_s)


class PeerLiveness:
    def __init__(self, limits: LivenessLimits, clock: Callable[[], float] = time.monotonic) -> None:
        self.limits = limits
        self.clock = clock
        self.created_at = clock()
        self.connected_at: float | None = None
        self.heard_s = 0.0  # seconds of inbound audio delivered so far
        self._marks: deque[tuple[float, float]] = deque()  # (time, heard_s then), one per verdict

    def connected(self) -> None:
        if self.connected_at is None:
            self.connected_at = self.clock()
            self._marks.append((self.connected_at, self.heard_s))

    def heard(self, seconds: float) -> None:
        self.heard_s += seconds

    def verdict(self) -> str | None:
        """Why the peer should be released now, or None."""
        now = self.clock()
        limits = self.limits
        if self.connected_at is None:
            if now - self.created_at >= limits.connect_timeout_s:
                return f"did not connect (ICE and DTLS) within {limits.connect_timeout_s:g} s"
            return None
        if now - self.connected_at >= limits.max_call_s:
            return f"the call reached its maximum length of {limits.max_call_s:g} s (server.max_call_s)"
        self._marks.append((now, self.heard_s))
        window = limits.idle_timeout_s
        while len(self._marks) > 1 and self._marks[1][0] <= now - window:
            self._marks.popleft()  # keep one mark at or before the window's start
        since, heard_then = self._marks[0]
        if now - since < window:
            return None  # connected less than one window ago
        heard = self.heard_s - heard_then
        if heard <= 0:
            return f"inbound audio stopped (none for {now - since:.1f} s)"
        if heard < limits.min_audio_ratio * (now - since):
            return (f"inbound audio too sparse ({heard:.2f} s of audio in {now - since:.1f} s; "
                    f"server.min_inbound_audio_ratio is {limits.min_audio_ratio:g})")
        return None
