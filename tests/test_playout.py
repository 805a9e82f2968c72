import numpy as np
import pytest

from agent.pipeline.pcm_queue import PcmQueue, QueueFull
from signaling.playout_track import SAMPLE_RATE, PlayoutTrack


class SimulatedTime:
    """A clock and a sleep that advances it, with optional extra delay per sleep (scheduler jitter)."""

    def __init__(self, jitter_s=0.0):
        self.now = 100.0
        self.jitter_s = jitter_s
        self.sleeps = 0

    def clock(self):
        return self.now

    async def sleep(self, seconds):
        self.sleeps += 1
        self.now += seconds + self.jitter_s


def tone(n, value=1000):
    return np.full(n, value, dtype=np.int16)


async def test_no_drift_over_a_simulated_minute_with_jitter():
    sim = SimulatedTime(jitter_s=0.0007)  # every wake-up is 0.7 ms late, like a busy loop
    track = PlayoutTrack(PcmQueue(), clock=sim.clock, sleep=sim.sleep, wake_on_audio=False)
    for _ in range(3000):  # 60 s of 20 ms frames
        frame = await track.recv()
        assert frame.samples == 960 and frame.sample_rate == SAMPLE_RATE
    start = 100.0
    # After a minute, the wall clock is within one wake-up jitter of the media clock: no drift.
    assert sim.now - (start + 2999 * 0.020) == pytest.approx(0.0007, abs=1e-6)
    assert track.pts == 3000 * 960
    assert track.stats.stalls == 0
    assert track.stats.max_lateness_s <= 0.0007 + 1e-9


async def test_frames_are_s16_mono_48k_with_increasing_pts():
    sim = SimulatedTime()
    track = PlayoutTrack(PcmQueue(), clock=sim.clock, sleep=sim.sleep, wake_on_audio=False)
    pts = []
    for _ in range(5):
        frame = await track.recv()
        assert frame.format.name == "s16" and frame.layout.name == "mono"
        assert frame.time_base == __import__("fractions").Fraction(1, 48000)
        pts.append(frame.pts)
    assert pts == [0, 960, 1920, 2880, 3840]


async def test_after_a_stall_the_clock_moves_forward_instead_of_bursting():
    sim = SimulatedTime()
    track = PlayoutTrack(PcmQueue(), clock=sim.clock, sleep=sim.sleep, max_lag_ms=100, wake_on_audio=False)
    for _ in range(10):
        await track.recv()
    sim.now += 2.0  # the loop was blocked for two seconds
    await track.recv()  # late frame goes out at once, and re-anchors the clock
    before = sim.now
    sleeps_before = sim.sleeps
    for _ in range(5):
        await track.recv()
    # The following frames are paced again (each waited), not sent back to back.
    assert sim.sleeps - sleeps_before == 5
    assert sim.now - before == pytest.approx(5 * 0.020)
    assert track.stats.stalls == 1


async def test_silence_when_idle_and_gapless_across_segments():
    sim = SimulatedTime()
    queue = PcmQueue()
    track = PlayoutTrack(queue, clock=sim.clock, sleep=sim.sleep, wake_on_audio=False)
    silent = await track.recv()
    assert not silent.to_ndarray().any()
    queue.push(tone(1000, 1))
    queue.push(tone(1000, 2))
    first = (await track.recv()).to_ndarray().reshape(-1)
    second = (await track.recv()).to_ndarray().reshape(-1)
    third = (await track.recv()).to_ndarray().reshape(-1)
    assert (first == 1).all()
    assert (second[:40] == 1).all() and (second[40:] == 2).all()  # no gap between segments
    assert (third[:80] == 2).all() and not third[80:].any()


async def test_flush_silences_the_very_next_frame_and_reports_what_was_played():
    sim = SimulatedTime()
    queue = PcmQueue()
    track = PlayoutTrack(queue, clock=sim.clock, sleep=sim.sleep, wake_on_audio=False)
    played = {}
    queue.push(tone(48000), on_done=lambda seg, n: played.setdefault("n", n))
    for _ in range(3):
        assert (await track.recv()).to_ndarray().any()
    dropped = queue.flush()
    assert dropped == 48000 - 3 * 960
    assert played["n"] == 3 * 960
    assert not (await track.recv()).to_ndarray().any()


def test_queue_is_bounded():
    queue = PcmQueue(max_samples=1000)
    queue.push(tone(800))
    with pytest.raises(QueueFull):
        queue.push(tone(300))


async def test_audio_queued_while_idle_goes_out_without_waiting_for_the_next_slot():
    import asyncio

    queue = PcmQueue()
    track = PlayoutTrack(queue)  # real clock, wakes on fresh audio
    await track.recv()  # idle frame; the next one is due one frame later
    anchor = track._start

    async def push_soon():
        await asyncio.sleep(0.002)
        queue.push(tone(960))

    pusher = asyncio.create_task(push_soon())
    frame = await track.recv()
    await pusher
    assert frame.to_ndarray().any()
    # The timeline moved earlier (by less than a frame) instead of holding the audio back.
    assert 0 < anchor - track._start < 0.020
    track.stop()
