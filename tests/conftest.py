"""Shared fixtures: real models (loaded once), the real server on loopback, spoken questions."""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from agent.config import load_config  # noqa: E402
from agent.pipeline.transcripts import word_error_rate as wer  # noqa: E402,F401  (tests import it from here)

ARTIFACTS = Path(__file__).resolve().parent.parent / "artifacts"

# An offer with video and no audio: the agent must refuse it.
VIDEO_ONLY_SDP = """v=0
o=- 1 1 IN IP4 127.0.0.1
s=-
t=0 0
m=video 9 UDP/TLS/RTP/SAVPF 96
c=IN IP4 0.0.0.0
a=rtpmap:96 VP8/90000
a=sendrecv
"""


@pytest.fixture(scope="session")
def config():
    from signaling.server import loopback_config

    # Many calls come from 127.0.0.1 in a short time here: no per-address rate limit (tested on its own).
    return loopback_config(load_config(environ={}, overrides={"server.rate_limit_per_minute": "0"}))


@pytest.fixture(scope="session")
async def models(config):
    from agent.models import load_models

    loaded = load_models(config, progress=False)
    await loaded.warm_up()
    yield loaded
    loaded.close()


@pytest.fixture(scope="session")
async def agent_url(config, models):
    from signaling.server import running_server

    async with running_server(config, models) as server:
        yield server.url


_question_cache: dict[str, np.ndarray] = {}


@pytest.fixture(scope="session")
def spoken(models):
    """spoken(text) -> int16 48 kHz mono speech made with the Kokoro voice (cached; saved as WAV)."""
    from agent.voices.base import render

    async def make(text: str) -> np.ndarray:
        if text not in _question_cache:
            audio = await render(models.voice, text, 48000)
            _question_cache[text] = audio
            ARTIFACTS.mkdir(exist_ok=True)
            name = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:40]
            save_wav(ARTIFACTS / f"question-{name}.wav", audio)
        return _question_cache[text]

    return make


def save_wav(path: Path, samples_48k: np.ndarray) -> None:
    from agent.pipeline.audio import write_wav

    path.parent.mkdir(exist_ok=True)
    write_wav(path, samples_48k, 48000)
