"""The playout queue: 48 kHz mono int16 PCM segments, pulled in exact frame-sized pieces.

Segments play back to back with no gap: a pull that ends one segment continues with the next.
A pull on an empty queue is padded with silence. flush() drops everything at once (barge-in).
Each segment can carry a callback that fires when its first sample is pulled (what the agent
is saying right now) and reports how many of its samples were played when it ends or is flushed.

It is the session's whole audio output: the session pushes, flushes and learns from each
segment's `on_done` how much was heard; the transport (`signaling/playout_track.py`) pulls one
frame at a time, so the session never touches WebRTC.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from agent.pipeline.audio import rms_dbfs

SAMPLE_RATE = 48000  # the queue holds audio at the wire rate: the outbound track sends it as it is

@dataclass
class Segment:
    samples: np.ndarray  # int16, mono
    tag: Any = None  # what this audio is (e.g. the phrase it speaks)
    on_start: Callable[["Segment"], None] | None = None
    on_done: Callable[["Segment", int], None] | None = None  # (segment, samples played)
    played: int = field(default=0)

    @property
    def remaining(self) -> int:
        return len(self.samples) - self.played


class QueueFull(RuntimeError):
    """More audio was queued than max_samples allows."""


class PcmQueue:
    def __init__(self, max_samples: int | None = None) -> None:
        self._segments: deque[Segment] = deque()
        self._queued = 0
        self.max_samples = max_samples
        self.paused = False  # pull() gives silence and keeps every queued sample (an interruption)
        self.recent_levels: deque[float] = deque(maxlen=25)  # dBFS of the last 0.5 s of pulls (echo checks)
        # Each is called after every push (the playout track uses it to wake up for fresh audio).
        self.push_listeners: list[Callable[[], None]] = []

    @property
    def queued_samples(self) -> int:
        return self._queued

    def __len__(self) -> int:
        return len(self._segments)

    def push(self, samples: np.ndarray, tag: Any = None,
             on_start: Callable[[Segment], None] | None = None,
             on_done: Callable[[Segment, int], None] | None = None) -> Segment:
        if samples.dtype != np.int16 or samples.ndim != 1:
            raise ValueError("PcmQueue takes 1-D int16 samples")
        if self.max_samples is not None and self._queued + len(samples) > self.max_samples:
            raise QueueFull(f"playout queue holds {self._queued} samples; adding {len(samples)} exceeds {self.max_samples}")
        segment = Segment(samples=samples, tag=tag, on_start=on_start, on_done=on_done)
        self._segments.append(segment)
        self._queued += len(samples)
        for listener in self.push_listeners:
            listener()
        return segment

    def pull(self, n: int) -> tuple[np.ndarray, int]:
        """Return exactly n samples (silence-padded) and how many of them came from the queue."""
        out, filled = self._pull_into(np.zeros(n, dtype=np.int16), n)
        self.recent_levels.append(rms_dbfs(out) if filled else float("-inf"))
        return out, filled

    def _pull_into(self, out: np.ndarray, n: int) -> tuple[np.ndarray, int]:
        filled = 0
        while filled < n and self._segments and not self.paused:
            segment = self._segments[0]
            if segment.played == 0 and segment.on_start is not None:
                segment.on_start(segment)
            take = min(n - filled, segment.remaining)
            out[filled:filled + take] = segment.samples[segment.played:segment.played + take]
            segment.played += take
            filled += take
            self._queued -= take
            if segment.remaining == 0:
                self._segments.popleft()
                if segment.on_done is not None:
                    segment.on_done(segment, segment.played)
        return out, filled

    def flush(self) -> int:
        """Drop all queued audio now; return how many samples were dropped."""
        dropped = self._queued
        segments = list(self._segments)
        self._segments.clear()
        self._queued = 0
        for segment in segments:
            if segment.on_done is not None:
                segment.on_done(segment, segment.played)
        return dropped
