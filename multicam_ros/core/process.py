"""What a node process does about its own place on the host. ROS-free, Linux first.

``lower_cpu_priority`` raises the nice value of every thread of this process: on Linux nice is
per thread, so setting it for the process id alone would leave the threads that rclpy, Fast
DDS and FFmpeg already started at the old priority. Threads started afterwards inherit it.

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
from typing import Any, Mapping, Optional


def lower_cpu_priority(increment: int) -> int:
    """Add ``increment`` (>= 0) to the nice value of every thread; return the new value of the
    calling thread. Only ever lowers the priority, which needs no privilege."""
    if increment < 0:
        raise ValueError(f'lower_cpu_priority needs an increment >= 0, got {increment}')
    current = os.getpriority(os.PRIO_PROCESS, 0)
    if increment == 0:
        return current
    target = min(19, current + increment)
    try:
        threads = [int(tid) for tid in os.listdir('/proc/self/task')]
    except OSError:  # no /proc (not Linux): the process id stands for the process
        threads = [0]
    for tid in threads:
        try:
            if os.getpriority(os.PRIO_PROCESS, tid) < target:
                os.setpriority(os.PRIO_PROCESS, tid, target)
        except ProcessLookupError:  # that thread has ended meanwhile
            pass
    return os.getpriority(os.PRIO_PROCESS, 0)


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
