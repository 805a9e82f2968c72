"""GET /metrics: the Prometheus figures move when a loopback call runs one answered turn."""

import asyncio

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from signaling.client import HeadlessClient
from agent.events import BargeIn, StateChanged, TurnError, TurnFinished
from signaling.metrics import AgentMetrics

from .helpers import is_type

STAGES = ("turn_end", "transcript", "first_token", "first_phrase", "first_pcm", "first_frame")


def parse(text: str) -> dict[tuple[str, tuple], float]:
    """{(sample name, sorted labels): value} for every sample in a scrape."""
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


async def scrape(http: aiohttp.ClientSession, agent_url: str) -> dict[tuple[str, tuple], float]:
    async with http.get(f"{agent_url}/metrics") as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"].startswith("text/plain")
        return parse(await resp.text())


def value(metrics: dict, name: str, **labels) -> float:
    return metrics.get((name, tuple(sorted(labels.items()))), 0.0)


async def active_sessions(http, agent_url) -> float:
    return value(await scrape(http, agent_url), "voice_agent_active_sessions")


async def settle(http, agent_url, timeout_s: float) -> float:
    """Wait (a while) for sessions of earlier tests to be released; the count then."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while (count := await active_sessions(http, agent_url)) and loop.time() < deadline:
        await asyncio.sleep(0.2)
    return count


@pytest.mark.models
@pytest.mark.loopback
async def test_metrics_move_with_a_loopback_call(config, agent_url, spoken):
    question = await spoken("What is the capital of France?")
    async with aiohttp.ClientSession() as http:
        await settle(http, agent_url, config.server.peer_idle_timeout_s + 5)
        before = await scrape(http, agent_url)
        for model in ("asr", "llm", "voice", "total"):
            assert value(before, "voice_agent_model_load_seconds", model=model) > 0, model

        client = HeadlessClient(config.ice)
        try:
            await client.connect(agent_url)
            await client.wait_event(is_type("hello"), 10)
            during = await scrape(http, agent_url)
            assert value(during, "voice_agent_active_sessions") == value(before, "voice_agent_active_sessions") + 1
            assert value(during, "voice_agent_sessions_total") == value(before, "voice_agent_sessions_total") + 1

            sent = client.say(question)
            await sent.done.wait()
            timeline = await client.wait_event(is_type("timeline", turn=1), 90)
            assert timeline["outcome"] == "answered"
            after = await scrape(http, agent_url)
        finally:
            await client.close()

        def grew(name: str, by: float = 1, **labels) -> bool:
            return value(after, name, **labels) - value(before, name, **labels) >= by

        assert value(after, "voice_agent_turns_total", outcome="answered") == \
            value(before, "voice_agent_turns_total", outcome="answered") + 1
        for stage in STAGES:
            assert grew("voice_agent_stage_latency_seconds_count", stage=stage), stage
            assert grew("voice_agent_stage_latency_seconds_sum", by=0.001, stage=stage), stage
        # first_frame comes after the transcript: its sum grew by more.
        first_frame = value(after, "voice_agent_stage_latency_seconds_sum", stage="first_frame") - \
            value(before, "voice_agent_stage_latency_seconds_sum", stage="first_frame")
        transcript = value(after, "voice_agent_stage_latency_seconds_sum", stage="transcript") - \
            value(before, "voice_agent_stage_latency_seconds_sum", stage="transcript")
        assert first_frame > transcript
        assert abs(first_frame - timeline["ms"]["first_frame"] / 1000) < 0.01
        assert grew("voice_agent_outbound_frame_lateness_seconds_count", by=50)  # more than a second of frames

        # The session is released once the client has hung up.
        deadline = asyncio.get_running_loop().time() + config.server.peer_idle_timeout_s + 5
        while await active_sessions(http, agent_url) > value(before, "voice_agent_active_sessions"):
            if asyncio.get_running_loop().time() > deadline:
                pytest.fail("active sessions did not go back down after the call")
            await asyncio.sleep(0.2)


def test_events_feed_the_counters_and_registries_are_per_app():
    first, second = AgentMetrics(), AgentMetrics()  # no clash: each has its own registry
    first.record_event(BargeIn(1, "Once upon"))
    first.record_event(TurnError(2, "timeout", "too slow"))
    first.record_event(TurnFinished(1, "interrupted", {"speech_end": 0.0, "turn_end": 310.0}, playout={"gaps": 2}))
    first.record_event(StateChanged("listening"))
    metrics = parse(first.exposition()[0].decode())
    assert value(metrics, "voice_agent_barge_ins_total") == 1
    assert value(metrics, "voice_agent_errors_total", kind="timeout") == 1
    assert value(metrics, "voice_agent_turns_total", outcome="interrupted") == 1
    assert value(metrics, "voice_agent_turns_total", outcome="answered") == 0
    assert value(metrics, "voice_agent_stage_latency_seconds_sum", stage="turn_end") == pytest.approx(0.31)
    assert value(metrics, "voice_agent_stage_latency_seconds_count", stage="speech_end") == 0
    assert value(metrics, "voice_agent_answer_gaps_total") == 2
    assert value(parse(second.exposition()[0].decode()), "voice_agent_barge_ins_total") == 0
