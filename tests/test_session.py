"""Session logic with the scripted brain and tone voice (no models, no network)."""

import asyncio

import numpy as np

from agent.config import load_config
from agent.events import to_json
from agent.session import AgentSession
from agent.testing import ScriptedBrain, ToneVoice

from .helpers import wait_until
from .synth import silence, voiced


def make_session(config=None, **brain_kwargs):
    events = []
    config = config or load_config(environ={})
    session = AgentSession(config, ScriptedBrain(**brain_kwargs), ToneVoice(), send_event=lambda e: events.append(to_json(e)))
    return session, events


async def pull_frames(session, n):
    """Take n frames straight from the playout queue (what recv() would send)."""
    return [session.output.pull(960) for _ in range(n)]


async def test_a_turn_streams_phrases_in_order_and_records_its_timeline():
    session, events = make_session()
    turn = session.start_answer(voiced(800), speech_end=0.0, turn_end=0.3)
    await wait_until(lambda: session.output.queued_samples > 0, 5.0, poll_s=0.005)
    # Drain the queue as the playout track would; the turn ends when everything was played.
    while not turn.task.done():
        session.output.pull(960)
        await asyncio.sleep(0)
    kinds = [e["type"] for e in events]
    assert kinds.count("transcript") == 1 and "timeline" in kinds
    spoken = " ".join(e["text"] for e in events if e["type"] == "agent_text")
    assert spoken.split() == ScriptedBrain().script.split()
    timeline = next(e for e in events if e["type"] == "timeline")
    assert timeline["outcome"] == "answered"
    assert set(timeline["ms"]) >= {"transcript", "first_token", "first_phrase", "first_pcm", "first_frame"}
    assert session.conversation.history[-1] == ("assistant", ScriptedBrain().script)
    assert session.state == "listening"
    await session.close()


async def test_barge_in_flushes_at_once_and_keeps_only_the_played_text():
    session, events = make_session()
    session.start_answer(voiced(800), speech_end=0.0, turn_end=0.3)
    await wait_until(lambda: session.output.queued_samples > 48000, 5.0, poll_s=0.005)
    frames = await pull_frames(session, 30)  # 0.6 s of the answer was played
    assert all(audible for _, audible in frames)
    session.barge_in()
    samples, audible = session.output.pull(960)
    assert not audible and not samples.any()  # the very next frame is silence
    await asyncio.sleep(0.05)
    assert not session.output.pull(960)[1]  # and nothing more gets queued
    said = session.conversation.history[-1][1]
    full = ScriptedBrain().script
    played = said.removesuffix("…")
    assert played and full.startswith(played) and len(played) < len(full)
    # cut off inside a sentence, the history says so ("…"); after a whole sentence it needs not
    assert said.endswith("…") != (played[-1] in ".!?"), said
    assert any(e["type"] == "barge_in" for e in events)
    assert next(e for e in events if e["type"] == "timeline")["outcome"] == "interrupted"
    await session.close()


async def test_user_speech_through_the_turn_detector_starts_a_turn_and_interrupts_it():
    session, events = make_session()
    pcm = np.concatenate([silence(300), voiced(700), silence(500)])
    for event in session.user_turns.feed(pcm.tobytes()):
        session.on_turn_event(event)
    await wait_until(lambda: session.output.queued_samples > 0, 5.0, poll_s=0.005)
    assert session.turn_count == 1
    # A short sound over the agent: playout pauses at once, nothing is lost, then it resumes.
    feed(session, voiced(200, seed=9))  # (webrtcvad's overhang adds ~100 ms of voiced time)
    assert session.output.paused and session.output.pull(960)[1] == 0
    queued = session.output.queued_samples
    feed(session, silence(500))
    assert not session.output.paused and session.output.queued_samples == queued
    assert session.barge_ins == 0
    interruptions = [e for e in events if e["type"] == "interruption"]
    assert interruptions == [{"type": "interruption", "turn": 1, "outcome": "resumed", "reason": "too short", "heard": ""}]
    # Real words over the agent: the answer stops, and the new words are answered.
    feed(session, np.concatenate([voiced(1200, seed=5), silence(500)]))
    await wait_until(lambda: session.barge_ins == 1, 5.0, poll_s=0.005)
    assert [e["outcome"] for e in events if e["type"] == "interruption"] == ["resumed", "confirmed"]
    assert session.turn_count == 2
    await session.close()


async def test_a_brain_failure_is_an_error_event_and_the_session_goes_on():
    session, events = make_session()

    class Exploding(type(session.conversation)):
        async def reply(self, audio, on_transcript):
            on_transcript("hello")
            yield "Well"
            raise RuntimeError("boom")

    good = session.conversation
    session.conversation = Exploding(session.brain)
    turn = session.start_answer(voiced(500), 0.0, 0.3)
    await asyncio.wait_for(turn.task, 5)
    error = next(e for e in events if e["type"] == "error")
    assert error["message"] == "boom" and error["turn"] == 1
    assert session.state == "listening"
    session.conversation = good
    turn = session.start_answer(voiced(500), 0.0, 0.3)
    await wait_until(lambda: session.output.queued_samples > 0, 5.0, poll_s=0.005)
    session.output.flush()
    await session.close()


def feed(session, pcm):
    for event in session.user_turns.feed(pcm.tobytes()):
        session.on_turn_event(event)


async def test_a_preemptive_answer_is_held_until_the_turn_ends_then_released_at_once():
    session, events = make_session()
    feed(session, np.concatenate([silence(300), voiced(700), silence(250)]))  # a pause (webrtcvad adds ~120 ms): not yet the end
    assert session.preemptions["started"] == 1 and session.turn_count == 0
    await asyncio.sleep(0.2)  # the scripted answer is ready by now, but held
    assert session.output.queued_samples == 0
    assert not [e for e in events if e["type"] in ("transcript", "agent_text", "timeline")]
    feed(session, silence(400))  # the hangover ends the turn with the same audio
    assert session.preemptions["hits"] == 1 and session.turn_count == 1
    assert session.output.queued_samples > 0  # released at once, no new work
    assert [e["type"] for e in events if e["type"] == "transcript"] == ["transcript"]
    while session.turn_count == 1 and session.state != "listening" or session.output.queued_samples:
        session.output.pull(960)
        await asyncio.sleep(0)
    timeline = next(e for e in events if e["type"] == "timeline")
    assert timeline["outcome"] == "answered" and timeline["preemptive"] is True
    assert session.conversation.history == [("user", "(stub)"), ("assistant", ScriptedBrain().script)]
    await session.close()


async def test_a_preemptive_answer_is_discarded_when_the_user_goes_on():
    session, events = make_session(load_config(environ={}).replace(**{"turns.hangover_ms": 600, "turns.semantic": False}))
    feed(session, np.concatenate([silence(300), voiced(700), silence(250)]))  # pause -> preemptive answer
    assert session.preemptions["started"] == 1
    await asyncio.sleep(0.2)
    feed(session, voiced(500, seed=3))  # ... and the user goes on
    assert session.preemptions["discarded"] == 1
    assert session.conversation.history == []  # rolled back: as if never asked
    discarded = [e for e in events if e["type"] == "preemption_discarded"]
    assert len(discarded) == 1 and discarded[0]["ran_ms"] >= 150
    assert session.output.queued_samples == 0
    assert not [e for e in events if e["type"] in ("transcript", "agent_text", "timeline")]
    feed(session, silence(900))  # now the turn ends: one answer, to the whole utterance
    await wait_until(lambda: session.output.queued_samples > 0, 5.0, poll_s=0.005)
    assert session.turn_count == 1
    assert session.preemptions["hits"] == 1  # the second pause's answer was the one used
    assert [m[0] for m in session.conversation.history] == ["user"]
    await session.close()


class Hears(ScriptedBrain):
    """The scripted brain, whose transcript of every utterance is `heard`."""

    def __init__(self, heard: str) -> None:
        super().__init__()
        self.heard = heard

    def new_conversation(self):
        conversation = super().new_conversation()
        reply, heard = conversation.reply, self.heard

        async def hearing(audio, on_transcript):
            async for piece in reply(audio, lambda _text: on_transcript(heard)):
                yield piece
        conversation.reply = hearing
        return conversation


async def test_a_turn_of_only_fillers_or_noise_starts_no_answer():
    from agent.pipeline.transcripts import is_only_filler

    fillers = load_config(environ={}).turns.fillers
    for text in ("Mm-hmm.", "Uh huh", "(coughing)", "[BLANK_AUDIO]", "", "Yeah, okay.", "Mmm-hmm.", "Hmmm...",
                 "Mhm", "(unclear: Come on.)"):
        assert is_only_filler(text, fillers), text
    for text in ("Yeah, what is the capital of France?", "Right now?", "Okay, stop.", "Hmm, tell me more.",
                 "Uh-uh.", "Come on."):
        assert not is_only_filler(text, fillers), text

    events = []
    session = AgentSession(load_config(environ={}), Hears("Mm-hmm."), ToneVoice(), send_event=lambda e: events.append(to_json(e)))
    turn = session.start_answer(voiced(500), 0.0, 0.2)
    await asyncio.wait_for(turn.task, 5)
    assert session.output.queued_samples == 0  # nothing said back
    timeline = next(e for e in events if e["type"] == "timeline")
    assert timeline["outcome"] == "ignored"
    assert session.conversation.history == []  # and nothing kept
    await session.close()


async def test_a_turn_of_words_whisper_was_unsure_of_is_still_answered():
    """Over the agent an unsure short transcript is noise; on a turn of its own it is the caller's
    words ("Great, thank you." came back "(unclear: ...)" and got no answer), unless they are fillers."""
    for heard, answered in (("(unclear: Great, thank you.)", True), ("(unclear: Mm-hmm.)", False)):
        events = []
        session = AgentSession(load_config(environ={}), Hears(heard), ToneVoice(), send_event=lambda e: events.append(to_json(e)))
        turn = session.start_answer(voiced(500), 0.0, 0.2)
        if answered:
            await wait_until(lambda: session.output.queued_samples > 0, 5.0, poll_s=0.005)  # it speaks
        else:
            await asyncio.wait_for(turn.task, 5)
            assert next(e for e in events if e["type"] == "timeline")["outcome"] == "ignored"
        await session.close()


class DoubtfulEndOfTurn:
    """A stand-in end-of-turn model that always calls the utterance unfinished."""

    async def verdict(self, audio):
        from agent.pipeline.end_of_turn import Verdict

        return Verdict(False, 0.1, 1.0)


async def test_an_unfinished_verdict_holds_the_turn_unless_the_words_sound_finished():
    for transcript, ends_at_hangover in (("What do bees make from flower nectar?", True),
                                         ("What is the capital of?", False)):
        events = []
        session = AgentSession(load_config(environ={}), Hears(transcript), ToneVoice(),
                               send_event=lambda e: events.append(to_json(e)), end_of_turn=DoubtfulEndOfTurn())
        feed(session, np.concatenate([silence(300), voiced(700), silence(200)]))  # the pause
        await asyncio.sleep(0.1)  # the verdict and the preemptive transcript arrive
        feed(session, silence(400))  # past the hangover, far short of incomplete_silence_ms
        assert (session.turn_count == 1) is ends_at_hangover, transcript
        verdicts = [e for e in events if e["type"] == "end_of_turn"]
        assert verdicts[0]["complete"] is False
        assert [v["source"] for v in verdicts[1:]] == (["transcript"] if ends_at_hangover else [])
        await session.close()


async def test_a_backchannel_over_the_agent_pauses_the_answer_then_it_resumes_intact():
    class HearsMmHmm(ScriptedBrain):
        def new_conversation(self):
            conversation = super().new_conversation()

            async def transcribe(audio):
                return "Mm-hmm."
            conversation.transcribe = transcribe
            return conversation

    events = []
    session = AgentSession(load_config(environ={}), HearsMmHmm(), ToneVoice(),
                           send_event=lambda e: events.append(to_json(e)))
    feed(session, np.concatenate([silence(300), voiced(700), silence(500)]))
    await wait_until(lambda: session.output.queued_samples > 48000, 5.0, poll_s=0.005)
    session.output.pull(960 * 10)  # a little of the answer has been heard
    queued = session.output.queued_samples
    feed(session, np.concatenate([voiced(600, seed=11), silence(500)]))  # "mm-hmm" over the agent
    assert session.output.paused
    await wait_until(lambda: not session.output.paused, 5.0, poll_s=0.005)
    assert [e for e in events if e["type"] == "interruption"][-1]["reason"] == "backchannel"
    assert session.output.queued_samples >= queued  # nothing lost: it goes on where it paused
    assert session.barge_ins == 0 and session.turn_count == 1
    assert session.conversation.history == [("user", "(stub)")]  # the "mm-hmm" left no trace
    await session.close()
