"""One conversation with one peer: heard audio -> the user's turns -> the agent's answers -> playout.

`AgentSession` owns every per-peer stage: the turn detector (one webrtcvad for the session's
whole life), the brain's conversation, the playout queue (its audio output), the current
`Answer`, and the events it sends. Models are shared (passed in). It imports no WebRTC: the
transport feeds it 16 kHz PCM (`hear`), pulls frames from `output`, and reports each frame it
sent (`on_output_frame`).

The session is a dispatcher: each event of the user's turn (`agent.pipeline.turns`) goes to the
part that decides about it, and the session starts, confirms and finishes answers:
- `EchoGate`: speech over the answer as quiet as its echo is the agent's own voice: ignored;
- `InterruptionJudge`: other speech over the answer pauses playout; its transcript decides
  whether the answer is stopped (barge-in: cancelled, queue flushed, only the words played kept
  in the history) or resumes where it paused (a cough, an "mm-hmm");
- `EndOfTurnArbiter`: at each pause, whether the utterance is complete (the end-of-turn model,
  overruled by a transcript that sounds finished);
- `Preemption`: at a short pause the whole answer already starts, held until the turn ends with
  the same audio, or discarded if the user goes on.

What is in flight at any moment (`echo.active` may outlive the answer until its sound ends):

    answer     interruptions.paused  preemption.answer  echo.active  the call is
    None       None                  None               False        listening
    None       None                  an Answer          False        paused: an answer is prepared, held
    an Answer  None                  None               False        thinking or speaking
    an Answer  the answer            None               False        paused over a sound being judged
    an Answer  None                  None               True         speaking over its own echo

Tools: the session's `ToolBox` (config's tools plus the attach API's) is described to the brain
when its conversation opens; each answer runs the calls its model makes.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
from typing import Callable, Coroutine

import numpy as np

from agent.answer import Answer, StageStalled
from agent.brains.base import Brain, check_tools
from agent.config import Config
from agent.events import BargeIn, Event, Interruption, SpeechDiscarded, SpeechStarted, State, StateChanged, TurnError
from agent.pipeline.end_of_turn import SmartTurn
from agent.pipeline.pcm_queue import SAMPLE_RATE as PLAYOUT_RATE, PcmQueue
from agent.pipeline.timeline import TurnTimeline
from agent.pipeline.turns import (TurnDetector, TurnEvent, UserPaused, UserResumed, UserSoundDiscarded,
                                  UserSpeechStarted, UserTurnEnded)
from agent.runtime.scheduler import before_all, due_now, task_with_urgency
from agent.tools.toolbox import ToolBox
from agent.voices.base import Voice

from .echo_gate import EchoGate
from .end_of_turn_arbiter import EndOfTurnArbiter
from .interruptions import InterruptionJudge
from .preemption import Preemption

log = logging.getLogger(__name__)

EventSink = Callable[[Event], None]
_session_ids = itertools.count(1)


class AgentSession:
    def __init__(self, config: Config, brain: Brain, voice: Voice, send_event: EventSink | None = None,
                 clock: Callable[[], float] = time.perf_counter, end_of_turn: SmartTurn | None = None,
                 tools: ToolBox | None = None) -> None:
        check_tools(brain, tools)
        self.id = next(_session_ids)
        self.config = config
        self.brain = brain
        self.voice = voice
        self.clock = clock
        self._send_event = send_event
        self.tools = tools if tools else None
        self.conversation = brain.new_conversation(self.tools.prompt()) if self.tools else brain.new_conversation()
        # The end-of-turn model (shared); without it, or with turns.semantic off, silence alone decides.
        model = end_of_turn if config.turns.semantic else None
        turns = config.turns if model is not None else config.replace(**{"turns.semantic": False}).turns
        self.user_turns = TurnDetector(turns, clock=clock)
        self.output = PcmQueue(max_samples=int(config.playout.max_queue_s * PLAYOUT_RATE))
        self.state: State = "listening"
        self.turn_count = 0
        self.timelines: list[TurnTimeline] = []
        self.answer: Answer | None = None  # the answer the user hears (or is about to)
        self._closed = False
        self.barge_ins = 0
        self.echo = EchoGate(config.turns.echo_margin_db, self.output)
        self.interruptions = InterruptionJudge(config.turns, self.output, self.emit, self.conversation.transcribe,
                                               self._run_due_now, self._answer_interruption)
        self.arbiter = EndOfTurnArbiter(model, self.user_turns, config.turns, self.emit, self._run_before_all,
                                        f"session {self.id}")
        self.preemption = Preemption(self.conversation, self.emit, clock)

    @property
    def preemptions(self) -> dict[str, int]:
        return self.preemption.counts

    @property
    def preemption_wasted_s(self) -> float:
        return self.preemption.wasted_s

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
        answer = self.answer
        if answer is not None and "first_frame" in answer.timeline.marks:
            answer.timeline.playout.frame(lateness_s, filled, frame_samples, PLAYOUT_RATE)

    def _run_due_now(self, work: Coroutine, what: str) -> asyncio.Task:
        """Run the session's own quick model work (judging a sound over the agent) as due now:
        someone is waiting for it."""
        return task_with_urgency(work, due_now(f"session {self.id} {what}"))

    def _run_before_all(self, work: Coroutine, what: str) -> asyncio.Task:
        """Run an end-of-turn verdict before every other call's work (`before_all`): it is small
        and the caller's turn cannot end without it."""
        return task_with_urgency(work, before_all(f"session {self.id} {what}"))

    # -- heard audio -> the user's turns ---------------------------------------------------
    def hear(self, pcm: np.ndarray) -> None:
        """The user's audio as it arrives: int16 mono at 16 kHz, any chunk size."""
        if self._closed:
            return
        self.echo.heard(pcm)
        for event in self.user_turns.feed(pcm.tobytes()):
            self.on_turn_event(event)
        if self.echo.active and self.answer is not None and self.user_turns.in_speech and self.echo.grew_louder():
            self._pause_for_interruption()  # it began as quiet as an echo but grew louder: the user
            self.emit(SpeechStarted())

    def on_turn_event(self, event: TurnEvent) -> None:
        if self.echo.active:
            self._during_echo(event)
            return
        over_answer = self.answer is not None and not self.interruptions.pending
        match event:
            case UserSpeechStarted():
                if over_answer and self.echo.speech_started():
                    return
                self.arbiter.reset()
                self.preemption.discard()
                if over_answer:
                    self._pause_for_interruption()
                self.emit(SpeechStarted())
            case UserPaused():
                self.arbiter.ask(event.audio, event.pause_id, over_agent=self.interruptions.pending)
                self.preempt(event.audio, event.speech_ended_at, event.pause_id)
            case UserResumed():
                self.arbiter.reset()
                self.preemption.discard()
            case UserTurnEnded() if self.interruptions.pending:
                self.preemption.discard()
                self.interruptions.judge(event)
            case UserTurnEnded():
                if self.preemption.matches(event.audio):
                    self._confirm_preemption(event.at)
                else:
                    self.preemption.discard()
                    self.start_answer(event.audio, event.speech_ended_at, event.at)
            case UserSoundDiscarded():
                self.preemption.discard()
                if self.interruptions.pending:
                    self.interruptions.resume("noise")
                self.emit(SpeechDiscarded(event.voiced_ms))

    def _during_echo(self, event: TurnEvent) -> None:
        match event:
            case UserTurnEnded() | UserSoundDiscarded():
                self.echo.ended()  # nothing to answer, nothing interrupted
                if self.answer is not None:
                    self.emit(Interruption(self.answer.number, "resumed", "echo"))
            case UserPaused():
                self.user_turns.set_verdict(event.pause_id, True)

    def _pause_for_interruption(self) -> None:
        if self.config.turns.forgive_interruptions and self.answer is not None:
            self.interruptions.pause(self.answer)
        else:
            self.barge_in()

    def _answer_interruption(self, event: UserTurnEnded) -> None:
        """The sound over the agent was words: answer them (barging in on the paused answer)."""
        self.start_answer(event.audio, event.speech_ended_at, event.at)

    # -- answers ---------------------------------------------------------------------------
    def _new_answer(self, audio: np.ndarray, speech_end: float, preemptive: bool,
                    on_transcript: Callable[[str], None] | None = None) -> Answer:
        answer = Answer(self.turn_count + 1, self.conversation, self.voice, self.output, self.config, self.emit,
                        on_audible=lambda: self._set_state("speaking"), clock=self.clock, preemptive=preemptive,
                        on_transcript=on_transcript, tools=self.tools)
        answer.timeline.mark("speech_end", speech_end)
        answer.urgency.label = f"session {self.id} turn {answer.number}"
        # The answer's model work (and its producer task's) carries its urgency to the scheduler.
        answer.task = task_with_urgency(self._run_answer(answer, audio), answer.urgency,
                                        f"session{self.id}-turn{answer.number}")
        return answer

    def start_answer(self, audio: np.ndarray, speech_end: float, turn_end: float) -> Answer:
        """Answer `audio`, the user's turn (last voiced at `speech_end`, ended at `turn_end`)."""
        if self.answer is not None:
            self.barge_in()
        answer = self._new_answer(audio, speech_end, preemptive=False)
        self._begin(answer, turn_end)
        return answer

    def _begin(self, answer: Answer, turn_end: float) -> None:
        """`answer` is now the current answer (the user's turn ended at `turn_end`)."""
        self.turn_count += 1
        answer.timeline.mark("turn_end", turn_end)
        verdict = self.arbiter.take()
        if verdict is not None:
            answer.timeline.end_of_turn = {"complete": verdict.complete, "probability": verdict.probability,
                                           "ms": verdict.ms, "waited_ms": verdict.waited_ms}
        self.answer = answer
        self._set_state("thinking")

    def preempt(self, audio: np.ndarray, speech_end: float, pause_id: int = 0) -> None:
        """The user paused: start answering `audio`, held until the turn really ends."""
        if self.config.turns.speculative_ms <= 0 or self.answer is not None:
            return
        self.preemption.discard()
        answer = self._new_answer(audio, speech_end, preemptive=True,
                                  on_transcript=lambda text: self.arbiter.heard(pause_id, text))
        self.preemption.start(audio, answer)

    def _confirm_preemption(self, turn_end: float) -> None:
        answer = self.preemption.take()
        if self.answer is not None:
            self.barge_in()
        self._begin(answer, turn_end)
        answer.confirm()
        if answer.task is not None and answer.task.done():  # it finished (or failed) while preemptive
            self._finish_answer(answer)

    def barge_in(self) -> None:
        """The user spoke over the agent: stop the brain and voice, silence playout now."""
        answer = self.answer
        if answer is None:
            return
        self.barge_ins += 1
        self.interruptions.clear()
        self.output.flush()  # the next outbound frame is already silence
        answer.cancel()
        answer.timeline.outcome = "interrupted"
        self.emit(BargeIn(answer.number, answer.spoken_text()))
        self._finish_answer(answer)

    def _finish_answer(self, answer: Answer) -> None:
        if self.answer is not answer:
            return
        self.answer = None
        self.conversation.record_agent_reply(answer.recorded_text())
        timeline = answer.timeline
        if timeline.outcome == "pending":
            timeline.outcome = "answered"
        timeline.queue_wait_s = answer.urgency.waited_s
        timeline.queue_wait_by_model_s = dict(answer.urgency.waited_by_model)
        self.timelines.append(timeline)
        log.info("session %s %s", self.id, timeline.log_line())
        self.emit(timeline.as_event())
        self._set_state("listening")

    async def _run_answer(self, answer: Answer, audio: np.ndarray) -> None:
        try:
            await answer.play(audio)
        except asyncio.CancelledError:
            if self.answer is answer:  # cancelled by close(), not by barge-in
                answer.timeline.outcome = "interrupted"
            raise
        except StageStalled as exc:
            self._answer_error(answer, "timeout", str(exc))
        except Exception as exc:
            log.exception("session %s turn %s failed", self.id, answer.number)
            self._answer_error(answer, type(exc).__name__, str(exc) or type(exc).__name__)
        finally:
            if not self._closed and answer.confirmed:  # a preemptive answer finishes when confirmed
                self._finish_answer(answer)

    def _answer_error(self, answer: Answer, kind: str, message: str) -> None:
        answer.timeline.outcome = "error"
        if answer.confirmed:
            self.output.flush()
        log.error("session %s turn %s error (%s): %s", self.id, answer.number, kind, message)
        answer.emit(TurnError(answer.number, kind, message))  # held with the answer while preemptive

    # -- teardown --------------------------------------------------------------------------
    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self.output.flush()
        self.preemption.close()
        self.interruptions.close()
        self.arbiter.close()
        answer = self.answer
        if answer is not None and answer.task is not None:
            answer.task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await answer.task
        self.answer = None
        log.info("session %s closed after %d turns", self.id, self.turn_count)
