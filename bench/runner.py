"""Headless loopback latency benchmark: the real agent (in-process, or a running one by URL) and
headless WebRTC callers on 127.0.0.1, playing spoken questions one turn after another.

`--stub` swaps in an instant scripted brain and a tone voice to measure the pipeline and
transport alone; `--concurrency K` runs K calls at once. See `results` for what each turn
measures and `report` for the output.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from pathlib import Path

from agent.config import Config
from agent.models import AgentModels, load_models
from agent.testing import stub_models
from signaling.client import HeadlessClient
from signaling.server import loopback_config, running_server

from .questions import ROOM_NOISE_DBFS, Question, questions_for
from .report import print_run, write_run_files
from .results import BenchRun, play_turn


def bench_config(config: Config) -> Config:
    """`loopback_config` for a benchmark: every caller comes from 127.0.0.1, so the per-address
    cap (meant for strangers on a network) would refuse the bench's own callers."""
    loopback = loopback_config(config)
    return loopback.replace(**{"server.max_sessions_per_address": loopback.server.max_sessions})


async def _call(url: str, config: Config, call: int, questions: list[Question], turns: int,
                progress, run: "BenchRun") -> None:
    client = HeadlessClient(config.ice, run.jitter_prefetch,
                            room_noise_dbfs=ROOM_NOISE_DBFS if run.mode == "cascade" else None)
    try:
        await client.connect(url)
        hello = await client.wait_event(lambda e: e.get("type") == "hello", 10)
        run.brain, run.voice = hello.get("brain", run.brain), hello.get("voice", run.voice)
        await asyncio.sleep(0.5)
        for i in range(turns):
            question = questions[(i + call) % len(questions)]
            run.results.append(await play_turn(client, question, turn=i + 1, call=call))
            progress.update(1)
            await asyncio.sleep(0.4)
    finally:
        await client.close()


async def run_calls(url: str, config: Config, questions: list[Question], turns: int, concurrency: int, run: BenchRun) -> BenchRun:
    from tqdm import tqdm

    started_wall, started_cpu = time.perf_counter(), time.process_time()
    with tqdm(total=turns * concurrency, desc=f"{run.mode} x{concurrency}", unit="turn",
              disable=not sys.stderr.isatty()) as progress:
        await asyncio.gather(*(_call(url, config, c + 1, questions, turns, progress, run)
                               for c in range(concurrency)))
    run.wall_s = round(time.perf_counter() - started_wall, 2)
    run.cpu_s = round(time.process_time() - started_cpu, 2)
    run.results.sort(key=lambda r: (r.call, r.turn))
    return run


async def bench_in_process(config: Config, models: AgentModels, questions: list[Question], turns: int, concurrency: int,
                           mode: str, client_prefetch: int = 1) -> BenchRun:
    config = bench_config(config)
    run = BenchRun(mode, models.brain.name, models.voice.name, turns, concurrency, client_prefetch,
                   started=time.strftime("%Y-%m-%d %H:%M:%S"))
    async with running_server(config, models) as server:
        return await run_calls(server.url, config, questions, turns, concurrency, run)


async def load_real_models(config: Config) -> AgentModels:
    models = await asyncio.to_thread(load_models, config, sys.stderr.isatty())
    await models.warm_up()
    return models


async def run_bench(config: Config, turns: int, wavs: list[str], stub: bool = False, concurrency: int = 1,
                    url: str | None = None, out_dir: str | None = None, client_prefetch: int = 1) -> int:
    """One benchmark run as `run.py bench` asks for it; prints and writes its results."""
    if url:
        # A running agent: questions come from WAVs or the local voices.
        questions = await questions_for(config, wavs)
        loop_config = loopback_config(config)
        run = BenchRun("url", "?", "?", turns, concurrency, client_prefetch,
                       started=time.strftime("%Y-%m-%d %H:%M:%S"))
        run = await run_calls(url.rstrip("/"), loop_config, questions, turns, concurrency, run)
    else:
        models = stub_models() if stub else await load_real_models(config)
        try:
            questions = await questions_for(None if stub else config, wavs)
            run = await bench_in_process(config, models, questions, turns, concurrency, "stub" if stub else "cascade",
                                         client_prefetch)
        finally:
            models.close()
    print_run(run)
    target = Path(out_dir or os.path.join("artifacts", "bench"))
    for path in write_run_files(run, target):
        print(f"wrote {path}")
    return 0
