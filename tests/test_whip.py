"""WHIP (RFC 9725) against the real server: a client written from the RFC, not the project's own.

The client POSTs its SDP offer as application/sdp, expects 201 Created with the answer and a
Location header naming the session resource (resolved against the endpoint URL), applies the
answer, talks and listens over aiortc, then DELETEs the resource.
"""

import asyncio
import time

import aiohttp
import pytest
from aiortc import RTCSessionDescription
from yarl import URL

from signaling.ice import use_host_addresses

from .conftest import VIDEO_ONLY_SDP
from .helpers import LOUD_RMS, ListeningPeer, PacedTrack, new_pc

pytestmark = [pytest.mark.models, pytest.mark.loopback]


class WhipClient(ListeningPeer):
    """RFC 9725 section 4.2: one HTTP POST sets the session up, one DELETE tears it down. No
    trickle ICE: aiortc puts every candidate in the offer before it is sent."""

    def __init__(self, http: aiohttp.ClientSession, endpoint: str) -> None:
        super().__init__(new_pc())  # heard: (arrival time, rms) of every received frame
        self.http = http
        self.endpoint = URL(endpoint)
        self.resource: URL | None = None
        self.mic = PacedTrack()

    async def publish(self) -> aiohttp.ClientResponse:
        pc = self.pc
        pc.addTransceiver(self.mic, direction="sendrecv")  # sendrecv: we want to hear the agent

        # Tests run in a namespace that holds only `lo`, which aioice skips: offer 127.0.0.1.
        with use_host_addresses(["127.0.0.1"]):
            await pc.setLocalDescription(await pc.createOffer())
        async with self.http.post(self.endpoint, data=pc.localDescription.sdp,
                                  headers={"Content-Type": "application/sdp"}) as resp:
            answer = await resp.text()
            assert resp.status == 201, answer
            assert resp.content_type == "application/sdp"
            assert "Location" in resp.headers
            self.resource = self.endpoint.join(URL(resp.headers["Location"]))
        await pc.setRemoteDescription(RTCSessionDescription(sdp=answer, type="answer"))
        return resp

    async def terminate(self) -> int:
        assert self.resource is not None
        async with self.http.delete(self.resource) as resp:
            return resp.status


async def sessions(http: aiohttp.ClientSession, agent_url: str) -> int:
    async with http.get(f"{agent_url}/healthz") as resp:
        return (await resp.json())["sessions"]


async def settled_sessions(http: aiohttp.ClientSession, agent_url: str, timeout_s: float) -> int:
    """The session count once calls of earlier tests are released (or after timeout_s)."""
    deadline = time.perf_counter() + timeout_s
    while (count := await sessions(http, agent_url)) and time.perf_counter() < deadline:
        await asyncio.sleep(0.2)
    return count


async def test_whip_session_talks_back_and_delete_ends_it(config, agent_url, spoken):
    question = await spoken("What is the capital of France?")
    async with aiohttp.ClientSession() as http:
        before = await settled_sessions(http, agent_url, config.server.peer_idle_timeout_s + 5)
        client = WhipClient(http, f"{agent_url}/whip")
        try:
            await client.publish()
            assert client.resource is not None and client.resource.path.startswith("/whip/")
            assert await sessions(http, agent_url) == before + 1
            await asyncio.wait_for(client.connected.wait(), 20)

            # No trickle ICE: PATCH is refused with the methods the resource does allow.
            async with http.patch(client.resource, data="a=end-of-candidates\r\n",
                                  headers={"Content-Type": "application/trickle-ice-sdpfrag"}) as resp:
                assert resp.status == 405
                assert "DELETE" in resp.headers["Allow"]
                assert "trickle" in await resp.text()

            await asyncio.sleep(0.5)  # a moment of silence first, as a caller would have
            said_at = time.perf_counter()
            client.mic.say(question)
            await asyncio.wait_for(client.mic.drained.wait(), 30)
            asked_at = time.perf_counter()
            deadline = asked_at + 90
            while time.perf_counter() < deadline:
                loud = [at for at, rms in client.heard if at > asked_at and rms > LOUD_RMS]
                if len(loud) >= 25:  # half a second of the agent's voice
                    break
                await asyncio.sleep(0.2)
            else:
                pytest.fail(f"no spoken answer within 90 s ({len(client.heard)} frames received)")
            before_question = [rms for at, rms in client.heard if at < said_at]
            assert before_question and max(before_question) <= LOUD_RMS  # the agent was quiet until asked

            assert await client.terminate() == 200
            assert await sessions(http, agent_url) == before
            assert await client.terminate() == 404  # the resource is gone
        finally:
            await client.close()


async def test_whip_rejects_a_content_type_other_than_sdp(agent_url):
    async with aiohttp.ClientSession() as http:
        before = await sessions(http, agent_url)
        async with http.post(f"{agent_url}/whip", data=b'{"sdp": "v=0", "type": "offer"}',
                             headers={"Content-Type": "application/json"}) as resp:
            assert resp.status == 415
            assert resp.headers["Accept-Post"] == "application/sdp"
            assert "application/sdp" in await resp.text()
        async with http.post(f"{agent_url}/whip", data=b"v=0\r\n") as resp:  # no Content-Type at all
            assert resp.status == 415
        assert await sessions(http, agent_url) <= before  # no session was created


@pytest.mark.parametrize("body,needle", [
    (b"", "empty body"),
    (b"hello world", "not an SDP"),
    (b"\xff\xfe\x00", "not UTF-8"),
    (b"v=0\r\nm=audio nonsense", "does not parse"),
    (VIDEO_ONLY_SDP.encode(), "no audio"),
])
async def test_whip_rejects_an_unusable_offer_with_400_and_a_message(agent_url, body, needle):
    async with aiohttp.ClientSession() as http:
        before = await sessions(http, agent_url)
        async with http.post(f"{agent_url}/whip", data=body, headers={"Content-Type": "application/sdp"}) as resp:
            assert resp.status == 400
            assert resp.content_type == "text/plain"
            assert needle in await resp.text()
        assert await sessions(http, agent_url) <= before  # no session was created


async def test_whip_unknown_session_is_404(agent_url):
    async with aiohttp.ClientSession() as http:
        for method in ("DELETE", "PATCH"):
            async with http.request(method, f"{agent_url}/whip/no-such-session") as resp:
                assert resp.status == 404
                assert "no WHIP session 'no-such-session'" in await resp.text()


async def test_whip_endpoint_options_and_other_methods(agent_url):
    async with aiohttp.ClientSession() as http:
        async with http.options(f"{agent_url}/whip") as resp:
            assert resp.status == 204
            assert resp.headers["Accept-Post"] == "application/sdp"
        async with http.get(f"{agent_url}/whip") as resp:
            assert resp.status == 405
            assert "POST" in resp.headers["Allow"]
