"""Scale out with real parts: HAProxy (Debian's package) running deploy/haproxy.cfg in front of
two agent processes (`run.py serve`, brain.kind = openai) that share one llama-server, all on
127.0.0.1 in the loopback namespace. Signaling goes through the balancer, media straight to the
agent that answered. Checked: calls spread by load (each agent's agent check), an agent at
capacity is skipped, a caller finding every agent full gets 503 with Retry-After, an agent
killed takes no new calls while the calls on the other go on (a question answered after the
kill)."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
from pathlib import Path

import aiohttp
import pytest

from agent.brains.llama_chat import LLM_GGUF
from agent.runtime.model_files import ensure_files, resolve_cache_dir
from signaling.client import HeadlessClient, OfferRefused

from .conftest import ARTIFACTS
from .agent_process import AgentProcess
from .helpers import free_port, is_type, wait_until
from .llama_server import LlamaServer, built_llama_server

pytestmark = [pytest.mark.models, pytest.mark.loopback]

REPO = Path(__file__).resolve().parent.parent
HAPROXY_CFG = REPO / "deploy" / "haproxy.cfg"
CAPACITY = 2  # calls per agent (server.capacity_calls)
KEY_VARIABLE = "BALANCER_TEST_ENGINE_KEY"  # not VOICE_AGENT_*: the agent reads those as config keys


def haproxy_binary() -> str:
    found = shutil.which("haproxy") or ("/usr/sbin/haproxy" if os.access("/usr/sbin/haproxy", os.X_OK) else None)
    if found is None:
        pytest.fail("HAProxy is not installed: `./dev.sh test` installs Debian's haproxy package "
                    "(sudo apt-get install haproxy)", pytrace=False)
    return found


def agent_on(engine: LlamaServer, name: str, env: dict[str, str]) -> AgentProcess:
    """`run.py serve` as a child process: the openai brain on the shared engine, an agent check."""
    overrides = {"brain.kind": "openai", "openai.base_url": engine.url, "openai.api_key_env": KEY_VARIABLE,
                 "openai.transcription": "local", "server.capacity_calls": str(CAPACITY),
                 "server.trusted_proxies": "127.0.0.1",
                 "server.rate_limit_per_minute": "0"}
    return AgentProcess(name, ARTIFACTS / f"balancer-{name}.log", env, overrides, agent_check=True)


@pytest.fixture(scope="module")
def engine(config):
    cache_dir = resolve_cache_dir(config.models.cache_dir)
    gguf = ensure_files((LLM_GGUF,), cache_dir, progress=False)[LLM_GGUF.relpath]
    ARTIFACTS.mkdir(exist_ok=True)
    server = LlamaServer(built_llama_server(cache_dir), gguf, api_key="sk-test-engine-" + os.urandom(8).hex(),
                         log_path=ARTIFACTS / "balancer-llama-server.log", parallel=2, context=4096)
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
async def deployment(engine):
    """(balancer URL, [agent1, agent2]): HAProxy with deploy/haproxy.cfg, two agents, the engine."""
    env = {**os.environ, KEY_VARIABLE: engine.api_key, "HF_HUB_OFFLINE": "1"}
    agents = [agent_on(engine, "agent1", env), agent_on(engine, "agent2", env)]
    balancer_port = free_port()
    haproxy_env = {**os.environ, "BALANCER_BIND": f"127.0.0.1:{balancer_port}",
                   "AGENT1": f"127.0.0.1:{agents[0].port}", "AGENT1_CHECK": str(agents[0].check_port),
                   "AGENT2": f"127.0.0.1:{agents[1].port}", "AGENT2_CHECK": str(agents[1].check_port)}
    haproxy_log = open(ARTIFACTS / "balancer-haproxy.log", "w")
    haproxy = None
    try:
        for agent in agents:
            await agent.wait_ready()
        haproxy = subprocess.Popen([haproxy_binary(), "-db", "-f", str(HAPROXY_CFG)], env=haproxy_env,
                                   stdout=haproxy_log, stderr=subprocess.STDOUT)
        url = f"http://127.0.0.1:{balancer_port}"

        async def balanced() -> bool:  # both agents up and checked through the balancer
            assert haproxy.poll() is None, (ARTIFACTS / "balancer-haproxy.log").read_text()
            try:
                async with aiohttp.ClientSession() as http:
                    async with http.get(f"{url}/healthz") as response:
                        return response.status == 200
            except aiohttp.ClientError:
                return False

        await wait_until(balanced, 20, "HAProxy to serve /healthz")
        await asyncio.sleep(2.5)  # health (rise 2, inter 1 s) and agent checks have run
        yield url, agents
    finally:
        if haproxy is not None:
            haproxy.terminate()
            haproxy.wait(10)
        haproxy_log.close()
        for agent in agents:
            agent.stop()


async def call(config, url: str) -> HeadlessClient:
    client = HeadlessClient(config.ice)
    try:
        await client.connect(url)
        await client.wait_event(is_type("hello"), 15)
    except BaseException:
        await client.close()
        raise
    return client


async def sessions(agents: list[Agent]) -> list[int]:
    return [await agent.sessions() if agent.process.poll() is None else 0 for agent in agents]


async def settle(agents: list[Agent], expected: list[int]) -> None:
    """Wait until the agents hold `expected` calls, then one agent-check interval more (so the
    balancer's weights say so too)."""
    async def holds() -> bool:
        return await sessions(agents) == expected
    await wait_until(holds, 15, f"the agents to hold {expected} calls")
    await asyncio.sleep(1.2)


async def located_call(config, url: str, agents: list[Agent]) -> tuple[HeadlessClient, Agent]:
    """A call through the balancer, and the agent that took it (the one whose call count rose)."""
    before = await sessions(agents)
    client = await call(config, url)
    after = await sessions(agents)
    risen = [agent for agent, was, now in zip(agents, before, after) if now == was + 1]
    assert len(risen) == 1 and sum(after) == sum(before) + 1, (before, after)
    return client, risen[0]


async def test_calls_spread_by_load_skip_a_full_agent_and_avoid_a_killed_one(config, deployment, spoken):
    url, agents = deployment
    on: dict[str, list[HeadlessClient]] = {agent.name: [] for agent in agents}
    clients: list[HeadlessClient] = []

    async def located() -> Agent:
        client, agent = await located_call(config, url, agents)
        clients.append(client)
        on[agent.name].append(client)
        await settle(agents, await sessions(agents))
        return agent

    try:
        # Spread by load: the second call goes to the agent the first did not.
        first = await located()
        second = await located()
        assert second is not first
        # The third goes to either; the fourth to the one with room left (least load): never past capacity.
        await located()
        await located()
        assert await sessions(agents) == [CAPACITY, CAPACITY]
        # Every agent full: the caller is told to come back later, nobody is overbooked.
        with pytest.raises(OfferRefused) as refused:
            clients.append(await call(config, url))
        assert refused.value.status == 503 and refused.value.retry_after_s, (refused.value.status,
                                                                             refused.value.retry_after_s)
        assert await sessions(agents) == [CAPACITY, CAPACITY]

        # One call leaves each agent; then agent1 is killed: new calls go to agent2 only, and a
        # call already on agent2 goes on (a question answered after the kill).
        for held in on.values():
            await held.pop().close()
        await settle(agents, [CAPACITY - 1, CAPACITY - 1])
        killed, survivor = agents
        killed.process.kill()
        killed.process.wait(10)
        clients.append(await call(config, url))  # refused by the dead agent's port: redispatched
        assert await survivor.sessions() == CAPACITY
        with pytest.raises(OfferRefused) as refused:
            clients.append(await call(config, url))
        assert refused.value.status == 503

        caller = on[survivor.name][0]
        since = len(caller.events)
        sent = caller.say(await spoken("What is the capital of France?"))
        await sent.done.wait()
        timeline = await caller.wait_event(lambda e: e.get("type") == "timeline", 90, since)
        assert timeline["outcome"] == "answered", timeline
        answer = " ".join(e["text"] for _, e in caller.events[since:] if e.get("type") == "agent_text")
        assert "paris" in answer.lower(), answer
        assert caller.first_audible_after(sent.ended_at) is not None
    finally:
        for client in clients:
            await client.close()
