"""The questions the benchmark asks, int16 mono at the wire rate (48 kHz).

By default each question is spoken by a different voice, not only the agent's own: the five
Kokoro voice packs on PyPI and hibari, in turn, each with mild background noise (SNR ~25 dB)
that also runs for a moment before and after the words, as a microphone would have it. WAV
files can be given instead; `--stub` uses vowel-like sounds the VAD takes for speech.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from agent.config import Config
from agent.pipeline.audio import read_wav
from agent.pipeline.pcm_queue import SAMPLE_RATE as WIRE_RATE
from agent.runtime.model_files import ensure_files, resolve_cache_dir
from agent.testing import vowel_sound
from agent.voices import voice_kind
from agent.voices.base import Voice, render

DEFAULT_QUESTIONS = (
    "What is the capital of France?",
    "How many legs does a spider have?",
    "What color is the sky on a clear day?",
    "What is the largest planet in our solar system?",
    "Which animal is known as the king of the jungle?",
    "How many days are there in a leap year?",
    "What do bees make from flower nectar?",
    "Can you tell me a fun fact about the ocean?",
    "Why do leaves change color in the autumn?",
    "What is the boiling point of water in Celsius?",
)
# (voice kind, voice name): every voice that can be had offline, the agent's default among them.
SPEAKERS = (("kokoro-onnx", "jf_alpha"), ("hibari", "heart"), ("kokoro-onnx", "jm_kumo"),
            ("kokoro-onnx", "jf_gongitsune"), ("kokoro-onnx", "jf_nezumi"), ("kokoro-onnx", "jf_tebukuro"))
SNR_DB = 25.0
LEAD_S, TAIL_S = 0.3, 0.6  # noise before and after the words


@dataclass
class Question:
    label: str
    speech: np.ndarray  # the question, int16 mono at 48 kHz; voice-to-voice counts from its end
    tail: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int16))  # what the mic hears after it
    speaker: str = ""


def add_noise(speech: np.ndarray, rate: int, snr_db: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(lead + speech, tail): the speech with noise at `snr_db` below its RMS, plus noise-only
    stretches before and after it."""
    rng = np.random.default_rng(seed)
    x = speech.astype(np.float64)
    level = np.sqrt(np.mean(x ** 2)) * 10 ** (-snr_db / 20)
    lead, tail = int(LEAD_S * rate), int(TAIL_S * rate)
    white = rng.normal(0, 1, lead + len(x) + tail)
    brown = np.cumsum(rng.normal(0, 1, len(white)))  # a low rumble as well as hiss
    brown -= np.convolve(brown, np.ones(rate // 50) / (rate // 50), mode="same")
    noise = white / white.std() + 0.7 * brown / max(1e-9, brown.std())
    noise *= level / noise.std()
    fade = int(0.2 * rate)  # the room does not fall silent at once (an abrupt stop sounds like a click)
    noise[-fade:] *= np.linspace(1.0, 0.0, fade)
    noise[:fade] *= np.linspace(0.0, 1.0, fade)
    mixed = noise.copy()
    mixed[lead:lead + len(x)] += x
    out = np.clip(mixed, -32768, 32767).astype(np.int16)
    return out[: lead + len(x)], out[lead + len(x):]


def load_speakers(config: Config) -> dict[str, Voice]:
    """One loaded voice per speaker kind (Kokoro switches packs per question)."""
    kinds = sorted({kind for kind, _ in SPEAKERS})
    files = tuple({f.relpath: f for k in kinds for f in voice_kind(k).model_files(config)}.values())
    paths = ensure_files(files, resolve_cache_dir(config.models.cache_dir), progress=False)
    speaker_config = config.replace(**{"voice.voice": "", "voice.threads": 2})
    return {kind: voice_kind(kind).load(speaker_config, paths) for kind in kinds}


async def spoken(voices: dict[str, Voice], texts, rate: int = WIRE_RATE, snr_db: float = SNR_DB) -> list[Question]:
    """Each text spoken by the next speaker in SPEAKERS, with noise."""
    out = []
    for i, text in enumerate(texts):
        kind, name = SPEAKERS[i % len(SPEAKERS)]
        voice = voices[kind]
        if hasattr(voice, "voice") and isinstance(voice.voice, str):
            voice.voice = name  # a Kokoro voice pack
        speech, tail = add_noise(await render(voice, text, rate), rate, snr_db, seed=i)
        out.append(Question(text, speech, tail, f"{kind}:{name}"))
    return out


def synthetic_questions() -> list[Question]:
    """Vowel-like sounds the VAD takes for speech (for --stub, which needs no speech models)."""
    return [Question(f"(synthetic vowel sound, {ms} ms)", vowel_sound(ms, WIRE_RATE, f0=120 + 20 * i, seed=i))
            for i, ms in enumerate((1200, 900, 1500))]


async def questions_for(config: Config | None, wavs: list[str]) -> list[Question]:
    """WAV files if given; else the default questions by several voices (None: vowel sounds)."""
    if wavs:
        return [Question(Path(w).name, read_wav(w, WIRE_RATE)) for w in wavs]
    if config is None:
        return synthetic_questions()
    voices = load_speakers(config)
    try:
        return await spoken(voices, DEFAULT_QUESTIONS)
    finally:
        for voice in voices.values():
            voice.close()
