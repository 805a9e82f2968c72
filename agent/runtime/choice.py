"""`auto` in config: take the first of an ordered list of kinds that can run on this machine."""

from __future__ import annotations

from typing import Any, Callable, Iterable


def cuda_available() -> bool:
    """A CUDA GPU torch can use (False without torch)."""
    try:
        import torch
    except ImportError:
        return False
    return torch.cuda.is_available()


def choose_kind(setting: str, key: str, names: Iterable[str], kind_of: Callable[[str], Any], config: Any) -> tuple[str, str]:
    """Resolve a `kind` setting (auto or a name) into (name, the reason, for the log). Each kind
    has `unavailable(config) -> str | None` and `why`."""
    if setting != "auto":
        return setting, f"{key} = {setting}"
    reasons = []
    for name in names:
        kind = kind_of(name)
        why_not = kind.unavailable(config)
        if why_not is None:
            return name, "; ".join([*reasons, kind.why or f"{name} can run here"])
        reasons.append(why_not)
    raise RuntimeError(f"{key} = auto: nothing can run here: " + "; ".join(reasons))
