"""The remote brain: any engine that speaks the OpenAI-compatible API (vLLM, SGLang, llama.cpp's
server, Ollama) answers through streamed chat completions (`POST /v1/chat/completions`,
`stream: true`, server-sent events). Two modes (`openai.mode`):

- text: the utterance is transcribed, locally by whisper tiny.en (`whisper_asr`, as in the
  cascade: the same model files, `[asr]` settings) or by the engine (`POST
  /v1/audio/transcriptions`, a WAV), then answered with the conversation history: the same
  `ChatHistory` as the cascade (bounded, only what was played, rolled back for a discarded
  preemptive answer, fillers and noise unanswered), without its token bound (the engine's
  context is its own).
- audio: a speech-LLM (Voxtral served by vLLM) hears the utterance itself, sent in the chat
  message as an `input_audio` part (base64 WAV); the persona goes in that message's text (the
  Voxtral tokenizer refuses a system message with audio) and earlier turns stay as text. The
  transcript (for the page and the history) is made alongside the answer, local or remote, and
  is known before the first piece is passed on, so fillers and noise still get no answer.

Tools (text mode; see `agent.brains.base`): each request carries the tool box's specs as `tools`
and its instructions after the persona in the system message; the first round of an answer to
words that require a tool (`ToolPrompt.required_tool`, e.g. a calculation) is that call: read
from the words when the tool can (`ToolPrompt.call_from_words`, no engine round; its result is
given with the question, `ChatHistory.add_tool_round`), else the round's output is constrained
to that call written as JSON (`response_format` with the call's JSON schema,
`ToolPrompt.call_schema`); every round sends `tool_choice: "auto"`. (Not `tool_choice` naming
the function: llama.cpp's server ignores that form, and with "required" Qwen2.5-Coder-1.5B still
wrote the call as text, `{{"name": ...}}}` then newlines up to max_tokens, measured with
llama-server 0.3.36's sources; `response_format` is in the OpenAI API and vLLM and SGLang
constrain it too.) `delta.content` is spoken as it comes, through a `ToolMarkupScanner`: a call
written as text (the forced round, or an "auto" round on a small model) is taken as a call and
never read out. `delta.tool_calls` are gathered by the client and come after the round's text as
`ToolCall`s; `continue_reply`
adds the round (assistant `tool_calls` message, one `tool` message per result) to the
`ChatHistory` and streams the next round. Audio mode refuses tools at start-up: the next round
would have to send the utterance's audio again, and a speech-LLM's tool calling is untested here.

Closing the reply (barge-in, a discarded preemptive answer) closes the HTTP connection, so the
engine stops generating. Failures are `EngineError`s with a clear message (never the API key),
which the session turns into an `error` event; the next turn tries again.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import time
from typing import AsyncIterator, Protocol, Sequence

import numpy as np

from agent.config import BrainConfig, Config, OpenAIConfig
from agent.pipeline.audio import wav_bytes
from agent.runtime.openai_api import OpenAIClient, api_key_from_env

from .base import (Brain, BrainKind, Conversation, ReplyItem, ToolCall, ToolPrompt, ToolResult, TranscriptCallback,
                   check_tools)
from .chat_history import ChatHistory, persona
from .tool_markup import ToolMarkupScanner
from .whisper_asr import WHISPER_FILES, WhisperTranscriber, whisper_dir

log = logging.getLogger(__name__)

RATE = 16000


class Transcriber(Protocol):
    async def transcribe(self, audio: np.ndarray) -> str: ...


class RemoteTranscriber:
    """Transcription by the engine: `POST /v1/audio/transcriptions` with the utterance as a WAV."""

    def __init__(self, client: OpenAIClient, model: str, language: str) -> None:
        self.client = client
        self.model = model
        self.language = language

    async def transcribe(self, audio: np.ndarray) -> str:
        return await self.client.transcription(wav_bytes(audio, RATE), self.model, self.language)


def input_audio_part(audio: np.ndarray) -> dict:
    """An utterance (int16, 16 kHz) as an OpenAI `input_audio` content part (base64 WAV)."""
    return {"type": "input_audio",
            "input_audio": {"data": base64.b64encode(wav_bytes(audio, RATE)).decode("ascii"), "format": "wav"}}


class OpenAICompatibleBrain(Brain):
    name = "openai"

    def __init__(self, client: OpenAIClient, transcriber: Transcriber, settings: OpenAIConfig,
                 brain: BrainConfig) -> None:
        self.client = client
        self.transcriber = transcriber
        self.settings = settings
        self.config = brain

    @property
    def supports_tools(self) -> bool:  # type: ignore[override]
        return self.settings.mode == "text"

    tools_hint = "or use openai.mode = text"  # what check_tools suggests when tools are refused (audio mode)

    def new_history(self, tools: ToolPrompt | None = None) -> ChatHistory:
        return ChatHistory(persona(self.config.system_prompt, tools), self.config.history_turns)

    def new_conversation(self, tools: ToolPrompt | None = None) -> "OpenAICompatibleConversation":
        tools = tools if tools is not None and tools.specs else None
        check_tools(self, tools)
        return OpenAICompatibleConversation(self, tools)

    def request(self, messages: list[dict], max_tokens: int | None = None, tools: ToolPrompt | None = None,
                required_tool: str | None = None) -> dict:
        """The body of a chat completion request for `messages` (with the `tools`, and
        the output constrained to a call of `required_tool` when one is named: see the module's docstring)."""
        body: dict = {"messages": messages, "max_tokens": max_tokens or self.settings.max_tokens,
                      "temperature": self.settings.temperature}
        if self.settings.model:
            body["model"] = self.settings.model
        if tools is not None:
            body["tools"] = list(tools.specs)
            body["tool_choice"] = "auto"
            if required_tool:
                body["response_format"] = {"type": "json_schema", "json_schema": {
                    "name": f"{required_tool}_call", "strict": True, "schema": tools.call_schema(required_tool)}}
        return body

    def first_turn_request(self, tools: ToolPrompt | None = None) -> dict:
        """A first turn's request up to the user's words, for one token: what warms an engine's
        prompt cache (the warm-up here, and `run.py engine` for every slot)."""
        tools = tools if tools is not None and tools.specs and self.supports_tools else None
        return self.request(self.new_history(tools).next_prompt_prefix(), max_tokens=1, tools=tools)

    def stream(self, messages: list[dict], tools: ToolPrompt | None = None,
               required_tool: str | None = None) -> AsyncIterator[str | ToolCall]:
        return self.client.chat_stream(self.request(messages, tools=tools, required_tool=required_tool))

    def audio_prompt(self, history: ChatHistory, audio: np.ndarray) -> list[dict]:
        """Speech-LLM mode: the earlier turns as text, then the utterance with the persona."""
        content = [input_audio_part(audio)]
        if self.config.system_prompt:
            content.append({"type": "text", "text": self.config.system_prompt})
        return [*history.messages, {"role": "user", "content": content}]

    async def warm_up(self, tools: ToolPrompt | None = None) -> None:
        started = time.perf_counter()
        if isinstance(self.transcriber, WhisperTranscriber):
            await self.transcriber.transcribe(np.zeros(RATE, dtype=np.int16))
        # One token for a first turn's request up to the user's words (the persona and, with
        # `tools`, their instructions and specs: what every conversation sends), so an engine with
        # a prompt cache has it. A different prompt here would take a slot's cache from the real
        # prefix: with llama-server that slot's next caller evaluated the whole ~300-token prompt
        # in one batch with the other slots' tokens, which stalled every call for seconds
        # (scripts/bench-many-callers.sh). An engine that is not up yet is only a warning: each
        # turn tries again, and fails as an `error` event.
        try:
            if self.settings.mode == "text":
                async with contextlib.aclosing(self.client.chat_stream(self.first_turn_request(tools))) as pieces:
                    async for _ in pieces:
                        pass
            else:
                why_not = await self.client.check()
                if why_not:
                    raise RuntimeError(why_not)
        except Exception as exc:  # noqa: BLE001 - start-up goes on; the message says what failed
            log.warning("openai brain: the engine at %s did not answer the warm-up: %s", self.client.shown_url, exc)
            return
        log.info("openai brain warmed up in %.2fs", time.perf_counter() - started)

    def load_times(self) -> dict[str, float]:
        return {"asr": self.transcriber.load_s} if isinstance(self.transcriber, WhisperTranscriber) else {}

    def close(self) -> None:
        self.client.close()
        if isinstance(self.transcriber, WhisperTranscriber):
            self.transcriber.thread.shutdown()


class OpenAICompatibleConversation(Conversation):
    def __init__(self, brain: OpenAICompatibleBrain, tools: ToolPrompt | None = None) -> None:
        self.brain = brain
        self.tools = tools
        self.chat_history = brain.new_history(tools)
        # the last round's text, its calls, and whether they were read from the user's words
        self._round: tuple[str, list[ToolCall], bool] | None = None
        self._call_ids: set[str] = set()  # ids given to calls so far (each unique in the conversation)
        self._heard: tuple[np.ndarray, str] | None = None  # the last transcribe(): reply() reuses it

    @property
    def history(self) -> list[dict]:
        return self.chat_history.messages

    async def transcribe(self, audio: np.ndarray) -> str:
        text = await self.brain.transcriber.transcribe(audio)
        self._heard = (audio, text)
        return text

    async def _transcript(self, audio: np.ndarray) -> str:
        heard, self._heard = self._heard, None
        if heard is not None and np.array_equal(heard[0], audio):
            return heard[1]
        return await self.brain.transcriber.transcribe(audio)

    def reply(self, audio: np.ndarray, on_transcript: TranscriptCallback) -> AsyncIterator[ReplyItem]:
        self._round = None
        if self.brain.settings.mode == "audio":
            return self._reply_to_speech(audio, on_transcript)
        return self._reply_to_text(audio, on_transcript)

    async def _reply_to_text(self, audio: np.ndarray, on_transcript: TranscriptCallback) -> AsyncIterator[ReplyItem]:
        self.chat_history.begin_reply()
        text = await self._transcript(audio)
        if on_transcript(text) is False or not text:
            return
        self.chat_history.add_user(text)
        ready = self.tools.call_from_words(text, self._new_call_id) if self.tools is not None else None
        if ready is not None:  # the words hold the call itself (arithmetic): no engine round writes it
            self._round = ("", [ready], True)
            yield ready
            return
        required = self.tools.required_tool(text) if self.tools is not None else None
        if required is not None:
            log.debug("the user's words call for %s: the output is held to that call", required)
        async with contextlib.aclosing(self._round_items(required)) as items:
            async for item in items:
                yield item

    async def continue_reply(self, results: Sequence[ToolResult]) -> AsyncIterator[ReplyItem]:
        if self._round is None or not self._round[1]:
            raise RuntimeError("continue_reply() without a round that asked for tools")
        said, calls, from_words = self._round
        self._round = None
        self.chat_history.add_tool_round(said, calls, results, from_words)
        async with contextlib.aclosing(self._round_items()) as items:
            async for item in items:
                yield item

    async def _round_items(self, required: str | None = None) -> AsyncIterator[ReplyItem]:
        """One round: the text as it streams, then the calls the model asked for (if any)."""
        said: list[str] = []
        calls: list[ToolCall] = []
        scanner = ToolMarkupScanner(self._new_call_id) if self.tools is not None else None
        async with contextlib.aclosing(self.brain.stream(self.chat_history.prompt(), self.tools, required)) as items:
            async for item in items:
                if isinstance(item, ToolCall):
                    calls.append(self._unique_id(item))
                    continue
                if scanner is not None:
                    item = scanner.feed(item)
                said.append(item)
                yield item
        if scanner is not None:
            rest, written = scanner.finish()
            if written and not calls:
                calls = written
            elif rest:
                said.append(rest)
                yield rest
        if calls:
            log.debug("the model asks for %s", ", ".join(f"{c.name}({c.arguments})" for c in calls))
            self._round = ("".join(said), calls, False)
            for call in calls:
                yield call

    def _unique_id(self, call: ToolCall) -> ToolCall:
        """`call` with an id no earlier call of this conversation had (an engine may give none)."""
        if call.id and call.id not in self._call_ids:
            self._call_ids.add(call.id)
            return call
        return ToolCall(self._new_call_id(), call.name, call.arguments)

    def _new_call_id(self) -> str:
        call_id = f"call_{len(self._call_ids) + 1}"
        while call_id in self._call_ids:
            call_id += "_"
        self._call_ids.add(call_id)
        return call_id

    async def _reply_to_speech(self, audio: np.ndarray, on_transcript: TranscriptCallback) -> AsyncIterator[str]:
        self.chat_history.begin_reply()
        messages = self.brain.audio_prompt(self.chat_history, audio)
        transcribing = asyncio.ensure_future(self._transcript(audio))  # alongside the engine's answer
        try:
            async with contextlib.aclosing(self.brain.stream(messages)) as pieces:
                first = True
                async for piece in pieces:
                    if first:  # the transcript decides whether the answer is passed on at all
                        first = False
                        text = await transcribing
                        if on_transcript(text) is False or not text:
                            return
                        self.chat_history.add_user(text)
                    yield piece
            if first:  # an empty answer: still say what was heard
                text = await transcribing
                if on_transcript(text) is not False and text:
                    self.chat_history.add_user(text)
        finally:
            if not transcribing.done():
                transcribing.cancel()
            elif not transcribing.cancelled():
                transcribing.exception()  # retrieved: an error of its own is not news after the answer's

    def record_agent_reply(self, spoken_text: str) -> None:
        self._round = None
        self.chat_history.record_agent_reply(spoken_text)

    def rollback(self) -> None:
        self._round = None
        self.chat_history.rollback()


def load(config: Config, paths) -> OpenAICompatibleBrain:
    settings = config.openai
    api_key = api_key_from_env(settings.api_key_env, "openai.api_key_env")
    client = OpenAIClient(settings.base_url, api_key, settings.connect_timeout_s, settings.read_timeout_s)
    if settings.transcription == "local":
        transcriber: Transcriber = WhisperTranscriber(whisper_dir(paths), config.asr)
    else:
        transcriber = RemoteTranscriber(client, settings.transcription_model or settings.model, config.asr.language)
    log.info("openai brain: engine %s, model %s, mode %s, transcription %s, API key %s", client.shown_url,
             settings.model or "(the engine's)", settings.mode, settings.transcription,
             f"from ${settings.api_key_env}" if api_key else "none")
    return OpenAICompatibleBrain(client, transcriber, settings, config.brain)


KIND = BrainKind(
    name="openai",
    model_files=lambda config: WHISPER_FILES if config.openai.transcription == "local" else (),
    load=load,
    # Never picked by brain.kind = auto: it needs an engine somebody configured.
    unavailable=lambda _config: "openai is chosen only by name (brain.kind = openai, with openai.base_url)",
)
