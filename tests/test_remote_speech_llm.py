"""The openai brain's speech-LLM mode (Voxtral served by vLLM: the utterance goes in the chat
message as `input_audio`) and remote transcription, against `SpeechLLMRequestChecker`, a test
double that checks each request's shape as vLLM receives it (vLLM needs a GPU: it cannot run
here). Also the chat history both chat brains share. No model files needed."""

import contextlib

import numpy as np
import pytest

from agent.brains import brain_kind
from agent.brains.chat_history import ChatHistory
from agent.config import load_config

from .engine_doubles import SpeechLLMRequestChecker
from .synth import voiced

pytestmark = pytest.mark.loopback

MODEL = "mistralai/Voxtral-Mini-3B-2507"


def speech_llm_brain(url: str):
    config = load_config(environ={}, overrides={
        "brain.kind": "openai", "openai.base_url": url, "openai.model": MODEL, "openai.mode": "audio",
        "openai.transcription": "remote", "openai.max_tokens": "77", "openai.temperature": "0.1"})
    return config, brain_kind("openai").load(config, {})


async def reply(conversation, audio, heard: list):
    def on_transcript(text):
        heard.append(text)
        return text != "mm-hmm"  # as the session does for a filler
    return "".join([piece async for piece in conversation.reply(audio, on_transcript)])


async def test_the_utterance_goes_in_the_chat_message_as_input_audio_and_earlier_turns_as_text():
    async with SpeechLLMRequestChecker() as checker:
        config, brain = speech_llm_brain(checker.url + "/v1")
        conversation = brain.new_conversation()
        first, second = voiced(700, seed=1), voiced(900, f0=180, seed=2)
        heard = []
        try:
            assert await reply(conversation, first, heard) == SpeechLLMRequestChecker.ANSWER
            assert heard == [checker.transcript]
            conversation.record_agent_reply("This is the")  # only that much was played
            assert await reply(conversation, second, heard) == SpeechLLMRequestChecker.ANSWER
        finally:
            brain.close()
    chats = [c for c in checker.checked if c.path == "/v1/chat/completions"]
    transcriptions = [c for c in checker.checked if c.path == "/v1/audio/transcriptions"]
    assert len(chats) == 2 and len(transcriptions) == 2
    # The audio arrives intact: 16 kHz 16-bit mono WAV, the very samples, for both requests.
    for sent, chat, transcription in zip((first, second), chats, transcriptions):
        assert chat.rate == transcription.rate == 16000
        assert np.array_equal(chat.audio, sent) and np.array_equal(transcription.audio, sent)
        assert transcription.body == {"model": MODEL, "language": "en", "response_format": "json"}
        assert {k: chat.body[k] for k in ("model", "max_tokens", "temperature", "stream")} == {
            "model": MODEL, "max_tokens": 77, "temperature": 0.1, "stream": True}
        newest = chat.body["messages"][-1]["content"]
        assert newest[1] == {"type": "text", "text": config.brain.system_prompt}  # the persona, not a system message
    assert len(chats[0].body["messages"]) == 1
    assert chats[1].body["messages"][:2] == [{"role": "user", "content": checker.transcript},
                                             {"role": "assistant", "content": "This is the"}]


async def test_a_filler_gets_no_answer_and_a_discarded_answer_leaves_no_trace():
    async with SpeechLLMRequestChecker(transcript="mm-hmm") as checker:
        _config, brain = speech_llm_brain(checker.url)
        conversation = brain.new_conversation()
        heard = []
        try:
            assert await reply(conversation, voiced(500), heard) == ""  # "mm-hmm": nothing passed on
            assert heard == ["mm-hmm"] and conversation.history == []
            checker.transcript = "tell me about spiders"
            async with contextlib.aclosing(conversation.reply(voiced(600), heard.append)) as pieces:
                async for _ in pieces:
                    break  # a preemptive answer the user talked over
            conversation.rollback()
            assert conversation.history == []
            assert await reply(conversation, voiced(600), heard) == SpeechLLMRequestChecker.ANSWER
            conversation.record_agent_reply(SpeechLLMRequestChecker.ANSWER)
            assert [m["role"] for m in conversation.history] == ["user", "assistant"]
        finally:
            brain.close()


def test_the_chat_history_keeps_the_newest_exchanges_and_only_what_was_played():
    history = ChatHistory("Be brief.", history_turns=2)
    for n in range(4):
        history.begin_reply()
        history.add_user(f"question {n}")
        assert history.record_agent_reply(f"answer {n}" if n != 2 else "  ")  # turn 2: nothing was played
    # Two exchanges at most, less one left for the next question, starting with a user turn; an
    # answer nobody heard is not there (turn 2 left its question alone, then went as the oldest).
    assert [m["content"] for m in history.messages] == ["question 3", "answer 3"]
    assert history.prompt()[0] == {"role": "system", "content": "Be brief."}
    history.begin_reply()
    history.add_user("question 4")
    history.rollback()
    assert [m["content"] for m in history.messages] == ["question 3", "answer 3"]
    assert not history.record_agent_reply("an answer to nothing")  # no user turn was answered
    assert history.next_prompt_prefix()[-1] == {"role": "user", "content": ""}
