"""The two ways frames reach the detector, with the nodes started as users start them: shared
memory between this package's processes on one host, and image_raw subscriptions for every
other publisher. Same headers on both; the detector picks and switches paths by itself."""
import os
import signal
from pathlib import Path
from typing import Dict, List

import pytest
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.node import Node
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import Image
from vision_msgs.msg import Detection2DArray

from multicam_ros.core import diagnostics
from multicam_ros.core.diagnostics import CameraReport, ServedCameraReport
from multicam_ros.core.shm_frames import SHM_DIR
from ros_helpers import ExecutorThread, TopicRecorder, stamp_ns, wait_for
from test_detector_node import ros_args, scripted_params

pytestmark = pytest.mark.timeout(240)

DEEP = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE)


class Board:
    """The newest typed report of each diagnostics status name."""

    def __init__(self, node: Node) -> None:
        self.reports: Dict[str, Dict[str, str]] = {}
        node.create_subscription(DiagnosticArray, '/diagnostics', self._on, 50)

    def _on(self, msg: DiagnosticArray) -> None:
        for status in msg.status:
            self.reports[status.name] = {kv.key: kv.value for kv in status.values}

    def served(self, camera: str):
        values = self.reports.get(f'/detector: {camera}')
        return diagnostics.parse(ServedCameraReport, values) if values else None

    def camera(self, camera: str):
        values = self.reports.get(f'{camera}/camera_node: camera')
        return diagnostics.parse(CameraReport, values) if values else None

    def path(self, camera: str) -> str:
        report = self.served(camera)
        return report.input_path if report else ''


def start_camera(node_launcher, camera: str, url: str, *extra: str):
    return node_launcher.start(['camera_node', '--ros-args', '-r', f'__ns:={camera}',
                                '-p', f'url:={url}', *extra], name=camera.strip('/'))


def start_detector(node_launcher, model: Path, cameras: List[str], frame_path: str = 'auto'):
    params = dict(scripted_params(model), cameras=cameras, frame_path=frame_path)
    params['tracking.enabled'] = False
    return node_launcher.start(['detector_node', '--ros-args', *ros_args(params)],
                               name='detector')


def segments_of_domain() -> List[str]:
    domain = os.environ['ROS_DOMAIN_ID']
    return [name for name in os.listdir(SHM_DIR)
            if name.startswith('multicam_ros.') and f'.d{domain}_' in name]


def headers(messages) -> set:
    return {(stamp_ns(m.header), m.header.frame_id) for m in messages}


def assert_detections_carry_image_headers(probe: Node, camera: str, node_launcher) -> None:
    """Record image_raw and detections together: every detection's header is the header of
    an image_raw frame (same stamp, same frame_id), so a consumer can pair them exactly."""
    images = TopicRecorder(probe, Image, f'{camera}/image_raw', DEEP)
    detections = TopicRecorder(probe, Detection2DArray, f'{camera}/detections', DEEP)
    assert wait_for(lambda: images.count() >= 20 and detections.count() >= 10, 60.0), \
        node_launcher.logs()
    seen_images = headers(images.messages)
    first_ns = min(stamp for stamp, _ in seen_images)
    got = [m for m in detections.messages if stamp_ns(m.header) >= first_ns]
    assert got, 'no detections of recorded frames'
    assert headers(got) <= seen_images, (sorted(headers(got))[:3], sorted(seen_images)[:3])
    assert all(m.header.frame_id == f'{camera.strip("/")}_optical_frame' for m in got)
    assert all(len(m.detections) == 1 for m in got)  # the scripted model's one box


def test_shared_memory_between_our_nodes_same_headers_and_no_idle_messages(
        rtsp_server_factory, node_launcher, ros_context, center_box_model):
    server = rtsp_server_factory(count=2, width=320, height=240, fps=15)
    cameras = ['/cam0', '/cam1']
    camera_procs = [start_camera(node_launcher, cam, server.url(i))
                    for i, cam in enumerate(cameras)]
    start_detector(node_launcher, center_box_model, cameras)
    probe = Node('probe', context=ros_context)
    board = Board(probe)
    with ExecutorThread(ros_context, [probe]):
        assert wait_for(lambda: all(board.path(c) == 'shared_memory'
                                    and board.served(c).frames_processed > 20
                                    for c in cameras), 90.0), node_launcher.logs()
        # Nobody subscribes to image_raw: the cameras build no image messages at all.
        assert wait_for(lambda: all(board.camera(c) and board.camera(c).frames_published > 30
                                    for c in cameras), 30.0)
        assert [board.camera(c).image_messages for c in cameras] == [0, 0]
        assert all(board.camera(c).shared_memory.startswith('multicam_ros.') for c in cameras)
        # A viewer subscribes: image_raw flows to it, with the detections' exact headers.
        assert_detections_carry_image_headers(probe, '/cam0', node_launcher)
        assert board.path('/cam0') == 'shared_memory'  # the viewer did not change the path
    assert len(segments_of_domain()) == 2
    for proc in camera_procs:
        assert proc.stop(signal.SIGINT) == 0
    assert segments_of_domain() == []  # a camera that stops removes its segment
    probe.destroy_node()


def test_subscription_path_gives_the_same_headers(rtsp_server_factory, node_launcher,
                                                  ros_context, center_box_model):
    server = rtsp_server_factory(count=1, width=320, height=240, fps=15)
    start_camera(node_launcher, '/cam0', server.url(0))
    start_detector(node_launcher, center_box_model, ['/cam0'], frame_path='subscription')
    probe = Node('probe', context=ros_context)
    board = Board(probe)
    with ExecutorThread(ros_context, [probe]):
        assert wait_for(lambda: board.path('/cam0') == 'subscription'
                        and board.served('/cam0').frames_processed > 10, 90.0), \
            node_launcher.logs()
        assert_detections_carry_image_headers(probe, '/cam0', node_launcher)
        assert board.camera('/cam0').image_messages > 0
    probe.destroy_node()


def test_detector_first_then_cameras_and_a_camera_without_shared_memory(
        rtsp_server_factory, node_launcher, ros_context, center_box_model):
    """The detector starts before its cameras; one camera writes shared memory, the other has
    it turned off (as a camera on another host, or any other publisher): each ends up on the
    path that works, automatically."""
    server = rtsp_server_factory(count=2, width=320, height=240, fps=15)
    start_detector(node_launcher, center_box_model, ['/cam0', '/cam1'])
    probe = Node('probe', context=ros_context)
    board = Board(probe)
    with ExecutorThread(ros_context, [probe]):
        assert wait_for(lambda: board.path('/cam0') == 'subscription', 90.0), \
            node_launcher.logs()
        start_camera(node_launcher, '/cam0', server.url(0))
        start_camera(node_launcher, '/cam1', server.url(1), '-p', 'shared_memory:=false')
        assert wait_for(lambda: board.path('/cam0') == 'shared_memory'
                        and board.served('/cam0').frames_processed > 10, 60.0), \
            node_launcher.logs()
        assert wait_for(lambda: board.served('/cam1').frames_processed > 10, 60.0), \
            node_launcher.logs()
        assert board.path('/cam1') == 'subscription'
        assert wait_for(lambda: board.camera('/cam1') is not None, 10.0)
        assert board.camera('/cam1').shared_memory == 'off (parameter shared_memory)'
    probe.destroy_node()


def test_killed_camera_no_leftovers_and_the_detector_follows(
        rtsp_server_factory, node_launcher, ros_context, center_box_model):
    """SIGKILL of a camera mid-stream: the detector notices the dead writer, removes its
    segment and waits on the subscription; the camera started again is back on shared
    memory, on a fresh segment, and detections resume."""
    server = rtsp_server_factory(count=1, width=320, height=240, fps=15)
    camera = start_camera(node_launcher, '/cam0', server.url(0))
    start_detector(node_launcher, center_box_model, ['/cam0'])
    probe = Node('probe', context=ros_context)
    board = Board(probe)
    detections = TopicRecorder(probe, Detection2DArray, '/cam0/detections', DEEP)
    with ExecutorThread(ros_context, [probe]):
        assert wait_for(lambda: board.path('/cam0') == 'shared_memory'
                        and detections.count() > 10, 90.0), node_launcher.logs()
        camera.send(signal.SIGKILL)
        camera.wait(timeout_s=10.0)
        assert wait_for(lambda: board.path('/cam0') == 'subscription', 20.0), \
            node_launcher.logs()
        assert wait_for(lambda: segments_of_domain() == [], 10.0), segments_of_domain()
        before = detections.count()
        last_stamp = stamp_ns(detections.messages[-1].header)
        start_camera(node_launcher, '/cam0', server.url(0))
        assert wait_for(lambda: board.path('/cam0') == 'shared_memory'
                        and detections.count() > before + 10, 60.0), node_launcher.logs()
        stamps = [stamp_ns(m.header) for m in detections.messages]
        assert stamps == sorted(set(stamps))  # never a frame twice, never out of order
        assert stamps[-1] > last_stamp
    probe.destroy_node()
