"""Typed configuration: config/default.toml, then a user TOML file, env vars, then CLI overrides.

The dataclasses below are the schema (names and types); config/default.toml is the one place
that holds every default value, each with a comment.
Any key that the schema does not know, or a value of the wrong type or out of range, raises
ConfigError naming the key.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import json
import os
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from agent import brains, voices
from agent.tools.builtins import BUILTIN_NAMES, zone_named


def _default_toml() -> Path:
    """config/default.toml in a source checkout; the copy packaged as agent/defaults/ when installed."""
    here = Path(__file__).resolve().parent
    for candidate in (here.parent / "config" / "default.toml", here / "defaults" / "default.toml"):
        if candidate.is_file():
            return candidate
    raise FileNotFoundError("config/default.toml is missing from this installation")


DEFAULT_TOML = _default_toml()
ENV_PREFIX = "VOICE_AGENT_"


class ConfigError(ValueError):
    """A configuration key is unknown or its value is invalid."""


@dataclass(frozen=True)
class ServerConfig:
    host: str
    port: int
    max_body_bytes: int
    log_level: str
    peer_idle_timeout_s: float
    min_inbound_audio_ratio: float
    ice_connect_timeout_s: float
    max_call_s: float
    max_sessions: int
    capacity_calls: int
    capacity_retry_after_s: int
    max_sessions_per_address: int
    rate_limit_per_minute: int
    max_sdp_bytes: int
    auth_token: str
    allowed_origins: list[str]
    allowed_hosts: list[str]
    header_timeout_s: float
    body_timeout_s: float
    shutdown_timeout_s: float
    max_inbound_packets_per_s: int
    max_data_packets_per_s: int
    max_data_channels: int


@dataclass(frozen=True)
class IceConfig:
    host_addresses: list[str]
    servers: list[str]
    jitter_prefetch: int
    max_remote_candidates: int
    allow_mdns_candidates: bool
    allowed_candidate_networks: list[str]


@dataclass(frozen=True)
class TurnsConfig:
    vad_aggressiveness: int
    frame_ms: int
    start_ms: int
    hangover_ms: int
    semantic: bool
    incomplete_silence_ms: int
    complete_threshold: float
    fillers: list[str]
    finished_text_ends_turn: bool
    forgive_interruptions: bool
    interrupt_min_ms: int
    echo_margin_db: float
    speculative_ms: int
    min_speech_ms: int
    max_utterance_ms: int
    preroll_ms: int


@dataclass(frozen=True)
class BrainConfig:
    kind: str
    system_prompt: str
    history_turns: int
    stall_timeout_s: float


@dataclass(frozen=True)
class ToolsConfig:
    builtin: list[str]
    custom: list[str]
    instructions: str
    force_arithmetic: bool
    time_zone: str
    timeout_s: float
    max_rounds: int
    max_result_chars: int
    apology: str


@dataclass(frozen=True)
class VoxtralConfig:
    model: str
    max_new_tokens: int
    max_context_tokens: int
    temperature: float
    token_timeout_s: float
    transcribe: bool
    language: str
    compile: bool


@dataclass(frozen=True)
class OpenAIConfig:
    base_url: str
    model: str
    api_key_env: str
    mode: str
    transcription: str
    transcription_model: str
    max_tokens: int
    temperature: float
    connect_timeout_s: float
    read_timeout_s: float


@dataclass(frozen=True)
class AsrConfig:
    threads: int
    beam_size: int
    language: str
    window_s: float
    no_speech_threshold: float
    unclear_logprob: float
    unclear_max_words: int


@dataclass(frozen=True)
class LlmConfig:
    threads: int
    batch_threads: int
    context_tokens: int
    max_tokens: int
    temperature: float
    slots: int


@dataclass(frozen=True)
class PhrasesConfig:
    first_min_words: int
    first_max_words: int
    min_words: int
    max_words: int
    timeout_ms: int


@dataclass(frozen=True)
class VoiceConfig:
    kind: str
    voice: str
    speed: float
    threads: int
    torch_repo: str
    torch_config: str
    torch_weights: str


@dataclass(frozen=True)
class OpenAIVoiceConfig:
    base_url: str
    model: str
    voice: str
    api_key_env: str
    sample_rate: int
    connect_timeout_s: float
    read_timeout_s: float


@dataclass(frozen=True)
class PlayoutConfig:
    frame_ms: int
    max_lag_ms: int
    max_queue_s: float


@dataclass(frozen=True)
class SchedulerConfig:
    cores: int
    first_audio_budget_s: float
    refill_lead_s: float
    stuck_after_s: float


@dataclass(frozen=True)
class ModelsConfig:
    cache_dir: str


@dataclass(frozen=True)
class Config:
    server: ServerConfig
    ice: IceConfig
    turns: TurnsConfig
    brain: BrainConfig
    tools: ToolsConfig
    voxtral: VoxtralConfig
    openai: OpenAIConfig
    asr: AsrConfig
    llm: LlmConfig
    phrases: PhrasesConfig
    voice: VoiceConfig
    openai_voice: OpenAIVoiceConfig
    playout: PlayoutConfig
    scheduler: SchedulerConfig
    models: ModelsConfig

    def replace(self, **overrides: Any) -> "Config":
        """Return a copy with dotted-key overrides applied, e.g. replace(**{"turns.hangover_ms": 200})."""
        raw = to_dict(self)
        for key, value in overrides.items():
            _apply_override(raw, key, value, parse_strings=False)
        return _build(raw)


def _valid_networks(values: list[str]) -> bool:
    try:
        for value in values:
            ipaddress.ip_network(value, strict=False)
    except ValueError:
        return False
    return True


# Allowed values and ranges, checked after types. Each entry: key -> (predicate, description).
_CHOICES: dict[str, tuple[Any, str]] = {
    "server.port": (lambda v: 0 <= v <= 65535, "a port number 0..65535"),
    "server.max_body_bytes": (lambda v: v >= 1024, ">= 1024"),
    "server.log_level": (lambda v: v.upper() in {"DEBUG", "INFO", "WARNING", "ERROR"}, "DEBUG, INFO, WARNING or ERROR"),
    "server.peer_idle_timeout_s": (lambda v: v > 0, "> 0"),
    "server.max_sessions": (lambda v: v >= 1, ">= 1"),
    "server.capacity_calls": (lambda v: v >= 0, ">= 0 (0 = only max_sessions)"),
    "server.capacity_retry_after_s": (lambda v: v >= 1, ">= 1"),
    "server.rate_limit_per_minute": (lambda v: v >= 0, ">= 0 (0 = no limit)"),
    "server.max_sdp_bytes": (lambda v: v >= 1024, ">= 1024"),
    "server.ice_connect_timeout_s": (lambda v: v > 0, "> 0"),
    "server.min_inbound_audio_ratio": (lambda v: 0 <= v <= 1, "0..1"),
    "server.max_call_s": (lambda v: v > 0, "> 0"),
    "server.max_sessions_per_address": (lambda v: v >= 1, ">= 1"),
    "server.header_timeout_s": (lambda v: v > 0, "> 0"),
    "server.body_timeout_s": (lambda v: v > 0, "> 0"),
    "server.shutdown_timeout_s": (lambda v: 0 <= v <= 60, "0..60"),
    "server.max_inbound_packets_per_s": (lambda v: v >= 10, ">= 10"),
    "server.max_data_packets_per_s": (lambda v: v >= 10, ">= 10"),
    "server.max_data_channels": (lambda v: v >= 1, ">= 1"),
    "ice.max_remote_candidates": (lambda v: v >= 1, ">= 1"),
    "ice.allowed_candidate_networks": (_valid_networks, "a list of networks such as \"10.0.0.0/8\""),
    "ice.jitter_prefetch": (lambda v: 0 <= v <= 8, "0..8"),
    "turns.vad_aggressiveness": (lambda v: v in (0, 1, 2, 3), "0, 1, 2 or 3"),
    "turns.frame_ms": (lambda v: v in (10, 20, 30), "10, 20 or 30"),
    "turns.start_ms": (lambda v: v >= 10, ">= 10"),
    "turns.hangover_ms": (lambda v: v >= 20, ">= 20"),
    "turns.speculative_ms": (lambda v: v >= 0, ">= 0"),
    "turns.incomplete_silence_ms": (lambda v: v >= 100, ">= 100"),
    "turns.interrupt_min_ms": (lambda v: v >= 0, ">= 0"),
    "turns.complete_threshold": (lambda v: 0 < v < 1, "between 0 and 1"),
    "turns.min_speech_ms": (lambda v: v >= 0, ">= 0"),
    "turns.max_utterance_ms": (lambda v: v >= 1000, ">= 1000"),
    "turns.preroll_ms": (lambda v: v >= 0, ">= 0"),
    "brain.kind": (lambda v: v in brains.CHOICES, " or ".join(brains.CHOICES)),
    "tools.builtin": (lambda v: set(v) <= set(BUILTIN_NAMES) and len(set(v)) == len(v),
                      "a list of distinct names among " + ", ".join(BUILTIN_NAMES)),
    "tools.custom": (lambda v: all(":" in t for t in v), 'entries like "package.module:function"'),
    "tools.time_zone": (lambda v: _is_zone(v), 'an IANA time zone name such as "Europe/Paris" or "UTC"'),
    "tools.timeout_s": (lambda v: v > 0, "> 0"),
    "tools.max_rounds": (lambda v: v >= 1, ">= 1"),
    "tools.max_result_chars": (lambda v: v >= 16, ">= 16"),
    "tools.apology": (lambda v: bool(v.strip()), "a sentence (not empty)"),
    "voxtral.max_new_tokens": (lambda v: v >= 1, ">= 1"),
    "voxtral.max_context_tokens": (lambda v: v >= 512, ">= 512"),
    "voxtral.temperature": (lambda v: 0 <= v <= 2, "0..2"),
    "voxtral.token_timeout_s": (lambda v: v > 0, "> 0"),
    "brain.history_turns": (lambda v: v >= 0, ">= 0"),
    "brain.stall_timeout_s": (lambda v: v > 0, "> 0"),
    "openai.mode": (lambda v: v in ("text", "audio"), "text or audio"),
    "openai.transcription": (lambda v: v in ("local", "remote"), "local or remote"),
    "openai.max_tokens": (lambda v: v >= 1, ">= 1"),
    "openai.temperature": (lambda v: 0 <= v <= 2, "0..2"),
    "openai.connect_timeout_s": (lambda v: v > 0, "> 0"),
    "openai.read_timeout_s": (lambda v: v > 0, "> 0"),
    "asr.threads": (lambda v: v >= 1, ">= 1"),
    "asr.beam_size": (lambda v: v >= 1, ">= 1"),
    "asr.window_s": (lambda v: v <= 30, "<= 30 (0 or less = whisper's full 30 s window)"),
    "asr.no_speech_threshold": (lambda v: 0 < v <= 1, "0..1"),
    "llm.threads": (lambda v: v >= 1, ">= 1"),
    "llm.batch_threads": (lambda v: v >= 1, ">= 1"),
    "llm.context_tokens": (lambda v: v >= 256, ">= 256"),
    "llm.max_tokens": (lambda v: v >= 1, ">= 1"),
    "llm.temperature": (lambda v: 0 <= v <= 2, "0..2"),
    "llm.slots": (lambda v: 1 <= v <= 64, "1..64"),
    "scheduler.cores": (lambda v: v >= 0, ">= 0 (0 = every core)"),
    "scheduler.stuck_after_s": (lambda v: v >= 1, ">= 1"),
    "scheduler.first_audio_budget_s": (lambda v: v >= 0, ">= 0"),
    "scheduler.refill_lead_s": (lambda v: v >= 0, ">= 0"),
    "phrases.first_min_words": (lambda v: v >= 1, ">= 1"),
    "phrases.first_max_words": (lambda v: v >= 1, ">= 1"),
    "phrases.min_words": (lambda v: v >= 1, ">= 1"),
    "phrases.max_words": (lambda v: v >= 2, ">= 2"),
    "phrases.timeout_ms": (lambda v: v >= 10, ">= 10"),
    "voice.kind": (lambda v: v in voices.CHOICES, " or ".join(voices.CHOICES)),
    "voice.speed": (lambda v: 0.5 <= v <= 2.0, "0.5..2.0"),
    "voice.threads": (lambda v: v >= 1, ">= 1"),
    "openai_voice.sample_rate": (lambda v: 8000 <= v <= 48000, "8000..48000"),
    "openai_voice.connect_timeout_s": (lambda v: v > 0, "> 0"),
    "openai_voice.read_timeout_s": (lambda v: v > 0, "> 0"),
    "playout.frame_ms": (lambda v: v in (10, 20), "10 or 20"),
    "playout.max_lag_ms": (lambda v: v >= 20, ">= 20"),
    "playout.max_queue_s": (lambda v: v > 0, "> 0"),
}


def _is_zone(name: str) -> bool:
    try:
        zone_named(name)
    except ValueError:
        return False
    return True


def to_dict(config: Config) -> dict[str, dict[str, Any]]:
    return dataclasses.asdict(config)


def _sections() -> dict[str, type]:
    return {f.name: f.type if isinstance(f.type, type) else globals()[f.type] for f in dataclasses.fields(Config)}


def _field_types(section_cls: type) -> dict[str, str]:
    return {f.name: str(f.type) for f in dataclasses.fields(section_cls)}


def _check_type(key: str, type_name: str, value: Any) -> Any:
    if type_name == "int":
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"config key {key!r}: expected an integer, got {value!r}")
    elif type_name == "float":
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"config key {key!r}: expected a number, got {value!r}")
        value = float(value)
    elif type_name == "str":
        if not isinstance(value, str):
            raise ConfigError(f"config key {key!r}: expected a string, got {value!r}")
    elif type_name == "bool":
        if not isinstance(value, bool):
            raise ConfigError(f"config key {key!r}: expected true or false, got {value!r}")
    elif type_name == "list[str]":
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ConfigError(f"config key {key!r}: expected a list of strings, got {value!r}")
    else:  # pragma: no cover - schema error
        raise AssertionError(f"unsupported config type {type_name} for {key}")
    return value


def _parse_string(key: str, type_name: str, text: str) -> Any:
    """Parse an env var / CLI string into the key's type."""
    try:
        if type_name == "int":
            return int(text)
        if type_name == "float":
            return float(text)
        if type_name == "bool":
            lowered = text.strip().lower()
            if lowered in ("1", "true", "yes", "on"):
                return True
            if lowered in ("0", "false", "no", "off"):
                return False
            raise ValueError(text)
        if type_name == "list[str]":
            stripped = text.strip()
            if stripped.startswith("["):
                return json.loads(stripped)
            return [part.strip() for part in stripped.split(",") if part.strip()]
    except ValueError as exc:
        raise ConfigError(f"config key {key!r}: cannot parse {text!r} as {type_name}") from exc
    return text


def _apply_override(raw: dict[str, dict[str, Any]], key: str, value: Any, parse_strings: bool) -> None:
    section, _, name = key.partition(".")
    sections = _sections()
    if section not in sections or not name:
        raise ConfigError(f"unknown config key {key!r} (sections: {', '.join(sections)})")
    types = _field_types(sections[section])
    if name not in types:
        raise ConfigError(f"unknown config key {key!r} (keys in [{section}]: {', '.join(types)})")
    if parse_strings and isinstance(value, str):
        value = _parse_string(key, types[name], value)
    raw[section][name] = value


def _build(raw: Mapping[str, Any]) -> Config:
    sections = _sections()
    built: dict[str, Any] = {}
    for section, values in raw.items():
        if section not in sections:
            raise ConfigError(f"unknown config section [{section}] (sections: {', '.join(sections)})")
        if not isinstance(values, Mapping):
            raise ConfigError(f"config section [{section}] must be a table")
        types = _field_types(sections[section])
        checked: dict[str, Any] = {}
        for name, value in values.items():
            key = f"{section}.{name}"
            if name not in types:
                raise ConfigError(f"unknown config key {key!r} (keys in [{section}]: {', '.join(types)})")
            value = _check_type(key, types[name], value)
            rule = _CHOICES.get(key)
            if rule is not None and not rule[0](value):
                raise ConfigError(f"config key {key!r}: {value!r} is not allowed (must be {rule[1]})")
            checked[name] = value
        built[section] = sections[section](**checked)
    config = Config(**built)
    _check_relations(config)
    return config


def _check_relations(config: Config) -> None:
    p = config.phrases
    if p.first_min_words > p.first_max_words:
        raise ConfigError("config key 'phrases.first_min_words' must be <= 'phrases.first_max_words'")
    if p.min_words > p.max_words:
        raise ConfigError("config key 'phrases.min_words' must be <= 'phrases.max_words'")
    if config.brain.kind == "openai" and not config.openai.base_url.strip():
        raise ConfigError("config key 'openai.base_url' is empty: brain.kind = openai needs the engine's URL "
                          "(e.g. http://127.0.0.1:8000)")
    if config.voice.kind == "openai" and not config.openai_voice.base_url.strip():
        raise ConfigError("config key 'openai_voice.base_url' is empty: voice.kind = openai needs the speech "
                          "server's URL (e.g. http://127.0.0.1:8880)")


def _merge(base: dict[str, dict[str, Any]], extra: Mapping[str, Any], origin: str) -> None:
    for section, values in extra.items():
        if section not in base:
            raise ConfigError(f"{origin}: unknown config section [{section}] (sections: {', '.join(base)})")
        if not isinstance(values, Mapping):
            raise ConfigError(f"{origin}: config section [{section}] must be a table")
        for name, value in values.items():
            if name not in base[section]:
                raise ConfigError(f"{origin}: unknown config key '{section}.{name}'")
            base[section][name] = value


def _env_key_name(rest: str) -> str:
    """"openai_voice_base_url" -> "openai_voice.base_url": the longest section name that prefixes
    it (section names may hold underscores too); an unknown section keeps its first word."""
    for section in sorted(_sections(), key=len, reverse=True):
        if rest.startswith(section + "_"):
            return f"{section}.{rest[len(section) + 1:]}"
    section, _, name = rest.partition("_")
    return f"{section}.{name}"


def load_config(
    path: str | Path | None = None,
    overrides: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
) -> Config:
    """Defaults from config/default.toml, then `path`, then VOICE_AGENT_* env vars, then overrides.

    String override values (from the CLI or env) are parsed into the key's type.
    """
    with open(DEFAULT_TOML, "rb") as fh:
        raw: dict[str, dict[str, Any]] = tomllib.load(fh)
    # The default file itself must match the schema exactly.
    for section, section_cls in _sections().items():
        missing = set(_field_types(section_cls)) - set(raw.get(section, {}))
        if missing:
            raise ConfigError(f"{DEFAULT_TOML}: missing keys {sorted(f'{section}.{k}' for k in missing)}")
    if path is not None:
        try:
            with open(path, "rb") as fh:
                user = tomllib.load(fh)
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path}: not valid TOML: {exc}") from exc
        _merge(raw, user, str(path))
    environ = os.environ if environ is None else environ
    for env_key, text in environ.items():
        if not env_key.startswith(ENV_PREFIX):
            continue
        _apply_override(raw, _env_key_name(env_key[len(ENV_PREFIX):].lower()), text, parse_strings=True)
    for key, value in (overrides or {}).items():
        _apply_override(raw, key, value, parse_strings=True)
    return _build(raw)
