"""Headless loopback latency turns: the real agent in-process, an aiortc client on 127.0.0.1.

Plays spoken questions (made with the agent's own voice, or WAVs given by the user) one turn at
a time and reads, per turn, voice-to-voice latency at the client and the server's timeline.
"""

from __future__ import annotations

import asyncio
import json
import logging
import statistics
import sys
import time
import wave
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from aiohttp import web

from agent.audio import StreamResampler
from agent.config import Config
from agent.models import AgentModels, load_models
from agent.playout import SAMPLE_RATE as WIRE_RATE
from agent.timeline import STAGES
from agent.voice import Voice

from .app import REGISTRY, create_app
from .ice import apply_host_addresses
from .loopback_client import LoopbackClient

log = logging.getLogger(__name__)

DEFAULT_QUESTIONS = (
    "What is the capital of France?",
    "How many legs does a spider have?",
    "What color is the sky on a clear day?",
    "What is the largest planet in our solar system?",
    "Which animal is known as the king of the jungle?",
)


def loopback_config(config: Config) -> Config:
    """The same config with the server on 127.0.0.1:0 and ICE pinned to loopback, no STUN."""
    return config.replace(**{
        "server.host": "127.0.0.1", "server.port": 0,
        "ice.host_addresses": ["127.0.0.1"], "ice.servers": [],
    })


@asynccontextmanager
async def running_agent(config: Config, models: AgentModels):
    """Serve the real app on loopback; yields (base_url, app)."""
    apply_host_addresses(config.ice.host_addresses)
    app = create_app(config, models)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, config.server.host, config.server.port)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield f"http://{config.server.host}:{port}", app
    finally:
        await runner.cleanup()


def trim_silence(samples: np.ndarray, rate: int, threshold: float = 0.01, pad_ms: int = 20) -> np.ndarray:
    loud = np.flatnonzero(np.abs(samples.astype(np.float32)) > threshold * 32767)
    if len(loud) == 0:
        return samples
    pad = rate * pad_ms // 1000
    return samples[max(0, loud[0] - pad): loud[-1] + pad]


async def synthesize_question(voice: Voice, text: str) -> np.ndarray:
    """Speak `text` with the voice; return int16 mono at the wire rate (48 kHz), trimmed."""
    resampler = StreamResampler(WIRE_RATE)
    parts = [resampler.samples(chunk, voice.sample_rate) async for chunk in voice.speak(text)]
    parts.append(resampler.finish())
    return trim_silence(np.concatenate(parts), WIRE_RATE)


def read_wav_48k(path: str | Path) -> np.ndarray:
    with wave.open(str(path), "rb") as wav:
        if wav.getsampwidth() != 2:
            raise ValueError(f"{path}: only 16-bit PCM WAV is supported")
        rate, channels = wav.getframerate(), wav.getnchannels()
        data = np.frombuffer(wav.readframes(wav.getnframes()), dtype=np.int16)
    if channels > 1:
        data = data.reshape(-1, channels).mean(axis=1).astype(np.int16)
    resampler = StreamResampler(WIRE_RATE)
    out = np.concatenate([resampler.samples(data, rate), resampler.finish()])
    return trim_silence(out, WIRE_RATE)


@dataclass
class TurnResult:
    turn: int
    question: str
    voice_to_voice_ms: float | None
    server_ms: dict[str, float]
    outcome: str
    answer: str


async def play_turn(client: LoopbackClient, question: np.ndarray, turn: int, timeout_s: float = 90.0) -> TurnResult:
    since = len(client.events)
    sent = client.say(question)
    await sent.done.wait()
    timeline = await client.wait_event(lambda e: e.get("type") == "timeline" and e.get("turn") == turn, timeout_s, since)
    answer = " ".join(e["text"] for _, e in client.events[since:] if e.get("type") == "agent_text" and e.get("turn") == turn)
    first = client.first_audible_after(sent.ended_at or 0.0)
    v2v = round((first.at - sent.ended_at) * 1000.0, 1) if first is not None and sent.ended_at else None
    return TurnResult(turn, "", v2v, timeline["ms"], timeline["outcome"], answer)


def outbound_lateness(stats) -> dict[str, float]:
    return {
        "p50_ms": round(stats.lateness_percentile(50) * 1000, 2),
        "p99_ms": round(stats.lateness_percentile(99) * 1000, 2),
        "max_ms": round(stats.max_lateness_s * 1000, 2),
        "frames": stats.frames,
        "stalls": stats.stalls,
    }


def summarize(results: list[TurnResult]) -> dict[str, dict[str, float]]:
    columns: dict[str, list[float]] = {"voice_to_voice": [r.voice_to_voice_ms for r in results if r.voice_to_voice_ms is not None]}
    for stage in STAGES[1:]:
        columns[stage] = [r.server_ms[stage] for r in results if stage in r.server_ms]
    summary = {}
    for name, values in columns.items():
        if values:
            ordered = sorted(values)
            summary[name] = {
                "median": round(statistics.median(ordered), 1),
                "p90": round(ordered[min(len(ordered) - 1, int(0.9 * len(ordered)))], 1),
                "max": round(ordered[-1], 1),
                "n": len(ordered),
            }
    return summary


def print_report(results: list[TurnResult], summary: dict, out=sys.stdout) -> None:
    stages = list(STAGES[1:])
    header = ["turn", "v2v"] + stages
    print(" ".join(f"{h:>12}" for h in header), file=out)
    for r in results:
        row = [str(r.turn), f"{r.voice_to_voice_ms:.0f}" if r.voice_to_voice_ms is not None else "-"]
        row += [f"{r.server_ms[s]:.0f}" if s in r.server_ms else "-" for s in stages]
        print(" ".join(f"{c:>12}" for c in row), f"  {r.outcome}: {r.question!r} -> {r.answer!r}", file=out)
    print("\nms after end of speech (median / p90 / max):", file=out)
    for name, figures in summary.items():
        print(f"  {name:>15}: {figures['median']:7.0f} {figures['p90']:7.0f} {figures['max']:7.0f}  (n={figures['n']})", file=out)


async def run_bench(config: Config, turns: int, wavs: list[str], json_path: str | None) -> int:
    config = loopback_config(config)
    models = await asyncio.to_thread(load_models, config, sys.stderr.isatty())
    await models.warm_up()
    try:
        if wavs:
            questions = [(Path(w).name, read_wav_48k(w)) for w in wavs]
        else:
            questions = [(q, await synthesize_question(models.voice, q)) for q in DEFAULT_QUESTIONS]
        results: list[TurnResult] = []
        lateness: dict[str, float] = {}
        async with running_agent(config, models) as (url, app):
            client = LoopbackClient(config.ice, config.ice.jitter_prefetch)
            await client.connect(url)
            await asyncio.sleep(1.0)
            for i in range(turns):
                label, audio = questions[i % len(questions)]
                result = await play_turn(client, audio, turn=i + 1)
                result.question = label
                results.append(result)
                print(f"turn {result.turn}: v2v {result.voice_to_voice_ms} ms, {result.outcome}", file=sys.stderr)
                await asyncio.sleep(0.5)
            lateness = outbound_lateness(app[REGISTRY].peers[client.session_id].session.playout.stats)
            await client.close()
        summary = summarize(results)
        print_report(results, summary)
        print(f"\noutbound frame lateness over the run (ms): p50 {lateness['p50_ms']:.2f}, p99 {lateness['p99_ms']:.2f}, "
              f"max {lateness['max_ms']:.2f}; clock re-anchored after stalls: {lateness['stalls']}")
        if json_path:
            Path(json_path).write_text(json.dumps({
                "created": time.strftime("%Y-%m-%d %H:%M:%S"),
                "turns": [r.__dict__ for r in results], "summary": summary, "outbound_lateness": lateness,
            }, indent=2))
    finally:
        models.close()
    return 0
