"""Calls that misbehave, on loopback against the real server with the stub models: offers the agent
declines or refuses, peers that never connect or never speak, a codec switch mid-call, a flood of
RTP beside an honest call, extra data channels, and a release whose agent raises."""

import asyncio
import logging
import subprocess
import sys
import threading
from pathlib import Path

import aiohttp
import pytest
from aiortc.sdp import SessionDescription

from agent.config import load_config
from agent.testing import stub_models
from signaling.app import REGISTRY
from signaling.client import HeadlessClient
from signaling.server import loopback_config, running_server

from .helpers import PacedTrack, new_pc, wait_until
from .hostile_peers import PayloadTypeSwitch, call, speech

pytestmark = pytest.mark.loopback
REPO = Path(__file__).resolve().parent.parent


def hostile_config(**overrides):
    base = {"server.rate_limit_per_minute": "0", "server.max_sessions": "8", "server.max_sessions_per_address": "8",
            "server.ice_connect_timeout_s": "3", "server.peer_idle_timeout_s": "1.5"}
    base.update(overrides)
    return loopback_config(load_config(environ={}, overrides=base))


@pytest.fixture(scope="module")
async def server():
    async with running_server(hostile_config(), stub_models()) as running:
        yield running


def server_peer(server, session_id):
    return server.app[REGISTRY].get(session_id)


async def offer_status(url, pc):
    await pc.setLocalDescription(await pc.createOffer())
    async with aiohttp.ClientSession() as http:
        async with http.post(f"{url}/offer", json={"sdp": pc.localDescription.sdp, "type": "offer"}) as resp:
            return resp.status, await resp.json()


@pytest.mark.parametrize("direction,needle", [
    ("sendonly", "the caller would never hear the agent"),
    ("recvonly", "the caller sends no audio"),
    ("inactive", "no audio would flow"),
])
async def test_audio_that_is_not_sendrecv_is_refused_with_the_reason(server, direction, needle):
    pc = new_pc()
    pc.addTransceiver("audio", direction=direction)
    status, body = await offer_status(server.url, pc)
    await pc.close()
    assert status == 400 and needle in body["error"], body
    assert len(server.app[REGISTRY]) == 0


async def test_two_audio_sections_are_refused(server):
    pc = new_pc()
    pc.addTransceiver("audio")
    pc.addTransceiver("audio")
    status, body = await offer_status(server.url, pc)
    await pc.close()
    assert status == 400 and "2 audio sections" in body["error"], body


async def test_video_is_declined_with_port_0_and_never_decoded(server):
    pc = new_pc()
    mic = PacedTrack()
    pc.addTransceiver(mic, direction="sendrecv")
    pc.addTransceiver("video", direction="sendrecv")
    with pytest.raises(TimeoutError):
        # aiortc as a caller cannot complete a call with a declined section (it waits for ICE on
        # it); a browser can. The server side is what this test is about.
        await call(server.url, pc, timeout_s=3)
    answer = SessionDescription.parse(pc.remoteDescription.sdp)
    ports = {media.kind: media.port for media in answer.media}
    assert ports["video"] == 0 and ports["audio"] != 0
    bundle = next(g for g in answer.group if g.semantic == "BUNDLE")
    assert [str(m) for m in bundle.items] == ["0"]
    peer = next(iter(server.app[REGISTRY].peers.values()))
    heard = []
    peer.agent.add_event_listener(lambda e: heard.append(e.type))
    assert peer.pc.connectionState == "connected"
    video = [t for t in peer.pc.getTransceivers() if t.kind == "video"]
    assert [t.currentDirection for t in video] == ["inactive"]
    mic.say(speech(1200))
    await wait_until(lambda: "speech_start" in heard, 10, "the agent to hear the caller over the audio section")
    assert not [t for t in threading.enumerate() if t.name == "video-decoder"]
    await pc.close()
    await wait_until(lambda: len(server.app[REGISTRY]) == 0, 10, "the peer to be released")


async def test_a_payload_type_switch_mid_call_keeps_the_agent_listening(server):
    pc = new_pc()
    mic = PacedTrack()
    transceiver = pc.addTransceiver(mic, direction="sendrecv")
    events = []
    channel = pc.createDataChannel("events")
    channel.on("message", lambda message: events.append(message))
    body = await call(server.url, pc)
    peer = server_peer(server, body["session"])
    heard = []
    peer.agent.add_event_listener(lambda e: heard.append(e.type))
    await asyncio.sleep(0.5)  # Opus (48 kHz stereo once decoded) flows first
    switch = PayloadTypeSwitch(transceiver.sender)
    switch.switch(speech(1500))  # then PCMU (8 kHz mono): the inbound resampler must follow
    await wait_until(lambda: "speech_start" in heard, 10, "the agent to hear speech sent as PCMU")
    await wait_until(lambda: "timeline" in heard, 20, "the agent to answer it")
    assert switch.rewritten > 20
    assert peer.id in server.app[REGISTRY].peers  # the call is still up
    await pc.close()


async def test_packets_without_payload_do_not_deafen_the_agent(server):
    pc = new_pc()
    mic = PacedTrack()
    transceiver = pc.addTransceiver(mic, direction="sendrecv")
    body = await call(server.url, pc)
    peer = server_peer(server, body["session"])
    heard = []
    peer.agent.add_event_listener(lambda e: heard.append(e.type))
    rewrite = PayloadTypeSwitch(transceiver.sender)
    rewrite.empty = True  # empty RTP payloads: aiortc's decoder would take one as "flush" and fail ever after
    await wait_until(lambda: rewrite.rewritten > 10, 5, "empty packets to be sent")
    rewrite.empty = False
    mic.say(speech(1500))
    await wait_until(lambda: "speech_start" in heard, 10, "the agent to hear speech after the empty packets")
    await pc.close()


async def test_a_peer_that_never_connects_is_released_and_frees_its_slot(server):
    registry = server.app[REGISTRY]
    pc = new_pc()
    pc.addTransceiver("audio")
    status, _body = await offer_status(server.url, pc)
    assert status == 200
    await pc.close()  # the answer is never applied
    assert registry.admission.active == 1
    await wait_until(lambda: len(registry) == 0, 10, "the half-open peer to be released")
    # the slot is freed once the agent has closed, a moment after the peer leaves the registry
    await wait_until(lambda: registry.admission.active == 0, 5, "the half-open peer's slot to be freed")


async def test_a_connected_peer_that_sends_no_audio_is_released(server):
    registry = server.app[REGISTRY]
    pc = new_pc()
    pc.addTransceiver("audio", direction="sendrecv")  # no track: nothing is ever sent
    body = await call(server.url, pc)
    assert server_peer(server, body["session"]) is not None
    await wait_until(lambda: server_peer(server, body["session"]) is None, 10, "the silent peer to be released")
    await wait_until(lambda: registry.admission.active == 0, 5, "the silent peer's slot to be freed")
    await pc.close()


async def test_a_peer_sending_a_packet_every_few_seconds_is_released(server):
    pc = new_pc()
    pc.addTransceiver(PacedTrack(interval_s=1.0), direction="sendrecv")  # 20 ms of audio a second
    body = await call(server.url, pc)
    await wait_until(lambda: server_peer(server, body["session"]) is None, 10, "the sparse peer to be released")
    await pc.close()


async def test_an_honest_call_is_not_released_by_the_watchdog(server):
    pc = new_pc()
    pc.addTransceiver(PacedTrack(), direction="sendrecv")
    body = await call(server.url, pc)
    await asyncio.sleep(4.0)  # over two idle windows and past the connect timeout
    assert server_peer(server, body["session"]) is not None
    await pc.close()


async def test_only_the_first_events_channel_gets_events_and_extra_channels_are_closed(server):
    pc = new_pc()
    mic = PacedTrack()
    pc.addTransceiver(mic, direction="sendrecv")
    first, second = pc.createDataChannel("events"), pc.createDataChannel("events")
    other = pc.createDataChannel("chat")
    got = {"first": [], "second": []}
    first.on("message", lambda m: got["first"].append(m))
    second.on("message", lambda m: got["second"].append(m))
    await call(server.url, pc)
    await wait_until(lambda: got["first"], 10, "the hello on the first events channel")
    await wait_until(lambda: second.readyState == "closed" and other.readyState == "closed", 10,
                "the extra channels to be closed")
    assert got["second"] == []
    await pc.close()


async def test_a_peer_past_the_data_channel_receive_window_is_released(server, caplog):
    caplog.set_level(logging.INFO, logger="signaling.peers")
    pc = new_pc()
    pc.addTransceiver(PacedTrack(), direction="sendrecv")
    pc.createDataChannel("events")
    body = await call(server.url, pc)
    peer = server_peer(server, body["session"])
    await wait_until(lambda: peer.pc.sctp is not None and peer.pc.sctp.state == "connected", 10, "SCTP to connect")
    # What aiortc's SCTP does when a peer sends fragments beyond the advertised window: it counts
    # the window below zero and buffers them anyway.
    peer.pc.sctp._advertised_rwnd = -1
    await wait_until(lambda: server_peer(server, body["session"]) is None, 5, "the peer to be released")
    assert "beyond the receive window" in caplog.text
    await pc.close()


async def test_too_many_data_channels_end_the_call():
    async with running_server(hostile_config(**{"server.max_data_channels": "2"}), stub_models()) as server:
        pc = new_pc()
        pc.addTransceiver(PacedTrack(), direction="sendrecv")
        for i in range(4):
            pc.createDataChannel(f"c{i}")
        body = await call(server.url, pc)
        await wait_until(lambda: server_peer(server, body["session"]) is None, 10, "the peer to be released")
        await pc.close()


async def test_the_longest_call_is_released():
    async with running_server(hostile_config(**{"server.max_call_s": "1.5"}), stub_models()) as server:
        pc = new_pc()
        pc.addTransceiver(PacedTrack(), direction="sendrecv")
        body = await call(server.url, pc)
        await wait_until(lambda: server_peer(server, body["session"]) is None, 10, "the long call to be released")
        await pc.close()


async def test_a_release_whose_agent_raises_still_closes_the_connection(server, caplog):
    registry = server.app[REGISTRY]
    pc = new_pc()
    pc.addTransceiver(PacedTrack(), direction="sendrecv")
    body = await call(server.url, pc)
    peer = server_peer(server, body["session"])

    async def broken_close():
        raise RuntimeError("the agent broke while closing")

    peer.agent.close = broken_close
    await registry.release(peer, "test")
    assert peer.pc.connectionState == "closed"
    assert registry.admission.active == 0 and registry.get(peer.id) is None
    assert "closing its agent failed" in caplog.text
    await pc.close()
    client = HeadlessClient(server.app[REGISTRY].config.ice)  # and the server goes on
    await client.connect(server.url)
    await client.wait_event(lambda e: e.get("type") == "hello", 10)
    await client.close()


async def test_a_peer_flooding_rtp_does_not_stall_another_call():
    """A caller sends valid Opus RTP as fast as it can from another process; an honest call's
    outbound frames stay on time (no multi-second stall) and the flood is dropped over budget."""
    async with running_server(hostile_config(**{"server.peer_idle_timeout_s": "5"}), stub_models()) as server:
        registry = server.app[REGISTRY]
        victim = HeadlessClient(registry.config.ice)
        await victim.connect(server.url)
        await victim.wait_event(lambda e: e.get("type") == "hello", 10)
        flooder = subprocess.Popen([sys.executable, "-m", "tests.hostile_peers", "flood", server.url, "4"],
                                   cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        try:
            await wait_until(lambda: len(registry) == 2, 20, "the flooder to connect")
            flood_peer = next(p for p in list(registry.peers.values()) if p.id != victim.session_id)
            stats = registry.get(victim.session_id).agent.outbound.stats
            stats.recent_lateness_s.clear()
            stats.max_lateness_s = 0.0
            frames_before = len(victim.frames)
            output, _ = await asyncio.to_thread(flooder.communicate, timeout=60)
        finally:
            if flooder.poll() is None:
                flooder.kill()
        assert "sent" in output, output
        sent = int(output.split("sent ")[1].split()[0])
        print(f"\nflood: {sent} packets in 4 s; victim's frame lateness max {stats.max_lateness_s * 1000:.0f} ms, "
              f"p99 {stats.lateness_percentile(99) * 1000:.0f} ms, received {len(victim.frames) - frames_before} "
              f"frames; {flood_peer.limits.dropped_media} of the flood's packets dropped over budget")
        assert sent > 4 * 50 * 3, "the flooder did not send faster than real time"
        assert flood_peer.limits.dropped_media > sent // 2  # most of the flood never reached the decoder
        assert stats.max_lateness_s < 1.0  # behaviour, not speed: no stall of a second or more
        assert len(victim.frames) - frames_before > 100  # the honest call kept receiving audio
        await victim.close()
