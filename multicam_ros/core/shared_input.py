"""The detector's shared-memory input: cameras' newest frames from their shm_frames channels
into the newest-frame slots, on a thread of its own. ROS-free.

The subscription path costs about 10 ms of CPU, with the GIL held, per 720p image message;
this path costs one memory copy, made by numpy with the GIL released, straight into the
buffer that `allocate` hands out (page-locked memory on CUDA, so the upload is one DMA with no
further copy). Per frame the Python work is the same whatever the pixel count: a poll of one
sequence word, the copy, and an InputFrame.

A camera is fed only while it is `active`: the node chooses per camera between this path and
its image subscription (see `channel_live`), so no frame arrives twice. A thread polls every
active camera of its share each `poll_period_s` (checking 64 quiet channels costs about 90 us).
One thread copies about 1100 720p frames a second (H200 host, bench/NOTES.md), so the cameras
are shared among one thread per CAMERAS_PER_THREAD of them, up to MAX_THREADS; each camera's
reader belongs to one thread.
"""
import logging
import threading
import time
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional

import cv2
import numpy as np

from multicam_ros.core.frames import InputFrame
from multicam_ros.core.shm_frames import FrameReader, channel_status, remove_stale_segments

_LOG = logging.getLogger(__name__)
_TO_BGR = {'rgb8': cv2.COLOR_RGB2BGR, 'mono8': cv2.COLOR_GRAY2BGR}
Allocate = Callable[[int], np.ndarray]  # nbytes -> a writable uint8 buffer of that size
CAMERAS_PER_THREAD = 16  # 480 frames a second at 30 fps: under half of what a thread copies
MAX_THREADS = 4


def channel_live(channel: str) -> bool:
    """Whether a live camera process writes `channel` now (one system call). The segment of a
    writer that died is removed on the way, so no dead camera's segment outlives this check."""
    status = channel_status(channel)
    if status is not None and not status.writer_alive:
        remove_stale_segments(channel)
    return status is not None and status.writer_alive


def plain_buffer(nbytes: int) -> np.ndarray:
    """An ordinary host buffer (the CPU device; CUDA uses pinned memory instead)."""
    return np.empty(nbytes, dtype=np.uint8)


@dataclass(frozen=True)
class SharedCounts:
    """What the shared-memory path did for one camera."""

    frames: int  # taken from shared memory
    torn: int  # copies discarded because the camera overwrote the slot meanwhile
    too_large: int = 0  # refused before the copy: over the size limits


def feeder_threads(cameras: int) -> int:
    """How many threads feed `cameras` cameras: one per CAMERAS_PER_THREAD, 1 to MAX_THREADS."""
    return max(1, min(MAX_THREADS, -(-cameras // CAMERAS_PER_THREAD)))


class SharedFrameFeeder:
    """Polls the channels of the active cameras and puts each new frame into its camera's slot
    with `put(camera, frame)`, on `feeder_threads` threads; camera i belongs to thread
    i mod threads, and so does its reader."""

    def __init__(self, channels: Dict[str, str], put: Callable[[str, InputFrame], None],
                 allocate: Allocate = plain_buffer, poll_period_s: float = 0.002,
                 max_pixels: int = 2**31 - 1, max_bytes: int = 2**31 - 1) -> None:
        self._channels = dict(channels)  # camera -> channel
        self._max_pixels = max_pixels
        self._max_bytes = max_bytes
        self._put = put
        self._allocate = allocate
        self._poll_period_s = poll_period_s
        self._active = {camera: False for camera in channels}
        self._readers: Dict[str, FrameReader] = {}
        self._counts = {camera: SharedCounts(0, 0) for camera in channels}
        self._torn_before = {camera: 0 for camera in channels}  # of readers since replaced
        self._lock = threading.Lock()
        self._stop = threading.Event()
        count = feeder_threads(len(channels))
        shares = [list(channels)[index::count] for index in range(count)]
        self._threads = [threading.Thread(target=self._run, args=(share,), daemon=True,
                                          name='shared_input' + (f'_{index}' if index else ''))
                         for index, share in enumerate(shares)]

    def channel(self, camera: str) -> str:
        return self._channels[camera]

    def set_active(self, camera: str, active: bool) -> None:
        """Feed `camera` from shared memory (True) or leave it to the subscription (False)."""
        with self._lock:
            self._active[camera] = active

    def counts(self, camera: str) -> SharedCounts:
        with self._lock:
            return self._counts[camera]

    @property
    def thread_count(self) -> int:
        return len(self._threads)

    def start(self) -> 'SharedFrameFeeder':
        for thread in self._threads:
            thread.start()
        return self

    def stop(self, timeout_s: float = 1.0) -> None:
        self._stop.set()
        deadline_s = time.monotonic() + timeout_s
        for thread in self._threads:
            thread.join(max(0.0, deadline_s - time.monotonic()))
        if not any(thread.is_alive() for thread in self._threads):
            for reader in list(self._readers.values()):
                reader.close()

    def _run(self, share: List[str]) -> None:
        while not self._stop.is_set():
            with self._lock:
                active = [camera for camera in share if self._active[camera]]
            took = False
            for camera in active:
                try:
                    took |= self._feed(camera)
                except Exception as exc:  # noqa: BLE001 - one camera's channel is its own
                    _LOG.error('%s: reading shared memory failed: %s: %s', camera,
                               type(exc).__name__, exc)
                    self._drop_reader(camera)
            if not took:
                self._stop.wait(self._poll_period_s)

    def _feed(self, camera: str) -> bool:
        reader = self._readers.get(camera)
        if reader is None:
            reader = self._readers[camera] = FrameReader(self._channels[camera])
        announced = reader.poll()
        if announced is None:
            return False
        if (announced.width * announced.height > self._max_pixels
                or announced.nbytes > self._max_bytes):
            reader.skip(announced)  # refused before any copy or allocation
            self._count(camera, reader, too_large=1)
            if self.counts(camera).too_large == 1:
                _LOG.warning('%s: refusing %dx%d frames from shared memory (%d bytes): over '
                             'max_frame_pixels %d or max_frame_bytes %d', camera,
                             announced.width, announced.height, announced.nbytes,
                             self._max_pixels, self._max_bytes)
            return False
        buffer = self._allocate(announced.nbytes)
        info = reader.read_into(buffer)
        self._count(camera, reader, frames=int(info is not None))
        if info is None:
            return False
        image = info.view(buffer)
        if info.encoding != 'bgr8':
            image = cv2.cvtColor(image, _TO_BGR[info.encoding])
        self._put(camera, InputFrame(image=image, stamp_ns=info.stamp_ns,
                                     received_s=time.monotonic(), frame_id=info.frame_id))
        return True

    def _count(self, camera: str, reader: FrameReader, frames: int = 0,
               too_large: int = 0) -> None:
        with self._lock:
            old = self._counts[camera]
            self._counts[camera] = SharedCounts(
                old.frames + frames, self._torn_before[camera] + reader.torn_count,
                old.too_large + too_large)

    def _drop_reader(self, camera: str) -> None:
        reader: Optional[FrameReader] = self._readers.pop(camera, None)
        if reader is not None:
            self._torn_before[camera] += reader.torn_count
            reader.close()
