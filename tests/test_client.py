"""The headless client's room microphone: steady noise at the level asked, under the words too."""

import numpy as np

from signaling.client import RoomMicrophone


def dbfs(x):
    return 20 * np.log10(np.sqrt(np.mean(x.astype(np.float64) ** 2)) / 32768)


def test_the_room_is_heard_all_the_time_at_its_level():
    mic = RoomMicrophone(-48.0)
    quiet = np.concatenate([mic.pull(960)[0] for _ in range(100)])
    assert abs(dbfs(quiet) - (-48.0)) < 1.5
    words = (np.sin(np.arange(960 * 10) / 7.0) * 8000).astype(np.int16)
    mic.push(words)
    heard = np.concatenate([mic.pull(960)[0] for _ in range(10)])
    assert np.abs(heard.astype(int) - words).max() > 0  # the room under the words
    assert abs(dbfs(heard - words) - (-48.0)) < 1.5
