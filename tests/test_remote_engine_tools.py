"""The openai brain's tool rounds through the real session and turn, against
`ToolCallingEngineDouble` (a scripted model on 127.0.0.1 that streams a calculator call in
OpenAI's `tool_calls` format and checks the next request carries the call and its result):
the real built-in calculator runs with the model's arguments, the events, the forced
`tool_choice`, the history, a malformed call, and audio mode's refusal. No model files needed."""

import asyncio
import json

import pytest

from agent.brains import brain_kind
from agent.brains.base import ToolsUnsupported, check_tools
from agent.brains.chat_history import ChatHistory
from agent.config import load_config
from agent.events import to_json
from agent.runtime.openai_api import EngineProtocolError, ToolCallGatherer
from agent.session import AgentSession
from agent.testing import ToneVoice
from agent.tools import ToolCall
from agent.tools.calls import ToolResult
from agent.tools.toolbox import toolbox_for

from .engine_doubles import ToolCallingEngineDouble
from .helpers import of_type
from .synth import voiced

pytestmark = pytest.mark.loopback


def openai_config(url: str, **extra):
    return load_config(environ={}, overrides={"brain.kind": "openai", "openai.base_url": url + "/v1",
                                              "openai.transcription": "remote", **extra})


async def run_turn(session, start: float = 0.0, timeout: float = 20.0):
    turn = session.start_answer(voiced(600), start, start + 0.2)
    deadline = asyncio.get_running_loop().time() + timeout
    while not turn.task.done():
        assert asyncio.get_running_loop().time() < deadline, "the turn did not finish"
        session.output.pull(960)
        await asyncio.sleep(0.001)


async def open_session(engine):
    config = openai_config(engine.url)
    assert config.tools.builtin == ["calculator", "clock"]  # the default config: tools on
    brain = brain_kind("openai").load(config, {})
    events = []
    session = AgentSession(config, brain, ToneVoice(seconds_per_word=0.02), send_event=lambda e: events.append(to_json(e)),
                           tools=toolbox_for(config))
    return brain, session, events


async def one_turn(engine) -> tuple[AgentSession, list[dict]]:
    """A session on `engine` that hears one spoken question, then closes: the session and its events."""
    brain, session, events = await open_session(engine)
    try:
        await run_turn(session)
    finally:
        await session.close()
        brain.close()
    return session, events


async def test_a_spoken_calculation_calls_the_calculator_and_speaks_its_result():
    async with ToolCallingEngineDouble() as engine:
        session, events = await one_turn(engine)
    assert not of_type(events, "error"), of_type(events, "error")
    # Round 1: the tools and the instructions went with it, and tool_choice forced the calculator.
    first, second = engine.chats
    assert [t["function"]["name"] for t in first["tools"]] == ["calculator", "clock"]
    assert first["tool_choice"] == "auto"  # the call's schema holds the output to it (llama.cpp's server ignores a named tool_choice)
    assert first["response_format"]["json_schema"]["schema"]["properties"]["name"] == {"const": "calculator"}
    assert first["messages"][0]["role"] == "system" and "calculator" in first["messages"][0]["content"]
    assert first["messages"][-1] == {"role": "user", "content": engine.MODEL_WRITES}
    assert second["tool_choice"] == "auto" and "response_format" not in second  # only the first round is forced
    # The calculator ran with the arguments the model streamed in pieces.
    [started] = of_type(events, "tool_call")
    assert started["name"] == "calculator" and started["call_id"] == ToolCallingEngineDouble.CALL_ID
    assert started["arguments"] == {"expression": "47 * 38"}
    [finished] = of_type(events, "tool_result")
    assert finished["status"] == "ok" and finished["result"] == "47 * 38 = 1,786"
    texts = " ".join(e["text"] for e in of_type(events, "agent_text"))
    assert texts == "Let me work that out. 47 times 38 is 1,786."
    assert of_type(events, "timeline")[-1]["outcome"] == "answered"
    # The history keeps the tool round (its text now in the spoken answer) and what was said.
    history = session.conversation.history
    assert [m["role"] for m in history] == ["user", "assistant", "tool", "assistant"]
    assert history[1]["content"] == "" and history[1]["tool_calls"][0]["id"] == ToolCallingEngineDouble.CALL_ID
    assert history[-1]["content"] == texts


async def test_a_calculation_read_from_the_words_is_called_without_a_model_round():
    """"What is 47 times 38?" holds the call itself: the agent calls the calculator with 47 * 38
    at once (no round that writes its JSON) and the engine's one round says the result."""
    async with ToolCallingEngineDouble(agent_calls=True) as engine:
        session, events = await one_turn(engine)
    assert not of_type(events, "error"), of_type(events, "error")
    [only] = engine.chats  # one round, the calculator's result given with the question
    assert only["messages"][-1] == {"role": "user", "content": f"{engine.PLAIN}\n(calculator: 47 * 38 = 1,786)"}
    assert "response_format" not in only
    [started] = of_type(events, "tool_call")
    assert started["name"] == "calculator" and started["call_id"] == "call_1"
    assert started["arguments"] == {"expression": "47 * 38"}
    assert [e["status"] for e in of_type(events, "tool_result")] == ["ok"]
    assert " ".join(e["text"] for e in of_type(events, "agent_text")) == "47 times 38 is 1,786."
    assert [m["role"] for m in session.conversation.history] == ["user", "assistant"]


async def test_a_call_the_model_writes_as_text_is_run_and_never_spoken():
    async with ToolCallingEngineDouble(written_as_text=True) as engine:
        session, events = await one_turn(engine)
    assert not of_type(events, "error"), of_type(events, "error")
    assert len(engine.chats) == 2  # round 2 carried the call (id call_1) and the calculator's result
    [started] = of_type(events, "tool_call")
    assert started["call_id"] == "call_1" and started["arguments"] == {"expression": "47 * 38"}
    texts = " ".join(e["text"] for e in of_type(events, "agent_text"))
    assert texts == "Let me work that out. 47 times 38 is 1,786."
    assert "{" not in texts and "calculator" not in texts


async def test_a_malformed_tool_call_is_an_error_event_and_the_session_goes_on():
    async with ToolCallingEngineDouble(malformed=True) as engine:
        brain, session, events = await open_session(engine)
        try:
            await run_turn(session)
            [error] = of_type(events, "error")
            assert error["kind"] == "EngineProtocolError" and "malformed tool call" in error["message"]
            assert "arguments are not a JSON string" in error["message"]
            assert not of_type(events, "tool_call") and session.state == "listening"
            # The next turn is asked again (and the same malformed call fails the same way).
            await run_turn(session, 10.0)
            assert len(of_type(events, "error")) == 2 and len(engine.chats) == 2
        finally:
            await session.close()
            brain.close()


def test_tool_call_fragments_are_gathered_by_index_and_malformed_ones_refused():
    gatherer = ToolCallGatherer("the engine")
    gatherer.add([{"index": 1, "id": "b", "function": {"name": "clock", "arguments": ""}}])
    gatherer.add([{"index": 0, "id": "a", "function": {"name": "calculator", "arguments": '{"expr'}}])
    gatherer.add([{"index": 0, "function": {"arguments": 'ession": "2 + 2"}'}}, {"index": 1, "id": "b"}])
    # llama.cpp's server repeats the id and the whole name with every fragment.
    gatherer.add([{"index": 0, "id": "a", "function": {"name": "calculator", "arguments": ""}}])
    assert gatherer.finish() == [ToolCall("a", "calculator", '{"expression": "2 + 2"}'), ToolCall("b", "clock", "{}")]
    for bad, needle in [({"index": 0, "function": "calculator"}, "not an object"),
                        ({"index": "0", "function": {"name": "x"}}, "no integer index"),
                        ({"index": 0, "function": {"name": 7}}, "name is not a string"),
                        ("call", "not an object")]:
        with pytest.raises(EngineProtocolError, match=needle):
            ToolCallGatherer("the engine").add([bad])
    with pytest.raises(EngineProtocolError, match="not a list"):
        ToolCallGatherer("the engine").add({"index": 0})
    nameless = ToolCallGatherer("the engine")
    nameless.add([{"index": 0, "function": {"arguments": "{}"}}])
    with pytest.raises(EngineProtocolError, match="no function name"):
        nameless.finish()


def test_the_history_keeps_used_tool_rounds_and_forgets_rolled_back_ones():
    history = ChatHistory("Be brief.", history_turns=2)
    call = ToolCall("c1", "calculator", json.dumps({"expression": "2 + 2"}))
    history.begin_reply()
    history.add_user("what is two plus two")
    history.add_tool_round("One moment.", [call], [ToolResult(call, "ok", "2 + 2 = 4")])
    assert history.messages[1]["content"] == "One moment." and history.messages[2]["role"] == "tool"
    assert history.record_agent_reply("One moment. It is 4.")
    assert [(m["role"], m["content"]) for m in history.messages] == [
        ("user", "what is two plus two"), ("assistant", ""), ("tool", "2 + 2 = 4"),
        ("assistant", "One moment. It is 4.")]
    # A preemptive answer the user talked over: its tool round goes with it.
    history.begin_reply()
    history.add_user("and three plus three")
    history.add_tool_round("", [ToolCall("c2", "calculator", "{}")], [ToolResult(call, "ok", "6")])
    history.rollback()
    assert len(history.messages) == 4
    # Nothing spoken: the question alone stays.
    history.begin_reply()
    history.add_user("and five plus five")
    history.add_tool_round("", [ToolCall("c3", "calculator", "{}")], [ToolResult(call, "ok", "10")])
    assert history.record_agent_reply("  ")
    assert history.messages[-1] == {"role": "user", "content": "and five plus five"}
    # An exchange is a user turn and all that follows it (tool rounds too): after a reply
    # history_turns - 1 stay, starting with a user turn.
    history.begin_reply()
    history.add_user("bye")
    history.record_agent_reply("Bye.")
    assert [m["content"] for m in history.messages] == ["bye", "Bye."]


def test_audio_mode_refuses_tools_at_start_up_saying_what_to_change():
    config = openai_config("http://127.0.0.1:9", **{"openai.mode": "audio"})
    brain = brain_kind("openai").load(config, {})
    try:
        assert not brain.supports_tools
        with pytest.raises(ToolsUnsupported, match="openai.mode = text"):
            check_tools(brain, toolbox_for(config))
        with pytest.raises(ToolsUnsupported, match="openai.mode = text"):
            brain.new_conversation(toolbox_for(config).prompt())
        check_tools(brain, toolbox_for(config.replace(**{"tools.builtin": []})))  # without tools it runs
    finally:
        brain.close()
    text_brain = brain_kind("openai").load(openai_config("http://127.0.0.1:9"), {})
    assert text_brain.supports_tools
    text_brain.close()


def test_loading_the_models_refuses_tools_the_brain_cannot_call():
    from agent.models import load_models

    config = openai_config("http://127.0.0.1:9", **{"openai.mode": "audio"})
    with pytest.raises(ToolsUnsupported, match="the openai brain cannot call tools.*openai.mode = text"):
        load_models(config, progress=False)  # refused once, right after the brain loads
