import pytest

from agent.config import Config, ConfigError, load_config


def test_defaults_load_and_match_the_schema():
    config = load_config(environ={})
    assert isinstance(config, Config)
    assert config.server.host == "127.0.0.1"
    assert config.server.port == 8080


def test_env_and_overrides_apply_in_order():
    config = load_config(environ={"VOICE_AGENT_SERVER_PORT": "9000", "VOICE_AGENT_TURNS_HANGOVER_MS": "250"},
                         overrides={"server.port": "9100", "ice.host_addresses": "127.0.0.1"})
    assert config.server.port == 9100
    assert config.turns.hangover_ms == 250
    assert config.ice.host_addresses == ["127.0.0.1"]


@pytest.mark.parametrize("key,value,needle", [
    ("server.prot", "1", "server.prot"),
    ("nosuch.key", "1", "nosuch.key"),
    ("server.port", "eighty", "server.port"),
    ("turns.vad_aggressiveness", "7", "turns.vad_aggressiveness"),
    ("playout.frame_ms", "40", "playout.frame_ms"),
])
def test_bad_keys_and_values_name_the_key(key, value, needle):
    with pytest.raises(ConfigError, match=needle.replace(".", r"\.")):
        load_config(environ={}, overrides={key: value})


def test_unknown_key_in_a_user_file(tmp_path):
    path = tmp_path / "my.toml"
    path.write_text("[turns]\nhangover = 200\n")
    with pytest.raises(ConfigError, match="turns.hangover"):
        load_config(path, environ={})


def test_unknown_env_key_is_an_error():
    with pytest.raises(ConfigError, match="server.colour"):
        load_config(environ={"VOICE_AGENT_SERVER_COLOUR": "blue"})


def test_replace_checks_types():
    config = load_config(environ={})
    assert config.replace(**{"turns.hangover_ms": 200}).turns.hangover_ms == 200
    with pytest.raises(ConfigError):
        config.replace(**{"turns.hangover_ms": "soon"})


def test_every_key_of_default_toml_is_in_the_schema_and_back():
    """config/default.toml holds the defaults; the schema holds none of its own."""
    import tomllib

    from agent.config import DEFAULT_TOML

    with open(DEFAULT_TOML, "rb") as fh:
        toml = {section: set(values) for section, values in tomllib.load(fh).items()}
    schema = {name: set(field.annotation.model_fields) for name, field in Config.model_fields.items()}
    assert toml == schema
    for name, field in Config.model_fields.items():
        assert field.is_required(), name
        for key, section_field in field.annotation.model_fields.items():
            assert section_field.is_required(), f"{name}.{key} has a default of its own"


@pytest.mark.parametrize("key,value", [
    ("turns.hangover_ms", "5"),                 # ge
    ("server.port", "70000"),                   # le
    ("server.peer_idle_timeout_s", "0"),        # gt
    ("turns.complete_threshold", "1"),          # lt
    ("server.shutdown_timeout_s", "61"),        # a range
    ("asr.unclear_max_words", "0"),             # a count: 0 is meaningless
    ("asr.unclear_logprob", "0.5"),             # a log-probability is <= 0
    ("turns.echo_margin_db", "-3"),             # 0 = off, below is meaningless
    ("openai.mode", "chat"),                    # a Literal of words
    ("turns.frame_ms", "25"),                   # a Literal of numbers
    ("server.log_level", "LOUD"),               # a choice in any case
    ("server.host", ""),                        # not empty
    ("brain.kind", "nosuch"),                   # a registry name (agent.brains)
    ("voice.kind", "nosuch"),                   # a registry name (agent.voices)
    ("tools.time_zone", "Mars/Olympus_Mons"),   # a zone name (zone_named)
    ("tools.builtin", "calculator,calculator"),  # distinct names
    ("ice.allowed_candidate_networks", "10.0.0.0/33"),
    ("ice.host_addresses", "localhost"),
    ("ice.servers", "http://stun.example.org"),
    ("openai.api_key_env", "sk-not-a-name"),
    ("openai_voice.base_url", "ftp://speech"),
])
def test_each_kind_of_bound_names_the_key(key, value):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        load_config(environ={}, overrides={key: value})


@pytest.mark.parametrize("overrides,needle", [
    ({"phrases.first_min_words": "4", "phrases.first_max_words": "3"}, "phrases.first_min_words"),
    ({"phrases.min_words": "30"}, "phrases.min_words"),
    ({"brain.kind": "openai"}, "openai.base_url"),
    ({"voice.kind": "openai"}, "openai_voice.base_url"),
])
def test_cross_field_checks_name_the_key(overrides, needle):
    with pytest.raises(ConfigError, match=needle.replace(".", r"\.")):
        load_config(environ={}, overrides=overrides)


def test_values_within_bounds_load():
    config = load_config(environ={}, overrides={"server.log_level": "debug", "turns.speculative_ms": "0",
                                                "asr.unclear_logprob": "0", "turns.echo_margin_db": "0",
                                                "ice.host_addresses": "127.0.0.1,::1", "server.port": "0"})
    assert config.server.log_level == "debug" and config.turns.speculative_ms == 0
    assert config.ice.host_addresses == ["127.0.0.1", "::1"]


@pytest.mark.parametrize("text,needle", [
    ("[turns]\nhangover_ms = \"soon\"\n", "turns.hangover_ms"),    # a string for an integer
    ("[turns]\nsemantic = 1\n", "turns.semantic"),                # an integer for a bool
    ("[server]\nport = 80.5\n", "server.port"),                   # a float for an integer
    ("[tools]\nbuiltin = \"clock\"\n", "tools.builtin"),          # a string for a list
    ("[ice]\nservers = [3478]\n", "ice.servers"),                 # a list of the wrong items
    ("[asr]\nunclear_max_words = 0\n", "asr.unclear_max_words"),
    ("[colour]\nred = 1\n", "colour"),                            # an unknown section
    ("[turns]\nhangover = 200\n", "turns.hangover"),              # an unknown key
])
def test_wrong_types_and_unknown_keys_in_a_user_file(tmp_path, text, needle):
    path = tmp_path / "my.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=needle.replace(".", r"\.")):
        load_config(path, environ={})


def test_an_integer_stands_for_a_float(tmp_path):
    path = tmp_path / "my.toml"
    path.write_text("[server]\nmax_call_s = 60\n")
    config = load_config(path, environ={})
    assert config.server.max_call_s == 60.0 and isinstance(config.server.max_call_s, float)


def test_replace_refuses_unknown_keys_and_bounds_and_leaves_the_original():
    config = load_config(environ={})
    with pytest.raises(ConfigError, match=r"turns\.hangover"):
        config.replace(**{"turns.hangover": 200})
    with pytest.raises(ConfigError, match=r"asr\.unclear_max_words"):
        config.replace(**{"asr.unclear_max_words": 0})
    changed = config.replace(**{"turns.semantic": False, "ice.host_addresses": ["127.0.0.1"]})
    assert (changed.turns.semantic, changed.ice.host_addresses) == (False, ["127.0.0.1"])
    assert config.turns.semantic is True and config.ice.host_addresses == []


def test_sections_are_frozen_and_built_directly_are_checked_too():
    from pydantic import ValidationError

    from agent.config import PhrasesConfig

    config = load_config(environ={})
    with pytest.raises(ValidationError):
        config.turns.hangover_ms = 300
    same = config.turns.__class__(**{**config.turns.__dict__, "hangover_ms": 600})  # as tests/test_session.py does
    assert same.hangover_ms == 600 and same.fillers == config.turns.fillers
    with pytest.raises(ConfigError, match=r"phrases\.max_words"):
        PhrasesConfig(first_min_words=2, first_max_words=3, min_words=4, max_words=1, first_timeout_ms=400, timeout_ms=400)
    with pytest.raises(ConfigError, match=r"phrases\.colour"):
        PhrasesConfig(first_min_words=2, first_max_words=3, min_words=4, max_words=24, first_timeout_ms=400, timeout_ms=400, colour=1)
