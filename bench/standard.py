"""The standard benchmark set behind BENCHMARKS.md (`run.py bench --report`): each stage alone
(the floor), whisper's encoder windows, the end-of-turn model, turn-taking, backchannels, callers
at once, the cascade over WebRTC, the stub pipeline, and ten stub calls at once. Each result is
written to docs/benchmarks/ (with report.json: the machine, the time, the config values quoted),
and `benchmarks_markdown` writes BENCHMARKS.md from those files alone, so the committed page is
what its committed results give (tests/test_architecture.py checks it)."""

from __future__ import annotations

import asyncio
import json
import statistics
import time
from dataclasses import dataclass
from pathlib import Path

from agent.config import Config
from agent.testing import stub_models

from .asr_windows import WindowResult, measure_windows, windows_markdown
from .backchannels import BackchannelResult, backchannels_markdown, measure_backchannels
from .end_of_turn import EndOfTurnResult, end_of_turn_markdown, measure_end_of_turn
from .floor import FloorRow, floor_markdown, measure_floor
from .real_call import RealCallResult, measure_real_calls, real_call_markdown, run_label
from .turn_taking import TurnTakingResult, measure_turn_taking, turn_taking_markdown
from .questions import questions_for
from .report import REPO, write_json, machine_description, markdown, print_run, write_run_files
from .results import BenchRun, TurnResult
from .runner import bench_in_process, load_real_models
from .together import CallerTurn, TogetherRun, measure_together, together_markdown

RESULTS = REPO / "docs" / "benchmarks"  # the result files BENCHMARKS.md is written from
CONTEXT_FILE = "report.json"
ENGINE_RUN = "together-engine-c4.json"  # four callers on the agent + llama-server
ENGINE_THREADS = 1  # llama-server's threads beside the agent on 2 cores (scripts/bench-many-callers.sh: 1 beat 2)
RUNS = (  # the runs over WebRTC, in the page's order: file stem (mode-cN), the command it stands for
    ("cascade-c1", "python run.py bench --turns 10"),
    ("stub-c1", "python run.py bench --stub --turns 20"),
    ("stub-c10", "python run.py bench --stub --concurrency 10 --turns 5"),
)


@dataclass
class ReportContext:
    """What BENCHMARKS.md says besides the results (docs/benchmarks/report.json): where and when
    the set ran, the config values its text quotes, and which file holds the run with one caller
    beyond capacity."""

    machine: str
    generated: str  # %Y-%m-%d %H:%M
    llm_threads: int
    voice_threads: int
    asr_threads: int
    hangover_ms: int
    speculative_ms: int
    beyond: str  # together-cN.json

    @classmethod
    def of(cls, config: Config, beyond: str) -> "ReportContext":
        return cls(machine_description(), time.strftime("%Y-%m-%d %H:%M"), config.llm.threads,
                   config.voice.threads, config.asr.threads, config.turns.hangover_ms,
                   config.turns.speculative_ms, beyond)


def floor_vs_pipeline(context: ReportContext, floor: list[FloorRow], run: BenchRun, stub: BenchRun) -> str:
    """Each stage alone (floor, the configured threads) beside what it adds in the pipeline."""
    def floor_ms(stage: str, setting: str = "") -> str:
        rows = [r for r in floor if r.stage.startswith(stage) and setting in r.setting]
        return f"{rows[0].median_ms:g}" if rows else "-"

    def add(later: str, earlier: str, source: BenchRun = run) -> str:
        values = [r.server_ms[later] - r.server_ms[earlier] for r in source.results
                  if r.outcome == "answered" and later in r.server_ms and earlier in r.server_ms]
        return f"{statistics.median(values):.0f}" if values else "-"

    def transport(source: BenchRun) -> str:
        values = [r.transport_ms for r in source.results if r.transport_ms is not None]
        return f"{statistics.median(values):.0f}" if values else "-"

    llm = f"{context.llm_threads} thread(s)"
    voice = f"{run.voice}, {context.voice_threads} thread(s)"
    rows = [
        ("VAD decision, per 20 ms frame", floor_ms("VAD"), "-", "webrtcvad; its ~100 ms overhang shows as `vad_end_offset`"),
        ("end of turn (hangover)", f"{context.hangover_ms} (config)", add("turn_end", "speech_end"),
         "a preemptive answer runs through it"),
        ("ASR", floor_ms("ASR", f"{context.asr_threads} thread(s)"), add("transcript", "speech_end"),
         f"from the last voiced frame; the preemptive answer starts {context.speculative_ms} ms later"),
        ("LLM first token", floor_ms("LLM first token", llm), add("first_token", "transcript"), "after the transcript"),
        ("LLM per token (first phrase: ~4-6 tokens)", floor_ms("LLM per token", llm), add("first_phrase", "first_token"),
         "pipeline: first token -> first phrase cut"),
        ("voice first PCM", floor_ms('voice first PCM: "Spiders', voice), add("first_pcm", "first_phrase"),
         "a 3-word phrase"),
        ("release at the end of the turn", "-", add("first_frame", "first_pcm"),
         "held audio waits for the end of the turn"),
        ("transport to the client (one way)", transport(stub), transport(run), "floor: the stub run's transport"),
    ]
    lines = ["| stage | alone (ms, floor) | in the pipeline (median ms added) | note |", "|---|---:|---:|---|"]
    lines += [f"| {a} | {b} | {c} | {d} |" for a, b, c, d in rows]
    return "\n".join(lines)


async def write_benchmarks_md(config: Config, turns_override: int | None = None) -> int:
    """Run the standard set, write each result into docs/benchmarks/, and rewrite BENCHMARKS.md
    from those files (`benchmarks_markdown`)."""
    out_dir = RESULTS
    out_dir.mkdir(parents=True, exist_ok=True)
    floor = await asyncio.to_thread(measure_floor, config)
    print(floor_markdown(floor))
    write_json("floor.json", floor, out_dir)
    windows = await measure_windows(config)
    write_json("asr-windows.json", windows, out_dir)
    verdicts = await measure_end_of_turn(config)
    write_json("end-of-turn.json", verdicts, out_dir)
    turn_taking = await measure_turn_taking(config)
    write_json("turn-taking.json", turn_taking, out_dir)
    backchannels = await measure_backchannels(config)
    write_json("backchannels.json", backchannels, out_dir)
    real_calls = await measure_real_calls(config)
    real_calls.label = run_label()
    write_json(REAL_CALL_RUN, real_calls, out_dir)

    runs: list[BenchRun] = []
    models = await load_real_models(config)
    try:
        questions = await questions_for(config, [])
        runs.append(await bench_in_process(config, models, questions, turns_override or 10, 1, "cascade"))
        together = await measure_together(config, models, questions, 4, turns_override or 3)
        write_json("together-c4.json", together, out_dir)
        beyond = await measure_together(config, models, questions, models.brain.capacity() + 1 if
                                        models.brain.capacity() else 5, 1)
        write_json(f"together-c{beyond.callers}.json", beyond, out_dir)
    finally:
        models.close()
    on_engine = await together_on_engine(config, questions, 4, turns_override or 3)
    if on_engine is not None:
        write_json(ENGINE_RUN, on_engine, out_dir)
    stub_questions = await questions_for(None, [])
    runs.append(await bench_in_process(config, stub_models(), stub_questions, turns_override or 20, 1, "stub"))
    runs.append(await bench_in_process(config, stub_models(), stub_questions, turns_override or 5, 10, "stub"))
    for bench_run in runs:
        write_run_files(bench_run, out_dir)
        print_run(bench_run)
    write_json(CONTEXT_FILE, ReportContext.of(config, f"together-c{beyond.callers}.json"), out_dir)

    (REPO / "BENCHMARKS.md").write_text(benchmarks_markdown(out_dir))
    print(f"wrote {REPO / 'BENCHMARKS.md'}")
    return 0


async def together_on_engine(config: Config, questions, callers: int, rounds: int) -> TogetherRun | None:
    """The same callers on the agent + llama-server (`-np callers`, ENGINE_THREADS threads, slots
    warmed) on the same cores; None (and a line saying why) where llama-server is not built."""
    from agent.local_engine import local_engine, pointed_at
    from agent.runtime.llama_server import LlamaServerError

    try:
        log_path = REPO / "artifacts" / "report-llama-server.log"
        log_path.parent.mkdir(exist_ok=True)
        with local_engine(config, callers, 2048 * callers, ENGINE_THREADS, log_path=log_path) as (server, _warmed_s):
            engine_config = pointed_at(config, server.url)
            models = await load_real_models(engine_config)
            try:
                return await measure_together(engine_config, models, questions, callers, rounds, server.process.pid)
            finally:
                models.close()
    except LlamaServerError as exc:
        print(f"skipped the callers on llama-server: {exc}")
        return None


# -- BENCHMARKS.md, from the result files alone -----------------------------------------------
def load_bench_run(path: Path) -> BenchRun:
    """A run as `write_run_files` wrote it ({"run": ..., "summary": ...})."""
    data = json.loads(path.read_text())["run"]
    data.pop("cpu_per_call_pct", None)  # a property of the run, written out for readers of the file
    results = [TurnResult(**turn) for turn in data.pop("results")]
    return BenchRun(**data, results=results)


def load_together(path: Path) -> TogetherRun:
    data = json.loads(path.read_text())
    turns = [CallerTurn(**turn) for turn in data.pop("turns")]
    return TogetherRun(**data, turns=turns)


REAL_CALL_RUN = "real-call.json"
REAL_CALL_BEFORE = "real-call-before.json"  # the same calls on the code before the cliffs were removed
CLIFFS = (  # (kinds of turn, the cause, what removed it): named with their measured effect below
    (("arithmetic",), "the forced calculator round: the model wrote the call's JSON (~20 tokens under a grammar) "
     "before a second round could speak; then the call made at once still went into the prompt as a whole tool "
     "round (~35 tokens more than its result)", "the calculation read from the words, the calculator called at "
     "once (agent/tools/spoken_arithmetic.py); its result given with the question (ChatHistory.add_tool_round)"),
    (("time",), "the model wrote the clock's call itself, or answered without it (\"The current date is today.\"); "
     "then the tool round's prompt, and a date-first result the model read out whole or answered with a bare "
     "\"21:54\" (one phrase the voice could start only at its end)",
     "a question for the time or date calls the clock at once (builtins.asks_the_time); its result given with "
     "the question, the time first as a sentence (builtins.clock_tool)"),
    (("barge-in", "two sentences"), "the answer after an interruption evaluated the whole history again: the "
     "call's own cancelled reply or prompt warm-up still held its llama.cpp slot, and from the seventh exchange "
     "each trim of the history broke the cached prefix (the two were not measured apart)",
     "a reply waits for the slot its own conversation holds (ChatSlots) and cancels a warm-up not yet started; "
     "the trim shifted out of the KV cache"),
    (("statement", "thanks"), "finished sentences waited the 2 s incomplete-silence: the transcript rule refused "
     "endings on \"that\", \"in\", ... and closings whisper wrote without a full stop (\"Ok thanks a lot\")",
     "agent/pipeline/transcripts.py: real endings and closing formulas end the turn after the hangover"),
    (("recall",), "the history held 6 exchanges, so what the caller said in turn 2 was gone by turn 10; a longer "
     "one cost seconds of prompt on every turn once full, as trimming re-evaluated it from the cut",
     "history_turns 16, and the dropped exchange shifted out of the KV cache (llama_chat.shift_cache_to)"),
)


def real_call_section(results_dir: Path) -> list[str]:
    if not (results_dir / REAL_CALL_RUN).exists():
        return []
    after = RealCallResult.from_json(json.loads((results_dir / REAL_CALL_RUN).read_text()))
    lines = ["## Real-shaped calls (`./dev.sh bench --real-call`)", "",
             "Three calls, each in its own voice (none the agent's), in a noisy room, ten turns of the kinds callers "
             "make (`bench/real_call.py`); voice-to-voice at the caller, from the end of the last utterance of the "
             f"turn to the first audible answer frame. Run: {after.label}.", "", real_call_markdown(after), ""]
    if (results_dir / REAL_CALL_BEFORE).exists():
        before = RealCallResult.from_json(json.loads((results_dir / REAL_CALL_BEFORE).read_text()))
        worst = [{kind: s["max"] for kind, s in r.by_kind().items() if s} for r in (before, after)]
        lines += [f"### The cliffs, and what removed them (before: {before.label})", "",
                  "| turns | cause | removed by | worst before -> after (ms) |", "|---|---|---|---|"]
        for kinds, cause, fix in CLIFFS:
            figures = ", ".join(f"{k} {worst[0].get(k, 0):.0f} -> {worst[1].get(k, 0):.0f}" for k in kinds)
            lines.append(f"| {', '.join(kinds)} | {cause} | {fix} | {figures} |")
        total_before, total_after = before.overall(), after.overall()
        lines += ["", f"Every turn: median {total_before['median']:.0f} -> {total_after['median']:.0f} ms, worst "
                  f"{total_before['max']:.0f} -> {total_after['max']:.0f} ms; answers holding what was asked "
                  f"{sum(t.right is True for t in before.turns)} -> {sum(t.right is True for t in after.turns)} of "
                  f"{sum(t.right is not None for t in after.turns)}.", ""]
    return lines


def benchmarks_markdown(results_dir: Path = RESULTS) -> str:
    """BENCHMARKS.md, written from the files `write_benchmarks_md` leaves in `results_dir` (and
    nothing else: tests/test_architecture.py checks that the committed file is this)."""
    def load(name: str):
        return json.loads((results_dir / name).read_text())

    context = ReportContext(**load(CONTEXT_FILE))
    floor = [FloorRow(**row) for row in load("floor.json")]
    windows = [WindowResult(**row) for row in load("asr-windows.json")]
    verdicts = [EndOfTurnResult(**row) for row in load("end-of-turn.json")]
    turn_taking = TurnTakingResult(**load("turn-taking.json"))
    backchannels = [BackchannelResult(**row) for row in load("backchannels.json")]
    together = load_together(results_dir / "together-c4.json")
    on_engine = load_together(results_dir / ENGINE_RUN) if (results_dir / ENGINE_RUN).exists() else None
    beyond = load_together(results_dir / context.beyond)
    runs = {stem: load_bench_run(results_dir / f"{stem}.json") for stem, _ in RUNS}
    sections = [f"Command: `{command}` (inside `./dev.sh bench`, which adds the loopback-only network "
                f"namespace)\n\n" + markdown(runs[stem], f"docs/benchmarks/{stem}.png") for stem, command in RUNS]
    return "\n".join([
        "# Benchmarks",
        "",
        "Regenerate all of it with `./dev.sh bench --report` (or `python run.py bench --report`): it "
        "writes each result into `docs/benchmarks/` and this page from those files alone. All "
        "traffic is on loopback (a network namespace holding only `lo`, ICE pinned to 127.0.0.1, no "
        "STUN). The client and the agent share one process, so CPU figures include both sides. Timings "
        "on this shared machine vary 2-4x between runs: compare medians within one run. What each of "
        "the CPU defaults was worth when it was chosen is in docs/DEPLOYMENT.md.",
        "",
        f"Machine: {context.machine}. Generated {context.generated}.",
        "",
        "## Each stage alone, and in the pipeline",
        "",
        "`alone`: the stage timed by itself on idle cores with the configured threads (`./dev.sh bench "
        "--floor`); `in the pipeline`: the median time it added in the cascade run below (ms after the "
        "previous stage). The gap between the two columns is what the pipeline costs beyond its parts.",
        "",
        floor_vs_pipeline(context, floor, runs["cascade-c1"], runs["stub-c1"]),
        "",
        "### The floor, every setting timed",
        "",
        floor_markdown(floor),
        "",
        "## whisper's encoder window (`./dev.sh bench --asr-windows`)",
        "",
        "Questions spoken by six voices with background noise (SNR ~25 dB), transcribed by the "
        "production `WhisperTranscriber` at each `asr.window_s`; WER against the text that was spoken.",
        "",
        windows_markdown(windows),
        "",
        "## The end-of-turn model (`./dev.sh bench --end-of-turn`)",
        "",
        "Smart Turn v3.2 on questions spoken whole and cut off mid-sentence by six voices with noise "
        "(`bench/end_of_turn.py` says how the clips are made). A whole question called incomplete waits "
        "`turns.incomplete_silence_ms` before its answer; a cut-off one called complete is answered "
        "before the user has finished.",
        "",
        end_of_turn_markdown(verdicts),
        "",
        "## Turn-taking over WebRTC (`./dev.sh bench --turn-taking`)",
        "",
        turn_taking_markdown(turn_taking),
        "",
        "## What short sounds over the agent are taken for (`./dev.sh bench --backchannels`)",
        "",
        backchannels_markdown(backchannels),
        "",
        *real_call_section(results_dir),
        "## Callers asking at the same moment (`./dev.sh bench --concurrency 4 --together --turns 3`)",
        "",
        together_markdown(together, memory=False),
        "",
        f"### One caller beyond capacity (`./dev.sh bench --concurrency {beyond.callers} --together --turns 1`)",
        "",
        together_markdown(beyond, memory=False),
        "",
        "### The same four callers on the agent + llama-server",
        "",
        (f"llama.cpp's own server (`python run.py engine --parallel 4 --threads {ENGINE_THREADS}`, continuous "
         "batching, every slot warmed with the agent's prompt) on the same two cores, the agent's brain "
         "`openai` (whisper, the end-of-turn model and the voice stay in the agent). "
         "`scripts/bench-many-callers.sh` runs both setups alone, each in its own processes, for other K and with "
         "each process's memory (docs/DEPLOYMENT.md, \"Measured here\").\n\n" + together_markdown(on_engine, memory=False))
        if on_engine is not None else "Not run: llama-server was not built (`./dev.sh install` builds it).",
        "",
        "## Runs over WebRTC",
        "",
        "Figures are ms after the end of the user's speech (server stages: the last voiced VAD frame; "
        "voice-to-voice: the end of the question's words as sent by the client, to the first audible "
        "answer frame the client decoded). `pipeline_after_turn_end` is the server's time from the "
        "end-of-turn decision to the first answer frame handed to the sender; `transport_one_way` is "
        "that hand-off to the client having the frame decoded.",
        "",
        *sections,
    ])
