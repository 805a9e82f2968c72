"""Synthetic test signals (16 kHz mono int16) that webrtcvad treats as speech or not."""

import numpy as np

RATE = 16000


def voiced(ms: int, f0: float = 140.0, seed: int = 0) -> np.ndarray:
    """A vowel-like signal: harmonics of f0 with formant-shaped amplitudes and syllable-rate
    amplitude modulation, plus a little noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(RATE * ms // 1000) / RATE
    signal = np.zeros_like(t)
    for k in range(1, 30):
        f = k * f0
        if f > 3800:
            break
        gain = np.exp(-((f - 700) / 300) ** 2) + 0.6 * np.exp(-((f - 1200) / 400) ** 2) + 0.3 * np.exp(-((f - 2500) / 500) ** 2)
        signal += gain * np.sin(2 * np.pi * f * t + rng.uniform(0, 2 * np.pi))
    envelope = 0.6 + 0.4 * np.sin(2 * np.pi * 4.0 * t)
    signal = signal * envelope / np.max(np.abs(signal)) * 0.5
    signal += rng.normal(0, 0.003, len(t))
    return (signal * 32767).astype(np.int16)


def silence(ms: int) -> np.ndarray:
    return np.zeros(RATE * ms // 1000, dtype=np.int16)


def noise(ms: int, level: float = 0.002, seed: int = 1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (rng.normal(0, level, RATE * ms // 1000) * 32767).astype(np.int16)
