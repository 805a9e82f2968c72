"""The built-in tools, turned on by `tools.builtin` in config: a calculator and a clock.

The calculator parses the expression with `ast` and walks the tree itself (no `eval`): only
numbers, + - * / ** (also written ^, x, ×, ÷), parentheses and a unary sign get through; a name, a
call, an attribute or anything else is refused, and so are powers whose result would be huge.
Arithmetic is exact (fractions) where it can be, so 0.1 + 0.2 says 0.3 and 47 * 38 says 1786.
The clock reads the date and time in the configured IANA time zone (`tools.time_zone`).

Steering: both tools add a line to the system prompt (when to call them). Qwen2.5-Coder-1.5B
still answered 5 of 30 spoken-style products of two-digit numbers from its head (and mostly
wrong) with the best line tried, so with `tools.force_arithmetic` a calculation in the user's
words ("47 times 38", "multiply 92 by 68", "nine squared") is a call of the calculator: with the
expression read from the words (`Tool.arguments_from`, `spoken_arithmetic.expression_in`: no
model round writes it, which cost ~20 tokens under a grammar before the first word), or, when it
cannot be read exactly, written by the model, made to call it (`Tool.required_when`; OpenAI's
`tool_choice`).
"""

from __future__ import annotations

import ast
import math
import re
from datetime import datetime
from fractions import Fraction
from typing import Callable
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from .schema import Tool, tool
from .spoken_arithmetic import expression_in, mentions_calculation

BUILTIN_NAMES = ("calculator", "clock")

MAX_EXPRESSION_CHARS = 200
MAX_EXPONENT = 1000  # |exponent| of a power
MAX_DIGITS = 100  # a power (or any intermediate result) beyond 10**100 is refused
SIGNIFICANT_DIGITS = 12  # digits of a result that is not a whole number

CALCULATOR_INSTRUCTIONS = ("You cannot do arithmetic in your head: for any calculation, even an easy one, "
                           "call the calculator tool and then say its result.")
CLOCK_INSTRUCTIONS = "For the date or the time, call the clock tool."


class CalculationError(ValueError):
    """The expression is not plain arithmetic, or its result is out of bounds."""


_SPOKEN_OPERATORS = (
    (re.compile(r"(?<=[\d)])\s*[x×]\s*(?=[\d(.-])"), " * "),
    (re.compile(r"÷"), "/"),
    (re.compile(r"\^"), "**"),
    (re.compile(r"[−–]"), "-"),
)


def calculate(expression: str) -> int | Fraction | float:
    """The value of an arithmetic expression (see the module docstring), exact when it can be."""
    if len(expression) > MAX_EXPRESSION_CHARS:
        raise CalculationError(f"the expression is longer than {MAX_EXPRESSION_CHARS} characters")
    text = expression.strip().rstrip("=").strip()
    for pattern, replacement in _SPOKEN_OPERATORS:
        text = pattern.sub(replacement, text)
    try:
        tree = ast.parse(text, mode="eval")
    except SyntaxError:
        raise CalculationError(f"{expression!r} is not an arithmetic expression") from None
    value = _evaluate(tree.body)
    if isinstance(value, Fraction) and value.denominator == 1:
        return int(value)
    return value


def format_number(value: int | Fraction | float) -> str:
    """A result as the model should say it: whole numbers exactly, others to 12 significant
    digits, thousands separated by commas: the voice reads "4,095" as "four thousand and
    ninety-five" but "4095" as a year, "forty ninety-five" (whisper heard "40.95")."""
    if isinstance(value, int):
        return f"{value:,}"
    number = float(value)
    if not math.isfinite(number):
        raise CalculationError("the result is not a finite number")
    text = f"{number:,.{SIGNIFICANT_DIGITS}g}"
    if "e" not in text and "." in text:
        text = text.rstrip("0").rstrip(".")
    return text


def _evaluate(node: ast.AST) -> Fraction | float:
    if isinstance(node, ast.Constant):
        if isinstance(node.value, bool) or not isinstance(node.value, (int, float)):
            raise CalculationError(f"{node.value!r} is not a number")
        value = Fraction(repr(node.value)) if isinstance(node.value, float) else Fraction(node.value)
        _check_size(value)
        return value
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.UAdd, ast.USub)):
        operand = _evaluate(node.operand)
        return -operand if isinstance(node.op, ast.USub) else operand
    if isinstance(node, ast.BinOp):
        left, right = _evaluate(node.left), _evaluate(node.right)
        if isinstance(node.op, ast.Add):
            result = left + right
        elif isinstance(node.op, ast.Sub):
            result = left - right
        elif isinstance(node.op, ast.Mult):
            result = left * right
        elif isinstance(node.op, ast.Div):
            if right == 0:
                raise CalculationError("division by zero")
            result = left / right
        elif isinstance(node.op, ast.Pow):
            result = _power(left, right)
        else:
            raise CalculationError(f"the operator {type(node.op).__name__} is not supported (use + - * / **)")
        _check_size(result)
        return result
    raise CalculationError(f"only numbers and + - * / ** are allowed, not {type(node).__name__}"
                           + (f" {node.id!r}" if isinstance(node, ast.Name) else ""))


def _power(base: Fraction | float, exponent: Fraction | float) -> Fraction | float:
    if abs(exponent) > MAX_EXPONENT:
        raise CalculationError(f"the exponent {format_number(exponent)} is too large (at most {MAX_EXPONENT})")
    if base == 0 and exponent < 0:
        raise CalculationError("division by zero")
    if abs(base) > 1 and float(exponent) * math.log10(abs(float(base))) > MAX_DIGITS:
        raise CalculationError(f"the result would have more than {MAX_DIGITS} digits")
    if isinstance(exponent, Fraction) and exponent.denominator == 1 and isinstance(base, Fraction):
        return base ** int(exponent)
    if base < 0:
        raise CalculationError("a negative number to a fractional power is not a real number")
    return float(base) ** float(exponent)


def _check_size(value: Fraction | float) -> None:
    if isinstance(value, float) and not math.isfinite(value):
        raise CalculationError("the result is not a finite number")
    if abs(value) >= 10 ** MAX_DIGITS:
        raise CalculationError(f"the result has more than {MAX_DIGITS} digits")


def calculator_tool(forced: bool = True) -> Tool:
    """The calculator; with `forced`, a calculation in the user's words is a call of it: with the
    expression read from the words when they can be (no model round), else written by the model."""

    async def calculator(expression: str) -> str:
        """Work out an arithmetic expression exactly.

        Args:
            expression: numbers with + - * / ** and parentheses, e.g. 47 * 38
        """
        return f"{expression.strip()} = {format_number(calculate(expression))}"

    if not forced:
        return tool(calculator, instructions=CALCULATOR_INSTRUCTIONS)
    return tool(calculator, instructions=CALCULATOR_INSTRUCTIONS, required_when=mentions_calculation,
                arguments_from=calculation_arguments)


def calculation_arguments(user_text: str) -> dict | None:
    """The calculator's arguments read from the user's words, when they can be read exactly."""
    expression = expression_in(user_text)
    if expression is None:
        return None
    try:
        calculate(expression)
    except CalculationError:
        return None  # the model writes the call and hears the calculator's error itself
    return {"expression": expression}


# A question about the present time or date ("What time is it?", "Can you tell me the time?",
# "What day is it today?", "What's today's date?"), not about a time in it ("What time does the
# train leave?"): the model answered "The current date is today." without calling the clock.
ASKS_THE_TIME = re.compile(
    r"\b(?:what(?:'s|\s+is)?\s+(?:the\s+)?(?:time|date|day)(?:\s+is\s+it)?(?:\s+(?:now|today|right\s+now))?\s*[?.!]*$"
    r"|tell\s+me\s+(?:the\s+)?(?:time|date|day)\b|what\s+day\s+(?:is\s+it|of\s+the\s+week)|today's\s+date"
    r"|what\s+time\s+(?:is\s+it|it\s+is))", re.IGNORECASE)


def asks_the_time(text: str) -> bool:
    """Do the user's words ask for the current time or date?"""
    return ASKS_THE_TIME.search(text) is not None


def clock_tool(time_zone: str, now: Callable[[ZoneInfo], datetime] = datetime.now) -> Tool:
    """The clock, reading `time_zone`. It takes no arguments: offered a time_zone parameter,
    the 1.5B model filled one in (a city it made up) for a plain "What time is it?". A question
    for the time or date is a call of it, made at once (no model round writes it)."""
    zone = zone_named(time_zone)

    async def clock() -> str:
        """The current date and time."""
        # The time first, as a sentence: the model's answer to "What time is it?" then starts with
        # words ("The current time is 21:54 ..."), and the time comes before the date. Given
        # "Sunday, 06 December 2026, 21:54 (UTC)", the date first, it read the whole date out
        # before the time for 5 of 6 time questions (this way 0 of 6; sampled 2026-12-06 with the
        # agent's prompt and tools), and once answered a bare "21:54": one phrase the voice could
        # start only at its end (5 digit tokens; the worst real-shaped turn, 1608 ms).
        moment = now(zone)
        return f"It is {moment:%H:%M} ({zone.key}) on {moment:%A}, {moment.day} {moment:%B %Y}."

    return tool(clock, instructions=CLOCK_INSTRUCTIONS, required_when=asks_the_time,
                arguments_from=lambda _text: {})


def zone_named(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown time zone {name!r} (an IANA name such as Europe/Paris)") from None


def builtin_tools(names: list[str], time_zone: str, force_arithmetic: bool = True) -> list[Tool]:
    """The built-in tools named (in `BUILTIN_NAMES`), in that order."""
    makers = {"calculator": lambda: calculator_tool(force_arithmetic), "clock": lambda: clock_tool(time_zone)}
    unknown = [n for n in names if n not in makers]
    if unknown:
        raise ValueError(f"unknown built-in tools {unknown} (there are: {', '.join(BUILTIN_NAMES)})")
    return [makers[name]() for name in names]
