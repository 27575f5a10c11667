"""Checks that the vision_msgs this project builds (or finds) is the real 4.1.1 interface.

A vision_msgs whose type hashes differ from upstream's cannot talk to other ROS nodes, so these
tests compare the installed package with upstream's hash and with the definitions kept in
tools/vision_msgs/msg, and send a detection through a real publisher and subscription.
"""

import importlib
import json
import os
import time
from pathlib import Path
from types import ModuleType
from typing import Dict, List, Tuple

import pytest

MSG_DIR = Path(__file__).resolve().parent.parent / 'tools' / 'vision_msgs' / 'msg'
DETECTION2DARRAY_HASH = (
    'RIHS01_214274120007f4a683866481336b70310268cfa107aebe9d594a6acf75bda968')
MESSAGE_NAMES = (
    'BoundingBox2D', 'BoundingBox2DArray', 'BoundingBox3D', 'BoundingBox3DArray',
    'Classification', 'Detection2D', 'Detection2DArray', 'Detection3D', 'Detection3DArray',
    'LabelInfo', 'ObjectHypothesis', 'ObjectHypothesisWithPose', 'Point2D', 'Pose2D',
    'VisionClass', 'VisionInfo',
)
# .msg primitive types as rosidl_generator_py names them in get_fields_and_field_types().
PRIMITIVE_NAMES = {
    'bool': 'boolean', 'byte': 'octet', 'char': 'uint8', 'float32': 'float',
    'float64': 'double', 'int8': 'int8', 'uint8': 'uint8', 'int16': 'int16',
    'uint16': 'uint16', 'int32': 'int32', 'uint32': 'uint32', 'int64': 'int64',
    'uint64': 'uint64', 'string': 'string',
}


def vision_msgs_module(name: str = 'vision_msgs.msg') -> ModuleType:
    """Import a vision_msgs module, failing (not skipping) the test when it is missing."""
    try:
        return importlib.import_module(name)
    except ImportError as err:
        pytest.fail(f'vision_msgs is not importable ({err}): run `make setup` to build it '
                    'into .venv (or install ros-<distro>-vision-msgs on a ROS machine)')


def package_share_dir() -> Path:
    """Return share/vision_msgs of the prefix that the imported vision_msgs belongs to."""
    package = vision_msgs_module('vision_msgs')
    # <prefix>/lib/pythonX.Y/site-packages/vision_msgs/__init__.py
    share = Path(package.__file__).resolve().parents[4] / 'share' / 'vision_msgs'
    if share.is_dir():
        return share
    from ament_index_python.packages import get_package_share_directory
    return Path(get_package_share_directory('vision_msgs'))


def ros_type_name(msg_type: str) -> str:
    """Translate a .msg field type into the form get_fields_and_field_types() reports."""
    is_sequence = msg_type.endswith('[]')
    base = msg_type[:-2] if is_sequence else msg_type
    if base in PRIMITIVE_NAMES:
        base = PRIMITIVE_NAMES[base]
    elif '/' not in base:
        base = f'vision_msgs/{base}'
    return f'sequence<{base}>' if is_sequence else base


def definition_fields(msg_file: Path) -> List[Tuple[str, str]]:
    """Return (name, type) for each field of a .msg file, comments and blanks ignored."""
    fields = []
    for line in msg_file.read_text().splitlines():
        line = line.split('#', 1)[0].strip()
        if line:
            msg_type, name = line.split()
            fields.append((name, ros_type_name(msg_type)))
    return fields


def test_detection2darray_hash_matches_upstream() -> None:
    """The generated type hash of Detection2DArray is vision_msgs 4.1.1's."""
    description = package_share_dir() / 'msg' / 'Detection2DArray.json'
    assert description.is_file(), f'{description} is missing'
    hashes: Dict[str, str] = {
        entry['type_name']: entry['hash_string']
        for entry in json.loads(description.read_text())['type_hashes']}
    assert hashes.get('vision_msgs/msg/Detection2DArray') == DETECTION2DARRAY_HASH


def test_definitions_are_complete() -> None:
    """tools/vision_msgs/msg holds exactly the 16 upstream message names."""
    assert sorted(path.stem for path in MSG_DIR.glob('*.msg')) == sorted(MESSAGE_NAMES)


@pytest.mark.parametrize('name', MESSAGE_NAMES)
def test_generated_fields_match_definitions(name: str) -> None:
    """Each type imports and its fields, in order, are those of its .msg definition."""
    msg_type = getattr(vision_msgs_module(), name, None)
    assert msg_type is not None, f'vision_msgs.msg has no {name}: run `make setup`'
    generated = list(msg_type.get_fields_and_field_types().items())
    assert generated == definition_fields(MSG_DIR / f'{name}.msg')
    msg_type()  # The C type support loads and a default message can be built.


def make_detections() -> object:
    """Return a Detection2DArray with two filled-in detections."""
    msg = vision_msgs_module()
    out = msg.Detection2DArray()
    out.header.frame_id = 'cam7'
    out.header.stamp.sec = 1234
    out.header.stamp.nanosec = 5678
    for index, (label, score) in enumerate((('person', 0.9), ('car', 0.25))):
        det = msg.Detection2D()
        det.header = out.header
        det.id = f'track-{index}'
        det.bbox.center.position.x = 100.5 + index
        det.bbox.center.position.y = 50.25
        det.bbox.center.theta = 0.0
        det.bbox.size_x = 40.0
        det.bbox.size_y = 80.0
        hyp = msg.ObjectHypothesisWithPose()
        hyp.hypothesis.class_id = label
        hyp.hypothesis.score = score
        hyp.pose.pose.position.x = float(index)
        det.results.append(hyp)
        out.detections.append(det)
    return out


def test_detection2darray_round_trip_over_dds() -> None:
    """A Detection2DArray published by one node arrives intact at another (same process)."""
    msg = vision_msgs_module()
    import rclpy
    from rclpy.context import Context
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.qos import QoSProfile, ReliabilityPolicy

    sent = make_detections()
    received: List[object] = []
    topic = f'vision_msgs_round_trip_{os.getpid()}'
    qos = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
    ctx = Context()
    rclpy.init(context=ctx, domain_id=100 + os.getpid() % 100)
    try:
        pub_node = rclpy.create_node('vision_msgs_test_pub', context=ctx)
        sub_node = rclpy.create_node('vision_msgs_test_sub', context=ctx)
        publisher = pub_node.create_publisher(msg.Detection2DArray, topic, qos)
        sub_node.create_subscription(msg.Detection2DArray, topic, received.append, qos)
        executor = SingleThreadedExecutor(context=ctx)
        executor.add_node(pub_node)
        executor.add_node(sub_node)
        deadline = time.monotonic() + 20.0
        while not received and time.monotonic() < deadline:
            publisher.publish(sent)
            executor.spin_once(timeout_sec=0.1)
        executor.shutdown()
        pub_node.destroy_node()
        sub_node.destroy_node()
    finally:
        ctx.try_shutdown()
    assert received, 'no Detection2DArray arrived within 20 s'
    assert received[0] == sent
    assert received[0].detections[0].results[0].hypothesis.class_id == 'person'
