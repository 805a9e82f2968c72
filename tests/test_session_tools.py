"""Tool calls within a turn, with the scripted brain and tone voice (no models, no network):
the flow, a tool that raises, one that hangs, barge-in during a call, preemptive answers,
invalid arguments, too many rounds, the events, the timeline and the metrics."""

import asyncio
import json

import numpy as np
import pytest

from agent.brains.base import ToolsUnsupported
from agent.config import load_config
from agent.events import ToolCallFinished, to_json
from agent.session import AgentSession
from agent.testing import ScriptedBrain, ToneVoice
from agent.tools import ToolCall
from agent.tools.builtins import calculator_tool
from agent.tools.toolbox import ToolBox, toolbox_for

from .helpers import of_type
from .synth import silence, voiced

APOLOGY = load_config(environ={}).tools.apology


def calc(expression, call_id="call_1"):
    return ToolCall(call_id, "calculator", json.dumps({"expression": expression}))


def make_session(rounds, tools, **config_overrides):
    events = []
    config = load_config(environ={}, overrides=config_overrides)
    box = ToolBox(tools, timeout_s=config.tools.timeout_s)
    session = AgentSession(config, ScriptedBrain(rounds=rounds), ToneVoice(seconds_per_word=0.05),
                           send_event=lambda e: events.append(to_json(e)), tools=box)
    return session, events


async def play_out(session, turn, timeout=10.0):
    """Pull frames as the playout track would until the turn has finished."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not turn.task.done():
        assert asyncio.get_running_loop().time() < deadline, "the turn did not finish"
        session.output.pull(960)
        await asyncio.sleep(0.001)


def spoken(events):
    return " ".join(e["text"] for e in of_type(events, "agent_text"))


async def test_the_model_calls_a_tool_and_speaks_its_result_in_the_same_turn():
    queued_when_called = []

    async def calculator(expression: str) -> str:
        """Work out an arithmetic expression."""
        queued_when_called.append(session.output.queued_samples)
        return await calculator_tool().fn(expression=expression)

    session, events = make_session([["Let me check.", calc("47 * 38")], ["It is 1786."]], [calculator])
    turn = session.start_answer(voiced(600), speech_end=0.0, turn_end=0.2)
    await play_out(session, turn)
    # "Let me check." was already synthesised and queued when the tool ran.
    assert queued_when_called and queued_when_called[0] > 0
    assert session.conversation.tool_results[0].content == "47 * 38 = 1,786"
    [started] = of_type(events, "tool_call")
    assert started == {"type": "tool_call", "turn": 1, "call_id": "call_1", "name": "calculator",
                       "arguments": {"expression": "47 * 38"}}
    [finished] = of_type(events, "tool_result")
    assert finished["status"] == "ok" and finished["result"] == "47 * 38 = 1,786" and finished["ms"] >= 0
    kinds = [e["type"] for e in events]
    assert kinds.index("tool_call") < kinds.index("tool_result") < kinds.index("timeline")
    assert spoken(events) == "Let me check. It is 1786."
    [timeline] = of_type(events, "timeline")
    assert timeline["outcome"] == "answered"
    assert [t["name"] for t in timeline["tools"]] == ["calculator"] and timeline["tools"][0]["status"] == "ok"
    assert timeline["tools"][0]["start_ms"] >= timeline["ms"]["first_token"]
    assert not of_type(events, "error")
    history = session.conversation.history
    assert history[0] == ("user", "(stub)") and history[-1] == ("assistant", "Let me check. It is 1786.")
    await session.close()


async def test_a_tool_that_raises_becomes_a_spoken_apology_and_an_error_event():
    async def lookup_order(order_id: str) -> str:
        """Look up an order."""
        raise ConnectionError("orders database unreachable")

    session, events = make_session([["One moment.", ToolCall("call_1", "lookup_order", '{"order_id": "A-1"}')],
                                    ["It shipped yesterday."]], [lookup_order])
    turn = session.start_answer(voiced(600), 0.0, 0.2)
    await play_out(session, turn)
    [finished] = of_type(events, "tool_result")
    assert finished["status"] == "error" and "orders database unreachable" in finished["result"]
    [error] = of_type(events, "error")
    assert error["kind"] == "tool_error" and "ConnectionError" in error["message"]
    assert spoken(events) == f"One moment. {APOLOGY}"  # the model is not asked again
    assert session.conversation.tool_results == []
    assert of_type(events, "timeline")[0]["outcome"] == "error"
    assert session.state == "listening"
    # The session goes on: the next turn is answered.
    session.brain.rounds = [["Fine."]]
    turn = session.start_answer(voiced(600), 10.0, 10.2)
    await play_out(session, turn)
    assert of_type(events, "timeline")[-1]["outcome"] == "answered"
    await session.close()


async def test_a_tool_that_hangs_times_out_with_an_apology_and_sees_its_cancellation():
    cancelled = asyncio.Event()

    async def slow_lookup() -> str:
        """Never answers."""
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    session, events = make_session([[ToolCall("call_1", "slow_lookup")], ["Never said."]], [slow_lookup],
                                   **{"tools.timeout_s": "0.3"})
    turn = session.start_answer(voiced(600), 0.0, 0.2)
    await play_out(session, turn)
    assert cancelled.is_set()
    [finished] = of_type(events, "tool_result")
    assert finished["status"] == "timeout" and finished["ms"] >= 250
    assert [e["kind"] for e in of_type(events, "error")] == ["tool_timeout"]
    assert spoken(events) == APOLOGY
    [timeline] = of_type(events, "timeline")
    assert timeline["outcome"] == "error" and timeline["tools"][0]["status"] == "timeout"
    await session.close()


async def test_barge_in_during_a_tool_call_cancels_the_tool():
    started, cancelled = asyncio.Event(), asyncio.Event()

    async def book_slot(day: str) -> str:
        """Book a slot."""
        started.set()
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            cancelled.set()
            raise
        return "booked"

    session, events = make_session([["Booking it now.", ToolCall("call_1", "book_slot", '{"day": "Monday"}')],
                                    ["Done, you are booked."]], [book_slot])
    turn = session.start_answer(voiced(600), 0.0, 0.2)
    await asyncio.wait_for(started.wait(), 5)
    for _ in range(5):  # a little of "Booking it now." is heard
        session.output.pull(960)
    session.barge_in()
    await asyncio.wait_for(cancelled.wait(), 5)  # the tool saw the CancelledError
    await asyncio.sleep(0.01)
    [finished] = of_type(events, "tool_result")
    assert finished["status"] == "cancelled"
    assert not of_type(events, "error")  # an interruption is not an error: no apology either
    [timeline] = of_type(events, "timeline")
    assert timeline["outcome"] == "interrupted" and timeline["tools"][0]["status"] == "cancelled"
    assert "booked" not in spoken(events) and APOLOGY not in spoken(events)
    assert turn.task.done() and session.conversation.tool_results == []
    await session.close()


def feed(session, pcm):
    for event in session.user_turns.feed(pcm.tobytes()):
        session.on_turn_event(event)


async def test_a_preemptive_answer_runs_no_tool_until_the_turn_is_confirmed():
    calls = []

    async def send_message(text: str) -> str:
        """Send a message (a side effect)."""
        calls.append(text)
        return "sent"

    rounds = [["Sending it.", ToolCall("call_1", "send_message", '{"text": "hi"}')], ["Sent."]]
    session, events = make_session(rounds, [send_message], **{"turns.semantic": "false"})
    feed(session, np.concatenate([silence(300), voiced(700), silence(250)]))  # a pause: the answer starts, held
    assert session.preemptions["started"] == 1
    await asyncio.sleep(0.2)
    assert calls == [] and not of_type(events, "tool_call")  # held: its text is ready, its tool waits
    feed(session, silence(400))  # the turn ends with the same audio: released
    assert session.preemptions["hits"] == 1
    turn = session.answer
    await play_out(session, turn)
    assert calls == ["hi"] and of_type(events, "tool_result")[0]["status"] == "ok"
    assert spoken(events) == "Sending it. Sent."
    await session.close()

    # The same held answer, discarded because the user goes on: the tool never runs.
    calls.clear()
    session, events = make_session(rounds, [send_message], **{"turns.semantic": "false", "turns.hangover_ms": "600"})
    feed(session, np.concatenate([silence(300), voiced(700), silence(250)]))
    await asyncio.sleep(0.2)
    feed(session, voiced(500, seed=3))  # ... the user goes on
    assert session.preemptions["discarded"] == 1
    await asyncio.sleep(0.1)
    assert calls == [] and not of_type(events, "tool_call") and not of_type(events, "tool_result")
    assert session.conversation.history == []
    await session.close()


async def test_invalid_arguments_go_back_to_the_model_and_the_tool_is_not_called():
    calls = []

    async def calculator(expression: str) -> str:
        """Calculate."""
        calls.append(expression)
        return "42"

    session, events = make_session([[ToolCall("call_1", "calculator", '{"expr": 6}')],
                                    [calc("6 * 7", "call_2")], ["It is 42."]], [calculator])
    turn = session.start_answer(voiced(600), 0.0, 0.2)
    await play_out(session, turn)
    first, second = session.conversation.tool_results
    assert first.status == "invalid" and "'expression' is a required property" in first.content
    assert second.ok and calls == ["6 * 7"]
    assert [e["status"] for e in of_type(events, "tool_result")] == ["invalid", "ok"]
    assert spoken(events) == "It is 42." and not of_type(events, "error")
    await session.close()


async def test_a_model_that_keeps_calling_tools_is_stopped_with_an_apology():
    async def clock() -> str:
        """The time."""
        return "noon"

    rounds = [[ToolCall(f"call_{i}", "clock")] for i in range(10)]
    session, events = make_session(rounds, [clock], **{"tools.max_rounds": "2"})
    turn = session.start_answer(voiced(600), 0.0, 0.2)
    await play_out(session, turn)
    assert len(of_type(events, "tool_result")) == 2
    assert of_type(events, "error")[0]["kind"] == "tool_rounds"
    assert spoken(events) == APOLOGY
    await session.close()


async def test_a_brain_without_tools_refuses_them_at_once():
    class NoTools(ScriptedBrain):
        supports_tools = False

    config = load_config(environ={})
    with pytest.raises(ToolsUnsupported, match="tools.builtin = \\[\\]"):
        AgentSession(config, NoTools(), ToneVoice(), tools=toolbox_for(config))
    AgentSession(config, NoTools(), ToneVoice(), tools=ToolBox([]))  # no tools: fine


def test_tool_calls_are_counted_in_the_metrics():
    from signaling.metrics import AgentMetrics

    metrics = AgentMetrics()
    for name, status, ms in (("calculator", "ok", 3.0), ("calculator", "timeout", 10000.0), ("calculator", "invalid", 0.0),
                             ("made_up", "unknown", 0.0), ("clock", "cancelled", 5.0)):
        metrics.record_event(ToolCallFinished(1, "c", name, status, "", ms))
    text = metrics.exposition()[0].decode()
    assert 'voice_agent_tool_calls_total{tool="calculator"} 3.0' in text
    assert 'voice_agent_tool_calls_total{tool="(unknown)"} 1.0' in text and "made_up" not in text
    assert 'voice_agent_tool_errors_total{status="timeout",tool="calculator"} 1.0' in text
    assert 'voice_agent_tool_errors_total{status="invalid",tool="calculator"} 1.0' in text
    assert 'voice_agent_tool_seconds_count{tool="calculator"} 2.0' in text  # invalid never ran
    assert 'voice_agent_tool_seconds_sum{tool="clock"} 0.005' in text
