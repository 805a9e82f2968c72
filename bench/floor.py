"""Each stage's cost measured alone, on otherwise idle cores: the floor the pipeline stands on.

`run.py bench --floor` (inside `./dev.sh bench`) times, one model at a time and nothing else
running: a VAD decision, whisper transcribing a spoken question, llama.cpp's first token and
per-token time, one step of four answers decoded together (`llm.batched`), and each CPU voice's
first PCM, each at 1 and 2 threads. The thread settings in
config/default.toml come from this table (BENCHMARKS.md has the latest). Set
`--set asr.threads=...` etc. to time other settings; the table says which it used.
"""

from __future__ import annotations

import asyncio
import statistics
import threading
import time
from dataclasses import dataclass

import numpy as np

from agent.brains import cascade, llama_batch, llama_chat, whisper_asr
from agent.config import Config
from agent.pipeline.turns import TurnDetector
from agent.runtime.model_files import ensure_files, resolve_cache_dir
from agent.voices import voice_kind
from agent.voices.base import render

from .questions import DEFAULT_QUESTIONS
from .report import write_json

PHRASES = ("Spiders have eight", "The capital of France is Paris.")  # a first phrase; a whole sentence
REPEATS = 5


@dataclass
class FloorRow:
    stage: str
    setting: str  # what was timed (model, threads)
    median_ms: float
    min_ms: float
    runs: int


def _timed(fn, repeats: int = REPEATS) -> tuple[float, float]:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        times.append((time.perf_counter() - started) * 1000.0)
    return round(statistics.median(times), 1), round(min(times), 1)


def _vad(config: Config) -> FloorRow:
    detector = TurnDetector(config.turns)
    rng = np.random.default_rng(0)
    frame = (rng.normal(0, 3000, 16000 * config.turns.frame_ms // 1000)).astype(np.int16).tobytes()
    n = 2000
    started = time.perf_counter()
    for _ in range(n):
        detector.feed(frame)
    per_frame_ms = (time.perf_counter() - started) * 1000.0 / n
    return FloorRow("VAD decision (one frame)", f"webrtcvad, {config.turns.frame_ms} ms frames",
                    round(per_frame_ms, 3), round(per_frame_ms, 3), n)


def _asr(config: Config, paths, audio: np.ndarray, threads: int) -> FloorRow:
    asr = config.replace(**{"asr.threads": threads}).asr
    transcriber = whisper_asr.WhisperTranscriber(whisper_asr.whisper_dir(paths), asr)
    transcriber.transcribe_blocking(audio)
    median, low = _timed(lambda: transcriber.transcribe_blocking(audio))
    transcriber.thread.shutdown()
    return FloorRow(f"ASR ({len(audio) / 16000:.1f} s question)", f"whisper tiny.en, {threads} thread(s)",
                    median, low, REPEATS)


def _llm(config: Config, paths, threads: int) -> list[FloorRow]:
    llm = config.replace(**{"llm.threads": threads}).llm
    chat = llama_chat.LlamaChat(paths[llama_chat.LLM_GGUF.relpath], llm)
    system = {"role": "system", "content": config.brain.system_prompt}
    chat.warm_blocking([system, {"role": "user", "content": ""}])
    first, per_token = [], []
    for question in DEFAULT_QUESTIONS[:REPEATS]:
        stop = threading.Event()
        started = time.perf_counter()
        stamps = []
        for _piece in chat.tokens_blocking([system, {"role": "user", "content": question}], stop, max_tokens=16):
            stamps.append(time.perf_counter())
        if stamps:
            first.append((stamps[0] - started) * 1000.0)
        if len(stamps) > 2:
            per_token.append((stamps[-1] - stamps[0]) * 1000.0 / (len(stamps) - 1))
    chat.thread.shutdown()
    setting = f"Qwen2.5-1.5B Q4_K_M, {threads} thread(s) (prompt: {llm.batch_threads})"
    return [FloorRow("LLM first token (cached system prompt)", setting, round(statistics.median(first), 1),
                     round(min(first), 1), len(first)),
            FloorRow("LLM per token", setting, round(statistics.median(per_token), 1), round(min(per_token), 1),
                     len(per_token))]


def _llm_batched(config: Config, paths, threads: int, answers: int = 4) -> FloorRow:
    """One step of `answers` answers decoded together (`llama_batch`, each answer a token)."""
    llm = config.replace(**{"llm.threads": threads, "llm.batch_threads": threads, "llm.slots": answers}).llm
    batched = llama_batch.BatchedLlama(paths[llama_chat.LLM_GGUF.relpath], llm)
    system = {"role": "system", "content": config.brain.system_prompt}

    async def step_ms(questions: list[str]) -> float:
        stamps: list[list[float]] = [[] for _ in questions]

        async def answer(seq: int, question: str) -> None:
            prompt = batched.prompt_tokens([system, {"role": "user", "content": question}])
            async for _piece in batched.generate(seq, prompt, 16):
                stamps[seq].append(time.perf_counter())

        await asyncio.gather(*(answer(seq, q) for seq, q in enumerate(questions)))
        # the steps all answers were in: from their first token on, while the shortest lasts
        together = min(len(s) for s in stamps)
        if together < 3:
            return float("nan")
        return (max(s[together - 1] for s in stamps) - max(s[0] for s in stamps)) * 1000.0 / (together - 1)

    async def measure() -> list[float]:
        for seq in range(answers):
            async for _ in batched.generate(seq, batched.prompt_tokens([system, {"role": "user", "content": ""}]), 0):
                pass
        questions = list(DEFAULT_QUESTIONS)
        return [await step_ms([questions[(r + i) % len(questions)] for i in range(answers)]) for r in range(3)]

    try:
        times = [t for t in asyncio.run(measure()) if t == t]
    finally:
        batched.close()
    return FloorRow(f"LLM step of {answers} answers together (one token each)",
                    f"Qwen2.5-1.5B Q4_K_M, batched, {threads} thread(s)", round(statistics.median(times), 1),
                    round(min(times), 1), len(times))


def _voice(config: Config, kind_name: str, paths, threads: int) -> list[FloorRow]:
    voice = voice_kind(kind_name).load(config.replace(**{"voice.threads": threads}), paths)

    async def first_pcm(text: str) -> float:
        started = time.perf_counter()
        async for _chunk in voice.speak(text):
            return (time.perf_counter() - started) * 1000.0
        return float("nan")

    async def measure() -> list[FloorRow]:
        await voice.warm_up()
        rows = []
        for text in PHRASES:
            times = [await first_pcm(text) for _ in range(REPEATS)]
            rows.append(FloorRow(f"voice first PCM: \"{text}\"", f"{kind_name}, {threads} thread(s)",
                                 round(statistics.median(times), 1), round(min(times), 1), REPEATS))
        return rows

    try:
        return asyncio.run(measure())
    finally:
        voice.close()


def measure_floor(config: Config, thread_counts: tuple[int, ...] = (1, 2),
                  voices: tuple[str, ...] = ("hibari", "kokoro-onnx")) -> list[FloorRow]:
    """Time each stage alone (see the module docstring). Blocking; call it from a thread."""
    files = [*cascade.MODEL_FILES]
    for name in voices:
        files += voice_kind(name).model_files(config)
    paths = ensure_files(tuple({f.relpath: f for f in files}.values()), resolve_cache_dir(config.models.cache_dir),
                         progress=False)
    rows = [_vad(config)]
    speaker = voice_kind("hibari").load(config, paths)
    question = asyncio.run(render(speaker, DEFAULT_QUESTIONS[1], 16000, trim=False))
    speaker.close()
    for threads in thread_counts:
        rows.append(_asr(config, paths, question, threads))
    for threads in thread_counts:
        rows += _llm(config, paths, threads)
    for threads in thread_counts:
        rows.append(_llm_batched(config, paths, threads))
    for name in voices:
        for threads in thread_counts:
            rows += _voice(config, name, paths, threads)
    return rows


def floor_markdown(rows: list[FloorRow]) -> str:
    lines = ["| stage | setting | median ms | min ms | runs |", "|---|---|---:|---:|---:|"]
    lines += [f"| {r.stage} | {r.setting} | {r.median_ms:g} | {r.min_ms:g} | {r.runs} |" for r in rows]
    return "\n".join(lines)


def run_floor(config: Config, out_dir: str | None = None) -> list[FloorRow]:
    rows = measure_floor(config)
    print(floor_markdown(rows))
    print(f"wrote {write_json('floor.json', rows, out_dir)}")
    return rows
