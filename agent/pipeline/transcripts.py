"""What a transcript says about the turn.

- `is_only_filler`: a transcript that is empty, only sounds whisper wrote down as annotations
  ("(coughs)", "[BLANK_AUDIO]", "*sigh*", and the ASR's own "(unclear: ...)"), or only fillers and backchannels ("mm-hmm", "uh",
  "yeah", ...) starts no answer.
- `unclear_words_kept`: the words inside "(unclear: ...)", for a turn of its own (see there).
- `word_error_rate`: how far a transcript is from what was said (tests and the benchmark).
- `sounds_finished`: a transcript that ends a sentence (whisper's "." "?" "!") on a word that
  can end one ("please remember that.", not "... the capital of."), ends on a closing formula
  ("Ok thanks a lot"), or, unpunctuated, ends three words or more on a content word. When the end-of-turn model
  calls an utterance unfinished but the preemptive answer's transcript sounds finished, the
  turn ends after the normal hangover (the text overrules the audio model's doubt).
"""

from __future__ import annotations

import re

from agent.pipeline.phrases import WEAK_ENDINGS

_ANNOTATION = re.compile(r"\([^)]*\)|\[[^\]]*\]|\*[^*]*\*|♪+")
_WORD = re.compile(r"[a-z]+(?:['-][a-z]+)*")


def words_of(text: str) -> list[str]:
    """Lower-case words, annotations removed ("Mm-hmm." -> ["mm-hmm"])."""
    return _WORD.findall(_ANNOTATION.sub(" ", text.lower()))


def _squeezed(word: str) -> str:
    """A word with repeated letters squeezed within each hyphenated part, and the hyphens out:
    "Mmm-hmm", "mm-hmm" and "mhm" are all "mhm"; "hmmm" is "hm" (whisper spells these sounds many
    ways), while "uh-huh" ("uhhuh", yes) stays apart from "uh-uh" ("uhuh", no)."""
    return "".join(re.sub(r"(.)\1+", r"\1", part) for part in word.split("-"))


_UNCLEAR = re.compile(r"\(unclear:\s*([^)]*)\)")


def unclear_words_kept(text: str) -> str:
    """`text` with the ASR's "(unclear: ...)" marks replaced by the words inside them: on a turn of
    its own (the agent silent), a short utterance whisper was unsure of is still the caller's
    words ("Great, thank you."), answered unless those words are fillers themselves. Over the
    agent's answer the mark stays noise (a backchannel misheard as "Come on.")."""
    return _UNCLEAR.sub(lambda found: found.group(1), text)


def is_only_filler(text: str, fillers: list[str]) -> bool:
    """True if `text` holds no words beyond `fillers` (phrases like "uh huh" match as a whole too;
    spellings that differ only in repeated letters or hyphens match: "Mmm-hmm" is "mm-hmm")."""
    spoken = [_squeezed(w) for w in words_of(text)]
    if not spoken:
        return True
    known = {" ".join(_squeezed(w) for w in words_of(f)) for f in fillers}
    singles = {w for f in known for w in f.split()}
    joined = " ".join(spoken)
    return joined in known or all(w in singles for w in spoken)


# Words an English sentence does not end on: articles, possessive determiners, conjunctions,
# "of", "than" and intensifiers; whisper writes a "." after them when the speaker stopped
# mid-sentence ("What is the capital of."). Anything else can end one, and people end finished
# sentences on pronouns, prepositions and auxiliaries all the time ("please remember that.",
# "Which city do I live in?", "Keep it in mind, will you?", "Yes, I do."): the list of real
# endings in tests/test_transcripts.py holds both kinds.
NEVER_FINAL = frozenset("""a an the my your our their its of and or but nor than very because
whose if either neither both every each""".split())
# ... and, in a statement ("."), words that introduce what follows (a question may end on them:
# "What is it for?", "Where are you from?").
NOT_FINAL_IN_STATEMENT = frozenset("""with from into onto about by for at like as many""".split())


# Formulas that close what a person says, finished with or without punctuation: whisper tiny.en
# wrote "Ok thanks a lot" and "Great thank you" with none, and those turns waited the long
# silence (`./dev.sh bench --real-call`).
CLOSING_FORMULAS = tuple(tuple(f.split()) for f in (
    "thank you", "thanks", "thanks a lot", "thank you very much", "thank you so much", "thanks so much",
    "that's all", "that is all", "that's it", "bye", "goodbye", "bye bye", "see you", "see you later",
    "got it", "sounds good", "perfect", "great", "okay", "ok", "all right", "alright", "cool", "nice", "awesome",
    "no problem", "never mind", "you too", "please", "sure", "yes please", "no thanks", "good night"))


def _ends_on_a_closing_formula(spoken: list[str]) -> bool:
    return any(tuple(spoken[-len(formula):]) == formula for formula in CLOSING_FORMULAS)


# Without punctuation (whisper often leaves it out of a short utterance: "Tell me something fun")
# only the words tell, so the rule is stricter: three words or more, the last a content word, not
# a function word, pronoun or question word a sentence goes on after ("Can you tell me", "a
# dragon who", "I think").
NOT_FINAL_UNPUNCTUATED = WEAK_ENDINGS | frozenset("""me you him us them it i we they who what which where
when why how whose whom think mean guess want need wonder""".split())


def sounds_finished(text: str) -> bool:
    """Ends with sentence punctuation, on a word a sentence can end on (not "of", "the", ...); on
    a closing formula ("thanks a lot", "that's all"), punctuated or not; or, unpunctuated, on a
    content word after at least three words (`NOT_FINAL_UNPUNCTUATED`)."""
    stripped = _ANNOTATION.sub(" ", text).strip().rstrip("\"'”’)")
    spoken = words_of(stripped)
    if _ends_on_a_closing_formula(spoken):
        return True
    if not stripped.endswith((".", "?", "!")):
        return len(spoken) >= 3 and not stripped.endswith((",", ";", ":", "-", "...")) \
            and spoken[-1] not in NOT_FINAL_UNPUNCTUATED | NEVER_FINAL | NOT_FINAL_IN_STATEMENT
    if not spoken or spoken[-1] in NEVER_FINAL:
        return False
    return stripped.endswith("?") or spoken[-1] not in NOT_FINAL_IN_STATEMENT


def word_error_rate(reference: str, hypothesis: str) -> float:
    """Word error rate: Levenshtein distance over lower-case words / the reference's words."""
    ref, hyp = re.findall(r"[a-z0-9']+", reference.lower()), re.findall(r"[a-z0-9']+", hypothesis.lower())
    d = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, 1):
        prev, d[0] = d[0], i
        for j, h in enumerate(hyp, 1):
            prev, d[j] = d[j], min(d[j] + 1, d[j - 1] + 1, prev + (r != h))
    return d[len(hyp)] / max(1, len(ref))
