"""Tools without models: schemas from signatures and docstrings, argument validation, the
calculator and the clock, the tool box's runner, and the cascade's tool-call markup scanner."""

import asyncio
import itertools
import json
from datetime import datetime, timezone
from fractions import Fraction
from typing import Literal

import pytest

from agent.brains.tool_markup import ToolMarkupScanner
from agent.config import ConfigError, load_config
from agent.tools import Tool, ToolCall, ToolDefinitionError, tool
from agent.tools.builtins import (CalculationError, asks_the_time, calculate, calculation_arguments, calculator_tool, clock_tool,
                                  format_number, mentions_calculation)
from agent.tools.spoken_arithmetic import expression_in
from agent.tools.toolbox import ToolBox, toolbox_for
from agent.tools.validation import InvalidArguments, checked_arguments


# -- schema from signature and docstring -------------------------------------------------------
async def lookup_order(order_id: str, include_items: bool = False, limit: int | None = None,
                       region: Literal["eu", "us"] = "eu", tags: list[str] | None = None) -> dict:
    """Look up an order
    by its number.

    Longer notes that the model does not need.

    Args:
        order_id: the order number the caller reads out,
            e.g. A-1234
        include_items: also list what was ordered
        limit: at most this many items
    """
    return {"order_id": order_id}


def test_a_function_becomes_a_tool_with_a_json_schema_from_its_signature_and_docstring():
    made = tool(lookup_order)
    assert made.name == "lookup_order"
    assert made.description == "Look up an order by its number."
    assert made.parameters == {
        "type": "object",
        "properties": {
            "order_id": {"type": "string", "description": "the order number the caller reads out, e.g. A-1234"},
            "include_items": {"type": "boolean", "description": "also list what was ordered", "default": False},
            "limit": {"type": "integer", "description": "at most this many items"},
            "region": {"enum": ["eu", "us"], "default": "eu"},
            "tags": {"type": "array", "items": {"type": "string"}},
        },
        "required": ["order_id"],
        "additionalProperties": False,
    }
    assert made.spec() == {"type": "function", "function": {"name": "lookup_order", "description": made.description,
                                                             "parameters": made.parameters}}
    assert tool(made) is made  # a Tool passes through


def test_sphinx_docstrings_and_decorator_overrides():
    @tool(name="add", instructions="Use add for sums.")
    def add_numbers(a: float, b: float) -> float:
        """Add two numbers.

        :param a: the first
        :param b: the second
        """
        return a + b

    assert isinstance(add_numbers, Tool) and add_numbers.name == "add" and add_numbers.instructions == "Use add for sums."
    assert add_numbers.parameters["properties"]["a"] == {"type": "number", "description": "the first"}
    assert add_numbers.parameters["required"] == ["a", "b"]


@pytest.mark.parametrize("fn, problem", [
    (lambda x: x, "name"),  # "<lambda>" is no tool name
])
def test_functions_that_cannot_be_described_are_refused(fn, problem):
    with pytest.raises(ToolDefinitionError, match=problem):
        tool(fn)


def test_refusals_name_the_parameter_and_why():
    def no_doc(x: int) -> int:
        return x

    def untyped(x) -> int:
        """Untyped."""

    def odd_type(x: complex) -> int:
        """Odd."""

    def star(*args: int) -> int:
        """Star."""

    with pytest.raises(ToolDefinitionError, match="docstring"):
        tool(no_doc)
    with pytest.raises(ToolDefinitionError, match="'x' needs a type annotation"):
        tool(untyped)
    with pytest.raises(ToolDefinitionError, match="cannot describe type"):
        tool(odd_type)
    with pytest.raises(ToolDefinitionError, match=r"\*args"):
        tool(star)
    with pytest.raises(ToolDefinitionError, match="two tools are named"):
        ToolBox([lookup_order, lookup_order])


# -- validation ----------------------------------------------------------------------------------
def test_arguments_are_validated_against_the_schema():
    schema = tool(lookup_order).parameters
    assert checked_arguments('{"order_id": "A-1"}', schema) == {"order_id": "A-1"}
    assert checked_arguments('{"order_id": "A-1", "limit": 3, "region": "us"}', schema)["limit"] == 3
    bad = {
        '{"order_id": 12}': "order_id: 12 is not of type 'string'",
        '{}': "'order_id' is a required property",
        '{"order_id": "A", "colour": "red"}': "Additional properties are not allowed",
        '{"order_id": "A", "region": "asia"}': "region: 'asia' is not one of",
        '{"order_id": "A", "limit": true}': "limit: True is not of type 'integer'",
        '["A-1"]': "must be a JSON object",
        '{order_id: A}': "not valid JSON",
    }
    for raw, message in bad.items():
        with pytest.raises(InvalidArguments, match=message.replace("(", r"\(")):
            checked_arguments(raw, schema)


# -- calculator ------------------------------------------------------------------------------------
@pytest.mark.parametrize("expression, result", [
    ("47 * 38", "1,786"), ("47 x 38", "1,786"), ("47×38", "1,786"), ("(2 + 3) * 4", "20"), ("-3 + 5", "2"),
    ("--3", "3"), ("7 / 2", "3.5"), ("1 / 3", "0.333333333333"), ("0.1 + 0.2", "0.3"), ("2 ** 10", "1,024"),
    ("2^10", "1,024"), ("2 ** -2", "0.25"), ("9 ** 0.5", "3"), ("10 ÷ 4", "2.5"), ("1.5 * 4 =", "6"),
    ("99 * 99 - 1", "9,800"), ("1234567.5 * 2", "2,469,135"), ("+4", "4"),
])
def test_the_calculator_does_exact_arithmetic(expression, result):
    assert format_number(calculate(expression)) == result


@pytest.mark.parametrize("expression, problem", [
    ("__import__('os').system('true')", "not Call"),
    ("x + 1", "not Name 'x'"),
    ("(1).real", "not Attribute"),
    ("'a' * 3", "is not a number"),
    ("True + 1", "is not a number"),
    ("[1, 2]", "not List"),
    ("1 if 1 else 2", "not IfExp"),
    ("lambda: 1", "not Lambda"),
    ("7 // 2", "FloorDiv"),
    ("7 % 2", "Mod"),
    ("1 / 0", "division by zero"),
    ("0 ** -1", "division by zero"),
    ("9 ** 9999", "exponent 9,999 is too large"),
    ("10 ** 500", "more than 100 digits"),
    ("2 ** 2 ** 2 ** 2 ** 2", "too large|more than 100 digits"),
    ("(-8) ** 0.5", "not a real number"),
    ("1e200 * 1e200", "more than 100 digits"),
    ("1 +", "not an arithmetic expression"),
    ("1" * 201, "longer than 200"),
])
def test_the_calculator_refuses_anything_but_bounded_arithmetic(expression, problem):
    with pytest.raises(CalculationError, match=problem):
        calculate(expression)


def test_calculation_results_are_exact_fractions_where_possible():
    assert calculate("1 / 3 * 3") == 1 and isinstance(calculate("1 / 3"), Fraction)


async def test_the_calculator_tool_says_the_expression_and_its_value():
    assert await calculator_tool().fn(expression="47 * 38") == "47 * 38 = 1,786"


@pytest.mark.parametrize("text", ["What is 47 times 38?", "what's forty-seven times thirty-eight", "Can you multiply 92 by 68?",
                                  "What is 12 / 4?", "What is 9 squared?", "2 to the power of 10", "What is 10 - 4?",
                                  "the product of 12 and 13", "What is 1,786 minus 86?", "3.5 times 2"])
def test_calculations_in_the_users_words_are_recognised(text):
    assert mentions_calculation(text)


@pytest.mark.parametrize("text", ["What is the capital of France?", "I have 2 cats and 3 dogs.", "It is 3-4 degrees.",
                                  "Call me at 5 to 6.", "Take a 5 minute break", "The year 1945."])
def test_other_sentences_with_numbers_are_not_calculations(text):
    assert not mentions_calculation(text)


@pytest.mark.parametrize("text, expression", [
    ("What is twelve times eleven?", "12 * 11"), ("what's forty-seven times thirty-eight", "47 * 38"),
    ("Can you multiply 92 by 68?", "92 * 68"), ("What is 12 / 4?", "12 / 4"), ("What is nine squared?", "9 ** 2"),
    ("2 to the power of 10", "2 ** 10"), ("What is 10 - 4?", "10 - 4"), ("the product of 12 and 13", "12 * 13"),
    ("What is 1,786 minus 86?", "1786 - 86"), ("3.5 times 2", "3.5 * 2"), ("Subtract 5 from 20.", "20 - 5"),
    ("What is three hundred and twelve plus two point five?", "312 + 2.5"), ("What is 2 plus 3 times 4?", "2 + 3 * 4"),
    ("Hey, can you tell me what one thousand two hundred divided by eight is?", "1200 / 8"),
    ("Thanks. Sorry, one more thing: what's 6x7?", "6 * 7")])
def test_a_calculation_that_is_the_whole_question_is_read_from_the_words(text, expression):
    assert expression_in(text) == expression
    assert calculation_arguments(text) == {"expression": expression}


@pytest.mark.parametrize("text", ["What is half of 47 times 38?", "What's the square root of 16 times 4?",
                                  "What's 15 percent of 80 times 2?", "Roughly, what is 47 times 38?",
                                  "What is the capital of France?", "It is 3-4 degrees.", "What is 5 divided by 0?"])
def test_a_calculation_with_more_to_it_is_left_to_the_model(text):
    assert calculation_arguments(text) is None


def test_a_required_call_is_made_from_the_words_when_its_tool_can_read_them():
    prompt = toolbox_for(load_config(environ={}, overrides={})).prompt()
    ids = (f"call_{i}" for i in itertools.count(1))
    made = prompt.call_from_words("What is twelve times eleven?", lambda: next(ids))
    assert made == ToolCall("call_1", "calculator", json.dumps({"expression": "12 * 11"}))
    assert prompt.call_from_words("Roughly, what is 47 times 38?", lambda: next(ids)) is None  # the model writes it
    assert prompt.call_from_words("What time is it?", lambda: next(ids)) == ToolCall("call_2", "clock", "{}")
    assert prompt.call_from_words("What is the capital of France?", lambda: next(ids)) is None
    unforced = toolbox_for(load_config(environ={}, overrides={"tools.force_arithmetic": "false"})).prompt()
    assert unforced.call_from_words("What is twelve times eleven?", lambda: next(ids)) is None


# -- clock -----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("text", ["What time is it?", "Can you tell me the time?", "What day is it today?",
                                  "What's today's date?", "What is the date?", "What's the time now?",
                                  "Do you know what time it is?", "What day of the week is it?", "Tell me the date, please."])
def test_a_question_for_the_time_or_date_calls_the_clock(text):
    assert asks_the_time(text)


@pytest.mark.parametrize("text", ["What time does the train leave?", "At what time is the meeting?",
                                  "What was the best day of your life?", "I had a long day."])
def test_other_sentences_about_times_do_not(text):
    assert not asks_the_time(text)


async def test_the_clock_reads_the_configured_time_zone():
    seen = []

    def now(zone):
        seen.append(zone.key)
        return datetime(2026, 11, 24, 14, 5, tzinfo=zone)

    clock = clock_tool("Europe/Paris", now=now)
    assert clock.parameters == {"type": "object", "properties": {}, "additionalProperties": False}
    assert await clock.fn() == "It is 14:05 (Europe/Paris) on Tuesday, 24 November 2026."
    assert seen == ["Europe/Paris"]
    real = await clock_tool("UTC").fn()
    assert "(UTC)" in real and str(datetime.now(timezone.utc).year) in real
    with pytest.raises(ValueError, match="unknown time zone 'Mars/Base'"):
        clock_tool("Mars/Base")


def test_tools_config_is_checked():
    config = load_config(environ={})
    assert config.tools.builtin == ["calculator", "clock"]
    for key, value in (("tools.time_zone", "Mars/Base"), ("tools.builtin", "calculator,weather"),
                       ("tools.timeout_s", "0"), ("tools.custom", "no_colon")):
        with pytest.raises(ConfigError, match=key):
            load_config(environ={}, overrides={key: value})


def test_config_turns_on_builtins_and_imports_custom_tools():
    config = load_config(environ={}, overrides={"tools.custom": "tests.test_tools:lookup_order"})
    box = toolbox_for(config, [tool(lookup_order, name="lookup_again")])
    assert box.names == ("calculator", "clock", "lookup_order", "lookup_again")
    prompt = box.prompt()
    assert [s["function"]["name"] for s in prompt.specs] == list(box.names)
    assert "calculator" in prompt.instructions and prompt.instructions.startswith(config.tools.instructions)
    assert prompt.required_tool("What is 47 times 38?") == "calculator"
    assert prompt.required_tool("What time is it?") == "clock"
    assert prompt.required_tool("What is the capital of France?") is None
    unforced = toolbox_for(load_config(environ={}, overrides={"tools.force_arithmetic": "false"})).prompt()
    assert [name for name, _ in unforced.required] == ["clock"]
    assert not toolbox_for(load_config(environ={}, overrides={"tools.builtin": "[]"}))
    with pytest.raises(ToolDefinitionError, match="no_such_module"):
        toolbox_for(load_config(environ={}, overrides={"tools.custom": "no_such_module:f"}))


# -- the runner --------------------------------------------------------------------------------------------
def call(name, **arguments):
    return ToolCall("call_1", name, json.dumps(arguments))


async def test_the_runner_validates_runs_and_reports_every_outcome():
    cancelled = asyncio.Event()

    async def fails(reason: str) -> str:
        """Always fails."""
        raise RuntimeError(reason)

    async def hangs() -> str:
        """Never answers."""
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    def blocking(n: int) -> int:
        """A plain function: runs in a worker thread."""
        return n * 2

    async def own_timeout() -> str:
        """Raises TimeoutError itself (a failed request), well within the box's timeout."""
        raise TimeoutError("upstream timed out")

    box = ToolBox([calculator_tool(), fails, hangs, blocking, own_timeout], timeout_s=0.2)
    ok = await box.run(call("calculator", expression="6 * 7"))
    assert ok.ok and ok.content == "6 * 7 = 42" and ok.ms >= 0
    assert (await box.run(call("blocking", n=21))).content == "42"
    invalid = await box.run(call("calculator", expression=42))
    assert invalid.status == "invalid" and "42 is not of type 'string'" in invalid.content
    assert (await box.run(ToolCall("c", "calculator", "not json"))).status == "invalid"
    unknown = await box.run(call("weather", city="Paris"))
    assert unknown.status == "unknown" and "No tool is named 'weather'" in unknown.content
    assert "do not mention tools" in unknown.content  # what the model reads: answer, never read out the plumbing
    failed = await box.run(call("fails", reason="database down"))
    assert failed.status == "error" and "RuntimeError: database down" in failed.content
    assert (await box.run(call("calculator", expression="import os"))).status == "error"
    assert (await box.run(call("own_timeout"))).status == "error"  # not the box's timeout
    timed_out = await box.run(call("hangs"))
    assert timed_out.status == "timeout" and "0.2 s" in timed_out.content
    assert cancelled.is_set()  # the timeout cancelled it, and it could see that

    cancelled.clear()
    running = asyncio.ensure_future(ToolBox([hangs], timeout_s=30).run(call("hangs")))
    await asyncio.sleep(0.05)
    running.cancel()  # the turn was cancelled (barge-in): the cancellation reaches the tool
    with pytest.raises(asyncio.CancelledError):
        await running
    assert cancelled.is_set()


async def test_long_results_are_cut_and_values_become_json():
    async def big() -> dict:
        """Big."""
        return {"text": "x" * 5000}

    result = await ToolBox([big], max_result_chars=100).run(call("big"))
    assert len(result.content) <= 100 + len(" ... (cut)") and result.content.startswith('{"text": "xxx')


# -- the cascade's markup scanner --------------------------------------------------------------------------
@pytest.mark.parametrize("text, spoken, calls", [
    ('{{"name": "calculator", "arguments": {"expression": "17 * 21"}}}', "", [("calculator", {"expression": "17 * 21"})]),
    ('```json\n{\n  "name": "calculator",\n  "arguments": {\n    "expression": "5 * 3"\n  }\n}\n```', "",
     [("calculator", {"expression": "5 * 3"})]),
    ('Let me check. <tool_call>\n{"name": "clock", "arguments": {}}\n</tool_call>', "Let me check. ", [("clock", {})]),
    ('Here: {"name": "calculator", "arguments": {"expression": "2 * 2"}} The answer is 5.', "Here: ",
     [("calculator", {"expression": "2 * 2"})]),
    ('[{"name": "a", "arguments": "{\\"x\\": 1}"}, {"name": "b"}]', "", [("a", {"x": 1}), ("b", {})]),
    ('{"type": "function", "function": {"name": "clock", "parameters": {}}}', "", [("clock", {})]),
    ("The capital of France is Paris.", "The capital of France is Paris.", []),
])
def test_the_scanner_speaks_text_and_never_markup(text, spoken, calls):
    ids = itertools.count(1)
    scanner = ToolMarkupScanner(lambda: f"call_{next(ids)}")
    said = "".join(scanner.feed(text[i:i + 3]) for i in range(0, len(text), 3))  # streamed in small pieces
    rest, found = scanner.finish()
    assert said == spoken
    assert [(c.name, json.loads(c.arguments)) for c in found] == calls
    assert rest == ("" if calls else text[len(spoken):])
    assert len({c.id for c in found}) == len(found)


def test_held_text_without_a_call_is_spoken_after_all():
    scanner = ToolMarkupScanner(lambda: "call_1")
    assert scanner.feed("The time is {clock}") == "The time is "
    assert scanner.finish() == ("{clock}", [])
