"""Choosing a brain or a voice: the `Kind` each module declares, the registries' lookup, and
`auto` in config (the first of an ordered list of kinds that can run on this machine)."""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Generic, Iterable, Mapping, TypeVar

from agent.runtime.model_files import ModelFile

T = TypeVar("T")
Config = Any  # agent.config.Config: not imported, as the config schema imports the registries' names


@dataclass(frozen=True)
class Kind(Generic[T]):
    """How a brain or a voice is chosen and loaded (one per module, as `KIND`)."""

    name: str
    model_files: Callable[[Config], tuple[ModelFile, ...]]  # the verified files it needs
    load: Callable[[Config, Mapping[str, Path]], T]  # config, verified paths by relpath
    # For kind = auto: None if it can run here, else why not (the log says it).
    unavailable: Callable[[Config], str | None] = lambda _config: None
    why: str = ""  # why auto picks it when it is available


def kind_of(modules: Mapping[str, str], name: str) -> Kind:
    """The `KIND` of the module a registry maps `name` to (imported only now)."""
    return importlib.import_module(modules[name]).KIND


def cuda_available() -> bool:
    """A CUDA GPU torch can use (False without torch)."""
    try:
        import torch
    except ImportError:
        return False
    return torch.cuda.is_available()


def choose_kind(setting: str, key: str, names: Iterable[str], kind_of: Callable[[str], Any], config: Any) -> tuple[str, str]:
    """Resolve a `kind` setting (auto or a name) into (name, the reason, for the log)."""
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
