"""The one supervision policy: what a starter does when one of the system's processes exits.

Both starters follow it, `multicam-ros launch` (system/supervisor.py) and
`ros2 launch multicam_ros cams.launch.py`, so they cannot behave differently. A camera process
that exits is started again (`OnExit.RESTART`) after a delay that starts at RESTART_DELAY_MIN_S
and doubles while it keeps exiting, up to RESTART_DELAY_MAX_S; a run of STABLE_RUN_S or more
starts the delays from the minimum again. The detector's exit stops the whole system
(`OnExit.STOP_SYSTEM`): there is nothing left to serve the cameras, and its last output says
why. ROS-free.
"""
import enum

from multicam_ros.core.capture import Backoff
from multicam_ros.system.executables import CAMERA_EXECUTABLE, DETECTOR_EXECUTABLE

RESTART_DELAY_MIN_S = 1.0
RESTART_DELAY_MAX_S = 30.0
STABLE_RUN_S = 30.0


class OnExit(str, enum.Enum):
    """What happens when a node's process exits."""

    RESTART = 'restart'  # start it again after RestartDelay's delay
    STOP_SYSTEM = 'stop_system'  # stop every process of the system


ON_EXIT = {CAMERA_EXECUTABLE: OnExit.RESTART, DETECTOR_EXECUTABLE: OnExit.STOP_SYSTEM}


class RestartDelay:
    """The delays before the restarts of one process: doubling from RESTART_DELAY_MIN_S to
    RESTART_DELAY_MAX_S (no jitter: a person reads them in the log), reset by a stable run.
    One per supervised process."""

    def __init__(self) -> None:
        self._backoff = Backoff(RESTART_DELAY_MIN_S, RESTART_DELAY_MAX_S, jitter_fraction=0.0)

    def after_exit(self, ran_s: float) -> float:
        """Seconds to wait before starting again a process that exited after running
        `ran_s` seconds."""
        if ran_s >= STABLE_RUN_S:
            self._backoff.reset()
        return self._backoff.next_delay_s()
