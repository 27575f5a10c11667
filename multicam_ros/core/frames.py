"""Frame types and the newest-frame slot: the one seam between where a frame comes from
(capture, a subscription, shared memory) and what consumes it. ROS-free, no OpenCV.

A slot keeps only the newest item: a newer one replaces an unconsumed older one, which is
counted as dropped, so under overload frames are dropped, never queued or delayed.
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Generic, Optional, TypeVar

import numpy as np

T = TypeVar('T')


@dataclass(frozen=True)
class Frame:
    """One decoded frame: BGR pixels, capture stamp (injected clock, ns), sequence number."""

    image: np.ndarray
    stamp_ns: int
    seq: int
    monotonic_s: float  # time.monotonic() at the same moment, for ages and latencies
    # Set while `image` is a view into a shared-memory slot that later frames overwrite: call
    # it after copying the pixels out; False means the copy may be torn (drop it).
    intact: Optional[Callable[[], bool]] = None


class LatestFrameSlot(Generic[T]):
    """Thread-safe single slot holding only the newest item.

    ``put`` overwrites; an overwritten item nobody took counts as dropped. ``take`` hands each
    item out at most once. ``close`` wakes every waiter; after it, ``take`` still returns an
    item already in the slot, then None at once.
    """

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._item: Optional[T] = None
        self._closed = False
        self._put_count = 0
        self._taken_count = 0
        self._dropped_count = 0

    def put(self, item: T) -> bool:
        """Store ``item`` as the newest; return True if it replaced an unconsumed item."""
        with self._cond:
            replaced = self._item is not None
            if replaced:
                self._dropped_count += 1
            self._item = item
            self._put_count += 1
            self._cond.notify_all()
            return replaced

    def take(self, timeout_s: Optional[float] = None) -> Optional[T]:
        """Return the newest unconsumed item, waiting up to ``timeout_s``; None on timeout.

        ``timeout_s=None`` waits until an item arrives or the slot is closed; 0 polls.
        """
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        with self._cond:
            while self._item is None and not self._closed:
                if deadline is None:
                    self._cond.wait()
                else:
                    remaining_s = deadline - time.monotonic()
                    if remaining_s <= 0:
                        return None
                    self._cond.wait(remaining_s)
            if self._item is None:
                return None
            item, self._item = self._item, None
            self._taken_count += 1
            return item

    def close(self) -> None:
        """Wake all waiters; ``take`` no longer waits (the worker closes it on stop/ENDED)."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    @property
    def closed(self) -> bool:
        """True once ``close`` was called."""
        with self._cond:
            return self._closed

    @property
    def put_count(self) -> int:
        """Items ever put."""
        with self._cond:
            return self._put_count

    @property
    def taken_count(self) -> int:
        """Items handed out by ``take``."""
        with self._cond:
            return self._taken_count

    @property
    def dropped_count(self) -> int:
        """Items overwritten before anyone took them (stale frames dropped)."""
        with self._cond:
            return self._dropped_count


@dataclass(frozen=True)
class InputFrame:
    """A camera frame waiting for the model."""

    # H x W x 3 uint8, BGR: a numpy array, or a torch tensor on the model's device once
    # uploaded straight from shared memory
    image: Any
    stamp_ns: int  # capture stamp from the source's header
    received_s: float  # time.monotonic() when it reached the detector
    frame_id: str = ''  # of the source's header: results carry the same stamp and frame_id
    # Set while `image` is a view into shared memory that the camera may overwrite: call it
    # once the pixels were copied or uploaded; False means they may be torn (drop the frame).
    intact: Optional[Callable[[], bool]] = None


def host_pixels(image: Any) -> np.ndarray:
    """An InputFrame's pixels as a numpy array (downloaded if they are on a device)."""
    return image if isinstance(image, np.ndarray) else image.cpu().numpy()
