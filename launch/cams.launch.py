"""Start the multicam_ros system from one YAML file: one camera_node per camera, one detector.

    ros2 launch multicam_ros cams.launch.py config:=my_cams.yaml [detector:=false] \
        [log_level:=debug]

A thin adapter over the ROS-free bring-up, which `multicam-ros launch` uses too:
multicam_ros.system.plan.node_plan decides every node, name, namespace, parameter and
environment variable, and multicam_ros.system.supervision decides what happens when a process
exits. This file maps each planned node onto a launch_ros Node and applies that policy with
launch's own tools: a camera that exits is started again as a fresh Node after the policy's
delay (an OnProcessExit handler and a TimerAction; launch_ros's `respawn` has a fixed delay and
no backoff), and the detector's exit shuts the launch down. An invalid file raises ConfigError
before any process starts.
"""
import os
import time
from typing import Any, List

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, LogInfo, OpaqueFunction, \
    RegisterEventHandler, Shutdown, TimerAction
from launch.event_handlers import OnProcessExit
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

from multicam_ros.system.config import load_config
from multicam_ros.system.executables import PACKAGE
from multicam_ros.system.plan import LOG_LEVELS, Plan, PlannedNode, node_plan, \
    parse_log_level, parse_switch
from multicam_ros.system.supervision import OnExit, RestartDelay


def node_action(plan: Plan, planned: PlannedNode, log_level: str) -> Node:
    """The launch_ros Node of one planned node, field for field."""
    extra = {}
    if planned.on_exit is OnExit.STOP_SYSTEM:
        extra.update(on_exit=Shutdown(reason=f'{planned.fqn} exited'))
    return Node(
        package=planned.package, executable=planned.executable, name=planned.name,
        namespace=planned.namespace, parameters=[dict(planned.parameters)],
        additional_env={**plan.environment, **planned.environment},
        ros_arguments=['--log-level', log_level], output='screen', **extra)


class Restarter:
    """Keeps one planned node running under the supervision policy: each time its process
    exits, a fresh Node starts after RestartDelay's delay (unless the launch is shutting
    down)."""

    def __init__(self, plan: Plan, planned: PlannedNode, log_level: str) -> None:
        self._plan = plan
        self._planned = planned
        self._log_level = log_level
        self._delay = RestartDelay()
        self._started_s = 0.0

    def start(self, context: Any = None) -> List[Any]:
        """A fresh Node and the handler of its exit (an OpaqueFunction's function)."""
        node = node_action(self._plan, self._planned, self._log_level)
        self._started_s = time.monotonic()
        return [RegisterEventHandler(OnProcessExit(target_action=node, on_exit=self._exited,
                                                   handle_once=True)), node]

    def _exited(self, event: Any, context: Any) -> List[Any]:
        if context.is_shutdown:
            return []
        delay_s = self._delay.after_exit(time.monotonic() - self._started_s)
        return [LogInfo(msg=f'{self._planned.fqn} exited with code {event.returncode}; '
                            f'restarting in {delay_s:.1f} s'),
                TimerAction(period=delay_s, actions=[OpaqueFunction(function=self.start)])]


def plan_actions(plan: Plan, log_level: str) -> List[Any]:
    """The launch actions that start `plan` and keep it running as supervision.py says."""
    actions: List[Any] = []
    for planned in plan.nodes:
        if planned.on_exit is OnExit.RESTART:
            actions += Restarter(plan, planned, log_level).start()
        else:
            actions.append(node_action(plan, planned, log_level))
    return actions


def _actions_from_arguments(context: Any) -> List[Any]:
    log_level = parse_log_level(LaunchConfiguration('log_level').perform(context))
    detector = parse_switch(LaunchConfiguration('detector').perform(context), 'detector')
    config = load_config(LaunchConfiguration('config').perform(context))
    return plan_actions(node_plan(config, detector=detector), log_level)


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
