"""Turn-taking over WebRTC: `run.py bench --turn-taking`.

Two scenarios against the real agent, callers in a noisy room (see `questions`):

- **thinking pauses:** each question stopped at its quietest moment 55-75% of the way through,
  0.8 s of silence, then the rest. Counted: cut-offs (the agent answered the first part, i.e.
  more than one turn for the question), and the time from the end of the whole question to the
  answer (what waiting for the rest costs).
- **sounds over an answer:** a backchannel ("Yeah.", "Uh-huh.", "Mm-hmm.") or a 250 ms cough while
  the agent answers a long question. Counted: resumed answers, how long after the sound the answer
  was heard again, and whether it then played to its end.
"""

from __future__ import annotations

import asyncio
import statistics
from dataclasses import dataclass, field

import numpy as np

from agent.config import Config
from signaling.client import HeadlessClient
from signaling.server import loopback_config, running_server

from .questions import ROOM_NOISE_DBFS, load_speakers, quietest_point, spoken
from .report import write_json
from .runner import load_real_models

PAUSED = ("What is the capital of Spain?", "How many moons does Jupiter have?", "Which planet is closest to the sun?",
          "What should I cook for dinner tonight?", "Who painted the Mona Lisa?", "How long should I boil an egg?")
LONG = "Tell me a long story about a lighthouse keeper and a storm."
BACKCHANNELS = ("Yeah.", "Uh-huh.", "Mm-hmm.")


@dataclass
class TurnTakingResult:
    paused_questions: int = 0
    cut_offs: int = 0  # answered before the rest of the question
    answer_after_pause_ms: list[float] = field(default_factory=list)  # end of the whole question -> answer heard
    sounds_over_answers: int = 0
    resumed: int = 0
    stopped: int = 0
    resume_ms: list[float] = field(default_factory=list)  # end of the sound -> the answer heard again
    finished: int = 0  # resumed answers that then played to their end
    details: list[str] = field(default_factory=list)


async def measure_turn_taking(config: Config) -> TurnTakingResult:
    config = loopback_config(config)
    voices = load_speakers(config)
    try:
        paused = await spoken(voices, PAUSED, snr_db=None)
        long, *sounds = await spoken(voices, [LONG, *BACKCHANNELS], snr_db=None)
    finally:
        for voice in voices.values():
            voice.close()
    rng = np.random.default_rng(7)
    cough = (rng.normal(0, 1, 12000) * np.hanning(12000) * 9000).astype(np.int16)
    result = TurnTakingResult()
    models = await load_real_models(config)
    try:
        async with running_server(config, models) as server:
            client = HeadlessClient(config.ice, room_noise_dbfs=ROOM_NOISE_DBFS)
            await client.connect(server.url)
            await client.wait_event(lambda e: e.get("type") == "hello", 10)
            await asyncio.sleep(0.5)
            for question in paused:
                cut = quietest_point(question.speech, 48000, 0.55, 0.75)
                since = len(client.events)
                client.say(question.speech[:cut])
                client.say(np.zeros(int(0.8 * 48000), dtype=np.int16))
                rest = client.say(question.speech[cut:])
                await rest.done.wait()
                await client.wait_event(lambda e: e.get("type") == "timeline", 60, since)
                await asyncio.sleep(1.0)
                turns = [e for _, e in client.events[since:] if e.get("type") == "timeline"]
                result.paused_questions += 1
                if len(turns) > 1:
                    result.cut_offs += 1
                    result.details.append(f"cut off: {question.label!r} ({question.speaker})")
                heard = await client.wait_audible_after(rest.ended_at, 0.1)
                if heard is not None:
                    result.answer_after_pause_ms.append(round((heard.at - rest.ended_at) * 1000, 1))
                await client.wait_event(lambda e: e.get("type") == "state" and e.get("state") == "listening", 60,
                                        len(client.events) - 1)
                await asyncio.sleep(0.5)
            for sound in (*sounds, None):
                since = len(client.events)
                asked = client.say(long.speech)
                await asked.done.wait()
                await client.wait_event(lambda e: e.get("type") == "state" and e.get("state") == "speaking", 60, since)
                await asyncio.sleep(1.0)
                over = client.say(sound.speech if sound is not None else cough)
                await over.done.wait()
                result.sounds_over_answers += 1
                again = await client.wait_audible_after(over.ended_at + 0.05, 3.0)
                await asyncio.sleep(0.5)
                stopped = any(e.get("type") == "barge_in" for _, e in client.events[since:])
                if stopped:
                    result.stopped += 1
                    result.details.append(f"stopped by {sound.label if sound else 'a cough'!r}")
                elif again is not None:
                    result.resumed += 1
                    result.resume_ms.append(round((again.at - over.ended_at) * 1000, 1))
                finished = await client.wait_event(lambda e: e.get("type") == "timeline", 90, since)
                if not stopped and again is not None and finished.get("outcome") == "answered":
                    result.finished += 1
                await asyncio.sleep(0.5)
            await client.close()
    finally:
        models.close()
    return result


def turn_taking_markdown(r: TurnTakingResult) -> str:
    def median(values):
        return f"{statistics.median(values):.0f}" if values else "-"

    rows = [
        "| scenario | result |", "|---|---|",
        f"| questions with a 0.8 s thinking pause | {r.paused_questions - r.cut_offs} of {r.paused_questions} answered "
        f"whole ({r.cut_offs} cut off) |",
        f"| end of such a question -> answer heard (median ms) | {median(r.answer_after_pause_ms)} |",
        f"| backchannels and a cough over an answer | {r.resumed} of {r.sounds_over_answers} resumed ({r.finished} "
        f"played to the end), {r.stopped} stopped |",
        f"| end of the sound -> answer heard again (median ms) | {median(r.resume_ms)} |",
    ]
    if r.details:
        rows += ["", "Misses: " + "; ".join(r.details)]
    return "\n".join(rows)


async def run_turn_taking(config: Config, out_dir: str | None = None) -> TurnTakingResult:
    result = await measure_turn_taking(config)
    print(turn_taking_markdown(result))
    write_json("turn-taking.json", result, out_dir)
    return result
