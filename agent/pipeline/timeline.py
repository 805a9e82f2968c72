"""Per-turn timeline: when each stage of a turn first produced something.

All marks are clock times (time.perf_counter by default); reports give milliseconds after the
end of the user's speech (the last voiced VAD frame), which is where voice-to-voice starts.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from agent.events import Outcome, TurnFinished

# Stage marks in pipeline order.
STAGES = (
    "speech_end",  # last voiced frame of the user's utterance
    "turn_end",  # end-of-turn decision (after the VAD hangover)
    "transcript",  # the user's words are known
    "first_token",  # first text piece from the brain
    "first_phrase",  # first speakable phrase cut
    "first_pcm",  # first synthesised audio of the first phrase
    "first_frame",  # first audible frame handed to the WebRTC sender
)


@dataclass
class ToolSpan:
    """One tool call of the turn: when it started and ended (clock times) and how it went."""

    name: str
    started: float
    ended: float | None = None
    status: str = "running"  # a ToolStatus once it ended; a span still running when the turn ends was cancelled


GAP_MS = 40  # silence longer than this inside an answer (audio not ready in time) is a gap


@dataclass
class PlayoutMeter:
    """What the outbound track did during one answer: frame lateness and gaps (underruns)."""

    lateness_s: list[float] = field(default_factory=list)
    gaps_ms: list[float] = field(default_factory=list)
    _underrun: int = 0  # silent samples since audio last flowed
    _started: bool = False

    def frame(self, lateness_s: float, filled: int, frame_samples: int, rate: int) -> None:
        self.lateness_s.append(lateness_s)
        if not self._started:
            self._started = filled > 0
            self._underrun = frame_samples - filled if filled else 0
            return
        if filled and self._underrun:
            gap_ms = self._underrun * 1000.0 / rate
            if gap_ms > GAP_MS:
                self.gaps_ms.append(round(gap_ms, 1))
            self._underrun = 0
        self._underrun += frame_samples - filled

    def summary(self) -> dict:
        late = np.asarray(self.lateness_s) * 1000.0 if self.lateness_s else np.zeros(1)
        return {
            "frames": len(self.lateness_s),
            "lateness_p50_ms": round(float(np.percentile(late, 50)), 2),
            "lateness_p99_ms": round(float(np.percentile(late, 99)), 2),
            "lateness_max_ms": round(float(late.max()), 2),
            "gaps": len(self.gaps_ms),
            "gap_max_ms": max(self.gaps_ms, default=0.0),
        }


@dataclass
class TurnTimeline:
    turn: int
    marks: dict[str, float] = field(default_factory=dict)
    outcome: Outcome = "pending"
    preemptive: bool = False  # started at a pause, before the end of the user's turn was certain
    end_of_turn: dict = field(default_factory=dict)  # the end-of-turn model's verdict that ended the turn
    playout: PlayoutMeter = field(default_factory=PlayoutMeter)
    queue_wait_s: float = 0.0  # time its model steps waited for the CPU or an LLM slot (other calls' work)
    queue_wait_by_model_s: dict[str, float] = field(default_factory=dict)  # the same per model
    tools: list[ToolSpan] = field(default_factory=list)

    def tool_started(self, name: str, at: float) -> ToolSpan:
        span = ToolSpan(name, at)
        self.tools.append(span)
        return span

    def tool_summary(self) -> list[dict]:
        """Each tool call: name, status, start_ms (after speech_end) and ms (how long it ran)."""
        origin = self.marks.get("speech_end", 0.0)
        rows = []
        for span in self.tools:
            ended = span.ended if span.ended is not None else span.started
            rows.append({"name": span.name, "status": span.status if span.ended is not None else "cancelled",
                         "start_ms": round((span.started - origin) * 1000.0, 1),
                         "ms": round((ended - span.started) * 1000.0, 1)})
        return rows

    def mark(self, stage: str, at: float) -> bool:
        """Record the first time a stage happened; later calls are ignored. True if recorded."""
        if stage not in STAGES:
            raise ValueError(f"unknown stage {stage!r}")
        if stage in self.marks:
            return False
        self.marks[stage] = at
        return True

    def relative_ms(self) -> dict[str, float]:
        """Each recorded stage in ms after speech_end."""
        origin = self.marks.get("speech_end")
        if origin is None:
            return {}
        return {stage: round((self.marks[stage] - origin) * 1000.0, 1) for stage in STAGES if stage in self.marks}

    def as_event(self) -> TurnFinished:
        """The turn's figures for the events channel. `clock` holds the raw marks (monotonic
        seconds, comparable between processes on one machine) for transport measurements."""
        return TurnFinished(self.turn, self.outcome, self.relative_ms(), dict(self.marks), self.playout.summary(),
                            self.preemptive, dict(self.end_of_turn), round(self.queue_wait_s * 1000.0, 1),
                            self.tool_summary(),
                            {model: round(s * 1000.0, 1) for model, s in self.queue_wait_by_model_s.items()})

    def log_line(self) -> str:
        figures = " ".join(f"{stage}=+{ms:.0f}ms" for stage, ms in self.relative_ms().items() if stage != "speech_end")
        playout = self.playout.summary()
        tools = "".join(f" tool={t['name']}:{t['status']}:{t['ms']:.0f}ms" for t in self.tool_summary())
        return (f"turn {self.turn} {self.outcome}: {figures} queue_wait={self.queue_wait_s * 1000:.0f}ms "
                f"lateness_p99={playout['lateness_p99_ms']:.1f}ms gaps={playout['gaps']}{tools}")
