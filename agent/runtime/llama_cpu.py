"""llama.cpp on this CPU: how to build it, and whether its extra weight buffers may be used.

On a CPU that advertises Intel AMX (`amx_tile` in /proc/cpuinfo: Sapphire Rapids and later Xeons),
inside the Firecracker VMs this project's machines run in, llama.cpp 0.3.36 built with
`-march=native` (which compiles its AMX kernels) crashed (SIGSEGV in `llama_decode`) on the first
prompt of more than one token, in process and in llama-server alike, and ran with its extra
buffer types turned off (`use_extra_bufts = false`, llama-server's `--no-repack`). Measured on
2026-12-04 with a 9-token prompt on the project's GGUF.

Built without the AMX kernels (`cmake_args`: the same instruction sets named one by one, AMX
left out), the repacked weights work there and are faster: on that machine, the project's GGUF
decodes a token in 108 ms on 1 thread against 157 ms without repacking, and four sequences'
tokens in one step in 100 ms on 2 threads against 172 ms (`llama-batched-bench -npp 16 -ntg 16
-npl 1,2,4 -t N -tb N [--no-repack]`, built from the pinned sdist with these arguments; prompt
evaluation is ~15% slower with repacking, 121 vs 142 tokens/s for four 16-token prompts on 2
threads). `./dev.sh install` builds llama-cpp-python with `CMAKE_ARGS` from here, and
llama-server is built with them too. On other CPUs (the AMD EPYC machines CI has run on) the
build stays native and repacking stays on, as llama.cpp chooses.

Repacked weights are a copy: llama.cpp reads the tensors it repacks from the mapped GGUF into
buffers of its own, and the mapped pages it read stay resident beside them. So where it repacks,
the model is read into memory rather than mapped (`map_weights`, and llama-server's
`--load-mode none`): the in-process batched cascade with four slots holds 1427 MB (PSS) instead
of 2017 MB, loads in 1.3 s instead of 0.9 s and decodes as fast (four answers together in 2.29
s against 2.23; `.venv/bin/python scripts/llama_load_mode.py`, 2026-12-06). Processes no longer
share the GGUF's pages: from three processes of one model on a machine, mapped would hold less
in all (each ~0.87 GB of its own plus a share of the 1.06 GB file, against ~1.34 GB read).

`python agent/runtime/llama_cpu.py` prints the arguments (for `CMAKE_ARGS`; nothing on a CPU
without AMX). It imports nothing but the standard library, so it runs before any install.
"""

from __future__ import annotations

import functools
from pathlib import Path

CPUINFO = Path("/proc/cpuinfo")

# /proc/cpuinfo flag -> the ggml CMake option that compiles for it (ggml/CMakeLists.txt)
INSTRUCTION_SETS = (
    ("sse4_2", "GGML_SSE42"), ("avx", "GGML_AVX"), ("avx2", "GGML_AVX2"), ("fma", "GGML_FMA"),
    ("f16c", "GGML_F16C"), ("bmi2", "GGML_BMI2"), ("avx_vnni", "GGML_AVX_VNNI"), ("avx512f", "GGML_AVX512"),
    ("avx512vbmi", "GGML_AVX512_VBMI"), ("avx512_vnni", "GGML_AVX512_VNNI"), ("avx512_bf16", "GGML_AVX512_BF16"),
)


def cpu_flags(cpuinfo: Path = CPUINFO) -> frozenset[str]:
    """The CPU's feature flags (empty when unknown)."""
    try:
        text = cpuinfo.read_text()
    except OSError:
        return frozenset()
    return frozenset(next((line.split(":", 1)[1].split() for line in text.splitlines()
                           if line.startswith("flags")), []))


def has_amx(cpuinfo: Path = CPUINFO) -> bool:
    return "amx_tile" in cpu_flags(cpuinfo)


def cmake_args(cpuinfo: Path = CPUINFO) -> list[str]:
    """CMake arguments that build llama.cpp for this CPU without its AMX kernels ([]: a native
    build, on a CPU without AMX)."""
    flags = cpu_flags(cpuinfo)
    if "amx_tile" not in flags:
        return []
    return ["-DGGML_NATIVE=OFF", *(f"-D{option}={'ON' if flag in flags else 'OFF'}" for flag, option in INSTRUCTION_SETS),
            "-DGGML_AMX_TILE=OFF", "-DGGML_AMX_INT8=OFF", "-DGGML_AMX_BF16=OFF"]


def built_with_amx(system_info: str) -> bool:
    """Whether a llama.cpp build runs AMX kernels, from its `llama_print_system_info()`."""
    return "AMX_INT8 = 1" in system_info


@functools.cache
def extra_buffers_safe(cpuinfo: Path = CPUINFO) -> bool:
    """False for the in-process llama.cpp on a CPU with AMX when it was built with the AMX
    kernels (see the module docstring); True elsewhere or when unknown."""
    if not has_amx(cpuinfo):
        return True
    from llama_cpp import llama_cpp

    return not built_with_amx(llama_cpp.llama_print_system_info().decode(errors="replace"))


def map_weights() -> bool:
    """Whether the in-process llama.cpp should map the GGUF (mmap) rather than read it into
    memory: only where its extra buffers (the repacked weights) are off (see the module docstring)."""
    return not extra_buffers_safe()


if __name__ == "__main__":
    print(" ".join(cmake_args()))
