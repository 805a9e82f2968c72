"""Per-turn timeline: when each stage of a turn first produced something.

All marks are clock times (time.perf_counter by default); reports give milliseconds after the
end of the user's speech (the last voiced VAD frame), which is where voice-to-voice starts.
"""

from __future__ import annotations

from dataclasses import dataclass, field

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
class TurnTimeline:
    turn: int
    marks: dict[str, float] = field(default_factory=dict)
    outcome: str = "pending"  # answered | interrupted | error | empty

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

    def as_event(self) -> dict:
        return {"type": "timeline", "turn": self.turn, "outcome": self.outcome, "ms": self.relative_ms()}

    def log_line(self) -> str:
        figures = " ".join(f"{stage}=+{ms:.0f}ms" for stage, ms in self.relative_ms().items() if stage != "speech_end")
        return f"turn {self.turn} {self.outcome}: {figures}"
