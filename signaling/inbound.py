"""The inbound reader: the peer's audio track -> 16 kHz mono PCM -> the session's ears.

One reader per listened track, for the session's life. It keeps ONE resampler for the stream
(aiortc decodes Opus to 48 kHz packed stereo; re-creating a resampler per frame clicks and drops
samples) and keeps reading even while the agent speaks: aiortc's track queue is unbounded, and
the VAD must hear a barge-in.
"""

from __future__ import annotations

import asyncio
import logging

from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from agent.pipeline.audio import StreamResampler
from agent.pipeline.turns import SAMPLE_RATE as VAD_RATE
from agent.session import AgentSession

log = logging.getLogger(__name__)


async def read_inbound(track: MediaStreamTrack, session: AgentSession) -> None:
    """Feed `track`'s audio to `session.hear` until the track ends (or this task is cancelled)."""
    resampler = StreamResampler(VAD_RATE)
    try:
        while True:
            frame = await track.recv()
            session.hear(resampler.frame(frame))
    except MediaStreamError:
        log.info("session %s: inbound track ended", session.id)
    except asyncio.CancelledError:
        raise
    except Exception:
        log.exception("session %s: inbound audio failed", session.id)
