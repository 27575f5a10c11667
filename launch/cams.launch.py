"""Start the multicam_ros system from one YAML file: one camera_node per camera, one detector.

    ros2 launch multicam_ros cams.launch.py config:=my_cams.yaml [detector:=false] \
        [log_level:=debug]

A thin adapter over the ROS-free bring-up, which `multicam-ros launch` uses too:
multicam_ros.system.plan.node_plan decides every node, name, namespace, parameter and
environment variable, and multicam_ros.system.supervision decides what happens when a process
exits. This file maps each planned node onto a launch_ros Node and applies that policy with
launch's own tools: when a process exits, an OnProcessExit handler asks the policy, and either
starts a fresh Node after the policy's delay (a TimerAction), or marks a camera with a
configuration error failed (the others go on), or ends the launch with an error (the detector's
configuration error, or its fast failures in a row), which makes `ros2 launch` exit non-zero.

Why not launch_ros's `respawn=True, respawn_delay=...`: on Humble, Jazzy and Rolling it
respawns after every exit, whatever the exit code (a configuration error too, forever), after
one fixed delay (no doubling, no reset after a stable run), and `respawn_max_retries` (not on
Humble) counts all exits of the launch's life rather than fast failures in a row.

Every node gets the environment of plan.process_environment (a camera's password variable
reaches only that camera) and PARENT_PID_ENV set to this process's pid: the launch file runs
inside the `ros2 launch` process, which starts the nodes as its direct children, so a SIGKILLed
`ros2 launch` takes them with it (supervision.py). Dead shared-memory frame segments that a
killed run left are removed at start. An invalid file raises ConfigError before any process
starts.
"""
import os
import time
from typing import Any, Dict, List, Mapping, Optional

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, LogInfo, OpaqueFunction, \
    RegisterEventHandler, TimerAction
from launch.event_handlers import OnProcessExit
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

from multicam_ros.core.shm_frames import remove_stale_segments
from multicam_ros.system.config import load_config
from multicam_ros.system.executables import PACKAGE
from multicam_ros.system.plan import LOG_LEVELS, Plan, PlannedNode, node_plan, \
    parse_log_level, parse_switch
from multicam_ros.system.supervision import Action, Supervision, parent_pid_environment


class SystemStopped(RuntimeError):
    """Raised inside the launch to end it with an error: `ros2 launch` logs the message and
    exits with code 1 (launch has no other way to set its exit code)."""


def node_environment(plan: Plan, planned: PlannedNode, context: Any) -> Dict[str, str]:
    """The whole environment of one node's process, from the launch's environment now."""
    environment: Optional[Mapping[str, str]] = getattr(context, 'environment', None)
    if environment is None:  # a context without one (older launch): this process's
        environment = os.environ
    return {**plan.process_environment(planned, environment), **parent_pid_environment()}


def node_action(plan: Plan, planned: PlannedNode, log_level: str, context: Any) -> Node:
    """The launch_ros Node of one planned node, field for field."""
    return Node(
        package=planned.package, executable=planned.executable, name=planned.name,
        namespace=planned.namespace, parameters=[dict(planned.parameters)],
        env=node_environment(plan, planned, context),
        ros_arguments=['--log-level', log_level], output='screen')


class Supervised:
    """Keeps one planned node running under the supervision policy: each time its process
    exits, the policy decides (unless the launch is shutting down)."""

    def __init__(self, plan: Plan, planned: PlannedNode, log_level: str) -> None:
        self._plan = plan
        self._planned = planned
        self._log_level = log_level
        self._supervision = Supervision(planned.on_exit)
        self._started_s = 0.0

    def start(self, context: Any) -> List[Any]:
        """A fresh Node and the handler of its exit (an OpaqueFunction's function)."""
        node = node_action(self._plan, self._planned, self._log_level, context)
        self._started_s = time.monotonic()
        return [RegisterEventHandler(OnProcessExit(target_action=node, on_exit=self._exited,
                                                   handle_once=True)), node]

    def _exited(self, event: Any, context: Any) -> List[Any]:
        if context.is_shutdown:
            return []
        decision = self._supervision.after_exit(event.returncode,
                                                time.monotonic() - self._started_s)
        fqn = self._planned.fqn
        if decision.action is Action.RESTART:
            return [LogInfo(msg=f'{fqn} exited ({decision.reason}); restarting in '
                                f'{decision.delay_s:.1f} s'),
                    TimerAction(period=decision.delay_s,
                                actions=[OpaqueFunction(function=self.start)])]
        if decision.action is Action.MARK_FAILED:
            return [LogInfo(msg=f'error: {fqn} failed, not restarted: {decision.reason} (its '
                                f'output above says why); the other nodes go on')]
        reason = (f'the detector {fqn} is not restarted: {decision.reason} (its output above '
                  f'says why); stopping every node')
        return [LogInfo(msg=f'error: {reason}'), OpaqueFunction(function=_stop, args=[reason])]


def _stop(context: Any, reason: str) -> None:
    raise SystemStopped(reason)


def plan_actions(plan: Plan, log_level: str, context: Any) -> List[Any]:
    """The launch actions that start `plan` and keep it running as supervision.py says."""
    actions: List[Any] = []
    for planned in plan.nodes:
        actions += Supervised(plan, planned, log_level).start(context)
    return actions


def _actions_from_arguments(context: Any) -> List[Any]:
    log_level = parse_log_level(LaunchConfiguration('log_level').perform(context))
    detector = parse_switch(LaunchConfiguration('detector').perform(context), 'detector')
    config = load_config(LaunchConfiguration('config').perform(context))
    remove_stale_segments()  # what the cameras of a killed run left in /dev/shm
    return plan_actions(node_plan(config, detector=detector), log_level, context)


def generate_launch_description() -> LaunchDescription:
    default_config = os.path.join(get_package_share_directory(PACKAGE), 'config', 'cams.yaml')
    return LaunchDescription([
        DeclareLaunchArgument('config', default_value=default_config,
                              description='camera configuration YAML'),
        DeclareLaunchArgument('detector', default_value='true',
                              description='start the detector (true) or cameras only (false)'),
        DeclareLaunchArgument('log_level', default_value='info',
                              description='ROS log level of every node: '
                                          + ', '.join(LOG_LEVELS)),
        OpaqueFunction(function=_actions_from_arguments),
    ])
