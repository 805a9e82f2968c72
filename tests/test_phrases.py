import asyncio

import pytest

from agent.config import PhrasesConfig
from agent.pipeline.phrases import PhraseChunker, phrases_from_pieces, speakable

CFG = PhrasesConfig(first_min_words=3, first_max_words=6, min_words=4, max_words=24, first_timeout_ms=400, timeout_ms=400)


def feed(chunker, text, piece_len=3):
    out = []
    for i in range(0, len(text), piece_len):
        out += chunker.push(text[i:i + piece_len])
    tail = chunker.flush()
    return out + ([tail] if tail else [])


def test_first_phrase_cut_early_at_sentence_end():
    phrases = feed(PhraseChunker(CFG), "Sure! The capital of France is Paris, a city on the Seine river. It is lovely.")
    assert phrases[0] == "Sure!"
    assert " ".join(phrases) == "Sure! The capital of France is Paris, a city on the Seine river. It is lovely."


def test_first_phrase_cut_at_comma_after_min_words_and_at_max_words():
    assert feed(PhraseChunker(CFG), "Well, the answer to that, is simple.")[0] == "Well, the answer to that,"
    phrases = feed(PhraseChunker(CFG), "one two three four five six seven eight nine ten")
    assert phrases[0] == "one two three four five six"


def test_later_phrases_cut_at_sentence_and_clause_ends():
    text = ("Hello there. Paris is the capital of France. It has many museums, parks and cafes. "
            "The city has many famous museums and beautiful old parks, "
            "and millions of visitors come every single year to see it.")
    phrases = feed(PhraseChunker(CFG), text)
    assert phrases == [
        "Hello there.",
        "Paris is the capital of France.",
        "It has many museums, parks and cafes.",  # a short clause is not cut off on its own
        "The city has many famous museums and beautiful old parks,",
        "and millions of visitors come every single year to see it.",
    ]


def test_no_words_lost_or_reordered_for_any_piece_size():
    text = "A spider has eight legs. Insects have six, which is fewer. Mr. Smith agrees, e.g. in his book."
    for size in (1, 2, 5, 11, 100):
        assert " ".join(feed(PhraseChunker(CFG), text, size)).split() == text.split()


def test_abbreviation_is_not_a_sentence_end():
    phrases = feed(PhraseChunker(CFG), "Okay. Then Dr. Watson and Mr. Holmes went home together at last.")
    assert "Dr." not in [p.split()[-1] for p in phrases]


def test_max_words_forces_a_cut():
    words = " ".join(f"w{i}" for i in range(60))
    phrases = feed(PhraseChunker(CFG), "Hi. " + words)
    assert all(len(p.split()) <= CFG.max_words for p in phrases)


def test_newline_ends_a_phrase_and_markdown_is_stripped():
    phrases = feed(PhraseChunker(CFG), "Here you go\n**Bold** words and `code` here are fine\n- item one of it")
    assert phrases[0] == "Here you go"
    assert "*" not in " ".join(phrases) and "`" not in " ".join(phrases)
    assert speakable("- item one") == "item one"


def test_timeout_cut_uses_whole_words_only():
    now = [0.0]
    chunker = PhraseChunker(CFG, clock=lambda: now[0])
    assert chunker.push("Thinking about it") == []
    assert chunker.time_left() == pytest.approx(0.4)
    now[0] = 0.5
    assert chunker.time_left() == 0.0
    assert chunker.cut_pending() == "Thinking"  # not on the weak "about"
    assert chunker.pending_text == "about it"


async def slow_pieces(pieces, delay):
    for piece in pieces:
        await asyncio.sleep(delay)
        yield piece


async def test_async_adapter_cuts_on_timeout_when_the_llm_is_slow():
    cfg = PhrasesConfig(first_min_words=3, first_max_words=20, min_words=4, max_words=24, first_timeout_ms=100, timeout_ms=100)
    chunker = PhraseChunker(cfg)
    got = []
    started = asyncio.get_running_loop().time()
    async for phrase in phrases_from_pieces(slow_pieces(["one ", "two ", "three ", "four", " five"], 0.15), chunker):
        got.append((phrase, asyncio.get_running_loop().time() - started))
    texts = [p for p, _ in got]
    assert " ".join(texts).split() == ["one", "two", "three", "four", "five"]
    # The timeout produced phrases before the stream ended (not one phrase at the end).
    assert len(texts) >= 2


async def test_async_adapter_closes_the_source_when_closed_early():
    closed = asyncio.Event()

    async def endless():
        try:
            while True:
                await asyncio.sleep(0.01)
                yield "word. "
        finally:
            closed.set()

    gen = phrases_from_pieces(endless(), PhraseChunker(CFG))
    assert await gen.__anext__() == "word."
    await gen.aclose()
    source_closed = closed.is_set()
    assert source_closed or await asyncio.wait_for(closed.wait(), 1.0)


def test_a_length_cut_does_not_end_on_a_weak_word():
    cfg = PhrasesConfig(first_min_words=2, first_max_words=3, min_words=4, max_words=6, first_timeout_ms=400, timeout_ms=400)
    phrases = feed(PhraseChunker(cfg), "The capital of France is the city where the old kings of the land lived.")
    assert phrases[0] == "The capital of France"
    for phrase in phrases[:-1]:
        assert phrase.split()[-1].lower() not in {"of", "the", "a", "is", "to"}


def test_timeout_cut_stops_before_trailing_weak_words_and_defer_restarts_it():
    now = [0.0]
    chunker = PhraseChunker(CFG, clock=lambda: now[0])
    chunker.push("France is the ")
    now[0] = 1.0
    chunker.defer()
    assert chunker.time_left() == pytest.approx(0.4)
    assert chunker.cut_pending() == "France"
    assert chunker.pending_text.strip() == "is the"


async def test_no_timeout_cut_while_the_voice_has_enough_to_say():
    cfg = PhrasesConfig(first_min_words=2, first_max_words=20, min_words=4, max_words=24, first_timeout_ms=50, timeout_ms=50)
    pieces = slow_pieces(["one ", "two ", "three ", "four ", "five."], 0.08)
    got = [p async for p in phrases_from_pieces(pieces, PhraseChunker(cfg), voice_hungry=lambda: False)]
    assert got == ["one two three four five."]


def test_chemical_symbols_are_written_the_way_the_voice_spells_them():
    assert speakable("The chemical symbol for gold is Au.") == "The chemical symbol for gold is AU."
    assert speakable("Iron is Fe and silver is Ag.") == "Iron is FE and silver is AG."
    # Symbols that are words, and words that merely start like one, stay as written.
    assert speakable("He is in Paris. No, as a child he lived at home.") == "He is in Paris. No, as a child he lived at home."
    assert speakable("Auckland and Feynman") == "Auckland and Feynman"


def test_the_first_phrase_has_its_own_shorter_timeout():
    now = [0.0]
    cfg = PhrasesConfig(first_min_words=3, first_max_words=20, min_words=4, max_words=24, first_timeout_ms=250,
                        timeout_ms=400)
    chunker = PhraseChunker(cfg, clock=lambda: now[0])
    chunker.push("The tallest ")
    assert chunker.time_left() == pytest.approx(0.25)  # the first phrase: cut 250 ms after its first text
    now[0] = 0.25
    assert chunker.time_left() == 0.0
    assert chunker.cut_pending() == "The tallest"  # what the adapter does when the time is up
    now[0] = 0.3
    chunker.push("mountain ")
    assert chunker.time_left() == pytest.approx(0.4)  # later phrases: the longer timeout
