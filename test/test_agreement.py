"""End to end, real footage: what the system publishes is what the model finds offline.

Two cameras cut from vtest.avi (the whole view and a crop) go through the RTSP test bed, H.264,
camera_node, shared memory, the detector (NanoDet-g on the CPU) and tracking, as
`multicam-ros launch` starts them. The test bed marks every frame with its source frame index
(multicam_testbed/frame_code.py). For each frame the detector published detections of, the test
takes the image_raw frame with the same header stamp, reads the index from it, renders that
very source frame offline exactly as the test bed did (before JPEG and H.264), runs the same
model on it, and compares, class by class, at IoU 0.5:
- recall: of the offline detections at the publishing threshold (confidence_threshold), the
  share published for that frame (at whatever score: tracking also publishes weaker detections
  that continue a track, down to tracking.low_score_threshold);
- precision: of the published detections at the publishing threshold, the share the model
  finds offline at that threshold;
- found offline: of all published detections, weak tracked ones included, the share the model
  finds offline down to tracking.low_score_threshold.
Each must be at least 0.9. The strict recall (published at the threshold too) is printed; its
misses are scores close to the threshold that compression moved across it.
Ten frames at 2 fps per camera keep it short on a 2-core machine.
"""
import signal
import textwrap
from pathlib import Path
from typing import Dict, List, Tuple

import numpy as np
import pytest
from rclpy.node import Node
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import Image
from vision_msgs.msg import Detection2DArray

from multicam_ros.core.models import ModelConfig, load_detector
from multicam_ros.core.models.base import Detections
from multicam_ros.core.tracking import TrackerConfig
from multicam_ros.ros.convert import bgr_from_image
from multicam_testbed import footage_server, frame_code
from multicam_testbed.footage import DEMO_CUTS, FootageError, source_frames
from ros_helpers import ExecutorThread, TopicRecorder, stamp_ns, wait_for

pytestmark = pytest.mark.timeout(300)

CUTS = {'whole': DEMO_CUTS[0], 'crop': DEMO_CUTS[2]}
FRAMES_PER_CAMERA = 10
CAMERA_FPS = 2.0
THRESHOLD = 0.5  # confidence_threshold: what is published
IOU = 0.5
WANTED = 0.9
DEEP = QoSProfile(depth=50, reliability=ReliabilityPolicy.RELIABLE)

Box = Tuple[str, float, np.ndarray]  # class name, score, x1 y1 x2 y2


def iou(a: np.ndarray, b: np.ndarray) -> float:
    top_left, bottom_right = np.maximum(a[:2], b[:2]), np.minimum(a[2:], b[2:])
    inter = float(np.prod(np.clip(bottom_right - top_left, 0, None)))
    union = float(np.prod(a[2:] - a[:2]) + np.prod(b[2:] - b[:2])) - inter
    return inter / union if union > 0 else 0.0


def matched(found: List[Box], reference: List[Box]) -> int:
    """How many of `found` match a distinct box of `reference` of the same class at IOU
    (greedy, best IoU first)."""
    pairs = sorted(((iou(f[2], r[2]), i, j) for i, f in enumerate(found)
                    for j, r in enumerate(reference) if f[0] == r[0]), reverse=True)
    used_f, used_r, count = set(), set(), 0
    for overlap, i, j in pairs:
        if overlap >= IOU and i not in used_f and j not in used_r:
            used_f.add(i)
            used_r.add(j)
            count += 1
    return count


def published_boxes(msg: Detection2DArray) -> List[Box]:
    boxes = []
    for detection in msg.detections:
        box = detection.bbox
        x, y, w, h = box.center.position.x, box.center.position.y, box.size_x, box.size_y
        hypothesis = detection.results[0].hypothesis
        boxes.append((hypothesis.class_id, hypothesis.score,
                      np.array([x - w / 2, y - h / 2, x + w / 2, y + h / 2])))
    return boxes


def offline_boxes(result: Detections, names: List[str]) -> List[Box]:
    return [(names[c], float(s), b.astype(np.float64)) for b, s, c in
            zip(result.boxes_xyxy, result.scores, result.class_ids.tolist())]


def write_config(path: Path, urls: Dict[str, str]) -> Path:
    cameras = ''.join(f'  - {{name: {name}, url: "{url}"}}\n' for name, url in urls.items())
    path.write_text(f'camera_defaults:\n  fps: {CAMERA_FPS}\ncameras:\n' + cameras
                    + textwrap.dedent(f"""\
        detector:
          model: {{backend: nanodet}}
          device: cpu
          confidence_threshold: {THRESHOLD}
          tracking: {{enabled: true}}
        """))
    return path


def test_published_detections_match_the_model_offline_on_the_same_source_frames(
        rtsp_gstreamer_ready, node_launcher, ros_context, tmp_path):
    try:
        server = footage_server(list(CUTS.values())).start()
    except FootageError as exc:
        pytest.fail(str(exc), pytrace=False)
    try:
        urls = dict(zip(CUTS, server.urls))
        launcher = node_launcher.start(
            ['multicam-ros', 'launch', str(write_config(tmp_path / 'cams.yaml', urls)),
             '--status-period', '0'], name='launch')
        probe = Node('probe', context=ros_context)
        images = {name: TopicRecorder(probe, Image, f'/{name}/image_raw', DEEP) for name in CUTS}
        results = {name: TopicRecorder(probe, Detection2DArray, f'/{name}/detections', DEEP)
                   for name in CUTS}

        def pairs(name: str) -> Dict[int, Tuple[Image, Detection2DArray]]:
            frames = {stamp_ns(m.header): m for m in images[name].messages}
            return {stamp_ns(r.header): (frames[stamp_ns(r.header)], r)
                    for r in results[name].messages if stamp_ns(r.header) in frames}

        with ExecutorThread(ros_context, [probe]):
            assert wait_for(lambda: all(len(pairs(n)) >= FRAMES_PER_CAMERA for n in CUTS),
                            200.0, 0.5), ({n: len(pairs(n)) for n in CUTS},
                                          launcher.output()[-4000:])
            collected = {name: sorted(pairs(name).items())[:FRAMES_PER_CAMERA] for name in CUTS}
        assert launcher.stop(signal.SIGINT, timeout_s=30.0) == 0, launcher.output()[-3000:]
    finally:
        server.stop()

    # Which source frame each published result belongs to, read from its image_raw frame.
    traced: List[Tuple[str, int, List[Box]]] = []
    tracked = 0
    for name, items in collected.items():
        for _, (image, result) in items:
            index = frame_code.read(bgr_from_image(image))
            assert index is not None, f'{name}: a frame without a readable source index'
            cut = CUTS[name]
            assert cut.start <= index < cut.start + cut.length, (name, index)
            traced.append((name, index, published_boxes(result)))
            tracked += sum(1 for d in result.detections if d.id)
    assert tracked > 0, 'no detection carries a track id: tracking is not on'

    # The same model offline on those very source frames, rendered as the test bed did.
    low = TrackerConfig().low_score_threshold
    model = load_detector(ModelConfig(backend='nanodet', device='cpu', confidence_threshold=low))
    sources = source_frames({index for _, index, _ in traced})
    offline = model.infer([CUTS[name].render(sources[index], index)
                           for name, index, _ in traced])

    # Per camera: offline at the threshold, of those published (any score / at the threshold),
    # published at the threshold, of those offline, published in all, of those offline.
    totals = {name: np.zeros(7, int) for name in CUTS}
    for (name, index, published), result in zip(traced, offline):
        everything = offline_boxes(result, model.class_names)
        reference = [box for box in everything if box[1] >= THRESHOLD]
        confident = [box for box in published if box[1] >= THRESHOLD]
        totals[name] += [len(reference), matched(reference, published),
                         matched(reference, confident), len(confident),
                         matched(confident, reference), len(published),
                         matched(published, everything)]
    totals['both'] = sum(totals.values())
    frames = {**{name: len(items) for name, items in collected.items()},
              'both': sum(len(items) for items in collected.values())}
    rows = {name: (frames[name], ref, hit / max(ref, 1), strict / max(ref, 1),
                   precise / max(pub, 1), every, found / max(every, 1))
            for name, (ref, hit, strict, pub, precise, every, found) in totals.items()}
    print('\ncamera  frames  offline  recall  strict recall  precision  published  '
          'found offline')
    for name, row in rows.items():
        print('{:<6}  {:>6}  {:>7}  {:>6.3f}  {:>13.3f}  {:>9.3f}  {:>9}  {:>13.3f}'.format(
            name, *row))
    _, reference_count, recall, _, precision, _, found = rows['both']
    assert reference_count >= 20, 'too few detections on these frames to judge'
    assert recall >= WANTED, rows
    assert precision >= WANTED, rows
    assert found >= WANTED, rows
