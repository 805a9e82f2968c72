"""Load the brain and voice chosen in config, from verified model files, once per process.

Which brain and voice exist, which files each needs and how each loads is declared by the brain
and voice modules themselves (`agent/brains/`, `agent/voices/`); this module only asks them.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass

import numpy as np
from threadpoolctl import threadpool_limits

from agent.brains import BRAINS, brain_kind, choose_brain
from agent.brains.base import Brain, check_tools
from agent.config import Config
from agent.pipeline.end_of_turn import MODEL as END_OF_TURN_MODEL, SmartTurn
from agent.runtime.model_files import ModelFile, ensure_files, resolve_cache_dir
from agent.runtime.scheduler import configure_shared_scheduler
from agent.tools.calls import ToolPrompt
from agent.tools.toolbox import ToolBox, toolbox_for
from agent.voices import VOICES, choose_voice, voice_kind
from agent.voices.base import Voice

log = logging.getLogger(__name__)


@dataclass
class AgentModels:
    brain: Brain
    voice: Voice
    load_s: float
    end_of_turn: SmartTurn | None = None  # turns.semantic
    toolbox: ToolBox | None = None  # the tools config turns on, made and checked against the brain once at loading

    @property
    def tools(self) -> ToolPrompt | None:
        """What the brain is told about the configured tools (warmed with the brain), None without tools."""
        return self.toolbox.prompt() if self.toolbox else None

    async def warm_up(self) -> None:
        await self.brain.warm_up(self.tools)
        await self.voice.warm_up()
        if self.end_of_turn is not None:
            await self.end_of_turn.verdict(np.zeros(16000, dtype=np.int16))

    def load_times(self) -> dict[str, float]:
        """Seconds to load each model (and `total`: files verified and everything loaded)."""
        times = dict(self.brain.load_times())
        voice_s = getattr(self.voice, "load_s", None)
        if isinstance(voice_s, (int, float)):
            times["voice"] = float(voice_s)
        if self.end_of_turn is not None:
            times["end_of_turn"] = self.end_of_turn.load_s
        times["total"] = float(self.load_s)
        return times

    def close(self) -> None:
        self.brain.close()
        self.voice.close()
        if self.end_of_turn is not None:
            self.end_of_turn.close()


def _unique(files) -> tuple[ModelFile, ...]:
    return tuple({f.relpath: f for f in files}.values())


def required_files(config: Config, brain_name: str, voice_name: str) -> tuple[ModelFile, ...]:
    """The model files the chosen brain and voice need (and the end-of-turn model's)."""
    extra = (END_OF_TURN_MODEL,) if config.turns.semantic else ()
    return _unique((*brain_kind(brain_name).model_files(config), *voice_kind(voice_name).model_files(config), *extra))


def all_model_files(config: Config) -> tuple[ModelFile, ...]:
    """Every model file any brain or voice can need (what `run.py models` assembles)."""
    files: list[ModelFile] = []
    for name in BRAINS:
        files += brain_kind(name).model_files(config)
    for name in VOICES:
        files += voice_kind(name).model_files(config)
    return _unique((*files, END_OF_TURN_MODEL))


def load_models(config: Config, progress: bool = True) -> AgentModels:
    """Make the configured tools, assemble/verify the model files, then load brain and voice.
    Raises ModelFileError, VoxtralUnavailable, ToolDefinitionError or ToolsUnsupported (tools on
    for a brain that cannot call them) with a message that says how to fix it."""
    started = time.perf_counter()
    toolbox = toolbox_for(config)  # a tools.custom entry that cannot be imported or described fails before any model loads
    # llama.cpp and CTranslate2 run on libgomp, whose idle threads spin before they sleep: with
    # several LLM contexts taking turns (`llm.batched = false`), each one's spinning threads steal
    # the cores from the one working. Two slots alternating tokens on 2 cores: 60-104 ms a token
    # PASSIVE, 125-2500 ms by default (`scripts/omp_wait_policy.py`). One batched context has no
    # other llama.cpp threads to yield to, and sleeping at each barrier slows it: a token on 2
    # threads 85 ms PASSIVE against 58 ms by default, a step of four answers 130 against 107 ms
    # (`OMP_WAIT_POLICY=... ./dev.sh bench --floor`, 2026-12-04). Read when each libgomp loads, so
    # set before loading.
    if not config.llm.batched and config.llm.slots > 1:
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    # numpy's BLAS (whisper's and Smart Turn's features, the voices' arrays) defaults to a thread
    # per core; beside another model step (the scheduler runs two one-core steps at once on 2
    # cores) that oversubscribes them: a 2 s transcription beside end-of-turn verdicts took
    # 110-212 ms with the default, 50-114 ms with one BLAS thread (`scripts/blas_threads.py`).
    threadpool_limits(limits=1, user_api="blas")
    scheduler = configure_shared_scheduler(config.scheduler.cores, config.scheduler.stuck_after_s)
    log.info("models share %d CPU core%s, earliest deadline first", scheduler.cores, "" if scheduler.cores == 1 else "s")
    brain_name, reason = choose_brain(config)
    log.info("brain: %s (%s)", brain_name, reason)
    voice_name, reason = choose_voice(config)
    log.info("voice: %s (%s)", voice_name, reason)
    paths = ensure_files(required_files(config, brain_name, voice_name), resolve_cache_dir(config.models.cache_dir),
                         progress)
    brain = brain_kind(brain_name).load(config, paths)
    try:
        check_tools(brain, toolbox)
    except BaseException:
        brain.close()
        raise
    voice = voice_kind(voice_name).load(config, paths)
    end_of_turn = None
    if config.turns.semantic:
        end_of_turn = SmartTurn(paths[END_OF_TURN_MODEL.relpath], threshold=config.turns.complete_threshold)
    load_s = time.perf_counter() - started
    log.info("models ready in %.2fs (brain=%s, voice=%s, end of turn=%s)", load_s, brain.name, voice.name,
             "smart-turn" if end_of_turn else "silence only")
    return AgentModels(brain, voice, load_s, end_of_turn, toolbox if toolbox else None)
