"""The session's parts alone: the echo gate, the interruption judge, the end-of-turn arbiter and
preemption, each driven directly (no session, no models)."""

import asyncio

import numpy as np

from agent.config import load_config
from agent.pipeline.end_of_turn import Verdict
from agent.pipeline.pcm_queue import PcmQueue
from agent.pipeline.turns import TurnDetector, UserTurnEnded
from agent.session.echo_gate import EchoGate
from agent.session.end_of_turn_arbiter import EndOfTurnArbiter
from agent.session.interruptions import InterruptionJudge
from agent.session.preemption import Preemption

from .synth import voiced

TURNS = load_config(environ={}).turns


def tone(level: float, n: int = 960) -> np.ndarray:
    return (np.sin(np.arange(n) * 0.1) * level).astype(np.int16)


def played(queue: PcmQueue, level: float) -> None:
    queue.push(tone(level, 4800))
    for _ in range(5):
        queue.pull(960)


def test_the_echo_gate_holds_speech_far_quieter_than_what_was_played_until_it_grows_louder():
    output = PcmQueue(max_samples=48000)
    gate = EchoGate(margin_db=15.0, output=output)
    played(output, 20000)
    gate.heard(tone(300))
    assert gate.speech_started() and gate.active  # ~36 dB quieter: the agent's own voice
    assert not gate.grew_louder()
    gate.heard(tone(20000))
    assert gate.grew_louder() and not gate.active  # as loud as the agent: the user
    gate.ended()
    assert not gate.active


def test_the_echo_gate_is_off_with_no_margin_or_nothing_played():
    output = PcmQueue(max_samples=48000)
    gate = EchoGate(margin_db=0.0, output=output)
    played(output, 20000)
    gate.heard(tone(10))
    assert not gate.speech_started()
    assert not EchoGate(margin_db=15.0, output=PcmQueue(max_samples=48000)).speech_started()


class FakeAnswer:
    def __init__(self, number=1):
        self.number = number
        self.cancelled = False
        self.started_at = 0.0

    def cancel(self):
        self.cancelled = True


def ended(voiced_ms: int) -> UserTurnEnded:
    return UserTurnEnded(at=1.0, speech_ended_at=0.9, audio=voiced(voiced_ms), voiced_ms=voiced_ms)


def make_judge(heard: str | None):
    events, answered = [], []
    output = PcmQueue(max_samples=48000)

    async def transcribe(_audio):
        return heard

    judge = InterruptionJudge(TURNS, output, events.append, transcribe,
                              lambda work, _what: asyncio.ensure_future(work), answered.append)
    return judge, output, events, answered


async def test_a_filler_over_the_answer_resumes_it_and_words_confirm_the_interruption():
    judge, output, events, answered = make_judge("Mm-hmm.")
    judge.pause(FakeAnswer())
    assert output.paused and judge.pending
    judge.judge(ended(TURNS.interrupt_min_ms + 200))
    await asyncio.sleep(0.01)
    assert not output.paused and not judge.pending and not answered
    assert (events[-1].outcome, events[-1].reason) == ("resumed", "backchannel")

    judge, output, events, answered = make_judge("Wait, stop.")
    judge.pause(FakeAnswer())
    event = ended(TURNS.interrupt_min_ms + 200)
    judge.judge(event)
    assert output.paused  # still paused while the transcript is awaited
    await asyncio.sleep(0.01)
    assert answered == [event] and not judge.pending
    assert (events[-1].outcome, events[-1].heard) == ("confirmed", "Wait, stop.")


async def test_a_short_sound_resumes_at_once_and_a_closed_judge_decides_nothing():
    judge, output, events, answered = make_judge("Stop.")
    judge.pause(FakeAnswer())
    judge.judge(ended(TURNS.interrupt_min_ms // 2))
    assert not output.paused and events[-1].reason == "too short"

    judge, output, events, answered = make_judge("Stop.")
    judge.pause(FakeAnswer())
    judge.judge(ended(TURNS.interrupt_min_ms + 200))
    judge.close()
    await asyncio.sleep(0.01)
    assert not answered and not events


class FakeModel:
    def __init__(self, complete: bool):
        self.complete = complete

    async def verdict(self, _audio):
        return Verdict(self.complete, 0.9 if self.complete else 0.1, 5.0)


def make_arbiter(complete: bool):
    detector = TurnDetector(TURNS.__class__(**{**TURNS.__dict__, "semantic": True}))
    verdicts: dict[int, bool] = {}
    detector.set_verdict = lambda pause_id, value: verdicts.__setitem__(pause_id, value)
    events = []
    arbiter = EndOfTurnArbiter(FakeModel(complete), detector, TURNS, events.append,
                               lambda work, _what: asyncio.ensure_future(work))
    return arbiter, verdicts, events


async def test_the_arbiter_passes_the_models_verdict_and_a_finished_transcript_overrules_doubt():
    arbiter, verdicts, events = make_arbiter(complete=True)
    arbiter.ask(voiced(500), 1, over_agent=False)
    await asyncio.sleep(0.01)
    assert verdicts == {1: True} and events[-1].source == "audio"
    assert arbiter.take().complete and arbiter.take() is None

    arbiter, verdicts, events = make_arbiter(complete=False)
    arbiter.ask(voiced(500), 2, over_agent=False)
    await asyncio.sleep(0.01)
    assert verdicts == {2: False}
    arbiter.heard(2, "What is the capital of")  # unfinished words: no effect
    assert verdicts == {2: False}
    arbiter.heard(2, "What is the capital of France?")
    assert verdicts == {2: True} and events[-1].source == "transcript" and arbiter.verdict.complete


async def test_over_the_agent_the_arbiter_ends_the_turn_without_asking_the_model():
    arbiter, verdicts, events = make_arbiter(complete=False)
    arbiter.ask(voiced(500), 3, over_agent=True)
    assert verdicts == {3: True} and not events


class FakeConversation:
    def __init__(self):
        self.rollbacks = 0

    def rollback(self):
        self.rollbacks += 1


def test_preemption_confirms_only_the_same_audio_and_a_discard_rolls_back():
    conversation, events = FakeConversation(), []
    preemption = Preemption(conversation, events.append, clock=lambda: 0.25)
    audio, answer = voiced(500), FakeAnswer()
    preemption.start(audio, answer)
    assert preemption.answer is answer
    assert preemption.matches(audio.copy()) and not preemption.matches(voiced(600))
    assert preemption.take() is answer and preemption.answer is None
    assert preemption.counts == {"started": 1, "hits": 1, "discarded": 0}

    other = FakeAnswer(2)
    preemption.start(audio, other)
    preemption.discard()
    assert other.cancelled and conversation.rollbacks == 1 and preemption.answer is None
    assert events[-1].ran_ms == 250.0 and preemption.wasted_s == 0.25
    preemption.discard()  # nothing in flight: nothing happens
    assert preemption.counts == {"started": 2, "hits": 1, "discarded": 1}
