"""Memory of the running process, for the benchmarks (Linux ``/proc``)."""

from __future__ import annotations


def rss_kib() -> int:
    """Resident set size of this process in KiB (0 where ``/proc`` is missing)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0
