"""camera_node: one RTSP camera in, the newest frame out (minimal until its issue lands)."""
import sys

from rclpy.node import Node

from multicam_ros.node_main import run_node


class CameraNode(Node):
    def __init__(self) -> None:
        super().__init__('camera_node')
        self.declare_parameter('url', '')
        self.get_logger().info('camera_node started')


def main(args=None) -> int:
    return run_node(CameraNode, 'camera_node', args)


if __name__ == '__main__':
    sys.exit(main())
