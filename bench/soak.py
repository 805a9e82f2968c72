"""One long call with a question every few seconds: outbound clock drift, frame lateness and
memory over time (`run.py bench --soak MINUTES`)."""

from __future__ import annotations

import asyncio
import os
import sys
import time
from dataclasses import asdict, dataclass

from agent.config import Config
from agent.testing import stub_models
from signaling.app import REGISTRY
from signaling.client import HeadlessClient
from signaling.server import loopback_config, running_server

from .questions import questions_for
from .report import write_json
from .runner import load_real_models
# -- soak -------------------------------------------------------------------------------------
def rss_mb() -> float:
    """Resident memory of this process in MiB (Linux /proc)."""
    with open("/proc/self/statm") as fh:
        pages = int(fh.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


@dataclass
class SoakSample:
    elapsed_s: float
    rss_mb: float
    behind_ms: float  # how far the agent's outbound clock was behind schedule (0 = on time)
    lateness_p99_ms: float
    stalls: int  # times the outbound clock had to be re-anchored after falling behind
    turns: int


async def soak(config: Config, minutes: float, stub: bool = True, interval_s: float = 6.0,
               sample_s: float = 5.0, out_dir: str | None = None) -> dict:
    """One call for `minutes`, a question every `interval_s`; samples drift, lateness, memory."""
    minutes = min(minutes, 120.0)  # bounded: at most two hours
    models = stub_models() if stub else await load_real_models(config)
    questions = await questions_for(None if stub else config, [])
    config = loopback_config(config)
    samples: list[SoakSample] = []
    try:
        async with running_server(config, models) as server:
            client = HeadlessClient(config.ice)
            await client.connect(server.url)
            await client.wait_event(lambda e: e.get("type") == "hello", 10)
            agent = server.app[REGISTRY].peers[client.session_id].agent
            session = agent.session
            started = time.perf_counter()
            next_question = started + 1.0
            next_sample = started + sample_s
            asked = 0
            while (now := time.perf_counter()) - started < minutes * 60:
                if now >= next_question:
                    question = questions[asked % len(questions)]
                    client.say(question.speech)
                    asked += 1
                    next_question += interval_s
                if now >= next_sample:
                    track = agent.outbound
                    due = track.due_time() or now
                    samples.append(SoakSample(
                        round(now - started, 1), round(rss_mb(), 1), round(max(0.0, now - due) * 1000, 2),
                        round(track.stats.lateness_percentile(99) * 1000, 2), track.stats.stalls,
                        len(session.timelines)))
                    s = samples[-1]
                    print(f"soak {s.elapsed_s:7.1f}s rss {s.rss_mb:7.1f} MiB behind {s.behind_ms:5.2f} ms "
                          f"late p99 {s.lateness_p99_ms:5.2f} ms stalls {s.stalls} turns {s.turns}", file=sys.stderr)
                    next_sample += sample_s
                await asyncio.sleep(0.05)
            await client.close()
    finally:
        models.close()
    result = {
        "minutes": minutes, "brain": models.brain.name, "samples": [asdict(s) for s in samples],
        "max_behind_ms": max((s.behind_ms for s in samples), default=0.0),
        "stalls": samples[-1].stalls if samples else 0,
        "rss_growth_mb": round(samples[-1].rss_mb - samples[0].rss_mb, 1) if samples else 0.0,
        "turns": samples[-1].turns if samples else 0,
    }
    write_json("soak.json", result, out_dir)
    print(f"soak: {result['turns']} turns in {minutes:g} min; outbound clock max behind {result['max_behind_ms']} ms, "
          f"re-anchored {result['stalls']} times; RSS growth {result['rss_growth_mb']} MiB")
    return result
