"""Security and admission: tokens, origins, session limits, rate limits, duplicate and late offers."""

import asyncio

import aiohttp
import pytest

from agent.config import load_config
from signaling.app import REGISTRY
from agent.testing import stub_models
from signaling.server import loopback_config, running_server
from signaling.guard import Admission, RateLimiter, Rejected
from signaling.client import HeadlessClient

from .helpers import offer_sdp

TOKEN = "s3cret-token"


def guarded_config(**overrides):
    base = {"server.auth_token": TOKEN, "server.allowed_origins": "https://good.example",
            "server.max_sessions": "1", "server.rate_limit_per_minute": "0", "server.ice_connect_timeout_s": "3"}
    base.update(overrides)
    return loopback_config(load_config(environ={}, overrides=base))


def test_rate_limiter_counts_a_sliding_minute_per_key():
    now = [0.0]
    limiter = RateLimiter(2, clock=lambda: now[0])
    limiter.check("a")
    limiter.check("a")
    limiter.check("b")
    with pytest.raises(Rejected) as exc:
        limiter.check("a")
    assert exc.value.status == 429 and exc.value.retry_after_s >= 1
    now[0] = 61.0
    limiter.check("a")  # the window has moved on


def test_admission_refuses_beyond_the_limit_and_while_closing():
    config = guarded_config().server
    admission = Admission(config)
    slot = admission.admit("1.2.3.4")
    assert admission.active == 1
    with pytest.raises(Rejected) as exc:
        admission.admit("5.6.7.8")
    assert exc.value.status == 503 and exc.value.retry_after_s
    slot.release()
    slot.release()  # idempotent
    assert admission.active == 0
    admission.closing = True
    with pytest.raises(Rejected, match="shutting down"):
        admission.admit("1.2.3.4")


def test_admission_caps_concurrent_calls_per_address():
    config = guarded_config(**{"server.max_sessions": "10", "server.max_sessions_per_address": "2"}).server
    admission = Admission(config)
    first, _second = admission.admit("1.2.3.4"), admission.admit("1.2.3.4")
    with pytest.raises(Rejected) as exc:
        admission.admit("1.2.3.4")
    assert exc.value.status == 429 and "max_sessions_per_address" in exc.value.message and exc.value.retry_after_s
    admission.admit("5.6.7.8")  # another address is not affected
    first.release()
    admission.admit("1.2.3.4")  # a freed place can be taken again
    assert admission.active == 3


async def test_token_origin_and_content_checks_over_http():
    config = guarded_config()
    async with running_server(config, stub_models()) as server:
        url = server.url
        sdp = await offer_sdp()
        body = {"sdp": sdp, "type": "offer"}
        async with aiohttp.ClientSession() as http:
            async with http.post(f"{url}/offer", json=body) as resp:
                assert resp.status == 401 and "bearer token" in (await resp.json())["error"]
                assert resp.headers["WWW-Authenticate"].startswith("Bearer")
            async with http.post(f"{url}/offer", json=body, headers={"Authorization": "Bearer wrong"}) as resp:
                assert resp.status == 401
            auth = {"Authorization": f"Bearer {TOKEN}"}
            async with http.post(f"{url}/offer", json=body, headers={**auth, "Origin": "https://evil.example"}) as resp:
                assert resp.status == 403 and "not allowed" in (await resp.json())["error"]
            async with http.post(f"{url}/offer", data=b"{}", headers={**auth, "Content-Type": "text/plain"}) as resp:
                assert resp.status == 415
            huge = {"sdp": "v=0\r\n" + "a=x\r\n" * 20000, "type": "offer"}
            async with http.post(f"{url}/offer", json=huge, headers=auth) as resp:
                assert resp.status == 413
            async with http.get(f"{url}/metrics") as resp:
                assert resp.status == 401  # operational data follows the token too
            async with http.get(f"{url}/healthz") as resp:
                assert resp.status == 200  # the health check stays open
            async with http.post(f"{url}/offer", json=body, headers={**auth, "Origin": "https://good.example"}) as resp:
                assert resp.status == 200
                assert resp.headers["Access-Control-Allow-Origin"] == "https://good.example"
            async with http.post(f"{url}/offer", json=body, headers=auth) as resp:
                # The limit (1 call) is reached: refused with Retry-After, the live call untouched.
                assert resp.status in (409, 503)


async def test_beyond_max_sessions_is_503_and_the_existing_call_goes_on():
    config = guarded_config(**{"server.auth_token": ""})
    async with running_server(config, stub_models()) as server:
        url = server.url
        app = server.app
        first = HeadlessClient(config.ice)
        await first.connect(url)
        await first.wait_event(lambda e: e.get("type") == "hello", 10)
        async with aiohttp.ClientSession() as http:
            async with http.post(f"{url}/offer", json={"sdp": await offer_sdp(), "type": "offer"}) as resp:
                assert resp.status == 503
                assert int(resp.headers["Retry-After"]) > 0
                assert "limit of 1" in (await resp.json())["error"]
        frames_before = len(first.frames)
        await asyncio.sleep(0.5)
        assert len(first.frames) > frames_before  # the live call still receives audio
        assert len(app[REGISTRY]) == 1
        await first.close()


async def test_duplicate_rate_limited_and_late_offers():
    config = guarded_config(**{"server.auth_token": "", "server.max_sessions": "8",
                               "server.rate_limit_per_minute": "2"})
    async with running_server(config, stub_models()) as server:
        url = server.url
        app = server.app
        sdp = await offer_sdp()
        async with aiohttp.ClientSession() as http:
            async with http.post(f"{url}/offer", json={"sdp": sdp, "type": "offer"}) as resp:
                assert resp.status == 200
            async with http.post(f"{url}/offer", json={"sdp": sdp, "type": "offer"}) as resp:
                assert resp.status == 409 and "already answered" in (await resp.json())["error"]
            async with http.post(f"{url}/offer", json={"sdp": await offer_sdp(), "type": "offer"}) as resp:
                assert resp.status == 200
            async with http.post(f"{url}/offer", json={"sdp": await offer_sdp(), "type": "offer"}) as resp:
                assert resp.status == 429 and int(resp.headers["Retry-After"]) > 0
            await app[REGISTRY].close_all()
            async with http.post(f"{url}/offer", json={"sdp": await offer_sdp(), "type": "offer"}) as resp:
                assert resp.status == 503 and "shutting down" in (await resp.json())["error"]


def test_capacity_comes_from_config_or_the_models_within_the_hard_cap():
    server = guarded_config(**{"server.max_sessions": "16"}).server
    assert Admission(server, models_capacity=4).capacity == 4  # the brain's own figure
    assert Admission(server).capacity == 16  # no figure of its own: the hard cap
    configured = guarded_config(**{"server.max_sessions": "16", "server.capacity_calls": "6"}).server
    assert Admission(configured, models_capacity=4).capacity == 6  # measured here: it wins
    capped = guarded_config(**{"server.max_sessions": "2", "server.capacity_calls": "6"}).server
    admission = Admission(capped, models_capacity=4)
    assert admission.capacity == 2
    slot = admission.admit("1.2.3.4")
    assert admission.load() == 0.5
    slot.release()
    assert admission.load() == 0.0


async def test_a_call_beyond_capacity_gets_503_with_retry_after_and_health_reports_the_load():
    class OneCallBrain(type(stub_models().brain)):
        def capacity(self) -> int:
            return 1

    models = stub_models()
    models.brain = OneCallBrain()
    config = guarded_config(**{"server.auth_token": "", "server.max_sessions": "8",
                               "server.capacity_retry_after_s": "7"})
    async with running_server(config, models) as server:
        async with aiohttp.ClientSession() as http:
            async with http.get(f"{server.url}/healthz") as resp:
                assert resp.status == 200 and (await resp.json())["load"] == 0.0
            first = HeadlessClient(config.ice)
            await first.connect(server.url)
            await first.wait_event(lambda e: e.get("type") == "hello", 10)
            async with http.get(f"{server.url}/healthz") as resp:
                health = await resp.json()
                assert health["load"] == 1.0 and health["capacity"] == 1 and health["sessions"] == 1
            async with http.post(f"{server.url}/offer", json={"sdp": await offer_sdp(), "type": "offer"}) as resp:
                assert resp.status == 503 and resp.headers["Retry-After"] == "7"
                assert "at capacity" in (await resp.json())["error"]
            async with http.get(f"{server.url}/metrics") as resp:
                assert "voice_agent_load 1.0" in await resp.text()
            await first.close()
