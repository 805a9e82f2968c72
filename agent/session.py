"""One conversation with one peer: inbound audio -> turns -> brain -> phrases -> voice -> playout.

The session owns every per-peer stage and its state: the inbound resampler and the turn
detector (both live as long as the session), the brain's conversation, the playout queue and
track, the current turn task, and the events sent to the peer. Models are shared (passed in).

A turn runs as one task with two concurrent halves: the brain's pieces are cut into phrases
(phrase producer) while earlier phrases are synthesised and queued for playout (voice consumer).
User speech during a turn (barge-in) cancels the task and flushes playout at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
from dataclasses import dataclass, field
from typing import Any, AsyncIterator, Callable

import numpy as np
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from .audio import StreamResampler
from .brain import Brain
from .config import Config
from .pcm_queue import PcmQueue, QueueFull, Segment
from .phrases import PhraseChunker, phrases_from_pieces
from .playout import SAMPLE_RATE as PLAYOUT_RATE, PlayoutTrack
from .timeline import TurnTimeline
from .turns import SAMPLE_RATE as VAD_RATE, TurnDetector, TurnEvent
from .voice import Voice

log = logging.getLogger(__name__)

EventSink = Callable[[dict], None]
_session_ids = itertools.count(1)


class StageStalled(TimeoutError):
    """A model produced nothing for longer than brain.stall_timeout_s."""


async def stall_guard(stream: AsyncIterator, timeout_s: float, stage: str) -> AsyncIterator:
    """Yield from `stream`, failing if it goes `timeout_s` without producing anything (a hung or
    stalled model). A long but steady answer is never cut."""
    async with contextlib.aclosing(stream) as items:
        iterator = items.__aiter__()
        while True:
            try:
                # asyncio.timeout, not wait_for: in Python 3.11 wait_for can swallow a cancellation
                # that races with a result, and a barge-in must never let one more chunk through.
                async with asyncio.timeout(timeout_s):
                    item = await iterator.__anext__()
            except StopAsyncIteration:
                return
            except TimeoutError:
                raise StageStalled(f"the {stage} produced nothing for {timeout_s:g} s") from None
            yield item


@dataclass
class SpokenPhrase:
    """A phrase of the agent's answer and how much of its audio has been queued and played."""

    text: str
    queued: int = 0
    played: int = 0
    complete: bool = False  # all of its audio has been synthesised

    def spoken_text(self) -> str:
        if self.complete and self.queued and self.played >= self.queued:
            return self.text
        if not self.queued or not self.played:
            return ""
        words = self.text.split()
        n = int(len(words) * min(1.0, self.played / self.queued))
        return " ".join(words[:n])


@dataclass
class ActiveTurn:
    timeline: TurnTimeline
    task: asyncio.Task | None = None
    phrases: list[SpokenPhrase] = field(default_factory=list)
    playback_done: asyncio.Event = field(default_factory=asyncio.Event)
    pending_segments: int = 0
    synthesizing: bool = False

    def spoken_text(self) -> str:
        return " ".join(t for t in (p.spoken_text() for p in self.phrases) if t)


class AgentSession:
    def __init__(self, config: Config, brain: Brain, voice: Voice, send_event: EventSink | None = None,
                 clock: Callable[[], float] = time.perf_counter) -> None:
        self.id = next(_session_ids)
        self.config = config
        self.brain = brain
        self.voice = voice
        self.clock = clock
        self._send_event = send_event
        self.conversation = brain.new_conversation()
        self.resampler = StreamResampler(VAD_RATE)
        self.turns = TurnDetector(config.turns, clock=clock)
        self.playout_queue = PcmQueue(max_samples=int(config.playout.max_queue_s * PLAYOUT_RATE))
        self.playout = PlayoutTrack(self.playout_queue, config.playout.frame_ms, config.playout.max_lag_ms)
        self.playout.on_frame = self._on_playout_frame
        self.state = "listening"
        self.turn_count = 0
        self.timelines: list[TurnTimeline] = []
        self._turn: ActiveTurn | None = None
        self._inbound_task: asyncio.Task | None = None
        self._closed = False
        self.barge_ins = 0

    # -- wiring ----------------------------------------------------------------------------
    def set_event_sink(self, send_event: EventSink | None) -> None:
        self._send_event = send_event

    def attach_inbound(self, track: MediaStreamTrack) -> None:
        """Start reading the peer's audio track (continuously, for the session's life)."""
        if self._inbound_task is not None:
            self._inbound_task.cancel()
        self._inbound_task = asyncio.create_task(self._read_inbound(track), name=f"session{self.id}-inbound")

    def emit(self, event: dict[str, Any]) -> None:
        if self._send_event is None:
            return
        try:
            self._send_event(event)
        except Exception:  # a broken events channel must not break the turn
            log.debug("session %s: could not send event %s", self.id, event.get("type"), exc_info=True)

    def _set_state(self, state: str) -> None:
        if state != self.state:
            self.state = state
            self.emit({"type": "state", "state": state})

    def _on_playout_frame(self, lateness_s: float, filled: int) -> None:
        turn = self._turn
        if turn is not None and "first_frame" in turn.timeline.marks:
            turn.timeline.playout.frame(lateness_s, filled, self.playout.samples_per_frame, PLAYOUT_RATE)

    # -- inbound -> turns ------------------------------------------------------------------
    async def _read_inbound(self, track: MediaStreamTrack) -> None:
        try:
            while True:
                frame = await track.recv()
                pcm = self.resampler.frame(frame)
                for event in self.turns.feed(pcm.tobytes()):
                    self.on_turn_event(event)
        except MediaStreamError:
            log.info("session %s: inbound track ended", self.id)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("session %s: inbound audio failed", self.id)

    def on_turn_event(self, event: TurnEvent) -> None:
        if event.kind == "speech_start":
            if self._turn is not None:
                self.barge_in()
            self.emit({"type": "speech_start"})
        elif event.kind == "speech_pause":
            assert event.audio is not None
            self.conversation.prefetch(event.audio)
        elif event.kind == "speech_end":
            assert event.audio is not None
            self.start_turn(event.audio, event.speech_ended_at or event.at, event.at)
        elif event.kind == "speech_discarded":
            self.emit({"type": "speech_discarded", "voiced_ms": event.voiced_ms})

    # -- turns -----------------------------------------------------------------------------
    def start_turn(self, audio: np.ndarray, speech_end: float, turn_end: float) -> ActiveTurn:
        if self._turn is not None:
            self.barge_in()
        self.turn_count += 1
        timeline = TurnTimeline(self.turn_count)
        timeline.mark("speech_end", speech_end)
        timeline.mark("turn_end", turn_end)
        turn = ActiveTurn(timeline)
        self._turn = turn
        self._set_state("thinking")
        turn.task = asyncio.create_task(self._run_turn(turn, audio), name=f"session{self.id}-turn{self.turn_count}")
        return turn

    def barge_in(self) -> None:
        """The user spoke over the agent: stop the brain and voice, silence playout now."""
        turn = self._turn
        if turn is None:
            return
        self.barge_ins += 1
        self.playout_queue.flush()  # the next outbound frame is already silence
        if turn.task is not None:
            turn.task.cancel()
        turn.timeline.outcome = "interrupted"
        self.emit({"type": "barge_in", "turn": turn.timeline.turn, "spoken": turn.spoken_text()})
        self._finish_turn(turn)

    def _finish_turn(self, turn: ActiveTurn) -> None:
        if self._turn is not turn:
            return
        self._turn = None
        self.conversation.record_agent_reply(turn.spoken_text())
        timeline = turn.timeline
        if timeline.outcome == "pending":
            timeline.outcome = "answered"
        self.timelines.append(timeline)
        log.info("session %s %s", self.id, timeline.log_line())
        self.emit(timeline.as_event())
        self._set_state("listening")

    async def _run_turn(self, turn: ActiveTurn, audio: np.ndarray) -> None:
        timeline = turn.timeline
        try:
            await self._answer(turn, audio)
            if turn.pending_segments:
                await turn.playback_done.wait()
            if not turn.phrases:
                timeline.outcome = "empty"
        except asyncio.CancelledError:
            if self._turn is turn:  # cancelled by close(), not by barge-in
                timeline.outcome = "interrupted"
            raise
        except StageStalled as exc:
            self._turn_error(turn, "timeout", str(exc))
        except Exception as exc:
            log.exception("session %s turn %s failed", self.id, timeline.turn)
            self._turn_error(turn, type(exc).__name__, str(exc) or type(exc).__name__)
        finally:
            if not self._closed:
                self._finish_turn(turn)

    def _turn_error(self, turn: ActiveTurn, kind: str, message: str) -> None:
        turn.timeline.outcome = "error"
        self.playout_queue.flush()
        log.error("session %s turn %s error (%s): %s", self.id, turn.timeline.turn, kind, message)
        self.emit({"type": "error", "turn": turn.timeline.turn, "kind": kind, "message": message})

    async def _answer(self, turn: ActiveTurn, audio: np.ndarray) -> None:
        timeline = turn.timeline
        phrase_queue: asyncio.Queue[str | None] = asyncio.Queue()
        # Set when the first phrase has audio. Until then the producer reads no more text, so the
        # brain pauses (backpressure) and the voice has the CPU for the first phrase.
        first_audio = asyncio.Event()

        def on_transcript(text: str) -> None:
            timeline.mark("transcript", self.clock())
            self.emit({"type": "transcript", "role": "user", "turn": timeline.turn, "text": text})

        async def produce_phrases() -> None:
            pieces = self._mark_first(
                stall_guard(self.conversation.reply(audio, on_transcript), self.config.brain.stall_timeout_s, "brain"),
                timeline, "first_token")
            chunker = PhraseChunker(self.config.phrases, clock=time.monotonic)
            ahead = PLAYOUT_RATE * self.config.phrases.timeout_ms // 1000

            def voice_hungry() -> bool:
                """Nothing left to synthesise and less than a timeout's worth of audio queued."""
                return (phrase_queue.empty() and not turn.synthesizing
                        and self.playout_queue.queued_samples < ahead)

            try:
                async with contextlib.aclosing(phrases_from_pieces(pieces, chunker, voice_hungry)) as phrases:
                    async for phrase in phrases:
                        timeline.mark("first_phrase", self.clock())
                        await phrase_queue.put(phrase)
                        await first_audio.wait()
            finally:
                await pieces.aclose()
                await phrase_queue.put(None)

        producer = asyncio.create_task(produce_phrases())
        try:
            await self._speak_phrases(turn, phrase_queue, first_audio)
            await producer  # re-raises a brain failure
        finally:
            if not producer.done():
                producer.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await producer

    async def _speak_phrases(self, turn: ActiveTurn, phrase_queue: asyncio.Queue[str | None],
                             first_audio: asyncio.Event) -> None:
        upsampler = StreamResampler(PLAYOUT_RATE)
        try:
            while (text := await phrase_queue.get()) is not None:
                phrase = SpokenPhrase(text)
                turn.phrases.append(phrase)
                started = self.clock()
                turn.synthesizing = True
                speech = stall_guard(self.voice.speak(text), self.config.brain.stall_timeout_s, "voice")
                async with contextlib.aclosing(speech) as chunks:
                    async for chunk in chunks:
                        turn.timeline.mark("first_pcm", self.clock())
                        self._queue_audio(turn, phrase, upsampler.samples(chunk, self.voice.sample_rate))
                        first_audio.set()
                turn.synthesizing = False
                phrase.complete = True
                first_audio.set()
                log.debug("session %s turn %s: voiced %r (%.0f ms of audio) in %.0f ms", self.id, turn.timeline.turn,
                          text, phrase.queued * 1000 / PLAYOUT_RATE, (self.clock() - started) * 1000)
            if turn.phrases:
                self._queue_audio(turn, turn.phrases[-1], upsampler.finish())
        finally:
            first_audio.set()

    def _queue_audio(self, turn: ActiveTurn, phrase: SpokenPhrase, samples: np.ndarray) -> None:
        if len(samples) == 0:
            return
        first_segment = phrase.queued == 0

        def on_start(_segment: Segment) -> None:
            if turn.timeline.mark("first_frame", self.clock()):
                self._set_state("speaking")
            if first_segment:
                self.emit({"type": "agent_text", "turn": turn.timeline.turn, "text": phrase.text})

        def on_done(_segment: Segment, played: int) -> None:
            phrase.played += played
            turn.pending_segments -= 1
            if turn.pending_segments == 0:
                turn.playback_done.set()

        try:
            self.playout_queue.push(samples, tag=phrase.text, on_start=on_start, on_done=on_done)
        except QueueFull as exc:
            raise RuntimeError(f"playout queue full: {exc}") from exc
        phrase.queued += len(samples)
        turn.pending_segments += 1
        turn.playback_done.clear()

    async def _mark_first(self, pieces, timeline: TurnTimeline, stage: str):
        async with contextlib.aclosing(pieces) as stream:
            async for piece in stream:
                timeline.mark(stage, self.clock())
                yield piece

    # -- teardown --------------------------------------------------------------------------
    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self.playout_queue.flush()
        self.playout.stop()
        tasks = [t for t in (self._inbound_task, self._turn.task if self._turn else None) if t is not None]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._turn = None
        log.info("session %s closed after %d turns", self.id, self.turn_count)
