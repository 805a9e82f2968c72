"""Per-frame CPU fixes for aiortc's media path (applied once, process-wide).

aiortc computes the RFC 6465 audio level of every outbound audio frame in a pure-Python loop
over the samples (~150 us per 20 ms frame here: several percent of a core per call, paid on the
event loop). `install()` swaps in the same computation done with numpy (~10 us); the result is
identical to the integer.
"""

from __future__ import annotations

import math

import numpy as np
from aiortc import rtp

MIN_AUDIO_LEVEL = -127
_original = rtp.compute_audio_level_dbov


def compute_audio_level_dbov(frame) -> int:
    """RFC 6465 Appendix A, as aiortc computes it (all samples in the frame's plane)."""
    samples = np.frombuffer(frame.planes[0], dtype=np.int16).astype(np.float64)
    energy = float(np.dot(samples, samples))
    rms = math.sqrt(energy / (frame.samples * 32767.0 * 32767.0))
    if rms <= 0:
        return MIN_AUDIO_LEVEL
    return round(min(0.0, max(float(MIN_AUDIO_LEVEL), 20 * math.log10(rms))))


def install() -> None:
    rtp.compute_audio_level_dbov = compute_audio_level_dbov


def uninstall() -> None:
    rtp.compute_audio_level_dbov = _original
