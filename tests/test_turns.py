import numpy as np

from agent.config import TurnsConfig
from agent.pipeline.turns import TurnDetector

from .synth import RATE, noise, silence, voiced

CFG = TurnsConfig(vad_aggressiveness=2, frame_ms=20, start_ms=100, hangover_ms=300, speculative_ms=120,
                  min_speech_ms=200, max_utterance_ms=5000, preroll_ms=200, semantic=False,
                  incomplete_silence_ms=1500, complete_threshold=0.5, fillers=[], finished_text_ends_turn=True,
                  forgive_interruptions=False, interrupt_min_ms=400, echo_margin_db=0.0)
SEMANTIC = CFG.__class__(**{**CFG.__dict__, "semantic": True})


class FakeClock:
    """Advances with the audio fed, so event times are audio times."""

    def __init__(self):
        self.t = 0.0

    def __call__(self):
        return self.t


def run(detector, clock, audio, chunk_samples=333):
    """Feed audio in odd-sized chunks (as a resampler produces them); return (event, time) pairs."""
    events = []
    for start in range(0, len(audio), chunk_samples):
        chunk = audio[start:start + chunk_samples]
        clock.t += len(chunk) / RATE
        events += [(e.kind, e) for e in detector.feed(chunk.tobytes())]
    return events


def kinds(events):
    return [k for k, _ in events if k != "speech_pause"]


def test_one_utterance_gives_start_then_end_after_the_hangover():
    clock = FakeClock()
    detector = TurnDetector(CFG, clock=clock)
    events = [(k, e) for k, e in run(detector, clock, np.concatenate([silence(500), voiced(1000), silence(1000)]))
              if k != "speech_pause"]
    assert kinds(events) == ["speech_start", "speech_end"]
    start, end = events[0][1], events[1][1]
    assert 0.5 <= start.at <= 0.5 + 0.25
    # The end is decided one hangover after the last voiced frame, not before.
    assert end.at - end.speech_ended_at >= CFG.hangover_ms / 1000 - 0.001
    assert 1.4 <= end.speech_ended_at <= 1.7
    # The utterance holds the speech (with pre-roll), not the long trailing silence.
    assert 1.0 <= len(end.audio) / RATE <= 1.0 + 0.2 + 0.2 + 0.1


def test_pause_shorter_than_hangover_stays_one_turn():
    clock = FakeClock()
    detector = TurnDetector(CFG, clock=clock)
    audio = np.concatenate([voiced(600), silence(200), voiced(600, seed=2), silence(800)])
    assert kinds(run(detector, clock, audio)) == ["speech_start", "speech_end"]


def test_pause_longer_than_hangover_splits_turns_and_the_vad_persists():
    clock = FakeClock()
    detector = TurnDetector(CFG, clock=clock)
    audio = np.concatenate([voiced(600), silence(600), voiced(600, seed=3), silence(600)])
    events = run(detector, clock, audio)
    assert kinds(events) == ["speech_start", "speech_end", "speech_start", "speech_end"]
    vad = detector._vad
    run(detector, clock, np.concatenate([voiced(500, seed=4), silence(500)]))
    assert detector._vad is vad  # one VAD for the detector's whole life


def test_quiet_noise_never_starts_a_turn():
    clock = FakeClock()
    detector = TurnDetector(CFG, clock=clock)
    assert run(detector, clock, np.concatenate([noise(3000), silence(500)])) == []


def test_blip_shorter_than_min_speech_is_discarded():
    clock = FakeClock()
    detector = TurnDetector(CFG, clock=clock)
    events = run(detector, clock, np.concatenate([silence(200), voiced(100), silence(600)]))
    assert kinds(events) in ([], ["speech_start", "speech_discarded"])


def test_max_utterance_length_forces_an_end():
    clock = FakeClock()
    detector = TurnDetector(CFG.__class__(**{**CFG.__dict__, "max_utterance_ms": 1000}), clock=clock)
    events = run(detector, clock, voiced(2500))
    assert kinds(events)[:2] == ["speech_start", "speech_end"]
    assert events[1][1].forced


def test_chunking_does_not_change_decisions():
    audio = np.concatenate([silence(300), voiced(800), silence(250), voiced(500, seed=5), silence(700)])
    results = []
    for chunk in (160, 333, 960, 4096):
        clock = FakeClock()
        detector = TurnDetector(CFG, clock=clock)
        results.append([(k, len(getattr(e, "audio", ()))) for k, e in run(detector, clock, audio, chunk)])
    assert all(r == results[0] for r in results)


def test_speculative_pause_carries_exactly_the_audio_the_end_will_carry():
    clock = FakeClock()
    detector = TurnDetector(CFG, clock=clock)
    events = run(detector, clock, np.concatenate([silence(300), voiced(900), silence(800)]))
    assert [k for k, _ in events] == ["speech_start", "speech_pause", "speech_end"]
    pause, end = events[1][1], events[2][1]
    assert np.array_equal(pause.audio, end.audio)
    assert pause.at < end.at  # the pause comes a good while before the end-of-turn decision
    assert end.at - pause.at >= (CFG.hangover_ms - CFG.speculative_ms) / 1000 - 0.03


def test_speech_after_a_pause_makes_the_speculation_stale():
    clock = FakeClock()
    detector = TurnDetector(CFG.__class__(**{**CFG.__dict__, "hangover_ms": 600}), clock=clock)
    audio = np.concatenate([voiced(700), silence(350), voiced(600, seed=7), silence(1000)])
    events = run(detector, clock, audio)
    pauses = [e for k, e in events if k == "speech_pause"]
    end = next(e for k, e in events if k == "speech_end")
    assert len(pauses) == 2
    assert not np.array_equal(pauses[0].audio, end.audio)
    assert np.array_equal(pauses[-1].audio, end.audio)
    kinds = [k for k, _ in events]
    # The user went on after the first pause: speech_resume says so, once, before the next pause.
    assert kinds == ["speech_start", "speech_pause", "speech_resume", "speech_pause", "speech_end"]


def test_with_the_end_of_turn_model_silence_alone_does_not_end_the_turn():
    clock = FakeClock()
    detector = TurnDetector(SEMANTIC, clock=clock)
    events = run(detector, clock, np.concatenate([silence(300), voiced(900), silence(800)]))
    assert [k for k, _ in events] == ["speech_start", "speech_pause"]  # waiting for the verdict
    assert detector.waiting_for_verdict


def test_a_complete_verdict_ends_the_turn_after_the_hangover():
    clock = FakeClock()
    detector = TurnDetector(SEMANTIC, clock=clock)
    events = run(detector, clock, np.concatenate([silence(300), voiced(900), silence(300)]))
    pause = events[-1][1]
    assert pause.kind == "speech_pause"
    detector.set_verdict(pause.pause_id, True)
    events = run(detector, clock, silence(600))
    assert [k for k, _ in events] == ["speech_end"]
    assert events[0][1].at - pause.speech_ended_at < (SEMANTIC.hangover_ms + 200) / 1000


def test_an_incomplete_verdict_waits_for_the_rest_up_to_the_longest_silence():
    clock = FakeClock()
    detector = TurnDetector(SEMANTIC, clock=clock)
    events = run(detector, clock, np.concatenate([silence(300), voiced(900), silence(300)]))
    pause = events[-1][1]
    detector.set_verdict(pause.pause_id, False)
    # A thinking pause longer than the hangover: the turn is still open, and the user goes on.
    assert run(detector, clock, silence(700)) == []
    events = run(detector, clock, np.concatenate([voiced(600, seed=4), silence(300)]))
    assert [k for k, _ in events] == ["speech_resume", "speech_pause"]
    # Nobody answers the second pause's question: the longest silence ends it anyway.
    events = run(detector, clock, silence(SEMANTIC.incomplete_silence_ms + 200))
    assert [k for k, _ in events] == ["speech_end"]
    assert len(events[0][1].audio) > 16000 * 1.4  # the whole utterance, both parts


def test_a_verdict_for_an_old_pause_is_ignored():
    clock = FakeClock()
    detector = TurnDetector(SEMANTIC, clock=clock)
    events = run(detector, clock, np.concatenate([silence(300), voiced(900), silence(300)]))
    first = events[-1][1]
    run(detector, clock, np.concatenate([voiced(400, seed=2), silence(300)]))  # resumed, paused again
    detector.set_verdict(first.pause_id, True)
    assert detector.waiting_for_verdict
