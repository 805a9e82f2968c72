"""Load the brain and voice chosen in config, from verified model files, once per process."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from .brain import Brain
from .config import Config
from .model_files import CASCADE_FILES, KOKORO_ONNX, KOKORO_VOICES, LLM_GGUF, WHISPER_FILES, ensure_files, resolve_cache_dir
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


def required_files(config: Config, brain_kind: str):
    files = []
    if brain_kind == "cascade":
        files += CASCADE_FILES
    files.append(KOKORO_VOICES)  # the offline voice pack, for either voice
    if config.voice.kind == "kokoro-onnx":
        files.append(KOKORO_ONNX)
    return tuple(files)


def load_brain(config: Config, kind: str, paths) -> Brain:
    if kind == "voxtral":
        from .voxtral import VoxtralBrain

        return VoxtralBrain.load(config.voxtral, config.brain)
    from .cascade import CascadeBrain

    return CascadeBrain.load(
        whisper_dir=paths[WHISPER_FILES[0].relpath].parent,
        gguf=paths[LLM_GGUF.relpath],
        brain=config.brain, asr=config.asr, llm=config.llm,
    )


def load_voice(config: Config, paths) -> Voice:
    if config.voice.kind == "kokoro-torch":
        from .kokoro_torch_voice import KokoroTorchVoice

        return KokoroTorchVoice(config.voice, paths[KOKORO_VOICES.relpath])
    from .kokoro_onnx_voice import KokoroOnnxVoice

    return KokoroOnnxVoice(paths[KOKORO_ONNX.relpath], paths[KOKORO_VOICES.relpath], config.voice)


def load_models(config: Config, progress: bool = True) -> AgentModels:
    """Assemble/verify the model files, then load brain and voice. Raises ModelFileError or
    VoxtralUnavailable with a message that says how to fix it."""
    from .voxtral import choose_brain

    started = time.perf_counter()
    kind, reason = choose_brain(config.brain.kind, config.voxtral.model)
    log.info("brain: %s (%s)", kind, reason)
    paths = ensure_files(required_files(config, kind), resolve_cache_dir(config.models.cache_dir), progress)
    brain = load_brain(config, kind, paths)
    voice = load_voice(config, paths)
    load_s = time.perf_counter() - started
    log.info("models ready in %.2fs (brain=%s, voice=%s)", load_s, brain.name, voice.name)
    return AgentModels(brain, voice, load_s)
