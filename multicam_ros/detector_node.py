"""detector_node: one shared model for every camera (minimal until its issue lands)."""
import sys

from rclpy.node import Node

from multicam_ros.node_main import run_node


class DetectorNode(Node):
    def __init__(self) -> None:
        super().__init__('detector')
        self.declare_parameter('cameras', [''])
        self.get_logger().info('detector_node started')


def main(args=None) -> int:
    return run_node(DetectorNode, 'detector_node', args)


if __name__ == '__main__':
    sys.exit(main())
