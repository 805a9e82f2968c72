"""Turn detection: one persistent webrtcvad per session, with start threshold and hangover.

Feed 16 kHz mono s16 PCM in any chunk size; the detector cuts exact VAD frames itself and
returns events. The VAD instance and all state live as long as the detector (one per session);
nothing is reset between chunks or between turns.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field
from typing import Callable, ClassVar

import numpy as np
import webrtcvad

from agent.config import TurnsConfig

SAMPLE_RATE = 16000
BYTES_PER_SAMPLE = 2


@dataclass(frozen=True)
class UserSpeechStarted:
    """The user began to make a sound that may be speech (over the agent: an interruption to judge)."""

    kind: ClassVar[str] = "speech_start"
    at: float  # clock time the decision was made


@dataclass(frozen=True)
class UserPaused:
    """A short silence inside the user's speech. `audio` is the utterance so far, exactly what
    `UserTurnEnded` will carry if the user says nothing more (a preemptive answer can start, and
    the end-of-turn model is asked: `set_verdict(pause_id, complete)`)."""

    kind: ClassVar[str] = "speech_pause"
    at: float
    speech_ended_at: float  # clock time of the last voiced frame
    audio: np.ndarray = field(repr=False)
    voiced_ms: int
    pause_id: int  # which pause a verdict is for


@dataclass(frozen=True)
class UserResumed:
    """The user spoke again after a `UserPaused` (the paused audio is stale)."""

    kind: ClassVar[str] = "speech_resume"
    at: float


@dataclass(frozen=True)
class UserTurnEnded:
    """The user's utterance is complete; `audio` holds it (int16, 16 kHz)."""

    kind: ClassVar[str] = "speech_end"
    at: float
    speech_ended_at: float  # clock time of the last voiced frame
    audio: np.ndarray = field(repr=False)
    voiced_ms: int
    forced: bool = False  # because max_utterance_ms was reached


@dataclass(frozen=True)
class UserSoundDiscarded:
    """The sound after `UserSpeechStarted` was too short to be a turn."""

    kind: ClassVar[str] = "speech_discarded"
    at: float
    voiced_ms: int


# What the detector reports about the user's turn, in order (match on the class).
TurnEvent = UserSpeechStarted | UserPaused | UserResumed | UserTurnEnded | UserSoundDiscarded


@dataclass
class TurnDetector:
    config: TurnsConfig
    clock: Callable[[], float] = time.monotonic
    _vad: webrtcvad.Vad = field(init=False, repr=False)

    def __post_init__(self) -> None:
        c = self.config
        self._vad = webrtcvad.Vad(c.vad_aggressiveness)
        self.frame_bytes = SAMPLE_RATE * c.frame_ms // 1000 * BYTES_PER_SAMPLE
        self._start_frames = max(1, -(-c.start_ms // c.frame_ms))
        self._hangover_frames = max(1, -(-c.hangover_ms // c.frame_ms))
        self._max_frames = c.max_utterance_ms // c.frame_ms
        # Trailing non-voiced audio kept at the end of an utterance (natural word endings; the
        # VAD's own overhang already keeps ~100-120 ms of it inside the voiced part: the bench's
        # `vad_end_offset`, `./dev.sh bench`).
        self._keep_tail = max(1, 40 // c.frame_ms)
        # A pause this long inside speech triggers speech_pause (0 = never); it must be at least
        # the kept tail so the preemptive answer hears the same audio as the final turn.
        self._pause_frames = 0
        pause_ms = c.speculative_ms or (60 if c.semantic else 0)  # the end-of-turn model needs pauses too
        if pause_ms:
            self._pause_frames = min(self._hangover_frames - 1, max(self._keep_tail, -(-pause_ms // c.frame_ms)))
        # With the end-of-turn model: a pause ends the turn after the hangover only once the model
        # has called the utterance complete; otherwise after incomplete_silence_ms.
        self._incomplete_frames = max(self._hangover_frames, -(-c.incomplete_silence_ms // c.frame_ms))
        self._pause_id = 0
        self._verdict: bool | None = None
        preroll_frames = c.preroll_ms // c.frame_ms
        self._pending = bytearray()
        self._ring: deque[bytes] = deque(maxlen=preroll_frames + self._start_frames)
        self._voiced_run = 0
        self._in_speech = False
        self._utterance: list[bytes] = []
        self._silence_run = 0
        self._voiced_frames = 0
        self._last_voiced_at = 0.0
        self._paused = False  # a speech_pause was sent and no voiced frame came since

    @property
    def in_speech(self) -> bool:
        return self._in_speech

    def feed(self, pcm: bytes) -> list[TurnEvent]:
        """Add PCM (16 kHz mono s16 bytes); return the events it caused, in order."""
        self._pending += pcm
        events: list[TurnEvent] = []
        fb = self.frame_bytes
        offset = 0
        while len(self._pending) - offset >= fb:
            frame = bytes(self._pending[offset:offset + fb])
            offset += fb
            event = self._frame(frame)
            if event is not None:
                events.append(event)
        del self._pending[:offset]
        return events

    def _frame(self, frame: bytes) -> TurnEvent | None:
        voiced = self._vad.is_speech(frame, SAMPLE_RATE)
        now = self.clock()
        if not self._in_speech:
            self._ring.append(frame)
            self._voiced_run = self._voiced_run + 1 if voiced else 0
            if self._voiced_run >= self._start_frames:
                self._in_speech = True
                self._utterance = list(self._ring)
                self._ring.clear()
                self._voiced_frames = self._voiced_run
                self._silence_run = 0
                self._voiced_run = 0
                self._last_voiced_at = now
                return UserSpeechStarted(at=now)
            return None

        self._utterance.append(frame)
        if voiced:
            self._voiced_frames += 1
            self._silence_run = 0
            self._last_voiced_at = now
            if self._paused:
                self._paused = False
                if len(self._utterance) < self._max_frames:
                    return UserResumed(at=now)
        else:
            self._silence_run += 1
        if self._silence_run >= self._hangover_frames and self._may_end():
            return self._finish(now, forced=False)
        if self._pause_frames and self._silence_run == self._pause_frames and self._voiced_frames * self.config.frame_ms >= self.config.min_speech_ms:
            self._paused = True
            self._pause_id += 1
            self._verdict = None
            return UserPaused(at=now, speech_ended_at=self._last_voiced_at, audio=self._trimmed_audio(),
                              voiced_ms=self._voiced_frames * self.config.frame_ms, pause_id=self._pause_id)
        if len(self._utterance) >= self._max_frames:
            return self._finish(now, forced=True)
        return None

    def set_verdict(self, pause_id: int, complete: bool) -> None:
        """The end-of-turn model's answer for pause `pause_id` (ignored if the user spoke since)."""
        if self._paused and pause_id == self._pause_id:
            self._verdict = complete

    @property
    def waiting_for_verdict(self) -> bool:
        return self.config.semantic and self._paused and self._verdict is None

    def _may_end(self) -> bool:
        """Past the hangover: may the silence end the turn now?"""
        if not self.config.semantic or not self._paused:
            return True  # plain VAD (no model, or too little speech for a pause event)
        if self._silence_run >= self._incomplete_frames:
            return True  # the longest wait for an incomplete utterance (or for a late verdict)
        return self._verdict is True

    def _trimmed_audio(self) -> np.ndarray:
        """The utterance so far, without trailing silence beyond the kept tail."""
        keep = len(self._utterance) - self._silence_run + min(self._silence_run, self._keep_tail)
        return np.frombuffer(b"".join(self._utterance[:keep]), dtype=np.int16).copy()

    def _finish(self, now: float, forced: bool) -> TurnEvent:
        voiced_ms = self._voiced_frames * self.config.frame_ms
        audio = self._trimmed_audio()
        self._in_speech = False
        self._paused = False
        self._utterance = []
        self._silence_run = 0
        self._voiced_frames = 0
        if voiced_ms < self.config.min_speech_ms:
            return UserSoundDiscarded(at=now, voiced_ms=voiced_ms)
        return UserTurnEnded(at=now, speech_ended_at=self._last_voiced_at, audio=audio, voiced_ms=voiced_ms,
                             forced=forced)
