"""Faults survived: a model that hangs or is slow mid-turn, and SIGTERM while answering."""

import asyncio
import os
import signal
import socket
import subprocess
import threading
import sys
import time
from pathlib import Path

import aiohttp
import pytest

from agent.config import load_config
from agent.events import to_json
from agent.session import AgentSession
from agent.testing import ScriptedBrain, ScriptedConversation, ToneVoice

from .agent_process import AgentProcess
from .helpers import free_port
from .synth import voiced

REPO = Path(__file__).resolve().parent.parent


class HangsOnce(ScriptedBrain):
    """Answers normally, except that the first turn's brain hangs after one word."""

    def __init__(self):
        super().__init__()
        self.turns = 0

    def new_conversation(self):
        brain = self

        class Conversation(ScriptedConversation):
            async def reply(self, audio, on_transcript):
                brain.turns += 1
                if brain.turns == 1:
                    on_transcript("hello")
                    yield "Well"
                    await asyncio.sleep(3600)
                async for piece in super().reply(audio, on_transcript):
                    yield piece

        return Conversation(self)


async def drain(session, turn):
    while not turn.task.done():
        session.output.pull(960 * 10)
        await asyncio.sleep(0.01)


async def test_a_hung_model_ends_the_turn_with_an_error_and_the_session_goes_on():
    config = load_config(environ={}, overrides={"brain.stall_timeout_s": "0.5"})
    events = []
    session = AgentSession(config, HangsOnce(), ToneVoice(), send_event=lambda e: events.append(to_json(e)))
    turn = session.start_answer(voiced(600), 0.0, 0.2)
    await asyncio.wait_for(drain(session, turn), 10)
    error = next(e for e in events if e["type"] == "error")
    assert error["kind"] == "timeout" and "brain produced nothing" in error["message"]
    assert session.state == "listening"
    turn = session.start_answer(voiced(600), 0.0, 0.2)
    await asyncio.wait_for(drain(session, turn), 10)
    assert [e["outcome"] for e in events if e["type"] == "timeline"] == ["error", "answered"]
    await session.close()


async def test_a_slow_but_steady_model_is_not_cut_off():
    config = load_config(environ={}, overrides={"brain.stall_timeout_s": "0.5"})
    events = []
    brain = ScriptedBrain(first_token_delay_s=0.3, token_interval_s=0.2)  # total well over the stall timeout
    session = AgentSession(config, brain, ToneVoice(), send_event=lambda e: events.append(to_json(e)))
    turn = session.start_answer(voiced(600), 0.0, 0.2)
    await asyncio.wait_for(drain(session, turn), 30)
    assert [e["outcome"] for e in events if e["type"] == "timeline"] == ["answered"]
    await session.close()


@pytest.mark.models
async def test_sigterm_mid_answer_closes_peers_and_exits_within_5_s(config, spoken, tmp_path):
    from signaling.client import HeadlessClient

    agent = AgentProcess("sigterm", tmp_path / "server.log", {**os.environ, "HF_HUB_OFFLINE": "1"})
    try:
        await agent.wait_ready()
        client = HeadlessClient(config.ice)
        await client.connect(agent.url)
        client.say(await spoken("Tell me a long story about a brave knight and a dragon."))
        await client.wait_event(lambda e: e.get("type") == "state" and e.get("state") == "speaking", 90)
        started = time.monotonic()
        agent.process.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(asyncio.to_thread(agent.process.wait), 10)
        except TimeoutError:
            pytest.fail(f"no exit 10 s after SIGTERM:\n{agent.output()}")
        took = time.monotonic() - started
        output = agent.output(last_chars=100_000)
        assert agent.process.returncode == 0, output
        assert took < 5.0, f"exit took {took:.1f} s"
        assert "released (server shutting down)" in output
        await client.close()
    finally:
        agent.stop()


async def wait_sessions(http, url, predicate, timeout_s):
    deadline = asyncio.get_running_loop().time() + timeout_s
    while True:
        async with http.get(f"{url}/healthz") as resp:
            sessions = (await resp.json())["sessions"]
        if predicate(sessions):
            return sessions
        assert asyncio.get_running_loop().time() < deadline, f"sessions stayed at {sessions}"
        await asyncio.sleep(0.1)


async def test_ice_that_never_connects_is_released_and_the_server_goes_on():
    from aiortc import RTCConfiguration, RTCPeerConnection

    from agent.testing import stub_models
    from signaling.server import loopback_config, running_server
    from signaling.client import HeadlessClient

    config = loopback_config(load_config(environ={}, overrides={"server.ice_connect_timeout_s": "1.5"}))
    async with running_server(config, stub_models()) as server:
        url = server.url
        pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        pc.addTransceiver("audio")
        await pc.setLocalDescription(await pc.createOffer())
        async with aiohttp.ClientSession() as http:
            async with http.post(f"{url}/offer", json={"sdp": pc.localDescription.sdp, "type": "offer"}) as resp:
                assert resp.status == 200
            await pc.close()  # the answer is never applied: ICE never connects
            await wait_sessions(http, url, lambda n: n == 1, 5)
            await wait_sessions(http, url, lambda n: n == 0, 10)
            client = HeadlessClient(config.ice)  # and a new call works normally
            await client.connect(url)
            await client.wait_event(lambda e: e.get("type") == "hello", 10)
            await client.close()


async def test_an_events_channel_closed_early_does_not_break_the_call():
    from agent.testing import stub_models, vowel_sound
    from signaling.server import loopback_config, running_server
    from signaling.client import HeadlessClient

    config = loopback_config(load_config(environ={}))
    async with running_server(config, stub_models()) as server:
        url = server.url
        client = HeadlessClient(config.ice)
        await client.connect(url)
        await client.wait_event(lambda e: e.get("type") == "hello", 10)
        client.channel.close()
        sent = client.say(vowel_sound(1200, 48000))
        await sent.done.wait()
        # the answer still arrives as audio, without any events
        assert await client.wait_audible_after(sent.ended_at, 5.0) is not None
        await client.close()


class BlocksInNativeCode(ScriptedBrain):
    """Its LLM step blocks its model thread (as a call stuck inside C code would: no asyncio,
    no cancellation) on the first turn; later turns find the model stuck."""

    def __init__(self, thread):
        super().__init__()
        self.thread = thread
        self.release = threading.Event()

    def new_conversation(self):
        brain = self

        class Conversation(ScriptedConversation):
            async def reply(self, audio, on_transcript):
                on_transcript("hello")
                await brain.thread.run(brain.release.wait, 60)
                yield "never"

        return Conversation(self)


async def test_a_model_blocked_in_a_thread_fails_turns_fast_and_health_says_so():
    from agent.runtime.model_thread import ModelThread
    from agent.runtime.scheduler import ComputeScheduler
    from agent.testing import stub_models
    from signaling.server import loopback_config, running_server

    scheduler = ComputeScheduler(cores=1, stuck_after_s=1.0)
    stuck_llm = ModelThread("stuck-llm", scheduler=scheduler)
    voice_model = ModelThread("other-voice", scheduler=scheduler)
    brain = BlocksInNativeCode(stuck_llm)
    config = load_config(environ={}, overrides={"brain.stall_timeout_s": "1.5"})
    events = []
    session = AgentSession(config, brain, ToneVoice(), send_event=lambda e: events.append(to_json(e)))
    try:
        turn = session.start_answer(voiced(600), 0.0, 0.2)
        await asyncio.wait_for(drain(session, turn), 10)  # the stall guard ends the first turn
        assert [e["kind"] for e in events if e["type"] == "error"] == ["timeout"]
        assert stuck_llm.stuck
        started = time.monotonic()
        turn = session.start_answer(voiced(600), 0.0, 0.2)
        await asyncio.wait_for(drain(session, turn), 10)
        assert time.monotonic() - started < 1.0  # fails at once: no second wait for the stall guard
        error = [e for e in events if e["type"] == "error"][-1]
        assert error["kind"] == "ModelStuck" and "stuck-llm" in error["message"]
        assert session.state == "listening"
        # Its CPU lease was written off: another model on the same cores still runs.
        assert await asyncio.wait_for(voice_model.run(lambda: "spoken"), 5) == "spoken"
        async with running_server(loopback_config(config), stub_models()) as server:
            async with aiohttp.ClientSession() as http:
                async with http.get(f"{server.url}/healthz") as resp:
                    health = await resp.json()
                    assert resp.status == 503 and "stuck-llm" in health["stuck_models"], health
    finally:
        brain.release.set()
        await session.close()
        stuck_llm.shutdown()
        voice_model.shutdown()


def start_stub_server(port, log_path, *overrides):
    log_file = open(log_path, "w")
    server = subprocess.Popen([sys.executable, "-m", "tests.stub_server", str(port), *overrides], cwd=REPO,
                              stdout=log_file, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        assert server.poll() is None, log_path.read_text()
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return server, log_file
        except OSError:
            time.sleep(0.1)
    server.kill()
    raise AssertionError(f"the stub server did not start:\n{log_path.read_text()}")


def stalled_requests(port):
    """A POST whose body stalls after 10 of 5000 bytes, and a connection stuck in its headers."""
    upload = socket.create_connection(("127.0.0.1", port))
    upload.sendall(b"POST /whip HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/sdp\r\n"
                   b"Content-Length: 5000\r\n\r\nv=0\r\no=- 1")
    headers = socket.create_connection(("127.0.0.1", port))
    headers.sendall(b"POST /offer HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Le")
    return upload, headers


async def test_sigterm_with_a_stalled_upload_and_half_sent_headers_exits_within_a_few_seconds(tmp_path):
    port = free_port()
    log_path = tmp_path / "server.log"
    server, log_file = start_stub_server(port, log_path)
    sockets = stalled_requests(port)
    try:
        await asyncio.sleep(0.5)  # the upload is in its handler, waiting for the rest of the body
        started = time.monotonic()
        server.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(asyncio.to_thread(server.wait), 15)
        except TimeoutError:
            pytest.fail(f"no exit 15 s after SIGTERM:\n{log_path.read_text()[-3000:]}")
        took = time.monotonic() - started
        output = log_path.read_text()
        print(f"\nexited {took:.1f} s after SIGTERM with a stalled upload and half-sent headers")
        assert server.returncode == 0, output
        assert took < 5.0, f"exit took {took:.1f} s:\n{output}"
        assert "shut down" in output and "Traceback" not in output, output
    finally:
        for sock in sockets:
            sock.close()
        if server.poll() is None:
            server.kill()
            server.wait()
        log_file.close()


async def test_a_second_signal_exits_at_once(tmp_path):
    port = free_port()
    log_path = tmp_path / "server.log"
    # A long grace for requests in flight: the stalled upload would hold the first shutdown 30 s.
    server, log_file = start_stub_server(port, log_path, "server.shutdown_timeout_s=30", "server.body_timeout_s=60")
    sockets = stalled_requests(port)
    try:
        await asyncio.sleep(0.5)
        server.send_signal(signal.SIGTERM)
        await asyncio.sleep(1.0)
        assert server.poll() is None, "the first signal should still be waiting for the stalled upload"
        started = time.monotonic()
        server.send_signal(signal.SIGTERM)
        await asyncio.wait_for(asyncio.to_thread(server.wait), 5)
        assert time.monotonic() - started < 2.0
        assert server.returncode != 0
    finally:
        for sock in sockets:
            sock.close()
        if server.poll() is None:
            server.kill()
            server.wait()
        log_file.close()


async def test_a_model_stream_that_fails_to_start_raises_in_the_consumer_instead_of_hanging():
    from agent.runtime.model_thread import ModelThread

    thread = ModelThread("test")

    def cannot_start(stop):
        raise TypeError("bad arguments for the model")

    try:
        with pytest.raises(TypeError, match="bad arguments"):
            async with asyncio.timeout(5):
                async for _ in thread.stream(cannot_start):
                    pass
    finally:
        thread.shutdown()
