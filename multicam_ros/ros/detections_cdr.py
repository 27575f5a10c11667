"""Detection2DArray messages built directly as serialized CDR bytes.

Building a Detection2DArray from rclpy message objects costs about 30-60 us of Python per
detection (every ObjectHypothesisWithPose makes a PoseWithCovariance with a 36-double array),
so at a few hundred frames per second with many detections the detector's result thread spent
most of the GIL on it and slowed the inference thread. Here each detection is a handful of
`struct.pack` calls, and rclpy publishes the bytes as they are (`Publisher.publish(bytes)`).

The bytes follow the CDR rules the ROS 2 middlewares use (XCDR1, little endian): primitives
aligned to their size from the start of the payload, strings as uint32 length with the NUL,
sequences as uint32 count. `serialization_matches()` checks them once, at start-up,
against rclpy's own serialization of the same message; where they differ (another middleware,
another message definition), the node builds message objects instead.
"""
import struct
from typing import Sequence

import numpy as np
from rclpy.serialization import deserialize_message, serialize_message
from std_msgs.msg import Header
from vision_msgs.msg import (BoundingBox2D, Detection2D, Detection2DArray,
                             ObjectHypothesisWithPose)

_ENCAPSULATION = b'\x00\x01\x00\x00'  # CDR, little endian
_U32 = struct.Struct('<I')
_TIME = struct.Struct('<iI')
_D = struct.Struct('<d')
_BBOX = struct.Struct('<5d')  # center.position.x, y, center.theta, size_x, size_y
# PoseWithCovariance at its defaults: position 0, orientation (0, 0, 0, 1), covariance 0.
_DEFAULT_POSE = struct.pack('<7d', 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0) + bytes(36 * 8)


class _Writer:
    def __init__(self) -> None:
        self.buffer = bytearray(_ENCAPSULATION)

    def align(self, size: int) -> None:
        pad = -(len(self.buffer) - len(_ENCAPSULATION)) % size
        if pad:
            self.buffer += bytes(pad)

    def u32(self, value: int) -> None:
        self.align(4)
        self.buffer += _U32.pack(value)

    def string(self, data: bytes) -> None:
        self.u32(len(data) + 1)
        self.buffer += data
        self.buffer += b'\x00'

    def header(self, stamp: bytes, frame_id: bytes) -> None:
        self.align(4)
        self.buffer += stamp
        self.string(frame_id)


def detection_array_bytes(stamp_ns: int, frame_id: str, boxes_xyxy: np.ndarray,
                          scores: np.ndarray, labels: Sequence[str],
                          ids: Sequence[str]) -> bytes:
    """A serialized Detection2DArray: one Detection2D per box (x1, y1, x2, y2 in pixels) with
    the array's header, one hypothesis (class name `labels[i]`, score) and `ids[i]`."""
    seconds, nanoseconds = divmod(int(stamp_ns), 1_000_000_000)
    stamp = _TIME.pack(seconds, nanoseconds)
    frame = frame_id.encode('utf-8')
    out = _Writer()
    out.header(stamp, frame)
    out.u32(len(scores))
    for (x1, y1, x2, y2), score, label, track in zip(boxes_xyxy.tolist(), scores.tolist(),
                                                     labels, ids):
        out.header(stamp, frame)
        out.u32(1)  # results: one hypothesis
        out.string(label.encode('utf-8'))
        out.align(8)
        out.buffer += _D.pack(score)
        out.buffer += _DEFAULT_POSE
        out.buffer += _BBOX.pack((x1 + x2) / 2.0, (y1 + y2) / 2.0, 0.0, x2 - x1, y2 - y1)
        out.string(track.encode('utf-8'))
    return bytes(out.buffer)


def detection_array_message(stamp_ns: int, frame_id: str, boxes_xyxy: np.ndarray,
                            scores: np.ndarray, labels: Sequence[str],
                            ids: Sequence[str]) -> Detection2DArray:
    """The same message as `detection_array_bytes`, built from rclpy message objects."""
    seconds, nanoseconds = divmod(int(stamp_ns), 1_000_000_000)
    header = Header(frame_id=frame_id)
    header.stamp.sec, header.stamp.nanosec = seconds, nanoseconds
    result = Detection2DArray(header=header)
    for (x1, y1, x2, y2), score, label, track in zip(boxes_xyxy.tolist(), scores.tolist(),
                                                     labels, ids):
        detection = Detection2D(header=header, id=track)
        detection.bbox = BoundingBox2D()
        detection.bbox.center.position.x = (x1 + x2) / 2.0
        detection.bbox.center.position.y = (y1 + y2) / 2.0
        detection.bbox.size_x = x2 - x1
        detection.bbox.size_y = y2 - y1
        hypothesis = ObjectHypothesisWithPose()
        hypothesis.hypothesis.class_id = label
        hypothesis.hypothesis.score = score
        detection.results = [hypothesis]
        result.detections.append(detection)
    return result


def serialization_matches() -> bool:
    """Whether rclpy reads `detection_array_bytes` back as exactly the message that
    `detection_array_message` builds (checked on an example with odd string lengths, so that
    every padding rule is exercised), and both are as long. Bytes are not compared: the
    middleware leaves its own padding bytes uninitialised."""
    boxes = np.array([[1.5, 2.0, 30.25, 40.0], [0.0, 0.0, 7.0, 9.5]], np.float32)
    scores = np.array([0.875, 0.25], np.float32)
    case = (1_700_000_000_123_456_789, 'cam_optical_frame', boxes, scores, ['person', 'a'],
            ['17', ''])
    built = detection_array_bytes(*case)
    expected = detection_array_message(*case)
    return (len(built) == len(serialize_message(expected))
            and deserialize_message(built, Detection2DArray) == expected)
