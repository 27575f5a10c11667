"""Fault suite, node stops: SIGINT or SIGTERM at random moments, many times, under load, must
end a node with exit 0 and no traceback, every time (issue 12: in 3 of about 45 stops under
load, `RCLError: failed to initialize wait set: context not valid` came out with a traceback and
exit 1; ros/node_main.py run_node).

Real processes as a user starts them, real DDS. The load: a camera_node publishing a looping
720p file at 30 fps to a subscriber in this process that burns 5 ms of CPU per frame, so the
camera builds and sends image messages the whole time, and the detector's stops happen while
frames pour in. The moments: after the node is up (a random moment of its spin), and any moment
from the one its executable installed its stop signals (multicam_ros/ros/entry.py, before the
node's slow imports): imports, rclpy.init, the constructor, the spin. A signal before the
interpreter runs any code of ours (its first tenths of a second) cannot be handled by Python
code at all, so those moments start when the process handles SIGTERM (its /proc status says).
"""
import random
import signal
import time

import pytest
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.node import Node
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import Image

from multicam_testbed import make_test_clip
from ros_helpers import ExecutorThread, TopicRecorder, stop_signals_caught, wait_for

pytestmark = pytest.mark.timeout(600)

CAMERA = '/cam0'
CAMERA_UP = f'-> {CAMERA}/image_raw'  # camera_node's log line at the end of its constructor
DETECTOR = '/detector'
STOPS_WHILE_RUNNING = 20
STOPS_AT_ANY_MOMENT = 10
DETECTOR_STOPS = 3
UP_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 10.0
RELIABLE_1 = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE)


class BusySubscriber:
    """Subscribes to the camera's image_raw and spends 5 ms of CPU on every frame."""

    def __init__(self, context) -> None:
        self.node = Node('busy_subscriber', context=context)
        self.frames = 0
        self.node.create_subscription(Image, f'{CAMERA}/image_raw', self._on_image, RELIABLE_1)
        self.diagnostics = TopicRecorder(self.node, DiagnosticArray, '/diagnostics', 50)

    def reported(self, prefix: str) -> bool:
        """A /diagnostics status named `prefix...` came (its timer runs: the node spins)."""
        return any(status.name.startswith(prefix) for msg in self.diagnostics.messages
                   for status in msg.status)

    def _on_image(self, _msg: Image) -> None:
        self.frames += 1
        until = time.perf_counter() + 0.005
        while time.perf_counter() < until:
            pass


@pytest.fixture
def clip(tmp_path):
    return make_test_clip(tmp_path / 'clip.mp4', seconds=2.0, width=1280, height=720, fps=30)


@pytest.fixture
def busy(ros_context):
    subscriber = BusySubscriber(ros_context)
    with ExecutorThread(ros_context, [subscriber.node]):
        yield subscriber
    subscriber.node.destroy_node()


def camera_command(clip) -> list:
    return ['camera_node', '--ros-args', '-r', f'__ns:={CAMERA}', '-p', f'url:={clip}']


def stop_and_check(proc, sig: int, what: str) -> str:
    """Send `sig`, wait for the exit; '' if it ended with 0 and no traceback, else why not."""
    proc.send(sig)
    try:
        code = proc.wait(timeout_s=STOP_TIMEOUT_S)
    except Exception:  # noqa: BLE001 - subprocess.TimeoutExpired
        proc.stop(signal.SIGKILL, timeout_s=5.0)
        return f'{what}: did not end within {STOP_TIMEOUT_S} s of {sig.name}'
    output = proc.output()
    if code != 0 or 'Traceback' in output:
        return f'{what}: {sig.name} gave exit {code}; output:\n{output[-4000:]}'
    return ''


def test_camera_node_stops_cleanly_at_random_moments_of_its_spin(node_launcher, clip, busy):
    rng = random.Random()
    failures = []
    for index in range(STOPS_WHILE_RUNNING):
        proc = node_launcher.start(camera_command(clip), name=f'camera{index}')
        assert wait_for(lambda: CAMERA_UP in proc.output() or not proc.running,
                        UP_TIMEOUT_S), proc.output()
        assert proc.running, proc.output()
        time.sleep(rng.uniform(0.0, 1.5))
        sig = rng.choice([signal.SIGINT, signal.SIGTERM])
        failure = stop_and_check(proc, sig, f'stop {index + 1}')
        if failure:
            failures.append(failure)
    assert busy.frames > 0, 'the subscriber got no frame: the stops were not under load'
    assert not failures, '\n\n'.join(failures)


def test_camera_node_stops_cleanly_at_any_moment_of_its_life(node_launcher, clip, busy):
    """From the moment its stop signals are caught (before the node's own imports): during
    imports, rclpy.init, the constructor, the executor's creation or the spin."""
    rng = random.Random()
    failures = []
    up_s = 3.0  # how long a start took, to spread the moments over a whole start and more
    for index in range(STOPS_AT_ANY_MOMENT):
        proc = node_launcher.start(camera_command(clip), name=f'early{index}')
        assert wait_for(lambda: stop_signals_caught(proc.proc.pid) or not proc.running,
                        UP_TIMEOUT_S, interval_s=0.005), proc.output()
        ready_s = time.monotonic()
        time.sleep(rng.uniform(0.0, 1.3 * up_s))
        sig = rng.choice([signal.SIGINT, signal.SIGTERM])
        if CAMERA_UP in proc.output():
            up_s = max(1.0, time.monotonic() - ready_s)
        failure = stop_and_check(proc, sig, f'stop {index + 1}')
        if failure:
            failures.append(failure)
    assert not failures, '\n\n'.join(failures)


def test_detector_node_stops_cleanly_while_frames_pour_in(node_launcher, clip, busy,
                                                          center_box_model):
    """The detector with a MultiThreadedExecutor, fed by the camera (through shared memory,
    while the busy subscriber takes image messages), stopped at a random moment of its spin
    (after its first /diagnostics report)."""
    camera = node_launcher.start(camera_command(clip), name='feeding_camera')
    assert wait_for(lambda: CAMERA_UP in camera.output(), UP_TIMEOUT_S), camera.output()
    rng = random.Random()
    failures = []
    params = ['-p', f'cameras:=[{CAMERA}]', '-p', 'device:=cpu', '-p', 'executor_threads:=4',
              '-p', 'model.backend:=torchscript', '-p', f'model.path:={center_box_model}',
              '-p', "model.class_names:=['thing','other']", '-p', 'input_size:=320']
    for index in range(DETECTOR_STOPS):
        busy.diagnostics.clear()
        proc = node_launcher.start(['detector_node', '--ros-args', '-r', '__node:=detector',
                                    *params], name=f'detector{index}')
        assert wait_for(lambda: busy.reported(f'{DETECTOR}:') or not proc.running,
                        UP_TIMEOUT_S), proc.output()
        assert proc.running, proc.output()
        time.sleep(rng.uniform(0.0, 1.5))
        sig = rng.choice([signal.SIGINT, signal.SIGTERM])
        failure = stop_and_check(proc, sig, f'detector stop {index + 1}')
        if failure:
            failures.append(failure)
    assert camera.running, camera.output()
    assert not failures, '\n\n'.join(failures)
