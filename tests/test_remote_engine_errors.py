"""The remote engines' failure paths, against `FailingEngine` (a test double on 127.0.0.1 that
only fails): HTTP errors, malformed or unfinished event streams, a stalled stream, nothing
listening; the API key goes in the Bearer header and nowhere else; closing a stream closes its
connection; config and `auto` choices. No model files needed."""

import asyncio
import contextlib
import logging
import traceback

import numpy as np
import pytest

from agent.brains import brain_kind, choose_brain
from agent.config import ConfigError, load_config
from agent.events import to_json
from agent.runtime.openai_api import (EngineError, EngineProtocolError, EngineRejected, EngineTimeout,
                                      EngineUnreachable, OpenAIClient, base_url_of, error_message, shown_url)
from agent.session import AgentSession
from agent.testing import ToneVoice
from agent.voices import choose_voice, voice_kind

from .engine_doubles import FailingEngine
from .helpers import free_port
from .synth import voiced

pytestmark = pytest.mark.loopback

SECRET = "sk-test-5ecr3t-do-not-log-0123456789"


def client(url: str, read_timeout_s: float = 5.0, api_key: str = "") -> OpenAIClient:
    return OpenAIClient(url, api_key, connect_timeout_s=2.0, read_timeout_s=read_timeout_s)


async def answer(engine_client: OpenAIClient) -> str:
    pieces = []
    try:
        async for piece in engine_client.chat_stream({"messages": [{"role": "user", "content": "Hi"}]}):
            pieces.append(piece)
    finally:
        engine_client.close()
    return "".join(pieces)


@pytest.mark.parametrize("status,body,needle", [
    (500, '{"error": {"message": "model crashed while loading", "type": "server_error"}}', "model crashed while loading"),
    (404, '{"detail": "The model `qwen-7b` does not exist."}', "The model `qwen-7b` does not exist."),
    (503, "upstream overloaded, try later", "upstream overloaded, try later"),
])
async def test_an_http_error_names_the_status_and_the_servers_message(status, body, needle):
    async with FailingEngine("status", status, body) as engine:
        with pytest.raises(EngineRejected) as caught:
            await answer(client(engine.url))
    assert caught.value.status == status
    assert str(status) in str(caught.value) and needle in str(caught.value)
    assert engine.url in str(caught.value) and "/v1/chat/completions" in str(caught.value)


@pytest.mark.parametrize("mode,error,needle", [
    ("malformed", EngineProtocolError, "not JSON"),
    ("no_done", EngineProtocolError, "ended without [DONE]"),
    ("not_event_stream", EngineProtocolError, "instead of an event stream"),
    ("error_event", EngineError, "CUDA out of memory"),
])
async def test_a_broken_event_stream_is_a_clear_error(mode, error, needle):
    async with FailingEngine(mode) as engine:
        with pytest.raises(error) as caught:
            await answer(client(engine.url))
    assert needle in str(caught.value)


async def test_a_stalled_stream_times_out_and_its_connection_is_closed():
    async with FailingEngine("stall") as engine:
        with pytest.raises(EngineTimeout, match="sent nothing for 0.3 s"):
            await answer(client(engine.url, read_timeout_s=0.3))
        await asyncio.wait_for(engine.disconnected.wait(), 5)  # the engine saw the client leave


async def test_nothing_listening_is_unreachable():
    url = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(EngineUnreachable, match="cannot connect to the engine at " + url):
        await answer(client(url))


@pytest.mark.parametrize("how", ["close the iterator", "cancel the task"])
async def test_closing_or_cancelling_a_stream_closes_its_connection(how):
    async with FailingEngine("stall") as engine:
        stream = client(engine.url).chat_stream({"messages": []})
        if how == "close the iterator":
            assert await stream.__anext__() == "Hello"
            await engine.stalled.wait()
            await stream.aclose()
        else:
            async def read_all():
                async for _ in stream:
                    pass
            task = asyncio.create_task(read_all())
            await engine.stalled.wait()
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await asyncio.wait_for(engine.disconnected.wait(), 5)


async def test_the_speech_voice_reports_http_errors_and_unreachable_servers():
    config = load_config(environ={}, overrides={"voice.kind": "openai", "openai_voice.base_url": "http://x"})
    async with FailingEngine("status", 422, '{"detail": "unknown voice \'alloy\'"}') as engine:
        voice = voice_kind("openai").load(config.replace(**{"openai_voice.base_url": engine.url}), {})
        with pytest.raises(EngineRejected, match="422.*unknown voice 'alloy'"):
            async for _ in voice.speak("Hello there."):
                pass
        voice.close()
    voice = voice_kind("openai").load(config.replace(**{"openai_voice.base_url": f"http://127.0.0.1:{free_port()}"}), {})
    with pytest.raises(EngineUnreachable, match="cannot connect to the speech server"):
        async for _ in voice.speak("Hello there."):
            pass
    voice.close()


async def test_the_api_key_is_sent_as_a_bearer_header_and_appears_in_no_log_event_or_error(monkeypatch, caplog):
    """The engine refuses the key and quotes it back in its error (as some do): the error event,
    the log (with the traceback) and the exception all say 401 and the message, without the key.
    The session goes on: it is listening again and the next turn is tried (and fails the same way)."""
    monkeypatch.setenv("TEST_ENGINE_KEY", SECRET)
    caplog.set_level(logging.DEBUG)
    async with FailingEngine("status", 401, '{"error": {"message": "Invalid API key: %s"}}' % SECRET) as engine:
        config = load_config(environ={}, overrides={
            "brain.kind": "openai", "openai.base_url": engine.url + "/v1", "openai.api_key_env": "TEST_ENGINE_KEY",
            "openai.transcription": "remote"})
        brain = brain_kind("openai").load(config, {})
        events = []
        session = AgentSession(config, brain, ToneVoice(), send_event=lambda e: events.append(to_json(e)))
        try:
            for number in (1, 2):
                turn = session.start_answer(voiced(600), 0.0, 0.2)
                await asyncio.wait_for(turn.task, 10)
                error = [e for e in events if e["type"] == "error"][-1]
                assert error["turn"] == number and error["kind"] == "EngineRejected"
                assert "401" in error["message"] and "Invalid API key" in error["message"]
                assert session.state == "listening"
            # The key went where it belongs: the Authorization header of each request.
            assert engine.requests and all(r["headers"]["Authorization"] == f"Bearer {SECRET}" for r in engine.requests)
            with pytest.raises(EngineRejected) as caught:
                await brain.transcriber.transcribe(np.zeros(1600, dtype=np.int16))
        finally:
            await session.close()
            brain.close()
    texts = [str(events), caplog.text, str(caught.value), repr(caught.value), repr(brain.client),
             "".join(traceback.format_exception(caught.value))]
    texts += [r.getMessage() + str(r.exc_text or "") for r in caplog.records]
    assert "[API key]" in str(caught.value)  # the quoted key was redacted
    for text in texts:
        assert SECRET not in text
    assert "TEST_ENGINE_KEY" in caplog.text  # the log names the variable the key came from


def test_an_api_key_variable_that_is_not_set_is_a_clear_error(monkeypatch):
    monkeypatch.delenv("NO_SUCH_KEY_VARIABLE", raising=False)
    config = load_config(environ={}, overrides={"brain.kind": "openai", "openai.base_url": "http://127.0.0.1:9",
                                                "openai.api_key_env": "NO_SUCH_KEY_VARIABLE",
                                                "openai.transcription": "remote"})
    with pytest.raises(ValueError, match="openai.api_key_env.*NO_SUCH_KEY_VARIABLE.*not set"):
        brain_kind("openai").load(config, {})


def test_openai_is_chosen_only_by_name_and_needs_a_url():
    config = load_config(environ={}, overrides={"brain.kind": "auto", "voice.kind": "auto"})
    assert choose_brain(config)[0] != "openai" and choose_voice(config)[0] != "openai"
    assert brain_kind("openai").unavailable(config) and voice_kind("openai").unavailable(config)
    with pytest.raises(ConfigError, match="openai.base_url"):
        load_config(environ={}, overrides={"brain.kind": "openai"})
    with pytest.raises(ConfigError, match="openai_voice.base_url"):
        load_config(environ={}, overrides={"voice.kind": "openai"})
    config = load_config(environ={"VOICE_AGENT_OPENAI_VOICE_BASE_URL": "http://127.0.0.1:8880",
                                  "VOICE_AGENT_OPENAI_BASE_URL": "http://127.0.0.1:8000",
                                  "VOICE_AGENT_BRAIN_KIND": "openai", "VOICE_AGENT_VOICE_KIND": "openai"})
    assert config.openai_voice.base_url == "http://127.0.0.1:8880" and config.openai.base_url == "http://127.0.0.1:8000"
    with pytest.raises(ConfigError, match="openai.mode"):
        load_config(environ={}, overrides={"openai.mode": "video"})


def test_base_urls_and_error_bodies():
    assert base_url_of("http://h:8000/v1/") == base_url_of("http://h:8000") == "http://h:8000"
    assert shown_url("https://me:pa55@h:8000") == "https://h:8000" and shown_url("http://h") == "http://h"
    assert error_message('{"error": {"message": "bad"}}') == "bad"
    assert error_message('{"error": "worse"}') == "worse"
    assert error_message("") == "(empty body)"
    assert len(error_message("x" * 10000)) <= 300
