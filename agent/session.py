"""One conversation with one peer: heard audio -> turns -> an answer turn -> the playout queue.

The session owns every per-peer stage and its state: the turn detector (one webrtcvad for the
session's whole life), the brain's conversation, the playout queue (its audio output), the
current `AnswerTurn`, and the events it sends. Models are shared (passed in). It imports no
WebRTC: the transport feeds it 16 kHz PCM (`hear`), pulls frames from `output`, and reports
each frame it sent (`on_output_frame`).

User speech during a turn pauses playout at once. With `turns.forgive_interruptions` the answer
is stopped (barge-in: cancelled, queue flushed, only the words played kept in the history) only
when the sound proves to be words: voiced for `turns.interrupt_min_ms` and a transcript that is
not only fillers ("mm-hmm", a cough); otherwise playout resumes where it paused.

Preemptive answers: at a short pause (`turns.speculative_ms`) the session already starts the
whole answer to what was said so far, held (see `AnswerTurn`). When the turn then ends with the
same audio, the held answer is released at once: its transcript, first token and first audio
are often ready by then. If the user goes on speaking, it is cancelled and discarded: nothing
played, nothing shown, nothing in the history.

Tools: the session's `ToolBox` (config's tools plus the attach API's) is described to the
brain when its conversation opens, and each answer runs the calls its model makes (see
`AnswerTurn`). A preemptive answer calls no tool before it is confirmed; a barge-in cancels the
running tool with the answer.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import itertools
import logging
import time
from typing import Callable, Coroutine

import numpy as np

from agent.brains.base import Brain, ToolsUnsupported
from agent.config import Config
from agent.events import (BargeIn, EndOfTurnVerdict, Event, Interruption, PreemptionDiscarded, SpeechDiscarded,
                          SpeechStarted, State, StateChanged, TurnError)
from agent.pipeline.end_of_turn import SmartTurn, Verdict
from agent.pipeline.audio import rms_dbfs
from agent.pipeline.pcm_queue import SAMPLE_RATE as PLAYOUT_RATE, PcmQueue
from agent.pipeline.timeline import TurnTimeline
from agent.pipeline.transcripts import is_only_filler, sounds_finished, words_of
from agent.pipeline.turns import TurnDetector, TurnEvent
from agent.runtime.scheduler import due_now, task_with_urgency
from agent.tools.toolbox import ToolBox
from agent.turn import AnswerTurn, StageStalled
from agent.voices.base import Voice

log = logging.getLogger(__name__)

EventSink = Callable[[Event], None]
_session_ids = itertools.count(1)


def check_tools(brain: Brain, tools: ToolBox | None) -> None:
    """Refuse tools for a brain that cannot call them, saying what to change."""
    if tools and not brain.supports_tools:
        raise ToolsUnsupported(
            f"the {brain.name} brain cannot call tools, but tools are on ({', '.join(tools.names)}): "
            f"set tools.builtin = [] and tools.custom = [] (and pass no tools to attach_agent), {brain.tools_hint}")


class AgentSession:
    def __init__(self, config: Config, brain: Brain, voice: Voice, send_event: EventSink | None = None,
                 clock: Callable[[], float] = time.perf_counter, end_of_turn: SmartTurn | None = None,
                 tools: ToolBox | None = None) -> None:
        check_tools(brain, tools)
        self.id = next(_session_ids)
        self.config = config
        self.brain = brain
        self.voice = voice
        # The end-of-turn model (shared); without it, or with turns.semantic off, silence alone decides.
        self.end_of_turn = end_of_turn if config.turns.semantic else None
        self._verdict: Verdict | None = None  # the model's latest verdict in this utterance
        self._pause_text: tuple[int, str] | None = None  # (pause id, what the preemptive answer heard)
        self._interrupted: AnswerTurn | None = None  # an answer paused by a sound over it, not yet judged
        self._judging: asyncio.Future | None = None  # the transcription of that sound, which decides
        self._heard_levels: collections.deque[float] = collections.deque(maxlen=8)  # dBFS of recent input chunks
        self._echo = False  # the utterance in progress is the agent's own voice coming back
        self.clock = clock
        self._send_event = send_event
        self.tools = tools if tools else None
        self.conversation = brain.new_conversation(self.tools.prompt()) if self.tools else brain.new_conversation()
        turns = config.turns if self.end_of_turn is not None else dataclasses.replace(config.turns, semantic=False)
        self.turns = TurnDetector(turns, clock=clock)
        self.output = PcmQueue(max_samples=int(config.playout.max_queue_s * PLAYOUT_RATE))
        self.state: State = "listening"
        self.turn_count = 0
        self.timelines: list[TurnTimeline] = []
        self._turn: AnswerTurn | None = None
        self._preemptive: tuple[np.ndarray, AnswerTurn] | None = None  # (the audio it answers, the held turn)
        self._closed = False
        self.barge_ins = 0
        self.preemptions = {"started": 0, "hits": 0, "discarded": 0}
        self.preemption_wasted_s = 0.0

    # -- wiring ----------------------------------------------------------------------------
    def set_event_sink(self, send_event: EventSink | None) -> None:
        self._send_event = send_event

    def emit(self, event: Event) -> None:
        if self._send_event is None:
            return
        try:
            self._send_event(event)
        except Exception:  # a broken events channel must not break the turn
            log.debug("session %s: could not send event %s", self.id, event.type, exc_info=True)

    def _set_state(self, state: State) -> None:
        if state != self.state:
            self.state = state
            self.emit(StateChanged(state))

    def on_output_frame(self, lateness_s: float, filled: int, frame_samples: int) -> None:
        """The transport sent one frame pulled from `output` (`filled` of its samples were audio),
        `lateness_s` after it was due: the current answer's playout meter counts it."""
        turn = self._turn
        if turn is not None and "first_frame" in turn.timeline.marks:
            turn.timeline.playout.frame(lateness_s, filled, frame_samples, PLAYOUT_RATE)

    # -- heard audio -> turns --------------------------------------------------------------
    def hear(self, pcm: np.ndarray) -> None:
        """The user's audio as it arrives: int16 mono at 16 kHz, any chunk size."""
        if self._closed:
            return
        if len(pcm):
            self._heard_levels.append(rms_dbfs(pcm))
        for event in self.turns.feed(pcm.tobytes()):
            self.on_turn_event(event)
        if self._echo and self._turn is not None and self.turns.in_speech and not self.is_echo():
            # It began as quiet as an echo (a soft onset) but grew louder than one: the user.
            self._echo = False
            self._pause_for_interruption()
            self.emit(SpeechStarted())

    def is_echo(self) -> bool:
        """Is the speech now heard the agent's own voice coming back (a loudspeaker)? It is while
        it stays `turns.echo_margin_db` quieter than what the agent played in the last 0.5 s
        (checked at its start, and again with every chunk while it lasts)."""
        margin = self.config.turns.echo_margin_db
        if margin <= 0 or not self.output.recent_levels or not self._heard_levels:
            return False
        return max(self._heard_levels) < max(self.output.recent_levels) - margin

    def on_turn_event(self, event: TurnEvent) -> None:
        if self._echo:
            if event.kind in ("speech_end", "speech_discarded"):
                self._echo = False  # the echo ended: nothing to answer, nothing interrupted
                if self._turn is not None:
                    self.emit(Interruption(self._turn.number, "resumed", "echo"))
            elif event.kind == "speech_pause":
                self.turns.set_verdict(event.pause_id, True)
            return
        if event.kind == "speech_start" and self._turn is not None and self._interrupted is None and self.is_echo():
            self._echo = True
            return
        if event.kind == "speech_start":
            self._verdict = None
            self.discard_preemption()
            if self._turn is not None and self._interrupted is None:
                self._pause_for_interruption()
            self.emit(SpeechStarted())
        elif event.kind == "speech_pause":
            assert event.audio is not None
            self._ask_end_of_turn(event.audio, event.pause_id)
            self.preempt(event.audio, event.speech_ended_at or event.at, event.pause_id)
        elif event.kind == "speech_resume":
            self._verdict = None
            self.discard_preemption()
        elif event.kind == "speech_end" and self._interrupted is not None:
            assert event.audio is not None
            self._judge_interruption(event)
        elif event.kind == "speech_end":
            assert event.audio is not None
            preemptive = self._preemptive
            if preemptive is not None and np.array_equal(preemptive[0], event.audio):
                self._confirm_preemption(event.at)
            else:
                self.discard_preemption()
                self.start_turn(event.audio, event.speech_ended_at or event.at, event.at)
        elif event.kind == "speech_discarded":
            self.discard_preemption()
            if self._interrupted is not None:
                self._resume_interrupted("noise")
            self.emit(SpeechDiscarded(event.voiced_ms))

    # -- interruptions ---------------------------------------------------------------------
    def _pause_for_interruption(self) -> None:
        if self.config.turns.forgive_interruptions:
            self._interrupted = self._turn
            self.output.paused = True  # the next outbound frame is silence; nothing is lost
        else:
            self.barge_in()

    def _judge_interruption(self, event: TurnEvent) -> None:
        """The sound over the agent ended: words, or a cough / "mm-hmm"? Its transcript decides
        (the answer stays paused meanwhile); a brain that cannot transcribe first takes it as words."""
        assert event.audio is not None
        self.discard_preemption()
        if event.voiced_ms < self.config.turns.interrupt_min_ms:
            self._resume_interrupted("too short")
            return
        audio, speech_end, turn_end = event.audio, event.speech_ended_at or event.at, event.at
        judging = self._due_now(self.conversation.transcribe(audio), "judging a sound")
        self._judging = judging

        def judged(f: asyncio.Future) -> None:
            if self._judging is not f or self._closed or f.cancelled():
                return
            self._judging = None
            text = None if f.exception() is not None else f.result()
            if text is not None and is_only_filler(text, self.config.turns.fillers):
                self._resume_interrupted("backchannel" if words_of(text) else "noise", text)
                return
            interrupted, self._interrupted = self._interrupted, None
            if interrupted is not None:
                self.emit(Interruption(interrupted.number, "confirmed", heard=text or ""))
            self.start_turn(audio, speech_end, turn_end)  # barges in on the paused answer first

        judging.add_done_callback(judged)

    def _resume_interrupted(self, reason: str, heard: str = "") -> None:
        """Not an interruption after all: the answer goes on from where it paused."""
        interrupted, self._interrupted = self._interrupted, None
        self.output.paused = False
        if interrupted is not None:
            self.emit(Interruption(interrupted.number, "resumed", reason, heard))

    # -- end of turn -----------------------------------------------------------------------
    def _ask_end_of_turn(self, audio: np.ndarray, pause_id: int) -> None:
        """Ask the end-of-turn model whether the utterance so far is complete; the turn detector
        holds the end of the turn until it answers (or incomplete_silence_ms passes)."""
        if self.end_of_turn is None:
            return
        if self._interrupted is not None:  # over the agent its words decide, at once: no waiting
            self.turns.set_verdict(pause_id, True)
            return
        future = self._due_now(self.end_of_turn.verdict(audio), "end of turn")

        def done(f: asyncio.Future) -> None:
            if self._closed or f.cancelled():
                return
            if f.exception() is not None:  # fail open: silence decides, as without the model
                log.warning("session %s: end-of-turn model failed: %s", self.id, f.exception())
                self.turns.set_verdict(pause_id, True)
                return
            verdict = f.result()
            self._verdict = verdict
            self.turns.set_verdict(pause_id, verdict.complete)
            self.emit(EndOfTurnVerdict(verdict.complete, verdict.probability, verdict.ms))
            self._finish_by_transcript(pause_id)

        future.add_done_callback(done)

    def _on_preemptive_transcript(self, pause_id: int, text: str) -> None:
        self._pause_text = (pause_id, text)
        self._finish_by_transcript(pause_id)

    def _finish_by_transcript(self, pause_id: int) -> None:
        """The model doubts the utterance is finished, but its transcript (from the preemptive
        answer) ends a sentence on a word that can end one: let the hangover end the turn."""
        verdict, said = self._verdict, self._pause_text
        if (not self.config.turns.finished_text_ends_turn or verdict is None or verdict.complete
                or said is None or said[0] != pause_id or not sounds_finished(said[1])):
            return
        self._verdict = dataclasses.replace(verdict, complete=True)
        self.turns.set_verdict(pause_id, True)
        self.emit(EndOfTurnVerdict(True, verdict.probability, verdict.ms, source="transcript"))

    # -- turns -----------------------------------------------------------------------------
    def _new_turn(self, audio: np.ndarray, speech_end: float, held: bool) -> AnswerTurn:
        turn = AnswerTurn(self.turn_count + 1, self.conversation, self.voice, self.output, self.config, self.emit,
                          on_audible=lambda: self._set_state("speaking"), clock=self.clock, held=held,
                          tools=self.tools)
        turn.timeline.mark("speech_end", speech_end)
        turn.urgency.label = f"session {self.id} turn {turn.number}"
        # The turn's model work (and its producer task's) carries its urgency to the scheduler.
        turn.task = task_with_urgency(self._run_turn(turn, audio), turn.urgency, f"session{self.id}-turn{turn.number}")
        return turn

    def _due_now(self, work: Coroutine, what: str) -> asyncio.Task:
        """Run the session's own quick model work (an end-of-turn verdict, judging a sound over the
        agent) as due now: someone is waiting for it."""
        return task_with_urgency(work, due_now(f"session {self.id} {what}"))

    def start_turn(self, audio: np.ndarray, speech_end: float, turn_end: float) -> AnswerTurn:
        if self._turn is not None:
            self.barge_in()
        turn = self._new_turn(audio, speech_end, held=False)
        self._begin(turn, turn_end)
        return turn

    def _begin(self, turn: AnswerTurn, turn_end: float) -> None:
        """`turn` is now the current turn (the user's turn ended at `turn_end`)."""
        self.turn_count += 1
        turn.timeline.mark("turn_end", turn_end)
        if self._verdict is not None:
            turn.timeline.end_of_turn = {"complete": self._verdict.complete,
                                         "probability": self._verdict.probability, "ms": self._verdict.ms}
            self._verdict = None
        self._turn = turn
        self._set_state("thinking")

    def preempt(self, audio: np.ndarray, speech_end: float, pause_id: int = 0) -> None:
        """The user paused: start answering `audio`, held until the turn really ends."""
        if self.config.turns.speculative_ms <= 0 or self._turn is not None:
            return
        self.discard_preemption()
        self.preemptions["started"] += 1
        turn = self._new_turn(audio, speech_end, held=True)
        turn.on_transcript = lambda text: self._on_preemptive_transcript(pause_id, text)
        self._preemptive = (audio, turn)

    def _confirm_preemption(self, turn_end: float) -> None:
        assert self._preemptive is not None
        _audio, turn = self._preemptive
        self._preemptive = None
        self.preemptions["hits"] += 1
        if self._turn is not None:
            self.barge_in()
        self._begin(turn, turn_end)
        turn.release()
        if turn.task is not None and turn.task.done():  # it finished (or failed) while held
            self._finish_turn(turn)

    def discard_preemption(self) -> None:
        """The user went on speaking: throw the held answer away, unheard and unrecorded."""
        if self._preemptive is None:
            return
        _audio, turn = self._preemptive
        self._preemptive = None
        turn.cancel()
        self.conversation.rollback()
        ran_s = self.clock() - turn.started_at
        self.preemptions["discarded"] += 1
        self.preemption_wasted_s += ran_s
        self.emit(PreemptionDiscarded(round(ran_s * 1000.0, 1)))

    def barge_in(self) -> None:
        """The user spoke over the agent: stop the brain and voice, silence playout now."""
        turn = self._turn
        if turn is None:
            return
        self.barge_ins += 1
        self._interrupted = None
        self.output.paused = False
        self.output.flush()  # the next outbound frame is already silence
        turn.cancel()
        turn.timeline.outcome = "interrupted"
        self.emit(BargeIn(turn.number, turn.spoken_text()))
        self._finish_turn(turn)

    def _finish_turn(self, turn: AnswerTurn) -> None:
        if self._turn is not turn:
            return
        self._turn = None
        self.conversation.record_agent_reply(turn.spoken_text())
        timeline = turn.timeline
        if timeline.outcome == "pending":
            timeline.outcome = "answered"
        timeline.queue_wait_s = turn.urgency.waited_s
        self.timelines.append(timeline)
        log.info("session %s %s", self.id, timeline.log_line())
        self.emit(timeline.as_event())
        self._set_state("listening")

    async def _run_turn(self, turn: AnswerTurn, audio: np.ndarray) -> None:
        try:
            await turn.play(audio)
        except asyncio.CancelledError:
            if self._turn is turn:  # cancelled by close(), not by barge-in
                turn.timeline.outcome = "interrupted"
            raise
        except StageStalled as exc:
            self._turn_error(turn, "timeout", str(exc))
        except Exception as exc:
            log.exception("session %s turn %s failed", self.id, turn.number)
            self._turn_error(turn, type(exc).__name__, str(exc) or type(exc).__name__)
        finally:
            if not self._closed and not turn.held:  # a held turn finishes when it is confirmed
                self._finish_turn(turn)

    def _turn_error(self, turn: AnswerTurn, kind: str, message: str) -> None:
        turn.timeline.outcome = "error"
        if not turn.held:
            self.output.flush()
        log.error("session %s turn %s error (%s): %s", self.id, turn.number, kind, message)
        turn.emit(TurnError(turn.number, kind, message))  # held with the turn if it is held

    # -- teardown --------------------------------------------------------------------------
    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self.output.flush()
        if self._preemptive is not None:
            self._preemptive[1].cancel()
            self._preemptive = None
        if self._judging is not None:
            self._judging.cancel()
            self._judging = None
        turn = self._turn
        if turn is not None and turn.task is not None:
            turn.task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await turn.task
        self._turn = None
        log.info("session %s closed after %d turns", self.id, self.turn_count)
