"""Every `run.py bench` mode, run for a few seconds with its smallest settings: it exits 0 and
prints and writes what it should (a table, a JSON file, the run's files).

The stub modes run as `./dev.sh bench` does, in a child process through scripts/loopback.sh.
Modes about the real models run in-process with their question lists cut to one or two (what
each measures is the point, not the figures), marked `models` and `slow`. `--report` runs its
whole assembly with the stub models and small stand-in measurements (each measurement has its
own smoke run here), into a temporary folder, not the repository's BENCHMARKS.md.
"""

from __future__ import annotations

import asyncio
import functools
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import run
from agent.pipeline.audio import write_wav
from agent.testing import stub_models, vowel_sound
from signaling.server import running_server

REPO = Path(__file__).resolve().parent.parent
LOOPBACK = [str(REPO / "scripts" / "loopback.sh"), sys.executable, "run.py", "bench"]
RUN_HEADER = "v2v"  # a column of print_run's per-turn table
slow_models = [pytest.mark.models, pytest.mark.slow]


def bench_cli(*args: str, timeout_s: float = 120) -> subprocess.CompletedProcess:
    """`run.py bench ARGS` in a child process, offline, inside a loopback-only namespace."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    return subprocess.run([*LOOPBACK, *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout_s)


def bench_in_process(capsys, *args: str) -> str:
    """`run.py bench ARGS` in this process (so a test can shorten the mode's question lists);
    returns what it printed."""
    assert run.main(["bench", *args]) == 0
    return capsys.readouterr().out


def results_of(path: Path) -> list:
    return json.loads(path.read_text())["run"]["results"]


# -- the stub pipeline -------------------------------------------------------------------------

@pytest.mark.loopback
def test_stub_run_prints_the_turn_table_and_writes_its_files(tmp_path):
    done = bench_cli("--stub", "--turns", "2", "--out", str(tmp_path))
    assert done.returncode == 0, done.stderr[-3000:]
    assert "stub run: brain=stub voice=tone, 1 call(s) x 2 turns" in done.stdout
    assert RUN_HEADER in done.stdout and "figure (ms)" in done.stdout
    for name in ("stub-c1.json", "stub-c1.md", "stub-c1.png"):
        assert f"wrote {tmp_path / name}" in done.stdout
    assert len(results_of(tmp_path / "stub-c1.json")) == 2


@pytest.mark.loopback
def test_stub_run_with_concurrent_calls(tmp_path):
    done = bench_cli("--stub", "--concurrency", "2", "--turns", "1", "--out", str(tmp_path))
    assert done.returncode == 0, done.stderr[-3000:]
    assert "2 call(s) x 1 turns" in done.stdout
    assert sorted(r["call"] for r in results_of(tmp_path / "stub-c2.json")) == [1, 2]


@pytest.mark.loopback
async def test_url_mode_benchmarks_a_running_agent(config, tmp_path):
    wav = tmp_path / "question.wav"
    write_wav(wav, vowel_sound(1200, 48000), 48000)
    async with running_server(config, stub_models()) as server:
        # Not through loopback.sh: a namespace of its own could not reach the agent in this one.
        child = await asyncio.create_subprocess_exec(
            sys.executable, "run.py", "bench", "--url", server.url, "--turns", "1", "--wav", str(wav),
            "--out", str(tmp_path), cwd=REPO, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        out, err = await asyncio.wait_for(child.communicate(), 120)
    assert child.returncode == 0, err.decode()[-3000:]
    assert "url run:" in out.decode() and RUN_HEADER in out.decode()
    assert [r["question"] for r in results_of(tmp_path / "url-c1.json")] == ["question.wav"]


@pytest.mark.loopback
def test_soak_samples_the_outbound_clock(tmp_path):
    done = bench_cli("--soak", "0.1", "--out", str(tmp_path))  # six seconds, stub models
    assert done.returncode == 0, done.stderr[-3000:]  # 1 would mean the outbound clock stalled
    assert "soak:" in done.stdout and "outbound clock max behind" in done.stdout
    soak = json.loads((tmp_path / "soak.json").read_text())
    assert soak["brain"] == "stub" and soak["samples"]


def test_soak_refuses_a_length_out_of_range(tmp_path):
    done = bench_cli("--soak", "500", "--out", str(tmp_path), timeout_s=60)
    assert done.returncode == 2 and "--soak takes 0 < MINUTES <= 120" in done.stderr


# -- the report --------------------------------------------------------------------------------

@pytest.mark.loopback
@pytest.mark.slow
def test_report_assembles_benchmarks_md_from_its_result_files_alone(tmp_path, monkeypatch, capsys):
    """`--report` with the stub models and stand-in measurements, into tmp_path: every section is
    written, each result lands in docs/benchmarks/, and the page is exactly what those files give."""
    from bench import questions, standard
    from bench.asr_windows import WindowResult
    from bench.backchannels import BackchannelResult
    from bench.end_of_turn import EndOfTurnResult
    from bench.floor import FloorRow
    from bench.real_call import RealCallResult, RealCallTurn
    from bench.turn_taking import TurnTakingResult

    (tmp_path / "BENCHMARKS.md").write_text("# Benchmarks\n\n## Runs over WebRTC\n\nthe old figures\n")

    async def measured(value):
        return value

    results = tmp_path / "docs" / "benchmarks"
    monkeypatch.setattr(standard, "REPO", tmp_path)
    monkeypatch.setattr(standard, "RESULTS", results)
    monkeypatch.setattr(standard, "measure_floor", lambda config: [FloorRow("VAD decision (one frame)", "webrtcvad",
                                                                            0.01, 0.01, 1)])
    monkeypatch.setattr(standard, "measure_windows", lambda config: measured([WindowResult(10.0, 50.0, 0.0, 1, "")]))
    monkeypatch.setattr(standard, "measure_end_of_turn",
                        lambda config: measured([EndOfTurnResult(1, 1.0, 1.0, 1.0, 30.0, 3, [])]))
    monkeypatch.setattr(standard, "measure_turn_taking", lambda config: measured(TurnTakingResult()))
    monkeypatch.setattr(standard, "measure_backchannels", lambda config: measured([BackchannelResult(0.0)]))
    monkeypatch.setattr(standard, "measure_real_calls", lambda config: measured(
        RealCallResult([RealCallTurn(1, "fact", "What is the capital of France?", "hibari:heart", 900.0, "Paris.")])))
    monkeypatch.setattr(standard, "run_label", lambda: "a stand-in run")
    monkeypatch.setattr(standard, "load_real_models", lambda config: measured(stub_models()))
    monkeypatch.setattr(standard, "questions_for", lambda config, wavs: questions.questions_for(None, wavs))

    out = bench_in_process(capsys, "--report", "--turns", "1")
    assert f"wrote {tmp_path / 'BENCHMARKS.md'}" in out
    text = (tmp_path / "BENCHMARKS.md").read_text()
    assert "the old figures" not in text
    assert text == standard.benchmarks_markdown(results)
    for heading in ("## Each stage alone, and in the pipeline", "## whisper's encoder window",
                    "## The end-of-turn model", "## Turn-taking over WebRTC", "## What short sounds over the agent",
                    "## Real-shaped calls", "## Callers asking at the same moment", "## Runs over WebRTC"):
        assert heading in text
    written = {p.name for p in results.iterdir()}
    assert {"floor.json", "asr-windows.json", "end-of-turn.json", "turn-taking.json", "backchannels.json",
            "together-c4.json", "together-c5.json", "cascade-c1.json", "stub-c1.json", "stub-c10.json",
            "report.json", "real-call.json"} <= written


# -- modes about the real models ---------------------------------------------------------------

@pytest.mark.models
@pytest.mark.slow
def test_floor_times_each_stage_alone(tmp_path, monkeypatch, capsys):
    from bench import floor

    monkeypatch.setattr(floor, "REPEATS", 1)
    monkeypatch.setattr(floor, "measure_floor", functools.partial(floor.measure_floor, thread_counts=(1,),
                                                                  voices=("hibari",)))
    out = bench_in_process(capsys, "--floor", "--out", str(tmp_path))
    assert "| stage | setting | median ms | min ms | runs |" in out
    stages = [row["stage"] for row in json.loads((tmp_path / "floor.json").read_text())]
    assert stages[0].startswith("VAD") and any(s.startswith("ASR") for s in stages)
    assert {"LLM first token (cached system prompt)", "LLM per token"} <= set(stages)
    assert any(s.startswith("voice first PCM") for s in stages)


@pytest.mark.models
@pytest.mark.slow
def test_asr_windows_reports_time_and_word_error_rate(tmp_path, monkeypatch, capsys):
    from bench import asr_windows

    monkeypatch.setattr(asr_windows, "measure_windows", functools.partial(
        asr_windows.measure_windows, windows=(0.0, 10.0), texts=asr_windows.TEXTS[:2]))
    out = bench_in_process(capsys, "--asr-windows", "--out", str(tmp_path))
    assert "| encoder window | median ms per question | WER | clips | worst clip |" in out
    rows = json.loads((tmp_path / "asr-windows.json").read_text())
    assert [r["window_s"] for r in rows] == [0.0, 10.0] and all(r["clips"] == 2 for r in rows)


@pytest.mark.models
@pytest.mark.slow
def test_end_of_turn_reports_the_models_accuracy(tmp_path, monkeypatch, capsys):
    from bench import end_of_turn

    monkeypatch.setattr(end_of_turn, "CLIPS", end_of_turn.CLIPS[:2])
    monkeypatch.setattr(end_of_turn, "measure_end_of_turn", functools.partial(end_of_turn.measure_end_of_turn,
                                                                              thread_counts=(1,)))
    out = bench_in_process(capsys, "--end-of-turn", "--out", str(tmp_path))
    assert "| threads | whole questions called complete |" in out
    rows = json.loads((tmp_path / "end-of-turn.json").read_text())
    assert [r["threads"] for r in rows] == [1] and rows[0]["clips"] == 6


@pytest.mark.models
@pytest.mark.slow
def test_backchannels_reports_what_short_sounds_are_taken_for(tmp_path, monkeypatch, capsys):
    from bench import backchannels

    monkeypatch.setattr(backchannels, "BACKCHANNELS", ("Mm-hmm.", "Yeah."))
    monkeypatch.setattr(backchannels, "INTERRUPTIONS", ("Stop.", "Hold on."))
    monkeypatch.setattr(backchannels, "measure_backchannels", functools.partial(backchannels.measure_backchannels,
                                                                                rounds=1))
    out = bench_in_process(capsys, "--backchannels", "--out", str(tmp_path))
    assert "| short low-confidence transcripts | backchannels forgiven |" in out
    rows = json.loads((tmp_path / "backchannels.json").read_text())
    assert len(rows) == 2 and all(r["backchannels"] == 2 and r["interruptions"] == 2 for r in rows)


@pytest.mark.models
@pytest.mark.loopback
@pytest.mark.slow
def test_turn_taking_over_webrtc(tmp_path, monkeypatch, capsys):
    from bench import turn_taking

    monkeypatch.setattr(turn_taking, "PAUSED", turn_taking.PAUSED[:1])
    monkeypatch.setattr(turn_taking, "BACKCHANNELS", ())  # the cough alone over the answer
    out = bench_in_process(capsys, "--turn-taking", "--out", str(tmp_path), "--set", "llm.slots=1",
                           "--set", "llm.max_tokens=24")
    assert "| questions with a 0.8 s thinking pause |" in out
    result = json.loads((tmp_path / "turn-taking.json").read_text())
    assert result["paused_questions"] == 1 and result["sounds_over_answers"] == 1


@pytest.mark.models
@pytest.mark.loopback
@pytest.mark.slow
def test_real_call_times_each_kind_of_turn(tmp_path, monkeypatch, capsys):
    from bench import real_call

    fact, barge_in = real_call.CALLS[0][0], real_call.CALLS[0][5]
    monkeypatch.setattr(real_call, "CALLS", ((fact, barge_in),))
    out = bench_in_process(capsys, "--real-call", "--out", str(tmp_path), "--set", "llm.slots=1",
                           "--set", "llm.max_tokens=24")
    assert "| **every turn** | 2 |" in out
    result = json.loads((tmp_path / "real-call.json").read_text())
    assert [t["kind"] for t in result["turns"]] == ["fact", "barge-in"] and result["label"].startswith("commit")
    assert all(t["v2v_ms"] for t in result["turns"]), result["turns"]


@pytest.mark.models
@pytest.mark.loopback
@pytest.mark.slow
def test_callers_asking_together(tmp_path, monkeypatch, capsys):
    from bench import questions

    monkeypatch.setattr(questions, "DEFAULT_QUESTIONS", questions.DEFAULT_QUESTIONS[:2])
    out = bench_in_process(capsys, "--concurrency", "2", "--together", "--turns", "1", "--out", str(tmp_path),
                           "--set", "llm.slots=2", "--set", "llm.max_tokens=24")
    assert "2 callers asking at the same moment on the in-process cascade, 1 round(s)" in out
    assert "| voice-to-voice (ms) |" in out and "Memory after the last round (PSS): agent and callers" in out
    assert "| end-of-turn verdict queued |" in out
    run_ = json.loads((tmp_path / "together-c2.json").read_text())
    assert len(run_["turns"]) == 2 and not run_["refused"]


@pytest.mark.models
@pytest.mark.slow
def test_tool_prompt_times_the_tools_prompt_and_the_calculator(tmp_path, monkeypatch, capsys):
    from bench import tool_prompt

    monkeypatch.setattr(tool_prompt, "QUESTIONS", tool_prompt.QUESTIONS[:1])
    monkeypatch.setattr(tool_prompt, "PRODUCTS", tool_prompt.PRODUCTS[:1])
    monkeypatch.setattr(tool_prompt, "CHOICE", tool_prompt.CHOICE[:1])
    out = bench_in_process(capsys, "--tool-prompt", "--out", str(tmp_path), "--set", "llm.max_tokens=32")
    assert "prompt prefix:" in out and "first token (median of 1 questions)" in out
    result = json.loads((tmp_path / "tool-prompt.json").read_text())
    assert set(result["first_token_median_s"]) == {"no_tools", "tools_cached", "tools_cold"}
    assert len(result["calculator_round_trips"]) == 1 and result["calculator_chosen_unforced"]["of"] == 1
    assert result["prompt_prefix_tokens"]["tools"] > result["prompt_prefix_tokens"]["no_tools"]


def test_voxtral_arch_prints_its_table_with_a_tiny_model(tmp_path, monkeypatch, capsys):
    """The real-size architecture wants a GPU; the mode's code runs here on the tiny config."""
    import torch

    from bench import voxtral_arch

    real = voxtral_arch.time_architecture
    monkeypatch.setattr(voxtral_arch, "time_architecture",
                        lambda size: real("tiny", utterances=(2.0,), repeats=1, new_tokens=4))
    assert run.main(["bench", "--voxtral-arch", "--out", str(tmp_path)]) == 0
    printed = capsys.readouterr()
    assert "architecture, random weights, on" in printed.out and "1st tok ms" in printed.out
    if not torch.cuda.is_available():
        assert "no CUDA GPU here" in printed.err
    result = json.loads((tmp_path / "voxtral-arch.json").read_text())
    assert [r["audio_tokens"] for r in result["results"]] == [375]
