"""The outbound audio track: 20 ms, 48 kHz, mono s16 frames from a PcmQueue, paced on an
absolute clock. It is the agent's voice on the wire (the session only fills the queue).

Frame k is due at start + k * frame_duration. recv() sleeps until the frame is due (never on a
relative sleep, which drifts), sends silence when the queue is empty, and after a stall longer
than max_lag moves the whole timeline forward instead of bursting out the backlog.

While idle (the queue is empty), fresh audio does not wait for the next frame slot: the track
wakes up and sends it at once, moving the timeline earlier by less than one frame. The receiver
sees one packet arrive early, which its jitter buffer absorbs; the answer starts up to a frame
sooner.
"""

from __future__ import annotations

import asyncio
import fractions
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Awaitable, Callable

import av
import numpy as np
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from agent.pipeline.pcm_queue import SAMPLE_RATE, PcmQueue

FrameListener = Callable[[float, int, int], None]  # (lateness in s, samples from the queue, frame samples)


@dataclass
class PlayoutStats:
    frames: int = 0
    stalls: int = 0  # times the clock was moved forward after a stall
    recent_lateness_s: deque = field(default_factory=lambda: deque(maxlen=3000))
    max_lateness_s: float = 0.0

    def lateness_percentile(self, q: float) -> float:
        if not self.recent_lateness_s:
            return 0.0
        return float(np.percentile(np.fromiter(self.recent_lateness_s, float), q))


class PlayoutTrack(MediaStreamTrack):
    kind = "audio"

    def __init__(
        self,
        queue: PcmQueue,
        frame_ms: int = 20,
        max_lag_ms: int = 100,
        clock: Callable[[], float] = time.perf_counter,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        wake_on_audio: bool = True,
    ) -> None:
        super().__init__()
        self.queue = queue
        self.samples_per_frame = SAMPLE_RATE * frame_ms // 1000
        self.max_lag_s = max_lag_ms / 1000.0
        self._clock = clock
        self._sleep = sleep
        self._start: float | None = None
        self._pts = 0
        self._time_base = fractions.Fraction(1, SAMPLE_RATE)
        self.stats = PlayoutStats()
        # Each is called for every frame handed to the sender (the session's playout meter, metrics).
        self.frame_listeners: list[FrameListener] = []
        self._audio_ready: asyncio.Event | None = None
        if wake_on_audio:
            self._audio_ready = asyncio.Event()
            queue.push_listeners.append(self._audio_ready.set)

    @property
    def pts(self) -> int:
        return self._pts

    def due_time(self) -> float | None:
        """Clock time the next frame is due (None before the first frame)."""
        if self._start is None:
            return None
        return self._start + self._pts / SAMPLE_RATE

    async def recv(self) -> av.AudioFrame:
        if self.readyState != "live":
            raise MediaStreamError
        if self._start is None:
            self._start = self._clock()
        due = self._start + self._pts / SAMPLE_RATE
        now = self._clock()
        if due > now:
            if self._audio_ready is not None and self.queue.queued_samples == 0:
                self._audio_ready.clear()
                try:
                    await asyncio.wait_for(self._audio_ready.wait(), due - now)
                    now = self._clock()
                    self._start -= max(0.0, due - now)  # audio arrived while idle: send it now
                    due = min(due, now)
                except TimeoutError:
                    now = self._clock()
            else:
                await self._sleep(due - now)
                now = self._clock()
        lateness = max(0.0, now - due)
        if lateness > self.max_lag_s:
            # Stalled (the loop was blocked or the peer stopped pulling): re-anchor the clock so
            # this frame is on time, rather than sending the backlog in a burst.
            self._start += lateness
            self.stats.stalls += 1
        stats = self.stats
        stats.frames += 1
        stats.recent_lateness_s.append(lateness)
        if lateness > stats.max_lateness_s:
            stats.max_lateness_s = lateness
        samples, filled = self.queue.pull(self.samples_per_frame)
        frame = av.AudioFrame.from_ndarray(samples.reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate = SAMPLE_RATE
        frame.pts = self._pts
        frame.time_base = self._time_base
        self._pts += self.samples_per_frame
        for listener in self.frame_listeners:
            listener(lateness, filled, self.samples_per_frame)
        return frame
