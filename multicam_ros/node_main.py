"""Process entry for the nodes: init, spin, clean exit on SIGINT/SIGTERM, non-zero exit when a
node cannot do its job at all (bad parameters)."""
import sys
from typing import Callable, List, Optional

import rclpy
from rclpy.executors import ExternalShutdownException, MultiThreadedExecutor
from rclpy.node import Node


class ConfigError(ValueError):
    """A parameter value the node cannot work with; the message names the parameter."""


def run_node(make_node: Callable[[], Node], name: str, args: Optional[List[str]] = None,
             num_threads: int = 2) -> int:
    """Create the node, spin it until shutdown, and return the process exit code.

    rclpy's default signal handlers turn SIGINT and SIGTERM into a context shutdown, which ends
    the spin; the node then releases its resources in `destroy_node`.
    """
    rclpy.init(args=args)
    try:
        node = make_node()
    except ValueError as exc:  # ConfigError and validation errors from the ROS-free core
        print(f'[{name}] error: {exc}', file=sys.stderr, flush=True)
        rclpy.try_shutdown()
        return 2
    executor = MultiThreadedExecutor(num_threads=num_threads)
    executor.add_node(node)
    try:
        executor.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        executor.shutdown(timeout_sec=1.0)
        node.destroy_node()
        rclpy.try_shutdown()
    return 0
