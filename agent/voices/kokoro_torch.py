"""Kokoro-82M in PyTorch (`kokoro.KModel` + `KPipeline`), on CUDA when present.

Same phrase interface as the ONNX voice: `speak(text)` streams int16 PCM at 24 kHz, one chunk
per segment KPipeline makes, and stops at the next segment when closed. Weights come from a
local .pth or the hub; the config defaults to the Kokoro-82M config.json that the kokoro-onnx
wheel ships; a voice is a name from the offline voice pack, a .pt file, or a hub voice name.
"""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path
from typing import AsyncIterator, Iterator

import numpy as np

from agent.config import Config, VoiceConfig
from agent.pipeline.audio import float_to_int16
from agent.runtime.model_thread import ModelThread

from .base import Voice, VoiceKind
from .english_g2p import ensure_en_core_web_sm
from .kokoro_pack import DEFAULT_VOICE, VOICE_PACK, bundled_config_path

log = logging.getLogger(__name__)


class KokoroTorchVoice(Voice):
    name = "kokoro-torch"
    sample_rate = 24000

    def __init__(self, config: VoiceConfig, voices_npz: Path | None = None, model=None) -> None:
        import torch
        from kokoro import KModel, KPipeline

        started = time.perf_counter()
        ensure_en_core_web_sm()
        self.device = "cuda" if torch.cuda.is_available() else "cpu"
        if self.device == "cpu":
            torch.set_num_threads(config.threads)
        if model is None:
            model = KModel(repo_id=config.torch_repo, config=config.torch_config or str(bundled_config_path()),
                           model=config.torch_weights or None)
        self.model = model.to(self.device).eval()
        self.pipeline = KPipeline(lang_code="a", repo_id=config.torch_repo, model=self.model, device=self.device)
        self.voice = self._load_voice(config.voice or DEFAULT_VOICE, voices_npz)
        self.config = config
        self.thread = ModelThread("voice", cores=config.threads if self.device == "cpu" else 0)
        self.load_s = time.perf_counter() - started
        log.info("kokoro-torch voice loaded on %s in %.2fs", self.device, self.load_s)

    def _load_voice(self, voice: str, voices_npz: Path | None):
        import torch

        if voice.endswith(".pt"):
            return torch.load(voice, map_location="cpu", weights_only=True).float()
        if voices_npz is not None:
            with np.load(voices_npz) as pack:
                if voice in pack.files:
                    return torch.from_numpy(np.asarray(pack[voice], dtype=np.float32))
        return self.pipeline.load_voice(voice)  # a hub voice name (needs the hub once)

    def _segments_blocking(self, text: str, stop: threading.Event) -> Iterator[np.ndarray]:
        import torch

        with torch.inference_mode():
            for result in self.pipeline(text, voice=self.voice, speed=self.config.speed):
                if stop.is_set():
                    return
                if result.audio is not None:
                    yield float_to_int16(result.audio.detach().cpu().numpy().astype(np.float32))

    def speak(self, text: str) -> AsyncIterator[np.ndarray]:
        return self.thread.stream(lambda stop: self._segments_blocking(text, stop))

    async def warm_up(self) -> None:
        async for _ in self.speak("Hello."):
            pass

    def close(self) -> None:
        self.thread.shutdown()


def unavailable(config: Config) -> str | None:
    """For voice.kind = auto: why the PyTorch Kokoro cannot run well here (None when it can)."""
    from agent.runtime.choice import cuda_available

    if not cuda_available():
        return "no CUDA GPU for kokoro-torch"
    weights = config.voice.torch_weights
    if weights:
        return None if Path(weights).expanduser().is_file() else f"voice.torch_weights {weights} is not a file"
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        return "no Kokoro weights on this machine (set voice.torch_weights)"
    found = try_to_load_from_cache(config.voice.torch_repo, "kokoro-v1_0.pth")
    return None if isinstance(found, str) else f"the Kokoro weights ({config.voice.torch_repo}) are not on this machine"


KIND = VoiceKind(
    name="kokoro-torch",
    model_files=lambda _config: (VOICE_PACK,),  # weights: voice.torch_weights or the hub
    load=lambda config, paths: KokoroTorchVoice(config.voice, paths[VOICE_PACK.relpath]),
    unavailable=unavailable,
    why="Kokoro-82M in PyTorch on the GPU",
)
