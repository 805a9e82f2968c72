"""The PyTorch Kokoro voice's streaming and cancellation, with a random-initialised KModel built
from the real Kokoro-82M config (from the kokoro-onnx wheel) and an empty state dict."""

import asyncio
import contextlib

import numpy as np
import pytest
import torch

from agent.config import load_config
from agent.runtime.model_files import ensure_file, resolve_cache_dir
from agent.voices.kokoro_pack import VOICE_PACK


@pytest.fixture(scope="module")
def torch_voice(tmp_path_factory):
    from kokoro import KModel

    from agent.voices.kokoro_pack import bundled_config_path
    from agent.voices.kokoro_torch import KokoroTorchVoice

    empty = tmp_path_factory.mktemp("kokoro") / "empty.pth"
    torch.save({}, empty)
    torch.manual_seed(0)
    model = KModel(repo_id="hexgrad/Kokoro-82M", config=str(bundled_config_path()), model=str(empty))
    with torch.no_grad():  # random durations are ~0.6 s per phoneme; bias them down to keep the test quick
        model.predictor.duration_proj.linear_layer.bias.fill_(-4.0)
    config = load_config(environ={}, overrides={"voice.kind": "kokoro-torch", "voice.torch_weights": str(empty)})
    voices = ensure_file(VOICE_PACK, resolve_cache_dir(config.models.cache_dir), progress=False)
    voice = KokoroTorchVoice(config.voice, voices, model=model)
    yield voice
    voice.close()


async def test_each_segment_streams_as_int16_at_24k(torch_voice):
    chunks = [c async for c in torch_voice.speak("Hello there.\nHow are you today?")]
    assert len(chunks) == 2  # one per segment, as soon as each is made
    assert all(c.dtype == np.int16 and len(c) > 0 for c in chunks)
    assert torch_voice.sample_rate == 24000


async def test_closing_the_stream_stops_synthesis(torch_voice, monkeypatch):
    calls = []
    original = torch_voice.pipeline.model.forward

    def counting(*args, **kwargs):
        calls.append(1)
        return original(*args, **kwargs)

    monkeypatch.setattr(torch_voice.pipeline.model, "forward", counting)
    text = "\n".join(["One sentence here."] * 6)
    async with contextlib.aclosing(torch_voice.speak(text)) as chunks:
        async for _ in chunks:
            break
    await asyncio.wait_for(torch_voice.thread.run(lambda: None), 60)
    assert len(calls) <= 2, f"{len(calls)} segments synthesised after the consumer left"
