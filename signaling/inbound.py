"""The inbound reader: the peer's audio track -> 16 kHz mono PCM -> the session's ears.

One reader per listened track, for the session's life. It keeps ONE resampler while the stream
keeps its format (aiortc decodes Opus to 48 kHz packed stereo; re-creating a resampler per frame
clicks and drops samples) and keeps reading even while the agent speaks: aiortc's track queue is
unbounded, and the VAD must hear a barge-in.

The stream may change format mid-call: a peer may switch payload type between the codecs both
sides negotiated (Opus to PCMU: 48 kHz stereo to 8 kHz mono), and aiortc then decodes with the
other codec. When a frame's sample format, layout or rate differs from the last one, the
resampler is flushed into the session and a new one follows the new format. A frame that still
cannot be converted is dropped and logged (once per format); the reader goes on.
"""

from __future__ import annotations

import asyncio
import logging

import av
import numpy as np
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from agent.pipeline.audio import StreamResampler
from agent.pipeline.turns import SAMPLE_RATE as VAD_RATE
from agent.session import AgentSession

log = logging.getLogger(__name__)

FrameFormat = tuple[str, str, int]  # (sample format, channel layout, rate)


def frame_format(frame: av.AudioFrame) -> FrameFormat:
    return frame.format.name, frame.layout.name, frame.sample_rate


class FollowingResampler:
    """A StreamResampler to 16 kHz mono that is replaced whenever the input format changes."""

    def __init__(self, rate: int = VAD_RATE) -> None:
        self.rate = rate
        self.format: FrameFormat | None = None
        self.changes = 0  # format changes followed (the first format not counted)
        self._resampler: StreamResampler | None = None

    def reset(self) -> None:
        """Forget the current stream (after a frame it could not convert)."""
        self._resampler = None
        self.format = None

    def frame(self, frame: av.AudioFrame) -> np.ndarray:
        """The frame as int16 mono samples at `rate` (after a format change, the old stream's
        tail first)."""
        fmt = frame_format(frame)
        tail = None
        if fmt != self.format:
            if self._resampler is not None:
                tail = self._resampler.finish()
                self.changes += 1
                log.info("inbound audio changed format %s -> %s: new resampler", self.format, fmt)
            self._resampler = StreamResampler(self.rate)
            self.format = fmt
        samples = self._resampler.frame(frame)
        if tail is not None and len(tail):
            samples = np.concatenate([tail, samples])
        return samples


async def read_inbound(track: MediaStreamTrack, session: AgentSession) -> None:
    """Feed `track`'s audio to `session.hear` until the track ends (or this task is cancelled)."""
    resampler = FollowingResampler(VAD_RATE)
    unconvertible: set[FrameFormat] = set()
    try:
        while True:
            frame = await track.recv()
            try:
                samples = resampler.frame(frame)
            except (ValueError, av.FFmpegError) as exc:
                fmt = frame_format(frame)
                if fmt not in unconvertible:
                    unconvertible.add(fmt)
                    log.warning("session %s: inbound frame %s dropped: %s", session.id, fmt, exc)
                resampler.reset()  # start afresh with the next frame
                continue
            session.hear(samples)
    except MediaStreamError:
        log.info("session %s: inbound track ended", session.id)
    except asyncio.CancelledError:
        raise
    except Exception:
        log.exception("session %s: inbound audio failed", session.id)
