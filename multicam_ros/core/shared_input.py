"""The detector's shared-memory input: each camera's newest frame, taken from its shm_frames
channel at batch time by the inference thread itself. ROS-free.

The subscription path costs about 10 ms of CPU, with the GIL held, per 720p image message.
This path reads nothing until a batch wants the camera's frame, so a frame that a newer one
replaces in shared memory costs nothing at all; per frame taken, the Python work is the same
whatever the pixel count. A frame is taken one of two ways:

- **in place** (CUDA): the camera's slots are page-locked for the GPU once per segment
  (`page_lock`, cudaHostRegister), and the frame is handed on as a view into shared memory
  with an `intact` check. The inference thread uploads it straight from there (one DMA, no
  CPU copy) and keeps it only if the slot still held that frame once the upload finished
  (preprocess.DeviceStager);
- **by copy** (the CPU, or where page-locking is refused): one numpy copy, GIL released, into
  a buffer from `allocate` (page-locked memory on CUDA), validated by the reader as it copies.

A camera is read only while it is `active`: the node chooses per camera between this path and
its image subscription (see `channel_live`), so no frame arrives twice. Readers, their
mappings and page-locks belong to the collecting thread; `set_active` and `counts` may be
called from any thread.
"""
import logging
import threading
import time
from dataclasses import dataclass
from typing import Callable, Dict, Optional, Tuple

import cv2
import numpy as np

from multicam_ros.core.frames import InputFrame
from multicam_ros.core.shm_frames import FrameInfo, FrameReader, channel_status, \
    remove_stale_segments

_LOG = logging.getLogger(__name__)
_TO_BGR = {'rgb8': cv2.COLOR_RGB2BGR, 'mono8': cv2.COLOR_GRAY2BGR}
Allocate = Callable[[int], np.ndarray]  # nbytes -> a writable uint8 buffer of that size
# Page-lock an array for uploads: the function that undoes it, or None where it cannot be done.
PageLock = Callable[[np.ndarray], Optional[Callable[[], None]]]
# The node's say on a frame read for a batch (e.g. not older than the last one): True keeps it.
Accept = Callable[[str, InputFrame, int], bool]


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
    torn: int  # discarded because the camera overwrote the slot during the copy or upload
    too_large: int = 0  # refused before the copy: over the size limits
    in_place: int = 0  # of `frames`, uploaded straight from shared memory


class _Camera:
    """One camera's reader, the page-lock of its current segment, and its counts."""

    def __init__(self, channel: str) -> None:
        self.channel = channel
        self.reader = FrameReader(channel)
        self.active = False
        self.locked_attachment = -1  # the reader's attachment whose slots are page-locked
        self.locked: Optional[Tuple[np.ndarray, Callable[[], None]]] = None
        self.last_taken: Optional[Tuple[int, int]] = None  # (attachment, seq)
        self.counts = SharedCounts(0, 0)


class SharedFrameSource:
    """`take(camera)`: the newest frame of an active camera's channel, for the collecting
    thread (batching.BatchCollector's source), or None when there is none."""

    def __init__(self, channels: Dict[str, str], accept: Optional[Accept] = None,
                 allocate: Allocate = plain_buffer, page_lock: Optional[PageLock] = None,
                 max_pixels: int = 2**31 - 1, max_bytes: int = 2**31 - 1) -> None:
        self._cameras = {camera: _Camera(channel) for camera, channel in channels.items()}
        self._accept = accept or (lambda camera, frame, skipped: True)
        self._allocate = allocate
        self._page_lock = page_lock
        self._max_pixels = max_pixels
        self._max_bytes = max_bytes
        self._lock = threading.Lock()  # guards `active` and `counts`

    def channel(self, camera: str) -> str:
        return self._cameras[camera].channel

    def set_active(self, camera: str, active: bool) -> None:
        """Read `camera` from shared memory (True) or leave it to the subscription (False)."""
        with self._lock:
            self._cameras[camera].active = active

    def counts(self, camera: str) -> SharedCounts:
        with self._lock:
            return self._cameras[camera].counts

    def source(self, camera: str) -> Callable[[], Optional[Tuple[InputFrame, int]]]:
        """`camera`'s source for batching.BatchCollector."""
        return lambda: self.take(camera)

    def take(self, camera: str) -> Optional[Tuple[InputFrame, int]]:
        """(the newest untaken frame, how many frames the camera wrote since the last one
        taken), or None. Never raises: a channel's failure is logged and its reader reset."""
        state = self._cameras[camera]
        with self._lock:
            if not state.active:
                return None
        try:
            return self._take(camera, state)
        except Exception as exc:  # noqa: BLE001 - one camera's channel is its own
            _LOG.error('%s: reading shared memory failed: %s: %s', camera,
                       type(exc).__name__, exc)
            self._reset(state)
            return None

    def close(self) -> None:
        """Undo the page-locks and unmap; only once the collecting thread is done with them."""
        for state in self._cameras.values():
            self._unlock(state)
            state.reader.close()

    def _take(self, camera: str, state: _Camera) -> Optional[Tuple[InputFrame, int]]:
        reader = state.reader
        announced = reader.poll()
        if announced is None:
            return None
        if (announced.width * announced.height > self._max_pixels
                or announced.nbytes > self._max_bytes):
            reader.skip(announced)  # refused before any copy or allocation
            if self._count(state, too_large=1).too_large == 1:
                _LOG.warning('%s: refusing %dx%d frames from shared memory (%d bytes): over '
                             'max_frame_pixels %d or max_frame_bytes %d', camera,
                             announced.width, announced.height, announced.nbytes,
                             self._max_pixels, self._max_bytes)
            return None
        torn_before = reader.torn_count
        got = self._read(state, announced)
        if reader.torn_count != torn_before:
            self._count(state, torn=reader.torn_count - torn_before)
        if got is None:
            return None
        info, image, intact = got
        skipped = self._skipped(state, info, reader.attachment)
        frame = InputFrame(image=image, stamp_ns=info.stamp_ns, received_s=time.monotonic(),
                           frame_id=info.frame_id, intact=intact)
        if not self._accept(camera, frame, skipped):
            return None
        self._count(state, frames=1, in_place=int(intact is not None))
        return frame, skipped

    def _read(self, state: _Camera, announced: FrameInfo
              ) -> Optional[Tuple[FrameInfo, np.ndarray, Optional[Callable[[], bool]]]]:
        """(what was read, its BGR pixels, its `intact` check if they were left in place)."""
        reader = state.reader
        if announced.encoding == 'bgr8' and self._lock_slots(state):
            image = reader.view(announced)  # of the segment just locked: same attachment
            if image is None:
                return None
            return announced, image, lambda: self._still_intact(state, announced)
        buffer = self._allocate(announced.nbytes)
        info = reader.read_into(buffer)
        if info is None:
            return None
        image = info.view(buffer)
        if info.encoding != 'bgr8':
            image = cv2.cvtColor(image, _TO_BGR[info.encoding])
        return info, image, None

    def _lock_slots(self, state: _Camera) -> bool:
        """Whether the slots of the reader's segment are page-locked (locking them now if
        they are new); False: take frames by copy."""
        if self._page_lock is None:
            return False
        reader = state.reader
        if state.locked_attachment == reader.attachment:
            return state.locked is not None
        self._unlock(state)
        state.locked_attachment = reader.attachment
        slots = reader.slot_memory()
        undo = self._page_lock(slots) if slots is not None else None
        if undo is None:
            _LOG.info('%s: page-locking its shared memory was refused: taking its frames by '
                      'copy', state.channel)
            return False
        state.locked = (slots, undo)
        return True

    @staticmethod
    def _unlock(state: _Camera) -> None:
        """Undo a page-lock while its mapping is still referenced (by `state.locked`)."""
        if state.locked is not None:
            state.locked[1]()
            state.locked = None
        state.locked_attachment = -1

    def _still_intact(self, state: _Camera, info: FrameInfo) -> bool:
        intact = state.reader.is_intact(info)
        if not intact:
            self._count(state, torn=1)
        return intact

    @staticmethod
    def _skipped(state: _Camera, info: FrameInfo, attachment: int) -> int:
        """Frames of the same segment written between the last frame taken and this one."""
        last, state.last_taken = state.last_taken, (attachment, info.seq)
        return info.seq - last[1] - 1 if last is not None and last[0] == attachment else 0

    def _count(self, state: _Camera, frames: int = 0, torn: int = 0, too_large: int = 0,
               in_place: int = 0) -> SharedCounts:
        with self._lock:
            old = state.counts
            state.counts = SharedCounts(old.frames + frames, old.torn + torn,
                                        old.too_large + too_large, old.in_place + in_place)
            return state.counts

    def _reset(self, state: _Camera) -> None:
        self._unlock(state)
        state.reader.close()
        state.reader = FrameReader(state.channel)
        state.last_taken = None
