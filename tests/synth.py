"""Synthetic test signals (16 kHz mono int16) that webrtcvad treats as speech or not."""

import numpy as np

from agent.testing import vowel_sound

RATE = 16000


def voiced(ms: int, f0: float = 140.0, seed: int = 0) -> np.ndarray:
    return vowel_sound(ms, RATE, f0, seed)


def silence(ms: int) -> np.ndarray:
    return np.zeros(RATE * ms // 1000, dtype=np.int16)


def noise(ms: int, level: float = 0.002, seed: int = 1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (rng.normal(0, level, RATE * ms // 1000) * 32767).astype(np.int16)
