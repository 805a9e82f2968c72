import pytest

from agent.events import to_json
from agent.pipeline.timeline import PlayoutMeter, TurnTimeline


def test_gaps_are_silences_longer_than_40ms_between_audio_not_the_tail():
    meter = PlayoutMeter()
    n = 960
    for filled in [n, n, 500, 0, 0, n, n, 900, n, 300, 0, 0, 0]:
        meter.frame(0.001, filled, n, 48000)
    summary = meter.summary()
    # 460 + 960 + 960 silent samples = 49.6 ms between audio: one gap. 60 samples (1.25 ms): none.
    # The trailing silence after the answer ended is not a gap.
    assert summary["gaps"] == 1
    assert summary["gap_max_ms"] == pytest.approx(49.6)
    assert summary["frames"] == 13


def test_timeline_is_relative_to_the_end_of_speech_and_first_marks_win():
    timeline = TurnTimeline(3)
    timeline.mark("speech_end", 10.0)
    timeline.mark("turn_end", 10.3)
    assert timeline.mark("first_token", 10.9)
    assert not timeline.mark("first_token", 11.5)
    event = timeline.as_event()
    assert event.ms == {"speech_end": 0.0, "turn_end": 300.0, "first_token": 900.0}
    assert to_json(event)["type"] == "timeline" and to_json(event)["outcome"] == "pending"
    assert "turn 3" in timeline.log_line() and "first_token=+900ms" in timeline.log_line()
    with pytest.raises(ValueError):
        timeline.mark("nonsense", 1.0)
