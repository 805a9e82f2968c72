"""The brains: speech in, the answer out as streamed text (see `base.Brain`).

Each brain lives in one module here that exposes `KIND` (a `base.BrainKind`: its model files,
whether it can run on this machine, how to load it). Adding a brain is that module plus one line
in `BRAINS`. This file imports no brain module until one is asked for (nor the config), so the config
schema can read the names without loading any model code.
"""

from __future__ import annotations

from agent.runtime.choice import choose_kind, kind_of

AUTO = "auto"
# config name -> module. `brain.kind = auto` takes the first one that can run here, in this order
# (openai never: it says it needs a configured engine).
BRAINS = {
    "voxtral": "agent.brains.voxtral",
    "cascade": "agent.brains.cascade",
    "openai": "agent.brains.openai_compat",
}
CHOICES = (AUTO, *BRAINS)


def brain_kind(name: str):
    """The `BrainKind` of a configured name (not auto)."""
    return kind_of(BRAINS, name)


def choose_brain(config) -> tuple[str, str]:
    """Resolve `brain.kind` (auto or a name) into (name, the reason, for the log)."""
    return choose_kind(config.brain.kind, "brain.kind", BRAINS, brain_kind, config)
