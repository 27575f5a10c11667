"""Start the multicam_ros system from one YAML file: one camera_node per camera, one detector.

    ros2 launch multicam_ros cams.launch.py config:=my_cams.yaml [detector:=false] \
        [log_level:=debug]

A thin adapter: multicam_ros.system.config.node_plan decides every node, name, namespace, parameter and
environment variable (the same plan `multicam-ros launch` starts, and the one the tests check);
this file maps each planned node onto a launch_ros Node and nothing else. Camera nodes respawn
when they die; when the detector exits, the launch shuts down (as `multicam-ros launch` stops).
An invalid file raises ConfigError before any process starts.
"""
import os

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction, Shutdown
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

from multicam_ros.system.config import (LOG_LEVELS, PACKAGE, RESTART_DELAY_MIN_S, Plan, load_config,
                                 node_plan, parse_switch)


def plan_actions(plan: Plan, log_level: str) -> list:
    """One launch_ros Node per planned node, field for field."""
    actions = []
    for planned in plan.nodes:
        extra = {}
        if planned.respawn:
            extra.update(respawn=True, respawn_delay=RESTART_DELAY_MIN_S)
        if planned.required:
            extra.update(on_exit=Shutdown(reason=f'{planned.fqn} exited'))
        actions.append(Node(
            package=planned.package, executable=planned.executable, name=planned.name,
            namespace=planned.namespace, parameters=[dict(planned.parameters)],
            additional_env={**plan.environment, **planned.environment},
            ros_arguments=['--log-level', log_level],
            output='screen', **extra))
    return actions


def _actions_from_arguments(context) -> list:
    log_level = LaunchConfiguration('log_level').perform(context)
    if log_level not in LOG_LEVELS:
        raise ValueError(f"log_level: {log_level!r} is not one of {', '.join(LOG_LEVELS)}")
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
