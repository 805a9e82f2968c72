"""The answer's text half: the brain's reply, round by round, cut into speakable phrases.

A round's text is cut into phrases and handed to the voice as it comes, its last phrase as soon
as the round ends, so "Let me check." is heard while the tool runs. The round's tool calls then
run (`ToolRounds`) and the brain's next round reads their results. A tool that raises or times
out, or a model asking for more than `tools.max_rounds` rounds, ends the answer with
`tools.apology` spoken and an `error` event.
"""

from __future__ import annotations

import contextlib
import time
from typing import AsyncIterator, Callable

import numpy as np

from agent.brains.base import Conversation, ReplyItem, ToolCall
from agent.config import Config
from agent.events import Event, Transcript
from agent.pipeline.pcm_queue import SAMPLE_RATE as PLAYOUT_RATE
from agent.pipeline.phrases import PhraseChunker, phrases_from_pieces
from agent.pipeline.timeline import TurnTimeline
from agent.pipeline.transcripts import is_only_filler, unclear_words_kept
from agent.runtime.scheduler import Urgency

from .stall_guard import stall_guard
from .tool_rounds import ToolRounds, first_failure
from .voicing import PhraseVoicer


class PhraseProducer:
    def __init__(self, conversation: Conversation, config: Config, timeline: TurnTimeline, voicer: PhraseVoicer,
                 tool_rounds: ToolRounds, emit: Callable[[Event], None], urgency: Urgency,
                 clock: Callable[[], float], on_transcript: Callable[[str], None] | None) -> None:
        self.conversation = conversation
        self.config = config
        self.timeline = timeline
        self.voicer = voicer
        self.tool_rounds = tool_rounds
        self.emit = emit
        self.urgency = urgency
        self.clock = clock
        self.on_transcript = on_transcript  # the session hears the words at once, preemptive or not

    def heard(self, text: str) -> bool:
        """What the user said, from the brain: shown, and answered unless it is only fillers (words
        whisper was unsure of count: this turn is not a sound over the agent)."""
        self.timeline.mark("transcript", self.clock())
        self.emit(Transcript(self.timeline.turn, text))
        if self.on_transcript is not None:
            self.on_transcript(text)
        if is_only_filler(unclear_words_kept(text), self.config.turns.fillers):
            self.timeline.outcome = "ignored"
            return False
        return True

    async def run(self, audio: np.ndarray) -> None:
        """Answer `audio`, handing every phrase to the voicer (which is told when there are no more)."""
        try:
            await self._rounds(audio)
        finally:
            await self.voicer.end()

    async def _rounds(self, audio: np.ndarray) -> None:
        chunker = PhraseChunker(self.config.phrases, clock=time.monotonic)
        ahead = PLAYOUT_RATE * self.config.phrases.timeout_ms // 1000
        max_rounds = self.config.tools.max_rounds
        stream: AsyncIterator[ReplyItem] = self.conversation.reply(audio, self.heard)
        rounds = 0
        while True:
            calls: list[ToolCall] = []
            guarded = stall_guard(stream, self.config.brain.stall_timeout_s, "brain", self.urgency)
            pieces = self._mark_first(_texts(guarded, calls), "first_token")
            # The round's end flushes its last phrase: spoken while the tools run.
            async with contextlib.aclosing(pieces), contextlib.aclosing(
                    phrases_from_pieces(pieces, chunker, lambda: self.voicer.hungry(ahead))) as phrases:
                async for phrase in phrases:
                    await self.voicer.say(phrase)
            if not calls:
                return
            rounds += 1
            if rounds > max_rounds:
                await self._apologise("tool_rounds", f"the model asked for tools more than {max_rounds} times "
                                                     f"in one answer")
                return
            results = await self.tool_rounds.run(calls)
            failed = first_failure(results)
            if failed is not None:
                await self._apologise(f"tool_{failed.status}", failed.content)
                return
            stream = self.conversation.continue_reply(results)

    async def _apologise(self, kind: str, message: str) -> None:
        """A tool failed: say so briefly (the model is not asked again) and report the error."""
        self.tool_rounds.failed(kind, message)
        await self.voicer.say(self.config.tools.apology)

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
