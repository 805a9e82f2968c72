"""The voices: a phrase of text in, streamed PCM out (see `base.Voice`).

Each voice lives in one module here that exposes `KIND` (a `base.VoiceKind`: its model files and
how to load it). Adding a voice is that module plus one line in `VOICES`. This file imports no
voice module until one is asked for, so the config schema can read the names cheaply.
"""

from __future__ import annotations

import importlib

# config name -> module
VOICES = {
    "kokoro-onnx": "agent.voices.kokoro_onnx",
    "kokoro-torch": "agent.voices.kokoro_torch",
}
CHOICES = tuple(VOICES)


def voice_kind(name: str):
    """The `VoiceKind` of a configured name."""
    return importlib.import_module(VOICES[name]).KIND
