"""camera_node in its own process, as a user runs it, against the real RTSP test bed."""
import signal
import socket
import threading
import time

import numpy as np
import pytest
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from rcl_interfaces.msg import Log
from rclpy.node import Node
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CameraInfo, Image

from multicam_testbed import make_test_clip
from ros_helpers import ExecutorThread, TopicRecorder, stamp_ns, wait_for

pytestmark = pytest.mark.timeout(120)

RELIABLE_1 = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE)
SECRET = 'Hunter2Secret'


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(('127.0.0.1', 0))
        return sock.getsockname()[1]


def camera_args(url: str, namespace: str = '/cam0', **params) -> list:
    args = ['camera_node', '--ros-args', '-r', f'__ns:={namespace}']
    args += ['-p', f'url:={url}'] if url else []  # no url at all: the default, empty
    for name, value in params.items():
        args += ['-p', f'{name}:={value}']
    return args


def is_no_signal(msg: Image) -> bool:
    """The NO SIGNAL picture has a red banner across the middle (bgr8)."""
    row = np.frombuffer(msg.data, np.uint8).reshape(msg.height, msg.step)[msg.height // 2]
    pixels = row[:msg.width * 3].reshape(-1, 3).astype(int)
    return bool(np.mean((pixels[:, 2] > 150) & (pixels[:, 0] < 80) & (pixels[:, 1] < 80)) > 0.5)


class Probe:
    """Subscribes in the test process (another process than the node) to what it publishes."""

    def __init__(self, context, namespace: str = '/cam0', qos: QoSProfile = RELIABLE_1):
        self.node = Node('probe', context=context)
        self.images = TopicRecorder(self.node, Image, f'{namespace}/image_raw', qos)
        self.infos = TopicRecorder(self.node, CameraInfo, f'{namespace}/camera_info', qos)
        self.diagnostics = TopicRecorder(self.node, DiagnosticArray, '/diagnostics', 50)
        self.rosout = TopicRecorder(self.node, Log, '/rosout', 100)
        self.spinner = ExecutorThread(context, [self.node])

    def last_status(self) -> DiagnosticStatus:
        statuses = [s for msg in self.diagnostics.messages for s in msg.status]
        return statuses[-1] if statuses else None

    def status_values(self) -> dict:
        status = self.last_status()
        return {kv.key: kv.value for kv in status.values} if status else {}

    def all_text(self) -> str:
        """Everything people can read from the node over ROS: diagnostics and /rosout."""
        parts = [f'{s.name} {s.message} {s.hardware_id} ' + ' '.join(kv.value for kv in s.values)
                 for msg in self.diagnostics.messages for s in msg.status]
        parts += [log.msg for log in self.rosout.messages]
        return '\n'.join(parts)


@pytest.fixture
def probe(ros_context):
    probe = Probe(ros_context)
    with probe.spinner:
        yield probe


def test_live_frames_at_stream_rate_newest_not_buffered(rtsp_server_factory, node_launcher,
                                                        probe):
    server = rtsp_server_factory(count=1)  # VGA at 30 fps; one encoder leaves the CPU free
    proc = node_launcher.start(camera_args(server.url(0)))
    assert wait_for(lambda: probe.images.count() > 15, 30.0), node_launcher.logs()
    probe.images.clear()
    time.sleep(5.0)
    items = probe.images.items
    rate_hz = len(items) / 5.0
    assert rate_hz >= 0.9 * 30, \
        f'{rate_hz:.1f} fps of 30 reached the subscriber; node: {probe.status_values()}'
    stamps = [stamp_ns(msg.header) for _, msg in items]
    assert all(b > a for a, b in zip(stamps, stamps[1:])), 'stamps must strictly increase'
    latencies_ms = np.array([(received - stamp_ns(msg.header)) / 1e6 for received, msg in items])
    # Seconds-old buffered frames would show here; the newest frame arrives in milliseconds.
    assert np.percentile(latencies_ms, 50) < 100, latencies_ms
    assert np.percentile(latencies_ms, 95) < 250, latencies_ms
    image_headers = {(stamp_ns(m.header), m.header.frame_id) for m in probe.images.messages}
    info_headers = {(stamp_ns(m.header), m.header.frame_id) for m in probe.infos.messages}
    assert len(image_headers & info_headers) >= 0.8 * len(image_headers)
    assert {frame_id for _, frame_id in image_headers} == {'cam0_optical_frame'}
    assert wait_for(lambda: probe.last_status() is not None, 5.0)
    assert probe.last_status().level == DiagnosticStatus.OK
    assert probe.status_values()['state'] == 'streaming'

    started = time.monotonic()
    assert proc.stop(signal.SIGTERM, timeout_s=5.0) == 0, proc.output()
    assert time.monotonic() - started < 2.0


def test_server_restart_no_signal_in_between_then_frames_resume(
        rtsp_server, node_launcher, probe):
    proc = node_launcher.start(camera_args(
        rtsp_server.url(0), read_timeout_s=1.0, reconnect_delay_min_s=0.2,
        reconnect_delay_max_s=1.0))
    assert wait_for(lambda: probe.images.count() > 10, 30.0), node_launcher.logs()

    rtsp_server.stop()
    probe.images.clear()
    assert wait_for(lambda: sum(map(is_no_signal, probe.images.messages)) >= 2, 15.0), \
        node_launcher.logs()
    assert wait_for(lambda: probe.status_values().get('state') == 'reconnecting', 5.0)
    assert probe.last_status().level == DiagnosticStatus.ERROR
    no_signal = [m for m in probe.images.messages if is_no_signal(m)]
    assert (no_signal[0].width, no_signal[0].height) == (640, 480)  # the last known size

    rtsp_server.restart()
    outage_ended = time.monotonic()
    assert wait_for(lambda: sum(not is_no_signal(m) for m in probe.images.messages) > 10,
                    20.0), node_launcher.logs()
    # Window: the longest backoff (1 s with jitter) plus opening the stream again.
    assert time.monotonic() - outage_ended < 12.0
    assert wait_for(lambda: probe.status_values().get('state') == 'streaming', 5.0)
    assert int(probe.status_values()['reconnects']) >= 1
    assert proc.running
    output = proc.output()
    assert output.count('-> reconnecting') == 1, output  # a state change is logged once


def test_unreachable_camera_reports_error_and_keeps_trying(node_launcher, probe):
    url = f'rtsp://admin:{SECRET}@127.0.0.1:{free_port()}/stream'
    proc = node_launcher.start(camera_args(url, open_timeout_s=1.0, reconnect_delay_max_s=1.0))
    assert wait_for(lambda: probe.last_status() is not None
                    and probe.last_status().level == DiagnosticStatus.ERROR, 20.0), \
        node_launcher.logs()
    assert wait_for(lambda: sum(map(is_no_signal, probe.images.messages)) >= 2, 10.0)
    time.sleep(2.0)
    assert proc.running, proc.output()
    assert int(probe.status_values()['reconnects']) >= 1
    assert proc.stop(signal.SIGINT, timeout_s=5.0) == 0
    for text in (proc.output(), probe.all_text()):
        assert SECRET not in text
    assert 'admin:***@127.0.0.1' in probe.all_text()


@pytest.mark.parametrize('url', [f'rtsp://admin:{SECRET}@', 'ftp://example.com/stream',
                                 f'rtsp:/admin:{SECRET}@cam', ''])
def test_bad_url_exits_non_zero_naming_the_parameter(node_launcher, url):
    proc = node_launcher.start(camera_args(url))
    assert proc.wait(timeout_s=15.0) == 2
    output = proc.output()
    assert 'configuration error: url: ' in output and '; accepted: ' in output, output
    assert 'Traceback' not in output, output
    assert SECRET not in output


def test_password_from_environment_never_shown(rtsp_server, node_launcher, probe):
    url = rtsp_server.url(0).replace('rtsp://', 'rtsp://viewer@')
    proc = node_launcher.start(camera_args(url, password_env='CAM_PASSWORD'),
                               env={'CAM_PASSWORD': SECRET})
    assert wait_for(lambda: probe.images.count() > 10, 30.0), node_launcher.logs()
    assert wait_for(lambda: probe.last_status() is not None, 5.0)
    proc.stop()
    assert SECRET not in proc.output() + probe.all_text()
    assert 'viewer' in probe.status_values()['url']


def test_resize_encoding_and_uncalibrated_info(rtsp_server, node_launcher, probe):
    node_launcher.start(camera_args(rtsp_server.url(1), width=320, height=240,
                                    encoding='mono8', frame_id='front'))
    assert wait_for(lambda: probe.infos.count() > 3 and probe.images.count() > 3, 30.0), \
        node_launcher.logs()
    image, info = probe.images.messages[-1], probe.infos.messages[-1]
    assert (image.width, image.height, image.encoding, image.step) == (320, 240, 'mono8', 320)
    assert len(image.data) == 320 * 240
    assert (info.width, info.height, info.header.frame_id) == (320, 240, 'front')
    assert list(info.k) == [0.0] * 9


def test_calibration_file_scaled_with_resize(rtsp_server, node_launcher, probe, tmp_path):
    calibration = tmp_path / 'cam.yaml'
    calibration.write_text(
        'image_width: 640\nimage_height: 480\ncamera_name: cam0\n'
        'camera_matrix: {rows: 3, cols: 3, data: [600, 0, 320, 0, 600, 240, 0, 0, 1]}\n'
        'distortion_model: plumb_bob\n'
        'distortion_coefficients: {rows: 1, cols: 5, data: [0.1, 0.01, 0, 0, 0]}\n'
        'rectification_matrix: {rows: 3, cols: 3, data: [1, 0, 0, 0, 1, 0, 0, 0, 1]}\n'
        'projection_matrix: {rows: 3, cols: 4, data: [600, 0, 320, 0, 0, 600, 240, 0, '
        '0, 0, 1, 0]}\n')
    node_launcher.start(camera_args(rtsp_server.url(0), width=320, encoding='rgb8',
                                    camera_info_url=f'file://{calibration}'))
    assert wait_for(lambda: probe.infos.count() > 3, 30.0), node_launcher.logs()
    info, image = probe.infos.messages[-1], probe.images.messages[-1]
    assert (image.width, image.height, image.encoding) == (320, 240, 'rgb8')
    assert (info.width, info.height, info.distortion_model) == (320, 240, 'plumb_bob')
    assert list(info.k) == [300, 0, 160, 0, 300, 120, 0, 0, 1]
    assert list(info.d) == [0.1, 0.01, 0, 0, 0]


def test_fps_cap(rtsp_server, node_launcher, probe):
    node_launcher.start(camera_args(rtsp_server.url(2), fps=10.0))
    assert wait_for(lambda: probe.images.count() > 5, 30.0), node_launcher.logs()
    probe.images.clear()
    time.sleep(4.0)
    assert 8.0 <= probe.images.count() / 4.0 <= 11.0


def test_video_file_loops(node_launcher, probe, tmp_path):
    clip = make_test_clip(tmp_path / 'clip.mp4', seconds=1.0, width=320, height=240, fps=30)
    node_launcher.start(camera_args(str(clip), loop='true'))
    assert wait_for(lambda: probe.images.count() > 5, 30.0), node_launcher.logs()
    probe.images.clear()
    time.sleep(3.0)  # three times the clip's length: without looping it would have ended
    assert probe.images.count() >= 45  # well past one clip's 30 frames, even on a busy CPU
    assert probe.status_values()['state'] == 'streaming'
    assert wait_for(lambda: probe.images.count() > 50, 5.0)  # and it still goes on


def test_shared_memory_gets_every_frame_while_the_publishing_thread_stalls(ros_context, tmp_path,
                                                                           monkeypatch):
    """The detector's copy of each frame is written on the capture thread: a publishing thread
    that falls behind (here: stopped) costs image_raw and camera_info frames, never the shared
    memory's. In-process, so that the publishing thread can be held."""
    from rclpy.parameter import Parameter

    from multicam_ros.core.shm_frames import FrameReader, channel_for_topic
    from multicam_ros.ros.camera_node import CameraNode

    release = threading.Event()
    published = []

    def stalled_publish(node, frame):
        published.append(frame.seq)
        release.wait(30.0)

    monkeypatch.setattr(CameraNode, '_publish_frame', stalled_publish)
    clip = make_test_clip(tmp_path / 'clip.mp4', seconds=2.0, width=320, height=240, fps=30)
    node = CameraNode(context=ros_context, namespace='stall',
                      parameter_overrides=[Parameter('url', value=str(clip)),
                                           Parameter('loop', value=False)])
    try:
        channel = channel_for_topic(node.resolve_topic_name('image_raw'),
                                    ros_context.get_domain_id())
        with FrameReader(channel) as reader:
            assert wait_for(lambda: node._worker.snapshot().frames_captured >= 30, 30.0)
            node._worker.stop(timeout_s=5.0)
            captured = node._worker.snapshot().frames_captured
            newest = reader.poll()
            assert newest is not None and (newest.width, newest.height) == (320, 240)
            assert newest.seq == captured
        assert node._shared.seq == captured  # every captured frame reached shared memory
        assert len(published) == 1  # the one the stalled thread holds
        assert node._worker.snapshot().frames_dropped >= captured - 3
    finally:
        release.set()
        node.destroy_node()


def test_frames_decoded_into_shared_memory_and_image_raw_never_torn(ros_context, tmp_path,
                                                                    monkeypatch):
    """A frame that goes out as decoded is converted by the decoder straight into its
    shared-memory slot (no copy: only the first frame, whose size nobody knew, is written),
    and image_raw is built from that slot with the pixels and stamp the detector reads there.
    One whose slot was rewritten while the publishing thread copied it is not published, and
    is counted. In-process, so that the writer can be watched."""
    from rclpy.parameter import Parameter

    from multicam_ros.core.shm_frames import FrameReader, FrameWriter, channel_for_topic
    from multicam_ros.ros.camera_node import CameraNode

    copies = []
    real_write = FrameWriter.write
    monkeypatch.setattr(FrameWriter, 'write',
                        lambda self, *a, **k: copies.append(1) or real_write(self, *a, **k))
    clip = make_test_clip(tmp_path / 'clip.mp4', seconds=2.0, width=320, height=240, fps=30)
    node = CameraNode(context=ros_context, namespace='inplace',
                      parameter_overrides=[Parameter('url', value=str(clip))])
    viewer = Node('viewer', context=ros_context)
    images = TopicRecorder(viewer, Image, '/inplace/image_raw', QoSProfile(
        depth=50, reliability=ReliabilityPolicy.RELIABLE))
    try:
        channel = channel_for_topic(node.resolve_topic_name('image_raw'),
                                    ros_context.get_domain_id())
        shared = {}
        with FrameReader(channel) as reader, ExecutorThread(ros_context, [viewer]):
            def read_some():
                got = reader.read()
                if got is not None:
                    shared[got[0].stamp_ns] = got[1]
                return len(shared) >= 20 and images.count() >= 20
            assert wait_for(read_some, 30.0, interval_s=0.005)
            common = [m for m in images.messages if stamp_ns(m.header) in shared]
            assert len(common) >= 5
            for message in common:
                pixels = np.frombuffer(bytes(message.data), np.uint8).reshape(240, 320, 3)
                assert np.array_equal(pixels, shared[stamp_ns(message.header)])
            assert node._shared.seq >= 20 and len(copies) == 1
            assert node._image_messages_torn == 0
            # Every slot now reads as overwritten by the time it was copied:
            monkeypatch.setattr(FrameWriter, 'is_intact', lambda self, seq: False)
            sent = node._image_messages
            assert wait_for(lambda: node._image_messages_torn >= 10, 10.0)
            assert node._image_messages - sent <= 1  # one may have been on its way
    finally:
        node.destroy_node()
        viewer.destroy_node()
