"""The real models, from the pinned packages: voice -> ASR round trip, LLM answers, cancellation."""

import asyncio
import contextlib
import re

import numpy as np
import pytest

from agent.pipeline.audio import StreamResampler
from agent.voices.base import render

from .conftest import wer

pytestmark = pytest.mark.models


@pytest.fixture(scope="module")
def cpu_voices(config):
    """Both CPU voices, loaded through the registry from the verified model files."""
    from agent.runtime.model_files import ensure_files, resolve_cache_dir
    from agent.voices import voice_kind

    loaded = {}
    for name in ("hibari", "kokoro-onnx"):
        kind = voice_kind(name)
        paths = ensure_files(kind.model_files(config), resolve_cache_dir(config.models.cache_dir), progress=False)
        loaded[name] = kind.load(config, paths)
    yield loaded
    for voice in loaded.values():
        voice.close()


def test_the_cpu_default_voice_is_hibari(models):
    assert models.voice.name == "hibari"  # voice.kind = auto with no CUDA GPU


@pytest.mark.parametrize("voice_name", ["hibari", "kokoro-onnx"])
async def test_the_voice_speaks_and_whisper_transcribes_it_back(models, cpu_voices, voice_name):
    sentences = [
        "The weather is lovely today, so we will walk to the park.",
        "Please bring two apples and a bottle of water.",
        "My favourite colour is green because it reminds me of the forest.",
    ]
    errors = []
    for sentence in sentences:
        audio = await render(cpu_voices[voice_name], sentence, 16000, trim=False)
        assert len(audio) > 16000 * 1.0  # at least a second of speech
        heard = await models.brain.transcriber.transcribe(audio)
        errors.append(wer(sentence, heard))
    assert np.mean(errors) <= 0.15, errors


async def test_voice_streams_each_window_and_stops_when_closed(models):
    long_text = " ".join(["This is a rather long sentence that keeps going on and on."] * 12)
    chunks = 0
    async with contextlib.aclosing(models.voice.speak(long_text)) as stream:
        async for chunk in stream:
            assert chunk.dtype == np.int16 and len(chunk) > 0
            chunks += 1
            break
    assert chunks == 1
    # The voice thread is free again right after (it stopped instead of finishing the text).
    await asyncio.wait_for(models.voice.thread.run(lambda: None), 30)


async def collect_answer(chat, question, max_pieces=None):
    messages = [{"role": "system", "content": "Answer in one short sentence."}, {"role": "user", "content": question}]
    pieces = []
    async with contextlib.aclosing(chat.stream(messages)) as stream:
        async for piece in stream:
            pieces.append(piece)
            if max_pieces and len(pieces) >= max_pieces:
                break
    return pieces


async def test_llm_answers_a_simple_question_correctly(models):
    pieces = await collect_answer(models.brain.chat, "What is the capital of France?")
    assert len(pieces) > 1  # streamed token by token
    assert "paris" in "".join(pieces).lower()


async def test_cancelled_generation_stops(models):
    chat = models.brain.chat
    batched = chat.batched
    messages = [{"role": "user", "content": "Count from one to two hundred in words, separated by commas."}]
    prompt = batched.prompt_tokens(messages)
    taken = 0
    async with contextlib.aclosing(batched.generate(chat.seq, prompt, 400)) as stream:
        async for _ in stream:
            taken += 1
            if taken >= 5:
                break
    await asyncio.wait_for(chat.thread.run(lambda: None), 30)  # a step in flight has finished
    await asyncio.sleep(0.5)  # time for steps that should not come
    evaluated = len(batched._cached[chat.seq]) - len(prompt)
    assert not batched._requests
    assert evaluated <= 5 + 2, f"generation went on for {evaluated} tokens after cancel"


async def test_cascade_answers_a_spoken_question(models, spoken):
    audio_48k = await spoken("What is the capital of France?")
    resampler = StreamResampler(16000)
    audio = np.concatenate([resampler.samples(audio_48k, 48000), resampler.finish()])
    conversation = models.brain.new_conversation()
    transcripts = []
    answer = "".join([p async for p in conversation.reply(audio, transcripts.append)])
    assert "france" in transcripts[0].lower()
    assert "paris" in answer.lower()
    conversation.record_agent_reply(answer)
    assert [m["role"] for m in conversation.history] == ["user", "assistant"]


async def test_a_rolled_back_reply_leaves_no_trace_in_the_history(models, spoken):
    audio_48k = await spoken("What is the capital of France?")
    resampler = StreamResampler(16000)
    audio = np.concatenate([resampler.samples(audio_48k, 48000), resampler.finish()])
    conversation = models.brain.new_conversation()
    transcripts = []
    async with contextlib.aclosing(conversation.reply(audio.copy(), transcripts.append)) as pieces:
        async for _ in pieces:
            break  # a preemptive answer, talked over
    assert "france" in transcripts[0].lower()
    conversation.rollback()
    assert conversation.history == []
    async with contextlib.aclosing(conversation.reply(audio.copy(), transcripts.append)) as pieces:
        async for _ in pieces:
            break
    conversation.record_agent_reply("Paris.")
    conversation.rollback()  # too late: the reply is stored
    assert [m["role"] for m in conversation.history] == ["user", "assistant"]

def test_a_whisper_repetition_loop_is_cut_at_the_repeat():
    from agent.brains.whisper_asr import drop_repetition

    assert drop_repetition("Why is the sea salty? Why is the sea salty? Why") == "Why is the sea salty?"
    assert drop_repetition("Tell me more, tell me more about it.") == "Tell me more, tell me more about it."
    assert drop_repetition("What is the capital of France?") == "What is the capital of France?"


def test_short_transcripts_whisper_is_unsure_of_are_marked_unclear():
    from agent.brains.whisper_asr import mark_unclear
    from agent.config import load_config

    config = load_config(environ={})
    asr = config.asr
    assert mark_unclear("Come on.", -1.4, asr) == "(unclear: Come on.)"
    assert mark_unclear("Stop.", -0.6, asr) == "Stop."  # sure enough
    long = "What is the capital of France?"
    assert mark_unclear(long, -1.4, asr) == long  # longer than unclear_max_words: a question, kept
    assert mark_unclear("Come on.", -1.4, config.replace(**{"asr.unclear_logprob": 0.0}).asr) == "Come on."


async def test_hibari_answers_start_at_once_without_its_padding(cpu_voices):
    """hibari pads each sentence with ~270 ms of silence; the voice trims it to ~10 ms, or the
    listener would wait for it before every answer."""
    from agent.pipeline.audio import trim_edges

    voice = cpu_voices["hibari"]
    async with contextlib.aclosing(voice.speak("A spider has eight legs.")) as stream:
        first = await stream.__anext__()
    lead = len(first) - len(trim_edges(first, voice.sample_rate, lead_ms=0, tail_ms=10_000))
    assert lead <= voice.sample_rate * 30 // 1000


async def test_a_runaway_transcript_is_fitted_to_the_llms_context(models):
    """History is bounded by tokens, not only by turns: old exchanges go first, and a user message
    too long on its own (a hallucinated transcript) is cut to what fits, so the turn still runs."""
    brain = models.brain
    chat = brain.chat
    budget = chat.config.context_tokens - chat.config.max_tokens
    conversation = brain.new_conversation()
    conversation.history.extend([{"role": "user", "content": "Tell me about the moon."},
                                 {"role": "assistant", "content": "The moon orbits the earth. " * 40}])
    conversation.history.append({"role": "user", "content": "and then the rain kept falling " * 400})
    conversation.chat_history.fit()
    assert [m["role"] for m in conversation.history] == ["user"]  # the old exchange went first
    assert conversation.history[0]["content"].startswith("and then the rain kept falling")
    prompt = [brain.system_message(None), *conversation.history]
    used = sum(chat.tokens_in(m["content"]) + 6 for m in prompt)
    assert budget / 2 < used <= budget  # cut to fit, not emptied
    pieces = []
    async with contextlib.aclosing(conversation._generate()) as stream:
        async for piece in stream:
            pieces.append(piece)
            if len(pieces) >= 3:
                break
    assert "".join(pieces).strip()  # the model answers instead of failing on an overflowing context


async def test_a_trimmed_history_is_not_evaluated_again_and_is_still_remembered(models, monkeypatch):
    """Dropping the oldest exchange (a full history, from the seventh turn on) used to put the
    whole rest of the history on the next turn's critical path: llama.cpp reuses a common prefix
    only. `plan_cache_shift` cuts the exchange out of the KV cache instead: the next question is
    all that is evaluated, and what the rest of the history said still holds."""
    chat = models.brain.chat
    system = {"role": "system", "content": "You are a helpful voice assistant. Answer in one short sentence."}
    said = [("What is the capital of Italy?", "The capital of Italy is Rome."),
            ("How many legs does a spider have?", "A spider has eight legs."),
            ("My name is Oliver, please remember that.", "Nice to meet you, Oliver. I will remember that."),
            ("What colour is the sky on a clear day?", "On a clear day the sky is blue."),
            ("Which planet is the largest?", "Jupiter is the largest planet in our solar system."),
            ("What do bees make?", "Bees make honey from the nectar of flowers.")]
    exchanges = [[{"role": "user", "content": q}, {"role": "assistant", "content": a}] for q, a in said]
    history = [m for exchange in exchanges for m in exchange]
    await chat.warm([system, *history, {"role": "user", "content": ""}])  # the prefix warmed after turn 6
    evaluated: list[int] = []  # prompt tokens left to evaluate once the cache is reused
    batched = chat.batched
    original = batched._start
    monkeypatch.setattr(batched, "_start", lambda request: (original(request), evaluated.append(len(request.pending))))
    trimmed = [system, *history[2:], {"role": "user", "content": "What is my name?"}]
    answer = "".join([piece async for piece in chat.stream(trimmed)])
    kept = sum(chat.tokens_in(m["content"]) for m in history[2:])
    prompt_evaluated = evaluated[0]
    assert prompt_evaluated < 30 < kept, (prompt_evaluated, kept)
    assert "oliver" in answer.lower(), answer


async def test_a_chemical_symbol_is_heard_as_its_letters(models):
    """"Au" went to the voice as written and the caller heard "o" (whisper: "The chemical symbol
    for gold is o."); written the way `speakable` writes it, whisper hears the letters."""
    from agent.pipeline.phrases import speakable
    from agent.voices.base import render

    audio = await render(models.voice, speakable("The chemical symbol for gold is Au."), 16000)
    heard = await models.brain.transcriber.transcribe(audio)
    assert re.search(r"\ba\.? ?u\b", heard.lower()), heard
