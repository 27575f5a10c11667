"""Image messages <-> arrays (this package's cv_bridge), and drawing on frames."""
import numpy as np
import pytest
from rclpy.serialization import deserialize_message
from sensor_msgs.msg import Image
from std_msgs.msg import Header
from vision_msgs.msg import Detection2DArray

from multicam_ros.core.drawing import draw_detections
from multicam_ros.core.models.base import Detections
from multicam_ros.ros.convert import array_from_image, bgr_from_image, image_from_array, \
    stamp_from_ns
from multicam_ros.ros.detections_cdr import detection_array_bytes, detection_array_message, \
    serialization_matches


def bgr_frame(height=6, width=5):
    rng = np.random.default_rng(0)
    return rng.integers(0, 255, (height, width, 3), dtype=np.uint8)


@pytest.mark.parametrize('encoding', ['bgr8', 'rgb8', 'mono8'])
def test_round_trip_by_encoding(encoding):
    frame = bgr_frame()
    pixels = frame[:, :, 0] if encoding == 'mono8' else frame
    msg = image_from_array(pixels, encoding, Header(frame_id='f'))
    assert (msg.width, msg.height, msg.encoding) == (5, 6, encoding)
    assert msg.step == 5 * (1 if encoding == 'mono8' else 3)
    back = array_from_image(msg)
    assert np.array_equal(back.reshape(pixels.shape), pixels)


def test_bgr_from_other_encodings():
    frame = bgr_frame()
    rgb = image_from_array(frame[:, :, ::-1], 'rgb8', Header())
    assert np.array_equal(bgr_from_image(rgb), frame)
    mono = image_from_array(frame[:, :, 1], 'mono8', Header())
    assert np.array_equal(bgr_from_image(mono), np.repeat(frame[:, :, 1:2], 3, axis=2))


def test_padded_rows_are_honoured():
    frame = bgr_frame(4, 3)
    padded = np.zeros((4, 16), np.uint8)
    padded[:, :9] = frame.reshape(4, 9)
    msg = Image(height=4, width=3, encoding='bgr8', step=16, data=padded.tobytes())
    assert np.array_equal(bgr_from_image(msg), frame)


@pytest.mark.parametrize('encoding,step,length', [
    ('yuv422', 10, 40), ('16UC1', 10, 40), ('bgr8', 15, 59), ('bgr8', 15, 61), ('bgr8', 14, 56),
    ('bgr8', 0, 0)])
def test_unusable_messages_are_refused(encoding, step, length):
    msg = Image(height=4, width=5, encoding=encoding, step=step, data=bytes(length))
    assert bgr_from_image(msg) is None


def test_drawing_marks_boxes_on_a_copy():
    frame = np.zeros((120, 160, 3), np.uint8)
    detections = Detections(np.array([[20, 30, 100, 90]], np.float32),
                            np.array([0.8], np.float32), np.array([2]))
    canvas = draw_detections(frame, detections, ['a', 'b', 'car'], labels=['#7'])
    assert canvas.shape == frame.shape and not frame.any()
    assert canvas[60, 20].any() and canvas[60, 100].any()  # left and right edges drawn
    assert not canvas[60, 60].any()  # the inside stays untouched


def test_drawing_a_trail_behind_a_track():
    frame = np.zeros((120, 160, 3), np.uint8)
    detections = Detections(np.array([[100, 40, 140, 80]], np.float32),
                            np.array([0.9], np.float32), np.array([0]))
    trail = np.array([[20, 100], [60, 100], [120, 60]], np.float32)
    canvas = draw_detections(frame, detections, ['thing'], ['#3'], [trail])
    assert canvas[100, 40].any()  # on the trail, far from the box
    plain = draw_detections(frame, detections, ['thing'], [''], [None])
    assert not plain[100, 40].any()


def test_detections_as_bytes_read_back_as_the_message_objects():
    """detections_cdr.py writes CDR by hand: rclpy must read it back field for field, for any
    mix of string lengths (the padding rules) and counts, the empty array included."""
    rng = np.random.default_rng(3)
    names = ['person', 'a', 'traffic light', 'dog']
    for count in (0, 1, 2, 7, 50):
        boxes = np.sort(rng.uniform(0, 1000, (count, 4)).astype(np.float32).reshape(count, 2, 2),
                        axis=1).transpose(0, 2, 1).reshape(count, 4)
        scores = rng.uniform(0, 1, count).astype(np.float32)
        labels = [names[i % 4] for i in range(count)]
        ids = [str(i * 37) if i % 3 else '' for i in range(count)]
        case = (1_796_000_000_000_000_001 + count, f'cam{count}_optical_frame', boxes, scores,
                labels, ids)
        built = deserialize_message(detection_array_bytes(*case), Detection2DArray)
        assert built == detection_array_message(*case)
        assert [d.id for d in built.detections] == ids
    assert serialization_matches()


def test_image_read_from_its_bytes_matches_rclpy_and_refuses_broken_ones():
    """image_cdr reads the header fields and a view of the pixels from serialized bytes, the
    same as rclpy's own reading; truncated or lying bytes give None, never an exception."""
    from rclpy.serialization import serialize_message
    from multicam_ros.ros.image_cdr import read_image, reading_matches
    assert reading_matches()
    frame = np.arange(7 * 5 * 3, dtype=np.uint8).reshape(7, 5, 3)
    msg = image_from_array(frame, 'bgr8', Header(stamp=stamp_from_ns(12_000_000_345),
                                                 frame_id='a'))
    blob = serialize_message(msg)
    raw = read_image(blob)
    assert (raw.stamp_ns, raw.frame_id, raw.width, raw.height, raw.step) == \
        (12_000_000_345, 'a', 5, 7, 15)
    assert np.array_equal(bgr_from_image(raw), frame)
    for broken in (blob[:-1], blob[:30], b'', b'\x01\x00' + blob[2:]):  # short; big endian
        assert read_image(broken) is None
    lying = bytearray(blob)
    lying[-len(frame.tobytes()) - 4:-len(frame.tobytes())] = (10**9).to_bytes(4, 'little')
    assert read_image(bytes(lying)) is None  # a data length longer than the bytes


def test_size_filter_passes_everything_within_the_limits_and_nothing_over_twice():
    """The content filter's rectangles (image_cdr.size_bounds): every frame within the limits
    passes; none over twice them does (between the two, the header check refuses it)."""
    from multicam_ros.ros.image_cdr import size_bounds, size_filter
    max_pixels, max_bytes = 20_000, 50_000
    bounds = size_bounds(max_pixels, max_bytes)

    def passes(width: int, height: int, step: int) -> bool:
        fields = {'width': width, 'step': step}
        return all(any(fields[f] <= side and height <= h for g, side, h in bounds if g == f)
                   for f in fields)
    rng = np.random.default_rng(3)
    for _ in range(20_000):
        width, height = (int(v) for v in rng.integers(1, 4000, 2))
        step = width * int(rng.choice([1, 3, 4]))
        within = width * height <= max_pixels and step * height <= max_bytes
        beyond = width * height > 2 * max_pixels or step * height > 2 * max_bytes
        if within:
            assert passes(width, height, step), (width, height, step)
        if beyond:
            assert not passes(width, height, step), (width, height, step)
    expression = size_filter(max_pixels, max_bytes)
    assert expression.count('(width <=') + expression.count('(step <=') == len(bounds)
