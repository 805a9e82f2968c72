#!/usr/bin/env python3
"""peak_memory.py OUT PATTERN...: every 0.5 s, the memory (PSS and RSS, MB, from
/proc/PID/smaps_rollup) of the processes whose command line contains each PATTERN; on SIGTERM
writes each pattern's peak and the peak of their sum (PSS) to OUT as JSON. PSS counts a shared
page once across processes, so the sum is what the machine really holds."""

from __future__ import annotations

import json
import os
import re
import signal
import sys
import time


def memory_mb(pid: str) -> tuple[float, float] | None:
    try:
        text = open(f"/proc/{pid}/smaps_rollup").read()
    except OSError:
        return None
    pss = re.search(r"^Pss:\s+(\d+)", text, re.M)
    rss = re.search(r"^Rss:\s+(\d+)", text, re.M)
    return (int(pss.group(1)) / 1024, int(rss.group(1)) / 1024) if pss and rss else None


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
                peak[pattern]["pss_mb"] = max(peak[pattern]["pss_mb"], round(sizes[0]))
                peak[pattern]["rss_mb"] = max(peak[pattern]["rss_mb"], round(sizes[1]))
                total += sizes[0]
        state["sum_pss_mb"] = max(state["sum_pss_mb"], round(total))
        state["samples"] += 1
        time.sleep(0.5)


if __name__ == "__main__":
    main()
