import av
import numpy as np

from signaling import media_costs


def frame_of(samples, layout="mono"):
    frame = av.AudioFrame.from_ndarray(samples.reshape(1, -1), format="s16", layout=layout)
    frame.sample_rate = 48000
    return frame


def test_numpy_audio_level_equals_aiortcs():
    rng = np.random.default_rng(0)
    frames = [frame_of(np.zeros(960, np.int16)), frame_of(np.full(960, 32767, np.int16)),
              frame_of(np.repeat(rng.integers(-3000, 3000, 960).astype(np.int16), 2), "stereo")]
    for level in (1, 10, 100, 1000, 20000):
        frames.append(frame_of(rng.normal(0, level, 960).clip(-32768, 32767).astype(np.int16)))
    for frame in frames:
        assert media_costs.compute_audio_level_dbov(frame) == media_costs._original(frame)
