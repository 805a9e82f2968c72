"""The voices: a phrase of text in, streamed PCM out (see `base.Voice`).

Each voice lives in one module here that exposes `KIND` (a `base.VoiceKind`: its model files,
whether it can run on this machine, how to load it). Adding a voice is that module plus one line
in `VOICES`. This file imports no voice module until one is asked for, so the config schema can
read the names cheaply.
"""

from __future__ import annotations

from agent.runtime.choice import choose_kind, kind_of

AUTO = "auto"
# config name -> module. `voice.kind = auto` takes the first one that can run here, in this order:
# Kokoro-82M in PyTorch on a CUDA GPU, else hibari (Kokoro distilled, fast on a CPU); openai never
# (it says it needs a configured speech server).
VOICES = {
    "kokoro-torch": "agent.voices.kokoro_torch",
    "hibari": "agent.voices.hibari",
    "kokoro-onnx": "agent.voices.kokoro_onnx",
    "openai": "agent.voices.openai_speech",
}
CHOICES = (AUTO, *VOICES)


def voice_kind(name: str):
    """The `VoiceKind` of a configured name (not auto)."""
    return kind_of(VOICES, name)


def choose_voice(config) -> tuple[str, str]:
    """Resolve `voice.kind` (auto or a name) into (name, the reason, for the log)."""
    return choose_kind(config.voice.kind, "voice.kind", VOICES, voice_kind, config)
