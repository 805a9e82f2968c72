import av
import numpy as np

from agent.pipeline.audio import StreamResampler, rms_dbfs


def sine(rate, seconds, freq=440.0):
    t = np.arange(int(rate * seconds)) / rate
    return (0.5 * np.sin(2 * np.pi * freq * t) * 32767).astype(np.int16)


def dominant_freq(samples, rate):
    spectrum = np.abs(np.fft.rfft(samples.astype(np.float64)))
    return np.argmax(spectrum) * rate / len(samples)


def test_inbound_stereo_48k_frames_become_16k_mono_with_length_and_pitch_kept():
    resampler = StreamResampler(16000)
    source = sine(48000, 1.0)
    out = []
    for i in range(0, len(source), 960):  # 20 ms frames, packed stereo s16 as aiortc delivers them
        mono = source[i:i + 960]
        stereo = np.repeat(mono, 2).reshape(1, -1)
        frame = av.AudioFrame.from_ndarray(stereo, format="s16", layout="stereo")
        frame.sample_rate = 48000
        frame.pts = i
        out.append(resampler.frame(frame))
    out.append(resampler.finish())
    result = np.concatenate(out)
    assert abs(len(result) - 16000) <= 16
    assert abs(dominant_freq(result, 16000) - 440.0) < 2.0
    assert abs(rms_dbfs(result) - rms_dbfs(source)) < 0.5


def test_voice_24k_to_48k_is_continuous_across_chunks():
    resampler = StreamResampler(48000)
    source = sine(24000, 0.5, 300.0)
    chunks = [resampler.samples(source[i:i + 1234], 24000) for i in range(0, len(source), 1234)]
    chunks.append(resampler.finish())
    result = np.concatenate(chunks)
    assert abs(len(result) - 2 * len(source)) <= 32
    # No clicks at chunk joins: the signal stays smooth (max sample-to-sample step of a 300 Hz sine).
    assert np.max(np.abs(np.diff(result[100:-100].astype(np.int32)))) < 800


def test_float_input_is_converted():
    resampler = StreamResampler(48000)
    out = resampler.samples(np.full(2400, 0.5, dtype=np.float32), 24000)
    assert out.dtype == np.int16


def test_first_channel_of_packed_stereo():
    from signaling.client import first_channel

    left = np.arange(960, dtype=np.int16)
    stereo = np.stack([left, -left], axis=1).reshape(1, -1)
    frame = av.AudioFrame.from_ndarray(stereo, format="s16", layout="stereo")
    assert np.array_equal(first_channel(frame), left)


def test_the_inbound_resampler_follows_a_codec_switch():
    """Opus decodes to 48 kHz packed stereo, PCMU to 8 kHz mono: one stream may bring both."""
    from signaling.inbound import FollowingResampler

    def frame(samples, layout, rate):
        f = av.AudioFrame.from_ndarray(samples.reshape(1, -1), format="s16", layout=layout)
        f.sample_rate = rate
        return f

    resampler = FollowingResampler(16000)
    out = [resampler.frame(frame(np.zeros(1920, np.int16), "stereo", 48000)) for _ in range(10)]
    out += [resampler.frame(frame(np.full(160, 1000, np.int16), "mono", 8000)) for _ in range(10)]
    out += [resampler.frame(frame(np.zeros(1920, np.int16), "stereo", 48000)) for _ in range(10)]
    assert resampler.changes == 2
    total = sum(len(chunk) for chunk in out)
    assert abs(total - 30 * 320) <= 3 * 64  # 30 frames of 20 ms at 16 kHz, less filter delay per switch
