import pytest

import run


@pytest.mark.parametrize("argv", [
    ["--port", "9001", "serve"],
    ["serve", "--port", "9001"],
    ["--set", "server.port=9001"],
    ["bench", "--set", "server.port=9001", "--turns", "2"],
])
def test_options_before_or_after_the_subcommand(argv):
    args = run.build_parser().parse_args(argv)
    assert run.config_from_args(args).server.port == 9001


def test_help_lists_every_config_key(capsys):
    with pytest.raises(SystemExit):
        run.main(["--help"])
    out = capsys.readouterr().out
    for key in ("turns.hangover_ms", "phrases.timeout_ms", "ice.host_addresses", "playout.max_lag_ms"):
        assert key in out


def test_bad_config_value_exits_with_the_key_named(capsys):
    with pytest.raises(SystemExit) as exc:
        run.main(["--set", "turns.hangover_ms=soon", "models"])
    assert exc.value.code == 2
    assert "turns.hangover_ms" in capsys.readouterr().err
