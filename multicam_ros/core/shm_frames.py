"""Shared-memory frame channels: a camera process writes each newest frame once, the detector
process copies it out with one numpy copy (or reads it in place). ROS-free; numpy and the
standard library only.

Why this shape (bench/NOTES_ipc.md has the measurements): one POSIX shared-memory file per
channel in /dev/shm holding a small header and a ring of ``slot_count`` frame slots, each guarded
by a sequence lock. The writer fills slot ``(seq - 1) % slot_count``, then publishes ``seq`` in
the header; a reader polls that one word (no system call), copies the newest slot and accepts the
copy only if the slot's lock word did not change during the copy. So a reader never keeps a torn
or half-written frame, never gets the same frame twice, and a writer never waits for a reader.

Lifetime, without a daemon and without leaks after SIGKILL:
- a segment's writer holds an exclusive ``flock`` on it for its whole life; the kernel drops the
  lock when the process dies, however it dies. "The lock can be taken" means "no live writer",
  which neither pid reuse, zombies nor pid namespaces can fool;
- a writer builds its segment under a temporary name and links it into place complete, so a
  reader never opens a half-made one;
- the next writer of the channel, a reader that finds the writer dead, or
  ``remove_stale_segments`` unlinks a dead writer's segment; a writer that closes unlinks its own;
- names derive from the channel (e.g. the camera's image topic plus the ROS domain id) and the
  user id only, never from the run, so the next start finds what a killed run left.

Each frame carries capture stamp (ns), frame_id, width, height, encoding, step, the writer's
sequence number and the writer's epoch, which changes when a writer starts and whenever the
frame geometry (width, height, encoding) changes.

Memory order: the lock relies on stores becoming visible in program order and loads not
passing loads, which x86-64 (TSO) guarantees and CPython (separate C calls) does not reorder.
Weakly ordered CPUs (aarch64) need fences that Python cannot issue, so ``shm_available`` says
no there and frames take the topic path (bench/NOTES_ipc.md). Readers and writers are not
thread-safe: one object per thread.
"""
from __future__ import annotations

import contextlib
import fcntl
import hashlib
import mmap
import os
import platform
import struct
import sys
import time
import weakref
from dataclasses import dataclass, field
from typing import List, Optional, Tuple

import numpy as np

SHM_DIR = '/dev/shm'
NAME_PREFIX = 'multicam_ros.'
TMP_MARK = '.tmp'
CHANNELS_BY_ENCODING = {'bgr8': 3, 'rgb8': 3, 'mono8': 1}
FRAME_ID_MAX_BYTES = 63
DEFAULT_SLOT_COUNT = 3
MAX_SLOT_COUNT = 16

_MAGIC = int.from_bytes(b'MCROSFR1', 'little')
_LAYOUT_VERSION = 1
_PAGE_BYTES = 4096
_HEADER_BYTES = _PAGE_BYTES  # header words, then one 128-byte metadata block per slot
_SLOT_META_OFFSET = 256
_SLOT_META_BYTES = 128
# Header words (uint64 indices into the first page).
_W_MAGIC, _W_VERSION, _W_STATE, _W_WRITER_PID, _W_WRITER_ID, _W_EPOCH = range(6)
_W_SLOT_COUNT, _W_SLOT_BYTES, _W_SLOT_STRIDE, _W_LATEST_SEQ, _W_CREATED_NS = range(6, 11)
_STATE_LIVE, _STATE_CLOSED, _STATE_RETIRED = 1, 2, 3
# Slot metadata after the slot's lock word (2 * seq + 1 while writing, 2 * seq when complete).
_META = struct.Struct('<QqqIIII16s64s')  # epoch, stamp_ns, written_ns, w, h, step, nbytes, ...
_POLL_LIVENESS_PERIOD_S = 0.25
_REATTACH_PERIOD_S = 0.1
_STALE_LOCK_RETRIES = 20  # a reader's liveness probe holds a dead segment's lock for microseconds


class ChannelBusyError(RuntimeError):
    """Another live process already writes this channel."""


@dataclass(frozen=True)
class FrameInfo:
    """What a reader got: the frame's announcement, valid for the pixels copied with it."""

    seq: int  # per-writer sequence number, strictly increasing
    epoch: int  # changes on writer start and on every change of width, height or encoding
    stamp_ns: int  # capture stamp, as the writer gave it
    frame_id: str
    width: int
    height: int
    encoding: str
    step: int  # bytes per row (rows are packed: width * channels)
    nbytes: int
    written_monotonic_ns: int  # time.monotonic_ns() when the writer published it
    _slot: int = field(default=-1, repr=False, compare=False)
    _attachment: int = field(default=-1, repr=False, compare=False)

    @property
    def shape(self) -> Tuple[int, ...]:
        """numpy shape of the pixels: (h, w) for mono8, (h, w, 3) otherwise."""
        channels = CHANNELS_BY_ENCODING[self.encoding]
        return (self.height, self.width) if channels == 1 else (self.height, self.width,
                                                                channels)

    def view(self, buffer: np.ndarray) -> np.ndarray:
        """The frame as an image-shaped uint8 view of the start of ``buffer`` (no copy)."""
        return _flat_bytes(buffer)[:self.nbytes].reshape(self.shape)


@dataclass(frozen=True)
class ChannelStatus:
    """What ``channel_status`` found in a channel's segment."""

    segment_name: str
    writer_alive: bool
    writer_pid: int
    latest_seq: int  # 0: nothing written yet
    epoch: int
    slot_count: int
    slot_capacity_bytes: int


def shm_available() -> bool:
    """True where this module is safe to use: Linux on x86-64 (whose store order the lock
    relies on) with a writable /dev/shm. Elsewhere, frames go through topics."""
    return (sys.platform.startswith('linux') and platform.machine() in ('x86_64', 'AMD64')
            and os.path.isdir(SHM_DIR) and os.access(SHM_DIR, os.W_OK | os.X_OK))


def channel_for_topic(topic: str, domain_id: int) -> str:
    """The channel of an image topic: the resolved topic name within one ROS domain, so writer
    and reader derive the same name and separate domains (tests, robots) never meet."""
    return f'd{int(domain_id)}{topic if topic.startswith("/") else "/" + topic}'


def segment_name(channel: str) -> str:
    """The /dev/shm file name of ``channel``: readable, unique per user and channel, the same
    in every run (so the next start finds what a killed one left)."""
    if not channel:
        raise ValueError('channel must be a non-empty string')
    readable = ''.join(c if c.isascii() and (c.isalnum() or c in '-_') else '_'
                       for c in channel.strip('/'))[:96]
    digest = hashlib.blake2s(channel.encode('utf-8'), digest_size=4).hexdigest()
    return f'{_user_prefix()}{readable}.{digest}'


def channel_status(channel: str) -> Optional[ChannelStatus]:
    """The channel's segment and whether its writer lives; None when there is no segment."""
    name = segment_name(channel)
    segment = _Segment.open_existing(name, writable=False)
    if segment is None:
        return None
    try:
        ctl = segment.ctl
        return ChannelStatus(segment_name=name, writer_alive=segment.writer_alive(),
                             writer_pid=int(ctl[_W_WRITER_PID]),
                             latest_seq=int(ctl[_W_LATEST_SEQ]), epoch=int(ctl[_W_EPOCH]),
                             slot_count=int(ctl[_W_SLOT_COUNT]),
                             slot_capacity_bytes=int(ctl[_W_SLOT_BYTES]))
    finally:
        segment.close()


def remove_stale_segments(channel: Optional[str] = None) -> List[str]:
    """Unlink this user's segments (or only ``channel``'s) whose writer is dead, and temporary
    files of writers that died while creating one; return the names removed."""
    if not os.path.isdir(SHM_DIR):
        return []
    if channel is None:
        prefix = _user_prefix()
        names = [n for n in os.listdir(SHM_DIR) if n.startswith(prefix)]
    else:
        base = segment_name(channel)
        names = [n for n in os.listdir(SHM_DIR) if n == base or n.startswith(base + TMP_MARK)]
    return [name for name in sorted(names)
            if not _tmp_of_live_process(name) and _remove_if_dead(name)]


class FrameWriter:
    """Writes frames into one channel: ``write`` copies an image in once, or ``loan`` hands out
    the next slot to fill in place (e.g. as a resize's destination) and ``commit`` publishes it.

    ``max_bytes`` is the pixel capacity per slot; 0 sizes the segment to the first frame. A
    larger frame later replaces the segment with a larger one (readers follow by themselves).
    Creating the writer removes a dead writer's segment of the same channel and raises
    ChannelBusyError if a live one exists; OSError (e.g. ENOSPC: /dev/shm full) means this
    channel cannot be offered, and the caller should rely on its topic alone.
    """

    def __init__(self, channel: str, max_bytes: int = 0,
                 slot_count: int = DEFAULT_SLOT_COUNT) -> None:
        if not 2 <= slot_count <= MAX_SLOT_COUNT:
            raise ValueError(f'slot_count must be 2..{MAX_SLOT_COUNT}, got {slot_count}')
        if max_bytes < 0:
            raise ValueError(f'max_bytes must be >= 0, got {max_bytes}')
        self.channel = channel
        self.segment_name = segment_name(channel)
        self._slot_count = slot_count
        self._writer_id = int.from_bytes(os.urandom(8), 'little') >> 1
        self._epoch = int.from_bytes(os.urandom(8), 'little') >> 1
        self._geometry: Optional[Tuple[int, int, str]] = None
        self._seq = 0
        self._loaned: Optional[Tuple[int, int, int, int, str, int]] = None
        self._segment: Optional[_Segment] = None
        self._finalizer: Optional[weakref.finalize] = None
        self._closed = False
        if max_bytes > 0:
            self._replace_segment(max_bytes)

    @property
    def seq(self) -> int:
        """Sequence number of the last frame published (0: none yet)."""
        return self._seq

    @property
    def epoch(self) -> int:
        """The epoch stamped on the frames being written now."""
        return self._epoch

    @property
    def slot_capacity_bytes(self) -> int:
        """Pixel bytes one slot holds now (0 before the segment exists)."""
        return 0 if self._segment is None else self._segment.slot_bytes

    def write(self, image: np.ndarray, stamp_ns: int, frame_id: str,
              encoding: str = 'bgr8') -> int:
        """Copy ``image`` (uint8, h x w x 3 for bgr8/rgb8, h x w for mono8) into the next slot
        and publish it; return its sequence number."""
        height, width = _image_size(image, encoding)
        target = self.loan(width, height, encoding)
        np.copyto(target, image.reshape(target.shape))
        return self.commit(stamp_ns, frame_id)

    def loan(self, width: int, height: int, encoding: str = 'bgr8') -> np.ndarray:
        """A writable image-shaped view of the next slot; readers skip that slot until
        ``commit``. A new ``loan`` or ``write`` before ``commit`` reuses the same slot."""
        if self._closed:
            raise RuntimeError(f'{self.segment_name}: writer is closed')
        if encoding not in CHANNELS_BY_ENCODING:
            raise ValueError(f'encoding {encoding!r} is not one of '
                             + ', '.join(CHANNELS_BY_ENCODING))
        if width <= 0 or height <= 0:
            raise ValueError(f'frame size {width}x{height} must be positive')
        channels = CHANNELS_BY_ENCODING[encoding]
        nbytes = width * height * channels
        if self._segment is None or nbytes > self._segment.slot_bytes:
            self._replace_segment(nbytes)
        if self._geometry != (width, height, encoding):
            if self._geometry is not None:
                self._epoch = (self._epoch + 1) & ((1 << 63) - 1)
            self._geometry = (width, height, encoding)
        segment = self._segment
        assert segment is not None
        seq = self._seq + 1
        slot = (seq - 1) % segment.slot_count
        segment.ctl[segment.lock_index(slot)] = 2 * seq + 1
        self._loaned = (seq, slot, width, height, encoding, nbytes)
        shape = (height, width) if channels == 1 else (height, width, channels)
        return segment.pixels[slot][:nbytes].reshape(shape)

    def commit(self, stamp_ns: int, frame_id: str) -> int:
        """Publish the loaned slot with its capture stamp and frame_id; return its seq."""
        if self._loaned is None or self._segment is None:
            raise RuntimeError('commit without loan')
        frame_id_bytes = frame_id.encode('utf-8')
        if len(frame_id_bytes) > FRAME_ID_MAX_BYTES:
            raise ValueError(f'frame_id longer than {FRAME_ID_MAX_BYTES} bytes: {frame_id!r}')
        seq, slot, width, height, encoding, nbytes = self._loaned
        segment = self._segment
        _META.pack_into(segment.mm, segment.meta_offset(slot), self._epoch, int(stamp_ns),
                        time.monotonic_ns(), width, height,
                        width * CHANNELS_BY_ENCODING[encoding], nbytes,
                        encoding.encode('ascii'), frame_id_bytes)
        ctl = segment.ctl
        ctl[segment.lock_index(slot)] = 2 * seq  # the slot is complete ...
        ctl[_W_EPOCH] = self._epoch
        ctl[_W_LATEST_SEQ] = seq  # ... before it is announced
        self._seq = seq
        self._loaned = None
        return seq

    def is_intact(self, seq: int) -> bool:
        """True while frame ``seq`` (what ``commit`` returned) is still whole in its slot:
        for the writer's other threads that read a frame back from ``loan``'s view. Check
        after copying; False once a later ``loan`` took the slot, or the segment is gone."""
        segment = self._segment
        if segment is None or not 0 < seq <= self._seq:
            return False
        try:
            return segment.ctl[segment.lock_index((seq - 1) % segment.slot_count)] == 2 * seq
        except ValueError:  # released: the segment was replaced or closed meanwhile
            return False

    def close(self) -> None:
        """Mark the channel closed and unlink its segment (readers see the writer gone)."""
        self._closed = True
        self._loaned = None
        if self._finalizer is not None:
            self._finalizer()  # _Segment.retire(unlink=True), once
            self._finalizer = None
        self._segment = None

    def __enter__(self) -> 'FrameWriter':
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _replace_segment(self, min_slot_bytes: int) -> None:
        """Create the channel's segment (or a larger one in place of ours): build it under a
        temporary name, locked, then move it into place in one step."""
        slot_bytes = _round_up(max(min_slot_bytes, 1), _PAGE_BYTES)
        new = _Segment.create(self.segment_name, self._slot_count, slot_bytes,
                              self._writer_id, self._epoch)
        old, old_finalizer = self._segment, self._finalizer
        try:
            if old is None:
                _install_new(new, self.segment_name)
            else:
                os.rename(new.path, _path(self.segment_name))  # atomic swap for readers
                new.path = _path(self.segment_name)
        except BaseException:
            new.discard()
            raise
        self._segment = new
        self._finalizer = weakref.finalize(self, new.retire, _STATE_CLOSED, True)
        if old is not None and old_finalizer is not None:
            old_finalizer.detach()
            old.retire(_STATE_RETIRED, unlink=False)  # readers reopen the name: the new one


class FrameReader:
    """Reads the newest frames of one channel; attaches (and re-attaches after a writer
    restart or a segment change) by itself, so it may be created before its writer.

    ``poll`` is cheap (a few memory reads, no system call): it tells whether a frame newer than
    the last one taken exists. ``read_into`` copies it into the caller's buffer and validates
    it. Each frame is handed out at most once; torn copies are never returned.
    """

    def __init__(self, channel: str) -> None:
        self.channel = channel
        self.segment_name = segment_name(channel)
        self._segment: Optional[_Segment] = None
        self._attachment = 0
        self._next_attach_s = 0.0
        self._next_liveness_s = 0.0
        self._last_writer_id = -1
        self._last_seq = 0
        self._quiet_seq = -1  # latest_seq last seen with nothing new in it (this attachment)
        self.taken_count = 0
        self.torn_count = 0  # copies discarded because the writer overwrote the slot meanwhile

    @property
    def attached(self) -> bool:
        """True while mapped to a segment whose writer was alive at the last check."""
        return self._segment is not None

    @property
    def attachment(self) -> int:
        """Changes whenever the reader maps another segment (a writer restart, a resolution
        change): views and ``slot_memory`` of an earlier attachment are of an old mapping."""
        return self._attachment

    def slot_memory(self) -> Optional[np.ndarray]:
        """All the frame slots of the segment mapped now, as one read-only uint8 array (e.g.
        to page-lock them for uploads straight from shared memory), or None when detached.
        The mapping stays valid while this array is referenced, even after the reader moved
        on."""
        segment = self._segment
        return None if segment is None else segment.slots

    def writer_alive(self) -> bool:
        """Whether a live writer holds the channel now (one system call); detaches if not."""
        if not self._attach():
            return False
        assert self._segment is not None
        if self._segment.writer_alive():
            return True
        self._detach(remove_dead=True)
        return False

    def poll(self) -> Optional[FrameInfo]:
        """The announcement of a frame newer than the last one taken, or None. Does not take
        it; checks the writer's liveness only now and then."""
        for _ in range(2):
            newest = self._newest_untaken()
            if newest is None:
                return None
            info = self._read_meta(*newest)
            if info is not None:
                return info
        return None

    def read_into(self, buffer: np.ndarray) -> Optional[FrameInfo]:
        """Copy the newest untaken frame into ``buffer`` (any writable C-contiguous array of at
        least ``nbytes`` bytes, e.g. a pinned tensor's ``.numpy()``) and take it. None when
        there is none, the writer is gone, or the writer overwrote it during the copy twice.
        ``FrameInfo.view(buffer)`` gives it its image shape."""
        for _ in range(2):
            newest = self._newest_untaken()
            if newest is None:
                return None
            seq, slot = newest
            info = self._read_meta(seq, slot)
            if info is None:
                continue
            flat = _flat_bytes(buffer)
            if info.nbytes > flat.size:
                raise ValueError(f'buffer of {flat.size} bytes is too small for a '
                                 f'{info.width}x{info.height} {info.encoding} frame '
                                 f'({info.nbytes} bytes)')
            segment = self._segment
            assert segment is not None
            np.copyto(flat[:info.nbytes], segment.pixels[slot][:info.nbytes])
            if segment.ctl[segment.lock_index(slot)] != 2 * seq:
                self.torn_count += 1
                continue
            if not segment.writer_alive():
                self._detach(remove_dead=True)
                return None
            self._take(info)
            return info
        return None

    def skip(self, info: FrameInfo) -> None:
        """Take the frame ``poll`` announced without copying it (one the caller refuses), so
        that it is not announced again."""
        if info._attachment == self._attachment and self._segment is not None:
            self._take(info)

    def read(self) -> Optional[Tuple[FrameInfo, np.ndarray]]:
        """Like ``read_into``, into a new array of the frame's shape."""
        if self.poll() is None or self._segment is None:
            return None
        buffer = np.empty(self._segment.slot_bytes, np.uint8)  # fits any frame of it
        got = self.read_into(buffer)
        return None if got is None else (got, got.view(buffer))

    def view_newest(self) -> Optional[Tuple[FrameInfo, np.ndarray]]:
        """Zero-copy: the newest untaken frame and its ``view``, taken; None when there is
        none."""
        info = self.poll()
        view = None if info is None else self.view(info)
        return None if view is None else (info, view)

    def view(self, info: FrameInfo) -> Optional[np.ndarray]:
        """Zero-copy: the frame ``poll`` announced as a read-only view into shared memory, and
        take it; None if the reader has moved to another segment since. The writer may
        overwrite it at any time after ``slot_count - 1`` newer frames, so use it at once (e.g.
        one upload) and keep the result only if ``is_intact(info)`` holds afterwards. No
        system call: the writer's liveness is checked now and then, as by ``poll`` (a whole
        frame of a writer that died since is still a whole frame)."""
        segment = self._segment
        if segment is None or info._attachment != self._attachment:
            return None
        view = segment.pixels[info._slot][:info.nbytes].reshape(info.shape)
        self._take(info)
        return view

    def is_intact(self, info: FrameInfo) -> bool:
        """True if the slot of ``info`` still holds that frame (validates a zero-copy use)."""
        segment = self._segment
        if segment is None or info._attachment != self._attachment or info._slot < 0:
            return False
        return segment.ctl[segment.lock_index(info._slot)] == 2 * info.seq

    def copy_by_stamp(self, stamp_ns: int) -> Optional[Tuple[FrameInfo, np.ndarray]]:
        """A copy of the frame stamped ``stamp_ns`` while a slot still holds it whole (e.g. to
        draw on a frame that another process read), else None. Takes nothing: ``poll`` and
        ``read_into`` are unaffected."""
        if not self._attach():
            return None
        segment = self._segment
        assert segment is not None
        for slot in range(segment.slot_count):
            lock = int(segment.ctl[segment.lock_index(slot)])
            if lock == 0 or lock % 2:
                continue  # never written, or being written
            info = self._read_meta(lock // 2, slot)
            if info is None or info.stamp_ns != stamp_ns:
                continue
            pixels = np.array(segment.pixels[slot][:info.nbytes]).reshape(info.shape)
            if segment.ctl[segment.lock_index(slot)] == lock:
                return info, pixels
        return None

    def close(self) -> None:
        """Unmap; the writer is unaffected."""
        self._detach(remove_dead=False)

    def __enter__(self) -> 'FrameReader':
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _attach(self) -> bool:
        segment = self._segment
        now_s = time.monotonic()
        if segment is not None:
            state = segment.ctl[_W_STATE]
            if state == _STATE_LIVE:
                return True
            self._detach(remove_dead=False)
            if state == _STATE_RETIRED:  # replaced: its successor is in place already
                self._next_attach_s = now_s
        if now_s < self._next_attach_s:
            return False
        self._next_attach_s = now_s + _REATTACH_PERIOD_S
        segment = _Segment.open_existing(self.segment_name, writable=False)
        if segment is None:
            return False
        if segment.ctl[_W_STATE] != _STATE_LIVE or not segment.writer_alive():
            segment.close()
            _remove_if_dead(self.segment_name)
            return False
        self._segment = segment
        self._attachment += 1
        self._quiet_seq = -1
        self._next_liveness_s = now_s + _POLL_LIVENESS_PERIOD_S
        return True

    def _detach(self, remove_dead: bool) -> None:
        segment, self._segment = self._segment, None
        if segment is not None:
            segment.close()
            if remove_dead:
                _remove_if_dead(self.segment_name)

    def _newest_untaken(self) -> Optional[Tuple[int, int]]:
        """(seq, slot) of the newest frame if it was not taken yet; attaches when needed and
        checks liveness now and then while nothing new arrives. The hot path of polling."""
        segment = self._segment
        if segment is not None:
            ctl = segment.ctl
            if (ctl[_W_LATEST_SEQ] == self._quiet_seq and ctl[_W_STATE] == _STATE_LIVE
                    and time.monotonic() < self._next_liveness_s):
                return None  # nothing new since the last look, no liveness check due
        if segment is None or segment.ctl[_W_STATE] != _STATE_LIVE:
            if not self._attach():
                return None
            segment = self._segment
            assert segment is not None
        seq = segment.ctl[_W_LATEST_SEQ]
        if seq == 0 or (segment.writer_id == self._last_writer_id and seq <= self._last_seq):
            self._quiet_seq = seq
            now_s = time.monotonic()
            if now_s >= self._next_liveness_s:
                self._next_liveness_s = now_s + _POLL_LIVENESS_PERIOD_S
                if not segment.writer_alive():
                    self._detach(remove_dead=True)
            return None
        return seq, (seq - 1) % segment.slot_count

    def _read_meta(self, seq: int, slot: int) -> Optional[FrameInfo]:
        segment = self._segment
        assert segment is not None
        lock_index = segment.lock_index(slot)
        if segment.ctl[lock_index] != 2 * seq:
            return None  # already being overwritten by a newer frame
        (epoch, stamp_ns, written_ns, width, height, step, nbytes, encoding,
         frame_id) = _META.unpack_from(segment.mm, segment.meta_offset(slot))
        if segment.ctl[lock_index] != 2 * seq:
            self.torn_count += 1
            return None
        encoding_str = encoding.rstrip(b'\0').decode('ascii', 'replace')
        if (nbytes > segment.slot_bytes or encoding_str not in CHANNELS_BY_ENCODING
                or nbytes != height * step):
            return None  # not written by this module's writer
        return FrameInfo(seq=seq, epoch=epoch, stamp_ns=stamp_ns,
                         frame_id=frame_id.rstrip(b'\0').decode('utf-8', 'replace'),
                         width=width, height=height, encoding=encoding_str, step=step,
                         nbytes=nbytes, written_monotonic_ns=written_ns, _slot=slot,
                         _attachment=self._attachment)

    def _take(self, info: FrameInfo) -> None:
        segment = self._segment
        assert segment is not None
        self._last_writer_id = segment.writer_id
        self._last_seq = self._quiet_seq = info.seq
        self.taken_count += 1


# -- segments -------------------------------------------------------------------------------

class _Segment:
    """One mapped segment file: its descriptor (holding the writer's lock), the mapping, the
    header words and per-slot pixel views. Holds no reference to its writer or reader."""

    def __init__(self, path: str, fd: int, mm: mmap.mmap) -> None:
        self.path = path
        self.fd = fd
        self.mm = mm
        self.ctl = memoryview(mm)[:_HEADER_BYTES].cast('Q')
        self.slot_count = int(self.ctl[_W_SLOT_COUNT])
        self.slot_bytes = int(self.ctl[_W_SLOT_BYTES])
        self.writer_id = int(self.ctl[_W_WRITER_ID])
        stride = int(self.ctl[_W_SLOT_STRIDE])
        data = np.frombuffer(mm, np.uint8)
        self.slots = data[_HEADER_BYTES:_HEADER_BYTES + (self.slot_count - 1) * stride
                          + self.slot_bytes]
        self.pixels = [data[_HEADER_BYTES + i * stride:_HEADER_BYTES + i * stride
                            + self.slot_bytes] for i in range(self.slot_count)]
        self._closed = False

    @staticmethod
    def lock_index(slot: int) -> int:
        return (_SLOT_META_OFFSET + slot * _SLOT_META_BYTES) // 8

    @staticmethod
    def meta_offset(slot: int) -> int:
        return _SLOT_META_OFFSET + slot * _SLOT_META_BYTES + 8

    @classmethod
    def create(cls, name: str, slot_count: int, slot_bytes: int, writer_id: int,
               epoch: int) -> '_Segment':
        """A new, complete, locked segment under a temporary name next to ``name``."""
        path = _path(f'{name}{TMP_MARK}{os.getpid()}')
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)  # our own pid's leftover: that process is dead
        size_bytes = _HEADER_BYTES + slot_count * slot_bytes
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            os.ftruncate(fd, size_bytes)
            os.posix_fallocate(fd, 0, size_bytes)  # ENOSPC now, instead of SIGBUS later
            mm = mmap.mmap(fd, size_bytes)
        except BaseException:
            os.close(fd)
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
            raise
        ctl = memoryview(mm)[:_HEADER_BYTES].cast('Q')
        ctl[_W_VERSION] = _LAYOUT_VERSION
        ctl[_W_STATE] = _STATE_LIVE
        ctl[_W_WRITER_PID] = os.getpid()
        ctl[_W_WRITER_ID] = writer_id
        ctl[_W_EPOCH] = epoch
        ctl[_W_SLOT_COUNT] = slot_count
        ctl[_W_SLOT_BYTES] = slot_bytes
        ctl[_W_SLOT_STRIDE] = slot_bytes
        ctl[_W_LATEST_SEQ] = 0
        ctl[_W_CREATED_NS] = time.time_ns()
        ctl[_W_MAGIC] = _MAGIC
        ctl.release()
        return cls(path, fd, mm)

    @classmethod
    def open_existing(cls, name: str, writable: bool) -> Optional['_Segment']:
        """Map an existing segment; None if absent or not one of ours (wrong size/magic)."""
        try:
            fd = os.open(_path(name), os.O_RDWR if writable else os.O_RDONLY)
        except OSError:
            return None
        try:
            size_bytes = os.fstat(fd).st_size
            if size_bytes < _HEADER_BYTES:
                raise ValueError('too small')
            mm = mmap.mmap(fd, size_bytes, access=mmap.ACCESS_WRITE if writable
                           else mmap.ACCESS_READ)
            header = struct.unpack_from('<11Q', mm, 0)
            if (header[_W_MAGIC] != _MAGIC or header[_W_VERSION] != _LAYOUT_VERSION
                    or not 2 <= header[_W_SLOT_COUNT] <= MAX_SLOT_COUNT
                    or header[_W_SLOT_BYTES] > header[_W_SLOT_STRIDE]
                    or _HEADER_BYTES + header[_W_SLOT_COUNT] * header[_W_SLOT_STRIDE]
                    > size_bytes):
                mm.close()
                raise ValueError('not a frame segment of this layout')
        except (OSError, ValueError):
            os.close(fd)
            return None
        return cls(_path(name), fd, mm)

    def writer_alive(self) -> bool:
        """No live writer holds the lock if we can take it (then we give it back at once)."""
        try:
            fcntl.flock(self.fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(self.fd, fcntl.LOCK_UN)
        return False

    def retire(self, state: int, unlink: bool) -> None:
        """Writer side: announce ``state`` to readers, optionally unlink, then unmap."""
        if self._closed:
            return
        self.ctl[_W_STATE] = state
        if unlink and _same_file(self.path, self.fd):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path)
        self.close()

    def discard(self) -> None:
        """Writer side: drop a segment that never went into place."""
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)
        self.close()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self.pixels = []
        self.slots = None
        self.ctl.release()
        try:
            self.mm.close()
        except BufferError:
            pass  # a caller still holds a zero-copy view: unmapped when that view goes
        os.close(self.fd)


def _install_new(segment: _Segment, name: str) -> None:
    """Link a new segment into place, first removing a dead writer's; never a live one's."""
    final = _path(name)
    for _ in range(3):
        try:
            os.link(segment.path, final)
        except FileExistsError:
            if not _remove_if_dead(name, retries=_STALE_LOCK_RETRIES):
                if _writer_alive_at(name):
                    raise ChannelBusyError(f'{name}: another live process writes this '
                                           'channel') from None
            continue
        os.unlink(segment.path)
        segment.path = final
        return
    raise ChannelBusyError(f'{name}: could not take the channel over')


def _remove_if_dead(name: str, retries: int = 1) -> bool:
    """Unlink ``name`` if no live writer holds its lock; True if removed (or already gone)."""
    path = _path(name)
    try:
        fd = os.open(path, os.O_RDWR)
    except FileNotFoundError:
        return True
    except OSError:
        return False
    try:
        for attempt in range(retries):
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if attempt + 1 == retries:
                    return False
                time.sleep(0.005)
        if not _same_file(path, fd):
            return False  # replaced meanwhile by a live writer: not ours to touch
        _mark_retired(fd)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        return True
    finally:
        os.close(fd)


def _tmp_of_live_process(name: str) -> bool:
    """A temporary file whose creator lives is still being built (and not yet locked)."""
    head, mark, pid_text = name.rpartition(TMP_MARK)
    if not mark or not pid_text.isdigit():
        return False
    try:
        os.kill(int(pid_text), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _writer_alive_at(name: str) -> bool:
    segment = _Segment.open_existing(name, writable=False)
    if segment is None:
        return False
    try:
        return segment.writer_alive()
    finally:
        segment.close()


def _mark_retired(fd: int) -> None:
    """Tell readers still mapped to a dead segment that it is gone (they reopen the name)."""
    try:
        if os.fstat(fd).st_size < _HEADER_BYTES:
            return
        with mmap.mmap(fd, _HEADER_BYTES) as mm:
            if struct.unpack_from('<Q', mm, 0)[0] == _MAGIC:
                struct.pack_into('<Q', mm, _W_STATE * 8, _STATE_RETIRED)
    except (OSError, ValueError):
        pass


def _same_file(path: str, fd: int) -> bool:
    try:
        here, there = os.stat(path), os.fstat(fd)
    except FileNotFoundError:
        return False
    return (here.st_dev, here.st_ino) == (there.st_dev, there.st_ino)


def _image_size(image: np.ndarray, encoding: str) -> Tuple[int, int]:
    if encoding not in CHANNELS_BY_ENCODING:
        raise ValueError(f'encoding {encoding!r} is not one of '
                         + ', '.join(CHANNELS_BY_ENCODING))
    channels = CHANNELS_BY_ENCODING[encoding]
    if image.dtype != np.uint8:
        raise ValueError(f'image dtype must be uint8, got {image.dtype}')
    ok = (image.ndim == 3 and image.shape[2] == channels) or (channels == 1 and image.ndim == 2)
    if not ok:
        raise ValueError(f'image shape {image.shape} does not fit encoding {encoding!r}')
    return int(image.shape[0]), int(image.shape[1])


def _flat_bytes(buffer: np.ndarray) -> np.ndarray:
    if not isinstance(buffer, np.ndarray) or not buffer.flags.c_contiguous:
        raise ValueError('buffer must be a C-contiguous numpy array')
    if not buffer.flags.writeable:
        raise ValueError('buffer must be writable')
    return buffer.reshape(-1).view(np.uint8)


def _user_prefix() -> str:
    return f'{NAME_PREFIX}u{os.getuid()}.'


def _path(name: str) -> str:
    return os.path.join(SHM_DIR, name)


def _round_up(value: int, multiple: int) -> int:
    return -(-value // multiple) * multiple
