"""Several calls sharing models through the scheduler: with K questions at once the answers start
one after another in the order the turns ended, and an answer that started never stalls.

The brain and the voice here cost real CPU time per step on their model threads (a token: 30 ms,
a phrase: 15 ms a word), on one shared core, so the calls genuinely compete; the real models
are measured the same way by `run.py bench --concurrency K --together`."""

from __future__ import annotations

import asyncio
import time

import numpy as np

from agent.config import load_config
from agent.events import to_json
from agent.pipeline.pcm_queue import SAMPLE_RATE
from agent.runtime.model_thread import ModelThread
from agent.runtime.scheduler import ComputeScheduler
from agent.session import AgentSession
from agent.testing import ScriptedBrain, ScriptedConversation, ToneVoice

from .synth import voiced

TOKEN_S = 0.03
VOICE_S_PER_WORD = 0.015
FRAME = SAMPLE_RATE // 50


def _busy(seconds: float) -> None:
    """Hold the CPU (as a model step does), not just the thread."""
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass


class ComputingBrain(ScriptedBrain):
    def __init__(self, thread: ModelThread) -> None:
        super().__init__("Sure. Here is an answer that takes a while to think up and say out loud, phrase by phrase.")
        self.thread = thread

    def new_conversation(self):
        brain = self

        class Conversation(ScriptedConversation):
            async def reply(self, audio, on_transcript):
                on_transcript("a question")

                def tokens(stop):
                    for i, word in enumerate(brain.script.split(" ")):
                        _busy(TOKEN_S)
                        yield word if i == 0 else " " + word

                async for piece in brain.thread.stream(tokens, max_ahead=1):
                    yield piece

        return Conversation(self)


class ComputingVoice(ToneVoice):
    def __init__(self, thread: ModelThread) -> None:
        super().__init__(seconds_per_word=0.3)
        self.thread = thread

    async def speak(self, text):
        def sentences(stop):
            _busy(VOICE_S_PER_WORD * len(text.split()))
            yield None

        async for _ in self.thread.stream(sentences):
            async for chunk in super().speak(text):
                yield chunk


async def test_simultaneous_questions_are_answered_in_turn_order_and_started_answers_never_stall():
    scheduler = ComputeScheduler(cores=1)
    llm, voice_thread = ModelThread("llm", scheduler=scheduler), ModelThread("voice", scheduler=scheduler)
    config = load_config(environ={}, overrides={"turns.semantic": "false"})
    sessions = [AgentSession(config, ComputingBrain(llm), ComputingVoice(voice_thread)) for _ in range(3)]
    events: list[list[dict]] = [[] for _ in sessions]
    for session, sink in zip(sessions, events):
        session.set_event_sink(lambda e, sink=sink: sink.append(to_json(e)))
    first_audio: dict[int, float] = {}
    longest_gap = [0.0] * len(sessions)
    try:
        now = time.perf_counter()
        turns = [s.start_answer(voiced(600), now + i * 0.01, now + i * 0.01) for i, s in enumerate(sessions)]
        silent_since = [None] * len(sessions)
        started = time.perf_counter()
        tick = started
        while not all(t.task.done() for t in turns) and time.perf_counter() - started < 30:
            tick += FRAME / SAMPLE_RATE  # pull like real playout: one 20 ms frame per call per tick
            await asyncio.sleep(max(0.0, tick - time.perf_counter()))
            for i, session in enumerate(sessions):
                _frame, filled = session.output.pull(FRAME)
                at = time.perf_counter()
                if filled and i not in first_audio:
                    first_audio[i] = at - started
                if i in first_audio and not turns[i].task.done():
                    if filled:
                        if silent_since[i] is not None:
                            longest_gap[i] = max(longest_gap[i], at - silent_since[i])
                        silent_since[i] = None
                    elif silent_since[i] is None:
                        silent_since[i] = at
        assert all(t.task.done() for t in turns)
        assert [e["outcome"] for sink in events for e in sink if e["type"] == "timeline"] == ["answered"] * 3
        order = sorted(first_audio, key=first_audio.get)
        assert order == [0, 1, 2], first_audio  # whose turn ended first hears the first word first
        # One after another: the last first word comes well before all three whole answers could
        # have been made one by one (each answer alone takes ~0.9 s of compute here).
        assert first_audio[2] < 2.0, first_audio
        assert max(longest_gap) < 0.5, longest_gap  # once started, no answer stalls
        waits = [e["queue_wait_ms"] for sink in events for e in sink if e["type"] == "timeline"]
        assert max(waits) > 0  # they did wait for one another, and the timeline says how long
    finally:
        for session in sessions:
            await session.close()
        llm.shutdown()
        voice_thread.shutdown()
    assert np.isfinite(sum(first_audio.values()))


async def test_waiting_behind_another_calls_work_is_not_a_stall():
    """A turn whose model work waits for the CPU longer than brain.stall_timeout_s is not failed
    as a stalled model: the stall guard's clock stops while it waits behind other calls."""
    scheduler = ComputeScheduler(cores=1)
    llm, voice_thread = ModelThread("llm", scheduler=scheduler), ModelThread("voice", scheduler=scheduler)
    other = ModelThread("other-call", scheduler=scheduler)
    config = load_config(environ={}, overrides={"turns.semantic": "false", "brain.stall_timeout_s": "0.5"})
    events: list[dict] = []
    session = AgentSession(config, ComputingBrain(llm), ComputingVoice(voice_thread),
                           send_event=lambda e: events.append(to_json(e)))
    try:
        hog = asyncio.ensure_future(other.run(_busy, 1.5))  # another call's long step holds the only core
        await asyncio.sleep(0.05)
        turn = session.start_answer(voiced(600), time.perf_counter(), time.perf_counter())
        while not turn.task.done():
            session.output.pull(FRAME * 10)
            await asyncio.sleep(0.02)
        await hog
        timeline = next(e for e in events if e["type"] == "timeline")
        assert timeline["outcome"] == "answered", [e for e in events if e["type"] == "error"]
        assert timeline["queue_wait_ms"] > 1000
    finally:
        await session.close()
        for thread in (llm, voice_thread, other):
            thread.shutdown()
