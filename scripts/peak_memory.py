#!/usr/bin/env python3
"""peak_memory.py OUT PATTERN...: every 0.5 s, the memory (PSS and RSS, MB, from
/proc/PID/smaps_rollup) of the processes whose command line contains each PATTERN; on SIGTERM
writes each pattern's peak and the peak of their sum (PSS) to OUT as JSON. PSS counts a shared
page once across processes, so the sum is what the machine really holds."""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.memory import memory_mb  # noqa: E402


def main() -> None:
    out, patterns = sys.argv[1], sys.argv[2:]
    peak = {pattern: {"pss_mb": 0, "rss_mb": 0} for pattern in patterns}
    state = {"sum_pss_mb": 0, "samples": 0}

    def write(*_) -> None:
        with open(out, "w") as f:
            json.dump({"peak": peak, "peak_sum_pss_mb": state["sum_pss_mb"], "samples": state["samples"]}, f, indent=1)
        sys.exit(0)

    signal.signal(signal.SIGTERM, write)
    me = str(os.getpid())
    while True:
        total = 0.0
        for pid in filter(str.isdigit, os.listdir("/proc")):
            if pid == me:
                continue
            try:
                command = open(f"/proc/{pid}/cmdline").read().replace("\0", " ")
            except OSError:
                continue
            pattern = next((p for p in patterns if p in command), None)
            sizes = memory_mb(pid) if pattern else None
            if sizes:
                for key in ("pss_mb", "rss_mb"):
                    peak[pattern][key] = max(peak[pattern][key], sizes[key])
                total += sizes["pss_mb"]
        state["sum_pss_mb"] = max(state["sum_pss_mb"], round(total))
        state["samples"] += 1
        time.sleep(0.5)


if __name__ == "__main__":
    main()
