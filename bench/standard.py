"""The standard benchmark set behind BENCHMARKS.md (`run.py bench --report`): each stage alone
(the floor), whisper's encoder windows, the cascade over WebRTC, the stub pipeline, and ten stub
calls at once; each run is written to docs/benchmarks/ and summarised in BENCHMARKS.md. The
findings section of BENCHMARKS.md is written by hand: a new report keeps it as it stands."""

from __future__ import annotations

import asyncio
import statistics
import time
from pathlib import Path

from agent.config import Config
from agent.testing import stub_models

from .asr_windows import measure_windows, windows_markdown
from .backchannels import backchannels_markdown, measure_backchannels
from .end_of_turn import end_of_turn_markdown, measure_end_of_turn
from .floor import FloorRow, floor_markdown, measure_floor
from .turn_taking import measure_turn_taking, turn_taking_markdown
from .questions import questions_for
from .report import REPO, write_json, machine_description, markdown, print_run, write_run_files
from .results import BenchRun
from .runner import bench_in_process, load_real_models
from .together import measure_together, together_markdown

FINDINGS_HEADING = "## What changed, and what each change was worth"


def hand_written_findings(benchmarks_md: Path) -> str:
    """The findings section of an existing BENCHMARKS.md (its heading up to the next `## `), as
    it was written by hand: the report keeps it and writes no findings of its own ("" if none)."""
    text = benchmarks_md.read_text() if benchmarks_md.exists() else ""
    start = text.find(FINDINGS_HEADING)
    if start < 0:
        return ""
    end = text.find("\n## ", start)
    return text[start:end] if end >= 0 else text[start:]


def floor_vs_pipeline(config: Config, floor: list[FloorRow], run: BenchRun, stub: BenchRun) -> str:
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

    llm = f"{config.llm.threads} thread(s)"
    voice = f"{run.voice}, {config.voice.threads} thread(s)"
    rows = [
        ("VAD decision, per 20 ms frame", floor_ms("VAD"), "-", "webrtcvad; its ~100 ms overhang shows as `vad_end_offset`"),
        ("end of turn (hangover)", f"{config.turns.hangover_ms} (config)", add("turn_end", "speech_end"),
         "a preemptive answer runs through it"),
        ("ASR", floor_ms("ASR", f"{config.asr.threads} thread(s)"), add("transcript", "speech_end"),
         f"from the last voiced frame; the preemptive answer starts {config.turns.speculative_ms} ms later"),
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
    """Run the standard set and rewrite BENCHMARKS.md with the figures."""
    out_dir = REPO / "docs" / "benchmarks"
    findings = hand_written_findings(REPO / "BENCHMARKS.md")
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

    runs: list[tuple[BenchRun, str]] = []
    models = await load_real_models(config)
    try:
        questions = await questions_for(config, [])
        run = await bench_in_process(config, models, questions, turns_override or 10, 1, "cascade")
        runs.append((run, "python run.py bench --turns 10"))
        together = await measure_together(config, models, questions, 4, turns_override or 3)
        write_json("together-c4.json", together, out_dir)
        beyond = await measure_together(config, models, questions, models.brain.capacity() + 1 if
                                        models.brain.capacity() else 5, 1)
        write_json(f"together-c{beyond.callers}.json", beyond, out_dir)
    finally:
        models.close()
    stub_questions = await questions_for(None, [])
    stub = await bench_in_process(config, stub_models(), stub_questions, turns_override or 20, 1, "stub")
    runs.append((stub, "python run.py bench --stub --turns 20"))
    crowd = await bench_in_process(config, stub_models(), stub_questions, turns_override or 5, 10, "stub")
    runs.append((crowd, "python run.py bench --stub --concurrency 10 --turns 5"))

    sections = []
    for bench_run, command in runs:
        paths = write_run_files(bench_run, out_dir)
        print_run(bench_run)
        sections.append(f"Command: `{command}` (inside `./dev.sh bench`, which adds the loopback-only network "
                        f"namespace)\n\n" + markdown(bench_run, f"docs/benchmarks/{paths[2].name}"))
    text = "\n".join([
        "# Benchmarks",
        "",
        "Regenerate all of it with `./dev.sh bench --report` (or `python run.py bench --report`). All "
        "traffic is on loopback (a network namespace holding only `lo`, ICE pinned to 127.0.0.1, no "
        "STUN). The client and the agent share one process, so CPU figures include both sides. Timings "
        "on this shared machine vary 2-4x between runs: compare medians within one run.",
        "",
        f"Machine: {machine_description()}. Generated {time.strftime('%Y-%m-%d %H:%M')}.",
        "",
        *([findings] if findings else []),
        "## Each stage alone, and in the pipeline",
        "",
        "`alone`: the stage timed by itself on idle cores with the configured threads (`./dev.sh bench "
        "--floor`); `in the pipeline`: the median time it added in the cascade run below (ms after the "
        "previous stage). The gap between the two columns is what the pipeline costs beyond its parts.",
        "",
        floor_vs_pipeline(config, floor, run, stub),
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
        "## Callers asking at the same moment (`./dev.sh bench --concurrency 4 --together --turns 3`)",
        "",
        together_markdown(together),
        "",
        f"### One caller beyond capacity (`./dev.sh bench --concurrency {beyond.callers} --together --turns 1`)",
        "",
        together_markdown(beyond),
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
    (REPO / "BENCHMARKS.md").write_text(text)
    print(f"wrote {REPO / 'BENCHMARKS.md'}")
    return 0
