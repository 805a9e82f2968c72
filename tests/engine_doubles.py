"""Test doubles of OpenAI-compatible servers (aiohttp, on 127.0.0.1) for what the real engine the
tests run (llama.cpp's llama-server, tests/llama_server.py) cannot show here:

- `FailingEngine`: failure modes ONLY (HTTP errors with a body, malformed or unfinished event
  streams, a stream that stalls, a reply that is not an event stream). It never answers anything.
- `SpeechLLMRequestChecker`: vLLM serving Voxtral (a GPU engine that cannot run here) receives
  speech-LLM requests (`input_audio`) and transcription requests; this double checks their shape
  and records them, and answers with a fixed text that says it is the double.
- `ToolCallingEngineDouble`: a scripted model that asks for the calculator in OpenAI's streamed
  `tool_calls` format (the call's arguments split over several chunks), checks that the next
  request carries the assistant `tool_calls` message and the `tool` result, and answers with the
  product it reads in that result (the real llama.cpp server cannot: see the README's tools section).
- `HibariSpeechServer`: `/v1/audio/speech` synthesised by the project's real hibari voice and
  streamed as raw 24 kHz PCM in small chunks (no public engine serves speech on a CPU here).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import io
import json
import wave
from dataclasses import dataclass, field

import numpy as np
from aiohttp import web


class LocalServer:
    """An aiohttp app on 127.0.0.1 (a free port), as an async context manager."""

    def __init__(self) -> None:
        self.app = web.Application()
        self.requests: list[dict] = []  # what each request carried (path, headers, body)
        self._runner: web.AppRunner | None = None
        self.url = ""

    async def __aenter__(self):
        self._runner = web.AppRunner(self.app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.url = "http://127.0.0.1:%d" % self._runner.addresses[0][1]
        return self

    async def __aexit__(self, *exc) -> None:
        await self._runner.cleanup()

    def record(self, request: web.Request, body) -> None:
        self.requests.append({"path": request.path, "headers": dict(request.headers), "body": body})


async def event_stream(request: web.Request) -> web.StreamResponse:
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
    await response.prepare(request)
    return response


def sse(payload) -> bytes:
    return f"data: {payload if isinstance(payload, str) else json.dumps(payload)}\n\n".encode()


def delta(text: str) -> dict:
    return {"choices": [{"index": 0, "delta": {"content": text}}]}


class FailingEngine(LocalServer):
    """Fails every request the way `mode` says (see the module docstring). In "stall" mode,
    `stalled` is set once a stream stalls and `disconnected` once its client has gone away."""

    MODES = ("status", "malformed", "no_done", "stall", "not_event_stream", "error_event")

    def __init__(self, mode: str, status: int = 500, body: str = "") -> None:
        super().__init__()
        assert mode in self.MODES
        self.mode, self.status, self.body = mode, status, body
        self.stalled = asyncio.Event()
        self.disconnected = asyncio.Event()
        for path in ("/v1/chat/completions", "/v1/audio/transcriptions", "/v1/audio/speech"):
            self.app.router.add_post(path, self.handle)

    async def handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        self.record(request, body)
        if self.mode == "status":
            return web.Response(status=self.status, text=self.body, content_type="application/json")
        if self.mode == "not_event_stream":
            return web.json_response({"id": "x", "choices": [{"message": {"content": "not streamed"}}]})
        response = await event_stream(request)
        await response.write(sse(delta("Hello")))
        if self.mode == "malformed":
            await response.write(b"data: {\"choices\": [{\"delta\": {\"content\": \n\n")
        elif self.mode == "error_event":
            await response.write(sse({"error": {"message": "CUDA out of memory", "code": 500}}))
        elif self.mode == "stall":
            self.stalled.set()
            try:
                while True:  # the client may go: a write to a closed connection fails
                    await asyncio.sleep(0.05)
                    if request.transport is None or request.transport.is_closing():
                        raise ConnectionResetError
            except (ConnectionResetError, asyncio.CancelledError):
                self.disconnected.set()
                raise
        return response  # no_done (and the others): the stream just ends, without [DONE]


@dataclass
class CheckedRequest:
    path: str
    body: dict = field(default_factory=dict)
    audio: np.ndarray | None = None  # the WAV it carried, decoded
    rate: int = 0


def decode_wav(data: bytes) -> tuple[np.ndarray, int]:
    with wave.open(io.BytesIO(data), "rb") as wav:
        assert wav.getnchannels() == 1 and wav.getsampwidth() == 2, "expected 16-bit mono WAV"
        return np.frombuffer(wav.readframes(wav.getnframes()), dtype="<i2"), wav.getframerate()


class SpeechLLMRequestChecker(LocalServer):
    """Checks speech-LLM chat requests (the newest user message carries `input_audio`: base64
    WAV, format "wav") and multipart transcription requests as vLLM receives them; answers with
    `ANSWER` streamed word by word and transcribes every WAV as `TRANSCRIPT`."""

    ANSWER = "This is the request checker's fixed answer."

    def __init__(self, transcript: str = "what is the capital of france") -> None:
        super().__init__()
        self.transcript = transcript
        self.checked: list[CheckedRequest] = []
        self.app.router.add_post("/v1/chat/completions", self.chat)
        self.app.router.add_post("/v1/audio/transcriptions", self.transcriptions)

    async def chat(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        self.record(request, body)
        try:
            self._check_chat(request, body)
        except AssertionError as exc:  # the client sees why, in the error message
            return web.json_response({"error": {"message": f"request checker: {exc}"}}, status=400)
        response = await event_stream(request)
        for i, word in enumerate(self.ANSWER.split()):
            await response.write(sse(delta(word if i == 0 else " " + word)))
        await response.write(sse("[DONE]"))
        return response

    def _check_chat(self, request: web.Request, body: dict) -> None:
        assert body["stream"] is True
        messages = body["messages"]
        assert all(m["role"] in ("user", "assistant") for m in messages), "no system message with audio (Voxtral)"
        newest = messages[-1]
        assert newest["role"] == "user" and isinstance(newest["content"], list)
        audio_part = newest["content"][0]
        assert audio_part["type"] == "input_audio" and audio_part["input_audio"]["format"] == "wav"
        audio, rate = decode_wav(base64.b64decode(audio_part["input_audio"]["data"], validate=True))
        assert all(isinstance(m["content"], str) for m in messages[:-1]), "earlier turns stay as text"
        self.checked.append(CheckedRequest(request.path, body, audio, rate))

    async def transcriptions(self, request: web.Request) -> web.Response:
        form = await request.post()
        fields = {k: v for k, v in form.items() if k != "file"}
        self.record(request, fields)
        upload = form.get("file")
        if not isinstance(upload, web.FileField) or upload.content_type != "audio/wav":
            return web.json_response({"error": {"message": "request checker: expected a WAV file field"}}, status=400)
        audio, rate = decode_wav(upload.file.read())
        self.checked.append(CheckedRequest(request.path, fields, audio, rate))
        return web.json_response({"text": self.transcript})


class ToolCallingEngineDouble(LocalServer):
    """A scripted model for the openai brain's tool rounds (`/v1/chat/completions`, streamed).

    Round 1 (no `tool` message yet): checks the request carries the calculator's spec, records its
    `tool_choice`, and streams "Let me work that out." then a calculator call with `EXPRESSION`,
    its id and name in the first `tool_calls` fragment and the arguments split over
    `ARGUMENT_FRAGMENTS`, ending with finish_reason "tool_calls". Round 2: checks the assistant
    message echoes that call (id, name, the joined arguments) and is followed by a `tool` message
    for its id, then streams an answer built from that message's result. A failed check answers
    400 with the reason (the client's error says it). With `malformed`, round 1's call carries
    its arguments as a JSON object instead of a string (not what the API defines). With
    `written_as_text`, round 1 writes the call as JSON in `delta.content` (split over several
    chunks, finish_reason "stop"), as a small model behind llama.cpp's server does in an "auto"
    round; round 2 then expects the id the client gave it (`call_1`). With `agent_calls`, the
    question is one the agent reads the call from itself (`PLAIN`: no round 1 comes) and the one
    request expects the calculator's result given with the question; by default it is
    `MODEL_WRITES`, a calculation the agent leaves to the model ("roughly" could change what is
    asked).
    `/v1/audio/transcriptions` hears every utterance as the question."""

    CALL_ID = "call_double_1"
    EXPRESSION = "47 * 38"
    ARGUMENT_FRAGMENTS = ('{"expre', 'ssion": "4', '7 * 3', '8"}')

    PLAIN = "What is 47 times 38?"
    MODEL_WRITES = "Roughly, what is 47 times 38?"

    def __init__(self, malformed: bool = False, written_as_text: bool = False, agent_calls: bool = False) -> None:
        super().__init__()
        assert "".join(self.ARGUMENT_FRAGMENTS) == json.dumps({"expression": self.EXPRESSION})
        self.transcript = self.PLAIN if agent_calls else self.MODEL_WRITES
        self.malformed = malformed
        self.written_as_text = written_as_text
        self.agent_calls = agent_calls
        self.call_id = "call_1" if written_as_text or agent_calls else self.CALL_ID
        self.chats: list[dict] = []  # each chat request's body
        self.app.router.add_post("/v1/chat/completions", self.chat)
        self.app.router.add_post("/v1/audio/transcriptions", self.transcriptions)

    async def transcriptions(self, request: web.Request) -> web.Response:
        await request.post()
        return web.json_response({"text": self.transcript})

    async def chat(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        self.record(request, body)
        self.chats.append(body)
        messages = body["messages"]
        try:
            assert body["stream"] is True
            assert "calculator" in [t["function"]["name"] for t in body.get("tools", [])], "no calculator in tools"
            tool_messages = [m for m in messages if m["role"] == "tool"]
            if self.agent_calls:
                answer = self._check_result_with_question(messages)
            else:
                answer = self._check_round_two(messages) if tool_messages else None
        except (AssertionError, KeyError, TypeError, IndexError) as exc:
            return web.json_response({"error": {"message": f"tool-calling double: {exc!r}"}}, status=400)
        response = await event_stream(request)
        if answer is not None:
            for i, word in enumerate(answer.split()):
                await response.write(sse(delta(word if i == 0 else " " + word)))
            await response.write(sse({"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}))
        else:
            await response.write(sse(delta("Let me work that out.")))
            if self.written_as_text:
                written = ' {"name": "calculator", "arguments": ' + "".join(self.ARGUMENT_FRAGMENTS) + "}"
                for at in range(0, len(written), 7):
                    await response.write(sse(delta(written[at:at + 7])))
                await response.write(sse({"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}))
                await response.write(sse("[DONE]"))
                return response
            if self.malformed:
                await response.write(sse(self._call_chunk({"index": 0, "id": self.CALL_ID, "type": "function",
                                                           "function": {"name": "calculator",
                                                                        "arguments": {"expression": self.EXPRESSION}}})))
            else:
                await response.write(sse(self._call_chunk({"index": 0, "id": self.CALL_ID, "type": "function",
                                                           "function": {"name": "calculator", "arguments": ""}})))
                for fragment in self.ARGUMENT_FRAGMENTS:
                    await response.write(sse(self._call_chunk({"index": 0, "function": {"arguments": fragment}})))
            await response.write(sse({"choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]}))
        await response.write(sse("[DONE]"))
        return response

    @staticmethod
    def _call_chunk(fragment: dict) -> dict:
        return {"choices": [{"index": 0, "delta": {"tool_calls": [fragment]}, "finish_reason": None}]}

    def _check_result_with_question(self, messages: list[dict]) -> str:
        question = messages[-1]
        assert question["role"] == "user" and not [m for m in messages if m["role"] == "tool"], messages
        asked, _, note = question["content"].partition("\n(calculator: ")
        assert asked == self.PLAIN and note.endswith(")") and "=" in note, f"no calculator result with the question: {question}"
        return f"{self.EXPRESSION.replace('*', 'times')} is {note[:-1].rpartition('=')[2].strip()}."

    def _check_round_two(self, messages: list[dict]) -> str:
        assistant, tool = messages[-2], messages[-1]
        assert assistant["role"] == "assistant", f"expected the assistant's call before the result: {assistant}"
        assert assistant["tool_calls"] == [{"id": self.call_id, "type": "function", "function": {
            "name": "calculator", "arguments": "".join(self.ARGUMENT_FRAGMENTS)}}], assistant["tool_calls"]
        assert isinstance(assistant["content"], str), "content: the round's text"
        assert tool["role"] == "tool" and tool["tool_call_id"] == self.call_id, tool
        result = tool["content"]
        assert isinstance(result, str) and "=" in result, f"not a calculator result: {result!r}"
        return f"{self.EXPRESSION.replace('*', 'times')} is {result.rpartition('=')[2].strip()}."


class HibariSpeechServer(LocalServer):
    """`POST /v1/audio/speech` spoken by the real hibari voice (response_format "pcm": 16-bit
    mono 24 kHz), written in `chunk_bytes` pieces (odd-sized, so samples straddle chunks) as it is
    synthesised. `aborted` is set when the client leaves before the end."""

    def __init__(self, voice, chunk_bytes: int = 4801, pause_s: float = 0.01) -> None:
        super().__init__()
        self.voice = voice
        self.chunk_bytes = chunk_bytes
        self.pause_s = pause_s
        self.aborted = asyncio.Event()
        self.finished = 0
        self.app.router.add_post("/v1/audio/speech", self.speech)

    async def speech(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        self.record(request, body)
        if body.get("response_format") != "pcm" or not body.get("input"):
            return web.json_response({"error": {"message": "only response_format pcm with an input"}}, status=400)
        assert self.voice.sample_rate == 24000
        response = web.StreamResponse(headers={"Content-Type": "audio/pcm"})
        await response.prepare(request)
        try:
            async with contextlib.aclosing(self.voice.speak(body["input"])) as chunks:
                async for chunk in chunks:
                    data = chunk.astype("<i2").tobytes()
                    for start in range(0, len(data), self.chunk_bytes):
                        if request.transport is None or request.transport.is_closing():
                            raise ConnectionResetError
                        await response.write(data[start:start + self.chunk_bytes])
                        await asyncio.sleep(self.pause_s)
            await response.write_eof()
        except (ConnectionResetError, asyncio.CancelledError):
            self.aborted.set()
            raise
        self.finished += 1
        return response
