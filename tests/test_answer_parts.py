"""The answer's parts alone: the preemptive hold and the spoken-text accounting."""

import numpy as np

from agent.answer.preemptive_hold import PreemptiveHold
from agent.answer.spoken import SpokenText
from agent.events import AgentText
from agent.pipeline.pcm_queue import PcmQueue


def test_a_preemptive_hold_keeps_events_and_audio_until_confirmed_then_sends_them_in_order():
    sent, output = [], PcmQueue(max_samples=48000)
    hold = PreemptiveHold(sent.append, output, preemptive=True)
    hold.emit(AgentText(1, "Hello"))
    hold.push(np.ones(960, dtype=np.int16), "Hello", lambda _s: None, lambda _s, _n: None)
    assert hold.holding and not sent and output.queued_samples == 0
    assert hold.queued_samples() == 960
    hold.confirm()
    assert not hold.holding and hold.confirmed.is_set()
    assert sent == [AgentText(1, "Hello")] and output.queued_samples == 960 and hold.queued_samples() == 960
    hold.emit(AgentText(1, "again"))  # live now
    assert sent[-1] == AgentText(1, "again")


def test_an_answer_that_is_not_preemptive_is_never_held():
    sent, output = [], PcmQueue(max_samples=48000)
    hold = PreemptiveHold(sent.append, output, preemptive=False)
    hold.emit(AgentText(1, "Hi"))
    assert sent and hold.confirmed.is_set()


def test_spoken_text_keeps_the_played_share_of_each_phrase():
    spoken = SpokenText()
    first, second = spoken.add("One two three four."), spoken.add("Five six.")
    spoken.queued(first, 400)
    first.complete = True
    spoken.queued(second, 200)
    spoken.played(first, 400)
    assert not spoken.playback_done.is_set()
    spoken.played(second, 100)  # flushed half way
    assert spoken.playback_done.is_set() and spoken.pending_segments == 0
    assert spoken.text() == "One two three four. Five"
