"""Sample-rate conversion with FFmpeg's resampler (PyAV), one persistent resampler per stream.

A resampler keeps filter state between calls, so a stream must use the same instance for its
whole life (re-creating it per chunk clicks and drops samples). A flushed resampler cannot be
reused: `finish()` ends a stream for good.
"""

from __future__ import annotations

import io
import wave
from pathlib import Path

import av
import numpy as np


class StreamResampler:
    """Converts a stream of audio into mono s16 at `rate`, keeping state across calls."""

    def __init__(self, rate: int) -> None:
        self._resampler = av.AudioResampler(format="s16", layout="mono", rate=rate)
        self._in_pts = 0

    def frame(self, frame: av.AudioFrame) -> np.ndarray:
        """Resample one decoded frame (any format/layout/rate); return int16 mono samples."""
        return self._collect(self._resampler.resample(frame))

    def samples(self, samples: np.ndarray, rate: int) -> np.ndarray:
        """Resample mono int16 (or float in [-1, 1]) samples given at `rate`."""
        if samples.dtype != np.int16:
            samples = float_to_int16(samples)
        frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(samples).reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate = rate
        frame.pts = self._in_pts
        self._in_pts += len(samples)
        return self.frame(frame)

    def finish(self) -> np.ndarray:
        """Flush the samples still inside the filter; the resampler is unusable afterwards."""
        return self._collect(self._resampler.resample(None))

    @staticmethod
    def _collect(frames: list[av.AudioFrame]) -> np.ndarray:
        if not frames:
            return np.zeros(0, dtype=np.int16)
        return np.concatenate([f.to_ndarray().reshape(-1) for f in frames])


def float_to_int16(samples: np.ndarray) -> np.ndarray:
    return (np.clip(samples, -1.0, 1.0) * 32767.0).astype(np.int16)


def rms_dbfs(samples: np.ndarray) -> float:
    """Loudness of int16 samples in dBFS (-inf for digital silence)."""
    if len(samples) == 0:
        return float("-inf")
    x = samples.astype(np.float32)
    rms = float(np.sqrt(np.dot(x, x) / len(x))) / 32768.0
    return 20.0 * float(np.log10(rms)) if rms > 0 else float("-inf")


def trim_silence(samples: np.ndarray, rate: int, threshold: float = 0.01, pad_ms: int = 20) -> np.ndarray:
    """Cut leading and trailing near-silence (below `threshold` of full scale), keeping `pad_ms`."""
    loud = np.flatnonzero(np.abs(samples.astype(np.float32)) > threshold * 32767)
    if len(loud) == 0:
        return samples
    pad = rate * pad_ms // 1000
    return samples[max(0, loud[0] - pad): loud[-1] + pad]


def block_levels_dbfs(samples: np.ndarray, rate: int) -> np.ndarray:
    """The loudness of each whole 10 ms block, in dBFS (int16 or float samples in [-1, 1])."""
    block = rate // 100
    x = samples[: len(samples) // block * block].astype(np.float64)
    if samples.dtype == np.int16:
        x /= 32768.0
    return 10 * np.log10(np.mean(x.reshape(-1, block) ** 2, axis=1) + 1e-12)


def trim_edges(samples: np.ndarray, rate: int, lead_ms: int, tail_ms: int, floor_dbfs: float = -45.0) -> np.ndarray:
    """Cut the silence before the first and after the last 10 ms block louder than `floor_dbfs`,
    keeping `lead_ms` and `tail_ms` of it (float or int16 samples)."""
    block = rate // 100
    if len(samples) < block:
        return samples
    loud = np.flatnonzero(block_levels_dbfs(samples, rate) > floor_dbfs)
    if len(loud) == 0:
        return samples[:0]
    start = max(0, loud[0] * block - rate * lead_ms // 1000)
    end = min(len(samples), (loud[-1] + 1) * block + rate * tail_ms // 1000)
    return samples[start:end]


def read_wav(path: str | Path, rate: int, trim: bool = True) -> np.ndarray:
    """A 16-bit PCM WAV file as int16 mono at `rate` (channels averaged), silence trimmed."""
    with wave.open(str(path), "rb") as wav:
        if wav.getsampwidth() != 2:
            raise ValueError(f"{path}: only 16-bit PCM WAV is supported")
        source_rate, channels = wav.getframerate(), wav.getnchannels()
        data = np.frombuffer(wav.readframes(wav.getnframes()), dtype=np.int16)
    if channels > 1:
        data = data.reshape(-1, channels).mean(axis=1).astype(np.int16)
    resampler = StreamResampler(rate)
    out = np.concatenate([resampler.samples(data, source_rate), resampler.finish()])
    return trim_silence(out, rate) if trim else out


def wav_bytes(samples: np.ndarray, rate: int) -> bytes:
    """int16 mono samples as the bytes of a 16-bit PCM WAV file."""
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(rate)
        wav.writeframes(np.ascontiguousarray(samples, dtype=np.int16).tobytes())
    return buffer.getvalue()


def write_wav(path: str | Path, samples: np.ndarray, rate: int) -> None:
    """Write int16 mono samples as a 16-bit PCM WAV file."""
    Path(path).write_bytes(wav_bytes(samples, rate))
