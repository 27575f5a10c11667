"""Capture thread, newest-frame slot, backoff and frame functions, with real OpenCV and streams.

Sources are real: H.264 clips written by ffmpeg, an ffmpeg HTTP live stream that the tests pause
(SIGSTOP) and restart, closed and silent TCP ports, and the GStreamer RTSP test bed.
"""
import dataclasses
import hashlib
import logging
import random
import signal
import socket
import subprocess
import threading
import time

import numpy as np
import pytest

from multicam_ros.core.capture import Backoff, CaptureOptions, CaptureState, CaptureWorker
from multicam_ros.core.frames import Frame, LatestFrameSlot
from multicam_ros.core.imaging import (convert_encoding, make_no_signal_frame, output_size,
                                       prepare_frame, resize_frame)
from multicam_ros.core.settings import ConfigError
from multicam_ros.core.sources import CAPTURE_OPTIONS_ENV, validate_source
from multicam_testbed import make_test_clip

PASSWORD = 'Hunter2-secret'
CLIP_FPS = 30


def wait_for(predicate, timeout_s, interval_s=0.02):
    """Poll ``predicate`` until true or ``timeout_s``; return its last value."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value or time.monotonic() >= deadline:
            return value
        time.sleep(interval_s)


def free_port():
    with socket.socket() as sock:
        sock.bind(('127.0.0.1', 0))
        return sock.getsockname()[1]


class StateLog:
    """Collects (old, new, detail) state changes from the worker thread."""

    def __init__(self):
        self.changes = []

    def __call__(self, old, new, detail):
        self.changes.append((old, new, detail))

    @property
    def pairs(self):
        return [(old, new) for old, new, _ in self.changes]


@pytest.fixture(scope='module')
def clips(tmp_path_factory):
    """Small H.264 clips: 2 s and 0.5 s at 30 fps, 320x240, plus a corrupted MPEG-TS."""
    folder = tmp_path_factory.mktemp('clips')
    two_s = make_test_clip(folder / 'two_s.mp4', seconds=2, width=320, height=240, fps=CLIP_FPS)
    half_s = make_test_clip(folder / 'half_s.mp4', seconds=0.5, width=320, height=240,
                            fps=CLIP_FPS)
    ts = make_test_clip(folder / 'two_s.ts', seconds=2, width=320, height=240, fps=CLIP_FPS)
    data = bytearray(ts.read_bytes())
    rng = random.Random(7)
    for _ in range(40):
        at = rng.randrange(len(data) // 4, 3 * len(data) // 4)
        data[at:at + 64] = bytes(rng.randrange(256) for _ in range(64))
    corrupt = folder / 'corrupt.ts'
    corrupt.write_bytes(bytes(data))
    return {'two_s': str(two_s), 'half_s': str(half_s), 'corrupt': str(corrupt)}


@pytest.fixture
def capture_env(monkeypatch):
    """Let workers set OPENCV_FFMPEG_CAPTURE_OPTIONS; restore it after the test."""
    monkeypatch.setenv(CAPTURE_OPTIONS_ENV, '')


# -- LatestFrameSlot -----------------------------------------------------------------------

def frame(seq):
    return Frame(np.zeros((2, 2, 3), np.uint8), stamp_ns=1000 + seq, seq=seq, monotonic_s=0.0)


def test_slot_hands_out_the_newest_once_and_counts_drops():
    slot = LatestFrameSlot()
    assert slot.take(0) is None
    assert slot.put(frame(0)) is False
    assert slot.put(frame(1)) is True  # frame 0 was never taken: dropped
    assert slot.put(frame(2)) is True
    assert slot.take(0).seq == 2
    assert slot.take(0) is None  # never the same frame twice
    slot.put(frame(3))
    assert slot.take(0).seq == 3
    assert (slot.put_count, slot.taken_count, slot.dropped_count) == (4, 2, 2)


def test_slot_take_times_out():
    slot = LatestFrameSlot()
    started = time.monotonic()
    assert slot.take(0.1) is None
    assert time.monotonic() - started >= 0.09


def test_slot_close_wakes_waiters_and_keeps_a_pending_item():
    slot = LatestFrameSlot()
    results = []
    waiters = [threading.Thread(target=lambda: results.append(slot.take(None)))
               for _ in range(3)]
    for thread in waiters:
        thread.start()
    time.sleep(0.1)
    slot.close()
    for thread in waiters:
        thread.join(2.0)
        assert not thread.is_alive()
    assert results == [None, None, None]
    slot.put(frame(5))  # e.g. the last frame before the worker closed the slot
    assert slot.take(None).seq == 5
    assert slot.take(None) is None and slot.closed


def test_slot_between_threads_never_repeats_and_accounts_for_every_frame():
    slot = LatestFrameSlot()
    total = 3000
    taken = []

    def consume():
        while True:
            item = slot.take(1.0)
            if item is None:
                return
            taken.append(item.seq)
            time.sleep(0.0005)  # a slow consumer: most frames get dropped

    consumer = threading.Thread(target=consume)
    consumer.start()
    for seq in range(total):
        slot.put(frame(seq))
    slot.close()
    consumer.join(10.0)
    assert not consumer.is_alive()
    assert taken == sorted(set(taken))  # strictly increasing: no repeats, no going back
    assert taken[-1] == total - 1  # the newest frame is never lost
    assert slot.dropped_count > 0
    assert len(taken) + slot.dropped_count == total


# -- Backoff and options -------------------------------------------------------------------

def test_backoff_grows_within_bounds_and_resets():
    backoff = Backoff(0.1, 2.0, jitter_fraction=0.25, rng=random.Random(1))
    delays = [backoff.next_delay_s() for _ in range(10)]
    assert all(0.1 <= d <= 2.0 for d in delays)
    growing = delays[:5]  # bases 0.1, 0.2, 0.4, 0.8, 1.6: strictly growing
    assert growing == sorted(growing) and len(set(growing)) == 5
    assert all(d >= 1.5 for d in delays[5:])  # capped: drawn from [0.75 * 2.0, 2.0]
    backoff.reset()
    assert backoff.next_delay_s() <= 0.1 + 1e-9


@pytest.mark.parametrize('kwargs, expected', [
    ({'rtsp_transport': 'http'}, "rtsp_transport: 'http' is not a choice; accepted: one of "
     "'tcp', 'udp'"),
    ({'open_timeout_s': 0}, 'open_timeout_s: 0.0 is out of range; accepted: a number from 0.1'),
    ({'read_timeout_s': -1}, 'read_timeout_s: -1.0 is out of range; accepted: a number from 0.1'),
    ({'reconnect_delay_min_s': 0}, 'reconnect_delay_min_s: 0.0 is out of range; accepted: '),
    ({'reconnect_delay_min_s': 5, 'reconnect_delay_max_s': 1},
     'reconnect_delay_min_s: 5 is more than reconnect_delay_max_s (1); accepted: '),
])
def test_capture_options_name_the_bad_parameter(kwargs, expected):
    with pytest.raises(ConfigError) as info:
        CaptureOptions(**kwargs)
    assert str(info.value).startswith(expected)


# -- CaptureWorker on files ----------------------------------------------------------------

def drain(worker, timeout_s=1.0):
    """Take frames until the slot is closed (worker ended or stopped) or nothing comes."""
    frames = []
    while True:
        item = worker.slot.take(timeout_s)
        if item is None:
            return frames
        frames.append(item)


@pytest.mark.timeout(30)
def test_worker_plays_a_file_at_its_fps(clips):
    log = StateLog()
    worker = CaptureWorker(validate_source(clips['two_s']), time.monotonic_ns,
                           CaptureOptions(loop=False), on_state_change=log)
    started = time.monotonic()
    worker.start()
    frames = drain(worker, timeout_s=5.0)
    elapsed_s = time.monotonic() - started
    assert worker.join(2.0)
    stats = worker.snapshot()
    assert stats.state is CaptureState.ENDED
    assert log.pairs == [(CaptureState.CONNECTING, CaptureState.STREAMING),
                         (CaptureState.STREAMING, CaptureState.ENDED)]
    assert stats.frames_captured == 2 * CLIP_FPS
    assert stats.source_fps == pytest.approx(CLIP_FPS)
    assert (stats.frame_width, stats.frame_height) == (320, 240)
    assert stats.reconnect_attempts == 0 and stats.last_error == ''
    # A fast consumer sees every frame, once, in order.
    assert [f.seq for f in frames] == list(range(2 * CLIP_FPS))
    assert frames[0].image.shape == (240, 320, 3)
    stamps = [f.stamp_ns for f in frames]
    assert all(b > a for a, b in zip(stamps, stamps[1:]))
    # Paced at the file's rate, not as fast as the CPU decodes (2 s of video).
    interval_s = np.median(np.diff(stamps)) / 1e9
    assert 0.6 / CLIP_FPS < interval_s < 1.6 / CLIP_FPS
    assert elapsed_s > 1.5
    assert stats.frames_dropped + len(frames) == stats.frames_captured


@pytest.mark.timeout(30)
def test_unpaced_file_is_read_as_fast_as_it_decodes(clips):
    worker = CaptureWorker(validate_source(clips['two_s']), time.monotonic_ns,
                           CaptureOptions(pace_files=False, loop=False))
    started = time.monotonic()
    worker.start()
    assert worker.join(10.0)
    assert time.monotonic() - started < 1.5  # the paced run takes 2 s
    assert worker.snapshot().frames_captured == 2 * CLIP_FPS


@pytest.mark.timeout(30)
def test_frame_callback_sees_every_frame_and_decides_what_the_slot_gets(clips, caplog):
    """on_frame runs on the capture thread for every decoded frame, also those a consumer that
    never takes would lose in the slot; what it returns is what the slot holds (None: nothing),
    and one that raises is logged and changes nothing."""
    seen = []

    def on_frame(frame):
        seen.append(frame.seq)
        if frame.seq == 5:
            raise RuntimeError('callback bug')
        if frame.seq % 2:
            return None
        return dataclasses.replace(frame, image=frame.image[:10], stamp_ns=-frame.seq)

    worker = CaptureWorker(validate_source(clips['two_s']), time.monotonic_ns,
                           CaptureOptions(pace_files=False, loop=False), on_frame=on_frame)
    with caplog.at_level(logging.ERROR):
        worker.start()
        assert worker.join(10.0)
    assert seen == list(range(2 * CLIP_FPS)) == list(range(worker.snapshot().frames_captured))
    assert 'frame callback failed' in caplog.text
    last = worker.slot.take(timeout_s=0)
    assert last.seq == 2 * CLIP_FPS - 2 and last.stamp_ns == -last.seq  # the callback's frame
    assert last.image.shape[0] == 10
    # 31 frames went into the slot (the 30 even ones, and 5 as decoded); all but the last were
    # replaced there before anyone took them.
    assert worker.snapshot().frames_dropped == 30


def _decoded_pixels(clip: str, **worker_kwargs) -> list:
    """Every frame of a clip through a CaptureWorker: (seq, md5 of the pixels, the array)."""
    frames = []

    def on_frame(frame):
        frames.append((frame.seq, hashlib.md5(frame.image.tobytes()).hexdigest(), frame.image))
        return frame

    worker = CaptureWorker(validate_source(clip), time.monotonic_ns,
                           CaptureOptions(pace_files=False, loop=False), on_frame=on_frame,
                           **worker_kwargs)
    worker.start()
    assert worker.join(10.0)
    return frames


@pytest.mark.timeout(30)
def test_frames_are_converted_into_the_array_retrieve_into_offers(clips, caplog):
    """retrieve_into gets the previous frame's size, and the decoder converts the next frame
    into the array it returns (camera_node's shared-memory slot), with the same pixels as
    without it. An array of another shape is left alone (a new one instead); a raising
    callback or a read-only array costs a log line, never a frame."""
    offered, sizes = {}, []

    def retrieve_into(width, height):
        sizes.append((width, height))
        call = len(sizes)
        if call == 3:
            raise RuntimeError('callback bug')
        if call == 6:
            return None
        array = np.zeros((height, width, 3) if call != 4 else (10, 10, 3), np.uint8)
        array.flags.writeable = call != 5
        offered[call] = array  # call n offers the array for frame n (frame 0 gets no call)
        return array

    with caplog.at_level(logging.ERROR):
        into = _decoded_pixels(clips['two_s'], retrieve_into=retrieve_into)
    plain = _decoded_pixels(clips['two_s'])
    assert [(seq, digest) for seq, digest, _ in into] == [(s, d) for s, d, _ in plain]
    assert len(into) == 2 * CLIP_FPS and sizes == [(320, 240)] * (len(into) - 1)
    in_place = [seq for seq, _, image in into if image is offered.get(seq)]
    assert in_place == [seq for seq in range(1, len(into)) if seq not in (3, 4, 5, 6)]
    assert not offered[4].any()  # the 10 x 10 array was not written
    assert 'retrieve_into callback failed' in caplog.text
    assert 'cannot convert a frame into the retrieve_into array' in caplog.text


@pytest.mark.timeout(30)
def test_loop_rewinds_and_stop_ends_it(clips):
    log = StateLog()
    worker = CaptureWorker(validate_source(clips['half_s']), time.monotonic_ns,
                           CaptureOptions(loop=True), on_state_change=log)
    worker.start()
    taken = []
    deadline = time.monotonic() + 10.0
    while worker.snapshot().frames_captured < 40 and time.monotonic() < deadline:
        item = worker.slot.take(0.5)
        if item is not None:
            taken.append(item)
    stats = worker.snapshot()
    assert stats.frames_captured >= 40  # more than two passes over a 15-frame clip
    assert stats.state is CaptureState.STREAMING
    seqs = [f.seq for f in taken]
    stamps = [f.stamp_ns for f in taken]
    assert seqs == sorted(set(seqs)) and stamps == sorted(set(stamps))
    started = time.monotonic()
    assert worker.stop() is True
    assert time.monotonic() - started < 2.0
    assert worker.state is CaptureState.STOPPED
    assert log.pairs == [(CaptureState.CONNECTING, CaptureState.STREAMING),
                         (CaptureState.STREAMING, CaptureState.STOPPED)]


@pytest.mark.timeout(30)
def test_corrupt_file_and_a_failing_callback_do_not_kill_the_worker(clips):
    def broken_callback(old, new, detail):
        raise RuntimeError('callback bug')

    worker = CaptureWorker(validate_source(clips['corrupt']), time.monotonic_ns,
                           CaptureOptions(pace_files=False, loop=False),
                           on_state_change=broken_callback)
    worker.start()
    assert worker.join(10.0)
    stats = worker.snapshot()
    assert stats.state is CaptureState.ENDED
    assert 0 < stats.frames_captured + stats.frames_corrupt <= 2 * CLIP_FPS


# -- CaptureWorker on network sources ------------------------------------------------------

@pytest.mark.timeout(30)
def test_unreachable_rtsp_reconnects_with_backoff_and_stops_fast(capture_env, capfd, caplog):
    caplog.set_level('DEBUG')
    url = f'rtsp://admin:{PASSWORD}@127.0.0.1:{free_port()}/x'
    log = StateLog()
    options = CaptureOptions(open_timeout_s=1.0, reconnect_delay_min_s=0.05,
                             reconnect_delay_max_s=0.4)
    worker = CaptureWorker(validate_source(url), time.monotonic_ns, options,
                           on_state_change=log)
    worker.start()
    assert wait_for(lambda: worker.snapshot().reconnect_attempts >= 6, 10.0)
    stats = worker.snapshot()
    assert stats.state is CaptureState.RECONNECTING
    assert stats.frames_captured == 0 and stats.capture_fps == 0.0
    delays = stats.recent_reconnect_delays_s
    assert all(0.05 <= d <= 0.4 for d in delays)
    assert delays[0] < delays[1] < delays[2] < delays[3]  # bases 0.05, 0.1, 0.2, 0.4 (cap)
    assert 'rtsp://admin:***@127.0.0.1' in stats.last_error
    started = time.monotonic()
    assert worker.stop() is True
    assert time.monotonic() - started < 2.0
    assert worker.state is CaptureState.STOPPED
    # One log-worthy change per state, not one per failed attempt.
    assert log.pairs == [(CaptureState.CONNECTING, CaptureState.RECONNECTING),
                         (CaptureState.RECONNECTING, CaptureState.STOPPED)]
    out, err = capfd.readouterr()
    everything = ' '.join([out, err, caplog.text, repr(worker.snapshot()), repr(log.changes),
                           repr(worker.source)])
    assert PASSWORD not in everything


@pytest.mark.timeout(30)
def test_stop_does_not_wait_for_an_open_blocked_in_opencv(capture_env):
    """A silent server blocks VideoCapture's open until open_timeout_s; stop() returns anyway."""
    server = socket.socket()
    server.bind(('127.0.0.1', 0))
    server.listen(4)  # the kernel accepts the connection; nobody ever answers
    try:
        url = f'rtsp://127.0.0.1:{server.getsockname()[1]}/x'
        worker = CaptureWorker(validate_source(url), time.monotonic_ns,
                               CaptureOptions(open_timeout_s=3.0))
        worker.start()
        time.sleep(0.3)
        started = time.monotonic()
        finished = worker.stop(timeout_s=0.5)
        assert time.monotonic() - started < 2.0
        assert finished is False  # still inside OpenCV's open...
        assert worker.slot.take(None) is None  # ...but frame waiters are released at once
        assert worker.join(6.0)  # ...and the open's own timeout ends the thread
        assert worker.state is CaptureState.STOPPED
    finally:
        server.close()


@pytest.mark.timeout(30)
def test_missing_device_keeps_retrying():
    worker = CaptureWorker(validate_source('/dev/video99'), time.monotonic_ns,
                           CaptureOptions(reconnect_delay_min_s=0.05, reconnect_delay_max_s=0.1))
    worker.start()
    assert wait_for(lambda: worker.snapshot().reconnect_attempts >= 2, 5.0)
    stats = worker.snapshot()
    assert stats.state is CaptureState.RECONNECTING
    assert 'cannot open /dev/video99 (no such device' in stats.last_error
    assert worker.stop() is True


class FfmpegHttpStream:
    """A live MPEG-TS stream over HTTP served by an ffmpeg process (one client at a time)."""

    def __init__(self, clip, port):
        self.clip = clip
        self.url = f'http://127.0.0.1:{port}/live.ts'
        self.proc = None

    def start(self):
        self.proc = subprocess.Popen(
            ['ffmpeg', '-hide_banner', '-loglevel', 'error', '-nostdin', '-re',
             '-stream_loop', '-1', '-i', self.clip, '-c', 'copy', '-f', 'mpegts',
             '-listen', '1', self.url], stdin=subprocess.DEVNULL)
        return self

    def pause(self):
        self.proc.send_signal(signal.SIGSTOP)

    def kill(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5.0)


@pytest.fixture
def http_stream(clips):
    stream = FfmpegHttpStream(clips['two_s'], free_port())
    yield stream
    stream.kill()


@pytest.mark.timeout(60)
def test_stalled_stream_hits_read_timeout_and_recovers(capture_env, http_stream):
    log = StateLog()
    options = CaptureOptions(open_timeout_s=2.0, read_timeout_s=1.0,
                             reconnect_delay_min_s=0.1, reconnect_delay_max_s=0.5)
    worker = CaptureWorker(validate_source(http_stream.url), time.monotonic_ns, options,
                           on_state_change=log)
    http_stream.start()
    worker.start()
    try:
        # ffmpeg may still be starting: the first opens can be refused (that is a reconnect).
        assert wait_for(lambda: worker.state is CaptureState.STREAMING, 15.0)
        assert wait_for(lambda: worker.snapshot().frames_captured >= 10, 10.0)
        reconnects_before = worker.snapshot().reconnects_succeeded
        changes_before = len(log.pairs)
        http_stream.pause()  # the TCP connection stays open; frames just stop coming
        paused_s = time.monotonic()
        assert wait_for(lambda: worker.state is CaptureState.RECONNECTING, 10.0)
        stall_s = time.monotonic() - paused_s
        assert stall_s < 1.0 + 3.0  # read_timeout_s plus already-buffered frames and slack
        assert 'no frame for 1 s (read timeout)' in worker.snapshot().last_error
        http_stream.kill()
        http_stream.start()  # a new server on the same port
        assert wait_for(lambda: worker.state is CaptureState.STREAMING, 15.0)
        stats = worker.snapshot()
        assert stats.reconnects_succeeded == reconnects_before + 1
        assert stats.reconnect_attempts >= 1
        assert log.pairs[changes_before:] == [(CaptureState.STREAMING, CaptureState.RECONNECTING),
                                              (CaptureState.RECONNECTING, CaptureState.STREAMING)]
    finally:
        started = time.monotonic()
        assert worker.stop() is True
        assert time.monotonic() - started < 2.0


@pytest.mark.timeout(60)
def test_stop_does_not_wait_for_a_read_blocked_in_opencv(capture_env, http_stream):
    worker = CaptureWorker(validate_source(http_stream.url), time.monotonic_ns,
                           CaptureOptions(read_timeout_s=20.0, reconnect_delay_min_s=0.1))
    http_stream.start()
    worker.start()
    assert wait_for(lambda: worker.snapshot().frames_captured >= 10, 15.0)
    http_stream.pause()
    time.sleep(0.5)  # the decoder's buffered frames run out; grab() now blocks in OpenCV
    started = time.monotonic()
    assert worker.stop(timeout_s=0.5) is False
    assert time.monotonic() - started < 2.0
    http_stream.kill()  # the blocked read fails at once when the connection drops
    assert worker.join(5.0)
    assert worker.state is CaptureState.STOPPED


@pytest.mark.timeout(90)
def test_rtsp_worker_recovers_after_server_restart(capture_env, rtsp_server_factory):
    server = rtsp_server_factory(count=1, width=320, height=240, fps=30)
    log = StateLog()
    options = CaptureOptions(rtsp_transport='tcp', open_timeout_s=3.0, read_timeout_s=2.0,
                             reconnect_delay_min_s=0.1, reconnect_delay_max_s=1.0)
    worker = CaptureWorker(validate_source(server.url(0)), time.monotonic_ns, options,
                           on_state_change=log)
    worker.start()
    taken = []

    def take_until(predicate, timeout_s):
        deadline = time.monotonic() + timeout_s
        while not predicate() and time.monotonic() < deadline:
            item = worker.slot.take(0.1)
            if item is not None:
                taken.append(item)
        return predicate()

    try:
        assert take_until(lambda: worker.snapshot().frames_captured >= 30, 20.0)
        assert taken[-1].image.shape == (240, 320, 3)
        before = worker.snapshot().frames_captured
        server.restart()
        assert take_until(lambda: worker.snapshot().reconnects_succeeded >= 1, 30.0)
        assert take_until(lambda: worker.snapshot().frames_captured >= before + 30, 10.0)
        assert worker.state is CaptureState.STREAMING
        assert (CaptureState.STREAMING, CaptureState.RECONNECTING) in log.pairs
        assert any(new is CaptureState.RECONNECTING and 'stream closed' in detail
                   for _, new, detail in log.changes)  # a restart closes the connection
        assert log.pairs[-1] == (CaptureState.RECONNECTING, CaptureState.STREAMING)
        seqs = [f.seq for f in taken]
        stamps = [f.stamp_ns for f in taken]
        assert seqs == sorted(set(seqs)) and stamps == sorted(set(stamps))
    finally:
        started = time.monotonic()
        assert worker.stop() is True
        assert time.monotonic() - started < 2.0


@pytest.mark.timeout(60)
def test_rtsp_over_udp_streams(capture_env, rtsp_server_factory):
    server = rtsp_server_factory(count=1, width=320, height=240, fps=30)
    worker = CaptureWorker(validate_source(server.url(0)), time.monotonic_ns,
                           CaptureOptions(rtsp_transport='udp', open_timeout_s=5.0))
    worker.start()
    try:
        assert wait_for(lambda: worker.snapshot().frames_captured >= 30, 20.0)
        assert worker.state is CaptureState.STREAMING
    finally:
        assert worker.stop() is True


# -- pure frame functions ------------------------------------------------------------------

@pytest.mark.parametrize('src, requested, expected', [
    ((640, 480), (0, 0), (640, 480)),
    ((640, 480), (320, 0), (320, 240)),
    ((640, 480), (0, 240), (320, 240)),
    ((1920, 1080), (0, 720), (1280, 720)),
    ((1920, 1080), (640, 0), (640, 360)),
    ((640, 480), (100, 100), (100, 100)),
    ((641, 479), (0, 1), (1, 1)),
])
def test_output_size(src, requested, expected):
    assert output_size(*src, *requested) == expected


def test_resize_frame_and_errors():
    image = np.random.default_rng(0).integers(0, 255, (480, 640, 3), dtype=np.uint8)
    assert resize_frame(image) is image  # nothing to do: no copy
    assert resize_frame(image, 320, 0).shape == (240, 320, 3)
    assert resize_frame(image, 0, 960).shape == (960, 1280, 3)
    assert resize_frame(image[:, :, 0], 64, 48).shape == (48, 64)
    for bad, key in (((-1, 0), 'width'), ((0, -5), 'height'), ((1.5, 0), 'width'),
                     ((True, 0), 'width')):
        with pytest.raises(ConfigError, match=rf'^{key}: .* is not an integer >= 0; accepted: '
                                              r'an integer >= 0 \(0 keeps the source size\)$'):
            resize_frame(image, *bad)


def test_convert_encoding():
    bgr = np.zeros((4, 6, 3), np.uint8)
    bgr[..., 0] = 255  # pure blue in BGR
    assert convert_encoding(bgr, 'bgr8') is bgr
    rgb = convert_encoding(bgr, 'rgb8')
    assert rgb.shape == (4, 6, 3) and rgb[0, 0].tolist() == [0, 0, 255]
    mono = convert_encoding(bgr, 'mono8')
    assert mono.shape == (4, 6) and mono.dtype == np.uint8 and 25 <= mono[0, 0] <= 35
    gray = np.full((4, 6), 77, np.uint8)
    assert convert_encoding(gray, 'mono8') is gray
    assert convert_encoding(gray, 'bgr8').shape == (4, 6, 3)
    bgra = np.zeros((4, 6, 4), np.uint8)
    assert convert_encoding(bgra, 'rgb8').shape == (4, 6, 3)
    with pytest.raises(ConfigError, match="^encoding: 'yuv422' is not a choice; accepted: one of "
                                          "'bgr8', 'rgb8', 'mono8'$"):
        convert_encoding(bgr, 'yuv422')
    assert prepare_frame(np.zeros((480, 640, 3), np.uint8), 320, 0, 'mono8').shape == (240, 320)


def test_no_signal_frame_is_clearly_marked():
    frame_ = make_no_signal_frame(640, 480, detail=f'cam0 rtsp://a:{PASSWORD}@h/x 12:00:00')
    assert frame_.shape == (480, 640, 3) and frame_.dtype == np.uint8
    blue, green, red = (frame_[..., i].astype(int) for i in range(3))
    strong_red = (red > 150) & (green < 60) & (blue < 60)
    assert strong_red.mean() > 0.1  # a big red banner
    banner_row = frame_[int(480 * 0.47)]
    assert (banner_row.min(axis=1) > 200).any()  # white letters on it
    assert frame_.mean() < 80  # otherwise dark
    assert not np.array_equal(frame_, make_no_signal_frame(640, 480, text='OFFLINE'))
    for width, height in ((1920, 1080), (16, 16), (1, 1), (2000, 10)):
        assert make_no_signal_frame(width, height).shape == (height, width, 3)
    for width, height in ((0, 480), (640, -1), (64.0, 48)):
        with pytest.raises(ValueError, match='NO SIGNAL frame needs an integer size > 0'):
            make_no_signal_frame(width, height)
