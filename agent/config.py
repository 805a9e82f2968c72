"""Typed configuration: config/default.toml, then a user TOML file, env vars, then CLI overrides.

The pydantic models below are the schema: each key's type and bounds, and no defaults;
config/default.toml is the one place that holds every default value, each with a comment.
A key the schema does not know, or a value of the wrong type or out of bounds, raises
ConfigError naming the key (building a section directly, e.g. TurnsConfig(...), checks it too).
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
import tomllib
from pathlib import Path
from typing import Annotated, Any, Callable, Literal, Mapping, get_args, get_origin

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, model_validator

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


def _must(predicate: Callable[[Any], bool], description: str) -> AfterValidator:
    """A check beyond type and bounds: `predicate(value)`, else "must be `description`"."""
    def check(value: Any) -> Any:
        if not predicate(value):
            raise ValueError(f"must be {description}")
        return value
    return AfterValidator(check)


def _valid_networks(values: list[str]) -> bool:
    try:
        for value in values:
            ipaddress.ip_network(value, strict=False)
    except ValueError:
        return False
    return True


def _valid_addresses(values: list[str]) -> bool:
    try:
        for value in values:
            ipaddress.ip_address(value)
    except ValueError:
        return False
    return True


def _ice_urls(values: list[str]) -> bool:
    return all(value.lower().startswith(("stun:", "stuns:", "turn:", "turns:")) for value in values)


def _is_zone(name: str) -> bool:
    try:
        zone_named(name)
    except ValueError:
        return False
    return True


_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")

# Kinds of value that recur across sections.
Timeout = Annotated[float, Field(gt=0)]             # seconds, > 0
Threads = Annotated[int, Field(ge=1)]               # CPU threads
Temperature = Annotated[float, Field(ge=0, le=2)]   # sampling temperature (0 = greedy)
Fraction = Annotated[float, Field(ge=0, le=1)]
BaseUrl = Annotated[str, _must(lambda v: not v.strip() or v.strip().lower().startswith(("http://", "https://")),
                               'an http:// or https:// URL, or ""')]
EnvName = Annotated[str, _must(lambda v: v == "" or _ENV_NAME.fullmatch(v) is not None,
                               'the NAME of an environment variable (letters, digits, _), or ""')]


class _Schema(BaseModel):
    """Frozen, every key required (config/default.toml holds them all), strict types (an integer
    stands for a float, nothing else converts), unknown keys refused; errors as ConfigError."""

    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)

    def __init__(self, **values: Any) -> None:
        try:
            super().__init__(**values)
        except ValidationError as exc:
            raise _config_error(exc, _section_of(type(self))) from exc


class ServerConfig(_Schema):
    host: str = Field(min_length=1)
    port: int = Field(ge=0, le=65535)
    max_body_bytes: int = Field(ge=1024)
    log_level: Annotated[str, _must(lambda v: v.upper() in {"DEBUG", "INFO", "WARNING", "ERROR"},
                                    "DEBUG, INFO, WARNING or ERROR")]
    peer_idle_timeout_s: Timeout
    min_inbound_audio_ratio: Fraction
    ice_connect_timeout_s: Timeout
    max_call_s: Timeout
    max_sessions: int = Field(ge=1)
    capacity_calls: int = Field(ge=0)  # 0 = the models' own figure
    capacity_retry_after_s: int = Field(ge=1)
    agent_check_port: int = Field(ge=0, le=65535)  # 0 = no agent check
    trusted_proxies: Annotated[list[str], _must(_valid_networks, 'a list of addresses or networks such as "10.0.0.5" or "10.0.0.0/24"')]
    max_sessions_per_address: int = Field(ge=1)
    rate_limit_per_minute: int = Field(ge=0)  # 0 = no limit
    max_sdp_bytes: int = Field(ge=1024)
    auth_token: str
    allowed_origins: list[str]
    allowed_hosts: list[str]
    header_timeout_s: Timeout
    body_timeout_s: Timeout
    shutdown_timeout_s: float = Field(ge=0, le=60)
    max_inbound_packets_per_s: int = Field(ge=10)
    max_data_packets_per_s: int = Field(ge=10)
    max_data_channels: int = Field(ge=1)


class IceConfig(_Schema):
    host_addresses: Annotated[list[str], _must(_valid_addresses, 'a list of IP addresses such as "127.0.0.1"')]
    servers: Annotated[list[str], _must(_ice_urls, "a list of stun:, stuns:, turn: or turns: URLs")]
    jitter_prefetch: int = Field(ge=0, le=8)
    max_remote_candidates: int = Field(ge=1)
    allow_mdns_candidates: bool
    allowed_candidate_networks: Annotated[list[str], _must(_valid_networks,
                                                           'a list of networks such as "10.0.0.0/8"')]


class TurnsConfig(_Schema):
    vad_aggressiveness: Literal[0, 1, 2, 3]
    frame_ms: Literal[10, 20, 30]
    start_ms: int = Field(ge=10)
    hangover_ms: int = Field(ge=20)
    semantic: bool
    incomplete_silence_ms: int = Field(ge=100)
    complete_threshold: float = Field(gt=0, lt=1)
    speculative_ms: int = Field(ge=0)  # 0 = off
    min_speech_ms: int = Field(ge=0)
    max_utterance_ms: int = Field(ge=1000)
    preroll_ms: int = Field(ge=0)
    finished_text_ends_turn: bool
    forgive_interruptions: bool
    interrupt_min_ms: int = Field(ge=0)
    echo_margin_db: float = Field(ge=0)  # 0 = off
    fillers: list[str]


class BrainConfig(_Schema):
    kind: Annotated[str, _must(lambda v: v in brains.CHOICES, " or ".join(brains.CHOICES))]
    system_prompt: str
    history_turns: int = Field(ge=0)
    stall_timeout_s: Timeout


class ToolsConfig(_Schema):
    builtin: Annotated[list[str], _must(lambda v: set(v) <= set(BUILTIN_NAMES) and len(set(v)) == len(v),
                                        "a list of distinct names among " + ", ".join(BUILTIN_NAMES))]
    custom: Annotated[list[str], _must(lambda v: all(":" in t for t in v), 'entries like "package.module:function"')]
    instructions: str
    force_arithmetic: bool
    time_zone: Annotated[str, _must(_is_zone, 'an IANA time zone name such as "Europe/Paris" or "UTC"')]
    timeout_s: Timeout
    max_rounds: int = Field(ge=1)
    max_result_chars: int = Field(ge=16)
    apology: Annotated[str, _must(lambda v: bool(v.strip()), "a sentence (not empty)")]


class VoxtralConfig(_Schema):
    model: str = Field(min_length=1)
    max_new_tokens: int = Field(ge=1)
    max_context_tokens: int = Field(ge=512)
    temperature: Temperature
    token_timeout_s: Timeout
    transcribe: bool
    language: str
    compile: bool


class OpenAIConfig(_Schema):
    base_url: BaseUrl
    model: str
    api_key_env: EnvName
    mode: Literal["text", "audio"]
    transcription: Literal["local", "remote"]
    transcription_model: str
    max_tokens: int = Field(ge=1)
    temperature: Temperature
    connect_timeout_s: Timeout
    read_timeout_s: Timeout


class AsrConfig(_Schema):
    threads: Threads
    beam_size: int = Field(ge=1)
    language: str
    window_s: float = Field(le=30)  # 0 or less = whisper's full 30 s window
    no_speech_threshold: float = Field(gt=0, le=1)
    unclear_logprob: float = Field(le=0)  # a mean log-probability; 0 = off
    unclear_max_words: int = Field(ge=1)


class LlmConfig(_Schema):
    threads: Threads
    batch_threads: Threads
    context_tokens: int = Field(ge=256)
    max_tokens: int = Field(ge=1)
    temperature: Temperature
    slots: int = Field(ge=1, le=64)
    batched: bool
    prompt_chunk: int = Field(ge=1, le=512)


class PhrasesConfig(_Schema):
    first_min_words: int = Field(ge=1)
    first_max_words: int = Field(ge=1)
    min_words: int = Field(ge=1)
    max_words: int = Field(ge=2)
    first_timeout_ms: int = Field(ge=10)
    timeout_ms: int = Field(ge=10)

    @model_validator(mode="after")
    def _min_within_max(self) -> "PhrasesConfig":
        if self.first_min_words > self.first_max_words:
            raise ConfigError("config key 'phrases.first_min_words' must be <= 'phrases.first_max_words'")
        if self.min_words > self.max_words:
            raise ConfigError("config key 'phrases.min_words' must be <= 'phrases.max_words'")
        return self


class VoiceConfig(_Schema):
    kind: Annotated[str, _must(lambda v: v in voices.CHOICES, " or ".join(voices.CHOICES))]
    voice: str
    speed: float = Field(ge=0.5, le=2.0)
    threads: Threads
    torch_repo: str
    torch_config: str
    torch_weights: str


class OpenAIVoiceConfig(_Schema):
    base_url: BaseUrl
    model: str
    voice: str
    api_key_env: EnvName
    sample_rate: int = Field(ge=8000, le=48000)
    connect_timeout_s: Timeout
    read_timeout_s: Timeout


class PlayoutConfig(_Schema):
    frame_ms: Literal[10, 20]
    max_lag_ms: int = Field(ge=20)
    max_queue_s: Timeout


class SchedulerConfig(_Schema):
    cores: int = Field(ge=0)  # 0 = every core
    first_audio_budget_s: float = Field(ge=0)
    refill_lead_s: float = Field(ge=0)
    stuck_after_s: float = Field(ge=1)


class ModelsConfig(_Schema):
    cache_dir: str


class Config(_Schema):
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

    @model_validator(mode="after")
    def _remote_engines_have_urls(self) -> "Config":
        if self.brain.kind == "openai" and not self.openai.base_url.strip():
            raise ConfigError("config key 'openai.base_url' is empty: brain.kind = openai needs the engine's URL "
                              "(e.g. http://127.0.0.1:8000)")
        if self.voice.kind == "openai" and not self.openai_voice.base_url.strip():
            raise ConfigError("config key 'openai_voice.base_url' is empty: voice.kind = openai needs the speech "
                              "server's URL (e.g. http://127.0.0.1:8880)")
        return self

    def replace(self, **overrides: Any) -> "Config":
        """Return a copy with dotted-key overrides applied, e.g. replace(**{"turns.hangover_ms": 200})."""
        raw = self.model_dump()
        for key, value in overrides.items():
            _apply_override(raw, key, value, parse_strings=False)
        return Config(**raw)


def _sections() -> dict[str, type[_Schema]]:
    return {name: field.annotation for name, field in Config.model_fields.items()}


def _section_of(cls: type[_Schema]) -> str:
    """The [section] a schema class is ("" for Config itself)."""
    return next((name for name, section_cls in _sections().items() if section_cls is cls), "")


def _config_error(exc: ValidationError, section: str) -> ConfigError:
    """The first error pydantic found, as a ConfigError naming the key."""
    error = exc.errors()[0]
    cause = (error.get("ctx") or {}).get("error")
    if isinstance(cause, ConfigError):  # from a nested section, or a cross-field check
        return cause
    loc = [str(part) for part in error["loc"] if isinstance(part, str)]
    if not section:  # Config itself: the location starts with a section name
        if error["type"] == "extra_forbidden":
            return ConfigError(f"unknown config section [{loc[0]}] (sections: {', '.join(_sections())})")
        if error["type"] == "missing":
            return ConfigError(f"config section [{loc[0]}] is missing (config/default.toml holds every section)")
    key = ".".join([section, *loc][:2])
    if error["type"] == "extra_forbidden":
        return ConfigError(f"unknown config key {key!r}")
    if error["type"] == "missing":
        return ConfigError(f"config key {key!r} is missing (config/default.toml holds every key)")
    reason = str(cause) if cause is not None else error["msg"][:1].lower() + error["msg"][1:]
    return ConfigError(f"config key {key!r}: {error['input']!r} is not allowed ({reason})")


def _key_type(key: str, origin: str = "") -> Any:
    """The type of a dotted key ("turns.hangover_ms" -> int), or ConfigError if the schema lacks it."""
    prefix = f"{origin}: " if origin else ""
    section, _, name = key.partition(".")
    sections = _sections()
    if section not in sections or not name:
        raise ConfigError(f"{prefix}unknown config key {key!r} (sections: {', '.join(sections)})")
    fields = sections[section].model_fields
    if name not in fields:
        raise ConfigError(f"{prefix}unknown config key {key!r} (keys in [{section}]: {', '.join(fields)})")
    annotation = fields[name].annotation
    if get_origin(annotation) is Literal:  # Literal[10, 20, 30] is parsed as an int
        return type(get_args(annotation)[0])
    return annotation


def _parse_string(key: str, kind: Any, text: str) -> Any:
    """Parse an env var / CLI string into the key's type."""
    try:
        if kind is int:
            return int(text)
        if kind is float:
            return float(text)
        if kind is bool:
            lowered = text.strip().lower()
            if lowered in ("1", "true", "yes", "on"):
                return True
            if lowered in ("0", "false", "no", "off"):
                return False
            raise ValueError(text)
        if kind == list[str]:
            stripped = text.strip()
            if stripped.startswith("["):
                return json.loads(stripped)
            return [part.strip() for part in stripped.split(",") if part.strip()]
    except ValueError as exc:
        raise ConfigError(f"config key {key!r}: cannot parse {text!r} as {getattr(kind, '__name__', kind)}") from exc
    return text


def _apply_override(raw: dict[str, dict[str, Any]], key: str, value: Any, parse_strings: bool) -> None:
    kind = _key_type(key)
    if parse_strings and isinstance(value, str):
        value = _parse_string(key, kind, value)
    section, _, name = key.partition(".")
    raw[section][name] = value


def _merge(base: dict[str, dict[str, Any]], extra: Mapping[str, Any], origin: str) -> None:
    for section, values in extra.items():
        if section not in base:
            raise ConfigError(f"{origin}: unknown config section [{section}] (sections: {', '.join(base)})")
        if not isinstance(values, Mapping):
            raise ConfigError(f"{origin}: config section [{section}] must be a table")
        for name, value in values.items():
            _key_type(f"{section}.{name}", origin)
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
    return Config(**raw)
