"""The openai brain against a REAL OpenAI-compatible engine: llama.cpp's own server
(`llama-server`, built by the install step from the pinned llama.cpp sources) with the project's
GGUF (Qwen2.5-Coder-1.5B-Instruct), started by the test on 127.0.0.1 with an API key. The brain
transcribes locally (the cascade's whisper) and streams the chat completion over HTTP. Whole
calls go over WebRTC on loopback: a spoken question answered on topic and audible; a barge-in
that aborts the engine's stream (its own log shows the task cancelled) with the next turn
answered; the engine killed mid-answer (an `error` event, the call stays up, and after a
restart the next question is answered)."""

import asyncio
import contextlib
import os

import numpy as np
import pytest

from agent.brains import brain_kind
from agent.brains.llama_chat import LLM_GGUF
from agent.models import AgentModels
from agent.pipeline.audio import StreamResampler
from agent.runtime.model_files import ensure_files, resolve_cache_dir
from agent.voices.base import render
from signaling.client import AUDIBLE_DBFS

from .conftest import ARTIFACTS, save_wav
from .helpers import connected_client, is_type, wait_until
from .llama_server import LlamaServer, built_llama_server

pytestmark = [pytest.mark.models, pytest.mark.loopback]

KEY_VARIABLE = "VOICE_AGENT_TEST_ENGINE_KEY"
STORYTELLER = ("You are a storyteller in a live spoken conversation. Whatever you are asked, answer with a long "
               "story of at least twenty sentences. Plain words only.")


@pytest.fixture(scope="module")
def engine(config):
    """llama-server with the project's GGUF, 2 threads, one slot of 2048 tokens, an API key."""
    cache_dir = resolve_cache_dir(config.models.cache_dir)
    binary = built_llama_server(cache_dir)
    gguf = ensure_files((LLM_GGUF,), cache_dir, progress=False)[LLM_GGUF.relpath]
    ARTIFACTS.mkdir(exist_ok=True)
    server = LlamaServer(binary, gguf, api_key="sk-test-engine-" + os.urandom(8).hex(),
                         log_path=ARTIFACTS / "llama-server.log")
    with pytest.MonkeyPatch.context() as env:
        env.setenv(KEY_VARIABLE, server.api_key)
        server.start()
        yield server
        server.stop()


def remote_config(config, engine, **extra):
    return config.replace(**{"brain.kind": "openai", "openai.base_url": engine.url, "openai.api_key_env": KEY_VARIABLE,
                             "openai.transcription": "local", **extra})


@pytest.fixture(scope="module")
async def remote_models(config, engine):
    """The agent's models as `serve` loads them with brain.kind = openai (whisper here, the LLM remote)."""
    from agent.models import load_models

    loaded = load_models(remote_config(config, engine), progress=False)
    await loaded.warm_up()
    yield loaded
    loaded.close()


@pytest.fixture(scope="module")
async def agent_url(config, engine, remote_models):
    from signaling.server import running_server

    async with running_server(remote_config(config, engine), remote_models) as server:
        yield server.url


@pytest.fixture(scope="module")
async def storyteller_url(config, engine, remote_models):
    """An agent whose remote brain tells long stories (answers that last long enough to be cut)."""
    from signaling.server import running_server

    story_config = remote_config(config, engine, **{"brain.system_prompt": STORYTELLER, "openai.max_tokens": 400})
    paths = ensure_files(brain_kind("openai").model_files(story_config), resolve_cache_dir(config.models.cache_dir),
                         progress=False)
    brain = brain_kind("openai").load(story_config, paths)
    models = AgentModels(brain, remote_models.voice, 0.0, remote_models.end_of_turn)
    try:
        async with running_server(story_config, models) as server:
            yield server.url
    finally:
        brain.close()


@pytest.fixture(scope="module")
def say(remote_models):
    """say(text) -> int16 48 kHz speech made with the agent's voice (hibari), saved as a WAV."""
    cache = {}

    async def make(text: str) -> np.ndarray:
        if text not in cache:
            cache[text] = await render(remote_models.voice, text, 48000)
            save_wav(ARTIFACTS / f"remote-question-{len(cache)}.wav", cache[text])
        return cache[text]

    return make


async def test_the_engine_answers_and_stops_generating_when_the_stream_is_closed(engine, remote_models):
    engine.ensure_running()
    brain = remote_models.brain
    assert brain.name == "openai" and brain.client.sends_api_key  # llama-server refuses requests without it
    question = [{"role": "system", "content": "Answer in one short sentence."},
                {"role": "user", "content": "What is the capital of France?"}]
    pieces = [piece async for piece in brain.stream(question)]
    assert len(pieces) > 1 and "paris" in "".join(pieces).lower()  # streamed token by token, on topic
    left_before = engine.cancelled_tasks()
    story = [{"role": "user", "content": "Tell me a long story about a brave knight and a dragon."}]
    async with contextlib.aclosing(brain.client.chat_stream(brain.request(story, max_tokens=400))) as stream:
        async for _ in stream:
            break
    await wait_until(lambda: engine.cancelled_tasks() > left_before, 30, "the engine saw the client leave")
    pieces = [piece async for piece in brain.stream(question)]  # and it serves the next request
    assert "paris" in "".join(pieces).lower()


async def test_the_engines_forced_tool_call_is_taken_as_a_call_and_the_calculator_gets_the_product(
        config, engine, remote_models, say):
    """A spoken calculation: llama-server holds the forced round (the calculator's call schema as
    `response_format`) to the call written as JSON; the conversation takes it as a call, speaks
    none of it, and the real calculator runs it. (Only the forced round: what the server does
    with the next one is in the README's remote-engine table.)"""
    from agent.tools import ToolCall
    from agent.tools.toolbox import toolbox_for

    engine.ensure_running()
    box = toolbox_for(config)
    conversation = remote_models.brain.new_conversation(box.prompt())
    resampler = StreamResampler(16000)
    spoken = await say("Roughly, what is 47 times 38?")  # "roughly": the agent leaves the call to the model
    audio = np.concatenate([resampler.samples(spoken, 48000), resampler.finish()])
    heard: list[str] = []
    items = [item async for item in conversation.reply(audio, heard.append)]
    assert heard and "47" in heard[0] and "38" in heard[0], heard
    calls = [item for item in items if isinstance(item, ToolCall)]
    assert len(calls) == 1 and calls[0].name == "calculator" and calls[0].id, items
    assert not "".join(item for item in items if isinstance(item, str)).strip()  # no call markup as text
    result = await box.run(calls[0])
    assert result.ok and result.content.endswith("1,786"), (calls[0], result)


async def test_a_spoken_question_is_answered_through_the_engine_over_webrtc(config, remote_models, agent_url, say):
    client = await connected_client(config, agent_url)
    try:
        assert client.events[0][1]["brain"] == "openai"
        sent = client.say(await say("What is the capital of France?"))
        await sent.done.wait()
        timeline = await client.wait_event(is_type("timeline", turn=1), 90)
        assert timeline["outcome"] == "answered"
        events = [e for _, e in client.events]
        assert "france" in next(e for e in events if e["type"] == "transcript")["text"].lower()
        spoken_text = " ".join(e["text"] for e in events if e["type"] == "agent_text")
        assert "paris" in spoken_text.lower()
        assert {"first_token", "first_frame"} <= set(timeline["ms"])
        # The answer arrived as audible audio that says what the text events said.
        first = client.first_audible_after(sent.ended_at)
        assert first is not None
        await asyncio.sleep(0.3)
        loud = [f for f in client.frames if f.at >= first.at and f.dbfs > AUDIBLE_DBFS]
        assert len(loud) * 0.02 >= 0.5  # at least half a second of speech
        answer_audio = client.audio_between(first.at - 0.1, client.frames[-1].at + 1)
        save_wav(ARTIFACTS / "remote-engine-answer.wav", answer_audio)
        resampler = StreamResampler(16000)
        heard = await remote_models.brain.transcriber.transcribe(
            np.concatenate([resampler.samples(answer_audio, 48000), resampler.finish()]))
        assert "paris" in heard.lower(), f"heard {heard!r}; the agent said {spoken_text!r}"
    finally:
        await client.close()


async def test_a_barge_in_aborts_the_engines_stream_and_the_next_turn_is_answered(config, engine, storyteller_url, say):
    engine.ensure_running()
    client = await connected_client(config, storyteller_url)
    try:
        sent = client.say(await say("Tell me a story about a brave knight and a dragon."))
        await sent.done.wait()
        await client.wait_event(is_type("state", state="speaking"), 90)
        await asyncio.sleep(0.8)  # let the agent talk for a moment
        talking = [e["turn"] for _, e in client.events if e.get("type") == "agent_text"][-1]
        left_before = engine.cancelled_tasks()
        since = len(client.events)
        client.say(await say("Stop. What is the capital of France?"))
        await client.wait_event(is_type("barge_in", turn=talking), 30, since)
        # The story's HTTP stream was closed: the engine itself logs the task cancelled.
        await wait_until(lambda: engine.cancelled_tasks() > left_before, 30, "the engine saw the client leave")
        interrupted = await client.wait_event(is_type("timeline", turn=talking), 10, since)
        assert interrupted["outcome"] == "interrupted"
        # The engine is free at once for the next turn: it is answered (and heard).
        await client.wait_event(is_type("agent_text", turn=talking + 1), 90, since)
        transcript = next(e for _, e in client.events[since:] if e.get("type") == "transcript")["text"].lower()
        assert "france" in transcript
        assert not [e for _, e in client.events if e.get("type") == "error"]
    finally:
        await client.close()


async def test_the_engine_killed_mid_answer_is_an_error_event_and_the_call_goes_on(config, engine, storyteller_url, say):
    engine.ensure_running()
    client = await connected_client(config, storyteller_url)
    try:
        sent = client.say(await say("Tell me a story about a brave knight and a dragon."))
        await sent.done.wait()
        first_words = await client.wait_event(is_type("agent_text"), 90)  # the answer is being spoken
        engine.kill()
        error = await client.wait_event(is_type("error", turn=first_words["turn"]), 30)
        assert error["kind"] == "EngineUnreachable", error
        assert engine.url in error["message"] and "closed the connection" in error["message"]
        timeline = await client.wait_event(is_type("timeline", turn=first_words["turn"]), 10)
        assert timeline["outcome"] == "error"
        await wait_until(lambda: [e["state"] for _, e in client.events if e.get("type") == "state"][-1] == "listening",
                         10, "the session is listening again")
        assert client.pc.connectionState == "connected"  # the call stays up
        # The engine comes back (same address): the next question on the same call is answered.
        await asyncio.to_thread(engine.start)
        since = len(client.events)
        client.say(await say("What is the capital of France?"))
        answered = await client.wait_event(is_type("agent_text", turn=first_words["turn"] + 1), 90, since)
        assert answered["text"]
        assert not [e for _, e in client.events[since:] if e.get("type") == "error"]
    finally:
        await client.close()
