"""Newest-frame slots across cameras, fair batches, and the inference thread."""
import threading
import time

import numpy as np
import pytest

from multicam_ros.core.batching import BatchCollector
from multicam_ros.core.frames import InputFrame
from multicam_ros.core.inference import InferenceWorker, ResultStage
from multicam_ros.core.models.base import Detections

pytestmark = pytest.mark.timeout(30)


def frame(stamp_ns: int, size=(4, 4)) -> InputFrame:
    return InputFrame(np.zeros((*size, 3), np.uint8), stamp_ns, time.monotonic())


def test_newer_frame_replaces_unprocessed_one_and_counts_the_drop():
    collector = BatchCollector(['/a', '/b'])
    for stamp in (1, 2, 3):
        collector.put('/a', frame(stamp))
    batch = collector.collect(8, timeout_s=0)
    assert [(cam, f.stamp_ns) for cam, f in batch] == [('/a', 3)]
    counts = collector.counts('/a')
    assert (counts.received, counts.processed, counts.dropped) == (3, 1, 2)
    assert collector.collect(8, timeout_s=0.05) == []  # never the same frame twice


def test_batch_takes_one_newest_frame_per_camera():
    collector = BatchCollector(['/a', '/b', '/c'])
    collector.put('/a', frame(10))
    collector.put('/c', frame(30))
    collector.put('/c', frame(31))
    batch = collector.collect(8, timeout_s=0)
    assert sorted((cam, f.stamp_ns) for cam, f in batch) == [('/a', 10), ('/c', 31)]


def test_fair_when_more_cameras_than_batch_slots():
    cameras = [f'/cam{i}' for i in range(5)]
    collector = BatchCollector(cameras)
    served = {camera: 0 for camera in cameras}
    for round_index in range(10):
        for camera in cameras:
            collector.put(camera, frame(round_index))
        for camera, _ in collector.collect(2, timeout_s=0):
            served[camera] += 1
    assert sum(served.values()) == 20
    assert max(served.values()) - min(served.values()) <= 1, served


def test_collect_waits_for_the_first_frame_and_close_wakes_it():
    collector = BatchCollector(['/a'])
    threading.Timer(0.1, lambda: collector.put('/a', frame(1))).start()
    started = time.monotonic()
    assert len(collector.collect(4, timeout_s=5.0)) == 1
    assert time.monotonic() - started < 2.0
    threading.Timer(0.1, collector.close).start()
    assert collector.collect(4) == []


def test_duplicate_cameras_rejected():
    with pytest.raises(ValueError, match='unique'):
        BatchCollector(['/a', '/a'])


class ScriptedDetector:
    """Model double: one box per image, sized from the image; records each batch."""

    class_names = ['thing']
    device = 'cpu'
    description = 'scripted'

    def __init__(self, delay_s: float = 0.0, fail_first: int = 0):
        self.batches = []
        self.delay_s = delay_s
        self.fail_first = fail_first

    def infer(self, images):
        self.batches.append(len(images))
        if self.fail_first:
            self.fail_first -= 1
            raise RuntimeError('bad batch')
        time.sleep(self.delay_s)
        return [Detections(np.array([[0, 0, im.shape[1], im.shape[0]]], np.float32),
                           np.array([0.9], np.float32), np.array([0])) for im in images]

    def memory_bytes(self):
        return 0


def test_worker_batches_cameras_and_returns_each_result_to_its_camera():
    collector = BatchCollector(['/a', '/b', '/c'])
    results = []
    detector = ScriptedDetector(delay_s=0.05)
    worker = InferenceWorker(collector, detector, lambda c, f, d: results.append((c, f, d)), 8)
    sizes = {'/a': (10, 20), '/b': (30, 40), '/c': (50, 60)}
    with_worker = worker.start()
    try:
        for stamp in range(20):
            for camera, size in sizes.items():
                collector.put(camera, frame(stamp, size))
            time.sleep(0.01)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and not results:
            time.sleep(0.01)
    finally:
        with_worker.stop()
    assert results
    for camera, input_frame, detections in results:
        height, width = sizes[camera]
        assert list(detections.boxes_xyxy[0]) == [0, 0, width, height]
        assert input_frame.image.shape[:2] == (height, width)
    assert max(detector.batches) > 1
    assert worker.batch_summary()['batches'] == len(detector.batches)
    dropped = sum(collector.counts(c).dropped for c in sizes)
    assert dropped > 0  # the model is slower than the cameras: drops, not a queue


def test_worker_survives_a_failing_batch_and_reports_once():
    collector = BatchCollector(['/a'])
    errors, results = [], []
    worker = InferenceWorker(collector, ScriptedDetector(fail_first=3),
                             lambda c, f, d: results.append(d), 4, on_error=errors.append)
    worker.start()
    try:
        for stamp in range(6):
            collector.put('/a', frame(stamp))
            time.sleep(0.05)
    finally:
        worker.stop()
    assert len(errors) == 1 and 'bad batch' in errors[0]
    assert worker.batch_summary()['errors'] == 3
    assert len(results) >= 2


def test_frames_overwritten_in_shared_memory_never_give_results():
    """Frames left in shared memory (InputFrame.intact set): with a stage, those it drops are
    never inferred; without one, a frame found overwritten once the model has read it gives
    no result. Intact ones go on as usual."""
    def in_place(stamp: int, whole: bool) -> InputFrame:
        return InputFrame(np.zeros((4, 4, 3), np.uint8), stamp, time.monotonic(),
                          intact=lambda: whole)

    for stage in (None, lambda frames: [None if f.intact and not f.intact() else f
                                        for f in frames]):
        collector = BatchCollector(['/a', '/b', '/c'])
        detector, results = ScriptedDetector(), []
        worker = InferenceWorker(collector, detector, lambda c, f, d: results.append(c), 8,
                                 stage=stage)
        collector.put('/a', in_place(1, whole=True))
        collector.put('/b', in_place(2, whole=False))
        collector.put('/c', frame(3))
        worker.start()
        try:
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and len(results) < 2:
                time.sleep(0.01)
            time.sleep(0.1)
        finally:
            worker.stop()
        assert sorted(results) == ['/a', '/c'], stage
        assert detector.batches == ([3] if stage is None else [2])


def test_host_pixels_of_frames_on_a_device_or_the_host():
    """What the result thread draws on: a frame uploaded from shared memory is a torch tensor
    (here on the CPU; on CUDA the same call downloads it), a copied one a numpy array."""
    import torch
    from multicam_ros.core.frames import host_pixels
    pixels = np.arange(4 * 5 * 3, dtype=np.uint8).reshape(4, 5, 3)
    assert host_pixels(pixels) is pixels
    np.testing.assert_array_equal(host_pixels(torch.from_numpy(pixels.copy())), pixels)


def test_slow_output_work_never_holds_up_the_next_batch():
    """While the result stage is stuck in one camera's output work (a slow publisher, a big
    drawing), the inference thread goes on batching; the stage keeps only each camera's newest
    result, counts the ones it replaced, and hands a camera's results over in capture order."""
    collector = BatchCollector(['/a', '/b'])
    release = threading.Event()
    handled = []

    def handle(camera, input_frame, detections):
        if not handled:
            release.wait(10.0)  # the first result blocks the stage
        handled.append((camera, input_frame.stamp_ns))

    stage = ResultStage(['/a', '/b'], handle).start()
    detector = ScriptedDetector()
    worker = InferenceWorker(collector, detector, stage.put, 4).start()
    try:
        for stamp in range(30):
            collector.put('/a', frame(stamp))
            collector.put('/b', frame(stamp))
            time.sleep(0.01)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and len(detector.batches) < 10:
            time.sleep(0.01)
        assert len(detector.batches) >= 10, detector.batches  # batching went on
        assert len(handled) == 0
        release.set()
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and len(handled) < 3:
            time.sleep(0.01)
    finally:
        worker.stop()
        stage.stop()
    assert stage.dropped('/a') + stage.dropped('/b') > 0
    for camera in ('/a', '/b'):
        stamps = [stamp for cam, stamp in handled if cam == camera]
        assert stamps == sorted(set(stamps)), stamps  # in order, never twice
