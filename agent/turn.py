"""One turn of the agent's answer: brain pieces -> phrases -> voice -> the playout queue.

An `AnswerTurn` runs as two concurrent halves: the phrase producer cuts the brain's streamed
text into speakable phrases, while the voice consumer synthesises earlier phrases and queues
their audio. It also keeps the spoken-text accounting (how much of each phrase was actually
played, so the history holds only what the user heard) and the turn's timeline. Cancelling its
task (barge-in, close) stops the brain and the voice at their next item.

A turn can start `held` (a preemptive answer, started at a pause before the end of the user's
turn is certain): it transcribes, thinks and synthesises as usual, but keeps its audio and its
events to itself until `release()` (the turn really ended) sends them on at once. A held turn
that is cancelled instead leaves nothing behind: nothing was played or shown, and the session
rolls the conversation back.

Tools: the brain's reply comes in rounds (see `agent.brains.base`). A round's text is cut into
phrases and spoken as usual, its last phrase as soon as the round ends, so "Let me check." is
heard while the tool runs. The round's tool calls then run through the session's `ToolBox`
(validated, under `tools.timeout_s`), each a `tool_call` and a `tool_result` event and a span in
the timeline, and the brain's next round reads their results. A held turn runs no tool: a tool
may have side effects (book a slot, send a message), and a preemptive answer may be thrown
away, so its calls wait for `release()` (its text before the call is ready and held
meanwhile); discarded, it never called anything. A tool that raises or times out (or a model
asking for more than `tools.max_rounds` rounds) ends the answer with `tools.apology` spoken and
an `error` event; a barge-in cancels the turn's task and with it the running tool, which sees
the CancelledError.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from dataclasses import dataclass
from typing import AsyncIterator, Callable

import numpy as np

from agent.brains.base import Conversation, ReplyItem, ToolCall, ToolResult
from agent.config import Config
from agent.events import AgentText, Event, ToolCallFinished, ToolCallStarted, Transcript, TurnError
from agent.pipeline.audio import StreamResampler
from agent.pipeline.pcm_queue import SAMPLE_RATE as PLAYOUT_RATE, PcmQueue, QueueFull, Segment
from agent.pipeline.phrases import PhraseChunker, phrases_from_pieces
from agent.pipeline.timeline import TurnTimeline
from agent.pipeline.transcripts import is_only_filler
from agent.runtime.scheduler import Urgency
from agent.tools.toolbox import ToolBox
from agent.voices.base import Voice

log = logging.getLogger(__name__)


class StageStalled(TimeoutError):
    """A model produced nothing for longer than brain.stall_timeout_s."""


QUEUE_CHECK_S = 0.25  # how often the stall guard looks whether the stage is waiting behind other calls


async def stall_guard(stream: AsyncIterator, timeout_s: float, stage: str,
                      urgency: Urgency | None = None) -> AsyncIterator:
    """Yield from `stream`, failing if it goes `timeout_s` without producing anything (a hung or
    stalled model). A long but steady answer is never cut, and while the stage's work waits
    behind other calls' (`urgency.waiting`: for the CPU or an LLM slot) the clock does not run."""
    loop = asyncio.get_running_loop()
    async with contextlib.aclosing(stream) as items:
        iterator = items.__aiter__()
        while True:
            try:
                # asyncio.timeout, not wait_for: in Python 3.11 wait_for can swallow a cancellation
                # that races with a result, and a barge-in must never let one more chunk through.
                async with asyncio.timeout(timeout_s) as window:
                    def extend_while_queued() -> None:
                        nonlocal check
                        if urgency is not None and urgency.waiting:
                            window.reschedule(loop.time() + timeout_s)
                        check = loop.call_later(QUEUE_CHECK_S, extend_while_queued)

                    check = loop.call_later(QUEUE_CHECK_S, extend_while_queued)
                    try:
                        item = await iterator.__anext__()
                    finally:
                        check.cancel()
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


class AnswerTurn:
    """The agent's answer to one user utterance (see the module docstring)."""

    def __init__(self, number: int, conversation: Conversation, voice: Voice, output: PcmQueue, config: Config,
                 emit: Callable[[Event], None], on_audible: Callable[[], None],
                 clock: Callable[[], float] = time.perf_counter, held: bool = False,
                 on_transcript: Callable[[str], None] | None = None, tools: ToolBox | None = None) -> None:
        self.timeline = TurnTimeline(number)
        self.timeline.preemptive = held
        self.conversation = conversation
        self.voice = voice
        self.output = output
        self.config = config
        self._emit = emit
        self.on_audible = on_audible  # the first frame of the answer is being played
        self.clock = clock
        self.started_at = clock()
        self.task: asyncio.Task | None = None
        self.phrases: list[SpokenPhrase] = []
        self.playback_done = asyncio.Event()
        self.pending_segments = 0
        self.synthesizing = False
        self.held = held
        self.on_transcript = on_transcript  # the session hears the words at once, held or not
        self.tools = tools
        self._released = asyncio.Event()  # tools run only once the turn is confirmed
        if not held:
            self._released.set()
        self._held_events: list[Event] = []
        self._held_audio: list[tuple[SpokenPhrase, np.ndarray, Callable, Callable]] = []
        self._held_samples = 0
        self.urgency = Urgency(self.deadline, f"turn {number}")  # its model work's place in the queue

    @property
    def number(self) -> int:
        return self.timeline.turn

    def emit(self, event: Event) -> None:
        if self.held:
            self._held_events.append(event)
        else:
            self._emit(event)

    def release(self) -> None:
        """The user's turn really ended: send what a held turn kept back, and go on live."""
        if not self.held:
            return
        self.held = False
        self._released.set()
        events, self._held_events = self._held_events, []
        for event in events:
            self._emit(event)
        audio, self._held_audio = self._held_audio, []
        self._held_samples = 0
        for phrase, samples, on_start, on_done in audio:
            self._push(phrase, samples, on_start, on_done)

    def deadline(self) -> float:
        """When this answer's next model step is due (the scheduler serves the earliest first).

        Before any audio is queued: the end of the user's turn (a held answer: when the turn
        would end) plus `scheduler.first_audio_budget_s`, the wait for a first word a caller
        accepts. Once audio is queued: `scheduler.refill_lead_s` before it runs out, so the next
        phrase is ready in time. A caller whose answer is playing therefore goes before one still
        within the first-word budget only when the playing one would otherwise fall silent, and a
        caller past that budget goes before anyone with more than the lead queued."""
        scheduler = self.config.scheduler
        marks = self.timeline.marks
        start = marks.get("turn_end")
        if start is None:
            start = marks.get("speech_end", self.started_at) + self.config.turns.hangover_ms / 1000.0
        queued_s = self.queued_samples() / PLAYOUT_RATE
        if queued_s == 0:
            return start + scheduler.first_audio_budget_s
        return max(self.clock(), start) + queued_s - scheduler.refill_lead_s

    def queued_samples(self) -> int:
        """Audio made but not yet played (held or in the output queue)."""
        return self._held_samples + self.output.queued_samples

    def spoken_text(self) -> str:
        """The words of the answer that were actually played."""
        return " ".join(t for t in (p.spoken_text() for p in self.phrases) if t)

    def cancel(self) -> None:
        if self.task is not None:
            self.task.cancel()

    async def play(self, audio: np.ndarray) -> None:
        """Answer `audio` (int16, 16 kHz) and return when the answer has been played."""
        await self._answer(audio)
        if self.pending_segments:
            await self.playback_done.wait()
        if not self.phrases and self.timeline.outcome == "pending":
            self.timeline.outcome = "empty"

    async def _answer(self, audio: np.ndarray) -> None:
        timeline = self.timeline
        phrase_queue: asyncio.Queue[str | None] = asyncio.Queue()
        # Set when the first phrase has audio. Until then the producer reads no more text, so the
        # brain pauses (backpressure) and the voice has the CPU for the first phrase.
        first_audio = asyncio.Event()

        def on_transcript(text: str) -> bool:
            timeline.mark("transcript", self.clock())
            self.emit(Transcript(timeline.turn, text))
            if self.on_transcript is not None:
                self.on_transcript(text)
            if is_only_filler(text, self.config.turns.fillers):
                timeline.outcome = "ignored"
                return False
            return True

        async def produce_phrases() -> None:
            chunker = PhraseChunker(self.config.phrases, clock=time.monotonic)
            ahead = PLAYOUT_RATE * self.config.phrases.timeout_ms // 1000

            def voice_hungry() -> bool:
                """Nothing left to synthesise and less than a timeout's worth of audio queued."""
                return phrase_queue.empty() and not self.synthesizing and self.queued_samples() < ahead

            async def say(phrase: str) -> None:
                timeline.mark("first_phrase", self.clock())
                await phrase_queue.put(phrase)
                await first_audio.wait()

            stream: AsyncIterator[ReplyItem] = self.conversation.reply(audio, on_transcript)
            rounds = 0
            try:
                while True:
                    calls: list[ToolCall] = []
                    pieces = self._mark_first(
                        _texts(stall_guard(stream, self.config.brain.stall_timeout_s, "brain", self.urgency), calls),
                        "first_token")
                    # The round's end flushes its last phrase: spoken while the tools run.
                    async with contextlib.aclosing(pieces), \
                            contextlib.aclosing(phrases_from_pieces(pieces, chunker, voice_hungry)) as phrases:
                        async for phrase in phrases:
                            await say(phrase)
                    if not calls:
                        return
                    rounds += 1
                    if rounds > self.config.tools.max_rounds:
                        await self._apologise(say, "tool_rounds", f"the model asked for tools more than "
                                                                  f"{self.config.tools.max_rounds} times in one answer")
                        return
                    results = await self._run_tools(calls)
                    failed = next((r for r in results if r.status in ("error", "timeout")), None)
                    if failed is not None:
                        await self._apologise(say, f"tool_{failed.status}", failed.content)
                        return
                    stream = self.conversation.continue_reply(results)
            finally:
                await phrase_queue.put(None)

        producer = asyncio.create_task(produce_phrases())
        try:
            await self._speak_phrases(phrase_queue, first_audio)
            await producer  # re-raises a brain failure
        finally:
            if not producer.done():
                producer.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await producer

    async def _run_tools(self, calls: list[ToolCall]) -> list[ToolResult]:
        """Run the round's calls in order (a failure stops the rest: the answer ends with the
        apology). A held turn waits here until it is confirmed: no tool runs for an answer that
        may be thrown away."""
        await self._released.wait()
        results: list[ToolResult] = []
        for call in calls:
            result = await self._run_tool(call)
            results.append(result)
            if result.status in ("error", "timeout"):
                break
        return results

    async def _run_tool(self, call: ToolCall) -> ToolResult:
        span = self.timeline.tool_started(call.name, self.clock())
        self.emit(ToolCallStarted(self.number, call.id, call.name, _arguments_for_event(call.arguments)))
        try:
            if self.tools is None:
                result = ToolResult(call, "unknown", f"error: there is no tool named {call.name!r} (no tools are on)")
            else:
                result = await self.tools.run(call)
        except asyncio.CancelledError:  # barge-in or close: the tool was cancelled with the turn
            span.ended, span.status = self.clock(), "cancelled"
            self.emit(ToolCallFinished(self.number, call.id, call.name, "cancelled", "cancelled",
                                       round((span.ended - span.started) * 1000.0, 1)))
            raise
        span.ended, span.status = self.clock(), result.status
        log.info("turn %s: tool %s %s in %.0f ms", self.number, call.name, result.status, result.ms)
        self.emit(ToolCallFinished(self.number, call.id, call.name, result.status, result.content, result.ms))
        return result

    async def _apologise(self, say: Callable, kind: str, message: str) -> None:
        """A tool failed: say so briefly (the model is not asked again) and report the error."""
        self.timeline.outcome = "error"
        log.error("turn %s error (%s): %s", self.number, kind, message)
        self.emit(TurnError(self.number, kind, message))
        await say(self.config.tools.apology)

    async def _speak_phrases(self, phrase_queue: asyncio.Queue[str | None], first_audio: asyncio.Event) -> None:
        upsampler = StreamResampler(PLAYOUT_RATE)
        try:
            while (text := await phrase_queue.get()) is not None:
                phrase = SpokenPhrase(text)
                self.phrases.append(phrase)
                started = self.clock()
                self.synthesizing = True
                speech = stall_guard(self.voice.speak(text), self.config.brain.stall_timeout_s, "voice", self.urgency)
                async with contextlib.aclosing(speech) as chunks:
                    async for chunk in chunks:
                        self.timeline.mark("first_pcm", self.clock())
                        self._queue_audio(phrase, upsampler.samples(chunk, self.voice.sample_rate))
                        first_audio.set()
                self.synthesizing = False
                phrase.complete = True
                first_audio.set()
                log.debug("turn %s: voiced %r (%.0f ms of audio) in %.0f ms", self.number, text,
                          phrase.queued * 1000 / PLAYOUT_RATE, (self.clock() - started) * 1000)
            if self.phrases:
                self._queue_audio(self.phrases[-1], upsampler.finish())
        finally:
            first_audio.set()

    def _queue_audio(self, phrase: SpokenPhrase, samples: np.ndarray) -> None:
        if len(samples) == 0:
            return
        first_segment = phrase.queued == 0

        def on_start(_segment: Segment) -> None:
            if self.timeline.mark("first_frame", self.clock()):
                self.on_audible()
            if first_segment:
                self.emit(AgentText(self.number, phrase.text))

        def on_done(_segment: Segment, played: int) -> None:
            phrase.played += played
            self.pending_segments -= 1
            if self.pending_segments == 0:
                self.playback_done.set()

        phrase.queued += len(samples)
        self.pending_segments += 1
        self.playback_done.clear()
        if self.held:
            self._held_audio.append((phrase, samples, on_start, on_done))
            self._held_samples += len(samples)
        else:
            self._push(phrase, samples, on_start, on_done)

    def _push(self, phrase: SpokenPhrase, samples: np.ndarray, on_start, on_done) -> None:
        try:
            self.output.push(samples, tag=phrase.text, on_start=on_start, on_done=on_done)
        except QueueFull as exc:
            raise RuntimeError(f"playout queue full: {exc}") from exc

    async def _mark_first(self, pieces: AsyncIterator[str], stage: str) -> AsyncIterator[str]:
        async with contextlib.aclosing(pieces) as stream:
            async for piece in stream:
                self.timeline.mark(stage, self.clock())
                yield piece



async def _texts(items: AsyncIterator[ReplyItem], calls: list[ToolCall]) -> AsyncIterator[str]:
    """The text of one round of a reply; its tool calls are collected into `calls`."""
    async with contextlib.aclosing(items) as stream:
        async for item in stream:
            if isinstance(item, ToolCall):
                calls.append(item)
            elif item:
                yield item


def _arguments_for_event(raw: str) -> dict | str:
    try:
        value = json.loads(raw)
    except json.JSONDecodeError:
        return raw
    return value if isinstance(value, dict) else raw
