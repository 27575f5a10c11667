"""The inference thread: newest frame of every camera -> one batch -> one forward pass ->
per-camera results. ROS-free; the node passes a callback that publishes."""
import collections
import logging
import threading
import time
from typing import Callable, Counter, Optional

from multicam_ros.batching import BatchCollector, InputFrame
from multicam_ros.models.base import Detections, Detector
from multicam_ros.stats import LatencyWindow

ResultCallback = Callable[[str, InputFrame, Detections], None]
_LOG = logging.getLogger(__name__)


class InferenceWorker:
    """Runs batches through `detector` until `stop`; never queues, never waits for a camera."""

    def __init__(self, collector: BatchCollector, detector: Detector, on_result: ResultCallback,
                 max_batch_size: int, on_error: Optional[Callable[[str], None]] = None) -> None:
        self._collector = collector
        self._detector = detector
        self._on_result = on_result
        self._on_error = on_error or (lambda text: _LOG.error(text))
        self._max_batch_size = max_batch_size
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name='inference', daemon=True)
        self._lock = threading.Lock()
        self.batch_sizes: Counter[int] = collections.Counter()
        self.inference_time = LatencyWindow()
        self.errors = 0
        self.result_errors = 0

    def start(self) -> 'InferenceWorker':
        self._thread.start()
        return self

    def stop(self, timeout_s: float = 2.0) -> None:
        self._stop.set()
        self._collector.close()
        self._thread.join(timeout_s)

    def _run(self) -> None:
        last_error = ''
        reported = set()
        while not self._stop.is_set():
            batch = self._collector.collect(self._max_batch_size, timeout_s=0.5)
            if not batch:
                continue
            started_s = time.monotonic()
            try:
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
            self.inference_time.add(time.monotonic() - started_s)
            with self._lock:
                self.batch_sizes[len(batch)] += 1
            for (camera, frame), detections in zip(batch, results):
                try:
                    self._on_result(camera, frame, detections)
                except Exception as exc:  # noqa: BLE001 - one camera's failure is its own
                    if self._stop.is_set():
                        return
                    with self._lock:
                        self.result_errors += 1
                    text = f'{camera}: handling results failed: {type(exc).__name__}: {exc}'
                    if text not in reported and len(reported) < 100:  # each failure once
                        reported.add(text)
                        self._on_error(text)

    def batch_summary(self) -> dict:
        """Counts of batches by size, largest and mean size, total batches."""
        with self._lock:
            sizes = dict(self.batch_sizes)
            errors = self.errors + self.result_errors
        total = sum(sizes.values())
        mean = sum(size * n for size, n in sizes.items()) / total if total else 0.0
        return {'batches': total, 'mean': mean, 'max': max(sizes, default=0),
                'histogram': dict(sorted(sizes.items())), 'errors': errors}
