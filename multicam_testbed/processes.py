"""Processes seen through /proc, for the tests and the benchmarks: whether one is alive, its
command line, and the processes a run marked with an environment variable (found however they
were re-parented). Linux only, like the nodes' own process handling."""
import os
from pathlib import Path
from typing import List, Optional


def stat_fields(pid: int) -> Optional[List[str]]:
    """Fields of /proc/<pid>/stat after the command name (the state first, then the parent
    pid, ...), or None when there is no such process."""
    try:
        text = Path(f'/proc/{pid}/stat').read_text()
    except OSError:
        return None
    return text[text.rfind(')') + 2:].split()


def alive(pid: int) -> bool:
    """True if `pid` is a live (not zombie) process."""
    fields = stat_fields(pid)
    return fields is not None and fields[0] != 'Z'


def cmdline(pid: int) -> List[str]:
    """The arguments of process `pid` ([] when it is gone)."""
    try:
        raw = Path(f'/proc/{pid}/cmdline').read_bytes()
    except OSError:
        return []
    return [part.decode('utf-8', 'replace') for part in raw.split(b'\0') if part]


def other_pids() -> List[int]:
    """Every process id in /proc but this process's own."""
    return [int(entry) for entry in os.listdir('/proc')
            if entry.isdigit() and int(entry) != os.getpid()]


def environ_value(pid: int, variable: str) -> Optional[str]:
    """The value of `variable` in the environment process `pid` started with, or None."""
    prefix = f'{variable}='.encode()
    try:
        environ = Path(f'/proc/{pid}/environ').read_bytes()
    except OSError:
        return None
    for item in environ.split(b'\0'):
        if item.startswith(prefix):
            return item[len(prefix):].decode('utf-8', 'replace')
    return None


def marked_pids(variable: str, mark: str) -> List[int]:
    """Live processes other than this one whose environment holds `variable`=`mark`."""
    return [pid for pid in other_pids() if environ_value(pid, variable) == mark and alive(pid)]
