"""The Voxtral brain through the production code path, with a tiny random Voxtral built offline."""

import asyncio
import contextlib
import threading
import time

import numpy as np
import pytest

from agent.config import load_config

from .voxtral_tiny import build_tiny_voxtral


@pytest.fixture(scope="session")
def tiny_voxtral_dir(tmp_path_factory):
    return build_tiny_voxtral(tmp_path_factory.mktemp("voxtral") / "tiny-voxtral")


@pytest.fixture(scope="session")
def voxtral_config(tiny_voxtral_dir):
    return load_config(environ={}, overrides={
        "brain.kind": "voxtral", "voxtral.model": str(tiny_voxtral_dir), "voxtral.max_new_tokens": "24",
        "voxtral.temperature": "0", "voxtral.transcribe": "true", "tools.builtin": "[]",  # Voxtral calls no tools
    })


@pytest.fixture(scope="session")
def voxtral(voxtral_config):
    from agent.brains.voxtral import VoxtralBrain

    brain = VoxtralBrain.load(voxtral_config.voxtral, voxtral_config.brain)
    yield brain
    brain.close()


def speech(seconds, seed=0):
    return (np.random.default_rng(seed).normal(0, 0.1, int(16000 * seconds)) * 32767).astype(np.int16)


async def test_pieces_stream_incrementally(voxtral):
    conversation = voxtral.new_conversation()
    arrivals = []
    async with contextlib.aclosing(conversation.reply(speech(2), lambda t: None, max_new_tokens=64)) as pieces:
        async for piece in pieces:
            arrivals.append((time.perf_counter(), piece))
    # TextIteratorStreamer hands over whole words; a random model makes few spaces, but the text
    # still arrives in several pieces, spread over the generation, not as one final string.
    assert len(arrivals) >= 2
    assert arrivals[-1][0] > arrivals[0][0]


async def test_multi_turn_inputs_have_375_audio_tokens_per_chunk_per_turn(voxtral):
    from agent.brains.voxtral import AUDIO_TOKENS_PER_CHUNK

    conversation = voxtral.new_conversation()
    for seconds, said in ((2, "Hello there."), (35, "Sure.")):  # the second turn spans two 30 s chunks
        async for _ in conversation.reply(speech(seconds), lambda t: None, max_new_tokens=2):
            pass
        conversation.record_agent_reply(said)
    inputs = voxtral.build_inputs(conversation.exchanges)
    ids = inputs["input_ids"][0].tolist()
    assert ids.count(voxtral.audio_token_id) == AUDIO_TOKENS_PER_CHUNK * (1 + 2)
    assert inputs["input_features"].shape[0] == 3
    text = voxtral.processor.tokenizer.decode(ids)
    assert "Hello there." in text  # the agent's spoken text stays in the conversation
    # Audio embeddings were computed once per turn and kept.
    assert all(e.user.embeds is not None for e in conversation.exchanges)
    assert conversation.exchanges[1].user.embeds.shape[0] == 2 * AUDIO_TOKENS_PER_CHUNK


async def test_history_is_bounded_by_turns(voxtral_config, voxtral):
    from agent.brains.voxtral import VoxtralConversation

    conversation = VoxtralConversation(voxtral)
    turns = voxtral_config.brain.history_turns + 3
    for i in range(turns):
        async for _ in conversation.reply(speech(1, seed=i), lambda t: None, max_new_tokens=1):
            pass
        conversation.record_agent_reply(f"answer {i}")
    assert len(conversation.exchanges) == voxtral_config.brain.history_turns + 1


async def test_cancel_stops_generation_within_a_token_or_two(voxtral, monkeypatch):
    steps = []
    original_forward = voxtral.model.forward

    def counting_forward(*args, **kwargs):
        steps.append(time.perf_counter())
        return original_forward(*args, **kwargs)

    monkeypatch.setattr(voxtral.model, "forward", counting_forward)
    conversation = voxtral.new_conversation()
    conversation.exchanges.clear()
    stop = threading.Event()
    from agent.brains.voxtral import Exchange, UserTurn, audio_to_wav_base64

    audio = speech(1).astype(np.float32) / 32768
    exchanges = [Exchange(UserTurn(audio, audio_to_wav_base64(audio), 1))]

    def run():
        for _ in voxtral.stream_blocking(exchanges, stop, max_new_tokens=400):
            pass

    worker = threading.Thread(target=run)
    worker.start()
    while len(steps) < 5:
        await asyncio.sleep(0.001)
    stop.set()
    at_stop = len(steps)
    worker.join(20)
    assert not worker.is_alive()
    assert len(steps) - at_stop <= 2, f"{len(steps) - at_stop} more decoding steps after cancel"
    assert len(steps) < 50  # far from the 400 it was allowed


async def test_an_error_inside_generate_reaches_the_caller(voxtral, monkeypatch):
    def broken_generate(*args, **kwargs):
        raise RuntimeError("CUDA out of memory (simulated)")

    monkeypatch.setattr(voxtral.model, "generate", broken_generate)
    conversation = voxtral.new_conversation()

    async def consume():
        async for _ in conversation.reply(speech(1), lambda t: None):
            pass

    with pytest.raises(RuntimeError, match="out of memory"):
        await asyncio.wait_for(consume(), timeout=20)


async def test_transcript_arrives_after_the_answer(voxtral):
    conversation = voxtral.new_conversation()
    transcripts = []
    got = threading.Event()
    async for _ in conversation.reply(speech(1), lambda t: (transcripts.append(t), got.set()), max_new_tokens=2):
        assert not transcripts  # never before the answer's pieces
    for _ in range(200):
        if got.is_set():
            break
        await asyncio.sleep(0.05)
    assert len(transcripts) == 1 and isinstance(transcripts[0], str)


def test_auto_picks_cascade_without_cuda(tiny_voxtral_dir, voxtral_config):
    from agent.brains import choose_brain
    from agent.brains.voxtral import weights_reachable

    assert weights_reachable(str(tiny_voxtral_dir))
    assert not weights_reachable("mistralai/Not-In-The-Cache")
    auto = voxtral_config.replace(**{"brain.kind": "auto", "voxtral.model": str(tiny_voxtral_dir)})
    kind, reason = choose_brain(auto)
    assert kind == "cascade" and "GPU" in reason
    assert choose_brain(auto.replace(**{"brain.kind": "voxtral"}))[0] == "voxtral"


def test_tools_are_refused_at_start_up_and_auto_passes_voxtral_over(tiny_voxtral_dir, voxtral_config):
    from agent.brains import brain_kind, choose_brain
    from agent.brains.voxtral import VoxtralUnavailable

    with_tools = voxtral_config.replace(**{"tools.builtin": ["calculator"]})
    with pytest.raises(VoxtralUnavailable, match=r"cannot call tools.*tools.builtin = \[\]"):
        brain_kind("voxtral").load(with_tools, {})  # before any weights load
    kind, reason = choose_brain(with_tools.replace(**{"brain.kind": "auto"}))
    assert kind == "cascade" and "Voxtral cannot call them" in reason


def test_missing_weights_give_a_message_that_says_how_to_fix_it(voxtral_config):
    from agent.brains.voxtral import VoxtralBrain, VoxtralUnavailable

    settings = voxtral_config.voxtral.__class__(**{**voxtral_config.voxtral.__dict__, "model": "mistralai/Voxtral-Mini-3B-2507"})
    with pytest.raises(VoxtralUnavailable, match="huggingface-cli download"):
        VoxtralBrain.load(settings, voxtral_config.brain)


async def test_voxtral_brain_answers_inside_a_loopback_webrtc_turn(voxtral_config, voxtral, models, spoken):
    from agent.models import AgentModels
    from signaling.server import loopback_config, running_server
    from signaling.client import HeadlessClient

    config = loopback_config(voxtral_config)
    agent_models = AgentModels(voxtral, models.voice, 0.0)  # the real Kokoro voice, shared (not closed here)
    async with running_server(config, agent_models) as server:
        url = server.url
        client = HeadlessClient(config.ice)
        try:
            await client.connect(url)
            hello = await client.wait_event(lambda e: e.get("type") == "hello", 10)
            assert hello["brain"] == "voxtral"
            sent = client.say(await spoken("What is the capital of France?"))
            await sent.done.wait()
            timeline = await client.wait_event(lambda e: e.get("type") == "timeline" and e.get("turn") == 1, 120)
            assert timeline["outcome"] == "answered", timeline
            assert {"first_token", "first_phrase", "first_pcm", "first_frame"} <= set(timeline["ms"])
            assert any(e.get("type") == "agent_text" for _, e in client.events)
            assert client.first_audible_after(sent.ended_at) is not None
            # The transcript (Voxtral's transcription mode) comes after the answer, off the critical path.
            await client.wait_event(lambda e: e.get("type") == "transcript" and e.get("turn") == 1, 60)
        finally:
            await client.close()


def test_architecture_benchmark_code_runs_on_a_tiny_config():
    from bench.voxtral_arch import time_architecture

    results = time_architecture("tiny", utterances=(2.0, 35.0), repeats=1, new_tokens=4)
    assert [r["audio_tokens"] for r in results] == [375, 750]
    assert all(r["first_token_ms_median"] > 0 and r["inter_token_ms_median"] > 0 for r in results)
