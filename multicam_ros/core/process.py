"""What a node process does about its own place on the host. ROS-free, Linux first.

``lower_cpu_priority`` raises the nice value of every thread of this process: on Linux nice is
per thread, so setting it for the process id alone would leave the threads that rclpy, Fast
DDS and FFmpeg already started at the old priority. Threads started afterwards inherit it.
"""
from __future__ import annotations

import os


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
