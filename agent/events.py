"""The session's events: what the agent tells its peer (and the attach API's listeners).

Each event is a small frozen dataclass; `to_json()` is the one place that turns one into the
JSON object sent on the `events` data channel (its `type` plus its fields). The README's event
table is generated from `EVENTS` (and a test checks that the README and the web page know every
type).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal, Union

from agent.tools.calls import ToolStatus

State = Literal["listening", "thinking", "speaking"]
# empty: the brain said nothing; ignored: the user said nothing worth answering (fillers, noise)
Outcome = Literal["pending", "answered", "interrupted", "error", "empty", "ignored"]
OUTCOMES: tuple[Outcome, ...] = ("answered", "interrupted", "error", "empty", "ignored")  # a finished turn's


@dataclass(frozen=True)
class Hello:
    """Sent first on the events channel: who is answering."""

    type: ClassVar[str] = "hello"
    session: str
    brain: str
    voice: str


@dataclass(frozen=True)
class StateChanged:
    """The agent is `listening`, `thinking` (a turn started) or `speaking` (its audio is playing)."""

    type: ClassVar[str] = "state"
    state: State


@dataclass(frozen=True)
class SpeechStarted:
    """The user started talking (over the agent, this is a barge-in)."""

    type: ClassVar[str] = "speech_start"


@dataclass(frozen=True)
class SpeechDiscarded:
    """A sound too short to be a turn (`voiced_ms` of it) was ignored."""

    type: ClassVar[str] = "speech_discarded"
    voiced_ms: int


@dataclass(frozen=True)
class Transcript:
    """What the user said in `turn`."""

    type: ClassVar[str] = "transcript"
    turn: int
    text: str
    role: Literal["user"] = "user"


@dataclass(frozen=True)
class AgentText:
    """The phrase the agent is saying now (sent when its audio starts playing)."""

    type: ClassVar[str] = "agent_text"
    turn: int
    text: str


@dataclass(frozen=True)
class BargeIn:
    """The user spoke over the answer; `spoken` is the part of it that was played."""

    type: ClassVar[str] = "barge_in"
    turn: int
    spoken: str


@dataclass(frozen=True)
class Interruption:
    """The user made a sound over the agent's answer `turn`: playout paused at once, then
    `outcome` "confirmed" (real words: the answer was stopped, a `barge_in` follows), or
    "resumed" (`reason`: "too short", "noise", "backchannel", or "echo": the agent's own voice
    coming back, which does not even pause it; else the answer went on where it paused);
    `heard`: what it was transcribed as."""

    type: ClassVar[str] = "interruption"
    turn: int
    outcome: Literal["confirmed", "resumed"]
    reason: str = ""
    heard: str = ""  # its transcript, when it was transcribed


@dataclass(frozen=True)
class TurnFinished:
    """A turn ended: its `outcome`, each stage in `ms` after the end of the user's speech, the raw
    `clock` marks (perf_counter seconds), the answer's `playout` (lateness, gaps), whether it was
    `preemptive` (started at a pause, before the end of the turn was certain), the `end_of_turn`
    verdict, `queue_wait_ms` (how long its model work waited behind other calls': for the CPU or
    an LLM slot), and the `tools` it called (`name`, `status`, `start_ms` after the end of speech,
    `ms` running); `queue_wait_by_model_ms` splits the queue wait by model ("asr", "llm", "voice";
    the end-of-turn verdict's own wait is in `end_of_turn`)."""

    type: ClassVar[str] = "timeline"
    turn: int
    outcome: Outcome
    ms: dict[str, float] = field(default_factory=dict)
    clock: dict[str, float] = field(default_factory=dict)
    playout: dict[str, float] = field(default_factory=dict)
    preemptive: bool = False
    end_of_turn: dict[str, float | bool] = field(default_factory=dict)  # the model's last verdict, if asked
    queue_wait_ms: float = 0.0
    tools: list[dict[str, Any]] = field(default_factory=list)  # each tool call: name, status, start_ms, ms
    queue_wait_by_model_ms: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class EndOfTurnVerdict:
    """At a pause the end-of-turn model judged the utterance so far: `complete` (the turn may end
    after the short hangover) or not (it waits for more), its `probability` and the `ms` it took;
    `source` "transcript" when the transcript then overruled an unfinished verdict."""

    type: ClassVar[str] = "end_of_turn"
    complete: bool
    probability: float
    ms: float
    source: Literal["audio", "transcript"] = "audio"  # transcript: the words sounded finished


@dataclass(frozen=True)
class PreemptionDiscarded:
    """An answer started at a pause was thrown away unheard because the user went on speaking;
    `ran_ms` is how long it had been working (wasted compute)."""

    type: ClassVar[str] = "preemption_discarded"
    ran_ms: float


@dataclass(frozen=True)
class ToolCallStarted:
    """The model asked for tool `name` in `turn` and it runs now (`call_id` pairs it with its
    `tool_result`); `arguments` as the model wrote them (an object, or its raw text when that is
    not JSON). What the model said before asking is spoken meanwhile."""

    type: ClassVar[str] = "tool_call"
    turn: int
    call_id: str
    name: str
    arguments: dict[str, Any] | str


@dataclass(frozen=True)
class ToolCallFinished:
    """A tool call ended: `status` ok, invalid (arguments not matching its schema: it was not
    called), unknown (no such tool), error (it raised), timeout, or cancelled (the user spoke
    over the answer); `result` is what the model reads next (its result or the error), `ms`
    how long it ran. An error or timeout also sends an `error` event and the agent apologises."""

    type: ClassVar[str] = "tool_result"
    turn: int
    call_id: str
    name: str
    status: ToolStatus
    result: str
    ms: float


@dataclass(frozen=True)
class TurnError:
    """A turn failed (`kind`: timeout, tool_error, tool_timeout, tool_rounds, or the exception's
    class); the session goes on."""

    type: ClassVar[str] = "error"
    turn: int
    kind: str
    message: str


Event = Union[Hello, StateChanged, SpeechStarted, SpeechDiscarded, EndOfTurnVerdict, Transcript, AgentText, Interruption,
              BargeIn, TurnFinished, PreemptionDiscarded, ToolCallStarted, ToolCallFinished, TurnError]
EVENTS: tuple[type, ...] = (Hello, StateChanged, SpeechStarted, SpeechDiscarded, EndOfTurnVerdict, Transcript,
                            AgentText, ToolCallStarted, ToolCallFinished, Interruption, BargeIn, TurnFinished,
                            PreemptionDiscarded, TurnError)


def to_json(event: Event) -> dict[str, Any]:
    """The JSON object for the events channel: {"type": ..., **fields}."""
    return {"type": event.type, **dataclasses.asdict(event)}


def event_table() -> str:
    """The README's table of events, from the classes above."""
    rows = ["| type | fields | when |", "|---|---|---|"]
    for cls in EVENTS:
        names = ", ".join(f"`{f.name}`" for f in dataclasses.fields(cls)) or "-"
        doc = " ".join((cls.__doc__ or "").split())
        rows.append(f"| `{cls.type}` | {names} | {doc} |")
    return "\n".join(rows)
