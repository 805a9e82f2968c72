"""Tool calls written in a model's streamed text (the cascade's Qwen2.5 via llama.cpp).

Qwen2.5's chat template asks for `<tool_call>{"name": ..., "arguments": {...}}</tool_call>`.
Qwen2.5-Coder-1.5B, measured on this project's prompts, writes the JSON object alone, in
```json fences, with the template's doubled braces (`{{"name": ...}}}`), or after a few words
("Here is the result: {...}"), and never the tags. `ToolMarkupScanner` accepts all of those.

Spoken answers carry no braces, backticks or angle brackets, so the scanner passes text through
until the first `{`, `[`, backtick or `<` and holds everything from there to the end of the
round. At the end, JSON objects in the held text that name a tool (`name`, with `arguments` or
`parameters`) become `ToolCall`s; text after a call is dropped (a result the model made up
before seeing the real one). Held text with no call in it is handed back to be spoken after all,
so nothing the model meant to say is lost.
"""

from __future__ import annotations

import json
import re
from typing import Any, Callable

from agent.tools.calls import ToolCall

MARKUP_START = re.compile(r"[{\[`<]")
_TAGS = re.compile(r"</?tool_call>|```[a-zA-Z]*")


class ToolMarkupScanner:
    """Feed a round's text pieces; speak what `feed` returns; `finish` gives the rest."""

    def __init__(self, new_id: Callable[[], str]) -> None:
        self._new_id = new_id
        self._held: str | None = None  # from the first markup character on
        self.text = ""  # all the text the round produced, markup included

    def feed(self, piece: str) -> str:
        """Text that is safe to speak now (possibly empty)."""
        self.text += piece
        if self._held is not None:
            self._held += piece
            return ""
        start = MARKUP_START.search(piece)
        if start is None:
            return piece
        self._held = piece[start.start():]
        return piece[: start.start()]

    def finish(self) -> tuple[str, list[ToolCall]]:
        """(held text to speak after all: only when it held no call; the calls, in order)."""
        held, self._held = self._held or "", None
        calls = [self._call(obj) for obj in json_objects(_TAGS.sub(" ", held))]
        calls = [c for c in calls if c is not None]
        return ("" if calls else held), calls

    def _call(self, obj: Any) -> ToolCall | None:
        if isinstance(obj, dict) and isinstance(obj.get("function"), dict):
            obj = obj["function"]  # the OpenAI shape, written out
        if not isinstance(obj, dict) or not isinstance(obj.get("name"), str) or not obj["name"]:
            return None
        arguments = obj.get("arguments", obj.get("parameters", {}))
        raw = arguments if isinstance(arguments, str) else json.dumps(arguments, ensure_ascii=False)
        return ToolCall(self._new_id(), obj["name"], raw)

    @property
    def spoken_before_markup(self) -> str:
        """The round's text before its markup (what the model said before asking)."""
        start = MARKUP_START.search(self.text)
        return self.text if start is None else self.text[: start.start()]


def json_objects(text: str) -> list[Any]:
    """Every top-level JSON object or array in `text`, in order; arrays are flattened one level.
    A doubled opening brace (`{{"name": ...}}`) is read as the object inside it."""
    decoder = json.JSONDecoder()
    found: list[Any] = []
    i = 0
    while i < len(text):
        if text[i] not in "{[":
            i += 1
            continue
        try:
            value, end = decoder.raw_decode(text, i)
        except json.JSONDecodeError:
            i += 1
            continue
        found.extend(value if isinstance(value, list) else [value])
        i = end
    return found
