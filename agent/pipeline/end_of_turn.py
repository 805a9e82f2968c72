"""Semantic end of turn: has the user finished, or only paused? (Smart Turn v3.2, an audio model.)

webrtcvad says when the user is silent; it cannot say whether "What is the capital of ..." is a
whole question. At each pause the session asks `SmartTurn` about the utterance so far: a
"complete" verdict ends the turn after the short `turns.hangover_ms`, an "incomplete" one waits
up to `turns.incomplete_silence_ms` for the rest.

Smart Turn v3.2 (pipecat-ai, BSD-2-Clause) is a whisper-tiny encoder with a linear head, int8
ONNX, 8.7 MB. Its input, as pipecat's own inference feeds it: the last 8 s of 16 kHz audio (zero
padded in front), normalised to zero mean and unit variance, as whisper log-mel features
[1, 80, 800]; its output `logits` [1, 1] is the probability that the turn is complete. The
features come from faster-whisper's `FeatureExtractor` (the same log-mel; checked equal to
pipecat's to 2e-7). The ONNX file is fetched inside the pipecat-ai wheel (without installing
pipecat-ai or its dependencies) and verified by sha256 like every model file.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from agent.pipeline.audio import block_levels_dbfs
from agent.runtime.model_files import ModelFile, Part
from agent.runtime.model_thread import ModelThread

log = logging.getLogger(__name__)

SAMPLE_RATE = 16000
WINDOW_S = 8
MODEL = ModelFile(
    "smart-turn/smart-turn-v3.2-cpu.onnx",
    "2bb026316b14a660486a75b1733cd3fbab8c2fd0314dc9af7be49f8cca967e4f",
    (Part("pipecat", "pipecat/audio/turn/smart_turn/data/smart-turn-v3.2-cpu.onnx", "pipecat-ai==1.14.0",
          wheel="pipecat_ai-1.14.0-py3-none-any.whl"),),
)


TAIL_KEPT_MS = 20


def voice_end(x: np.ndarray) -> int:
    """Where the voice ends in float audio: after the last 10 ms block within 30 dB of the
    loudest one (and above -50 dBFS), plus 20 ms. The turn detector hands over the utterance
    with the VAD's ~100 ms of overhang and its kept tail, and silence after a sentence stopped
    midway pushes the model toward "complete": hibari's "What is the capital of Spain?" cut
    after "of" scored p 0.02 with no silence after it, 0.77 with 100-200 ms of zeros and 0.99
    with 400 ms (`SmartTurn.verdict_blocking` on those clips, without this trim), so the model
    hears the voice up to its end only."""
    block = SAMPLE_RATE // 100
    if len(x) < block:
        return len(x)
    level = block_levels_dbfs(x, SAMPLE_RATE)
    floor = max(-50.0, float(level.max()) - 30.0)
    loud = np.flatnonzero(level > floor)
    if len(loud) == 0:
        return len(x)
    return min(len(x), (int(loud[-1]) + 1) * block + SAMPLE_RATE * TAIL_KEPT_MS // 1000)


@dataclass(frozen=True)
class Verdict:
    complete: bool
    probability: float  # that the turn is complete
    ms: float  # time the decision took
    waited_ms: float = 0.0  # time it waited before running (other calls' model work: CPU, the model's thread)


class SmartTurn:
    """The end-of-turn model, loaded once and shared by every session (one model thread)."""

    def __init__(self, model_path: Path, threads: int = 1, threshold: float = 0.5) -> None:
        import onnxruntime as ort
        from faster_whisper.feature_extractor import FeatureExtractor

        started = time.perf_counter()
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        self._session = ort.InferenceSession(str(model_path), sess_options=options, providers=["CPUExecutionProvider"])
        self._features = FeatureExtractor(feature_size=80, sampling_rate=SAMPLE_RATE, chunk_length=WINDOW_S)
        self.threshold = threshold
        self.thread = ModelThread("end-of-turn", cores=threads)
        self.load_s = time.perf_counter() - started

    def features(self, audio: np.ndarray) -> np.ndarray:
        """[1, 80, 800] log-mel features of the last 8 s of `audio` (int16 or float, 16 kHz),
        ending where the voice ends (see `voice_end`)."""
        x = audio.astype(np.float32) / 32768.0 if audio.dtype == np.int16 else audio.astype(np.float32)
        x = x[: voice_end(x)]
        n = WINDOW_S * SAMPLE_RATE
        x = x[-n:]
        if len(x) < n:
            x = np.pad(x, (n - len(x), 0))
        x = (x - x.mean()) / np.sqrt(x.var() + 1e-7)
        mel = self._features(x, padding=0)[:, : WINDOW_S * 100]
        return mel[None].astype(np.float32)

    def verdict_blocking(self, audio: np.ndarray) -> Verdict:
        started = time.perf_counter()
        probability = float(self._session.run(None, {"input_features": self.features(audio)})[0].reshape(-1)[0])
        ms = (time.perf_counter() - started) * 1000.0
        return Verdict(probability > self.threshold, round(probability, 3), round(ms, 1))

    async def verdict(self, audio: np.ndarray) -> Verdict:
        asked = time.perf_counter()
        verdict = await self.thread.run(self.verdict_blocking, audio)
        waited = max(0.0, (time.perf_counter() - asked) * 1000.0 - verdict.ms)
        return dataclasses.replace(verdict, waited_ms=round(waited, 1))

    def close(self) -> None:
        self.thread.shutdown()
