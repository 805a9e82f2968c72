"""llama.cpp on this CPU: whether its extra weight buffers (AMX tiles, repacked weights) may be used.

On a CPU that advertises Intel AMX (`amx_tile` in /proc/cpuinfo: Sapphire Rapids and later Xeons),
inside the Firecracker VMs this project's machines run in, llama.cpp 0.3.36 built with
`-march=native` crashed (SIGSEGV in `llama_decode`) on the first prompt of more than one token,
in process and in llama-server alike, and ran normally with its extra buffer types turned off
(`use_extra_bufts = false`, llama-server's `--no-repack`). Measured on 2026-12-04 with a 9-token
prompt on the project's GGUF (`python -c` over `Llama.create_completion`, and `curl` to
llama-server's /completion). On other CPUs (the AMD EPYC machines CI has run on) repacking stays
on: it is what llama.cpp chooses there, and it worked.
"""

from __future__ import annotations

import functools
from pathlib import Path

CPUINFO = Path("/proc/cpuinfo")


@functools.cache
def extra_buffers_safe(cpuinfo: Path = CPUINFO) -> bool:
    """False on a CPU with AMX (see the module docstring); True elsewhere or when unknown."""
    try:
        text = cpuinfo.read_text()
    except OSError:
        return True
    flags = next((line.split(":", 1)[1].split() for line in text.splitlines() if line.startswith("flags")), [])
    return "amx_tile" not in flags
