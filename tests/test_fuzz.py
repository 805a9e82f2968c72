"""Property-based fuzzing of every HTTP endpoint: at least 1000 generated requests each, and
never a crash (5xx other than the deliberate 503 of admission control) nor a hung request."""

import asyncio
import threading
import urllib.error
import urllib.request

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent.config import load_config
from agent.testing import stub_models
from signaling.server import loopback_config, running_server

from .helpers import offer_sdp

EXAMPLES = 1000
FUZZ = settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
TIMEOUT_S = 10.0


class BackgroundAgent:
    """The real app (stub models) on 127.0.0.1 in its own thread and event loop."""

    def __init__(self, config):
        self.config = config
        self.url = None
        self._ready = threading.Event()
        self._stop = None
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        async def main():
            self._stop = asyncio.Event()
            async with running_server(self.config, stub_models()) as server:
                url = server.url
                self.url = url
                self._ready.set()
                await self._stop.wait()

        self._loop = asyncio.new_event_loop()
        self._loop.run_until_complete(main())

    def __enter__(self):
        self._thread.start()
        assert self._ready.wait(30)
        return self

    def __exit__(self, *exc):
        self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(30)


@pytest.fixture(scope="module")
def agent():
    config = loopback_config(load_config(environ={}, overrides={
        "server.max_sessions": "4", "server.rate_limit_per_minute": "0", "server.ice_connect_timeout_s": "2"}))
    with BackgroundAgent(config) as running:
        yield running


@pytest.fixture(scope="module")
def base_sdp():
    return asyncio.run(offer_sdp(channel=True))


def request(agent, method, path, body=None, content_type=None, headers=None):
    req = urllib.request.Request(agent.url + path, data=body, method=method, headers=dict(headers or {}))
    if content_type is not None:
        req.add_header("Content-Type", content_type)
    try:
        with urllib.request.urlopen(req, timeout=TIMEOUT_S) as resp:
            return resp.status
    except urllib.error.HTTPError as err:
        return err.code


def assert_no_crash(status):
    assert status < 500 or status == 503, f"server error {status}"


SDP_LINE = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=60)
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=30),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12)
CONTENT_TYPES = st.sampled_from(["application/json", "application/sdp", "text/plain", "", "application/json; charset=utf-8",
                                 "multipart/form-data"]) | st.text(
    alphabet=st.characters(min_codepoint=32, max_codepoint=255), max_size=20)  # what an HTTP header can carry


@st.composite
def mutated_sdp(draw, base):
    lines = base.split("\r\n")
    for _ in range(draw(st.integers(0, 6))):
        op = draw(st.sampled_from(["drop", "dup", "replace", "insert", "truncate", "swap"]))
        i = draw(st.integers(0, max(0, len(lines) - 1)))
        if op == "drop" and lines:
            lines.pop(i)
        elif op == "dup" and lines:
            lines.insert(i, lines[i])
        elif op == "replace" and lines:
            lines[i] = draw(SDP_LINE)
        elif op == "insert":
            lines.insert(i, draw(SDP_LINE))
        elif op == "truncate" and lines:
            lines[i] = lines[i][: draw(st.integers(0, len(lines[i])))]
        elif op == "swap" and len(lines) > 1:
            j = draw(st.integers(0, len(lines) - 1))
            lines[i], lines[j] = lines[j], lines[i]
    return "\r\n".join(lines)


def offer_bodies(base):
    import json

    sdp = mutated_sdp(base) | st.text(max_size=200)
    as_json = st.builds(lambda s, t, extra: json.dumps({"sdp": s, "type": t, **extra}).encode(),
                        sdp, st.sampled_from(["offer", "answer", "", "OFFER"]) | st.text(max_size=10),
                        st.dictionaries(st.text(max_size=6), JSON_VALUES, max_size=2))
    odd_json = JSON_VALUES.map(lambda v: json.dumps(v).encode())
    return as_json | odd_json | st.binary(max_size=2000)


def test_fuzz_post_offer(agent, base_sdp):
    @FUZZ
    @given(body=offer_bodies(base_sdp), content_type=CONTENT_TYPES)
    def check(body, content_type):
        assert_no_crash(request(agent, "POST", "/offer", body, content_type))

    check()
    assert request(agent, "GET", "/healthz") == 200


def test_fuzz_post_whip(agent, base_sdp):
    @FUZZ
    @given(body=mutated_sdp(base_sdp).map(str.encode) | st.binary(max_size=2000), content_type=CONTENT_TYPES)
    def check(body, content_type):
        assert_no_crash(request(agent, "POST", "/whip", body, content_type))

    check()
    assert request(agent, "GET", "/healthz") == 200


SESSION_IDS = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-_.~%", min_size=1, max_size=40)


def test_fuzz_whip_resource(agent):
    @FUZZ
    @given(method=st.sampled_from(["DELETE", "PATCH", "GET", "PUT", "OPTIONS"]), session=SESSION_IDS,
           body=st.binary(max_size=300))
    def check(method, session, body):
        status = request(agent, method, f"/whip/{session}", body or None, "application/trickle-ice-sdpfrag")
        assert_no_crash(status)
        if method == "DELETE":
            assert status in (404, 405)  # no such session (or not a resource path)

    check()


def test_fuzz_read_endpoints(agent):
    @FUZZ
    @given(path=st.sampled_from(["/healthz", "/client-config", "/metrics", "/", "/static/app.js", "/nope"]),
           query=st.text(alphabet="abc=&%20xyz?/", max_size=30),
           header=st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), max_size=40))
    def check(path, query, header):
        status = request(agent, "GET", f"{path}?{query}", headers={"X-Fuzz": header, "Origin": header})
        assert_no_crash(status)

    check()
