"""A small rclpy node that hands every /diagnostics status to a callback, in its own context and
thread: how `multicam-ros launch` fills its status table (system/status.py) with exactly what a
ROS user sees on /diagnostics. It lives in ros/ because it imports rclpy; cli.py gives it to the
ROS-free supervisor, which only calls it and closes it. Its node name carries the launcher's
pid, so two launchers (one refused, ros/graph.py) never show as one duplicate name.
"""
import os
import threading
from typing import Callable, Dict

import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.context import Context
from rclpy.executors import SingleThreadedExecutor
from rclpy.signals import SignalHandlerOptions

LISTENER_NODE_NAME = 'multicam_ros_launch'

StatusCallback = Callable[[str, Dict[str, str]], None]  # (status name, its KeyValue pairs)


class DiagnosticsListener:
    """Subscribes to /diagnostics and calls `on_status(name, values)` for each status."""

    def __init__(self, on_status: StatusCallback) -> None:
        self._on_status = on_status
        self._context = Context()
        # The launcher handles SIGINT/SIGTERM itself: they must reach the children first.
        rclpy.init(args=[], context=self._context,
                   signal_handler_options=SignalHandlerOptions.NO)
        self._node = rclpy.create_node(f'{LISTENER_NODE_NAME}_{os.getpid()}',
                                       context=self._context)
        self._node.create_subscription(DiagnosticArray, '/diagnostics', self._on_message, 50)
        self._executor = SingleThreadedExecutor(context=self._context)
        self._executor.add_node(self._node)
        self._thread = threading.Thread(target=self._spin, daemon=True, name='diagnostics')
        self._thread.start()

    def _spin(self) -> None:
        try:
            self._executor.spin()
        except Exception:  # noqa: BLE001 - the context is shut down under it at close
            pass

    def _on_message(self, msg: DiagnosticArray) -> None:
        for status in msg.status:
            self._on_status(status.name, {kv.key: kv.value for kv in status.values})

    def close(self) -> None:
        """Stop spinning and leave the ROS graph."""
        self._executor.shutdown(timeout_sec=1.0)
        self._node.destroy_node()
        self._context.try_shutdown()
        self._thread.join(timeout=2.0)
