"""Conversions between the ROS-free core's types and ROS messages (this package's cv_bridge).

The only module besides the nodes that imports message types.
"""
import array
from typing import Callable, Optional

import cv2
import numpy as np
from builtin_interfaces.msg import Time
from diagnostic_msgs.msg import DiagnosticStatus, KeyValue
from sensor_msgs.msg import CameraInfo, Image
from std_msgs.msg import Header

from multicam_ros.core import diagnostics
from multicam_ros.core.calibration import Calibration

CHANNELS = {'bgr8': 3, 'rgb8': 3, 'mono8': 1, 'bgra8': 4, 'rgba8': 4}
_TO_BGR = {'rgb8': cv2.COLOR_RGB2BGR, 'mono8': cv2.COLOR_GRAY2BGR, 'bgra8': cv2.COLOR_BGRA2BGR,
           'rgba8': cv2.COLOR_RGBA2BGR}


def stamp_from_ns(stamp_ns: int) -> Time:
    return Time(sec=stamp_ns // 1_000_000_000, nanosec=stamp_ns % 1_000_000_000)


def ns_from_stamp(stamp: Time) -> int:
    return stamp.sec * 1_000_000_000 + stamp.nanosec


def image_from_array(frame: np.ndarray, encoding: str, header: Header) -> Image:
    """An Image holding `frame` (H x W x C uint8, or H x W for mono8), row-packed."""
    height, width = frame.shape[:2]
    msg = Image(header=header, height=height, width=width, encoding=encoding, is_bigendian=0,
                step=width * CHANNELS[encoding])
    # One copy into an array.array: rclpy's setter takes it as it is, without the per-byte
    # checks it runs on bytes and lists (always on Humble), which cost ~0.4 s for a 720p frame.
    data = array.array('B')
    data.frombytes(memoryview(np.ascontiguousarray(frame)).cast('B'))
    msg.data = data
    return msg


def array_from_image(msg: Image) -> Optional[np.ndarray]:
    """A view of an Image's pixels as H x W x C uint8, or None when the message is unusable
    (an encoding other than bgr8/rgb8/mono8, or data whose length is not step * height)."""
    channels = CHANNELS.get(msg.encoding)
    if channels is None or msg.step < msg.width * channels:
        return None
    if len(msg.data) != msg.step * msg.height or msg.height == 0 or msg.width == 0:
        return None
    rows = np.frombuffer(msg.data, dtype=np.uint8).reshape(msg.height, msg.step)
    pixels = rows[:, :msg.width * channels].reshape(msg.height, msg.width, channels)
    return pixels


def bgr_from_image(msg: Image) -> Optional[np.ndarray]:
    """The pixels as H x W x 3 BGR (a view for bgr8, a converted copy otherwise), or None for
    an unusable message (see array_from_image)."""
    pixels = array_from_image(msg)
    if pixels is None or msg.encoding == 'bgr8':
        return pixels
    return cv2.cvtColor(pixels, _TO_BGR[msg.encoding])


def camera_info_from_calibration(calibration: Calibration, header: Header) -> CameraInfo:
    return CameraInfo(header=header, width=calibration.width, height=calibration.height,
                      distortion_model=calibration.distortion_model, d=list(calibration.d),
                      k=list(calibration.k), r=list(calibration.r), p=list(calibration.p))


def diagnostic_status(level: bytes, name: str, message: str, report: object,
                      hardware_id: str = '',
                      redact: Callable[[str], str] = lambda text: text) -> DiagnosticStatus:
    """A DiagnosticStatus carrying one report of the diagnostics contract (core/diagnostics.py);
    `redact` is applied to every text that could hold a camera URL."""
    return DiagnosticStatus(
        level=level, name=name, message=redact(message), hardware_id=redact(hardware_id),
        values=[KeyValue(key=key, value=redact(value))
                for key, value in diagnostics.values(report).items()])
