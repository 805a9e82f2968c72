"""Check the arguments a model made up against the tool's JSON Schema before the tool is called.

The model's arguments arrive as JSON text; `checked_arguments` parses them and validates them
with jsonschema (Draft 2020-12), and says what is wrong (the first few problems) in one short line that the model can
act on (it reads it as the tool's result) and the page can show.
"""

from __future__ import annotations

import json
from typing import Any


MAX_ERRORS = 3  # named in one message, most relevant first


class InvalidArguments(ValueError):
    """The arguments are not a JSON object matching the tool's parameters."""


def checked_arguments(raw: str, schema: dict[str, Any]) -> dict[str, Any]:
    """The arguments as a dict, once they parse and match `schema`; else InvalidArguments."""
    from jsonschema import Draft202012Validator
    from jsonschema.exceptions import relevance

    try:
        arguments = json.loads(raw) if raw.strip() else {}
    except json.JSONDecodeError as exc:
        raise InvalidArguments(f"the arguments are not valid JSON ({exc.msg})") from None
    if not isinstance(arguments, dict):
        raise InvalidArguments("the arguments must be a JSON object")
    errors = sorted(Draft202012Validator(schema).iter_errors(arguments), key=relevance, reverse=True)
    if errors:
        raise InvalidArguments("; ".join(_describe(error) for error in errors[:MAX_ERRORS]))
    return arguments


def _describe(error) -> str:
    where = ".".join(str(p) for p in error.absolute_path)
    return f"{where}: {error.message}" if where else error.message
