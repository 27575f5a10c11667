"""Newest-item slots for many cameras, and fair batches across them. ROS-free.

Whatever fills a camera's slot (a ROS subscription) only calls `put`. A newer frame replaces an
unprocessed older one, which is counted as dropped: no queue ever grows, so under overload
frames are dropped, never delayed. A camera may also have a *source* that the collecting thread
asks for the camera's newest frame at batch time (shared memory: nothing is read or copied for
a frame that a newer one replaces before the batch).
"""
import threading
import time
from dataclasses import dataclass
from typing import Callable, Dict, Generic, List, Optional, Sequence, Tuple, TypeVar

from multicam_ros.core.frames import LatestFrameSlot

T = TypeVar('T')  # what the slots hold: InputFrame for the model, results for the output stage
# A camera's source: its newest item and how many older ones it had that nobody will take, or
# None when it has nothing new. Called only by the thread that collects.
Source = Callable[[], Optional[Tuple[T, int]]]


@dataclass(frozen=True)
class CameraCounts:
    received: int
    processed: int
    dropped: int


class BatchCollector(Generic[T]):
    """One LatestFrameSlot per camera, and `collect`, which takes one batch of newest frames.

    Fair: when more cameras have frames than fit in a batch, the next batch starts with the
    cameras that were left out, so no camera starves. Cameras with a source (`sources`) are
    asked for their newest item as well, every `poll_period_s` while the collector waits.
    """

    def __init__(self, cameras: Sequence[str], sources: Optional[Dict[str, Source]] = None,
                 poll_period_s: float = 0.002) -> None:
        if len(set(cameras)) != len(cameras):
            raise ValueError(f'cameras must be unique, got {list(cameras)}')
        self.cameras: Tuple[str, ...] = tuple(cameras)
        self._slots: Dict[str, LatestFrameSlot[T]] = {
            camera: LatestFrameSlot() for camera in cameras}
        self._sources = dict(sources or {})
        unknown = set(self._sources) - set(self.cameras)
        if unknown:
            raise ValueError(f'sources for cameras that are not collected: {sorted(unknown)}')
        self._poll_period_s = poll_period_s
        self._polled = {camera: [0, 0] for camera in self._sources}  # taken, skipped
        self._ready = threading.Condition()
        self._puts = 0  # under _ready: lets `collect` tell a put it has not seen yet
        self._next_start = 0
        self._closed = False

    def put(self, camera: str, item: T) -> None:
        """Make `item` the newest of `camera` (replacing, and dropping, an unprocessed one)."""
        self._slots[camera].put(item)
        with self._ready:
            self._puts += 1
            self._ready.notify()

    def collect(self, max_batch_size: int,
                timeout_s: Optional[float] = None) -> List[Tuple[str, T]]:
        """Wait until some camera has a frame; return up to `max_batch_size` (camera, frame)
        pairs, at most one per camera. Empty on timeout or after `close`. One thread only:
        the sources are asked on it, outside any lock."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while True:
            with self._ready:
                puts, closed = self._puts, self._closed
            batch = self._take(max_batch_size)
            if batch or closed:
                return batch
            remaining_s = None if deadline is None else deadline - time.monotonic()
            if remaining_s is not None and remaining_s <= 0:
                return []
            if self._sources:
                remaining_s = min(remaining_s or self._poll_period_s, self._poll_period_s)
            with self._ready:
                if self._puts == puts and not self._closed:
                    self._ready.wait(remaining_s)

    def _take(self, max_batch_size: int) -> List[Tuple[str, T]]:
        count = len(self.cameras)
        batch = []
        for offset in range(count):
            index = (self._next_start + offset) % count
            camera = self.cameras[index]
            frame = self._slots[camera].take(timeout_s=0)
            if frame is None and camera in self._sources:
                frame = self._from_source(camera)
            if frame is not None:
                batch.append((camera, frame))
                if len(batch) == max_batch_size:
                    self._next_start = (index + 1) % count
                    break
        return batch

    def _from_source(self, camera: str) -> Optional[T]:
        got = self._sources[camera]()
        if got is None:
            return None
        item, skipped = got
        with self._ready:
            counts = self._polled[camera]
            counts[0] += 1
            counts[1] += skipped
        return item

    def close(self) -> None:
        """Wake `collect` for good (shutdown)."""
        with self._ready:
            self._closed = True
            self._ready.notify_all()

    def counts(self, camera: str) -> CameraCounts:
        """Frames received, taken into a batch and dropped unprocessed, by both ways in."""
        slot = self._slots[camera]
        with self._ready:
            taken, skipped = self._polled.get(camera, (0, 0))
        return CameraCounts(slot.put_count + taken + skipped, slot.taken_count + taken,
                            slot.dropped_count + skipped)
