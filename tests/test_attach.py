"""The embedding API: the agent put on peer connections that the test negotiates itself (no
HTTP), using only public names (`signaling`, `agent.models`, `agent.config`, and the agent's
paced PcmQueue/PlayoutTrack as the caller's microphone)."""

import asyncio
import json
import time

import numpy as np
import pytest
from aiortc import RTCPeerConnection

from agent.events import EVENTS, to_json
from agent.pipeline.pcm_queue import PcmQueue
from signaling.playout_track import PlayoutTrack
from signaling import AttachedAgent, agent_for_track, apply_host_addresses, attach_agent, rtc_configuration

from .helpers import LOUD_RMS, ListeningPeer, of_type, rms, wait_until

pytestmark = [pytest.mark.models, pytest.mark.loopback]


def collect(into: list[dict]):
    """An on_event callback: checks each event is one of agent.events' types and keeps its JSON."""
    def on_event(event) -> None:
        assert isinstance(event, EVENTS), event
        into.append(to_json(event))
    return on_event


class Caller(ListeningPeer):
    """The far end of the call: a microphone track, a listener for what comes back, and a
    connected-state flag."""

    def __init__(self, pc: RTCPeerConnection) -> None:
        super().__init__(pc)
        self.mic_queue = PcmQueue()
        self.mic = PlayoutTrack(self.mic_queue)

    def say(self, samples: np.ndarray) -> asyncio.Event:
        done = asyncio.Event()
        self.mic_queue.push(samples, on_done=lambda _segment, _played: done.set())
        return done


async def ask(caller: Caller, agent: AttachedAgent, events: list[dict], question: np.ndarray) -> float:
    """Speak the question; wait for the turn's timeline and half a second of the answer."""
    done = caller.say(question)
    await asyncio.wait_for(done.wait(), 30)
    asked_at = time.perf_counter()
    await wait_until(lambda: of_type(events, "timeline"), 90, "the turn's timeline event")
    await wait_until(lambda: caller.loud_after(asked_at) >= 25, 10, "half a second of the spoken answer")
    return asked_at


async def test_attach_to_a_peer_connection_that_answers(config, models, spoken):
    """The call app answers the caller's offer and attaches the agent in between."""
    apply_host_addresses(config.ice.host_addresses)
    question = await spoken("What is the capital of France?")
    caller = Caller(RTCPeerConnection(rtc_configuration(config.ice)))
    call_app = RTCPeerConnection(rtc_configuration(config.ice))
    caller.pc.addTransceiver(caller.mic, direction="sendrecv")
    channel = caller.pc.createDataChannel("events")
    channel_events: list[dict] = []
    channel.on("message", lambda message: channel_events.append(json.loads(message)))
    app_events: list[dict] = []
    try:
        await caller.pc.setLocalDescription(await caller.pc.createOffer())
        await call_app.setRemoteDescription(caller.pc.localDescription)
        agent = await attach_agent(call_app, models, config, on_event=collect(app_events))
        await call_app.setLocalDescription(await call_app.createAnswer())
        await caller.pc.setRemoteDescription(call_app.localDescription)
        await asyncio.wait_for(caller.connected.wait(), 20)
        await wait_until(lambda: of_type(channel_events, "hello"), 10, "hello on the events channel")
        assert of_type(channel_events, "hello")[0]["session"] == agent.id

        await ask(caller, agent, app_events, question)
        transcript = of_type(app_events, "transcript")[0]
        assert "france" in transcript["text"].lower()
        timeline = of_type(app_events, "timeline")[0]
        assert timeline["outcome"] == "answered"
        assert {"transcript", "first_token", "first_frame"} <= set(timeline["ms"])
        assert "paris" in " ".join(e["text"] for e in of_type(app_events, "agent_text")).lower()
        assert [t.outcome for t in agent.timelines] == ["answered"]
        # The events channel carried the same events as the callback.
        await wait_until(lambda: of_type(channel_events, "timeline"), 5, "the timeline on the events channel")
        assert of_type(channel_events, "transcript") == of_type(app_events, "transcript")

        await call_app.close()  # the agent ends with the peer connection
        await wait_until(lambda: agent.closed, 5, "the agent to close with its peer connection")
        assert agent.outbound.readyState == "ended"
    finally:
        await caller.close()
        await call_app.close()


async def test_attach_to_a_peer_connection_that_offers(config, models, spoken):
    """The call app offers: it attaches the agent before createOffer()."""
    apply_host_addresses(config.ice.host_addresses)
    question = await spoken("How many legs does a spider have?")
    call_app = RTCPeerConnection(rtc_configuration(config.ice))
    caller = Caller(RTCPeerConnection(rtc_configuration(config.ice)))
    events: list[dict] = []
    try:
        agent = await attach_agent(call_app, models, config, on_event=collect(events))
        await call_app.setLocalDescription(await call_app.createOffer())
        await caller.pc.setRemoteDescription(call_app.localDescription)
        caller.pc.addTrack(caller.mic)
        await caller.pc.setLocalDescription(await caller.pc.createAnswer())
        await call_app.setRemoteDescription(caller.pc.localDescription)
        await asyncio.wait_for(caller.connected.wait(), 20)
        assert agent.inbound is not None  # the caller's track arrived with the answer

        await ask(caller, agent, events, question)
        assert of_type(events, "transcript") and of_type(events, "timeline")[0]["outcome"] == "answered"
        await agent.close()
        assert agent.outbound.readyState == "ended"
    finally:
        await caller.close()
        await call_app.close()


async def test_agent_for_track_without_a_peer_connection(config, models, spoken):
    """The lower-level form: a track in, the agent's outbound track out, read directly."""
    question = await spoken("What color is the sky on a clear day?")
    mic_queue = PcmQueue()
    events: list[dict] = []
    agent = agent_for_track(PlayoutTrack(mic_queue), models, config, on_event=collect(events))
    heard: list[tuple[float, float]] = []

    async def play_out() -> None:
        while True:
            frame = await agent.outbound.recv()
            heard.append((time.perf_counter(), rms(frame)))

    player = asyncio.create_task(play_out())
    try:
        mic_queue.push(question)
        await wait_until(lambda: of_type(events, "timeline"), 90, "the turn's timeline event")
        assert of_type(events, "timeline")[0]["outcome"] == "answered"
        assert "sky" in of_type(events, "transcript")[0]["text"].lower()
        await wait_until(lambda: sum(level > LOUD_RMS for _, level in heard) >= 25, 10, "the spoken answer")
    finally:
        player.cancel()
        await agent.close()
    assert agent.closed and agent.timelines[0].outcome == "answered"
