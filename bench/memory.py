"""What a process holds in memory, from /proc/PID/smaps_rollup (Linux): PSS (each shared page
divided among the processes that map it, so the PSS of several processes adds up to what they
hold together) and RSS, in MB."""

from __future__ import annotations

import os
import re


def memory_mb(pid: int | str | None = None) -> dict[str, int] | None:
    """{"pss_mb", "rss_mb"} of `pid` (None: this process), or None when it cannot be read."""
    try:
        with open(f"/proc/{pid or os.getpid()}/smaps_rollup") as f:
            text = f.read()
    except OSError:
        return None
    pss, rss = re.search(r"^Pss:\s+(\d+)", text, re.M), re.search(r"^Rss:\s+(\d+)", text, re.M)
    if not pss or not rss:
        return None
    return {"pss_mb": round(int(pss.group(1)) / 1024), "rss_mb": round(int(rss.group(1)) / 1024)}
