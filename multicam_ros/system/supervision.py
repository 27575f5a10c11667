"""The one supervision policy: what a starter does when one of the system's processes exits.

Both starters follow it, `multicam-ros launch` (system/supervisor.py) and
`ros2 launch multicam_ros cams.launch.py`, so they cannot behave differently. Each supervised
process has a `Supervision` (its kind's `ExitRule`, its restart delays, its count of fast
failures); `Supervision.after_exit` turns each exit into a `Decision`:

- exit code CONFIG_ERROR_EXIT (2: the node's ConfigError, ros/node_main.py run_node) means the
  node can never work as configured, so it is never restarted: a camera is marked failed
  (`Action.MARK_FAILED`, its message in the log and the status table) and the others go on;
  the detector stops the system (`Action.STOP_SYSTEM`) with the system exit code 2;
- any other exit (a crash, a signal such as the kernel's out-of-memory SIGKILL, an exit code 1
  or 0) restarts the process (`Action.RESTART`) after a delay that starts at
  RESTART_DELAY_MIN_S and doubles while it keeps exiting, up to RESTART_DELAY_MAX_S;
- a run that lasted STABLE_RUN_S or more was a working run: the delays start again from the
  minimum and the count of fast failures from zero. A shorter one is a fast failure;
- the detector gives up after DETECTOR_FAST_FAILURES_MAX fast failures in a row: the system
  stops with exit code 1 and the reason (its last output shows why). Restarting a detector
  that cannot load its model (out of memory, a broken GPU) only hides the fault, and nothing
  works without it. A camera never gives up (`CAMERA_RULE`): cameras come back after power
  cuts and network faults, and a retry every RESTART_DELAY_MAX_S costs nothing.

Why these numbers: the first restart comes after 1 s (a killed camera is back in about 3 s,
its reconnect included); 30 s caps the retry period of a camera that is gone for good, and is
also what a working detector outlives (loading NanoDet-g on a CPU takes about 10 s, so a
detector that dies within 30 s of its start did not get going). Five fast failures take about
15 s of delays (1 + 2 + 4 + 8) plus five starts: under a minute to a clear stop, long enough to
ride out one transient fault.

No orphans: each starter sets PARENT_PID_ENV in every node's environment to its own pid
(`parent_pid_environment`); a node that sees it asks the kernel for SIGTERM when that parent
dies (core/process.py), so a starter killed with SIGKILL takes its nodes with it. ROS-free.
"""
import enum
import os
import signal
from dataclasses import dataclass
from typing import Dict, Optional

from multicam_ros.core.capture import Backoff
from multicam_ros.core.process import EXIT_CONFIG, PARENT_PID_ENV
from multicam_ros.system.executables import CAMERA_EXECUTABLE, DETECTOR_EXECUTABLE

RESTART_DELAY_MIN_S = 1.0
RESTART_DELAY_MAX_S = 30.0
STABLE_RUN_S = 30.0  # a run this long resets the delays; a shorter one is a fast failure
DETECTOR_FAST_FAILURES_MAX = 5  # fast failures in a row after which the detector gives up
CONFIG_ERROR_EXIT = EXIT_CONFIG  # a node's exit code for a configuration error (node_main)

# The system exit codes of a stop that the policy decides (the starter's other codes are its
# own: system/supervisor.py).
EXIT_FAILED = 1  # the detector failed DETECTOR_FAST_FAILURES_MAX times in a row


class Action(str, enum.Enum):
    """What a starter does after a process exited."""

    RESTART = 'restart'  # start it again after Decision.delay_s
    MARK_FAILED = 'mark_failed'  # never start it again; the others go on
    STOP_SYSTEM = 'stop_system'  # stop every process; exit with Decision.exit_code


@dataclass(frozen=True)
class ExitRule:
    """What the exits of one kind of process lead to."""

    on_config_error: Action  # MARK_FAILED or STOP_SYSTEM
    fast_failures_max: Optional[int]  # give up (STOP_SYSTEM) after this many; None: never


CAMERA_RULE = ExitRule(on_config_error=Action.MARK_FAILED, fast_failures_max=None)
DETECTOR_RULE = ExitRule(on_config_error=Action.STOP_SYSTEM,
                         fast_failures_max=DETECTOR_FAST_FAILURES_MAX)
EXIT_RULES = {CAMERA_EXECUTABLE: CAMERA_RULE, DETECTOR_EXECUTABLE: DETECTOR_RULE}


@dataclass(frozen=True)
class Decision:
    """The policy's answer to one exit."""

    action: Action
    reason: str  # for people: what happened, e.g. 'killed by SIGKILL after 2.1 s'
    delay_s: float = 0.0  # RESTART: seconds to wait before starting again
    exit_code: int = 0  # STOP_SYSTEM: the system's exit code


def describe_exit(code: int) -> str:
    """A return code as people read it: 'exit code 2' or 'killed by SIGKILL' (negative codes
    are signals, as subprocess and launch report them)."""
    if code < 0:
        try:
            return f'killed by {signal.Signals(-code).name}'
        except ValueError:
            return f'killed by signal {-code}'
    return f'exit code {code}'


class Supervision:
    """The policy applied to one supervised process over its whole life: its restart delays
    (doubling, no jitter: a person reads them in the log) and its fast failures in a row."""

    def __init__(self, rule: ExitRule) -> None:
        self.rule = rule
        self._backoff = Backoff(RESTART_DELAY_MIN_S, RESTART_DELAY_MAX_S, jitter_fraction=0.0)
        self.fast_failures = 0

    def after_exit(self, code: int, ran_s: float) -> Decision:
        """The decision for a process that ended with return code `code` after running `ran_s`
        seconds."""
        reason = f'{describe_exit(code)} after {ran_s:.1f} s'
        if code == CONFIG_ERROR_EXIT:
            reason = f'configuration error ({reason})'
            if self.rule.on_config_error is Action.STOP_SYSTEM:
                return Decision(Action.STOP_SYSTEM, reason, exit_code=EXIT_CONFIG)
            return Decision(self.rule.on_config_error, reason)
        if ran_s >= STABLE_RUN_S:
            self._backoff.reset()
            self.fast_failures = 0
        else:
            self.fast_failures += 1
        limit = self.rule.fast_failures_max
        if limit is not None and self.fast_failures >= limit:
            return Decision(Action.STOP_SYSTEM, f'{self.fast_failures} fast failures in a row '
                            f'(each within {STABLE_RUN_S:g} s of its start), the last: {reason}',
                            exit_code=EXIT_FAILED)
        return Decision(Action.RESTART, reason, delay_s=self._backoff.next_delay_s())


def parent_pid_environment(pid: Optional[int] = None) -> Dict[str, str]:
    """The variable that ties a node to its starter (`pid`, default this process): the node
    ends when that process dies, however it dies."""
    return {PARENT_PID_ENV: str(os.getpid() if pid is None else pid)}
