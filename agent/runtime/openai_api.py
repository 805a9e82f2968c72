"""A client for the OpenAI-compatible HTTP API that serving engines speak (vLLM, SGLang, llama.cpp's
server, Ollama, speech servers): streamed chat completions (server-sent events), audio
transcriptions and speech. aiohttp is the HTTP client; this module is the only place in `agent/`
that uses it (tests/test_architecture.py keeps it so).

Every failure is an `EngineError` whose message says which engine and what went wrong: nothing
listening or no connection in time (`EngineUnreachable`, also a connection lost mid-answer),
nothing received for `read_timeout_s` (`EngineTimeout`), an HTTP error with the server's own
message (`EngineRejected`), a reply that is not what the API defines (`EngineProtocolError`).
The API key only ever goes into the Authorization header: it is redacted from any text the
server sends back, and no message, log line or repr holds it.

Closing a stream before its end (the answer's reader was cancelled: a barge-in, a discarded
preemptive answer) closes the HTTP connection at once, so the engine sees the client go away and
stops generating; a stream read to its end leaves the connection in the pool for the next request.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import urllib.parse
from typing import Any, AsyncIterator

import aiohttp

from .tool_call import ToolCall

log = logging.getLogger(__name__)

ERROR_BODY_BYTES = 65536  # the most of an error reply that is read for its message
MESSAGE_CHARS = 300  # the most of a server's text quoted in an error message
DRAIN_S = 0.5  # after the end of a stream, how long its body's last bytes may take (to keep the connection)
STALE_RETRIES = 2  # a POST whose pooled connection the server had already closed is sent again this often


_closing: set[asyncio.Task] = set()  # sessions being closed


class EngineError(RuntimeError):
    """A request to an OpenAI-compatible engine failed (the message says how; never the API key)."""


class EngineUnreachable(EngineError):
    """Nothing answered at the engine's address, or the connection broke before the reply ended."""


class EngineTimeout(EngineError):
    """The engine sent nothing for longer than the read timeout."""


class EngineRejected(EngineError):
    """The engine answered with an HTTP error status."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


class EngineProtocolError(EngineError):
    """The engine's reply is not what the OpenAI API defines (a malformed event stream, ...)."""


def api_key_from_env(variable: str, config_key: str) -> str:
    """The API key from the environment variable named by `config_key` ("" when no variable is
    named). A named variable that is unset or empty is an error naming the variable, not the key."""
    if not variable:
        return ""
    value = os.environ.get(variable, "")
    if not value:
        raise ValueError(f"config key {config_key!r} names the environment variable {variable!r}, which is "
                         f"not set (or empty): export the API key in it, or set {config_key} = \"\"")
    return value


def base_url_of(url: str) -> str:
    """The server's root: "http://h:8000/v1/" -> "http://h:8000" (the API paths are appended)."""
    url = url.strip().rstrip("/")
    return url[: -len("/v1")] if url.endswith("/v1") else url


def shown_url(url: str) -> str:
    """`url` as messages and logs show it: without any user:password@ part."""
    parts = urllib.parse.urlsplit(url)
    if "@" not in parts.netloc:
        return url
    return urllib.parse.urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2]))


def error_message(body: str) -> str:
    """The human part of an error reply: OpenAI's {"error": {"message": ...}}, FastAPI's
    {"detail": ...}, {"message": ...}, or the text itself (shortened)."""
    try:
        payload = json.loads(body)
    except ValueError:
        payload = None
    if isinstance(payload, dict):
        error = payload.get("error")
        if isinstance(error, dict) and error.get("message"):
            return str(error["message"])[:MESSAGE_CHARS]
        for key in ("error", "detail", "message"):
            if isinstance(payload.get(key), (str, list)) and payload[key]:
                return str(payload[key])[:MESSAGE_CHARS]
    text = " ".join(body.split())
    return text[:MESSAGE_CHARS] or "(empty body)"


async def sse_data(content: aiohttp.StreamReader) -> AsyncIterator[str]:
    """The `data` of each server-sent event (text/event-stream): lines up to a blank line form an
    event, its `data:` lines joined by newlines; comments (": ping") and other fields are skipped."""
    data: list[str] = []
    async for raw in content:
        try:
            line = raw.decode("utf-8").rstrip("\r\n")
        except UnicodeDecodeError:
            raise EngineProtocolError("the event stream is not UTF-8 text") from None
        if not line:
            if data:
                yield "\n".join(data)
                data = []
            continue
        if line.startswith(":"):
            continue
        name, _, value = line.partition(":")
        if name == "data":
            data.append(value[1:] if value.startswith(" ") else value)
    if data:
        yield "\n".join(data)


class ToolCallGatherer:
    """The tool calls of one streamed answer, put together from `delta.tool_calls` fragments:
    each fragment names its call by `index`; the call's `id` and `function.name` come once
    (usually first), `function.arguments` in pieces to be joined. Anything else is an
    `EngineProtocolError` naming `where`."""

    def __init__(self, where: str) -> None:
        self.where = where
        self._calls: dict[int, dict[str, Any]] = {}  # index -> {"id", "name", "arguments": [pieces]}

    def _malformed(self, what: str) -> EngineProtocolError:
        return EngineProtocolError(f"{self.where} sent a malformed tool call: {what}")

    def add(self, fragments: Any) -> None:
        if not isinstance(fragments, list):
            raise self._malformed("delta.tool_calls is not a list")
        for fragment in fragments:
            if not isinstance(fragment, dict):
                raise self._malformed("a delta.tool_calls entry is not an object")
            index = fragment.get("index")
            if index is None and self._calls:  # an engine that leaves it out: a named fragment starts a call
                index = max(self._calls) + (1 if isinstance(fragment.get("function"), dict)
                                            and fragment["function"].get("name") else 0)
            elif index is None:
                index = 0
            if not isinstance(index, int) or isinstance(index, bool) or index < 0:
                raise self._malformed("a delta.tool_calls entry has no integer index")
            call = self._calls.setdefault(index, {"id": "", "name": "", "arguments": []})
            call_id = fragment.get("id")
            if call_id is not None:
                if not isinstance(call_id, str):
                    raise self._malformed(f"call {index}'s id is not a string")
                call["id"] = call_id or call["id"]
            function = fragment.get("function")
            if function is None:
                continue
            if not isinstance(function, dict):
                raise self._malformed(f"call {index}'s function is not an object")
            name, arguments = function.get("name"), function.get("arguments")
            if name is not None:
                if not isinstance(name, str):
                    raise self._malformed(f"call {index}'s function name is not a string")
                # Sent once by OpenAI, with every fragment by llama.cpp's server: a repeat is not a piece.
                if name != call["name"]:
                    call["name"] += name
            if arguments is not None:
                if not isinstance(arguments, str):
                    raise self._malformed(f"call {index}'s arguments are not a JSON string")
                call["arguments"].append(arguments)

    def finish(self) -> list[ToolCall]:
        """The gathered calls in index order (none: the answer asked for no tool)."""
        calls = []
        for index in sorted(self._calls):
            call = self._calls[index]
            if not call["name"]:
                raise self._malformed(f"call {index} has no function name")
            calls.append(ToolCall(call["id"], call["name"], "".join(call["arguments"]) or "{}"))
        return calls


class OpenAIClient:
    """Requests to one engine at `base_url` (see the module docstring). One aiohttp session per
    event loop, made on first use; `close()` releases its connections."""

    def __init__(self, base_url: str, api_key: str, connect_timeout_s: float, read_timeout_s: float,
                 what: str = "engine") -> None:
        self.base_url = base_url_of(base_url)
        self.shown_url = shown_url(self.base_url)  # for messages and logs
        self.what = what  # names the server in messages: "engine", "speech server"
        self.connect_timeout_s = connect_timeout_s
        self.read_timeout_s = read_timeout_s
        self.__api_key = api_key
        self._http: aiohttp.ClientSession | None = None
        self._http_loop: asyncio.AbstractEventLoop | None = None

    def __repr__(self) -> str:
        return f"OpenAIClient({self.shown_url!r}, api key {'set' if self.__api_key else 'none'})"

    @property
    def sends_api_key(self) -> bool:
        return bool(self.__api_key)

    def redact(self, text: str) -> str:
        """`text` with the API key replaced (a server may quote the header it refused), and the
        base URL shown without its user:password@ part."""
        text = text.replace(self.base_url, self.shown_url)
        return text.replace(self.__api_key, "[API key]") if self.__api_key else text

    def _session(self) -> aiohttp.ClientSession:
        loop = asyncio.get_running_loop()
        if self._http is None or self._http.closed or self._http_loop is not loop:
            timeout = aiohttp.ClientTimeout(total=None, connect=self.connect_timeout_s, sock_read=self.read_timeout_s)
            self._http = aiohttp.ClientSession(timeout=timeout)
            self._http_loop = loop
        return self._http

    def close(self) -> None:
        """Close the pooled connections (their closing handshake finishes on the running loop)."""
        http, self._http = self._http, None
        if http is None or http.closed:
            return
        try:
            task = asyncio.get_running_loop().create_task(http.close())
        except RuntimeError:  # no loop running any more: its transports went with it
            return
        _closing.add(task)  # a strong reference until it is done
        task.add_done_callback(_closing.discard)

    @contextlib.asynccontextmanager
    async def request(self, path: str, *, json_body: dict | None = None, form: aiohttp.FormData | None = None,
                      expect_event_stream: bool = False) -> AsyncIterator[aiohttp.ClientResponse]:
        """POST `path`; yields the response once it has a success status. Failures (here and while
        the caller reads the body inside the `async with`) become `EngineError`s. Leaving early
        (an exception, cancellation, a closed generator) closes the connection."""
        url = self.base_url + path
        where = f"the {self.what} at {self.shown_url}"
        headers = {"Authorization": f"Bearer {self.__api_key}"} if self.__api_key else {}
        if expect_event_stream:
            headers["Accept"] = "text/event-stream"
        response: aiohttp.ClientResponse | None = None
        finished = False
        try:
            response = await self._post(url, json_body, form, headers)
            if response.status >= 400:
                body = (await response.content.read(ERROR_BODY_BYTES)).decode("utf-8", "replace")
                raise EngineRejected(self.redact(f"{where} answered {response.status} {response.reason or ''} "
                                                 f"to POST {path}: {error_message(body)}"), response.status)
            content_type = response.headers.get("Content-Type", "")
            if expect_event_stream and not content_type.startswith("text/event-stream"):
                body = (await response.content.read(ERROR_BODY_BYTES)).decode("utf-8", "replace")
                raise EngineProtocolError(self.redact(
                    f"{where} answered POST {path} with {content_type or 'no content type'} instead of an "
                    f"event stream: {error_message(body)}"))
            yield response
            finished = True
            if not response.content.is_eof():  # e.g. after [DONE]: the body's end is on its way
                with contextlib.suppress(asyncio.TimeoutError, aiohttp.ClientError):
                    async with asyncio.timeout(DRAIN_S):
                        await response.content.read()
        except EngineError:
            raise
        except aiohttp.ConnectionTimeoutError:
            raise EngineUnreachable(f"no connection to {where} within {self.connect_timeout_s:g} s") from None
        except (aiohttp.ServerTimeoutError, asyncio.TimeoutError):
            raise EngineTimeout(f"{where} sent nothing for {self.read_timeout_s:g} s (POST {path})") from None
        except aiohttp.ClientConnectorError as exc:
            raise EngineUnreachable(f"cannot connect to {where}: {exc.os_error.strerror or exc.os_error}") from None
        except (aiohttp.ServerDisconnectedError, aiohttp.ClientPayloadError, aiohttp.ClientOSError) as exc:
            raise EngineUnreachable(f"{where} closed the connection before the reply to POST {path} ended "
                                    f"({type(exc).__name__})") from None
        except aiohttp.ClientError as exc:
            raise EngineError(self.redact(f"POST {path} to {where} failed: {type(exc).__name__}: {exc}")) from None
        finally:
            if response is not None:
                if finished and response.content.is_eof():
                    response.release()  # the connection goes back to the pool
                else:
                    response.close()  # drop the connection: the engine sees the client leave

    async def _post(self, url: str, json_body: dict | None, form: aiohttp.FormData | None,
                    headers: dict[str, str]) -> aiohttp.ClientResponse:
        """POST, sent again (JSON bodies only: a form is consumed) when the connection was closed
        before any reply: a pooled connection the server had closed. llama.cpp's llama-server
        closes the connection after every streamed reply while it answers `Keep-Alive`, and its
        FIN can come after the stream's last chunk, when the connection is already back in the
        pool. Nothing listening (`ClientConnectorError`) is not retried."""
        for attempt in range(STALE_RETRIES + 1):
            try:
                return await self._session().post(url, json=json_body, data=form, headers=headers)
            except (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError) as exc:
                if isinstance(exc, aiohttp.ClientConnectorError) or form is not None or attempt == STALE_RETRIES:
                    raise
                log.debug("the %s at %s had closed the connection (%s): sending again on a new one",
                          self.what, self.shown_url, type(exc).__name__)
        raise AssertionError("unreachable")

    async def chat_stream(self, body: dict[str, Any]) -> AsyncIterator[str | ToolCall]:
        """Stream a chat completion (`stream: true`): the text of each delta, until [DONE]. With
        `tools` in the request, the calls the model asks for (`delta.tool_calls`, gathered by
        `index` across chunks) come after the text as `ToolCall`s (an empty id when the engine
        gave none); an empty string marks each chunk that only carried part of a call, so a
        reader sees the model is still working."""
        path = "/v1/chat/completions"
        calls = ToolCallGatherer(f"the {self.what} at {self.shown_url}")
        async with self.request(path, json_body={**body, "stream": True}, expect_event_stream=True) as response:
            async for data in sse_data(response.content):
                if data.strip() == "[DONE]":
                    for call in calls.finish():
                        yield call
                    return
                for piece in self._delta_items(data, calls):
                    yield piece
            raise EngineProtocolError(f"the event stream from the {self.what} at {self.shown_url} ended without "
                                      f"[DONE] (POST {path})")

    def _delta_items(self, data: str, calls: "ToolCallGatherer") -> list[str]:
        try:
            chunk = json.loads(data)
        except ValueError:
            raise EngineProtocolError(self.redact(f"the {self.what} at {self.shown_url} sent an event that is not "
                                                  f"JSON: {data[:MESSAGE_CHARS]!r}")) from None
        if not isinstance(chunk, dict):
            raise EngineProtocolError(f"the {self.what} at {self.shown_url} sent an event that is not a JSON object")
        if "error" in chunk:  # vLLM and others report a failure mid-stream this way
            raise EngineError(self.redact(f"the {self.what} at {self.shown_url} failed mid-answer: "
                                          f"{error_message(data)}"))
        choices = chunk.get("choices")
        if not isinstance(choices, list):
            raise EngineProtocolError(f"the {self.what} at {self.shown_url} sent a chunk without choices")
        pieces = []
        for choice in choices[:1]:  # n = 1
            delta = choice.get("delta") if isinstance(choice, dict) else None
            content = delta.get("content") if isinstance(delta, dict) else None
            if content is not None and not isinstance(content, str):
                raise EngineProtocolError(f"the {self.what} at {self.shown_url} sent non-text delta content")
            if content:
                pieces.append(content)
            if isinstance(delta, dict) and delta.get("tool_calls") is not None:
                calls.add(delta["tool_calls"])
                pieces.append("")  # a call is being written: the model is working
        return pieces

    async def transcription(self, wav: bytes, model: str, language: str) -> str:
        """POST /v1/audio/transcriptions (multipart, a WAV file): the transcript's text."""
        path = "/v1/audio/transcriptions"
        form = aiohttp.FormData()
        form.add_field("file", wav, filename="speech.wav", content_type="audio/wav")
        if model:
            form.add_field("model", model)
        if language:
            form.add_field("language", language)
        form.add_field("response_format", "json")
        async with self.request(path, form=form) as response:
            body = await response.text()
        try:
            text = json.loads(body).get("text")
        except (ValueError, AttributeError):
            text = None
        if not isinstance(text, str):
            raise EngineProtocolError(self.redact(f"the {self.what} at {self.shown_url} answered POST {path} without "
                                                  f"a transcript: {error_message(body)}"))
        return text.strip()

    async def speech(self, body: dict[str, Any]) -> AsyncIterator[bytes]:
        """POST /v1/audio/speech: the audio bytes as they arrive."""
        path = "/v1/audio/speech"
        async with self.request(path, json_body=body) as response:
            content_type = response.headers.get("Content-Type", "")
            if content_type.startswith(("application/json", "text/")):
                text = (await response.content.read(ERROR_BODY_BYTES)).decode("utf-8", "replace")
                raise EngineProtocolError(self.redact(f"the {self.what} at {self.shown_url} answered POST {path} "
                                                      f"with {content_type}, not audio: {error_message(text)}"))
            async for chunk in response.content.iter_any():
                yield chunk

    async def check(self) -> str | None:
        """GET /v1/models: None when the engine answers, else why not (for a start-up log line)."""
        headers = {"Authorization": f"Bearer {self.__api_key}"} if self.__api_key else {}
        try:
            async with self._session().get(self.base_url + "/v1/models", headers=headers) as response:
                if response.status >= 400:
                    return self.redact(f"GET /v1/models answered {response.status}: "
                                       f"{error_message(await response.text())}")
        except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
            return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        return None
