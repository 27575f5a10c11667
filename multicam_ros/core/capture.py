"""Capture thread: read one source continuously, keep only the newest frame, heal itself.

ROS-free. ``CaptureWorker`` owns one ``cv2.VideoCapture``; every decoded frame goes into a
``LatestFrameSlot`` (overwrite = drop, counted), stamped with the injected clock right after
``grab()``. The worker reconnects forever with exponential backoff until ``stop()``.

OpenCV facts this relies on (checked with opencv-python-headless 5.0 / FFmpeg 8):
- ``CAP_PROP_OPEN_TIMEOUT_MSEC`` / ``CAP_PROP_READ_TIMEOUT_MSEC`` in the params list take
  effect (defaults are 30 s each). When the read timeout fires, grab() still returns True for
  a few frames flushed from the decoder (stale), then False forever: the worker reconnects
  as soon as one grab has taken read_timeout_s, without publishing those frames.
- ``release()`` from another thread does NOT unblock a blocked ``read()`` (and frees memory
  that read is still using), so there is no watchdog release here: a blocked call ends only
  through those timeouts, and ``stop()`` stops waiting for it after ``timeout_s``.
- If the interpreter exits normally while the (daemon) capture thread is still inside OpenCV
  and that call returns during finalization, libstdc++ aborts the process (SIGABRT, exit
  134). So when ``stop()`` returns False, end the process with ``os._exit()``.
"""
from __future__ import annotations

import collections
from dataclasses import dataclass
import enum
import logging
import random
import threading
import time
from typing import Callable, Optional

import cv2
import numpy as np

from multicam_ros.core.frames import Frame, LatestFrameSlot
from multicam_ros.core.settings import ConfigError, check_fields, setting
from multicam_ros.core.sources import RTSP_TRANSPORTS, Source, apply_rtsp_transport, \
    capture_params

_LOG = logging.getLogger(__name__)

Clock = Callable[[], int]


class CaptureState(str, enum.Enum):
    """Where a CaptureWorker is in its life."""

    CONNECTING = 'connecting'  # first open, until the first frame
    STREAMING = 'streaming'  # frames are arriving
    RECONNECTING = 'reconnecting'  # lost or never got the stream; backing off and reopening
    ENDED = 'ended'  # a video file ended and loop is off
    STOPPED = 'stopped'  # stop() was called and the thread has finished


StateCallback = Callable[[CaptureState, CaptureState, str], None]


class Backoff:
    """Exponential backoff with jitter: attempt n waits ~min_s * 2**n, capped at max_s.

    Each delay is drawn from [(1 - jitter_fraction) * base, base] and clamped to
    [min_s, max_s]; with jitter_fraction < 0.5 successive delays grow until the cap.
    """

    def __init__(self, min_s: float, max_s: float, jitter_fraction: float = 0.25,
                 rng: Optional[random.Random] = None) -> None:
        if not 0 < min_s <= max_s or not 0 <= jitter_fraction < 1:
            raise ValueError(f'backoff needs 0 < min_s <= max_s and 0 <= jitter_fraction < 1, '
                             f'got {min_s}, {max_s}, {jitter_fraction}')
        self.min_s = min_s
        self.max_s = max_s
        self.jitter_fraction = jitter_fraction
        self._rng = rng or random.Random()
        self._attempt = 0

    def next_delay_s(self) -> float:
        """The next delay to wait, in seconds."""
        base_s = min(self.max_s, self.min_s * (2.0 ** min(self._attempt, 62)))
        self._attempt += 1
        delay_s = base_s * (1.0 - self.jitter_fraction * self._rng.random())
        return min(self.max_s, max(self.min_s, delay_s))

    def reset(self) -> None:
        """Start again from min_s (after a stream came back)."""
        self._attempt = 0


@dataclass(frozen=True)
class CaptureOptions:
    """Everything a CaptureWorker needs besides the source; validated on creation. The
    `setting` fields are camera_node parameters (core/params.py)."""

    rtsp_transport: str = setting(
        'tcp', 'RTSP transport: tcp (robust) or udp (lower latency on a clean network, loses '
        'frames on a lossy one).', choices=RTSP_TRANSPORTS)
    open_timeout_s: float = setting(
        5.0, 'Give up opening the stream after this long.', min_value=0.1, max_value=600.0)
    read_timeout_s: float = setting(
        3.0, 'Reconnect when no frame arrived for this long.', min_value=0.1, max_value=600.0)
    reconnect_delay_min_s: float = setting(
        0.5, 'First delay before reconnecting; it doubles (with jitter) after each failed '
        'attempt.', min_value=0.01, max_value=600.0)
    reconnect_delay_max_s: float = setting(
        10.0, 'Longest delay between reconnect attempts.', min_value=0.01, max_value=3600.0)
    loop: bool = setting(True, 'Video files only: start again at the end instead of stopping.')
    decode_threads: int = setting(
        0, 'Threads FFmpeg decodes the stream with; 0 lets FFmpeg choose (about one per core). '
        'A few per camera can save CPU on a host that decodes many cameras.', min_value=0,
        max_value=64)
    jitter_fraction: float = 0.25
    pace_files: bool = True  # video files: deliver at the file's fps, not as fast as possible
    fps_window_s: float = 2.0  # sliding window of the capture fps
    max_consecutive_corrupt: int = 30  # undecodable frames in a row before reopening

    def __post_init__(self) -> None:
        check_fields(self)
        if self.reconnect_delay_min_s > self.reconnect_delay_max_s:
            raise ConfigError.of(
                'reconnect_delay_min_s', f'{self.reconnect_delay_min_s:g} is more than '
                f'reconnect_delay_max_s ({self.reconnect_delay_max_s:g})',
                'a delay no longer than reconnect_delay_max_s')
        if not 0 <= self.jitter_fraction < 1 or not self.fps_window_s > 0 \
                or self.max_consecutive_corrupt < 1:
            raise ValueError(f'invalid internal capture options: {self}')


@dataclass(frozen=True)
class CaptureStats:
    """A consistent snapshot of a worker's counters (all safe to log and publish)."""

    state: CaptureState
    frames_captured: int
    capture_fps: float
    frames_corrupt: int
    frames_dropped: int
    reconnect_attempts: int  # opens tried after the stream was lost or never came
    reconnects_succeeded: int  # times frames arrived again in state RECONNECTING
    last_frame_age_s: Optional[float]
    frame_width: int  # size of the last decoded frame, 0 before the first
    frame_height: int
    source_fps: float  # as reported by the stream or file, 0 if unknown
    last_error: str  # redacted
    recent_reconnect_delays_s: tuple[float, ...]


class _StreamEnd(enum.Enum):
    STOPPED = 'stopped'
    ENDED = 'ended'
    FAILED = 'failed'


class CaptureWorker:
    """A thread that reads ``source`` into ``slot`` and reconnects forever until ``stop()``.

    ``clock`` returns the capture stamp in ns (the ROS node passes its clock); it is called
    right after each successful ``grab()``. ``on_state_change(old, new, detail)`` runs on the
    worker thread once per state change, never per frame; ``detail`` is redacted.
    ``on_frame(frame)``, if given, runs on the worker thread for every decoded frame before it
    goes into ``slot``, and returns the frame to put there instead, or None to put nothing: work
    that must see every frame (camera_node's shared-memory write) is done there, not behind the
    slot, where a slow consumer loses the frames that newer ones replace. An exception in it is
    logged, and the frame goes into the slot as decoded.
    ``retrieve_into(width, height)``, if given, runs on the worker thread before each frame is
    converted from the decoder, with the size of the previous frame, and may return a writable
    uint8 H x W x 3 array to convert it into (camera_node's next shared-memory slot: the copy
    into it is saved). A frame of another shape goes into a new array instead; ``on_frame``
    tells which by identity (``frame.image is`` the array returned). An exception in it is
    logged and the frame converted as without it.
    """

    def __init__(self, source: Source, clock: Clock, options: Optional[CaptureOptions] = None,
                 on_state_change: Optional[StateCallback] = None,
                 slot: Optional[LatestFrameSlot[Frame]] = None, name: str = '',
                 rng: Optional[random.Random] = None,
                 on_frame: Optional[Callable[[Frame], Optional[Frame]]] = None,
                 retrieve_into: Optional[Callable[[int, int], Optional[np.ndarray]]] = None
                 ) -> None:
        self.source = source
        self.options = options or CaptureOptions()
        self.slot: LatestFrameSlot[Frame] = slot if slot is not None else LatestFrameSlot()
        self.name = name or source.safe_url
        self._clock = clock
        self._on_state_change = on_state_change
        self._on_frame = on_frame
        self._retrieve_into = retrieve_into
        self._backoff = Backoff(self.options.reconnect_delay_min_s,
                                self.options.reconnect_delay_max_s,
                                self.options.jitter_fraction, rng)
        self._stop_event = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name=f'capture[{self.name}]',
                                        daemon=True)
        self._state = CaptureState.CONNECTING
        self._seq = 0
        self._frames_captured = 0
        self._frames_corrupt = 0
        self._reconnect_attempts = 0
        self._reconnects_succeeded = 0
        self._last_frame_monotonic_s: Optional[float] = None
        self._frame_size = (0, 0)
        self._source_fps = 0.0
        self._last_error = ''
        self._delays_s: collections.deque[float] = collections.deque(maxlen=16)
        self._frame_times_s: collections.deque[float] = collections.deque(maxlen=4096)

    # -- control ---------------------------------------------------------------------------

    def start(self) -> 'CaptureWorker':
        """Start the capture thread; returns self."""
        self._thread.start()
        return self

    def stop(self, timeout_s: float = 2.0) -> bool:
        """Ask the thread to finish and wait up to ``timeout_s``; True if it has finished.

        Frame waiters are woken at once. If OpenCV is blocked inside an open or read, the
        thread finishes (and releases the capture) when that call's own timeout expires;
        False says that is still pending. The thread is a daemon and never delays exit, but
        a process that exits while it is pending must use ``os._exit`` (see module notes).
        """
        self._stop_event.set()
        self.slot.close()
        if not self._thread.is_alive():
            return True
        self._thread.join(timeout_s)
        return not self._thread.is_alive()

    def join(self, timeout_s: Optional[float] = None) -> bool:
        """Wait for the thread to finish (after ``stop`` or ENDED); True if it has."""
        self._thread.join(timeout_s)
        return not self._thread.is_alive()

    @property
    def running(self) -> bool:
        """True while the capture thread is alive."""
        return self._thread.is_alive()

    def __enter__(self) -> 'CaptureWorker':
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # -- observation -----------------------------------------------------------------------

    @property
    def state(self) -> CaptureState:
        """Current state."""
        with self._lock:
            return self._state

    def snapshot(self) -> CaptureStats:
        """All counters, taken together under the lock."""
        now_s = time.monotonic()
        with self._lock:
            times = self._frame_times_s
            while times and times[0] < now_s - self.options.fps_window_s:
                times.popleft()
            fps = 0.0
            if len(times) >= 2 and times[-1] > times[0]:
                fps = (len(times) - 1) / (times[-1] - times[0])
            last_s = self._last_frame_monotonic_s
            return CaptureStats(
                state=self._state,
                frames_captured=self._frames_captured,
                capture_fps=fps,
                frames_corrupt=self._frames_corrupt,
                frames_dropped=self.slot.dropped_count,
                reconnect_attempts=self._reconnect_attempts,
                reconnects_succeeded=self._reconnects_succeeded,
                last_frame_age_s=None if last_s is None else now_s - last_s,
                frame_width=self._frame_size[0],
                frame_height=self._frame_size[1],
                source_fps=self._source_fps,
                last_error=self._last_error,
                recent_reconnect_delays_s=tuple(self._delays_s),
            )

    # -- thread body -----------------------------------------------------------------------

    def _set_state(self, new: CaptureState, detail: str = '') -> None:
        detail = self.source.redact(detail)
        with self._lock:
            old = self._state
            if old == new:
                return
            self._state = new
        _LOG.debug('%s: %s -> %s %s', self.name, old.value, new.value, detail)
        if self._on_state_change is not None:
            try:
                self._on_state_change(old, new, detail)
            except Exception:  # a broken callback must not kill the capture thread
                _LOG.exception('%s: state-change callback failed', self.name)

    def _set_error(self, message: str) -> str:
        message = self.source.redact(message)
        with self._lock:
            self._last_error = message
        return message

    def _open(self) -> Optional[cv2.VideoCapture]:
        """Open the source, or return None (with last_error set)."""
        source, options = self.source, self.options
        try:
            if source.is_rtsp:
                apply_rtsp_transport(options.rtsp_transport)
            params = capture_params(source, options.open_timeout_s, options.read_timeout_s,
                                    options.decode_threads)
            capture = cv2.VideoCapture(source.open_target, source.api_preference, params)
        except Exception as exc:  # cv2.error text may echo the target: redact it
            self._set_error(f'open failed: {type(exc).__name__}: {exc}')
            return None
        if not capture.isOpened():
            capture.release()
            if source.is_network:
                why = (f'unreachable, refused, no answer within {options.open_timeout_s:g} s, '
                       'or no video stream')
            elif source.is_file:
                why = 'not a readable video file'
            else:
                why = 'no such device, busy, or not a camera'
            self._set_error(f'cannot open {source.safe_url} ({why})')
            return None
        fps = capture.get(cv2.CAP_PROP_FPS)
        with self._lock:
            self._source_fps = float(fps) if 0 < fps < 1000 else 0.0
        return capture

    def _wait_backoff(self) -> None:
        delay_s = self._backoff.next_delay_s()
        with self._lock:
            self._delays_s.append(delay_s)
        self._stop_event.wait(delay_s)

    def _run(self) -> None:
        first_open = True
        reason = 'stop requested'
        try:
            while not self._stop_event.is_set():
                if not first_open:
                    with self._lock:
                        self._reconnect_attempts += 1
                first_open = False
                capture = self._open()
                if capture is None:
                    if self._stop_event.is_set():
                        break
                    self._set_state(CaptureState.RECONNECTING, self._last_error)
                    self._wait_backoff()
                    continue
                try:
                    end = self._stream(capture)
                finally:
                    capture.release()
                if end is _StreamEnd.ENDED:
                    self.slot.close()
                    self._set_state(CaptureState.ENDED, 'end of file')
                    return
                if end is _StreamEnd.STOPPED:
                    break
                self._set_state(CaptureState.RECONNECTING, self._last_error)
                self._wait_backoff()
        except Exception as exc:  # never die silently: record, then report STOPPED
            reason = self._set_error(f'capture thread failed: {type(exc).__name__}: {exc}')
            _LOG.error('%s: %s', self.name, reason)
        self._set_state(CaptureState.STOPPED, reason)

    def _stream(self, capture: cv2.VideoCapture) -> _StreamEnd:
        """Read frames until stop, end of file, or failure."""
        source, options = self.source, self.options
        pace = source.is_file and options.pace_files
        period_s = 1.0 / self._source_fps if self._source_fps > 0 else 1.0 / 30.0
        next_due_s = time.monotonic()
        frames_this_pass = 0
        corrupt_in_row = 0
        while not self._stop_event.is_set():
            if pace:
                wait_s = next_due_s - time.monotonic()
                if wait_s > 0 and self._stop_event.wait(wait_s):
                    break
                # Fall behind by more than a frame (slow CPU)? Resync instead of bursting.
                next_due_s = max(next_due_s + period_s, time.monotonic() - period_s)
            grab_started_s = time.monotonic()
            grabbed = capture.grab()
            if source.is_network and \
                    time.monotonic() - grab_started_s >= options.read_timeout_s:
                # OpenCV's read timeout fired. It may still hand out a few frames flushed from
                # the decoder (captured before the stall, so their stamps would lie) and then
                # fails for good: reconnect now.
                self._set_error(f'no frame for {options.read_timeout_s:g} s (read timeout)')
                return _StreamEnd.FAILED
            if not grabbed:
                if source.is_file:
                    if options.loop and frames_this_pass > 0 and \
                            capture.set(cv2.CAP_PROP_POS_FRAMES, 0):
                        frames_this_pass = 0
                        next_due_s -= period_s  # this slot had no frame: no extra pause
                        continue
                    if options.loop:
                        self._set_error('cannot rewind the video file; reopening it')
                        return _StreamEnd.FAILED
                    return _StreamEnd.ENDED
                self._set_error('stream closed or read failed')
                return _StreamEnd.FAILED
            grabbed_s = time.monotonic()
            stamp_ns = self._clock()
            ok, image = self._retrieve(capture)
            if not ok or image is None or image.size == 0:
                corrupt_in_row += 1
                with self._lock:
                    self._frames_corrupt += 1
                if corrupt_in_row >= options.max_consecutive_corrupt:
                    self._set_error(f'{corrupt_in_row} undecodable frames in a row')
                    return _StreamEnd.FAILED
                continue
            corrupt_in_row = 0
            frames_this_pass += 1
            self._deliver(image, stamp_ns, grabbed_s)
        return _StreamEnd.STOPPED

    def _retrieve(self, capture: cv2.VideoCapture) -> tuple:
        """``capture.retrieve()``, into the array ``retrieve_into`` offers if there is one."""
        target = None
        if self._retrieve_into is not None and self._frame_size[0] > 0:
            try:
                target = self._retrieve_into(*self._frame_size)
            except Exception:  # a broken callback must not kill the capture thread
                _LOG.exception('%s: retrieve_into callback failed', self.name)
        if target is not None:
            try:
                return capture.retrieve(target)
            except cv2.error:  # e.g. a read-only array: convert into a new one
                _LOG.exception('%s: cannot convert a frame into the retrieve_into array',
                               self.name)
        return capture.retrieve()

    def _deliver(self, image: np.ndarray, stamp_ns: int, grabbed_s: float) -> None:
        with self._lock:
            seq = self._seq
            self._seq += 1
            self._frames_captured += 1
            self._last_frame_monotonic_s = grabbed_s
            self._frame_size = (image.shape[1], image.shape[0])
            self._frame_times_s.append(grabbed_s)
            came_back = self._state is not CaptureState.STREAMING
            if self._state is CaptureState.RECONNECTING:
                self._reconnects_succeeded += 1
        frame: Optional[Frame] = Frame(image, stamp_ns, seq, grabbed_s)
        if self._on_frame is not None:
            try:
                frame = self._on_frame(frame)
            except Exception:  # a broken callback must not kill the capture thread
                _LOG.exception('%s: frame callback failed', self.name)
        if frame is not None:
            self.slot.put(frame)
        if came_back:
            self._backoff.reset()
            self._set_state(CaptureState.STREAMING, f'{image.shape[1]}x{image.shape[0]}')
