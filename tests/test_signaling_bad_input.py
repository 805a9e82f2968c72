"""POST /offer with bad input: a 4xx with a message, and the server goes on serving."""

import json

import aiohttp
import pytest

from signaling.app import OfferError, parse_offer

from .conftest import VIDEO_ONLY_SDP
from .helpers import offer_sdp

pytestmark = pytest.mark.models  # the server runs with its real models

@pytest.mark.parametrize("body,needle", [
    (b"", "empty body"),
    (b"{not json", "not valid JSON"),
    (b"\xff\xfe", "not valid JSON"),
    (b"[1, 2]", "JSON object"),
    (b'{"type": "offer"}', "missing field 'sdp'"),
    (b'{"sdp": "v=0"}', "missing field 'type'"),
    (b'{"sdp": 5, "type": "offer"}', "'sdp' must be a string"),
    (b'{"sdp": "v=0", "type": "answer"}', "must be \\\"offer\\\""),
    (b'{"sdp": "hello world", "type": "offer"}', "not an SDP"),
    (b'{"sdp": "v=0\\r\\nm=audio nonsense", "type": "offer"}', "does not parse"),
])
async def test_malformed_offers_get_400_with_a_message(agent_url, body, needle):
    async with aiohttp.ClientSession() as http:
        async with http.post(f"{agent_url}/offer", data=body, headers={"Content-Type": "application/json"}) as resp:
            assert resp.status == 400
            message = (await resp.json())["error"]
            assert needle.replace('\\"', '"') in message, message
        async with http.get(f"{agent_url}/healthz") as resp:
            assert resp.status == 200


async def test_offer_without_audio_is_rejected(agent_url):
    async with aiohttp.ClientSession() as http:
        for sdp in (VIDEO_ONLY_SDP, await offer_sdp(audio=False, channel=True)):
            async with http.post(f"{agent_url}/offer", json={"sdp": sdp, "type": "offer"}) as resp:
                assert resp.status == 400
                assert "no audio" in (await resp.json())["error"]


async def test_oversized_body_is_refused(agent_url, config):
    async with aiohttp.ClientSession() as http:
        body = b"x" * (config.server.max_body_bytes + 10)
        async with http.post(f"{agent_url}/offer", data=body) as resp:
            assert resp.status == 413
        async with http.get(f"{agent_url}/healthz") as resp:
            assert (await resp.json())["status"] == "ok"


async def test_parse_offer_accepts_a_real_audio_offer():
    sdp = await offer_sdp()
    assert parse_offer(('{"sdp": %s, "type": "offer"}' % json.dumps(sdp)).encode()).type == "offer"
    with pytest.raises(OfferError, match="no DTLS fingerprint"):  # the same offer, unsecurable
        parse_offer(json.dumps({"sdp": sdp.replace("a=fingerprint:", "a=x-fingerprint:"), "type": "offer"}).encode())
    with pytest.raises(OfferError):
        parse_offer(b"{}")


async def test_index_and_client_config_are_served(agent_url):
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{agent_url}/") as resp:
            assert resp.status == 200
            assert "Connect" in await resp.text()
        async with http.get(f"{agent_url}/static/app.js") as resp:
            assert resp.status == 200
        async with http.get(f"{agent_url}/client-config") as resp:
            assert (await resp.json()) == {"iceServers": [], "authRequired": False}
