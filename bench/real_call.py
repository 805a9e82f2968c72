"""Real-shaped calls: `run.py bench --real-call`.

One call per voice (voices the agent does not speak with), in a noisy room, each a conversation
of the kinds of turns callers make, not only short facts: a fact, a statement to remember, two
sentences with a pause between them, arithmetic, the time, a long request barged into with a
follow-up question, a recall of what was said, thanks and chit-chat. Each call has its own
sentences. Voice-to-voice is measured at the caller: from the end of the audible utterance (for
two sentences, the second; for the barge-in, the follow-up) to the first audible answer frame
decoded at the client. Reported per kind of turn (p50/p90/max), with each slow turn's server
timeline (ms after the end of speech: end of turn, transcript, first token, ...) so it shows
where the time went. A recall turn also checks the answer holds what was said.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

import numpy as np

from agent.config import Config
from signaling.client import HeadlessClient
from signaling.server import loopback_config, running_server

from .questions import ROOM_NOISE_DBFS, SPEAKERS, load_speakers, spoken
from .report import current_commit, stats, write_json
from .runner import load_real_models

ENDED = ("answered", "error", "empty", "ignored")  # what ends a turn's wait (not an answer barged into)
SLOW_MS = 1500.0  # a turn slower than this is listed with its timeline
PAUSE_S = 0.7  # between the two sentences of a "two sentences" turn
BARGE_AFTER_S = 1.5  # of the long answer heard before the follow-up is spoken over it

# (kind, what is said, words a right answer holds: any of them, or None). A "two sentences" turn
# is said as two parts with a pause; a "barge-in" turn is a long request, then the follow-up.
CALLS = (
    (("fact", "What is the tallest mountain in the world?", ("everest",)),
     ("statement", "My name is Oliver, please remember that.", None),
     ("two sentences", ("I live in Lisbon.", "Please keep that in mind."), None),
     ("arithmetic", "What is twelve times eleven?", ("132", "hundred thirty-two", "hundred and thirty-two")),
     ("time", "What time is it?", None),
     ("barge-in", ("Tell me a long story about a dragon who loves music.", "Actually, what is the capital of Canada?"),
      ("ottawa",)),
     ("recall", "Which city do I live in?", ("lisbon",)),
     ("thanks", "Thanks, that was helpful.", None),
     ("chit-chat", "How are you doing today?", None),
     ("recall", "What is my name?", ("oliver",))),
    (("fact", "How many bones are there in the human body?", ("206", "two hundred and six", "two hundred six")),
     ("statement", "My sister is called Anna, remember that.", None),
     ("two sentences", ("I work as a nurse.", "Keep that in mind, please."), None),
     ("arithmetic", "What is forty-five plus seventeen?", ("62", "sixty-two", "sixty two")),
     ("time", "Can you tell me the time?", None),
     ("barge-in", ("Describe the whole history of the Roman Empire in detail.", "Sorry, how far away is the moon?"),
      ("384", "238", "kilomet", "miles")),
     ("recall", "What is my sister called?", ("anna",)),
     ("thanks", "Great, thank you.", None),
     ("chit-chat", "Do you like music?", None),
     ("recall", "What do I do for work?", ("nurse",))),
    (("fact", "Who wrote the novel Pride and Prejudice?", ("austen",)),
     ("statement", "My favourite colour is green.", None),
     ("two sentences", ("I have a dog called Max.", "He is three years old."), None),
     ("arithmetic", "What is eight times seven?", ("56", "fifty-six", "fifty six")),
     ("time", "What day is it today?", None),
     ("barge-in", ("Explain how airplanes fly, step by step.", "Wait, who invented the telephone?"), ("bell",)),
     ("recall", "What is my dog called?", ("max",)),
     ("thanks", "Okay, thanks a lot.", None),
     ("chit-chat", "Tell me something fun.", None),
     ("recall", "What is my favourite colour?", ("green",))),
)
CALL_SPEAKERS = (2, 4, 0)  # indices into SPEAKERS: jm_kumo, jf_nezumi, jf_alpha (not the agent's own voice)


@dataclass
class RealCallTurn:
    call: int
    kind: str
    said: str
    speaker: str
    v2v_ms: float | None = None  # None: no answer heard
    answer: str = ""
    right: bool | None = None  # for turns with an expected answer
    timeline: dict = field(default_factory=dict)  # the answering turn's server timeline (ms after speech end)
    queue_wait_ms: float = 0.0
    tools: list = field(default_factory=list)


@dataclass
class RealCallResult:
    turns: list[RealCallTurn] = field(default_factory=list)
    label: str = ""  # which code and when (the report names the run)

    @classmethod
    def from_json(cls, data: dict) -> "RealCallResult":
        return cls([RealCallTurn(**t) for t in data["turns"]], data.get("label", ""))

    def by_kind(self) -> dict[str, dict | None]:
        kinds = dict.fromkeys(t.kind for t in self.turns)
        return {kind: stats([t.v2v_ms for t in self.turns if t.kind == kind and t.v2v_ms is not None]) for kind in kinds}

    def overall(self) -> dict | None:
        return stats([t.v2v_ms for t in self.turns if t.v2v_ms is not None])


async def _render(voices, texts: list[str], speaker: int) -> list[np.ndarray]:
    """Each text in SPEAKERS[speaker]'s voice (the caller's room adds the noise)."""
    return [q.speech for q in await spoken(voices, texts, snr_db=None, speakers=(SPEAKERS[speaker],))]


async def _turn(client: HeadlessClient, call: int, kind: str, text, expect, speech: list[np.ndarray],
                speaker: str) -> RealCallTurn:
    since = len(client.events)
    said = " / ".join(text) if isinstance(text, tuple) else text
    turn = RealCallTurn(call, kind, said, speaker)
    if kind == "barge-in":
        asked = client.say(speech[0])
        await asked.done.wait()
        await client.wait_event(lambda e: e.get("type") == "state" and e.get("state") == "speaking", 60, since)
        await asyncio.sleep(BARGE_AFTER_S)
        since = len(client.events)
        last = client.say(speech[1])
    elif kind == "two sentences":
        client.say(speech[0])
        client.say(np.zeros(int(PAUSE_S * 48000), dtype=np.int16))
        last = client.say(speech[1])
    else:
        last = client.say(speech[0])
    await last.done.wait()
    heard = await client.wait_audible_after(last.ended_at, 20.0)
    if heard is not None:
        turn.v2v_ms = round((heard.at - last.ended_at) * 1000.0, 1)
    try:
        await client.wait_event(lambda e: e.get("type") == "timeline" and e.get("outcome") in ENDED, 90, since)
    except TimeoutError:
        pass
    timelines = [e for _, e in client.events[since:] if e.get("type") == "timeline"]
    answered = next((e for e in reversed(timelines) if e.get("outcome") == "answered"), timelines[-1] if timelines else {})
    if answered:
        turn.timeline = answered.get("ms", {})
        turn.queue_wait_ms = answered.get("queue_wait_ms", 0.0)
        turn.tools = answered.get("tools", [])
        number = answered.get("turn")
        turn.answer = " ".join(e["text"] for _, e in client.events[since:]
                               if e.get("type") == "agent_text" and e.get("turn") == number)
    if expect:
        turn.right = any(word in turn.answer.lower() for word in expect)
    await client.wait_event(lambda e: e.get("type") == "state" and e.get("state") == "listening", 60,
                            len(client.events) - 1)
    await asyncio.sleep(0.8)
    return turn


async def measure_real_calls(config: Config) -> RealCallResult:
    config = loopback_config(config)
    voices = load_speakers(config)
    scripts = []
    try:
        for speaker, script in zip(CALL_SPEAKERS, CALLS):
            turns = []
            for kind, text, expect in script:
                parts = list(text) if isinstance(text, tuple) else [text]
                turns.append((kind, text, expect, await _render(voices, parts, speaker)))
            scripts.append((speaker, turns))
    finally:
        for voice in voices.values():
            voice.close()
    result = RealCallResult()
    models = await load_real_models(config)
    try:
        async with running_server(config, models) as server:
            for call, (speaker, turns) in enumerate(scripts, 1):
                client = HeadlessClient(config.ice, room_noise_dbfs=ROOM_NOISE_DBFS)
                await client.connect(server.url)
                await client.wait_event(lambda e: e.get("type") == "hello", 10)
                await asyncio.sleep(0.5)
                name = ":".join(SPEAKERS[speaker])
                for kind, text, expect, speech in turns:
                    turn = await _turn(client, call, kind, text, expect, speech, name)
                    result.turns.append(turn)
                    print(f"call {call} {kind:14s} {turn.v2v_ms or -1:7.0f} ms  {turn.said[:48]!r} -> {turn.answer[:70]!r}",
                          flush=True)
                await client.close()
    finally:
        models.close()
    return result


def real_call_markdown(r: RealCallResult) -> str:
    def cell(s: dict | None, key: str) -> str:
        return f"{s[key]:.0f}" if s else "-"

    rows = ["| kind of turn | turns | p50 ms | p90 ms | max ms | answered right |", "|---|---:|---:|---:|---:|---:|"]
    for kind, s in r.by_kind().items():
        checked = [t.right for t in r.turns if t.kind == kind and t.right is not None]
        right = f"{sum(checked)} of {len(checked)}" if checked else "-"
        rows.append(f"| {kind} | {s['n'] if s else 0} | {cell(s, 'median')} | {cell(s, 'p90')} | {cell(s, 'max')} | {right} |")
    total = r.overall()
    unheard = sum(t.v2v_ms is None for t in r.turns)
    rows.append(f"| **every turn** | {total['n'] if total else 0} | **{cell(total, 'median')}** | {cell(total, 'p90')} | "
                f"**{cell(total, 'max')}** | {sum(t.right is True for t in r.turns)} of "
                f"{sum(t.right is not None for t in r.turns)} |")
    if unheard:
        rows.append(f"\n{unheard} turn(s) got no audible answer within 20 s.")
    slow = sorted((t for t in r.turns if t.v2v_ms is None or t.v2v_ms > SLOW_MS), key=lambda t: -(t.v2v_ms or 1e9))
    if slow:
        rows += ["", f"Turns over {SLOW_MS:.0f} ms, with the server's timeline (ms after the end of speech):", ""]
        for t in slow:
            stages = " ".join(f"{k}=+{v:.0f}" for k, v in t.timeline.items() if k != "speech_end")
            tools = "".join(f" tool {x['name']} {x['ms']:.0f} ms" for x in t.tools)
            rows.append(f"- call {t.call} {t.kind} {t.v2v_ms or 0:.0f} ms, {t.said!r} ({t.speaker}): {stages} "
                        f"queue_wait={t.queue_wait_ms:.0f}{tools}")
    wrong = [t for t in r.turns if t.right is False]
    if wrong:
        rows += ["", "Answers that missed what was asked: " + "; ".join(f"{t.said!r} -> {t.answer!r}" for t in wrong)]
    return "\n".join(rows)


def run_label() -> str:
    """This run: the commit and the time."""
    return f"commit {current_commit()}, {time.strftime('%Y-%m-%d %H:%M')}"


async def run_real_calls(config: Config, out_dir: str | None = None) -> RealCallResult:
    result = await measure_real_calls(config)
    result.label = run_label()
    print(real_call_markdown(result))
    write_json("real-call.json", result, out_dir)
    return result
