"""ChatHistory alone: trimming by exchanges, rollback, tool rounds, the token budget, and
history_turns = 0 (no model: a token count of one per word stands in for the LLM's)."""

from __future__ import annotations

import json

from agent.brains.chat_history import MESSAGE_OVERHEAD_TOKENS, ChatHistory, persona
from agent.tools.calls import ToolCall, ToolPrompt, ToolResult


def words(text: str) -> int:
    return len(text.split())


def answered(history: ChatHistory, question: str, answer: str) -> None:
    history.begin_reply()
    history.add_user(question)
    history.record_agent_reply(answer)


def contents(history: ChatHistory) -> list[str]:
    return [m["content"] for m in history.messages]


def test_the_history_holds_history_turns_exchanges_while_answering_and_one_less_after():
    history = ChatHistory("Be brief.", history_turns=3)
    for n in range(5):
        answered(history, f"q{n}", f"a{n}")
    assert contents(history) == ["q3", "a3", "q4", "a4"]  # room for the next question
    history.begin_reply()
    history.add_user("q5")
    assert contents(history) == ["q3", "a3", "q4", "a4", "q5"]  # three exchanges, the current one included
    assert history.prompt()[0] == {"role": "system", "content": "Be brief."}
    assert history.next_prompt_prefix()[-1] == {"role": "user", "content": ""}


def test_an_unanswered_question_is_an_exchange_of_its_own():
    history = ChatHistory("", history_turns=2)
    answered(history, "q0", "a0")
    answered(history, "q1", "   ")  # nothing was played: the question alone stays
    assert contents(history) == ["q1"]
    history.begin_reply()
    history.add_user("q2")
    assert contents(history) == ["q1", "q2"]


def test_with_history_turns_0_the_question_being_answered_is_kept():
    history = ChatHistory("Be brief.", history_turns=0)
    history.begin_reply()
    history.add_user("what time is it")
    assert history.prompt() == [{"role": "system", "content": "Be brief."},
                                {"role": "user", "content": "what time is it"}]
    assert history.record_agent_reply("It is noon.")
    assert history.messages == []  # nothing is carried to the next turn


def test_rollback_forgets_the_reply_in_progress_and_only_it():
    history = ChatHistory("", history_turns=4)
    answered(history, "q0", "a0")
    history.begin_reply()
    history.add_user("q1")
    call = ToolCall("c1", "calculator", '{"expression": "1 + 1"}')
    history.add_tool_round("", [call], [ToolResult(call, "ok", "2")])
    history.rollback()
    assert contents(history) == ["q0", "a0"]
    assert not history.record_agent_reply("too late")  # no reply in progress: nothing changes
    assert contents(history) == ["q0", "a0"]
    history.begin_reply()
    history.add_user("q2")
    history.record_agent_reply("a2")
    history.rollback()  # the reply is stored: a no-op
    assert contents(history) == ["q0", "a0", "q2", "a2"]


def test_a_call_read_from_the_words_is_given_with_the_question_unless_it_failed():
    history = ChatHistory("", history_turns=2)
    clock = ToolCall("c1", "clock", "{}")
    history.begin_reply()
    history.add_user("What time is it?")
    history.add_tool_round("", [clock], [ToolResult(clock, "ok", "Sunday, 06 December 2026, 22:20 (UTC)")],
                           read_from_words=True)
    assert history.messages == [{"role": "user", "content": "What time is it?\n(clock: Sunday, 06 December 2026, 22:20 (UTC))"}]
    history.record_agent_reply("It is twenty past ten.")
    assert contents(history) == ["What time is it?\n(clock: Sunday, 06 December 2026, 22:20 (UTC))", "It is twenty past ten."]

    calc = ToolCall("c2", "calculator", json.dumps({"expression": "1 / 0"}))
    history.begin_reply()
    history.add_user("what is one divided by zero")
    history.add_tool_round("", [calc], [ToolResult(calc, "error", "division by zero")], read_from_words=True)
    assert [m["role"] for m in history.messages[-3:]] == ["user", "assistant", "tool"]  # a round: the model acts on the error
    assert history.messages[-3]["content"] == "what is one divided by zero"


def test_an_utterance_left_unanswered_is_not_stored():
    history = ChatHistory("", history_turns=4)
    history.begin_reply()  # a filler: the brain never calls add_user
    assert not history.record_agent_reply("")
    assert history.messages == []


def test_tool_rounds_keep_the_arguments_as_the_models_json_text_and_the_spoken_words_once():
    history = ChatHistory("", history_turns=2)
    call = ToolCall("c1", "calculator", json.dumps({"expression": "47 * 38"}))
    history.begin_reply()
    history.add_user("what is 47 times 38")
    history.add_tool_round(" Let me check. ", [call], [ToolResult(call, "ok", "47 * 38 = 1,786")])
    assert history.messages[1] == {"role": "assistant", "content": "Let me check.", "tool_calls": [
        {"id": "c1", "type": "function", "function": {"name": "calculator", "arguments": '{"expression": "47 * 38"}'}}]}
    assert history.messages[2] == {"role": "tool", "tool_call_id": "c1", "content": "47 * 38 = 1,786"}
    history.record_agent_reply("Let me check. It is 1,786.")
    assert [(m["role"], m["content"]) for m in history.messages] == [
        ("user", "what is 47 times 38"), ("assistant", ""), ("tool", "47 * 38 = 1,786"),
        ("assistant", "Let me check. It is 1,786.")]
    # The next exchange pushes the whole first one out, its tool round with it.
    answered(history, "thanks", "You're welcome.")
    assert contents(history) == ["thanks", "You're welcome."]


def test_a_reply_with_nothing_spoken_drops_its_tool_rounds():
    history = ChatHistory("", history_turns=2)
    call = ToolCall("c1", "clock", "{}")
    history.begin_reply()
    history.add_user("what time is it")
    history.add_tool_round("", [call], [ToolResult(call, "ok", "12:00")])
    assert history.record_agent_reply("")
    assert history.messages == [{"role": "user", "content": "what time is it"}]


def size(text: str) -> int:
    return words(text) + MESSAGE_OVERHEAD_TOKENS


def test_the_token_budget_drops_the_oldest_exchanges_first():
    long_answer = "word " * 30
    system = "Be brief."
    budget = size(system) + size("q0") + size(long_answer) + size("q1") + size(long_answer) + size("q2")
    history = ChatHistory(system, history_turns=10, tokens_in=words, budget=budget)
    answered(history, "q0", long_answer)
    answered(history, "q1", long_answer)
    history.begin_reply()
    history.add_user("q2")
    assert contents(history)[::2] == ["q0", "q1", "q2"]  # it fits exactly
    history.record_agent_reply(long_answer)
    history.begin_reply()
    history.add_user("q3")
    assert contents(history)[::2] == ["q1", "q2", "q3"]  # the oldest exchange went to make room
    history.rollback()
    assert contents(history)[::2] == ["q1", "q2"]


def test_a_user_message_too_long_on_its_own_is_cut_to_fit():
    history = ChatHistory("Be brief.", history_turns=10, tokens_in=words, budget=200)
    answered(history, "tell me about the moon", "The moon orbits the earth.")
    history.begin_reply()
    history.add_user("and then the rain kept falling " * 100)
    [question] = history.messages  # the old exchange went first
    assert question["content"].startswith("and then the rain kept falling")
    used = size("Be brief.") + size(question["content"])
    # Cut to fit, not emptied. The cut is proportional to the characters, so the message's own
    # framing may go over by a little (the cascade's budget keeps CONTEXT_MARGIN_TOKENS for that).
    assert 100 < used <= 200 + MESSAGE_OVERHEAD_TOKENS
    history.record_agent_reply("Rain.")
    assert history.messages[-1] == {"role": "assistant", "content": "Rain."}


def test_tool_rounds_count_against_the_budget():
    call = ToolCall("c1", "calculator", '{"expression": "2 + 2"}')
    result = ToolResult(call, "ok", "four " * 50)
    history = ChatHistory("", history_turns=10, tokens_in=words, budget=80)
    answered(history, "first question", "an answer")
    history.begin_reply()
    history.add_user("two plus two")
    assert contents(history)[0] == "first question"
    history.add_tool_round("", [call], [result])
    assert contents(history)[0] == "two plus two"  # the older exchange made room for the result


def test_without_a_token_count_only_exchanges_bound_the_history():
    history = ChatHistory("", history_turns=2, budget=1)
    history.begin_reply()
    history.add_user("word " * 1000)
    assert len(history.messages[0]["content"]) == 5000


def test_the_persona_is_followed_by_the_tools_instructions():
    assert persona("Be brief.") == "Be brief."
    assert persona("Be brief.", ToolPrompt(specs=(), instructions="Use the calculator.")) == \
        "Be brief. Use the calculator."
    assert persona("Be brief.", ToolPrompt(specs=())) == "Be brief."
