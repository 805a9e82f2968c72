"""Cut a stream of LLM text pieces into speakable phrases.

The first phrase is cut as early as it can sound natural (a sentence end, a punctuation mark
after a few words, or a hard word limit) so the voice can start while the LLM is still
generating; later phrases are cut at sentence or clause ends, so they sound fluent. A timeout
cuts whatever whole words are pending, so a slow LLM never leaves the voice idle.
"""

from __future__ import annotations

import asyncio
import re
import time
from dataclasses import dataclass
from typing import AsyncIterator, Callable

from agent.config import PhrasesConfig

_SENTENCE_END = re.compile(r"[.!?…]+[\"'”’)\]]*$")
_CLAUSE_END = re.compile(r"[,;:—–]+[\"'”’)\]]*$")
_ABBREVIATIONS = {"mr.", "mrs.", "ms.", "dr.", "st.", "vs.", "etc.", "e.g.", "i.e.", "prof.", "jr.", "sr.", "no."}
# Words a phrase should not end on when it is cut for length: the next word belongs with them
# ("the capital of | France" sounds broken; "the capital of France | is Paris" does not).
WEAK_ENDINGS = frozenset("""a an the of to in on at for with from by and or but nor is are was were be been am as
that than then this these those its it's their his her my your our very so if into about will can would could
should shall may might must not no do does did has have had""".split())
_MAX_EXTENSION = 2  # at most this many words past max_words to avoid a weak ending
_MARKDOWN = re.compile(r"[*_#`~>|]+")
_BULLET = re.compile(r"(^|\n)\s*(?:[-•]|\d+[.)])\s+")
_SPACES = re.compile(r"\s+")


# Chemical symbols that are no English word: the voice reads "Au" as a word ("o", whisper heard)
# and "Fe" as "V", but spells them in capitals ("AU", "FE"). Symbols that are words ("He", "In",
# "As", "No", "Be", ...) are left alone. Checked by whisper reading the voice back
# (tests/test_models_real.py).
_ELEMENT_SYMBOLS = re.compile(r"\b(Au|Ag|Fe|Cu|Zn|Hg|Pb|Sn|Pt|Ni|Na|Mg|Cl|Ca|Si|Cr|Mn|Ne|Kr|Xe|Rn|Li|Cs|Sr|Ti|Se|Br|Ge|Pd|Cd|Ir)\b")


def speakable(text: str) -> str:
    """Strip markdown and list markup that a voice should not read out, write chemical symbols
    the way the voice spells them (`_ELEMENT_SYMBOLS`), and collapse whitespace."""
    text = _BULLET.sub(r"\1", text)
    text = _MARKDOWN.sub("", text)
    text = _ELEMENT_SYMBOLS.sub(lambda found: found.group(1).upper(), text)
    return _SPACES.sub(" ", text).strip()


def _ends_sentence(word: str) -> bool:
    return bool(_SENTENCE_END.search(word)) and word.lower() not in _ABBREVIATIONS


def _ends_clause(word: str) -> bool:
    return bool(_CLAUSE_END.search(word))


def _is_weak(word: str) -> bool:
    return word.lower().strip("\"'“”‘’()[]") in WEAK_ENDINGS


@dataclass
class PhraseChunker:
    """Incremental phrase cutter. Feed text with push(); get phrases back as they complete."""

    config: PhrasesConfig
    clock: Callable[[], float] = time.monotonic

    def __post_init__(self) -> None:
        self._buffer = ""
        self._phrases_cut = 0
        self._pending_since: float | None = None

    # -- state -----------------------------------------------------------------------------
    @property
    def pending_text(self) -> str:
        return self._buffer

    def _complete_words(self) -> tuple[list[str], str]:
        """Whole words in the buffer (followed by whitespace), and the unfinished tail."""
        tokens = self._buffer.split()
        if tokens and not self._buffer[-1].isspace():
            return tokens[:-1], tokens[-1]
        return tokens, ""

    def time_left(self) -> float | None:
        """Seconds until the timeout cut is due, or None when nothing whole is pending."""
        if self._pending_since is None or not self._complete_words()[0]:
            return None
        timeout_ms = self.config.first_timeout_ms if self._phrases_cut == 0 else self.config.timeout_ms
        due = self._pending_since + timeout_ms / 1000.0
        return max(0.0, due - self.clock())

    # -- cutting ---------------------------------------------------------------------------
    def push(self, text: str) -> list[str]:
        """Add a piece of streamed text; return the phrases it completed, in order."""
        if not text:
            return []
        if self._pending_since is None and text.strip():
            self._pending_since = self.clock()
        # Newlines end a sentence (LLMs put paragraph breaks there).
        self._buffer += text.replace("\r", "")
        phrases: list[str] = []
        while True:
            phrase = self._cut_once()
            if phrase is None:
                break
            phrases.append(phrase)
        return phrases

    def _cut_once(self) -> str | None:
        words, _tail = self._complete_words()
        if not words:
            return None
        first = self._phrases_cut == 0
        min_words = self.config.first_min_words if first else self.config.min_words
        max_words = self.config.first_max_words if first else self.config.max_words
        newline_ends = self._newline_word_ends()
        cut_at = None
        for i, word in enumerate(words, start=1):
            if _ends_sentence(word) or i in newline_ends:
                if first or i >= min_words:
                    cut_at = i
                    break
            elif _ends_clause(word) and i >= (min_words if first else 2 * min_words):
                cut_at = i
                break
            if i >= max_words and not (_is_weak(word) and i < max_words + _MAX_EXTENSION):
                cut_at = i
                break
        if cut_at is None:
            return None
        return self._take_words(cut_at)

    def _newline_word_ends(self) -> set[int]:
        """Word counts (1-based) after which the buffer has a newline."""
        ends: set[int] = set()
        count = 0
        for token in re.split(r"(\s+)", self._buffer):
            if not token:
                continue
            if token.isspace():
                if "\n" in token and count:
                    ends.add(count)
            else:
                count += 1
        return ends

    def _take_words(self, n: int) -> str | None:
        """Remove the first n words from the buffer and return them as one phrase."""
        parts = re.split(r"(\s+)", self._buffer.lstrip())
        taken: list[str] = []
        count = 0
        index = 0
        while index < len(parts) and count < n:
            token = parts[index]
            if token and not token.isspace():
                taken.append(token)
                count += 1
            index += 1
        self._buffer = "".join(parts[index:]).lstrip()
        self._pending_since = self.clock() if self._buffer.strip() else None
        self._phrases_cut += 1
        phrase = speakable(" ".join(taken))
        return phrase or None

    def cut_pending(self) -> str | None:
        """Timeout cut: the whole pending words as a phrase (the unfinished word stays), ending
        before trailing weak words ("of", "the", ...) when there is a better place."""
        words, _tail = self._complete_words()
        if not words:
            return None
        n = len(words)
        while n > 1 and _is_weak(words[n - 1]):
            n -= 1
        return self._take_words(n)

    def defer(self) -> None:
        """Restart the timeout (the voice still has enough to say; no need to cut short)."""
        if self._pending_since is not None:
            self._pending_since = self.clock()

    def flush(self) -> str | None:
        """End of stream: return everything left as the last phrase."""
        rest = speakable(self._buffer)
        self._buffer = ""
        self._pending_since = None
        if not rest:
            return None
        self._phrases_cut += 1
        return rest


async def phrases_from_pieces(pieces: AsyncIterator[str], chunker: PhraseChunker,
                              voice_hungry: Callable[[], bool] | None = None) -> AsyncIterator[str]:
    """Async adapter: yield phrases from a stream of text pieces, applying the timeout cut.

    The timeout cut is for a voice about to run dry: when `voice_hungry()` says the voice still
    has enough to say, the timeout is deferred instead (a short forced phrase sounds choppy)."""
    iterator = pieces.__aiter__()
    pending: asyncio.Future | None = None
    try:
        while True:
            if pending is None:
                pending = asyncio.ensure_future(iterator.__anext__())
            done, _ = await asyncio.wait({pending}, timeout=chunker.time_left())
            if not done:
                if voice_hungry is not None and not voice_hungry():
                    chunker.defer()
                    continue
                phrase = chunker.cut_pending()
                if phrase:
                    yield phrase
                continue
            try:
                piece = pending.result()
            except StopAsyncIteration:
                pending = None
                break
            pending = None
            for phrase in chunker.push(piece):
                yield phrase
        tail = chunker.flush()
        if tail:
            yield tail
    finally:
        if pending is not None and not pending.done():
            pending.cancel()
            try:
                await pending
            except (asyncio.CancelledError, StopAsyncIteration):
                pass
