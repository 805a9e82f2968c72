"""Check the arguments a model made up against the tool's JSON Schema before the tool is called.

The model's arguments arrive as JSON text; `checked_arguments` parses them and validates them
with jsonschema (Draft 2020-12), and says what is wrong in one short line that the model can
act on (it reads it as the tool's result) and the page can show.
"""

from __future__ import annotations

import json
from typing import Any


class InvalidArguments(ValueError):
    """The arguments are not a JSON object matching the tool's parameters."""


def checked_arguments(raw: str, schema: dict[str, Any]) -> dict[str, Any]:
    """The arguments as a dict, once they parse and match `schema`; else InvalidArguments."""
    from jsonschema import Draft202012Validator
    from jsonschema.exceptions import best_match

    try:
        arguments = json.loads(raw) if raw.strip() else {}
    except json.JSONDecodeError as exc:
        raise InvalidArguments(f"the arguments are not valid JSON ({exc.msg})") from None
    if not isinstance(arguments, dict):
        raise InvalidArguments("the arguments must be a JSON object")
    error = best_match(Draft202012Validator(schema).iter_errors(arguments))
    if error is not None:
        where = ".".join(str(p) for p in error.absolute_path)
        raise InvalidArguments(f"{where}: {error.message}" if where else error.message)
    return arguments
