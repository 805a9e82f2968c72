"""A Python function as a tool: its name, description and JSON-Schema parameters, read from its
signature and docstring.

    async def lookup_order(order_id: str, include_items: bool = False) -> dict:
        \"\"\"Look up an order by its number.

        Args:
            order_id: the order number the caller reads out, e.g. A-1234
            include_items: also list what was ordered
        \"\"\"

`tool(lookup_order)` gives a `Tool` named "lookup_order", described by the docstring's first
paragraph, whose parameters are {"order_id": {"type": "string", ...}, "include_items":
{"type": "boolean", ...}}, with `order_id` required (it has no default). Parameter descriptions
come from an `Args:` section (Google style) or `:param name:` lines (Sphinx style).

Annotations map to JSON Schema: str, int, float, bool, list[X], tuple[X, ...], dict,
Literal[...] (an enum), X | None (optional). Anything else is refused when the tool is made, so a
schema never promises what validation cannot check.
"""

from __future__ import annotations

import dataclasses
import inspect
import re
import types
import typing
from dataclasses import dataclass, field
from typing import Any, Callable

NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]{0,63}$")  # what OpenAI-compatible engines accept


class ToolDefinitionError(TypeError):
    """A function cannot be made into a tool (the message says which parameter and why)."""


@dataclass(frozen=True)
class Tool:
    """A function the model may call. `fn` is called with the validated arguments as keywords;
    an async function runs on the event loop (it must not block), a plain one in a worker thread.
    `instructions` is a line added to the system prompt while the tool is on (when to use it);
    `required_when(user_text)`, if given, makes the model call this tool first whenever it is
    true (a small model does not always choose a tool when it should); `arguments_from(user_text)`,
    if given, may read that call's arguments from the words themselves (a dict, or None when it
    cannot): the call is then made without a model round."""

    name: str
    description: str
    parameters: dict[str, Any]
    fn: Callable[..., Any] = field(compare=False, repr=False)
    instructions: str = ""
    required_when: Callable[[str], bool] | None = field(default=None, compare=False, repr=False)
    # the call's arguments read straight from the user's words (None: the model writes them)
    arguments_from: Callable[[str], dict | None] | None = field(default=None, compare=False, repr=False)

    def spec(self) -> dict[str, Any]:
        """The tool in the OpenAI `tools` format (also what Qwen's chat template expects)."""
        return {"type": "function",
                "function": {"name": self.name, "description": self.description, "parameters": self.parameters}}


def tool(fn: Callable[..., Any] | None = None, *, name: str | None = None, description: str | None = None,
         instructions: str = "", required_when: Callable[[str], bool] | None = None,
         arguments_from: Callable[[str], dict | None] | None = None) -> Any:
    """Make `fn` a `Tool` (see the module docstring). Usable as `tool(fn)`, `@tool` or
    `@tool(name=..., description=..., instructions=..., required_when=..., arguments_from=...)`; a `Tool` passes
    through unchanged."""

    def make(f: Callable[..., Any]) -> Tool:
        if isinstance(f, Tool):
            return f
        made = _make_tool(f, name, description, instructions)
        return dataclasses.replace(made, required_when=required_when or made.required_when,
                                   arguments_from=arguments_from or made.arguments_from)

    return make if fn is None else make(fn)


def _make_tool(fn: Callable[..., Any], name: str | None, description: str | None, instructions: str) -> Tool:
    if not callable(fn):
        raise ToolDefinitionError(f"a tool must be a function, not {fn!r}")
    tool_name = name or getattr(fn, "__name__", "")
    if not NAME.match(tool_name):
        raise ToolDefinitionError(f"tool name {tool_name!r} must be 1-64 letters, digits, _ or -, not starting with a digit")
    summary, param_docs = parse_docstring(inspect.getdoc(fn) or "")
    text = description if description is not None else summary
    if not text:
        raise ToolDefinitionError(f"tool {tool_name!r} needs a description: give the function a docstring")
    try:
        hints = typing.get_type_hints(fn)
    except Exception as exc:  # an annotation that does not resolve
        raise ToolDefinitionError(f"tool {tool_name!r}: cannot read its annotations: {exc}") from exc
    properties: dict[str, Any] = {}
    required: list[str] = []
    for param in inspect.signature(fn).parameters.values():
        if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            raise ToolDefinitionError(f"tool {tool_name!r}: *{param.name} cannot be described to the model")
        if param.kind == param.POSITIONAL_ONLY:
            raise ToolDefinitionError(f"tool {tool_name!r}: parameter {param.name!r} is positional-only")
        if param.name not in hints:
            raise ToolDefinitionError(f"tool {tool_name!r}: parameter {param.name!r} needs a type annotation")
        schema, optional = json_schema_of(hints[param.name], f"tool {tool_name!r}, parameter {param.name!r}")
        if param.name in param_docs:
            schema["description"] = param_docs[param.name]
        if param.default is not param.empty:
            if param.default is not None:
                schema["default"] = param.default
        elif not optional:
            required.append(param.name)
        properties[param.name] = schema
    parameters: dict[str, Any] = {"type": "object", "properties": properties, "additionalProperties": False}
    if required:
        parameters["required"] = required
    return Tool(tool_name, text, parameters, fn, instructions)


_SCALARS: dict[Any, str] = {str: "string", int: "integer", float: "number", bool: "boolean"}


def json_schema_of(annotation: Any, where: str) -> tuple[dict[str, Any], bool]:
    """(JSON Schema for a Python annotation, whether it admits None)."""
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        rest = [a for a in args if a is not type(None)]
        if len(rest) != 1:
            raise ToolDefinitionError(f"{where}: only X | None unions can be described, not {annotation!r}")
        return json_schema_of(rest[0], where)[0], True
    if annotation in _SCALARS:
        return {"type": _SCALARS[annotation]}, False
    if origin is typing.Literal:
        if not all(isinstance(a, (str, int, float, bool)) for a in args):
            raise ToolDefinitionError(f"{where}: Literal values must be strings, numbers or booleans")
        return {"enum": list(args)}, False
    if annotation in (list, tuple) or origin in (list, tuple):
        if origin is tuple and not (len(args) == 2 and args[1] is Ellipsis):
            raise ToolDefinitionError(f"{where}: only tuple[X, ...] can be described, not {annotation!r}")
        schema: dict[str, Any] = {"type": "array"}
        if args:
            schema["items"] = json_schema_of(args[0], where)[0]
        return schema, False
    if annotation is dict or origin is dict:
        return {"type": "object"}, False
    raise ToolDefinitionError(f"{where}: cannot describe type {annotation!r} to the model "
                              "(use str, int, float, bool, list, dict, Literal or X | None)")


def parse_docstring(doc: str) -> tuple[str, dict[str, str]]:
    """(the description: the docstring's first paragraph, on one line; {parameter: its
    description}) from a Google, Sphinx (reST) or NumPy style docstring (docstring-parser)."""
    import docstring_parser

    parsed = docstring_parser.parse(doc)
    # docstring-parser splits the first paragraph after its first line: join it back.
    summary = parsed.short_description or ""
    if parsed.long_description and not parsed.blank_after_short_description:
        summary += " " + parsed.long_description.split("\n\n")[0]
    params = {p.arg_name: " ".join((p.description or "").split()) for p in parsed.params}
    return " ".join(summary.split()), params
