"""The inference thread: newest frame of every camera -> one batch -> one forward pass ->
per-camera results, handed to the result stage, whose own thread does the per-camera output
work (the node's callback: tracking, messages, drawing). ROS-free."""
import collections
import logging
import threading
import time
from typing import Callable, Counter, List, Optional, Sequence

from multicam_ros.core.batching import BatchCollector
from multicam_ros.core.frames import InputFrame
from multicam_ros.core.models.base import Detections, Detector
from multicam_ros.core.stats import LatencyWindow

ResultCallback = Callable[[str, InputFrame, Detections], None]
# A batch's frames -> the same frames ready for the model, None for each one to drop
Stage = Callable[[List[InputFrame]], List[Optional[InputFrame]]]
_LOG = logging.getLogger(__name__)


class _SlotThread:
    """A daemon thread serving one BatchCollector until `stop`; says each distinct problem
    once (up to 100 of them), not once per frame."""

    def __init__(self, slots: BatchCollector, name: str,
                 on_error: Optional[Callable[[str], None]]) -> None:
        self._slots = slots
        self._on_error = on_error or (lambda text: _LOG.error(text))
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._reported: set = set()

    def start(self):
        self._thread.start()
        return self

    def stop(self, timeout_s: float = 2.0) -> None:
        self._stop.set()
        self._slots.close()
        self._thread.join(timeout_s)

    @property
    def stopped(self) -> bool:
        """True once the thread has ended (or never started)."""
        return not self._thread.is_alive()

    def _report_once(self, text: str) -> None:
        if text not in self._reported and len(self._reported) < 100:
            self._reported.add(text)
            self._on_error(text)

    def _run(self) -> None:
        raise NotImplementedError


class InferenceWorker(_SlotThread):
    """Runs batches through `detector` until `stop`; never queues, never waits for a camera.

    Frames left in shared memory (InputFrame.intact set) go through `stage` first, which
    uploads them and drops those the camera overwrote meanwhile (preprocess.DeviceStager);
    without a stage they are checked once the model has read them, and a result whose frame
    was overwritten meanwhile is dropped.
    """

    def __init__(self, collector: BatchCollector, detector: Detector, on_result: ResultCallback,
                 max_batch_size: int, on_error: Optional[Callable[[str], None]] = None,
                 stage: Optional[Stage] = None,
                 on_batch_done: Optional[Callable[[], None]] = None) -> None:
        super().__init__(collector, 'inference', on_error)
        self._detector = detector
        self._stage = stage
        self._on_result = on_result
        self._on_batch_done = on_batch_done  # after a batch's results were handed over
        self._max_batch_size = max_batch_size
        self._lock = threading.Lock()
        self.batch_sizes: Counter[int] = collections.Counter()
        self.inference_time = LatencyWindow()  # a batch through `stage` and the model
        self.handover_time = LatencyWindow()  # its results through on_result and on_batch_done
        self.errors = 0
        self.result_errors = 0

    def _run(self) -> None:
        last_error = ''
        while not self._stop.is_set():
            batch = self._slots.collect(self._max_batch_size, timeout_s=0.5)
            if not batch:
                continue
            started_s = time.monotonic()
            try:
                if self._stage is not None:
                    staged = self._stage([frame for _, frame in batch])
                    batch = [(camera, frame) for (camera, _), frame in zip(batch, staged)
                             if frame is not None]
                    if not batch:
                        continue
                results = self._detector.infer([frame.image for _, frame in batch])
            except Exception as exc:  # noqa: BLE001 - one bad batch must not end the detector
                with self._lock:
                    self.errors += 1
                text = f'inference failed on a batch of {len(batch)}: {type(exc).__name__}: {exc}'
                if text != last_error:  # say it once, not per batch
                    self._on_error(text)
                    last_error = text
                continue
            last_error = ''
            inferred_s = time.monotonic()
            self.inference_time.add(inferred_s - started_s)
            with self._lock:
                self.batch_sizes[len(batch)] += 1
            for (camera, frame), detections in zip(batch, results):
                if frame.intact is not None and not frame.intact():
                    continue  # overwritten while the model read it: counted as torn
                try:
                    self._on_result(camera, frame, detections)
                except Exception as exc:  # noqa: BLE001 - one camera's failure is its own
                    if self._stop.is_set():
                        return
                    with self._lock:
                        self.result_errors += 1
                    self._report_once(f'{camera}: handing over results failed: '
                                      f'{type(exc).__name__}: {exc}')
            if self._on_batch_done is not None:
                try:
                    self._on_batch_done()
                except Exception as exc:  # noqa: BLE001 - the next batch may fare better
                    if self._stop.is_set():
                        return
                    self._report_once(f'handing over a batch failed: {type(exc).__name__}: '
                                      f'{exc}')
            self.handover_time.add(time.monotonic() - inferred_s)

    def batch_summary(self) -> dict:
        """Counts of batches by size, largest and mean size, total batches."""
        with self._lock:
            sizes = dict(self.batch_sizes)
            errors = self.errors + self.result_errors
        total = sum(sizes.values())
        mean = sum(size * n for size, n in sizes.items()) / total if total else 0.0
        return {'batches': total, 'mean': mean, 'max': max(sizes, default=0),
                'histogram': dict(sorted(sizes.items())), 'errors': errors}


class ResultStage(_SlotThread):
    """Per-camera output work (tracking, messages, drawing, publishing) on a thread of its own,
    so that the inference thread starts the next batch at once instead of waiting for it.

    `put` is all the inference thread does per result: it keeps the newest result of each
    camera (a result the stage had not taken yet is replaced and counted in `dropped`, exactly
    like frames in the newest-frame slots). The stage's thread hands results to `handle` in
    order per camera, so a camera's tracker, owned by this thread alone, sees its frames in
    capture order.
    """

    def __init__(self, cameras: Sequence[str], handle: ResultCallback,
                 on_error: Optional[Callable[[str], None]] = None) -> None:
        super().__init__(BatchCollector(cameras), 'results', on_error)
        self._handle = handle

    def put(self, camera: str, frame: InputFrame, detections: Detections) -> None:
        self._slots.put(camera, (frame, detections))

    def dropped(self, camera: str) -> int:
        """Results of `camera` replaced before the stage took them."""
        return self._slots.counts(camera).dropped

    def _run(self) -> None:
        everyone = len(self._slots.cameras)
        while not self._stop.is_set():
            for camera, (frame, detections) in self._slots.collect(everyone, timeout_s=0.5):
                try:
                    self._handle(camera, frame, detections)
                except Exception as exc:  # noqa: BLE001 - one camera's failure is its own
                    if self._stop.is_set():
                        return
                    self._report_once(f'{camera}: handling results failed: '
                                      f'{type(exc).__name__}: {exc}')
