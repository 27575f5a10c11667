"""Start one camera_node per camera of a YAML file (grows into the full plan with bring-up)."""
import yaml
from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node


def _nodes(context):
    with open(LaunchConfiguration('config').perform(context)) as stream:
        config = yaml.safe_load(stream)
    return [Node(package='multicam_ros', executable='camera_node', namespace=cam['name'],
                 parameters=[{'url': cam['url']}], respawn=True)
            for cam in config['cameras']]


def generate_launch_description() -> LaunchDescription:
    default = get_package_share_directory('multicam_ros') + '/config/cams.yaml'
    return LaunchDescription([
        DeclareLaunchArgument('config', default_value=default),
        OpaqueFunction(function=_nodes),
    ])
