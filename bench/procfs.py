"""CPU time of processes, read from /proc: what the benchmarks charge to each server."""

from __future__ import annotations

import os


def proc_table(with_reaped_children: bool = False) -> dict[int, tuple[int, int, str]]:
    """pid -> (ppid, clock ticks, state). Ticks are utime+stime, plus the reaped children's
    cutime+cstime when asked (a process tree's total then survives its children exiting)."""
    table: dict[int, tuple[int, int, str]] = {}
    try:
        entries = list(os.scandir("/proc"))
    except OSError:
        return table
    last = 15 if with_reaped_children else 13
    for entry in entries:
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", encoding="ascii", errors="replace") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        # after the command name: state ppid ... utime stime cutime cstime (12th-15th)
        table[int(entry.name)] = (int(fields[1]), sum(int(x) for x in fields[11:last]), fields[0])
    return table


def cpu_busy_ticks() -> int | None:
    """Busy clock ticks of all CPUs together since boot, from /proc/stat: all but idle and
    iowait, no guest (None where unreadable)."""
    try:
        with open("/proc/stat", encoding="ascii") as f:
            fields = [int(x) for x in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    return sum(fields[:8]) - fields[3] - fields[4]


def cpu_busy_seconds() -> float | None:
    """The same, in seconds."""
    ticks = cpu_busy_ticks()
    return None if ticks is None else ticks / os.sysconf("SC_CLK_TCK")
