"""llama-server's build and process handling (agent/runtime/llama_server.py) without building it:
a cached binary is reused and nothing is rebuilt; missing build tools and a corrupt sdist are
errors naming the fix; `run.py engine --build-only` and the engine command's flags; a stand-in
binary (a shell script answering /health) started, found ready and stopped by SIGTERM. The real
binary is exercised by tests/test_remote_engine.py."""

from __future__ import annotations

import json
import stat
import sys
from pathlib import Path

import pytest

import run
from agent.runtime import llama_server
from agent.runtime.llama_server import LlamaServer, LlamaServerError

from .llama_server import free_port


def fake_build(cache_dir: Path) -> Path:
    binary = llama_server.binary_path(cache_dir)
    binary.parent.mkdir(parents=True)
    binary.write_text("#!/bin/sh\n")
    binary.chmod(0o755)
    (binary.parent / "llama-server.built").write_text(json.dumps(llama_server._stamp()))
    return binary


def test_the_binary_is_cached_by_version_under_the_model_cache(tmp_path):
    assert llama_server.binary_path(tmp_path) == tmp_path / "llama-server" / llama_server.VERSION / "llama-server"
    pins = (Path(run.__file__).parent / "requirements.txt").read_text()
    assert f"llama-cpp-python=={llama_server.VERSION}" in pins


def test_a_built_binary_is_reused_and_nothing_is_rebuilt(tmp_path, monkeypatch):
    binary = fake_build(tmp_path)

    def no_build(*_args):
        raise AssertionError("rebuilt")

    monkeypatch.setattr(llama_server, "build_tools", no_build)
    monkeypatch.setattr(llama_server, "ensure_sdist", no_build)
    assert llama_server.ensure_llama_server(tmp_path) == binary
    assert llama_server.ensure_llama_server(tmp_path) == binary


def test_a_stamp_for_other_sources_or_flags_means_a_rebuild(tmp_path, monkeypatch):
    binary = fake_build(tmp_path)
    (binary.parent / "llama-server.built").write_text(json.dumps({"sdist_sha256": "0" * 64, "cmake_flags": []}))
    assert not llama_server.is_built(tmp_path)
    monkeypatch.setattr(llama_server, "_tool", lambda *names: None)
    with pytest.raises(LlamaServerError):
        llama_server.ensure_llama_server(tmp_path, progress=False)


def test_missing_build_tools_are_named_with_the_fix(tmp_path, monkeypatch):
    monkeypatch.delenv("CC", raising=False)
    monkeypatch.delenv("CXX", raising=False)
    monkeypatch.setattr(llama_server, "_tool", lambda *names: "/usr/bin/cmake" if "cmake" in names else None)
    with pytest.raises(LlamaServerError) as error:
        llama_server.ensure_llama_server(tmp_path, progress=False)
    message = str(error.value)
    assert "ninja (or make)" in message and "a C++ compiler" in message and "cmake," not in message
    assert "apt-get install cmake ninja-build g++" in message and "pip install cmake ninja" in message


def test_a_corrupt_sdist_is_removed_and_named(tmp_path):
    sdist = tmp_path / "sdists" / llama_server.SDIST
    sdist.parent.mkdir()
    sdist.write_bytes(b"not the pinned sources")
    with pytest.raises(LlamaServerError) as error:
        llama_server.ensure_sdist(tmp_path)
    assert "sha256" in str(error.value) and llama_server.SDIST_SHA256[:12] in str(error.value)
    assert not sdist.exists()


def test_build_only_reports_the_cached_binary(tmp_path, capsys):
    binary = fake_build(tmp_path)
    assert run.main(["engine", "--build-only", "--set", f"models.cache_dir={tmp_path}"]) == 0
    assert str(binary) in capsys.readouterr().out


@pytest.mark.parametrize("argv", [["engine", "--expose"], ["engine", "--host", "0.0.0.0"],
                                  ["engine", "--parallel", "0"], ["engine", "-np", "4", "-c", "512"]])
def test_the_engine_command_refuses_other_interfaces_and_impossible_sizes(argv, capsys):
    with pytest.raises(SystemExit) as exc:
        run.main(argv)
    assert exc.value.code == 2 and "engine:" in capsys.readouterr().err


def test_the_engine_port_flag_is_the_engines_before_or_after_the_subcommand():
    parser = run.build_parser()
    assert parser.parse_args(["engine", "--port", "9100", "-np", "2", "-t", "1"]).port == 9100
    assert parser.parse_args(["--port", "9100", "engine"]).port == 9100
    args = parser.parse_args(["engine"])
    assert not hasattr(args, "port") and (args.parallel, args.context, args.threads) == (4, 8192, 1)


STAND_IN = """#!/bin/sh
# answers GET /health like llama-server once "loaded"; records its arguments and OMP_WAIT_POLICY
echo "$@" > "$0.args"; echo "$OMP_WAIT_POLICY $LLAMA_API_KEY" > "$0.env"
trap 'echo terminated >> "$0.args"; exit 0' TERM
while [ "$1" != "--port" ]; do shift; done
exec {python} -c "
import http.server, signal, sys
signal.signal(signal.SIGTERM, lambda *a: sys.exit(0))
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200 if self.path == '/health' else 404); self.end_headers(); self.wfile.write(b'{{}}')
    def log_message(self, *a): pass
http.server.HTTPServer(('127.0.0.1', int(sys.argv[1])), H).serve_forever()
" "$2"
"""


def test_the_process_is_started_ready_on_health_and_stopped_by_sigterm(tmp_path, monkeypatch):
    monkeypatch.setenv("OMP_WAIT_POLICY", "PASSIVE")  # what the agent's own process sets for its models
    binary = tmp_path / "llama-server"
    binary.write_text(STAND_IN.format(python=sys.executable))
    binary.chmod(binary.stat().st_mode | stat.S_IXUSR)
    server = LlamaServer(binary, tmp_path / "model.gguf", free_port(), parallel=3, context=3072, threads=1,
                         api_key="sk-secret", log_path=tmp_path / "log")
    server.start(timeout_s=20)
    try:
        assert server.running()
        args = (tmp_path / "llama-server.args").read_text().split()
        assert args[args.index("-np") + 1] == "3" and args[args.index("-c") + 1] == "3072"
        assert args[args.index("--host") + 1] == "127.0.0.1" and "--no-webui" in args
        assert "sk-secret" not in args  # the key goes in the environment (LLAMA_API_KEY), not on the command line
        # libgomp's default wait for the engine, not the parent's PASSIVE (88 vs 56 ms a token)
        assert (tmp_path / "llama-server.env").read_text().split() == ["sk-secret"]
    finally:
        assert server.stop() == 0
    assert not server.running()


def test_a_process_that_exits_while_starting_is_an_error_with_its_log(tmp_path):
    binary = tmp_path / "llama-server"
    binary.write_text("#!/bin/sh\necho 'error: failed to load model'\nexit 3\n")
    binary.chmod(0o755)
    server = LlamaServer(binary, tmp_path / "model.gguf", free_port(), log_path=tmp_path / "log")
    with pytest.raises(LlamaServerError) as error:
        server.start(timeout_s=20)
    assert "exited with 3" in str(error.value) and "failed to load model" in str(error.value)


def test_llama_cpp_builds_without_amx_on_a_cpu_with_amx_and_natively_elsewhere(tmp_path, monkeypatch):
    """AMX kernels crash in these VMs; the other instruction sets of the CPU stay on, repacking too."""
    from agent.runtime import llama_cpu

    amx, epyc = tmp_path / "amx", tmp_path / "epyc"
    amx.write_text("processor\t: 0\nflags\t\t: fpu sse avx avx2 fma f16c avx512f amx_bf16 amx_tile amx_int8\n")
    epyc.write_text("processor\t: 0\nflags\t\t: fpu sse avx2 avx512f\n")
    args = llama_cpu.cmake_args(amx)
    assert "-DGGML_NATIVE=OFF" in args and "-DGGML_AMX_INT8=OFF" in args
    assert "-DGGML_AVX512=ON" in args and "-DGGML_AVX2=ON" in args and "-DGGML_AVX512_VNNI=OFF" in args
    assert llama_cpu.cmake_args(epyc) == [] and llama_cpu.cmake_args(tmp_path / "missing") == []
    assert llama_cpu.built_with_amx("CPU : AVX2 = 1 | AMX_INT8 = 1 | REPACK = 1 |")
    assert not llama_cpu.built_with_amx("CPU : AVX2 = 1 | AVX512 = 1 | REPACK = 1 |")
    assert llama_cpu.extra_buffers_safe(epyc) and llama_cpu.extra_buffers_safe(tmp_path / "missing")
    monkeypatch.setattr(llama_server, "cmake_args", lambda: args)
    assert llama_server.build_flags()[-len(args):] == args  # llama-server is built the same way
    server = LlamaServer(binary=tmp_path / "llama-server", model=tmp_path / "m.gguf", port=1)
    assert "--no-repack" not in server.command()
    command = server.command()  # read into memory, not mapped beside the repacked copy
    assert command[command.index("--load-mode") + 1] == "none"
