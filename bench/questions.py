"""The questions the benchmark asks: spoken by the agent's own voice, read from WAV files, or
(for --stub) vowel-like sounds the VAD takes for speech. All int16 mono at the wire rate."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from agent.models import AgentModels
from agent.pipeline.audio import read_wav
from agent.pipeline.pcm_queue import SAMPLE_RATE as WIRE_RATE
from agent.testing import ToneVoice, vowel_sound
from agent.voices.base import render

Question = tuple[str, np.ndarray]  # (label, int16 mono 48 kHz)

DEFAULT_QUESTIONS = (
    "What is the capital of France?",
    "How many legs does a spider have?",
    "What color is the sky on a clear day?",
    "What is the largest planet in our solar system?",
    "Which animal is known as the king of the jungle?",
)


def synthetic_questions() -> list[tuple[str, np.ndarray]]:
    """Vowel-like sounds the VAD takes for speech (for --stub, which needs no speech models)."""
    out = []
    for i, ms in enumerate((1200, 900, 1500)):
        out.append((f"(synthetic vowel sound, {ms} ms)", vowel_sound(ms, WIRE_RATE, f0=120 + 20 * i, seed=i)))
    return out


async def questions_for(models: AgentModels | None, wavs: list[str]) -> list[Question]:
    """WAV files if given; else the default questions in the models' voice (or vowel sounds)."""
    if wavs:
        return [(Path(w).name, read_wav(w, WIRE_RATE)) for w in wavs]
    if models is None or isinstance(models.voice, ToneVoice):
        return synthetic_questions()
    return [(q, await render(models.voice, q, WIRE_RATE)) for q in DEFAULT_QUESTIONS]
