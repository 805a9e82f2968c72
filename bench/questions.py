"""The questions the benchmark asks, int16 mono at the wire rate (48 kHz).

By default each question is spoken by a different voice, not only the agent's own: the five
Kokoro voice packs on PyPI and hibari, in turn. Over WebRTC the caller's microphone adds steady
room noise (`ROOM_NOISE_DBFS`, ~25 dB below the voices) all the time, pauses included; clips
measured offline (ASR, end of turn) get the same kind of noise mixed in. WAV files can be given
instead; `--stub` uses vowel-like sounds the VAD takes for speech.
"""

from __future__ import annotations

from dataclasses import dataclass
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
SNR_DB = 25.0  # offline clips: noise this far below the speech's RMS
ROOM_NOISE_DBFS = -48.0  # over WebRTC: the caller's room, ~25 dB below the voices (about -20 to -25 dBFS)
LEAD_S = 0.3  # offline clips: noise before the words (what the VAD's pre-roll keeps)


@dataclass
class Question:
    label: str
    speech: np.ndarray  # the question, int16 mono at 48 kHz; voice-to-voice counts from its end
    speaker: str = ""


def add_noise(speech: np.ndarray, rate: int, snr_db: float, seed: int) -> np.ndarray:
    """The speech with room noise (hiss and a low rumble, like `RoomMicrophone`'s) at `snr_db`
    below its RMS, and a moment of that noise before it."""
    rng = np.random.default_rng(seed)
    x = speech.astype(np.float64)
    level = np.sqrt(np.mean(x ** 2)) * 10 ** (-snr_db / 20)
    lead = int(LEAD_S * rate)
    white = rng.normal(0, 1, lead + len(x))
    rumble = np.cumsum(rng.normal(0, 1, len(white)))
    rumble -= np.convolve(rumble, np.ones(rate // 50) / (rate // 50), mode="same")
    noise = white / white.std() + 0.7 * rumble / max(1e-9, rumble.std())
    noise *= level / noise.std()
    noise[lead:] += x
    return np.clip(noise, -32768, 32767).astype(np.int16)


def quietest_point(audio: np.ndarray, rate: int, start: float, end: float) -> int:
    """The sample where the quietest 20 ms block between `start` and `end` (fractions of the way
    through) begins: where a voice stopping mid-sentence to think would stop."""
    block = rate // 50
    lo, hi = int(len(audio) * start) // block, int(len(audio) * end) // block
    energy = [float(np.mean(audio[i * block:(i + 1) * block].astype(np.float64) ** 2)) for i in range(lo, hi)]
    return (lo + int(np.argmin(energy))) * block


def load_speakers(config: Config) -> dict[str, Voice]:
    """One loaded voice per speaker kind (Kokoro switches packs per question)."""
    kinds = sorted({kind for kind, _ in SPEAKERS})
    files = tuple({f.relpath: f for k in kinds for f in voice_kind(k).model_files(config)}.values())
    paths = ensure_files(files, resolve_cache_dir(config.models.cache_dir), progress=False)
    speaker_config = config.replace(**{"voice.voice": "", "voice.threads": 2})
    return {kind: voice_kind(kind).load(speaker_config, paths) for kind in kinds}


async def spoken(voices: dict[str, Voice], texts, rate: int = WIRE_RATE, snr_db: float | None = SNR_DB,
                 speakers=SPEAKERS) -> list[Question]:
    """Each text spoken by the next of `speakers` (with noise mixed in, unless snr_db is None)."""
    out = []
    for i, text in enumerate(texts):
        kind, name = speakers[i % len(speakers)]
        voice = voices[kind]
        if hasattr(voice, "voice") and isinstance(voice.voice, str):
            voice.voice = name  # a Kokoro voice pack
        speech = await render(voice, text, rate)
        if snr_db is not None:
            speech = add_noise(speech, rate, snr_db, seed=i)
        out.append(Question(text, speech, f"{kind}:{name}"))
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
        return await spoken(voices, DEFAULT_QUESTIONS, snr_db=None)  # the caller's room adds the noise
    finally:
        for voice in voices.values():
            voice.close()
