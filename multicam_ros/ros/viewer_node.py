"""The viewer's ROS side: `<camera>/image_annotated` of each camera into system/viewer.py.

`ViewerNode` subscribes to a camera's images only while a browser watches that camera (the
hub's feeds count watchers; a timer here follows them), so the viewer does no work without a
browser, and the detector draws only while someone looks (annotate: auto draws while
image_annotated has a subscriber). While anything is watched it also listens to /diagnostics,
so that a camera_node that reports itself down turns its tile to NO SIGNAL at once.

`Viewer` runs the node in an rclpy context and thread of its own, beside the HTTP server:
`multicam-ros view` runs one until Ctrl-C, and `multicam-ros demo` runs one inside its own
process beside the launcher.
"""
import signal
import sys
import threading
from typing import Dict, Optional, Sequence

import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.context import Context
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from rclpy.signals import SignalHandlerOptions
from rclpy.subscription import Subscription
from sensor_msgs.msg import Image

from multicam_ros.core.diagnostics import CAMERA_SUFFIX, CameraReport, parse
from multicam_ros.ros.convert import bgr_from_image, ns_from_stamp
from multicam_ros.ros.node_main import image_qos
from multicam_ros.system.viewer import DEFAULT_HOST, DEFAULT_PORT, ViewerHub, ViewerServer, \
    loopback_warning

VIEWER_NODE_NAME = 'multicam_ros_viewer'
DEFAULT_TOPIC = 'image_annotated'
FOLLOW_PERIOD_S = 0.2  # how often the node follows the watchers


class ViewerNode(Node):
    """Feeds `hub` with `<camera>/<topic>` of every watched camera (see the module docstring)."""

    def __init__(self, hub: ViewerHub, topic: str = DEFAULT_TOPIC,
                 reliability: str = 'reliable', **node_kwargs) -> None:
        super().__init__(VIEWER_NODE_NAME, **node_kwargs)
        self._hub = hub
        self._topic = topic
        # reliable, as this package publishes; best_effort also matches best-effort publishers
        self._qos = image_qos(reliability)
        self._images: Dict[str, Subscription] = {}
        self._diagnostics: Optional[Subscription] = None
        self._invalid_warned: set = set()
        self.create_timer(FOLLOW_PERIOD_S, self._follow_watchers)

    def _follow_watchers(self) -> None:
        watched = set(self._hub.watched())
        for camera in self._hub.cameras:
            subscribed = camera in self._images
            if camera in watched and not subscribed:
                self._images[camera] = self.create_subscription(
                    Image, f'{camera}/{self._topic}',
                    lambda msg, camera=camera: self._on_image(camera, msg), self._qos)
            elif camera not in watched and subscribed:
                self.destroy_subscription(self._images.pop(camera))
        if watched and self._diagnostics is None:
            self._diagnostics = self.create_subscription(
                DiagnosticArray, '/diagnostics', self._on_diagnostics, 50)
            self.get_logger().info(f'a browser watches: receiving {self._topic} of '
                                   f'{", ".join(sorted(watched))}')
        elif not watched and self._diagnostics is not None:
            self.destroy_subscription(self._diagnostics)
            self._diagnostics = None
            self.get_logger().info('no browser watches: receiving nothing')

    def _on_image(self, camera: str, msg: Image) -> None:
        image = bgr_from_image(msg)
        if image is None:
            if camera not in self._invalid_warned:  # once per camera
                self._invalid_warned.add(camera)
                self.get_logger().warning(
                    f'{camera}/{self._topic}: cannot show encoding {msg.encoding!r} '
                    f'({msg.width}x{msg.height}); shown: bgr8, rgb8, mono8, bgra8, rgba8')
            return
        latency_s = (self.get_clock().now().nanoseconds - ns_from_stamp(msg.header.stamp)) / 1e9
        self._hub.feed(camera).put(image, latency_s)

    def _on_diagnostics(self, msg: DiagnosticArray) -> None:
        for status in msg.status:
            fqn, _, suffix = status.name.partition(': ')
            camera = fqn.rsplit('/', 1)[0]
            if suffix != CAMERA_SUFFIX or camera not in self._hub.cameras:
                continue
            report = parse(CameraReport, {kv.key: kv.value for kv in status.values})
            if report is not None:
                self._hub.feed(camera).note_camera_state(report.state)


class Viewer:
    """The viewer node and its HTTP server, running in threads of their own until close().

    Raises OSError when the address cannot be bound."""

    def __init__(self, cameras: Sequence[str], host: str = DEFAULT_HOST,
                 port: int = DEFAULT_PORT, topic: str = DEFAULT_TOPIC,
                 reliability: str = 'reliable') -> None:
        self.hub = ViewerHub(list(cameras))
        self.server = ViewerServer(self.hub, host, port).start()
        self._context = Context()
        # Whoever runs the viewer handles SIGINT and SIGTERM (a launcher forwards them first).
        rclpy.init(args=[], context=self._context,
                   signal_handler_options=SignalHandlerOptions.NO)
        try:
            self.node = ViewerNode(self.hub, topic, reliability, context=self._context)
        except Exception:
            self._context.try_shutdown()
            self.server.close()
            raise
        self._executor = SingleThreadedExecutor(context=self._context)
        self._executor.add_node(self.node)
        self._thread = threading.Thread(target=self._spin, daemon=True, name='viewer-ros')
        self._thread.start()

    @property
    def url(self) -> str:
        return self.server.url

    def _spin(self) -> None:
        try:
            self._executor.spin()
        except Exception:  # noqa: BLE001 - the context is shut down under it at close
            pass

    def close(self) -> None:
        """Stop serving, leave the ROS graph."""
        self.server.close()
        self._executor.shutdown(timeout_sec=1.0)
        self.node.destroy_node()
        self._context.try_shutdown()
        self._thread.join(timeout=2.0)


def view_main(cameras: Sequence[str], host: str = DEFAULT_HOST, port: int = DEFAULT_PORT,
              topic: str = DEFAULT_TOPIC, reliability: str = 'reliable') -> int:
    """`multicam-ros view`: serve the page until Ctrl-C or SIGTERM; exit code 0, or 1 when the
    address cannot be bound."""
    try:
        viewer = Viewer(cameras, host, port, topic, reliability)
    except OSError as exc:
        print(f'multicam-ros view: cannot serve on {host}:{port}: {exc.strerror or exc} '
              '(is another viewer running? choose another --port)', file=sys.stderr,
              flush=True)
        return 1
    stop = threading.Event()
    previous = {sig: signal.signal(sig, lambda *_: stop.set())
                for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        warning = loopback_warning(host)
        if warning:
            print(f'[view] {warning}', flush=True)
        print(f'[view] {len(viewer.hub.cameras)} cameras ({", ".join(viewer.hub.cameras)}), '
              f'topic {topic}', flush=True)
        print(f'[view] open {viewer.url} in a browser; Ctrl-C stops', flush=True)
        while not stop.wait(0.5):
            pass
        print('[view] stopping', flush=True)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        viewer.close()
    return 0
