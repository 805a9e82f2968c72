"""Whisper's encoder window against accuracy: `run.py bench --asr-windows`.

Transcribes spoken questions (several voices, mild noise; see `questions`) with the production
`WhisperTranscriber` at several `asr.window_s` settings, and reports the median time per question
and the word error rate against the text that was spoken. The setting in config/default.toml is
the fastest window whose WER is no worse than the full 30 s window's (figures in BENCHMARKS.md).
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass

from agent.brains import whisper_asr
from agent.config import Config
from agent.pipeline.transcripts import word_error_rate as wer
from agent.runtime.model_files import ensure_files, resolve_cache_dir

from .questions import load_speakers, spoken
from .report import write_json

WINDOWS_S = (0.0, 15.0, 10.0, 8.0, 6.0, 4.0)  # 0 = whisper's full 30 s window
TEXTS = (
    "What is the capital of France?",
    "How many legs does a spider have?",
    "Could you remind me to water the plants tomorrow morning?",
    "What's the difference between a frog and a toad?",
    "Tell me a short story about a brave little mouse.",
    "How far away is the moon from the earth?",
    "Which is heavier, a kilogram of feathers or a kilogram of steel?",
    "Why is the sea salty?",
    "What should I cook for dinner tonight with rice and beans?",
    "Is it going to rain this weekend in London?",
    "Who wrote the play Romeo and Juliet?",
    "Explain in simple words how a rainbow forms.",
)


@dataclass
class WindowResult:
    window_s: float
    median_ms: float
    wer: float  # mean over clips
    clips: int
    worst: str  # the clip with the most errors: "reference -> hypothesis"


async def measure_windows(config: Config, windows=WINDOWS_S, texts=TEXTS) -> list[WindowResult]:
    voices = load_speakers(config)
    try:
        clips = await spoken(voices, texts, rate=16000)
    finally:
        for voice in voices.values():
            voice.close()
    paths = ensure_files(whisper_asr.WHISPER_FILES, resolve_cache_dir(config.models.cache_dir), progress=False)
    results = []
    for window in windows:
        asr = config.replace(**{"asr.window_s": window}).asr
        transcriber = whisper_asr.WhisperTranscriber(whisper_asr.whisper_dir(paths), asr)
        times, errors, worst = [], [], (0.0, "")
        for clip in clips:
            audio = clip.speech  # noise before the words, as the VAD's pre-roll would keep
            started = time.perf_counter()
            heard = transcriber.transcribe_blocking(audio)
            times.append((time.perf_counter() - started) * 1000.0)
            error = wer(clip.label, heard)
            errors.append(error)
            if error > worst[0]:
                worst = (error, f"{clip.label} -> {heard} ({clip.speaker})")
        transcriber.thread.shutdown()
        results.append(WindowResult(window, round(statistics.median(times), 1), round(statistics.mean(errors), 4),
                                    len(clips), worst[1]))
        print(f"window {window or 30:>4g} s: {results[-1].median_ms:6.1f} ms  WER {results[-1].wer:.3f}  "
              f"worst: {worst[1]}")
    return results


def windows_markdown(results: list[WindowResult]) -> str:
    lines = ["| encoder window | median ms per question | WER | clips | worst clip |", "|---:|---:|---:|---:|---|"]
    for r in results:
        label = "30 s (whisper's own)" if r.window_s <= 0 else f"{r.window_s:g} s"
        lines.append(f"| {label} | {r.median_ms:g} | {r.wer:.3f} | {r.clips} | {r.worst or '-'} |")
    return "\n".join(lines)


async def run_asr_windows(config: Config, out_dir: str | None = None) -> list[WindowResult]:
    results = await measure_windows(config)
    print(windows_markdown(results))
    write_json("asr-windows.json", results, out_dir)
    return results
