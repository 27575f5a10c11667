"""The RTSP test bed serves what the camera tests rely on, read by real OpenCV over real RTSP."""
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Dict, List, Optional

import cv2
import numpy as np
import pytest

from multicam_testbed import (SERVER_SCRIPT, RtspServerError, RtspTestServer, footage,
                              footage_server, frame_code, gstreamer_problem, make_test_clip,
                              system_python)

REPO_ROOT = Path(__file__).resolve().parents[1]
WARMUP_S = 1.0    # frames OpenCV buffered while probing the stream arrive in a burst: skip them
MEASURE_S = 3.0


@pytest.fixture(autouse=True)
def rtsp_over_tcp(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make OpenCV's FFmpeg back-end use RTP over the RTSP TCP connection, as cameras do."""
    monkeypatch.setenv('OPENCV_FFMPEG_CAPTURE_OPTIONS', 'rtsp_transport;tcp')


def open_capture(url: str) -> cv2.VideoCapture:
    """Open `url` with OpenCV's FFmpeg back-end, failing the test if it does not open."""
    cap = cv2.VideoCapture(url, cv2.CAP_FFMPEG)
    assert cap.isOpened(), 'OpenCV could not open ' + url
    return cap


def measure_stream(url: str) -> Dict[str, object]:
    """Read `url` for WARMUP_S + MEASURE_S; return the read rate, first and last frame, size."""
    cap = open_capture(url)
    try:
        size_px = (cap.get(cv2.CAP_PROP_FRAME_WIDTH), cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
        nominal_fps = cap.get(cv2.CAP_PROP_FPS)
        ok, first = cap.read()
        assert ok, 'no first frame from ' + url
        warm_end = time.monotonic() + WARMUP_S
        while time.monotonic() < warm_end:
            assert cap.read()[0], 'stream ended during warm-up: ' + url
        frames = 0
        start = time.monotonic()
        last = first
        while time.monotonic() - start < MEASURE_S:
            ok, frame = cap.read()
            assert ok, 'stream ended while measuring: ' + url
            frames += 1
            last = frame
        return {'fps': frames / (time.monotonic() - start), 'first': first, 'last': last,
                'size_px': size_px, 'nominal_fps': nominal_fps}
    finally:
        cap.release()


def measure_concurrently(urls: List[str]) -> List[Dict[str, object]]:
    """measure_stream on every URL at once, one thread each (OpenCV releases the GIL)."""
    results: List[Optional[Dict[str, object]]] = [None] * len(urls)
    errors: List[BaseException] = []

    def work(index: int) -> None:
        try:
            results[index] = measure_stream(urls[index])
        except BaseException as exc:  # handed to the test thread below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,), daemon=True) for i in range(len(urls))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(WARMUP_S + MEASURE_S + 20)
    if errors:
        raise errors[0]
    assert all(r is not None for r in results), 'a reader thread did not finish'
    return results  # type: ignore[return-value]


def read_frames(url: str, count: int) -> np.ndarray:
    """Open `url`, read `count` frames, return the last one."""
    cap = open_capture(url)
    try:
        frame = None
        for _ in range(count):
            ok, frame = cap.read()
            assert ok, 'stream ended early: ' + url
        return frame
    finally:
        cap.release()


def mean_abs_diff(a: np.ndarray, b: np.ndarray) -> float:
    """Mean absolute pixel difference of two equally sized images (0..255)."""
    return float(cv2.absdiff(a, b).mean())


def port_is_free(port: int) -> bool:
    """True when nothing listens on 127.0.0.1:port (TIME_WAIT leftovers do not count)."""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(('127.0.0.1', port))
        except OSError:
            return False
        return True


def free_port() -> int:
    """A TCP port that is free on loopback right now."""
    with socket.socket() as sock:
        sock.bind(('127.0.0.1', 0))
        return sock.getsockname()[1]


@pytest.mark.timeout(40)
def test_four_streams_read_concurrently_at_frame_rate(rtsp_server: RtspTestServer) -> None:
    assert rtsp_server.running
    assert rtsp_server.urls == ['rtsp://127.0.0.1:%d/cam%d' % (rtsp_server.port, i)
                                for i in range(4)]
    results = measure_concurrently(rtsp_server.urls)

    rates = [round(r['fps'], 1) for r in results]
    print('measured read rates (fps):', rates)
    for url, result in zip(rtsp_server.urls, results):
        assert result['fps'] >= 0.9 * 30, '%s read at %.1f fps, want >= 27' % (url, result['fps'])
        assert result['last'].shape == (480, 640, 3)
        # Live content: the running time (and, on some patterns, motion) changes the picture.
        assert not np.array_equal(result['first'], result['last']), url + ' looks frozen'

    frames = [r['last'] for r in results]
    for i in range(len(frames)):
        for j in range(i + 1, len(frames)):
            diff = mean_abs_diff(frames[i], frames[j])
            assert diff > 20, 'cam%d and cam%d look alike (mean abs diff %.1f)' % (i, j, diff)


@pytest.mark.timeout(30)
def test_configured_size_and_rate_are_honoured(rtsp_server_factory) -> None:
    server = rtsp_server_factory(count=1, width=320, height=240, fps=15)
    result = measure_stream(server.url(0))
    assert result['size_px'] == (320, 240)
    assert result['nominal_fps'] == pytest.approx(15, rel=0.05)
    print('measured read rate at 320x240@15: %.1f fps' % result['fps'])
    assert result['last'].shape == (240, 320, 3)
    assert result['fps'] >= 0.9 * 15
    assert result['fps'] <= 1.1 * 15, 'faster than the source: frames were buffered'


@pytest.mark.timeout(30)
def test_restart_on_same_port_serves_fresh_readers(rtsp_server_factory) -> None:
    server = rtsp_server_factory(count=2, width=320, height=240)
    port, url = server.port, server.url(1)
    before = read_frames(url, 5)

    started = time.monotonic()
    server.restart()
    print('restart took %.2f s' % (time.monotonic() - started))
    assert server.running
    assert server.port == port and server.url(1) == url
    after = read_frames(url, 30)
    assert after.shape == before.shape

    server.stop()
    assert not server.running
    assert port_is_free(port)
    server.stop()  # stopping twice is harmless
    server.start()
    assert server.port == port
    read_frames(url, 5)


@pytest.mark.timeout(20)
def test_taken_port_gives_clear_error(rtsp_gstreamer_ready: None) -> None:
    with socket.socket() as sock:
        sock.bind(('127.0.0.1', 0))
        sock.listen()
        port = sock.getsockname()[1]
        server = RtspTestServer(count=1, port=port)
        with pytest.raises(RtspServerError, match='cannot listen on 127.0.0.1:%d' % port):
            server.start()
        assert not server.running


@pytest.mark.timeout(20)
def test_script_prints_ready_once_and_exits_cleanly_on_signals(
        rtsp_gstreamer_ready: None) -> None:
    for sig in (signal.SIGTERM, signal.SIGINT):
        proc = subprocess.Popen([system_python(), '-I', str(SERVER_SCRIPT), '--port', '0',
                                 '--count', '1'], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True)
        try:
            line = proc.stdout.readline()
            assert line.startswith('READY rtsp://127.0.0.1:'), line
            proc.send_signal(sig)
            out, err = proc.communicate(timeout=10)
        finally:
            if proc.poll() is None:
                proc.kill()
        assert proc.returncode == 0, 'exit %d after %s; stderr: %s' % (proc.returncode, sig, err)
        assert out == '', 'more than one line on stdout: %r' % out


@pytest.mark.timeout(20)
def test_missing_bindings_name_the_debian_packages(monkeypatch: pytest.MonkeyPatch) -> None:
    # An interpreter without site-packages has no gi: the script must say what to install.
    done = subprocess.run([sys.executable, '-I', '-S', str(SERVER_SCRIPT), '--check'],
                          capture_output=True, text=True, timeout=15)
    assert done.returncode == 3
    assert 'apt-get install' in done.stderr and 'gir1.2-gst-rtsp-server-1.0' in done.stderr

    monkeypatch.setenv('MULTICAM_GST_PYTHON', '/nonexistent/python3')
    problem = gstreamer_problem()
    assert problem is not None and 'python3-gi' in problem


@pytest.mark.timeout(30)
def test_cli_serves_urls_and_stops_on_sigint() -> None:
    port = free_port()
    cli = Path(sys.executable).with_name('multicam-ros')
    command = ([str(cli)] if cli.exists() else [sys.executable, '-m', 'multicam_ros.cli'])
    command += ['test-streams', '--count', '2', '--port', str(port)]
    proc = subprocess.Popen(command, cwd=REPO_ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    lines: List[str] = []
    # A thread reads stdout line by line, so the test never blocks on a silent CLI.
    reader = threading.Thread(target=lambda: lines.extend(iter(proc.stdout.readline, '')),
                              daemon=True)
    reader.start()
    try:
        deadline = time.monotonic() + 15
        while not any('Ctrl-C' in line for line in lines) and time.monotonic() < deadline:
            if proc.poll() is not None:
                break
            time.sleep(0.05)
        output = ''.join(lines)
        assert 'Ctrl-C' in output, 'CLI output: %r (exit code %r)' % (output, proc.poll())
        urls = ['rtsp://127.0.0.1:%d/cam%d' % (port, i) for i in range(2)]
        for url in urls:
            assert url in output
        assert 'ffplay' in output
        read_frames(urls[1], 3)

        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=10)
        reader.join(5)
        err = proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, 'exit %d; stderr: %s' % (proc.returncode, err)
    assert 'Traceback' not in err
    assert port_is_free(port), 'the server still listens after the CLI exited'


@pytest.mark.timeout(30)
def test_make_test_clip_is_readable_h264(tmp_path: Path) -> None:
    path = make_test_clip(tmp_path / 'clip.mp4', seconds=2, width=320, height=240, fps=15,
                          pattern='testsrc2')
    cap = cv2.VideoCapture(str(path), cv2.CAP_FFMPEG)
    assert cap.isOpened()
    try:
        assert cap.get(cv2.CAP_PROP_FPS) == pytest.approx(15)
        frames = []
        while True:
            ok, frame = cap.read()
            if not ok:
                break
            frames.append(frame)
    finally:
        cap.release()
    assert len(frames) == 30
    assert frames[0].shape == (240, 320, 3)
    assert mean_abs_diff(frames[0], frames[-1]) > 0  # the frame counter moves
    codec = subprocess.run(['ffprobe', '-v', 'error', '-select_streams', 'v:0', '-show_entries',
                            'stream=codec_name', '-of', 'csv=p=0', str(path)],
                           capture_output=True, text=True).stdout.strip()
    assert codec == 'h264'
    with pytest.raises(ValueError, match='pattern'):
        make_test_clip(tmp_path / 'bad.mp4', pattern='nope')


def test_url_bounds_and_unknown_port() -> None:
    server = RtspTestServer(count=2, port=0)
    with pytest.raises(RtspServerError, match='start'):
        server.url(0)
    fixed = RtspTestServer(count=2, port=9554)
    assert fixed.urls == ['rtsp://127.0.0.1:9554/cam0', 'rtsp://127.0.0.1:9554/cam1']
    with pytest.raises(IndexError):
        fixed.url(2)
    assert not fixed.running
    fixed.stop()  # stopping a server that never started is harmless


# -- real footage: vtest.avi cuts, each frame marked with its source index ----------------------


def test_frame_code_round_trip_and_misreads_are_caught() -> None:
    rng = np.random.default_rng(3)
    for index in (0, 1, 794, 4095, frame_code.MAX_INDEX):
        frame = rng.integers(0, 256, (48, 320, 3), dtype=np.uint8)
        assert frame_code.read(frame_code.paint(frame, index)) == index
        # JPEG at an ordinary quality keeps it.
        ok, data = cv2.imencode('.jpg', frame, [cv2.IMWRITE_JPEG_QUALITY, 60])
        assert frame_code.read(cv2.imdecode(data, cv2.IMREAD_COLOR)) == index
    frame = frame_code.paint(np.zeros((16, 200, 3), np.uint8), 300)
    assert frame_code.read(np.zeros((16, 200, 3), np.uint8)) is None  # no strip at all
    block = frame_code.BLOCK_PX
    for position in range(2, frame_code.BLOCKS):  # any one block misread: None, never wrong
        broken = frame.copy()
        cells = broken[-block:, position * block:(position + 1) * block]
        cells[...] = 255 - cells
        assert frame_code.read(broken) is None, position
    with pytest.raises(ValueError):
        frame_code.paint(np.zeros((8, 100, 3), np.uint8), 1)  # too narrow for the strip


def test_cuts_crop_mirror_and_loop() -> None:
    source = np.zeros((576, 768, 3), np.uint8)
    source[:, :384] = 200  # left half bright
    whole, mirrored, cropped, both = footage.DEMO_CUTS
    assert whole.render(source, 5).shape == (576, 768, 3)
    assert cropped.render(source, 5).shape == (480, 640, 3)
    assert cropped.size((768, 576)) == (640, 480) and whole.size((768, 576)) == (768, 576)
    assert mirrored.render(source, 5)[10, 10, 0] == 0  # the bright half is now on the right
    assert whole.render(source, 5)[10, 10, 0] == 200
    for cut in footage.DEMO_CUTS:
        assert frame_code.read(cut.render(source, 321)) == 321
        assert cut.source_index(0) == cut.start
        assert cut.source_index(cut.length) == cut.start  # it loops
        assert cut.start + cut.length <= 795  # vtest.avi has 795 frames
    assert len({cut.start for cut in footage.DEMO_CUTS}) == 4


@pytest.mark.timeout(120)
def test_footage_streams_carry_their_source_frames_live(rtsp_gstreamer_ready: None) -> None:
    """The four demo cameras over RTSP: each at the footage's 10 fps, distinct, and every
    received frame carries the index of the source frame it shows (and shows it)."""
    try:
        server = footage_server(port=0)
    except footage.FootageError as exc:
        pytest.fail(str(exc), pytrace=False)
    assert server.count == 4 and server.fps == footage.FOOTAGE_FPS
    with server:
        results = measure_concurrently(server.urls)
        received: Dict[int, np.ndarray] = {}
        indices: List[Optional[int]] = []
        cap = open_capture(server.url(2))
        try:
            for _ in range(12):
                ok, frame = cap.read()
                assert ok
                index = frame_code.read(frame)
                indices.append(index)
                if index is not None:
                    received[index] = frame
        finally:
            cap.release()
    for cut, result in zip(footage.DEMO_CUTS, results):
        print(f'{cut.name}: {result["fps"]:.1f} fps')
        assert 0.85 * footage.FOOTAGE_FPS <= result['fps'] <= 1.15 * footage.FOOTAGE_FPS
        width, height = cut.size((768, 576))
        assert result['last'].shape == (height, width, 3)
        first, last = frame_code.read(result['first']), frame_code.read(result['last'])
        assert first is not None and last is not None
        assert cut.start <= first < cut.start + cut.length
        assert cut.start <= last < cut.start + cut.length
        assert last != first, cut.name + ' looks frozen'
    # Consecutive frames of one stream carry consecutive source indices: nothing skipped.
    assert None not in indices, indices
    assert np.all(np.diff(indices) == 1), indices
    # A received frame is the rendering of its source frame (through JPEG and H.264), and
    # looks less like the rendering of the frame before it.
    cut = footage.DEMO_CUTS[2]
    sources = footage.source_frames([*received, *(index - 1 for index in received)])
    for index, frame in received.items():
        own = mean_abs_diff(frame, cut.render(sources[index], index))
        before = mean_abs_diff(frame, cut.render(sources[index - 1], index - 1))
        assert own < 4.0 and own < before, (index, own, before)


def test_server_script_rejects_mixed_or_bad_sequences() -> None:
    base = [sys.executable, '-I', '-S', str(SERVER_SCRIPT)]
    done = subprocess.run(base + ['--count', '2', '--sequence', '/x/%05d.jpg'],
                          capture_output=True, text=True, timeout=15)
    assert done.returncode == 2 and 'exclude each other' in done.stderr
    done = subprocess.run(base + ['--sequence', '/x/frame.jpg'], capture_output=True, text=True,
                          timeout=15)
    assert done.returncode == 2 and 'file pattern' in done.stderr
