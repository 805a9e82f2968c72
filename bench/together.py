"""K callers asking at the same moment: `run.py bench --concurrency K --together`.

K headless callers (noisy rooms, questions spoken by different voices, see `questions`) connect
to one agent; in each round all of them finish a question at the same instant. Per caller and
round: voice-to-voice at the client, the longest silence inside the answer once it started
(measured on the audio the client decoded, from its first audible frame to its last), and the
turn's queue wait (time its model work waited behind other calls'). Callers the agent refuses
(503: no capacity) are counted with the Retry-After they were given.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from dataclasses import dataclass, field

from agent.config import Config
from agent.models import AgentModels
from agent.runtime.scheduler import shared_scheduler
from signaling.client import AUDIBLE_DBFS, HeadlessClient, OfferRefused
from signaling.server import running_server

from .memory import memory_mb
from .questions import ROOM_NOISE_DBFS, Question, questions_for
from .report import write_json
from .runner import bench_config, load_real_models

FRAME_MS = 20


@dataclass
class CallerTurn:
    caller: int
    round: int
    question: str
    speaker: str
    voice_to_voice_ms: float | None  # None: no answer heard
    longest_gap_ms: float  # the longest silence inside the answer after its first audible frame
    queue_wait_ms: float
    outcome: str
    answer: str
    preemptions_discarded: int = 0
    server_ms: dict[str, float] = field(default_factory=dict)  # the turn's timeline (ms after the end of speech)
    queue_wait_by_model_ms: dict[str, float] = field(default_factory=dict)  # the queue wait split by model
    end_of_turn_waited_ms: float | None = None  # the verdict that ended the turn: how long it waited to run


@dataclass
class TogetherRun:
    callers: int
    rounds: int
    started: str
    turns: list[CallerTurn] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)  # "status (Retry-After s)" per refused caller
    wall_s: float = 0.0
    model_time: dict[str, dict] = field(default_factory=dict)  # per model: steps, time waiting and running
    setup: str = "cascade"  # the brain's engine: "cascade" (in process) or "llama-server"
    memory_mb: dict[str, dict] = field(default_factory=dict)  # after the last round: process -> {pss_mb, rss_mb}
    model_time_since: str = "the process started"  # what `model_time` counts from

    def voice_to_voice(self) -> list[float]:
        return [t.voice_to_voice_ms for t in self.turns if t.voice_to_voice_ms is not None]


def longest_gap_ms(client: HeadlessClient, start: float, end: float) -> float:
    """The longest run of silent frames between the first and the last audible frame in [start, end)."""
    audible = [f.dbfs > AUDIBLE_DBFS for f in client.frames if start <= f.at < end]
    if True not in audible:
        return 0.0
    first, last = audible.index(True), len(audible) - 1 - audible[::-1].index(True)
    longest = run = 0
    for loud in audible[first:last + 1]:
        run = 0 if loud else run + 1
        longest = max(longest, run)
    return float(longest * FRAME_MS)


async def _ask(client: HeadlessClient, caller: int, turn: int, question: Question, start_at: float) -> CallerTurn:
    """Say `question` so that it ends at `start_at` + its length (all callers end together); round
    `turn` of the run is each caller's turn `turn`."""
    since = len(client.events)
    await asyncio.sleep(max(0.0, start_at - time.perf_counter()))
    sent = client.say(question.speech)
    await sent.done.wait()
    timeline = await client.wait_event(lambda e: e.get("type") == "timeline" and e.get("turn") == turn, 180, since)
    finished_at = client.event_time(lambda e: e.get("type") == "timeline" and e.get("turn") == turn, since)
    ended = sent.ended_at or 0.0
    audible = client.first_audible_after(ended)
    v2v = round((audible.at - ended) * 1000.0, 1) if audible is not None else None
    gap = longest_gap_ms(client, ended, (finished_at or time.perf_counter()) + 0.2)
    answer = " ".join(e["text"] for _, e in client.events[since:] if e.get("type") == "agent_text" and e.get("turn") == turn)
    discarded = sum(1 for _, e in client.events[since:] if e.get("type") == "preemption_discarded")
    return CallerTurn(caller, turn, question.label, question.speaker, v2v, gap,
                      float(timeline.get("queue_wait_ms", 0.0)), timeline["outcome"], answer, discarded,
                      dict(timeline.get("ms", {})), dict(timeline.get("queue_wait_by_model_ms", {})),
                      timeline.get("end_of_turn", {}).get("waited_ms"))


async def measure_together(config: Config, models: AgentModels, questions: list[Question], callers: int,
                           rounds: int, engine_pid: int | None = None) -> TogetherRun:
    """`callers` callers asking at once, `rounds` times; with `engine_pid` (the llama-server the
    models' brain talks to) its memory is reported beside this process's."""
    config = bench_config(config)
    run = TogetherRun(callers, rounds, time.strftime("%Y-%m-%d %H:%M:%S"),
                      setup="llama-server" if engine_pid else "cascade")
    started = time.perf_counter()
    before = {model: list(figures) for model, figures in shared_scheduler().stats.by_model.items()}
    async with running_server(config, models) as server:
        clients: list[HeadlessClient] = []
        for _ in range(callers):
            client = HeadlessClient(config.ice, room_noise_dbfs=ROOM_NOISE_DBFS)
            try:
                await client.connect(server.url)
                await client.wait_event(lambda e: e.get("type") == "hello", 10)
                clients.append(client)
            except OfferRefused as refused:
                run.refused.append(f"{refused.status} (Retry-After {refused.retry_after_s} s)")
                await client.close()
        await asyncio.sleep(1.0)
        try:
            for round_ in range(rounds):
                asked = [questions[(round_ * callers + i) % len(questions)] for i in range(len(clients))]
                longest = max((len(q.speech) for q in asked), default=0) / 48000
                end_at = time.perf_counter() + 0.5 + longest  # every question ends at this instant
                results = await asyncio.gather(*(
                    _ask(client, i + 1, round_ + 1, question, end_at - len(question.speech) / 48000)
                    for i, (client, question) in enumerate(zip(clients, asked))))
                run.turns += results
                await asyncio.sleep(1.0)
            run.memory_mb = {"agent and callers": memory_mb() or {}}
            if engine_pid:
                run.memory_mb["llama-server"] = memory_mb(engine_pid) or {}
        finally:
            for client in clients:
                await client.close()
    run.wall_s = round(time.perf_counter() - started, 1)
    zero = [0, 0.0, 0.0]
    run.model_time_since = "the run started"
    run.model_time = {model: {"steps": int(steps - was[0]), "waited_s": round(waited - was[1], 2),
                              "ran_s": round(ran - was[2], 2)}
                      for model, (steps, waited, ran) in shared_scheduler().stats.by_model.items()
                      for was in [before.get(model, zero)] if steps > was[0]}
    return run


def wait_rows(run: TogetherRun) -> list[str]:
    """Per stage: median and max per turn of the time spent queued, and when the turn ended."""
    def row(label: str, values: list[float]) -> str:
        return f"| {label} | {statistics.median(values):.0f} | {max(values):.0f} |" if values else f"| {label} | - | - |"

    models = sorted({model for t in run.turns for model in t.queue_wait_by_model_ms})
    rows = [row(f"queued for {model}", [t.queue_wait_by_model_ms.get(model, 0.0) for t in run.turns]) for model in models]
    rows.append(row("end-of-turn verdict queued", [t.end_of_turn_waited_ms for t in run.turns
                                                   if t.end_of_turn_waited_ms is not None]))
    rows.append(row("turn ended (after the end of speech)", [t.server_ms["turn_end"] for t in run.turns
                                                             if "turn_end" in t.server_ms]))
    rows.append(row("first token (after the end of speech)", [t.server_ms["first_token"] for t in run.turns
                                                              if "first_token" in t.server_ms]))
    return rows


def together_markdown(run: TogetherRun, memory: bool = True) -> str:
    """The run as Markdown; `memory` False leaves out the processes' memory (in the report, whose one
    process has loaded every model of the set by then and shares the GGUF's pages with the engine,
    it would say nothing about this setup: scripts/bench-many-callers.sh measures each setup alone)."""
    v2v = run.voice_to_voice()

    def stat(values, fn) -> str:
        return f"{fn(values):.0f}" if values else "-"

    gaps = [t.longest_gap_ms for t in run.turns]
    waits = [t.queue_wait_ms for t in run.turns]
    where = "the agent + llama-server (brain.kind = openai)" if run.setup == "llama-server" else "the in-process cascade"
    memory = "; ".join(f"{name} {m['pss_mb']} MB" for name, m in run.memory_mb.items() if m) if memory else ""
    total = sum(m.get("pss_mb", 0) for m in run.memory_mb.values())
    lines = [
        f"{run.callers} callers asking at the same moment on {where}, {run.rounds} round(s); started "
        f"{run.started}, wall {run.wall_s} s."
        + (f" Memory after the last round (PSS): {memory}" + (f"; {total} MB together" if len(run.memory_mb) > 1 else "")
           + " (the bench's callers and their question voices live in the agent's process)." if memory else ""), "",
        "| figure | median | max | n |", "|---|---:|---:|---:|",
        f"| voice-to-voice (ms) | {stat(v2v, statistics.median)} | {stat(v2v, max)} | {len(v2v)} |",
        f"| longest silence inside an answer (ms) | {stat(gaps, statistics.median)} | {stat(gaps, max)} | {len(gaps)} |",
        f"| queue wait per turn (ms) | {stat(waits, statistics.median)} | {stat(waits, max)} | {len(waits)} |",
        "",
        f"Answers heard: {len(v2v)} of {len(run.turns)}; refused callers: {len(run.refused)}"
        + (f" ({', '.join(run.refused)})" if run.refused else "") + ".", "",
        "Where the callers' waits went (per turn, ms; the end of the turn after the end of speech "
        "includes the hangover and the end-of-turn verdict):", "",
        "| wait | median | max |", "|---|---:|---:|",
        *wait_rows(run), "",
        f"Model steps in this process since {run.model_time_since}: " + "; ".join(
            f"{m}: {t['steps']} steps, {t['ran_s']} s running, {t['waited_s']} s waiting" for m, t in run.model_time.items()),
        "", "| round | caller | voice | voice-to-voice ms | longest gap ms | queue wait ms | answer |",
        "|---:|---:|---|---:|---:|---:|---|",
    ]
    for t in sorted(run.turns, key=lambda t: (t.round, t.voice_to_voice_ms or 1e9)):
        answer = t.answer if len(t.answer) <= 60 else t.answer[:57] + "..."
        lines.append(f"| {t.round} | {t.caller} | {t.speaker} | {t.voice_to_voice_ms if t.voice_to_voice_ms is not None else '-'} "
                     f"| {t.longest_gap_ms:.0f} | {t.queue_wait_ms:.0f} | {answer} |")
    return "\n".join(lines)


async def run_together(config: Config, callers: int, rounds: int, wavs: list[str], out_dir: str | None = None) -> TogetherRun:
    models = await load_real_models(config)
    try:
        questions = await questions_for(config, wavs)
        run = await measure_together(config, models, questions, callers, rounds)
    finally:
        models.close()
    print(together_markdown(run))
    write_json(f"together-c{callers}.json", run, out_dir)
    return run

