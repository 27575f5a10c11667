"""Frame probe: one image subscriber in its own process, for bench/camera_bench.py.

Subscribes to an image topic (KEEP_LAST, depth 1, the given reliability) and to /diagnostics,
waits for the camera to stream and the first frame to arrive (bounded), then counts frames for a
fixed window. It prints `WINDOW_START` and `WINDOW_END` lines (so the parent can sample CPU
times at the same moments) and finally one JSON line with the results. Transport settings come
from the environment, exactly as for any other ROS process; this script sets none of its own.
"""
import argparse
import json
import sys
import time
from typing import Dict, List, Optional

import numpy as np
import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import Image


class FrameProbe(Node):
    """Records receive time and capture stamp of every frame, and the camera's diagnostics."""

    def __init__(self, topic: str, reliability: str) -> None:
        super().__init__('frame_probe')
        qos = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1,
                         durability=DurabilityPolicy.VOLATILE,
                         reliability=(ReliabilityPolicy.RELIABLE if reliability == 'reliable'
                                      else ReliabilityPolicy.BEST_EFFORT))
        self.recording = False
        self.first_frame_ns: Optional[int] = None
        self.frames_total = 0
        self.samples: List[tuple] = []  # (receive_ns, stamp_ns) inside the window
        self.last_size = ''
        self.camera_values: Dict[str, str] = {}
        self.create_subscription(Image, topic, self._on_image, qos)
        self.create_subscription(DiagnosticArray, '/diagnostics', self._on_diagnostics, 10)

    def _on_image(self, msg: Image) -> None:
        received_ns = time.time_ns()  # the ROS clock is the system clock here
        self.frames_total += 1
        if self.first_frame_ns is None:
            self.first_frame_ns = received_ns
        self.last_size = f'{msg.width}x{msg.height}'
        if self.recording:
            stamp_ns = msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec
            self.samples.append((received_ns, stamp_ns))

    def _on_diagnostics(self, msg: DiagnosticArray) -> None:
        for status in msg.status:
            if status.name.endswith(': camera'):
                self.camera_values = {kv.key: kv.value for kv in status.values}


def spin_until(executor: SingleThreadedExecutor, done, deadline_s: float) -> None:
    """Spin until `done()` is true or the monotonic deadline passes."""
    while not done() and time.monotonic() < deadline_s:
        executor.spin_once(timeout_sec=0.05)


def percentile_ms(values_ns: np.ndarray, percent: float) -> Optional[float]:
    return None if values_ns.size == 0 else float(np.percentile(values_ns, percent) / 1e6)


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--topic', default='/cam0/image_raw')
    parser.add_argument('--reliability', choices=('reliable', 'best_effort'),
                        default='reliable')
    parser.add_argument('--seconds', type=float, default=10.0, help='measurement window')
    parser.add_argument('--settle', type=float, default=2.0,
                        help='seconds to wait after the first frame before measuring')
    parser.add_argument('--first-frame-timeout', type=float, default=12.0,
                        help='stop waiting for a first frame after this long and measure anyway')
    args = parser.parse_args(argv)

    rclpy.init()
    node = FrameProbe(args.topic, args.reliability)
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    started_s = time.monotonic()
    started_ns = time.time_ns()
    try:
        # Warm-up: the camera streams, a first frame arrives (discovery can take seconds).
        deadline = started_s + args.first_frame_timeout
        spin_until(executor, lambda: node.camera_values.get('state') == 'streaming', deadline)
        spin_until(executor, lambda: node.first_frame_ns is not None, deadline)
        spin_until(executor, lambda: False, time.monotonic() + args.settle)

        node.recording = True
        print('WINDOW_START', flush=True)
        window_start_s = time.monotonic()
        diag_before = dict(node.camera_values)
        spin_until(executor, lambda: False, window_start_s + args.seconds)
        window_s = time.monotonic() - window_start_s
        node.recording = False
        print('WINDOW_END', flush=True)
        diag_after = dict(node.camera_values)
    finally:
        executor.shutdown()
        node.destroy_node()
        rclpy.try_shutdown()

    samples = np.array(node.samples, dtype=np.int64).reshape(-1, 2)
    latencies_ns = samples[:, 0] - samples[:, 1]
    stamps = samples[:, 1]
    result = {
        'frames_received': int(len(samples)),
        'window_s': round(window_s, 3),
        'receive_fps': round(len(samples) / window_s, 2),
        'frame_size': node.last_size,
        'first_frame_after_s': (None if node.first_frame_ns is None
                                else round((node.first_frame_ns - started_ns) / 1e9, 2)),
        'stamps_not_increasing': int(np.sum(np.diff(stamps) <= 0)) if stamps.size else 0,
        'capture_to_receive_p50_ms': percentile_ms(latencies_ns, 50),
        'capture_to_receive_p99_ms': percentile_ms(latencies_ns, 99),
        'diagnostics_before': diag_before,
        'diagnostics_after': diag_after,
    }
    print(json.dumps(result), flush=True)
    return 0


if __name__ == '__main__':
    sys.exit(main())
