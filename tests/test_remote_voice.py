"""The openai speech voice against `HibariSpeechServer`: a test server whose `/v1/audio/speech`
speaks with the project's real hibari voice and streams raw PCM in odd-sized chunks (no public
engine serves speech on a CPU here). What arrives is exactly hibari's audio, whisper hears the
words, and closing the stream mid-phrase closes the request."""

import asyncio
import contextlib

import numpy as np
import pytest

from agent.pipeline.audio import StreamResampler
from agent.runtime.model_files import ensure_files, resolve_cache_dir
from agent.voices import voice_kind

from .conftest import wer
from .engine_doubles import HibariSpeechServer

pytestmark = [pytest.mark.models, pytest.mark.loopback]


@pytest.fixture(scope="module")
def hibari(config):
    kind = voice_kind("hibari")
    voice = kind.load(config, ensure_files(kind.model_files(config), resolve_cache_dir(config.models.cache_dir),
                                           progress=False))
    yield voice
    voice.close()


@pytest.fixture(scope="module")
def whisper(config):
    from agent.brains.whisper_asr import WHISPER_FILES, WhisperTranscriber

    paths = ensure_files(WHISPER_FILES, resolve_cache_dir(config.models.cache_dir), progress=False)
    transcriber = WhisperTranscriber(paths[WHISPER_FILES[0].relpath].parent, config.asr)
    yield transcriber
    transcriber.thread.shutdown()


def remote_voice(config, url):
    settings = {"voice.kind": "openai", "openai_voice.base_url": url, "openai_voice.model": "hibari",
                "openai_voice.voice": "heart"}
    return voice_kind("openai").load(config.replace(**settings), {})


async def test_the_voice_streams_the_servers_pcm_as_it_comes_and_whisper_hears_the_words(config, hibari, whisper):
    sentence = "Please bring two apples and a bottle of water."
    direct = np.concatenate([chunk async for chunk in hibari.speak(sentence)])
    async with HibariSpeechServer(hibari) as server:
        voice = remote_voice(config, server.url)
        try:
            chunks = [chunk async for chunk in voice.speak(sentence)]
        finally:
            voice.close()
    assert server.requests[0]["body"] == {"input": sentence, "voice": "heart", "response_format": "pcm",
                                          "speed": config.voice.speed, "model": "hibari"}
    assert len(chunks) > 10 and all(c.dtype == np.int16 for c in chunks)  # streamed, not one blob
    received = np.concatenate(chunks)
    assert voice.sample_rate == 24000
    assert np.array_equal(received, direct)  # every sample intact, also those split between chunks
    resampler = StreamResampler(16000)
    heard = await whisper.transcribe(np.concatenate([resampler.samples(received, 24000), resampler.finish()]))
    assert wer(sentence, heard) <= 0.15, heard


async def test_closing_the_voice_mid_phrase_closes_the_request(config, hibari):
    long_text = " ".join(["This is a rather long sentence that keeps going on and on."] * 8)
    async with HibariSpeechServer(hibari, pause_s=0.05) as server:
        voice = remote_voice(config, server.url)
        try:
            async with contextlib.aclosing(voice.speak(long_text)) as chunks:
                async for _ in chunks:
                    break  # a barge-in after the first chunk
            await asyncio.wait_for(server.aborted.wait(), 10)  # the server saw the client leave
            assert server.finished == 0
            # The voice works on: the next phrase is spoken whole.
            assert len(np.concatenate([c async for c in voice.speak("Hello there.")])) > 24000 * 0.3
            assert server.finished == 1
        finally:
            voice.close()
