"""What counts as words: a transcript that is empty, only sounds whisper wrote down as
annotations ("(coughs)", "[BLANK_AUDIO]", "*sigh*"), or only fillers and backchannels
("mm-hmm", "uh", "yeah", ...) starts no answer and, said over the agent, interrupts nothing."""

from __future__ import annotations

import re

_ANNOTATION = re.compile(r"\([^)]*\)|\[[^\]]*\]|\*[^*]*\*|♪+")
_WORD = re.compile(r"[a-z]+(?:['-][a-z]+)*")


def words_of(text: str) -> list[str]:
    """Lower-case words, annotations removed ("Mm-hmm." -> ["mm-hmm"])."""
    return _WORD.findall(_ANNOTATION.sub(" ", text.lower()))


def is_only_filler(text: str, fillers: list[str]) -> bool:
    """True if `text` holds no words beyond `fillers` (phrases like "uh huh" match as a whole too)."""
    spoken = words_of(text)
    if not spoken:
        return True
    known = {" ".join(words_of(f)) for f in fillers}
    singles = {w for f in known for w in f.split()}
    joined = " ".join(spoken)
    return joined in known or all(w in singles for w in spoken)
