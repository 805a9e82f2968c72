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
