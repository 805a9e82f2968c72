"""Load the brain and voice chosen in config, from verified model files, once per process."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from .brain import Brain
from .config import Config
from .model_files import CASCADE_FILES, KOKORO_FILES, KOKORO_ONNX, KOKORO_VOICES, LLM_GGUF, WHISPER_FILES, ensure_files, resolve_cache_dir
from .voice import Voice

log = logging.getLogger(__name__)


@dataclass
class AgentModels:
    brain: Brain
    voice: Voice
    load_s: float

    async def warm_up(self) -> None:
        await self.brain.warm_up()
        await self.voice.warm_up()

    def close(self) -> None:
        self.brain.close()
        self.voice.close()


def required_files(config: Config):
    files = []
    if config.brain.kind == "cascade":
        files += CASCADE_FILES
    if config.voice.kind == "kokoro-onnx":
        files += KOKORO_FILES
    return tuple(files)


def load_models(config: Config, progress: bool = True) -> AgentModels:
    """Assemble/verify the model files, then load brain and voice. Raises ModelFileError."""
    started = time.perf_counter()
    cache_dir = resolve_cache_dir(config.models.cache_dir)
    paths = ensure_files(required_files(config), cache_dir, progress)

    from .cascade import CascadeBrain
    from .kokoro_onnx_voice import KokoroOnnxVoice

    brain = CascadeBrain.load(
        whisper_dir=paths[WHISPER_FILES[0].relpath].parent,
        gguf=paths[LLM_GGUF.relpath],
        brain=config.brain, asr=config.asr, llm=config.llm,
    )
    voice = KokoroOnnxVoice(paths[KOKORO_ONNX.relpath], paths[KOKORO_VOICES.relpath], config.voice)
    load_s = time.perf_counter() - started
    log.info("models ready in %.2fs (brain=%s, voice=%s)", load_s, brain.name, voice.name)
    return AgentModels(brain, voice, load_s)
