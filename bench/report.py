"""Benchmark figures: summaries, the printed table, and the JSON / Markdown / PNG files of a run."""

from __future__ import annotations

import dataclasses
import json
import os
import platform
import statistics
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from agent.pipeline.timeline import STAGES

from .results import BenchRun, TurnResult

REPO = Path(__file__).resolve().parent.parent
STAGE_LABELS = {
    "turn_end": "end of turn (hangover)",
    "transcript": "transcript",
    "first_token": "first token",
    "first_phrase": "first phrase",
    "first_pcm": "first PCM",
    "first_frame": "first frame sent",
}


def stats(values: list[float]) -> dict[str, float] | None:
    if not values:
        return None
    ordered = sorted(values)
    return {
        "median": round(statistics.median(ordered), 1),
        "p90": round(ordered[min(len(ordered) - 1, int(round(0.9 * (len(ordered) - 1))))], 1),
        "max": round(ordered[-1], 1),
        "n": len(ordered),
    }


def pipeline_ms(result: TurnResult) -> float | None:
    """Server time beyond the end-of-turn decision: turn_end -> first frame handed to the sender."""
    ms = result.server_ms
    if "first_frame" in ms and "turn_end" in ms:
        return round(ms["first_frame"] - ms["turn_end"], 1)
    return None


def figures(run: BenchRun) -> dict[str, dict[str, float]]:
    answered = [r for r in run.results if r.outcome == "answered"]
    columns: dict[str, list[float]] = {
        "voice_to_voice": [r.voice_to_voice_ms for r in answered if r.voice_to_voice_ms is not None],
    }
    for stage in STAGES[1:]:
        columns[stage] = [r.server_ms[stage] for r in answered if stage in r.server_ms]
    columns["pipeline_after_turn_end"] = [p for p in map(pipeline_ms, answered) if p is not None]
    columns["transport_one_way"] = [r.transport_ms for r in answered if r.transport_ms is not None]
    columns["vad_end_offset"] = [r.vad_end_offset_ms for r in answered if r.vad_end_offset_ms is not None]
    columns["lateness_p50"] = [r.playout["lateness_p50_ms"] for r in answered if r.playout]
    columns["lateness_p99"] = [r.playout["lateness_p99_ms"] for r in answered if r.playout]
    columns["lateness_max"] = [r.playout["lateness_max_ms"] for r in answered if r.playout]
    columns["gaps_per_answer"] = [r.playout["gaps"] for r in answered if r.playout]
    return {name: s for name, values in columns.items() if (s := stats(values)) is not None}


@dataclass
class Target:
    name: str
    figure: str  # key in figures()
    statistic: str  # median | p90 | max
    limit: float

    def check(self, summary: dict) -> tuple[float | None, bool | None]:
        value = summary.get(self.figure, {}).get(self.statistic)
        if value is None:
            return None, None
        return value, value <= self.limit


CASCADE_TARGETS = [
    Target("voice-to-voice median <= 1000 ms", "voice_to_voice", "median", 1000),
    Target("voice-to-voice p90 <= 1300 ms", "voice_to_voice", "p90", 1300),
]
STUB_TARGETS = [
    Target("pipeline beyond hangover and transport <= 10 ms per turn", "pipeline_after_turn_end", "max", 10),
    Target("one-way transport <= 25 ms (median)", "transport_one_way", "median", 25),
    Target("outbound lateness p99 <= 5 ms (worst turn)", "lateness_p99", "max", 5),
    Target("no gaps inside answers", "gaps_per_answer", "max", 0),
]
CONCURRENCY_TARGETS = [
    Target("outbound lateness p99 <= 20 ms with 10 calls (worst turn)", "lateness_p99", "max", 20),
]


def targets_for(run: BenchRun) -> list[Target]:
    if run.mode == "stub":
        return CONCURRENCY_TARGETS if run.concurrency >= 10 else STUB_TARGETS
    if run.mode == "cascade" and run.concurrency == 1:
        return CASCADE_TARGETS
    return []


def target_rows(run: BenchRun, summary: dict) -> list[tuple[str, str, str]]:
    rows = []
    for target in targets_for(run):
        value, ok = target.check(summary)
        if value is None:
            rows.append((target.name, "not measured", "-"))
        elif ok:
            rows.append((target.name, f"{value:g} ms" if target.figure != "gaps_per_answer" else f"{value:g}", "met"))
        else:
            over = value - target.limit
            unit = "" if target.figure == "gaps_per_answer" else " ms"
            rows.append((target.name, f"{value:g}{unit}", f"missed by {over:g}{unit}"))
    return rows


# -- printing ---------------------------------------------------------------------------------
def stage_increments(run: BenchRun) -> list[tuple[str, dict[str, float]]]:
    """Where the time goes: per stage, the time it added after the previous stage (over answered turns)."""
    answered = [r for r in run.results if r.outcome == "answered"]
    rows = []
    previous = None
    for stage in STAGES[1:]:
        values = [r.server_ms[stage] - (r.server_ms[previous] if previous else 0.0)
                  for r in answered if stage in r.server_ms and (previous is None or previous in r.server_ms)]
        if (s := stats(values)) is not None:
            rows.append((STAGE_LABELS[stage], s))
        previous = stage
    transport = stats([r.transport_ms for r in answered if r.transport_ms is not None])
    if transport is not None:
        rows.append(("transport to the client", transport))
    return rows


def preemption_line(run: BenchRun) -> str:
    """Preemptive answers over the run: how many turns used one, how many were thrown away."""
    hits = sum(r.preemptive for r in run.results)
    discarded = sum(r.preemptions_discarded for r in run.results)
    wasted = sum(r.preemption_wasted_ms for r in run.results)
    return (f"preemptive answers: {hits} of {len(run.results)} turns released one; {discarded} discarded "
            f"(the user went on), {wasted:.0f} ms of work wasted")


def _cell(value) -> str:
    return "-" if value is None else f"{value:.0f}"


def print_run(run: BenchRun, out=sys.stdout) -> None:
    summary = figures(run)
    stages = list(STAGES[1:])
    print(f"\n{run.mode} run: brain={run.brain} voice={run.voice}, {run.concurrency} call(s) x {run.turns_per_call} turns, "
          f"client jitter prefetch {run.jitter_prefetch}", file=out)
    header = ["call", "turn", "v2v", *stages, "xport", "late99", "gaps"]
    print(" ".join(f"{h:>12}" for h in header), file=out)
    for r in run.results:
        row = [str(r.call), str(r.turn), _cell(r.voice_to_voice_ms), *[_cell(r.server_ms.get(s)) for s in stages],
               _cell(r.transport_ms), f"{r.playout.get('lateness_p99_ms', 0):.1f}", str(r.playout.get("gaps", "-"))]
        print(" ".join(f"{c:>12}" for c in row), f"  {r.outcome}: {r.question!r} -> {r.answer!r}", file=out)
    print("\nfigure (ms)                    median      p90      max    n", file=out)
    for name, s in summary.items():
        print(f"  {name:<26} {s['median']:>8.1f} {s['p90']:>8.1f} {s['max']:>8.1f} {s['n']:>4}", file=out)
    print(f"  CPU per call: {run.cpu_per_call_pct:.1f}% of one core (process total / calls; wall {run.wall_s:.1f} s)",
          file=out)
    print(f"  {preemption_line(run)}", file=out)
    for name, value, verdict in target_rows(run, summary):
        print(f"  target: {name}: {value} ({verdict})", file=out)


# -- files ------------------------------------------------------------------------------------
def chart(run: BenchRun, path: Path) -> Path:
    """Stacked bars: each turn's time from the end of the user's speech to the first answer
    frame at the client, split by stage; a dot marks the client-measured voice-to-voice."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    results = [r for r in run.results if r.outcome == "answered"][:40]
    stages = list(STAGES[1:])
    labels = [f"{r.call}.{r.turn}" if run.concurrency > 1 else str(r.turn) for r in results]
    fig, ax = plt.subplots(figsize=(max(6, 0.5 * len(results) + 3), 4.5))
    bottoms = [0.0] * len(results)
    colors = plt.get_cmap("tab10").colors
    segments = [(STAGE_LABELS[s], s) for s in stages] + [("transport to client", "transport")]
    for index, (label, key) in enumerate(segments):
        heights = []
        for i, r in enumerate(results):
            if key == "transport":
                value = (r.transport_ms or 0.0)
                heights.append(value)
                continue
            previous = r.server_ms.get(stages[stages.index(key) - 1], 0.0) if stages.index(key) > 0 else 0.0
            value = r.server_ms.get(key)
            heights.append(max(0.0, (value - previous)) if value is not None else 0.0)
        ax.bar(labels, heights, bottom=bottoms, label=label, color=colors[index % len(colors)])
        bottoms = [b + h for b, h in zip(bottoms, heights)]
    v2v = [r.voice_to_voice_ms for r in results]
    ax.scatter(labels, [v if v is not None else float("nan") for v in v2v], color="black", zorder=3, s=18,
               label="voice-to-voice (client)")
    ax.set_xlabel("turn" if run.concurrency == 1 else "call.turn")
    ax.set_ylabel("ms after the end of the user's speech")
    ax.set_title(f"{run.mode}: brain={run.brain}, voice={run.voice}, {run.concurrency} call(s)")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def markdown(run: BenchRun, chart_name: str | None = None, heading: str = "##") -> str:
    summary = figures(run)
    lines = [f"{heading} {run.mode}: brain `{run.brain}`, voice `{run.voice}`, {run.concurrency} call(s) x "
             f"{run.turns_per_call} turns", ""]
    if run.mode == "stub":
        lines += ["*Stub run: an instant scripted brain and a tone voice, to measure the pipeline and "
                  "transport alone. The questions are synthetic vowel sounds.*", ""]
    lines += [f"Started {run.started}; wall {run.wall_s:.1f} s; CPU per call {run.cpu_per_call_pct:.1f}% of one "
              f"core (the whole process, server and clients, divided by calls); client receive jitter prefetch "
              f"{run.jitter_prefetch} packet(s).", "", preemption_line(run).capitalize() + ".", ""]
    if any(r.speaker for r in run.results):
        speakers = sorted({r.speaker for r in run.results if r.speaker})
        lines += [f"Questions spoken by {', '.join(speakers)}, with background noise (SNR ~25 dB).", ""]
    lines += ["| figure (ms) | median | p90 | max | n |", "|---|---:|---:|---:|---:|"]
    for name, s in summary.items():
        lines.append(f"| {name} | {s['median']:g} | {s['p90']:g} | {s['max']:g} | {s['n']} |")
    increments = stage_increments(run)
    if increments:
        lines += ["", "Where the time goes (each stage's added time after the previous one; the end-of-turn row "
                  "is the hangover after the last voiced VAD frame):", "",
                  "| stage | median | p90 | max |", "|---|---:|---:|---:|"]
        lines += [f"| {name} | {s['median']:g} | {s['p90']:g} | {s['max']:g} |" for name, s in increments]
    rows = target_rows(run, summary)
    if rows:
        lines += ["", "| target | measured | verdict |", "|---|---:|---|"]
        lines += [f"| {n} | {v} | {verdict} |" for n, v, verdict in rows]
    if chart_name:
        lines += ["", f"![per-stage breakdown]({chart_name})"]
    lines += ["", "<details><summary>per turn</summary>", "",
              "| call | turn | outcome | v2v | " + " | ".join(STAGES[1:]) + " | transport | lateness p99 | gaps | answer |",
              "|" + "---|" * (9 + len(STAGES) - 1)]
    for r in run.results:
        cells = [str(r.call), str(r.turn), r.outcome, _cell(r.voice_to_voice_ms)]
        cells += [_cell(r.server_ms.get(s)) for s in STAGES[1:]]
        cells += [_cell(r.transport_ms), f"{r.playout.get('lateness_p99_ms', 0):.1f}", str(r.playout.get("gaps", "-")),
                  r.answer.replace("|", "/")[:80]]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "</details>", ""]
    return "\n".join(lines)


DEFAULT_OUT = Path("artifacts") / "bench"


def write_json(name: str, data, out_dir: str | Path | None = None) -> Path:
    """Write a result (a dataclass, a list of them, or plain JSON data) as `name` into out_dir
    (default artifacts/bench)."""
    target = Path(out_dir or DEFAULT_OUT)
    target.mkdir(parents=True, exist_ok=True)
    if dataclasses.is_dataclass(data):
        data = dataclasses.asdict(data)
    elif isinstance(data, list):
        data = [dataclasses.asdict(d) if dataclasses.is_dataclass(d) else d for d in data]
    path = target / name
    path.write_text(json.dumps(data, indent=2))
    return path


def write_run_files(run: BenchRun, out_dir: Path) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = f"{run.mode}-c{run.concurrency}"
    json_path = out_dir / f"{stem}.json"
    json_path.write_text(json.dumps({"run": run.to_json(), "summary": figures(run)}, indent=2))
    png = chart(run, out_dir / f"{stem}.png")
    md_path = out_dir / f"{stem}.md"
    md_path.write_text(markdown(run, png.name, heading="#"))
    return [json_path, md_path, png]


def machine_description() -> str:
    cpu = platform.processor() or "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        mem_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    except (ValueError, OSError):
        mem_gib = 0
    return (f"{os.cpu_count()} cores ({cpu}), {mem_gib:.0f} GiB, Python {platform.python_version()}, "
            f"{platform.system()} {platform.release()}; commit {current_commit()}")


def current_commit() -> str:
    """The checkout's short commit hash ("unknown" outside git)."""
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=REPO).stdout.strip()
    return commit or "unknown"
