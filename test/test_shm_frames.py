"""Shared-memory frame channels (multicam_ros.core.shm_frames) with real writer processes.

Writers run as separate processes (this file run as a script, see ``main``), readers in the
test process; nothing is mocked. Every frame's pixels come from a pool of random images whose
CRC32 travels in the frame_id, so a reader can tell a torn copy from a whole one; stamp_ns is
seq * 1000, so torn metadata shows too. No timing assertions: loops wait for conditions with
generous deadlines, and the figures live in bench/ipc_bench.py.
"""
from __future__ import annotations

import contextlib
import os
import queue
import signal
import subprocess
import sys
import threading
import time
import uuid
import zlib
from typing import Iterator, List, Optional

import numpy as np
import pytest

from multicam_ros.core import shm_frames
from multicam_ros.core.shm_frames import (
    ChannelBusyError, FrameInfo, FrameReader, FrameWriter, channel_status,
    remove_stale_segments, segment_name)

pytestmark = pytest.mark.skipif(not shm_frames.shm_available(), reason='needs /dev/shm')

POOL_SIZE = 4
DEADLINE_S = 60.0
WRITER_LIFETIME_S = 2 * DEADLINE_S  # a safety net: a writer never outlives a broken test long


# -- the writer process ---------------------------------------------------------------------

def frame_pool(width: int, height: int) -> List[np.ndarray]:
    """Distinct random frames; consecutive seqs use different ones, so a mix never passes."""
    return [np.random.default_rng(i).integers(0, 256, (height, width, 3), np.uint8)
            for i in range(POOL_SIZE)]


def frame_id_for(seq: int, pool_crcs: List[int]) -> str:
    return f'{pool_crcs[seq % POOL_SIZE]:08x}'


def run_writer(mode: str, channel: str, width: int, height: int, count: int,
               slot_count: int) -> None:
    """Writer process: ``hammer`` writes ``count`` frames (0: until killed, at most
    WRITER_LIFETIME_S) as fast as it can; ``hold`` writes ``count`` frames, then keeps the
    channel open until a line arrives on stdin and closes it; ``stall`` writes ``count`` frames,
    then stops half-way through filling the next one; ``exit`` writes ``count`` frames and exits
    without close()."""
    pool = frame_pool(width, height)
    crcs = [zlib.crc32(image) for image in pool]
    writer = FrameWriter(channel, max_bytes=width * height * 3, slot_count=slot_count)
    print(f'ready {os.getpid()}', flush=True)
    seq = 0
    end_s = time.monotonic() + WRITER_LIFETIME_S
    while (count == 0 and time.monotonic() < end_s) or seq < count:
        seq = writer.seq + 1
        writer.write(pool[seq % POOL_SIZE], seq * 1000, frame_id_for(seq, crcs))
    if mode == 'stall':
        target = writer.loan(width, height)
        half = height // 2
        target[:half] = pool[(seq + 1) % POOL_SIZE][:half]
        print(f'stalled {seq}', flush=True)
        time.sleep(3600)
    if mode == 'hold':
        print(f'written {writer.seq}', flush=True)
        sys.stdin.readline()
    if mode == 'exit':
        print(f'done {writer.seq}', flush=True)
        return  # the interpreter's exit unlinks the segment (a finalizer), not close()
    writer.close()
    print(f'done {writer.seq}', flush=True)


def main() -> None:
    mode, channel, width, height, count, slot_count = sys.argv[1:7]
    run_writer(mode, channel, int(width), int(height), int(count), int(slot_count))


# -- helpers --------------------------------------------------------------------------------

class WriterProcess:
    """A writer started as a separate interpreter, as camera_node would be."""

    running: List['WriterProcess'] = []  # what the channel fixture kills after a failed test

    def __init__(self, mode: str, channel: str, width: int, height: int, count: int = 0,
                 slot_count: int = 2) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, __file__, mode, channel, str(width), str(height), str(count),
             str(slot_count)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        WriterProcess.running.append(self)
        self._lines: queue.Queue = queue.Queue()
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        for line in self.proc.stdout:
            self._lines.put(line.strip())
        self._lines.put('<exited>')
        self.proc.stdout.close()

    def expect(self, word: str, timeout_s: float = DEADLINE_S) -> str:
        """The next stdout line, which must start with ``word``."""
        try:
            line = self._lines.get(timeout=timeout_s)
        except queue.Empty:
            raise AssertionError(f'writer said nothing within {timeout_s} s '
                                 f'(waiting for {word!r})') from None
        assert line.startswith(word), f'writer said {line!r}, expected {word!r}'
        return line

    def say(self, line: str) -> None:
        self.proc.stdin.write(line + '\n')
        self.proc.stdin.flush()

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=DEADLINE_S)
        with contextlib.suppress(ValueError):
            WriterProcess.running.remove(self)

    def finish(self) -> int:
        """Wait for a clean exit; return the exit status."""
        code = self.proc.wait(timeout=DEADLINE_S)
        WriterProcess.running.remove(self)
        return code


def check_frame(info: FrameInfo, buffer: np.ndarray) -> None:
    """A whole frame: pixels match the CRC in its frame_id, metadata matches its seq."""
    pixels = info.view(buffer)
    assert zlib.crc32(pixels) == int(info.frame_id, 16), f'torn pixels in seq {info.seq}'
    assert info.stamp_ns == info.seq * 1000, f'torn metadata in seq {info.seq}'
    assert info.step == info.width * 3 and info.nbytes == info.step * info.height


def wait_for(condition, what: str, timeout_s: float = DEADLINE_S):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.002)
    raise AssertionError(f'timed out waiting for {what}')


def leftovers(channel: str) -> List[str]:
    base = segment_name(channel)
    return [name for name in os.listdir(shm_frames.SHM_DIR) if name.startswith(base)]


@pytest.fixture
def channel() -> Iterator[str]:
    """A channel of this test alone; asserts that nothing of it stays in /dev/shm once its
    writer processes are gone."""
    name = f'test_shm/{uuid.uuid4().hex[:12]}'
    yield name
    for writer in list(WriterProcess.running):
        writer.kill()
    left = leftovers(name)
    remove_stale_segments(name)
    assert not left, f'segments left in /dev/shm: {left}'


# -- in one process -------------------------------------------------------------------------

def test_frame_round_trip_with_metadata(channel: str) -> None:
    with FrameWriter(channel) as writer, FrameReader(channel) as reader:
        assert reader.poll() is None  # no segment until the first frame
        image = frame_pool(64, 48)[0]
        seq = writer.write(image, 1234, 'cam0_optical_frame', 'rgb8')
        info = wait_for(reader.poll, 'the first frame')
        assert (info.seq, info.width, info.height, info.encoding) == (seq, 64, 48, 'rgb8')
        assert (info.stamp_ns, info.frame_id, info.step) == (1234, 'cam0_optical_frame', 192)
        got = reader.read()
        assert got is not None and got[0] == info
        assert np.array_equal(got[1], image)
        assert reader.poll() is None and reader.read_into(np.empty(10**5, np.uint8)) is None
        mono = image[:, :, 1].copy()
        writer.write(mono, 1235, 'cam0_optical_frame', 'mono8')
        buffer = np.empty(64 * 48 * 3, np.uint8)
        info = reader.read_into(buffer)
        assert info.shape == (48, 64) and np.array_equal(info.view(buffer), mono)
        status = channel_status(channel)
        assert status.writer_alive and status.writer_pid == os.getpid()
        assert status.latest_seq == info.seq
    assert channel_status(channel) is None
    with pytest.raises(RuntimeError, match='closed'):
        writer.write(image, 1236, 'cam0_optical_frame', 'rgb8')


def test_writer_says_whether_a_frame_it_wrote_is_still_whole(channel: str) -> None:
    """is_intact(seq): for the writer's own threads that read a frame back from its slot (the
    camera's image_raw from the frame decoded into shared memory)."""
    with FrameWriter(channel, slot_count=3) as writer:
        image = frame_pool(64, 48)[0]
        assert not writer.is_intact(0) and not writer.is_intact(1)
        seqs = [writer.write(image, i, 'f') for i in range(3)]
        assert seqs == [1, 2, 3] and all(writer.is_intact(seq) for seq in seqs)
        assert not writer.is_intact(4)  # not written yet
        writer.loan(64, 48)  # frame 4 goes where frame 1 was
        assert [writer.is_intact(seq) for seq in seqs] == [False, True, True]
        assert writer.commit(4, 'f') == 4 and writer.is_intact(4)
        writer.write(frame_pool(128, 96)[0], 5, 'f')  # larger: a new segment
        assert writer.is_intact(5) and not any(writer.is_intact(seq) for seq in (2, 3, 4))
    assert not writer.is_intact(5)  # closed


def test_a_frame_is_copied_by_its_stamp_while_a_slot_holds_it(channel: str) -> None:
    """copy_by_stamp: for the detector drawing on a frame its model process read; it takes
    nothing, so the frames are still announced to poll and read."""
    with FrameWriter(channel, slot_count=3) as writer:
        reader = FrameReader(channel)
        assert reader.copy_by_stamp(1) is None  # nothing written yet
        pool = frame_pool(64, 48)
        for i in range(3):
            writer.write(pool[i], 100 + i, f'f{i}')
        time.sleep(0.2)  # a reader that found no segment looks again after 0.1 s
        info, pixels = reader.copy_by_stamp(101)
        assert (info.stamp_ns, info.frame_id, info.seq) == (101, 'f1', 2)
        np.testing.assert_array_equal(pixels, pool[1])
        pixels[:] = 0  # a copy: the slot is unchanged
        np.testing.assert_array_equal(reader.copy_by_stamp(101)[1], pool[1])
        assert reader.read()[0].stamp_ns == 102  # still announced
        writer.write(pool[3], 103, 'f3')  # goes where frame 100 was
        assert reader.copy_by_stamp(100) is None and reader.copy_by_stamp(103) is not None
        writer.loan(64, 48)  # being written where 101 was: not whole any more
        assert reader.copy_by_stamp(101) is None
        reader.close()


def test_writer_refuses_bad_input(channel: str) -> None:
    with FrameWriter(channel) as writer:
        with pytest.raises(ValueError, match='encoding'):
            writer.write(np.zeros((4, 4, 3), np.uint8), 0, 'f', 'yuv422')
        with pytest.raises(ValueError, match='shape'):
            writer.write(np.zeros((4, 4), np.uint8), 0, 'f', 'bgr8')
        with pytest.raises(ValueError, match='dtype'):
            writer.write(np.zeros((4, 4, 3), np.float32), 0, 'f', 'bgr8')
        with pytest.raises(ValueError, match='frame_id'):
            writer.write(np.zeros((4, 4, 3), np.uint8), 0, 'x' * 64, 'bgr8')


def test_read_into_refuses_a_small_buffer(channel: str) -> None:
    with FrameWriter(channel) as writer, FrameReader(channel) as reader:
        writer.write(np.zeros((8, 8, 3), np.uint8), 1, 'f')
        wait_for(reader.poll, 'a frame')
        with pytest.raises(ValueError, match='too small'):
            reader.read_into(np.empty(10, np.uint8))
        assert reader.read_into(np.empty(8 * 8 * 3, np.uint8)) is not None


def test_resolution_change_in_one_writer(channel: str) -> None:
    with FrameWriter(channel, max_bytes=640 * 480 * 3) as writer, \
            FrameReader(channel) as reader:
        buffer = np.empty(1280 * 720 * 3, np.uint8)
        seen = []
        for width, height in ((640, 480), (320, 240), (1280, 720), (1280, 720)):
            image = frame_pool(width, height)[1]
            writer.write(image, writer.seq + 1, 'f')
            info = wait_for(lambda: reader.read_into(buffer), f'a {width}x{height} frame')
            assert (info.width, info.height) == (width, height)
            assert np.array_equal(info.view(buffer), image)
            seen.append(info)
        assert [info.seq for info in seen] == [1, 2, 3, 4]
        epochs = [info.epoch for info in seen]
        assert len(set(epochs[:3])) == 3 and epochs[2] == epochs[3]
        assert writer.slot_capacity_bytes >= 1280 * 720 * 3  # grew, readers followed


def test_zero_copy_view_is_validated(channel: str) -> None:
    with FrameWriter(channel, slot_count=2) as writer, FrameReader(channel) as reader:
        pool = frame_pool(32, 16)
        writer.write(pool[0], 1, 'f')
        info, view = wait_for(reader.view_newest, 'a frame')
        assert not view.flags.writeable and np.array_equal(view, pool[0])
        assert reader.is_intact(info)
        writer.write(pool[1], 2, 'f')
        assert reader.is_intact(info)  # the other slot was written
        writer.write(pool[2], 3, 'f')
        assert not reader.is_intact(info)  # its slot was reused: drop what came from it
        del view


def test_a_second_live_writer_is_refused(channel: str) -> None:
    with FrameWriter(channel, max_bytes=1000):
        with pytest.raises(ChannelBusyError):
            FrameWriter(channel, max_bytes=1000)


# -- with writer processes ------------------------------------------------------------------

def test_hammered_channel_never_yields_torn_or_repeated_frames(channel: str) -> None:
    """A writer overwrites a 2-slot ring as fast as it can; every frame the reader accepts is
    whole, and seqs strictly increase."""
    width, height = 1280, 720
    writer = WriterProcess('hammer', channel, width, height, count=0, slot_count=2)
    reader = FrameReader(channel)
    buffer = np.empty(width * height * 3, np.uint8)
    try:
        writer.expect('ready')
        taken: List[int] = []
        deadline = time.monotonic() + DEADLINE_S
        # Until overlaps were seen (or many frames passed): count-based, not a timing goal.
        while ((len(taken) < 300 or reader.torn_count < 20) and len(taken) < 3000
               and time.monotonic() < deadline):
            info = reader.read_into(buffer)
            if info is None:
                continue
            check_frame(info, buffer)
            assert not taken or info.seq > taken[-1], f'seq {info.seq} after {taken[-1]}'
            taken.append(info.seq)
        assert len(taken) >= 300
    finally:
        writer.kill()
        reader.close()
    remove_stale_segments(channel)


def test_writer_killed_mid_write_leaves_reader_consistent(channel: str) -> None:
    """A writer stopped half-way through a frame, then SIGKILLed: the reader gets the last whole
    frame once, never the half one, reports the writer gone; the next writer takes over."""
    width, height = 640, 480
    reader = FrameReader(channel)
    buffer = np.empty(width * height * 3, np.uint8)
    first = WriterProcess('stall', channel, width, height, count=5)
    try:
        first.expect('ready')
        first.expect('stalled')
        info = wait_for(lambda: reader.read_into(buffer), 'the last whole frame')
        check_frame(info, buffer)
        assert info.seq == 5
        assert reader.read_into(buffer) is None and reader.poll() is None  # not the half one
        old_epoch = info.epoch
    finally:
        first.kill()
    status = channel_status(channel)  # SIGKILL ran no clean-up: the segment is still there
    assert status is not None and not status.writer_alive
    assert reader.read_into(buffer) is None
    assert not reader.writer_alive()
    second = WriterProcess('hammer', channel, width, height, count=0)
    try:
        second.expect('ready')
        info = wait_for(lambda: reader.read_into(buffer), 'a frame of the next writer')
        check_frame(info, buffer)
        assert info.epoch != old_epoch
        assert reader.writer_alive()
    finally:
        second.kill()
        reader.close()
    assert remove_stale_segments(channel) == [segment_name(channel)]


def test_writer_killed_at_random_moments(channel: str) -> None:
    """SIGKILL during full-speed writing, three times: no torn frame is ever accepted."""
    width, height = 640, 480
    reader = FrameReader(channel)
    buffer = np.empty(width * height * 3, np.uint8)
    rng = np.random.default_rng(7)
    try:
        for _ in range(3):
            writer = WriterProcess('hammer', channel, width, height, count=0)
            writer.expect('ready')
            wait_for(lambda: reader.read_into(buffer), 'a frame')
            kill_at_s = time.monotonic() + float(rng.uniform(0.05, 0.3))
            last_seq = 0
            while time.monotonic() < kill_at_s:
                info = reader.read_into(buffer)
                if info is not None:
                    check_frame(info, buffer)
                    assert info.seq > last_seq
                    last_seq = info.seq
            writer.kill()
            while reader.writer_alive():
                pass
            for _ in range(10):  # reads after the death: nothing, and certainly nothing torn
                info = reader.read_into(buffer)
                assert info is None
    finally:
        reader.close()
    remove_stale_segments(channel)


def test_restart_with_another_resolution_and_reader_first(channel: str) -> None:
    """Reader before any writer; a VGA writer ends cleanly; a 720p writer follows."""
    reader = FrameReader(channel)
    buffer = np.empty(1280 * 720 * 3, np.uint8)
    try:
        assert reader.read_into(buffer) is None and not reader.writer_alive()
        epochs = []
        for width, height in ((640, 480), (1280, 720)):
            # 'hold': on a busy machine 200 frames can be written before the reader looks,
            # so the writer keeps its last frame up until the reader has taken one
            writer = WriterProcess('hold', channel, width, height, count=200)
            writer.expect('ready')
            info = wait_for(lambda: reader.read_into(buffer), f'a {width}x{height} frame')
            check_frame(info, buffer)
            assert (info.width, info.height) == (width, height)
            epochs.append(info.epoch)
            writer.say('close')
            writer.expect('written')
            writer.expect('done')
            assert writer.finish() == 0
            assert channel_status(channel) is None  # a clean exit unlinks its segment
            wait_for(lambda: not reader.writer_alive(), 'the reader to see the writer gone')
        assert epochs[0] != epochs[1]
    finally:
        reader.close()


def test_writer_exiting_without_close_leaves_nothing(channel: str) -> None:
    writer = WriterProcess('exit', channel, 64, 48, count=3)
    writer.expect('ready')
    writer.expect('done')
    assert writer.finish() == 0
    assert channel_status(channel) is None


def test_stale_sweep_spares_live_writers(channel: str) -> None:
    writer = WriterProcess('hammer', channel, 64, 48, count=0)
    try:
        writer.expect('ready')
        assert segment_name(channel) not in remove_stale_segments()
        assert channel_status(channel).writer_alive
    finally:
        writer.kill()
    assert remove_stale_segments(channel) == [segment_name(channel)]


def test_reader_started_after_the_writer(channel: str) -> None:
    writer = WriterProcess('hammer', channel, 320, 240, count=0)
    try:
        writer.expect('ready')
        status = wait_for(lambda: channel_status(channel), 'the segment')
        assert status.writer_alive and status.writer_pid == writer.proc.pid
        with FrameReader(channel) as reader:
            buffer = np.empty(320 * 240 * 3, np.uint8)
            last: Optional[FrameInfo] = None
            for _ in range(20):
                info = wait_for(lambda: reader.read_into(buffer), 'a frame')
                check_frame(info, buffer)
                assert last is None or info.seq > last.seq
                last = info
    finally:
        writer.kill()
    assert remove_stale_segments() is not None  # also sweeps this user's other dead segments
    assert channel_status(channel) is None


# -- the detector's source (core/shared_input.py) ---------------------------------------------

class PageLocks:
    """Stands in for cudaHostRegister where there is no GPU (the CUDA test below uses the real
    one): records what the source locks and undoes, in order; `refuse` says no."""

    def __init__(self, refuse: bool = False) -> None:
        self.events: List[tuple] = []
        self.refuse = refuse

    def __call__(self, array: np.ndarray):
        address = array.__array_interface__['data'][0]
        self.events.append(('lock', address, array.nbytes))
        if self.refuse:
            return None
        return lambda: self.events.append(('undo', address, array.nbytes))

    def held(self) -> int:
        return sum(1 if event[0] == 'lock' else -1 for event in self.events)


def test_source_takes_the_newest_frame_at_batch_time_and_counts_what_it_skipped(channel):
    """Nothing is read for frames that a newer one replaced before the batch: five frames
    written, one taken (the newest, by copy without page-locking), four counted as dropped;
    never the same frame twice; a waiting collect wakes for a frame written meanwhile."""
    from multicam_ros.core.batching import BatchCollector
    from multicam_ros.core.shared_input import SharedFrameSource
    pool = frame_pool(64, 48)
    with FrameWriter(channel) as writer:
        source = SharedFrameSource({'/cam': channel})
        collector = BatchCollector(['/cam'], sources={'/cam': source.source('/cam')})
        writer.write(pool[0], 500, 'f')
        assert collector.collect(4, timeout_s=0.05) == []  # not active yet
        source.set_active('/cam', True)
        assert [frame.stamp_ns for _, frame in collector.collect(4, timeout_s=5.0)] == [500]
        for seq in range(1, 6):
            writer.write(pool[seq % POOL_SIZE], seq * 1000, 'f')
        batch = collector.collect(4, timeout_s=5.0)
        assert [(camera, frame.stamp_ns) for camera, frame in batch] == [('/cam', 5000)]
        image = batch[0][1].image
        assert np.array_equal(image, pool[5 % POOL_SIZE]) and image.flags.writeable
        assert batch[0][1].intact is None  # a copy: validated as it was made
        counts = collector.counts('/cam')
        assert (counts.received, counts.processed, counts.dropped) == (6, 2, 4)
        assert source.counts('/cam').frames == 2
        assert collector.collect(4, timeout_s=0.05) == []  # never twice
        threading.Timer(0.2, lambda: writer.write(pool[1], 7000, 'f')).start()
        batch = collector.collect(4, timeout_s=10.0)
        assert [frame.stamp_ns for _, frame in batch] == [7000]
        source.close()


def test_in_place_frames_against_a_hammering_writer(channel: str) -> None:
    """Frames left in shared memory are views whose `intact` check, made after they were
    used, tells every overwritten one: against a writer rewriting its two slots as fast as it
    can, every frame judged intact has the pixels its frame_id promises, and the torn ones are
    counted. The slots are page-locked once and unlocked at close."""
    from multicam_ros.core.shared_input import SharedFrameSource, channel_live
    writer = WriterProcess('hammer', channel, 320, 240, slot_count=2)
    writer.expect('ready')
    locks = PageLocks()
    source = SharedFrameSource({'/cam': channel}, page_lock=locks)
    source.set_active('/cam', True)
    whole = torn = 0
    deadline = time.monotonic() + DEADLINE_S
    try:
        while (whole < 20 or torn < 20) and time.monotonic() < deadline:
            got = source.take('/cam')
            if got is None:
                continue
            frame = got[0]
            assert frame.intact is not None and not frame.image.flags.writeable
            crc = zlib.crc32(frame.image)  # the use: it reads the pixels in place
            if frame.intact():
                assert crc == int(frame.frame_id, 16), 'a torn frame passed as intact'
                whole += 1
            else:
                torn += 1
    finally:
        writer.kill()
    assert not channel_live(channel)  # as the node finds out: the dead segment goes
    assert whole >= 20 and torn >= 1, (whole, torn)
    counts = source.counts('/cam')
    assert counts.torn >= torn and counts.in_place == counts.frames == whole + torn
    assert locks.held() == 1 and [event[0] for event in locks.events] == ['lock']
    source.close()
    assert locks.held() == 0


def test_in_place_follows_a_restart_with_another_resolution(channel: str) -> None:
    """A camera restarted at another resolution: the old segment's page-lock is undone before
    the new one's is taken (while its mapping is still referenced), a frame of the old one is
    no longer intact, and the new frames come in place at their new size. Refused page-locks
    mean frames by copy."""
    from multicam_ros.core.shared_input import SharedFrameSource
    locks = PageLocks()
    source = SharedFrameSource({'/cam': channel}, page_lock=locks)
    source.set_active('/cam', True)
    with FrameWriter(channel) as writer:
        writer.write(frame_pool(64, 48)[0], 1000, 'old')
        old = wait_for(lambda: source.take('/cam'), 'a frame')[0]
        assert old.image.shape == (48, 64, 3) and old.intact()
    with FrameWriter(channel) as writer:
        image = frame_pool(80, 60)[1]
        writer.write(image, 2000, 'new')
        new = wait_for(lambda: source.take('/cam'), 'a frame of the new writer')[0]
        assert new.image.shape == (60, 80, 3) and np.array_equal(new.image, image)
        assert new.intact() and not old.intact()
        assert [event[0] for event in locks.events] == ['lock', 'undo', 'lock']
        assert locks.events[0][1:] == locks.events[1][1:]  # the old mapping's, undone
    source.close()
    assert locks.held() == 0

    refused = PageLocks(refuse=True)
    source = SharedFrameSource({'/cam': channel}, page_lock=refused)
    source.set_active('/cam', True)
    with FrameWriter(channel) as writer:
        writer.write(image, 3000, 'new')
        frame = wait_for(lambda: source.take('/cam'), 'a frame by copy')[0]
        writer.write(image, 4000, 'new')
        wait_for(lambda: source.take('/cam'), 'the next frame')
    assert frame.intact is None and frame.image.flags.writeable
    assert [event[0] for event in refused.events] == ['lock']  # asked once per segment
    source.close()


@pytest.mark.gpu
def test_cuda_upload_straight_from_shared_memory(channel: str) -> None:
    """The real page-lock (cudaHostRegister, read-only mapping) and DeviceStager: the device
    holds exactly the written pixels; a frame whose slot was rewritten before its upload is
    dropped and counted; a refused page-lock leaves no CUDA error behind; close unregisters
    the slots."""
    import torch
    from multicam_ros.core.models.preprocess import DeviceStager, cuda_page_lock
    from multicam_ros.core.shared_input import SharedFrameSource
    pool = frame_pool(1280, 720)
    source = SharedFrameSource({'/cam': channel}, page_lock=cuda_page_lock)
    source.set_active('/cam', True)
    stage = DeviceStager('cuda')
    with FrameWriter(channel, slot_count=3) as writer:
        writer.write(pool[0], 1000, 'a')
        first = wait_for(lambda: source.take('/cam'), 'a frame')[0]
        staged = stage([first])
        assert staged[0] is not None and staged[0].image.is_cuda and staged[0].intact is None
        assert torch.equal(staged[0].image.cpu(), torch.from_numpy(pool[0]))
        writer.write(pool[1], 2000, 'b')
        second = wait_for(lambda: source.take('/cam'), 'the next frame')[0]
        for seq in range(3, 6):  # three more: the second frame's slot is rewritten
            writer.write(pool[seq % POOL_SIZE], seq * 1000, 'c')
        assert stage([second]) == [None]
        assert source.counts('/cam').torn == 1 and source.counts('/cam').in_place == 2
        slots = source._cameras['/cam'].locked[0]  # keeps the mapping after close
        assert cuda_page_lock(slots) is None  # registered already: refused, and the error
        torch.zeros(1, device='cuda').add_(1)  # is not left for this thread's next kernel
        source.close()
    undo = cuda_page_lock(slots)  # refused while the source still held its page-lock
    assert undo is not None, 'close did not unregister the slots'
    undo()


if __name__ == '__main__':
    main()
