"""Arithmetic in a caller's words: whether they ask for a calculation, and the expression itself.

`mentions_calculation` says whether the words hold one: two numbers (digits or words) joined by
an arithmetic word or sign ("47 times 38", "forty-seven plus three", "12 / 4"), "N squared", or
a verb form ("multiply 92 by 68", "add 3 and 4", "the product of 6 and 7").

`expression_in` reads it as the calculator's expression ("What is twelve times eleven?" ->
"12 * 11"), so the answer can call the calculator with it at once instead of a model round
that writes the call's JSON (about 20 tokens under a grammar before the first word: the
arithmetic turns' worst voice-to-voice went from 4977 to 1435 ms, `./dev.sh bench --real-call`,
BENCHMARKS.md). Numbers spoken as words are read here ("forty-seven", "three hundred and twelve",
"two point five"); a library for it would be a dependency for thirty lines (word2number is
unmaintained, text2num a compiled extension), so this module writes it. Anything it cannot read
exactly ("half of ten", "fifteen percent of eighty") gives None, and the model writes the call.
"""

from __future__ import annotations

import re

_UNITS = {word: value for value, word in enumerate(
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen "
    "sixteen seventeen eighteen nineteen".split())}
_TENS = {word: 10 * value for value, word in enumerate(
    "twenty thirty forty fifty sixty seventy eighty ninety".split(), start=2)}
_SCALES = {"thousand": 10 ** 3, "million": 10 ** 6, "billion": 10 ** 9}
_NUMBER_WORDS = [*_UNITS, *_TENS, "hundred", *_SCALES, "point", "half"]

_WORD = r"(?:%s)" % "|".join(_NUMBER_WORDS)
_NUMBER = rf"(?:\d[\d,]*(?:\.\d+)?|{_WORD}(?:[\s-]+(?:and\s+)?{_WORD})*)"
# Each arithmetic word or sign and the operator it is; a hyphen is one only when spaced ("3-4
# degrees" is a range).
_OPERATORS = (
    (r"plus|\+", "+"),
    (r"minus", "-"),
    (r"times|multiplied\s+by|x|×|\*(?!\*)", "*"),
    (r"divided\s+by|over|/|÷", "/"),
    (r"\^|\*\*|to\s+the\s+power\s+of|raised\s+to(?:\s+the\s+power\s+of)?", "**"),
)
_OPERATOR = r"(?:\s*(?:%s)\s*|\s+[-−]\s+)" % "|".join(pattern for pattern, _ in _OPERATORS)  # between two numbers
_SIGN_OF = [(re.compile(rf"^\s*(?:{pattern})\s*$", re.IGNORECASE), sign) for pattern, sign in (*_OPERATORS, (r"[-−]", "-"))]

_N = rf"({_NUMBER})"
_VERB_FORMS = (  # (pattern with two numbers, how the expression is built from them)
    (rf"\bmultiply\s+{_N}\s+by\s+{_N}", "{0} * {1}"),
    (rf"\bdivide\s+{_N}\s+by\s+{_N}", "{0} / {1}"),
    (rf"\b(?:add|sum\s+of)\s+{_N}\s+(?:and|to)\s+{_N}", "{0} + {1}"),
    (rf"\bproduct\s+of\s+{_N}\s+and\s+{_N}", "{0} * {1}"),
    (rf"\bsubtract\s+{_N}\s+from\s+{_N}", "{1} - {0}"),
    (rf"\bdifference\s+between\s+{_N}\s+and\s+{_N}", "{0} - {1}"),
    (rf"(?<![\w.]){_N}\s+squared\b", "{0} ** 2"),
    (rf"(?<![\w.]){_N}\s+cubed\b", "{0} ** 3"),
)
_VERB_PATTERNS = [(re.compile(pattern, re.IGNORECASE), shape) for pattern, shape in _VERB_FORMS]
_CHAIN = re.compile(rf"(?<![\w.]){_NUMBER}(?:{_OPERATOR}{_NUMBER})+(?!\w)", re.IGNORECASE)
CALCULATION = re.compile(rf"(?<![\w.]){_NUMBER}{_OPERATOR}{_NUMBER}(?!\w)|"
                         + "|".join(pattern for pattern, _ in _VERB_FORMS), re.IGNORECASE)


def mentions_calculation(text: str) -> bool:
    """Do the user's words hold a calculation (see the module docstring)?"""
    return CALCULATION.search(text) is not None


def number_in_words(text: str) -> str | None:
    """A number as digits: "forty-seven" -> "47", "three hundred and twelve" -> "312", "two point
    five" -> "2.5", "1,786" -> "1786"; None when it is not a number read exactly ("half")."""
    spoken = text.strip().lower()
    if re.fullmatch(r"\d[\d,]*(?:\.\d+)?", spoken):
        return spoken.replace(",", "")
    total = current = 0
    decimals: str | None = None
    words = [w for w in re.split(r"[\s-]+", spoken) if w and w != "and"]
    if not words:
        return None
    for word in words:
        if decimals is not None:
            if _UNITS.get(word, 10) >= 10:
                return None
            decimals += str(_UNITS[word])
        elif word in _UNITS:
            current += _UNITS[word]
        elif word in _TENS:
            current += _TENS[word]
        elif word == "hundred":
            current = (current or 1) * 100
        elif word in _SCALES:
            total, current = total + (current or 1) * _SCALES[word], 0
        elif word == "point":
            decimals = ""
        else:
            return None
    if decimals == "":
        return None
    whole = str(total + current)
    return f"{whole}.{decimals}" if decimals else whole


# Words that may come around a calculation that is the whole question ("Hey, can you tell me what
# twelve times eleven is?"); any other word ("half of", "the square root of", "percent", "apples")
# may change what is asked, and the model reads it instead.
AROUND_A_CALCULATION = frozenset("""what what's whats is how much does do make makes equal equals can could
would will you tell me please calculate compute work out the answer to so and okay ok um uh hey quick
question i i'd i'm need want know like let's let us say give result get is it that now then well hmm
thanks thank sorry oh right alright great also next another one more thing actually""".split())


def expression_in(text: str) -> str | None:
    """The calculation in the user's words as a calculator expression ("What's twelve times
    eleven?" -> "12 * 11"), or None when there is none it can read exactly, or the question says
    more than the calculation (see `AROUND_A_CALCULATION`)."""
    for pattern, shape in _VERB_PATTERNS:
        found = pattern.search(text)
        if found:
            numbers = [number_in_words(group) for group in found.groups()]
            if None in numbers or not _only_the_calculation(text, found):
                return None
            return shape.format(*numbers)
    found = _CHAIN.search(text)
    if found is None or not _only_the_calculation(text, found):
        return None
    parts = re.split(f"({_OPERATOR})", found.group(0), flags=re.IGNORECASE)
    expression: list[str] = []
    for index, part in enumerate(parts):
        if index % 2 == 0:
            number = number_in_words(part)
            if number is None:
                return None
            expression.append(number)
        else:
            sign = next((sign for pattern, sign in _SIGN_OF if pattern.match(part)), None)
            if sign is None:
                return None
            expression.append(sign)
    return " ".join(expression)


def _only_the_calculation(text: str, found: re.Match) -> bool:
    around = f"{text[:found.start()]} {text[found.end():]}".lower()
    words = re.findall(r"[a-z]+(?:'[a-z]+)?", around)
    return all(word in AROUND_A_CALCULATION for word in words)
