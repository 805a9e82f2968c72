"""The standard benchmark set behind BENCHMARKS.md (`run.py bench --report`): the cascade, the
stub pipeline, and ten stub calls at once, each written to docs/benchmarks/ and summarised."""

from __future__ import annotations

import time

from agent.config import Config
from agent.testing import stub_models

from .questions import questions_for
from .report import REPO, machine_description, markdown, print_run, write_run_files
from .results import BenchRun
from .runner import bench_in_process, load_real_models

FINDINGS = """## What the profile showed, and what was done about it

Measured with the per-stage timeline and the stacked-bar charts below; each fix was checked
with a before/after run of `./dev.sh bench`.

- **webrtcvad has its own overhang.** It keeps calling frames voiced for ~120 ms after the sound
  stops (aggressiveness 2), so the turn's end came ~420 ms after the speech with a 300 ms
  hangover. `turns.hangover_ms` is now 200 (counted from the last voiced frame: ~320 ms of real
  silence), visible as `vad_end_offset` (~120 ms uplink + overhang).
- **aiortc's audio jitter buffer holds every packet until the next one arrives** (it was written
  for multi-packet video frames), adding 20 ms even at prefetch 1. The agent's inbound side feeds
  a VAD, not a loudspeaker, so it now decodes each in-order packet at once
  (`signaling/aiortc_adjustments.py`, `ice.jitter_prefetch = 0`); the benchmark client keeps prefetch 1.
- **Speculative transcription.** whisper starts on the utterance after a 60 ms pause and the
  result is reused when the turn ends with the same audio: ~150 ms off the transcript.
- **The voice gets the CPU for the first phrase.** The LLM stream has backpressure: after the
  first phrase is cut, the session stops reading text until that phrase has audio, so llama.cpp
  pauses instead of competing with Kokoro's two threads. The LLM decodes on one thread (as fast
  as two here: memory-bound) and evaluates prompts on two.
- **Prompt cache kept warm.** Once the history reaches `brain.history_turns`, dropping the oldest
  exchange invalidated llama.cpp's cached prefix and the whole history was re-evaluated on the
  next turn's critical path (first token jumped from ~+250 ms to ~+1300 ms from turn 7 on). The
  next prompt's prefix is now evaluated in the background right after each answer.
- **A shorter first phrase** (3 words, or a punctuation mark after 2): Kokoro's cost grows with
  the audio it makes (~125 ms fixed + ~0.17 s per second of audio on two idle cores).
- **Playout wakes for fresh audio** instead of waiting for the next 20 ms slot, and aiortc's
  per-frame audio-level loop (~150 us/frame in Python) is replaced by a numpy equivalent.

What remains, on this 2-core CPU: Kokoro's first phrase (~0.4-0.6 s), whisper tiny.en
(~0.3-0.5 s per utterance: it always encodes a 30 s window; speculation hides part of it),
llama.cpp's first token (~0.2 s) and first phrase (~0.15 s). The 1000 ms voice-to-voice target
is not reached with these models on this machine; the GPU path (Voxtral) is where it is meant to
be. With `--concurrency 10` the in-process clients double the media work of the single event
loop, and the worst-turn p99 lateness swings between ~10 and ~100 ms from run to run on this
shared machine.
"""


async def write_benchmarks_md(config: Config, turns_override: int | None = None) -> int:
    """Run the standard set (cascade, stub, stub x10) and rewrite BENCHMARKS.md with the figures."""
    out_dir = REPO / "docs" / "benchmarks"
    runs: list[tuple[BenchRun, str]] = []
    models = await load_real_models(config)
    try:
        questions = await questions_for(config, [])
        run = await bench_in_process(config, models, questions, turns_override or 10, 1, "cascade")
        runs.append((run, "python run.py bench --turns 10"))
    finally:
        models.close()
    stub_questions = await questions_for(None, [])
    stub = await bench_in_process(config, stub_models(), stub_questions, turns_override or 20, 1, "stub")
    runs.append((stub, "python run.py bench --stub --turns 20"))
    crowd = await bench_in_process(config, stub_models(), stub_questions, turns_override or 5, 10, "stub")
    runs.append((crowd, "python run.py bench --stub --concurrency 10 --turns 5"))

    sections = []
    for run, command in runs:
        paths = write_run_files(run, out_dir)
        print_run(run)
        sections.append(f"Command: `{command}` (inside `./dev.sh bench`, which adds the loopback-only network "
                        f"namespace)\n\n" + markdown(run, f"docs/benchmarks/{paths[2].name}"))
    text = "\n".join([
        "# Benchmarks",
        "",
        "Regenerate with `./dev.sh bench --report` (or `python run.py bench --report`). All traffic is on "
        "loopback (a network namespace holding only `lo`, ICE pinned to 127.0.0.1, no STUN). The "
        "client and the agent share one process, so CPU figures include both sides. Timings on this "
        "shared machine vary 2-4x between runs: compare medians within one run.",
        "",
        f"Machine: {machine_description()}. Generated {time.strftime('%Y-%m-%d %H:%M')}.",
        "",
        FINDINGS,
        "Figures are ms after the end of the user's speech (server stages: the last voiced VAD frame; "
        "voice-to-voice: the end of the question's audio as sent by the client, to the first audible "
        "answer frame the client decoded). `pipeline_after_turn_end` is the server's time from the "
        "end-of-turn decision to the first answer frame handed to the sender; `transport_one_way` is "
        "that hand-off to the client having the frame decoded.",
        "",
        *sections,
    ])
    (REPO / "BENCHMARKS.md").write_text(text)
    print(f"wrote {REPO / 'BENCHMARKS.md'}")
    return 0
