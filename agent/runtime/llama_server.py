"""llama.cpp's own server (`llama-server`): built once from the llama.cpp sources that the pinned
llama-cpp-python sdist vendors, then started and stopped as a child process.

The binary is a continuous-batching OpenAI-compatible engine: `-np N` slots decode N requests
at once, each with its own prompt cache.

Build (`ensure_llama_server`): the sdist (`pip download --no-deps --no-binary=:all:`, into the
cache's sdists/ folder, sha256 pinned like every model file) is unpacked in a temporary
directory, `vendor/llama.cpp` configured with cmake (Ninja, Release, static, no web UI: the
default `LLAMA_USE_PREBUILT_UI=ON` would try to download it) and only the `llama-server` target
built (~7 min on 2 cores; Ninja, or make without it). The binary lands in `<cache>/llama-server/<version>/llama-server`
with a stamp of the sdist's sha256 and the cmake flags; a later call finds it and does nothing.
The build is for the CPU that builds it, which is what a per-machine cache holds: `GGML_NATIVE`
(the compiler's -march=native), except on a CPU with AMX, where `llama_cpu.cmake_args` names the
instruction sets without AMX (its kernels crash in these VMs; see agent/runtime/llama_cpu.py).

Process (`LlamaServer`): `llama-server -m GGUF --host 127.0.0.1 --port P -np N -c C -t T -tb T
--no-webui`, ready once `GET /health` answers 200; `warm_slots` sends one request per slot
(`id_slot`) with the agent's own prompt so no caller's first turn pays for prompt evaluation
(a cold slot costs ~2.5 s of first token with four callers at once). Nothing here knows about
the agent's brains or WebRTC.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from .llama_cpu import cmake_args
from .model_files import ModelFileError

log = logging.getLogger(__name__)

VERSION = "0.3.36"  # llama-cpp-python's version: the same pin as requirements.txt
DISTRIBUTION = f"llama-cpp-python=={VERSION}"
SDIST = f"llama_cpp_python-{VERSION}.tar.gz"
SDIST_SHA256 = "832db0699007f1be95a7e41ef12e88926b02ba836461e36a36372db2760c1a2e"
CMAKE_FLAGS = (
    "-DCMAKE_BUILD_TYPE=Release", "-DLLAMA_BUILD_SERVER=ON", "-DLLAMA_BUILD_TOOLS=ON", "-DLLAMA_BUILD_TESTS=OFF",
    "-DLLAMA_BUILD_EXAMPLES=OFF", "-DLLAMA_BUILD_APP=OFF", "-DLLAMA_USE_PREBUILT_UI=OFF", "-DLLAMA_BUILD_UI=OFF",
    "-DLLAMA_OPENSSL=OFF", "-DBUILD_SHARED_LIBS=OFF",
)
BUILD_HINT = ("on Debian/Ubuntu: `sudo apt-get install cmake ninja-build g++`; or into the virtualenv: "
              "`.venv/bin/pip install cmake ninja` (a C/C++ compiler is still needed)")


class LlamaServerError(ModelFileError):
    """llama-server cannot be built or started; the message says how to fix it."""


def binary_path(cache_dir: Path) -> Path:
    return cache_dir / "llama-server" / VERSION / "llama-server"


def build_flags() -> list[str]:
    """The cmake flags of this machine's build."""
    return [*CMAKE_FLAGS, *cmake_args()]


def _stamp() -> dict:
    return {"sdist_sha256": SDIST_SHA256, "cmake_flags": build_flags()}


def _stamp_path(binary: Path) -> Path:
    return binary.with_name(binary.name + ".built")


def is_built(cache_dir: Path) -> bool:
    binary = binary_path(cache_dir)
    try:
        return os.access(binary, os.X_OK) and json.loads(_stamp_path(binary).read_text()) == _stamp()
    except (OSError, ValueError):
        return False


def _tool(*names: str) -> str | None:
    """The first of `names` on PATH or in this interpreter's bin/ (pip's cmake and ninja)."""
    for name in names:
        for where in (os.path.dirname(sys.executable), None):
            found = shutil.which(name, path=where) if where else shutil.which(name)
            if found:
                return found
    return None


def build_tools() -> tuple[str, list[str]]:
    """cmake and its generator arguments (Ninja, else make), or a LlamaServerError naming what is
    missing and how to get it."""
    cmake, ninja, make = _tool("cmake"), _tool("ninja", "ninja-build"), _tool("make")
    cxx = os.environ.get("CXX") or _tool("c++", "g++", "clang++")
    cc = os.environ.get("CC") or _tool("cc", "gcc", "clang")
    missing = [name for name, found in (("cmake", cmake), ("ninja (or make)", ninja or make),
                                        ("a C++ compiler", cxx), ("a C compiler", cc)) if not found]
    if missing:
        raise LlamaServerError(f"building llama-server needs {', '.join(missing)}, not found; {BUILD_HINT}")
    generator = ["-G", "Ninja", f"-DCMAKE_MAKE_PROGRAM={ninja}"] if ninja else ["-G", "Unix Makefiles"]
    return cmake, generator  # type: ignore[return-value]  # cmake is not None here


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 22):
            digest.update(chunk)
    return digest.hexdigest()


def ensure_sdist(cache_dir: Path) -> Path:
    """The pinned llama-cpp-python sdist in `<cache>/sdists/`, fetched with pip if absent, sha256-checked."""
    folder = cache_dir / "sdists"
    path = folder / SDIST
    if not path.is_file():
        folder.mkdir(parents=True, exist_ok=True)
        log.info("fetching the %s sdist (its vendored llama.cpp sources build llama-server)", DISTRIBUTION)
        result = subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps",
                                 "--no-binary=:all:", "--dest", str(folder), DISTRIBUTION],
                                capture_output=True, text=True)
        if result.returncode != 0 or not path.is_file():
            raise LlamaServerError(
                f"could not fetch the {DISTRIBUTION} sdist from the package index: "
                f"{(result.stderr or result.stdout).strip()[-300:]}; download it by hand with "
                f"`pip download --no-deps --no-binary=:all: {DISTRIBUTION} -d {folder}`")
    actual = _sha256(path)
    if actual != SDIST_SHA256:
        path.unlink()
        raise LlamaServerError(f"{path}: sha256 {actual[:12]}… is not the pinned {SDIST_SHA256[:12]}…; it was "
                               "removed, run the command again to fetch it afresh")
    return path


def _unpack_llama_cpp(sdist: Path, into: Path) -> Path:
    prefix = f"llama_cpp_python-{VERSION}/vendor/llama.cpp/"
    with tarfile.open(sdist) as archive:
        members = [m for m in archive.getmembers() if m.name.startswith(prefix)]
        if not members:
            raise LlamaServerError(f"{sdist} holds no vendor/llama.cpp; remove it and run the command again")
        archive.extractall(into, members=members, filter="data")
    return into / prefix


def _run_logged(command: list[str], log_file, what: str, env: dict) -> None:
    log_file.write(f"\n$ {' '.join(command)}\n")
    log_file.flush()
    result = subprocess.run(command, stdout=log_file, stderr=subprocess.STDOUT, env=env)
    if result.returncode != 0:
        raise LlamaServerError(f"{what} failed (exit {result.returncode}); see {log_file.name}; {BUILD_HINT}")


def ensure_llama_server(cache_dir: Path, jobs: int | None = None, progress: bool = True) -> Path:
    """The path of the built llama-server, building it first if the cache has none (minutes)."""
    binary = binary_path(cache_dir)
    if is_built(cache_dir):
        return binary
    binary.parent.mkdir(parents=True, exist_ok=True)
    with open(binary.parent / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # two installs at once: the second waits, then finds it built
        if is_built(cache_dir):
            return binary
        cmake, generator = build_tools()
        sdist = ensure_sdist(cache_dir)
        build_log = binary.parent / "build.log"
        started = time.monotonic()
        if progress:
            print(f"== building llama-server {VERSION} from {sdist.name} (once; ~7 min on 2 cores; log {build_log})",
                  file=sys.stderr, flush=True)
        with tempfile.TemporaryDirectory(prefix="llama-server-build-") as tmp, open(build_log, "w") as out:
            source = _unpack_llama_cpp(sdist, Path(tmp))
            build = Path(tmp) / "build"
            env = {**os.environ, "LLAMA_USE_PREBUILT_UI": "OFF"}
            _run_logged([cmake, "-S", str(source), "-B", str(build), *generator, *build_flags()], out,
                        "cmake (configure llama.cpp)", env)
            _run_logged([cmake, "--build", str(build), "--target", "llama-server", "-j", str(jobs or os.cpu_count() or 2)],
                        out, "cmake --build (compile llama-server)", env)
            built = build / "bin" / "llama-server"
            if not built.is_file():
                raise LlamaServerError(f"the build made no {built}; see {build_log}")
            partial = binary.with_name(binary.name + ".part")
            shutil.copy2(built, partial)
            os.chmod(partial, 0o755)
            os.replace(partial, binary)
        _stamp_path(binary).write_text(json.dumps(_stamp()))
        log.info("built %s in %.0f s", binary, time.monotonic() - started)
        if progress:
            print(f"== llama-server built in {time.monotonic() - started:.0f} s: {binary}", file=sys.stderr, flush=True)
        return binary


# --cache-reuse: a prompt whose history was trimmed keeps the chunks it shares with the slot's
# cache (shifted in the KV cache) instead of evaluating from the cut on, as the in-process
# cascade's `shift_cache_to` does; chunks shorter than this are evaluated again.
CACHE_REUSE_TOKENS = 32


@dataclass
class LlamaServer:
    """One llama-server child process serving `model` on `host:port` (127.0.0.1: this machine only)."""

    binary: Path
    model: Path
    port: int
    host: str = "127.0.0.1"
    parallel: int = 4  # -np: slots, requests decoded at once
    context: int = 8192  # -c: the whole KV cache, shared by the slots (context / parallel tokens each)
    threads: int = 2  # -t and -tb
    api_key: str = ""  # given through LLAMA_API_KEY (never on the command line, where ps shows it)
    log_path: Path | None = None  # stdout and stderr appended here (None: inherited)
    extra_args: Sequence[str] = ()
    process: subprocess.Popen | None = field(default=None, init=False)
    starts: int = field(default=0, init=False)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def command(self) -> list[str]:
        return [str(self.binary), "-m", str(self.model), "--host", self.host, "--port", str(self.port),
                "-np", str(self.parallel), "-c", str(self.context), "-t", str(self.threads), "-tb", str(self.threads),
                # read, not mapped: where the CPU has repacking kernels the repacked weights are a
                # copy, and the mapped file would stay resident beside them (agent/runtime/llama_cpu.py)
                "--load-mode", "none",
                "--no-webui", "--cache-reuse", str(CACHE_REUSE_TOKENS), *self.extra_args]

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def start(self, timeout_s: float = 180.0) -> None:
        """Start the process and return once `GET /health` answers 200 (the model is loaded)."""
        if self.running():
            raise RuntimeError(f"llama-server is already running (pid {self.process.pid})")
        env = {**os.environ}
        # libgomp's default wait (spin briefly, then sleep), not the agent's PASSIVE (which a parent
        # process that loaded the models passes on): one context decoding every slot has no other
        # llama.cpp threads to yield to, and sleeping at each of the ~700 barriers of a token made
        # it 88 instead of 56 ms (2 threads, /completion timings, the same GGUF; see the note of the
        # commit that removed it).
        env.pop("OMP_WAIT_POLICY", None)
        env.pop("LLAMA_API_KEY", None)
        if self.api_key:
            env["LLAMA_API_KEY"] = self.api_key
        out = open(self.log_path, "a") if self.log_path is not None else None
        try:
            if out is not None:
                out.write(f"\n=== start {self.starts + 1}: {' '.join(self.command())}\n")
                out.flush()
            self.process = subprocess.Popen(self.command(), stdin=subprocess.DEVNULL, stdout=out,
                                            stderr=subprocess.STDOUT if out is not None else None, env=env,
                                            start_new_session=True)  # a terminal's ^C reaches us, and we stop it
        except OSError as exc:
            raise LlamaServerError(f"cannot start {self.binary}: {exc}; build it with `python run.py engine "
                                   "--build-only`") from exc
        finally:
            if out is not None:
                out.close()
        self.starts += 1
        try:
            self.wait_ready(timeout_s)
        except BaseException:
            self.stop()
            raise

    def wait_ready(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while True:
            if not self.running():
                code = self.process.returncode if self.process is not None else None
                raise LlamaServerError(f"llama-server exited with {code} while starting{self._log_tail()}")
            try:
                with urllib.request.urlopen(self.url + "/health", timeout=2) as response:
                    if response.status == 200:
                        return
            except (urllib.error.URLError, OSError):  # not listening yet, or 503 while the model loads
                pass
            if time.monotonic() > deadline:
                raise LlamaServerError(f"llama-server not ready after {timeout_s:g} s{self._log_tail()}")
            time.sleep(0.2)

    def _log_tail(self) -> str:
        if self.log_path is None or not self.log_path.exists():
            return ""
        return ":\n" + self.log_path.read_text(errors="replace")[-3000:]

    def stop(self, timeout_s: float = 10.0) -> int | None:
        """SIGTERM (llama-server finishes cleanly), SIGKILL after `timeout_s`; the exit status."""
        if self.process is None:
            return None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                log.warning("llama-server (pid %d) ignored SIGTERM for %g s: killing it", self.process.pid, timeout_s)
                self.kill()
        return self.process.returncode

    def kill(self) -> None:
        """SIGKILL: the engine dies at once, mid-answer, with no goodbye."""
        if self.running():
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(10)

    def get(self, path: str, timeout_s: float = 5.0):
        """`GET path` (with the API key) as JSON."""
        headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
        with urllib.request.urlopen(urllib.request.Request(self.url + path, headers=headers), timeout=timeout_s) as r:
            return json.loads(r.read())

    def warm_slots(self, body: dict, timeout_s: float = 120.0) -> list[float]:
        """Evaluate `body` (a chat completion request: the agent's system prompt) in every slot at
        once (`id_slot`), one token each, so every slot's prompt cache holds it; each one's seconds."""
        headers = {"Content-Type": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"

        def warm(slot: int) -> float:
            started = time.perf_counter()
            data = json.dumps({**body, "max_tokens": 1, "stream": False, "id_slot": slot, "cache_prompt": True})
            request = urllib.request.Request(self.url + "/v1/chat/completions", data=data.encode(), headers=headers)
            with urllib.request.urlopen(request, timeout=timeout_s) as response:
                response.read()
            return time.perf_counter() - started

        with ThreadPoolExecutor(self.parallel) as pool:
            return list(pool.map(warm, range(self.parallel)))

