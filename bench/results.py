"""One benchmark turn measured at the client, and a run of them.

Per turn: voice-to-voice at the client (end of the question's speech as sent -> first audible
agent frame received), the server's timeline, one-way transport (server hands the first answer
frame to its sender -> the client has it decoded), gaps and lateness of the answer's playout.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

from signaling.client import HeadlessClient

from .questions import Question

SILENT_PEAK = 64  # a received frame whose peak is above this carries audio (Opus silence decodes to ~0)


@dataclass
class TurnResult:
    call: int
    turn: int
    question: str
    outcome: str
    answer: str
    voice_to_voice_ms: float | None
    transport_ms: float | None
    server_ms: dict[str, float]
    playout: dict[str, float]
    # Server's end-of-speech mark (last voiced VAD frame) minus the moment the client sent the
    # question's last frame: uplink transport, minus any speech tail the VAD did not call voiced.
    vad_end_offset_ms: float | None = None
    speaker: str = ""  # the voice that asked (kind:name)
    preemptive: bool = False  # the answer was started at a pause and released at the end of the turn
    preemptions_discarded: int = 0  # answers started at a pause in this question and thrown away
    preemption_wasted_ms: float = 0.0  # how long those had been working


async def play_turn(client: HeadlessClient, question: Question, turn: int, call: int,
                    timeout_s: float = 120.0) -> TurnResult:
    since = len(client.events)
    frames_before = len(client.frames)
    sent = client.say(question.speech)  # done when its last sample (the end of the words) is sent
    await sent.done.wait()
    timeline = await client.wait_event(lambda e: e.get("type") == "timeline" and e.get("turn") == turn, timeout_s, since)
    answer = " ".join(e["text"] for _, e in client.events[since:] if e.get("type") == "agent_text" and e.get("turn") == turn)
    ended = sent.ended_at or 0.0
    audible = client.first_audible_after(ended)
    v2v = round((audible.at - ended) * 1000.0, 1) if audible is not None else None
    transport = None
    server_first_frame = timeline.get("clock", {}).get("first_frame")
    if server_first_frame is not None:
        first = next((f for f in client.frames[frames_before:]
                      if f.at >= server_first_frame and np.abs(f.samples).max(initial=0) > SILENT_PEAK), None)
        if first is not None:
            transport = round((first.at - server_first_frame) * 1000.0, 1)
    server_speech_end = timeline.get("clock", {}).get("speech_end")
    offset = round((server_speech_end - ended) * 1000.0, 1) if server_speech_end is not None and ended else None
    discarded = [e for _, e in client.events[since:] if e.get("type") == "preemption_discarded"]
    return TurnResult(call, turn, question.label, timeline["outcome"], answer, v2v, transport, timeline["ms"],
                      timeline.get("playout", {}), offset, question.speaker, bool(timeline.get("preemptive")),
                      len(discarded), round(sum(e.get("ran_ms", 0.0) for e in discarded), 1))


# -- a run ------------------------------------------------------------------------------------
@dataclass
class BenchRun:
    mode: str  # "cascade" | "stub" | "url"
    brain: str
    voice: str
    turns_per_call: int
    concurrency: int
    jitter_prefetch: int  # the client's receive jitter buffer, in packets
    results: list[TurnResult] = field(default_factory=list)
    wall_s: float = 0.0
    cpu_s: float = 0.0  # CPU time of this process over the run (server and clients when in-process)
    started: str = ""

    @property
    def cpu_per_call_pct(self) -> float:
        return 100.0 * self.cpu_s / max(1e-9, self.wall_s) / max(1, self.concurrency)

    def to_json(self) -> dict:
        data = asdict(self)
        data["cpu_per_call_pct"] = round(self.cpu_per_call_pct, 1)
        return data
