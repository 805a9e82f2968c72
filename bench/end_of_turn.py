"""The end-of-turn model against spoken clips: `run.py bench --end-of-turn`.

Each question is spoken whole (complete) and cut off mid-sentence (incomplete), by the six voices
in turn with background noise; the model's verdicts give its accuracy on each kind, and its time
per decision at 1 and 2 threads. Two kinds of cut-off clip: the whole question's audio stopped at
its quietest moment between 45% and 75% of the way (the voice mid-sentence, as when a person
stops to think), and its first words spoken on their own (a TTS voice says those as if they were
a whole sentence, with a falling end: the harder case for the model).
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass


from agent.config import Config
from agent.pipeline.end_of_turn import MODEL, SmartTurn
from agent.runtime.model_files import ensure_files, resolve_cache_dir

from .questions import Question, load_speakers, quietest_point, spoken
from .report import write_json

# (the whole question, where a speaker might pause to think)
CLIPS = (
    ("What is the capital of Spain?", "What is the capital of"),
    ("Can you tell me how many moons Jupiter has?", "Can you tell me how many"),
    ("I would like to book a table for two people tonight.", "I would like to book a"),
    ("How do I make a cup of green tea?", "How do I make a"),
    ("Which planet is closest to the sun?", "Which planet is"),
    ("Remind me to call my sister on Friday.", "Remind me to call my"),
    ("What time does the train to Boston leave?", "What time does the"),
    ("Tell me a joke about penguins.", "Tell me a joke about"),
    ("Why do cats purr when they are happy?", "Why do cats purr when"),
    ("Is it cheaper to fly or take the bus?", "Is it cheaper to fly or"),
    ("What should I wear for a job interview?", "What should I wear for"),
    ("How long should I boil an egg?", "How long should I"),
)


def stopped_midway(question: Question) -> Question:
    """The question cut at its quietest 20 ms between 45% and 75% of the way through."""
    audio = question.speech
    cut = quietest_point(audio, 16000, 0.45, 0.75)
    return Question(f"{question.label} (stopped at {cut / 16000:.1f} s)", audio[:cut], question.speaker)


@dataclass
class EndOfTurnResult:
    threads: int
    complete_accuracy: float  # share of whole questions called complete
    stopped_accuracy: float  # share of questions stopped midway called incomplete
    alone_accuracy: float  # share of first words spoken alone called incomplete
    median_ms: float  # per decision
    clips: int
    misses: list[str]


async def measure_end_of_turn(config: Config, thread_counts=(1, 2)) -> list[EndOfTurnResult]:
    voices = load_speakers(config)
    try:
        whole = await spoken(voices, [c for c, _ in CLIPS], rate=16000)
        cut = [stopped_midway(q) for q in whole]
        cut += await spoken(voices, [i for _, i in CLIPS], rate=16000)
    finally:
        for voice in voices.values():
            voice.close()
    paths = ensure_files((MODEL,), resolve_cache_dir(config.models.cache_dir), progress=False)
    results = []
    for threads in thread_counts:
        model = SmartTurn(paths[MODEL.relpath], threads=threads, threshold=config.turns.complete_threshold)
        model.verdict_blocking(whole[0].speech)
        times, misses = [], []
        right = {"whole": 0, "stopped": 0, "alone": 0}
        half = len(cut) // 2
        for kind, clips, expected in (("whole", whole, True), ("stopped", cut[:half], False), ("alone", cut[half:], False)):
            for clip in clips:
                # What the model sees at a pause: the words (with the noise before them), no tail.
                verdict = model.verdict_blocking(clip.speech)
                times.append(verdict.ms)
                if verdict.complete == expected:
                    right[kind] += 1
                else:
                    misses.append(f"{clip.label!r} ({clip.speaker}): p={verdict.probability}")
        model.close()
        result = EndOfTurnResult(threads, round(right["whole"] / len(whole), 3), round(right["stopped"] / half, 3),
                                 round(right["alone"] / (len(cut) - half), 3), round(statistics.median(times), 1),
                                 len(whole) + len(cut), misses)
        results.append(result)
        print(f"{threads} thread(s): complete {result.complete_accuracy:.0%}, stopped midway {result.stopped_accuracy:.0%}, "
              f"first words alone {result.alone_accuracy:.0%}, {result.median_ms} ms per decision")
    return results


def end_of_turn_markdown(results: list[EndOfTurnResult]) -> str:
    lines = ["| threads | whole questions called complete | stopped midway called incomplete | first words spoken alone "
             "called incomplete | median ms per decision | clips |", "|---:|---:|---:|---:|---:|---:|"]
    for r in results:
        lines.append(f"| {r.threads} | {r.complete_accuracy:.0%} | {r.stopped_accuracy:.0%} | {r.alone_accuracy:.0%} | "
                     f"{r.median_ms:g} | {r.clips} |")
    if results and results[0].misses:
        lines += ["", "Misjudged: " + "; ".join(results[0].misses)]
    return "\n".join(lines)


async def run_end_of_turn(config: Config, out_dir: str | None = None) -> list[EndOfTurnResult]:
    results = await measure_end_of_turn(config)
    print(end_of_turn_markdown(results))
    write_json("end-of-turn.json", results, out_dir)
    return results
