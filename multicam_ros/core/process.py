"""What a node process does about its own place on the host. ROS-free, Linux first.

``pin_to_cpus`` keeps every thread of this process on the CPUs of a node's `cpu_affinity`
parameter: on Linux affinity is per thread, so setting it for the calling thread alone would
leave the threads that rclpy, Fast DDS, torch or FFmpeg already started everywhere. Threads
started afterwards inherit it.

``catch_stop_signals`` turns SIGINT and SIGTERM into a request to stop that a node honours at
any moment without a traceback (ros/node_main.py run_node). ``exit_with_parent`` makes a node
end when the launcher that started it dies, however it dies: the launcher puts its pid in
PARENT_PID_ENV, the node asks the kernel for SIGTERM at the parent's death (Linux
PR_SET_PDEATHSIG) and checks that the parent is still there.
"""
from __future__ import annotations

import os
import signal
import sys
import threading
from typing import Any, FrozenSet, Iterable, List, Mapping, Optional, Set

from multicam_ros.core.settings import ConfigError

MAX_CPUS = 4096
CPU_LIST_WORDS = "a Linux CPU list such as '0-3' or '0,2,4-7' (empty: every CPU)"


def parse_cpu_list(text: str, key: str) -> FrozenSet[int]:
    """'0-3,8' -> {0, 1, 2, 3, 8}; '' -> the empty set (no change). ConfigError naming `key`
    for anything else."""
    cpus: Set[int] = set()
    if not text.strip():
        return frozenset()
    for part in text.split(','):
        low, dash, high = part.strip().partition('-')
        try:
            first = int(low)
            last = int(high) if dash else first
        except ValueError:
            raise ConfigError.of(key, f'{text!r}: {part.strip()!r} is not a CPU number or '
                                 'range', CPU_LIST_WORDS) from None
        if not 0 <= first <= last < MAX_CPUS:
            raise ConfigError.of(key, f'{text!r}: {part.strip()!r} is not a range of CPU '
                                 f'numbers from 0 to {MAX_CPUS - 1}', CPU_LIST_WORDS)
        cpus.update(range(first, last + 1))
    return frozenset(cpus)


def cpu_list_text(cpus: Iterable[int]) -> str:
    """{0, 1, 2, 3, 8} -> '0-3,8'."""
    parts: List[str] = []
    for cpu in sorted(cpus):
        if parts and cpu == int(parts[-1].rpartition('-')[2]) + 1:
            parts[-1] = f'{parts[-1].partition("-")[0]}-{cpu}'
        else:
            parts.append(str(cpu))
    return ','.join(parts)


def pin_to_cpus(text: str, key: str) -> FrozenSet[int]:
    """Let every thread of this process run only on the CPUs of `text` (a CPU list; empty
    changes nothing); threads started later inherit it. Returns the CPUs. ConfigError naming
    `key` when the list is malformed or names a CPU this process may not use."""
    cpus = parse_cpu_list(text, key)
    if not cpus:
        return cpus
    if not hasattr(os, 'sched_setaffinity'):
        raise ConfigError.of(key, f'{text!r}: CPU affinity is not supported on this system',
                             "'' (empty)")
    allowed = os.sched_getaffinity(0)
    if not cpus <= allowed:
        raise ConfigError.of(key, f'{text!r} names CPU {cpu_list_text(cpus - allowed)}, which '
                             'this process may not use',
                             f'CPUs among {cpu_list_text(allowed)}, as {CPU_LIST_WORDS}')
    try:
        threads = [int(tid) for tid in os.listdir('/proc/self/task')]
    except OSError:  # no /proc: the calling thread stands for the process
        threads = [0]
    for tid in threads:
        try:
            os.sched_setaffinity(tid, cpus)
        except ProcessLookupError:  # that thread has ended meanwhile
            pass
    return cpus


# -- no orphans -------------------------------------------------------------------------------

# The exit code of a configuration error: a node's (ros/node_main.py) and the launcher's; never
# restarted (system/supervision.py).
EXIT_CONFIG = 2
PARENT_PID_ENV = 'MULTICAM_ROS_PARENT_PID'
_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def _set_parent_death_signal(sig: int) -> bool:
    """prctl(PR_SET_PDEATHSIG, sig): the kernel sends ``sig`` to this process when the thread
    that forked it ends. True if the kernel took it."""
    import ctypes
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        prctl = libc.prctl
    except (OSError, AttributeError):
        return False
    prctl.restype = ctypes.c_int
    prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong,
                      ctypes.c_ulong]
    return prctl(_PR_SET_PDEATHSIG, int(sig), 0, 0, 0) == 0


def expected_parent_pid(environ: Optional[Mapping[str, str]] = None) -> Optional[int]:
    """The pid in PARENT_PID_ENV (the launcher that started this process), or None when the
    variable is unset, empty or not a pid above 1."""
    environ = os.environ if environ is None else environ
    text = environ.get(PARENT_PID_ENV, '').strip()
    if not text.isdigit() or int(text) <= 1:
        return None
    return int(text)


def _process_alive(pid: int) -> bool:
    """True if ``pid`` is a live process (a zombie is not: it has died, only its exit status
    waits to be collected, and its children are re-parented already)."""
    try:
        with open(f'/proc/{pid}/stat', 'rb') as stat:
            return stat.read().rsplit(b')', 1)[1].split()[0] != b'Z'
    except (OSError, IndexError):
        pass
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def exit_with_parent(environ: Optional[Mapping[str, str]] = None,
                     sig: int = signal.SIGTERM) -> bool:
    """Tie this process's life to the launcher named in PARENT_PID_ENV, however it dies
    (SIGKILL included): ask the kernel for ``sig`` when the parent dies (Linux
    PR_SET_PDEATHSIG; a no-op elsewhere and when the variable is unset). Call it first thing,
    once the stop signals are handled.

    Returns False when that launcher is already gone: it died before the request took effect,
    so no signal will come (``os.getppid()`` is no longer its pid and it is not alive); the
    caller should stop at once, cleanly. True otherwise, also when the launcher lives but is
    not the direct parent (a wrapper such as a launch prefix sits between them; the signal then
    ties this process to the wrapper).

    The kernel sends the signal when the *thread* that started this process ends, so a launcher
    must start nodes from a thread that lives as long as it does (its main thread).
    """
    parent = expected_parent_pid(environ)
    if parent is None or not sys.platform.startswith('linux'):
        return True
    _set_parent_death_signal(sig)
    # Checked after the request: a parent that dies from now on sends the signal.
    if os.getppid() == parent:
        return True
    return _process_alive(parent)


def flush_native_output() -> None:
    """fflush(NULL): hand to the file descriptors what native code (OpenCV, FFmpeg) left in C
    stdio buffers (stdout is block-buffered when it is a pipe or a file). A normal exit does
    this; os._exit does not, so call it first."""
    import ctypes
    try:
        ctypes.CDLL(None).fflush(None)
    except (OSError, AttributeError):
        pass


# -- stop signals -------------------------------------------------------------------------------

class StopRequested(KeyboardInterrupt):
    """SIGINT or SIGTERM while a node is being made: ends its start-up at once. A
    KeyboardInterrupt, so that code which lets Ctrl-C through lets this through as well."""


class StopSignals:
    """SIGINT and SIGTERM as a request to stop, whenever they come (Python handlers, run in
    the main thread).

    While ``interruptible`` (a node's constructor, which may take seconds loading a model), the
    first signal raises StopRequested there; at any other moment a signal is only recorded
    (``received``), so that no exception lands in the middle of rclpy's executor, of a
    clean-up or of the interpreter's exit. rclpy's own handlers, when installed afterwards,
    call the handler they replaced, so this one still sees every signal. Further signals while
    stopping change nothing: the stop itself is bounded (a launcher that waited long enough
    sends SIGKILL).
    """

    def __init__(self, install: bool = True) -> None:
        self.received: Optional[int] = None
        self.interruptible = False
        if install:
            for sig in (signal.SIGINT, signal.SIGTERM):
                signal.signal(sig, self._on_signal)

    def _on_signal(self, signum: int, _frame: Any) -> None:
        first = self.received is None
        self.received = signum
        if first and self.interruptible:
            self.interruptible = False
            raise StopRequested(signal.Signals(signum).name)

    @property
    def stopping(self) -> bool:
        """True once SIGINT or SIGTERM came."""
        return self.received is not None


# Signal dispositions belong to the process, so the one StopSignals does too.
_process_stop_signals: Optional[StopSignals] = None


def catch_stop_signals() -> StopSignals:
    """Install this process's StopSignals (once; later calls return the same one). Call it from
    the main thread as early as possible: a signal before it ends the process the default way
    (a KeyboardInterrupt traceback for SIGINT, death by SIGTERM). From another thread (where
    Python allows no signal handlers) it returns one that installs nothing and never fires."""
    global _process_stop_signals
    if _process_stop_signals is not None:
        return _process_stop_signals
    if threading.current_thread() is not threading.main_thread():
        return StopSignals(install=False)
    _process_stop_signals = StopSignals()
    return _process_stop_signals
