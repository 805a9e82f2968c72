"""PeerLiveness: which peers keep their place (a fake clock; the loopback tests in
test_hostile_calls.py run the same rules on real calls)."""

from signaling.liveness import LivenessLimits, PeerLiveness

LIMITS = LivenessLimits(connect_timeout_s=10, idle_timeout_s=5, min_audio_ratio=0.25, max_call_s=3600)


def run(liveness, now, until, step, audio_per_step=0.0):
    """Advance the clock to `until` in `step`s, feeding audio; the first verdict that releases."""
    while now[0] < until:
        now[0] += step
        liveness.heard(audio_per_step)
        verdict = liveness.verdict()
        if verdict:
            return now[0], verdict
    return now[0], None


def peer(now):
    return PeerLiveness(LIMITS, clock=lambda: now[0])


def test_a_peer_that_never_connects_is_released_at_the_connect_timeout():
    now = [0.0]
    at, verdict = run(peer(now), now, 60, 0.5)
    assert at == 10 and "did not connect" in verdict


def test_a_real_time_caller_stays():
    now = [0.0]
    liveness = peer(now)
    liveness.connected()
    assert run(liveness, now, 600, 0.5, audio_per_step=0.5) == (600, None)


def test_a_caller_with_heavy_loss_stays():
    now = [0.0]
    liveness = peer(now)
    liveness.connected()
    assert run(liveness, now, 120, 0.5, audio_per_step=0.2)[1] is None  # 40 % of the audio arrives


def test_a_caller_that_stops_is_released_one_window_later():
    now = [0.0]
    liveness = peer(now)
    liveness.connected()
    run(liveness, now, 30, 0.5, audio_per_step=0.5)
    at, verdict = run(liveness, now, 60, 0.5)
    assert 30 < at <= 35 and ("stopped" in verdict or "too sparse" in verdict)


def test_one_packet_every_four_seconds_is_released():
    now = [0.0]
    liveness = peer(now)
    liveness.connected()
    verdict = None
    while verdict is None and now[0] < 60:
        now[0] += 0.5
        if now[0] % 4 == 0:
            liveness.heard(0.02)
        verdict = liveness.verdict()
    assert now[0] <= 6 and "too sparse" in verdict


def test_a_connected_peer_that_never_sends_is_released_after_one_window():
    now = [3.0]
    liveness = peer(now)
    liveness.connected()
    at, verdict = run(liveness, now, 60, 0.5)
    assert at == 8 and "stopped" in verdict


def test_the_longest_call_is_released():
    now = [0.0]
    liveness = PeerLiveness(LivenessLimits(10, 5, 0.25, max_call_s=60), clock=lambda: now[0])
    liveness.connected()
    at, verdict = run(liveness, now, 600, 0.5, audio_per_step=0.5)
    assert at == 60 and "maximum length" in verdict
