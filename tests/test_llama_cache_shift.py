"""`shift_cache_to`: when a prompt is the cached one with a span cut out (the oldest exchange of a
trimmed history), the span leaves llama.cpp's KV cache and what followed moves back, so only the
new tail is evaluated. A stand-in for llama-cpp-python's `Llama` records the cache operations;
the real model's side is in tests/test_models_real.py."""

import numpy as np

from agent.brains.llama_chat import MIN_SHIFTED_TOKENS, shift_cache_to


class RecordingContext:
    def __init__(self) -> None:
        self.calls: list[tuple] = []

    def kv_cache_seq_rm(self, seq_id, p0, p1):
        self.calls.append(("rm", seq_id, p0, p1))
        return True

    def kv_cache_seq_shift(self, seq_id, p0, p1, shift):
        self.calls.append(("shift", seq_id, p0, p1, shift))


class CachedPrompt:
    """What a `Llama` holds of the last prompt: its tokens and how many are in the KV cache."""

    def __init__(self, tokens: list[int], capacity: int = 512) -> None:
        self.input_ids = np.zeros(capacity, dtype=np.intc)
        self.input_ids[:len(tokens)] = tokens
        self.n_tokens = len(tokens)
        self._ctx = RecordingContext()


def run(start: int, count: int) -> list[int]:
    return list(range(start, start + count))


SYSTEM, OLDEST, REST = run(1000, 40), run(2000, 50), run(3000, 120)


def test_the_oldest_exchange_cut_out_leaves_the_cache_and_the_rest_moves_back():
    llm = CachedPrompt(SYSTEM + OLDEST + REST + [7, 8])  # [7, 8]: the warmed next user header
    prompt = SYSTEM + REST + run(4000, 12)
    assert shift_cache_to(llm, prompt) == len(REST)
    head, start = len(SYSTEM), len(SYSTEM) + len(OLDEST)
    assert llm._ctx.calls == [("rm", 0, start + len(REST), -1), ("rm", 0, head, start),
                              ("shift", 0, start, start + len(REST), head - start)]
    assert llm.n_tokens == head + len(REST)
    assert list(llm.input_ids[:llm.n_tokens]) == SYSTEM + REST  # now a prefix of the prompt


def test_a_prompt_that_extends_the_cache_needs_no_shift():
    llm = CachedPrompt(SYSTEM + REST)
    assert shift_cache_to(llm, SYSTEM + REST + run(4000, 5)) == 0
    assert shift_cache_to(llm, SYSTEM + run(5000, 80)) == 0  # a new history: nothing to keep
    assert llm._ctx.calls == [] and llm.n_tokens == len(SYSTEM + REST)


def test_a_prompt_asked_again_inside_the_cache_needs_no_shift():
    llm = CachedPrompt(SYSTEM + REST + [7, 8, 9])  # the prompt, then the tokens generated for it
    assert shift_cache_to(llm, SYSTEM + REST) == 0
    assert llm._ctx.calls == []


def test_a_short_run_after_the_cut_is_not_worth_shifting():
    short = run(3000, MIN_SHIFTED_TOKENS - 1)
    llm = CachedPrompt(SYSTEM + OLDEST + short)
    assert shift_cache_to(llm, SYSTEM + short + run(4000, 40)) == 0
    assert llm._ctx.calls == []


def test_an_empty_cache_is_left_alone():
    llm = CachedPrompt([])
    assert shift_cache_to(llm, SYSTEM) == 0 and llm._ctx.calls == []
