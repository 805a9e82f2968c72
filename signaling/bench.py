"""Headless loopback latency benchmark: the real agent (in-process, or a running one by URL) and
headless aiortc peers on 127.0.0.1, playing spoken questions one turn after another.

Per turn it reads voice-to-voice latency at the client (end of the question's speech in the sent
audio -> first audible agent frame received), the server's timeline, one-way transport (server
hands the first answer frame to its sender -> the client has it decoded), gaps inside the
answer's playback, and outbound frame lateness. `--stub` swaps in an instant scripted brain and a
tone voice to measure the pipeline and transport alone; `--concurrency K` runs K calls at once.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sys
import time
import wave
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from aiohttp import web

from agent.audio import StreamResampler
from agent.config import Config
from agent.models import AgentModels, load_models
from agent.playout import SAMPLE_RATE as WIRE_RATE
from agent.stub import ScriptedBrain, ToneVoice, vowel_sound
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
SILENT_PEAK = 64  # a received frame whose peak is above this carries audio (Opus silence decodes to ~0)


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


# -- questions --------------------------------------------------------------------------------
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


def synthetic_questions() -> list[tuple[str, np.ndarray]]:
    """Vowel-like sounds the VAD takes for speech (for --stub, which needs no speech models)."""
    out = []
    for i, ms in enumerate((1200, 900, 1500)):
        out.append((f"(synthetic vowel sound, {ms} ms)", vowel_sound(ms, WIRE_RATE, f0=120 + 20 * i, seed=i)))
    return out


# -- one turn ---------------------------------------------------------------------------------
@dataclass
class TurnResult:
    call: int
    turn: int
    question: str
    outcome: str
    answer: str
    voice_to_voice_ms: float | None
    transport_ms: float | None
    server_ms: dict[str, float]
    playout: dict[str, float]
    # Server's end-of-speech mark (last voiced VAD frame) minus the moment the client sent the
    # question's last frame: uplink transport, minus any speech tail the VAD did not call voiced.
    vad_end_offset_ms: float | None = None


async def play_turn(client: LoopbackClient, question: np.ndarray, turn: int, call: int, label: str,
                    timeout_s: float = 120.0) -> TurnResult:
    since = len(client.events)
    frames_before = len(client.frames)
    sent = client.say(question)
    await sent.done.wait()
    timeline = await client.wait_event(lambda e: e.get("type") == "timeline" and e.get("turn") == turn, timeout_s, since)
    answer = " ".join(e["text"] for _, e in client.events[since:] if e.get("type") == "agent_text" and e.get("turn") == turn)
    ended = sent.ended_at or 0.0
    audible = client.first_audible_after(ended)
    v2v = round((audible.at - ended) * 1000.0, 1) if audible is not None else None
    transport = None
    server_first_frame = timeline.get("clock", {}).get("first_frame")
    if server_first_frame is not None:
        first = next((f for f in client.frames[frames_before:]
                      if f.at >= server_first_frame and np.abs(f.samples).max(initial=0) > SILENT_PEAK), None)
        if first is not None:
            transport = round((first.at - server_first_frame) * 1000.0, 1)
    server_speech_end = timeline.get("clock", {}).get("speech_end")
    offset = round((server_speech_end - ended) * 1000.0, 1) if server_speech_end is not None and ended else None
    return TurnResult(call, turn, label, timeline["outcome"], answer, v2v, transport, timeline["ms"],
                      timeline.get("playout", {}), offset)


# -- a run ------------------------------------------------------------------------------------
@dataclass
class BenchRun:
    mode: str  # "cascade" | "stub" | "url"
    brain: str
    voice: str
    turns_per_call: int
    concurrency: int
    jitter_prefetch: int  # the client's receive jitter buffer, in packets
    results: list[TurnResult] = field(default_factory=list)
    wall_s: float = 0.0
    cpu_s: float = 0.0  # CPU time of this process over the run (server and clients when in-process)
    started: str = ""

    @property
    def cpu_per_call_pct(self) -> float:
        return 100.0 * self.cpu_s / max(1e-9, self.wall_s) / max(1, self.concurrency)

    def to_json(self) -> dict:
        data = asdict(self)
        data["cpu_per_call_pct"] = round(self.cpu_per_call_pct, 1)
        return data


async def _call(url: str, config: Config, call: int, questions: list[tuple[str, np.ndarray]], turns: int,
                progress, run: "BenchRun") -> None:
    client = LoopbackClient(config.ice, run.jitter_prefetch)
    try:
        await client.connect(url)
        hello = await client.wait_event(lambda e: e.get("type") == "hello", 10)
        run.brain, run.voice = hello.get("brain", run.brain), hello.get("voice", run.voice)
        await asyncio.sleep(0.5)
        for i in range(turns):
            label, audio = questions[(i + call) % len(questions)]
            run.results.append(await play_turn(client, audio, turn=i + 1, call=call, label=label))
            progress.update(1)
            await asyncio.sleep(0.4)
    finally:
        await client.close()


async def run_calls(url: str, config: Config, questions, turns: int, concurrency: int, run: BenchRun) -> BenchRun:
    from tqdm import tqdm

    started_wall, started_cpu = time.perf_counter(), time.process_time()
    with tqdm(total=turns * concurrency, desc=f"{run.mode} x{concurrency}", unit="turn",
              disable=not sys.stderr.isatty()) as progress:
        await asyncio.gather(*(_call(url, config, c + 1, questions, turns, progress, run)
                               for c in range(concurrency)))
    run.wall_s = round(time.perf_counter() - started_wall, 2)
    run.cpu_s = round(time.process_time() - started_cpu, 2)
    run.results.sort(key=lambda r: (r.call, r.turn))
    return run


def stub_models() -> AgentModels:
    return AgentModels(ScriptedBrain(), ToneVoice(), load_s=0.0)


async def bench_in_process(config: Config, models: AgentModels, questions, turns: int, concurrency: int,
                           mode: str, client_prefetch: int = 1) -> BenchRun:
    config = loopback_config(config)
    run = BenchRun(mode, models.brain.name, models.voice.name, turns, concurrency, client_prefetch,
                   started=time.strftime("%Y-%m-%d %H:%M:%S"))
    async with running_agent(config, models) as (url, _app):
        return await run_calls(url, config, questions, turns, concurrency, run)


async def questions_for(models: AgentModels | None, wavs: list[str]) -> list[tuple[str, np.ndarray]]:
    if wavs:
        return [(Path(w).name, read_wav_48k(w)) for w in wavs]
    if models is None or isinstance(models.voice, ToneVoice):
        return synthetic_questions()
    return [(q, await synthesize_question(models.voice, q)) for q in DEFAULT_QUESTIONS]


async def load_real_models(config: Config) -> AgentModels:
    models = await asyncio.to_thread(load_models, config, sys.stderr.isatty())
    await models.warm_up()
    return models


async def run_bench(config: Config, turns: int, wavs: list[str], stub: bool = False, concurrency: int = 1,
                    url: str | None = None, out_dir: str | None = None, report: bool = False,
                    client_prefetch: int = 1) -> int:
    from .bench_report import print_run, write_benchmarks_md, write_run_files

    if report:
        return await write_benchmarks_md(config, turns_override=turns if turns != 5 else None)
    if url:
        # A running agent: questions need a voice, so they come from WAVs or the local Kokoro.
        speaker = None if wavs else await load_real_models(config)
        questions = await questions_for(speaker, wavs)
        if speaker is not None:
            speaker.close()
        loop_config = loopback_config(config)
        run = BenchRun("url", "?", "?", turns, concurrency, client_prefetch,
                       started=time.strftime("%Y-%m-%d %H:%M:%S"))
        apply_host_addresses(loop_config.ice.host_addresses)
        run = await run_calls(url.rstrip("/"), loop_config, questions, turns, concurrency, run)
    else:
        models = stub_models() if stub else await load_real_models(config)
        try:
            questions = await questions_for(models, wavs)
            run = await bench_in_process(config, models, questions, turns, concurrency, "stub" if stub else "cascade",
                                         client_prefetch)
        finally:
            models.close()
    print_run(run)
    target = Path(out_dir or os.path.join("artifacts", "bench"))
    for path in write_run_files(run, target):
        print(f"wrote {path}")
    return 0


# -- soak -------------------------------------------------------------------------------------
def rss_mb() -> float:
    """Resident memory of this process in MiB (Linux /proc)."""
    with open("/proc/self/statm") as fh:
        pages = int(fh.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


@dataclass
class SoakSample:
    elapsed_s: float
    rss_mb: float
    behind_ms: float  # how far the agent's outbound clock was behind schedule (0 = on time)
    lateness_p99_ms: float
    stalls: int  # times the outbound clock had to be re-anchored after falling behind
    turns: int


async def soak(config: Config, minutes: float, stub: bool = True, interval_s: float = 6.0,
               sample_s: float = 5.0, out_dir: str | None = None) -> dict:
    """One call for `minutes`, a question every `interval_s`; samples drift, lateness, memory."""
    minutes = min(minutes, 120.0)  # bounded: at most two hours
    models = stub_models() if stub else await load_real_models(config)
    questions = await questions_for(models, [])
    config = loopback_config(config)
    samples: list[SoakSample] = []
    try:
        async with running_agent(config, models) as (url, app):
            client = LoopbackClient(config.ice)
            await client.connect(url)
            await client.wait_event(lambda e: e.get("type") == "hello", 10)
            session = app[REGISTRY].peers[client.session_id].session
            started = time.perf_counter()
            next_question = started + 1.0
            next_sample = started + sample_s
            asked = 0
            while (now := time.perf_counter()) - started < minutes * 60:
                if now >= next_question:
                    client.say(questions[asked % len(questions)][1])
                    asked += 1
                    next_question += interval_s
                if now >= next_sample:
                    track = session.playout
                    due = track.due_time() or now
                    samples.append(SoakSample(
                        round(now - started, 1), round(rss_mb(), 1), round(max(0.0, now - due) * 1000, 2),
                        round(track.stats.lateness_percentile(99) * 1000, 2), track.stats.stalls,
                        len(session.timelines)))
                    s = samples[-1]
                    print(f"soak {s.elapsed_s:7.1f}s rss {s.rss_mb:7.1f} MiB behind {s.behind_ms:5.2f} ms "
                          f"late p99 {s.lateness_p99_ms:5.2f} ms stalls {s.stalls} turns {s.turns}", file=sys.stderr)
                    next_sample += sample_s
                await asyncio.sleep(0.05)
            await client.close()
    finally:
        models.close()
    result = {
        "minutes": minutes, "brain": models.brain.name, "samples": [asdict(s) for s in samples],
        "max_behind_ms": max((s.behind_ms for s in samples), default=0.0),
        "stalls": samples[-1].stalls if samples else 0,
        "rss_growth_mb": round(samples[-1].rss_mb - samples[0].rss_mb, 1) if samples else 0.0,
        "turns": samples[-1].turns if samples else 0,
    }
    target = Path(out_dir or os.path.join("artifacts", "bench"))
    target.mkdir(parents=True, exist_ok=True)
    (target / "soak.json").write_text(json.dumps(result, indent=2))
    print(f"soak: {result['turns']} turns in {minutes:g} min; outbound clock max behind {result['max_behind_ms']} ms, "
          f"re-anchored {result['stalls']} times; RSS growth {result['rss_growth_mb']} MiB")
    return result
