"""Security and admission: tokens, origins, session limits, rate limits, duplicate and late offers."""

import asyncio

import aiohttp
import aiohttp.web
import pytest

from agent.config import load_config
from signaling.app import REGISTRY
from agent.testing import stub_models
from signaling.server import loopback_config, running_server
from signaling.agent_check import agent_check_line
from signaling.guard import Admission, RateLimiter, Rejected, forwarded_for_middleware
from signaling.client import HeadlessClient

from .helpers import free_port, offer_sdp

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


def test_the_agent_check_line_gives_the_free_share_drains_at_capacity_and_is_down_when_stuck():
    admission = Admission(guarded_config(**{"server.max_sessions": "16", "server.capacity_calls": "4"}).server)
    assert agent_check_line(admission, stuck=[]) == "up ready 100%\n"
    slots = [admission.admit(f"10.0.0.{i}") for i in range(3)]
    assert agent_check_line(admission, stuck=[]) == "up ready 25%\n"
    slots.append(admission.admit("10.0.0.9"))
    assert agent_check_line(admission, stuck=[]) == "up drain\n"  # at capacity: no new calls
    slots.pop().release()
    assert agent_check_line(admission, stuck=["llm"]) == "down\n"
    admission.closing = True
    assert agent_check_line(admission, stuck=[]) == "down\n"


async def test_the_agent_check_port_answers_the_current_load_to_each_connection():
    config = guarded_config(**{"server.auth_token": "", "server.max_sessions": "8", "server.capacity_calls": "2",
                               "server.agent_check_port": str(free_port())})

    async def read_check() -> str:
        reader, writer = await asyncio.open_connection("127.0.0.1", config.server.agent_check_port)
        line = (await reader.read()).decode()
        writer.close()
        return line

    async with running_server(config, stub_models()) as server:
        assert await read_check() == "up ready 100%\n"
        client = HeadlessClient(config.ice)
        await client.connect(server.url)
        await client.wait_event(lambda e: e.get("type") == "hello", 10)
        assert await read_check() == "up ready 50%\n"
        await client.close()
    with pytest.raises(OSError):  # closed with the server
        await read_check()


async def test_x_forwarded_for_names_the_caller_only_behind_a_trusted_proxy():
    seen: list[str] = []

    async def remote(request):
        seen.append(request.remote)
        return aiohttp.web.Response(text="ok")

    async def addresses(trusted: str, headers: list[dict]) -> list[tuple[int, str | None]]:
        app = aiohttp.web.Application(middlewares=[forwarded_for_middleware(
            guarded_config(**{"server.trusted_proxies": trusted}).server)])
        app.router.add_get("/", remote)
        runner = aiohttp.web.AppRunner(app)
        await runner.setup()
        site = aiohttp.web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = runner.addresses[0][1]
        out = []
        try:
            async with aiohttp.ClientSession() as http:
                for header in headers:
                    seen.clear()
                    async with http.get(f"http://127.0.0.1:{port}/", headers=header) as resp:
                        out.append((resp.status, seen[0] if seen else None))
        finally:
            await runner.cleanup()
        return out

    forwarded = [{"X-Forwarded-For": "203.0.113.7"}, {"X-Forwarded-For": "198.51.100.1, 203.0.113.8"}, {},
                 {"X-Forwarded-For": "not-an-address"}]
    # The test client is 127.0.0.1: trusted, the last forwarded address is the caller.
    assert await addresses("127.0.0.0/8", forwarded) == [
        (200, "203.0.113.7"), (200, "203.0.113.8"), (200, "127.0.0.1"), (400, None)]
    # Not trusted (or none configured): the header is ignored, whatever it says.
    assert await addresses("10.0.0.1", forwarded) == [(200, "127.0.0.1")] * 4
    assert await addresses("", forwarded) == [(200, "127.0.0.1")] * 4
