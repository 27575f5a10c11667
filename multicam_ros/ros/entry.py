"""Where a node process starts: its stop signals first, then its modules.

Importing a node's module takes 1-3 s (rclpy, OpenCV, torch); a SIGINT or SIGTERM in that time
would end the process the default way (a KeyboardInterrupt traceback, or death by SIGTERM). So
the node executables enter here: this module imports nothing heavy, installs the process's
StopSignals (which at this point only record a signal), then imports the node's module and runs
its main; run_node sees a recorded signal before it starts the node, and exits 0.

    camera_node --ros-args ...                                   (console script)
    python -m multicam_ros.ros.entry camera_node --ros-args ...  (what the supervisor runs)
"""
import importlib
import sys
from typing import List, Optional

from multicam_ros.core.process import catch_stop_signals
from multicam_ros.system.executables import (CAMERA_EXECUTABLE, DETECTOR_EXECUTABLE,
                                             NODE_MODULES)


def start(executable: str, args: Optional[List[str]] = None) -> int:
    """Run node executable `executable` (a key of NODE_MODULES); its exit code."""
    catch_stop_signals()
    return importlib.import_module(NODE_MODULES[executable]).main(args)


def camera_node() -> int:
    return start(CAMERA_EXECUTABLE)


def detector_node() -> int:
    return start(DETECTOR_EXECUTABLE)


def main() -> int:
    if len(sys.argv) < 2 or sys.argv[1] not in NODE_MODULES:
        print(f'usage: python -m multicam_ros.ros.entry {{{",".join(NODE_MODULES)}}} '
              '[--ros-args ...]', file=sys.stderr)
        return 2
    return start(sys.argv.pop(1))


if __name__ == '__main__':
    sys.exit(main())
