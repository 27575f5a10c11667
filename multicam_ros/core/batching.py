"""Newest-item slots for many cameras, and fair batches across them. ROS-free.

Whatever fills a camera's slot (a ROS subscription today; shared memory or in-process capture
later) only calls `put`. A newer frame replaces an unprocessed older one, which is counted as
dropped: no queue ever grows, so under overload frames are dropped, never delayed.
"""
import threading
import time
from dataclasses import dataclass
from typing import Dict, Generic, List, Optional, Sequence, Tuple, TypeVar

from multicam_ros.core.frames import LatestFrameSlot

T = TypeVar('T')  # what the slots hold: InputFrame for the model, results for the output stage


@dataclass(frozen=True)
class CameraCounts:
    received: int
    processed: int
    dropped: int


class BatchCollector(Generic[T]):
    """One LatestFrameSlot per camera, and `collect`, which takes one batch of newest frames.

    Fair: when more cameras have frames than fit in a batch, the next batch starts with the
    cameras that were left out, so no camera starves.
    """

    def __init__(self, cameras: Sequence[str]) -> None:
        if len(set(cameras)) != len(cameras):
            raise ValueError(f'cameras must be unique, got {list(cameras)}')
        self.cameras: Tuple[str, ...] = tuple(cameras)
        self._slots: Dict[str, LatestFrameSlot[T]] = {
            camera: LatestFrameSlot() for camera in cameras}
        self._ready = threading.Condition()
        self._next_start = 0
        self._closed = False

    def put(self, camera: str, item: T) -> None:
        """Make `item` the newest of `camera` (replacing, and dropping, an unprocessed one)."""
        self._slots[camera].put(item)
        with self._ready:
            self._ready.notify()

    def collect(self, max_batch_size: int,
                timeout_s: Optional[float] = None) -> List[Tuple[str, T]]:
        """Wait until some camera has a frame; return up to `max_batch_size` (camera, frame)
        pairs, at most one per camera. Empty on timeout or after `close`."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        with self._ready:
            while True:
                batch = self._take(max_batch_size)
                if batch or self._closed:
                    return batch
                remaining_s = None if deadline is None else deadline - time.monotonic()
                if remaining_s is not None and remaining_s <= 0:
                    return []
                self._ready.wait(remaining_s)

    def _take(self, max_batch_size: int) -> List[Tuple[str, T]]:
        count = len(self.cameras)
        batch = []
        for offset in range(count):
            index = (self._next_start + offset) % count
            camera = self.cameras[index]
            frame = self._slots[camera].take(timeout_s=0)
            if frame is not None:
                batch.append((camera, frame))
                if len(batch) == max_batch_size:
                    self._next_start = (index + 1) % count
                    break
        return batch

    def close(self) -> None:
        """Wake `collect` for good (shutdown)."""
        with self._ready:
            self._closed = True
            self._ready.notify_all()

    def counts(self, camera: str) -> CameraCounts:
        slot = self._slots[camera]
        return CameraCounts(slot.put_count, slot.taken_count, slot.dropped_count)
