"""`multicam-ros view`: the live page in a real headless Chromium on the real system, and the
ROS-free hub and HTTP side on their own."""
import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Dict, List

import cv2
import numpy as np
import pytest

from multicam_ros.cli import view_cameras
from multicam_ros.core.settings import ConfigError
from multicam_ros.system.viewer import BOUNDARY, NO_SIGNAL_AFTER_S, ViewerHub, ViewerServer, \
    encode_jpeg, is_loopback, loopback_warning, read_live
from ros_helpers import REPO, wait_for

CHROMIUM = Path('/usr/bin/chromium')
CHROMEDRIVER = Path('/usr/bin/chromedriver')
CHROMIUM_FLAGS = ('--headless', '--no-sandbox', '--disable-gpu',
                  '--disable-background-networking', '--disable-component-update',
                  '--disable-sync', '--no-first-run')
SCREENSHOT_ENV = 'MULTICAM_VIEWER_SCREENSHOT'  # where to keep the README's screenshot
SCREENSHOT_MAX_BYTES = 150_000
MOVED = 0.5  # mean absolute difference (0..255) between two screenshots of a moving picture


class FakeClock:
    def __init__(self) -> None:
        self.now_s = 1000.0

    def __call__(self) -> float:
        return self.now_s


def picture(value: int, width: int = 64, height: int = 48) -> np.ndarray:
    return np.full((height, width, 3), value, np.uint8)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(('127.0.0.1', 0))
        return sock.getsockname()[1]


# -- the hub: states, figures, work only for watchers -----------------------------------------


def test_tile_states_follow_pictures_watchers_and_camera_diagnostics():
    clock = FakeClock()
    hub = ViewerHub(['/cam0', '/robot/front'], clock=clock)
    feed = hub.feed('/cam0')
    assert [s.label for s in hub.status()] == ['cam0', 'robot/front']
    assert feed.status().state == 'idle' and hub.watched() == []
    feed.watch()
    assert hub.watched() == ['/cam0']
    assert feed.status().state == 'waiting'
    for _ in range(11):  # 10 fps, 40 ms from capture to here
        feed.put(picture(10), latency_s=0.040)
        clock.now_s += 0.1
    status = feed.status()
    assert (status.state, status.width, status.height) == ('live', 64, 48)
    assert status.fps == pytest.approx(10.0, rel=0.01)
    assert status.latency_ms == pytest.approx(40.0)
    # The camera_node says it lost its stream: NO SIGNAL at once, with the reason.
    feed.note_camera_state('reconnecting')
    assert (feed.status().state, feed.status().detail) == ('no signal', 'camera reconnecting')
    feed.note_camera_state('streaming')
    assert feed.status().state == 'live'
    # No picture for longer than the timeout: NO SIGNAL, figures cleared.
    clock.now_s += NO_SIGNAL_AFTER_S + 0.5
    status = feed.status()
    assert status.state == 'no signal' and status.detail.startswith('no picture for')
    assert status.fps == 0.0 and status.latency_ms is None
    # A camera that never sends anything turns to NO SIGNAL once watched long enough.
    other = hub.feed('/robot/front')
    other.watch()
    clock.now_s += NO_SIGNAL_AFTER_S + 0.5
    assert other.status().state == 'no signal'
    # A fresh watch forgets the old picture: waiting again, not NO SIGNAL from the past.
    feed.unwatch()
    feed.watch()
    assert feed.status().state == 'waiting' and feed.seq == 0


def test_a_slow_camera_is_not_called_down_between_its_pictures():
    clock = FakeClock()
    feed = ViewerHub(['/slow'], clock=clock).feed('/slow')
    feed.watch()
    for _ in range(4):  # one picture every 2 s
        feed.put(picture(0), 0.1)
        clock.now_s += 2.0
    clock.now_s += 2.5  # 4.5 s since the last one: more than 3 s, less than 4 intervals
    assert feed.status().state == 'live'
    assert feed.status().fps == pytest.approx(0.5)


def test_pictures_are_encoded_only_for_watchers_and_once_each():
    hub = ViewerHub(['/cam0'])
    feed = hub.feed('/cam0')
    for value in range(20):  # nobody watches: the pictures are only kept, never encoded
        feed.put(picture(value), 0.01)
    assert feed.encoded == 0
    seq, first = feed.jpeg()
    again_seq, again = feed.jpeg()  # a second watcher of the same picture: no new work
    assert (seq, feed.encoded) == (20, 1) and (again_seq, again) == (seq, first)
    decoded = cv2.imdecode(np.frombuffer(first, np.uint8), cv2.IMREAD_COLOR)
    assert decoded.shape == (48, 64, 3) and abs(int(decoded.mean()) - 19) <= 2
    feed.put(picture(99), 0.01)
    assert feed.jpeg()[0] == 21 and feed.encoded == 2


def test_wide_pictures_are_scaled_down_for_the_browser():
    data = encode_jpeg(picture(50, width=1920, height=1080), max_width_px=960)
    assert cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR).shape == (540, 960, 3)


# -- the HTTP side, without ROS ----------------------------------------------------------------


@pytest.fixture
def served():
    hub = ViewerHub(['/cam0', '/cam1'])
    server = ViewerServer(hub, port=0).start()
    yield hub, server
    server.close()


def test_page_status_live_stream_mjpeg_and_snapshot(served):
    hub, server = served
    assert server.url == f'http://127.0.0.1:{server.port}/'
    page = urllib.request.urlopen(server.url, timeout=5).read().decode()
    assert '<title>multicam_ros live view</title>' in page
    assert 'data-camera="cam0"' in page and 'data-camera="cam1"' in page
    assert 'http' not in page.replace(server.url, '')  # no outside resources

    stop = threading.Event()

    def publish() -> None:
        value = 0
        while not stop.wait(0.05):
            value = (value + 7) % 256
            hub.feed('/cam0').put(picture(value), 0.02)

    publisher = threading.Thread(target=publish, daemon=True)
    publisher.start()
    try:
        with urllib.request.urlopen(server.url + 'live', timeout=10) as response:
            assert hub.watched() == ['/cam0', '/cam1']  # the /live reader watches them all
            messages = list(read_live(response, limit=12))
        kinds = {header['kind'] for header, _ in messages}
        assert kinds == {'status', 'jpeg'}
        status = next(header for header, _ in messages if header['kind'] == 'status')
        assert [c['label'] for c in status['cameras']] == ['cam0', 'cam1']
        pictures = [body for header, body in messages if header['kind'] == 'jpeg']
        assert all(header['camera'] == 0 for header, _ in messages if header['kind'] == 'jpeg')
        assert len(set(pictures)) == len(pictures) >= 3  # every one a new picture
        assert wait_for(lambda: hub.watched() == [], 5.0)  # the reader left: nobody watches

        with urllib.request.urlopen(server.url + 'stream/0', timeout=10) as response:
            assert response.headers['Content-Type'] == \
                f'multipart/x-mixed-replace; boundary={BOUNDARY}'
            head = response.read(200)
        assert head.startswith(f'--{BOUNDARY}\r\nContent-Type: image/jpeg\r\n'.encode())

        snapshot = urllib.request.urlopen(server.url + 'snapshot/0', timeout=10)
        assert snapshot.headers['Content-Type'] == 'image/jpeg'
        assert cv2.imdecode(np.frombuffer(snapshot.read(), np.uint8), 1).shape == (48, 64, 3)
        report = json.loads(urllib.request.urlopen(server.url + 'api/status', timeout=5).read())
        assert [c['camera'] for c in report['cameras']] == ['/cam0', '/cam1']
    finally:
        stop.set()
        publisher.join()
    with pytest.raises(urllib.error.HTTPError, match='404'):
        urllib.request.urlopen(server.url + 'stream/7', timeout=5)


def test_a_down_camera_gets_a_no_signal_picture_on_its_mjpeg_stream(served):
    hub, server = served
    with urllib.request.urlopen(server.url + 'stream/1', timeout=10) as response:
        hub.feed('/cam1').note_camera_state('reconnecting')
        data = b''
        while data.count(b'--' + BOUNDARY.encode()) < 2:
            data += response.read1(65536)
    body = data.split(b'\r\n\r\n', 1)[1].split(f'\r\n--{BOUNDARY}'.encode())[0]
    image = cv2.imdecode(np.frombuffer(body, np.uint8), cv2.IMREAD_COLOR)
    red = image[:, :, 2].astype(int) - image[:, :, 1]
    assert (red > 120).mean() > 0.1, 'no red NO SIGNAL banner'


def test_binds_loopback_by_default_and_a_taken_port_is_an_error(served):
    _, server = served
    assert server.host == '127.0.0.1' and is_loopback(server.host)
    assert not is_loopback('0.0.0.0') and is_loopback('localhost') and is_loopback('::1')
    assert loopback_warning('127.0.0.1') == '' and 'no login' in loopback_warning('0.0.0.0')
    with pytest.raises(OSError):
        ViewerServer(ViewerHub(['/x']), port=server.port).start()


def test_cameras_come_from_a_cams_yaml_and_or_the_option(tmp_path):
    config = tmp_path / 'cams.yaml'
    config.write_text('cameras:\n  - {name: front, url: "rtsp://h/a"}\n'
                      '  - {name: back, url: "rtsp://h/b"}\n')
    assert view_cameras(str(config), []) == ['/front', '/back']
    assert view_cameras(str(config), ['/yard,back', 'robot/arm']) == \
        ['/front', '/back', '/yard', '/robot/arm']
    assert view_cameras(None, ['cam0']) == ['/cam0']
    with pytest.raises(ConfigError, match='cameras: none given'):
        view_cameras(None, [])
    with pytest.raises(ConfigError, match="'/9lives' is not a valid ROS namespace"):
        view_cameras(None, ['9lives'])


def test_view_without_cameras_or_on_a_taken_port_exits_with_a_clear_error():
    cli = [sys.executable, '-m', 'multicam_ros.cli', 'view']
    done = subprocess.run(cli, cwd=REPO, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and 'cameras: none given' in done.stderr
    with socket.socket() as sock:
        sock.bind(('127.0.0.1', 0))
        sock.listen()
        port = sock.getsockname()[1]
        done = subprocess.run(cli + ['--cameras', '/cam0', '--port', str(port)], cwd=REPO,
                              capture_output=True, text=True, timeout=60)
    assert done.returncode == 1, done.stderr
    assert f'cannot serve on 127.0.0.1:{port}' in done.stderr and '--port' in done.stderr


# -- the real system in a real browser ---------------------------------------------------------


def chromium(user_data_dir: Path, width: int = 1200, height: int = 1000):
    """Debian's headless Chromium through its chromedriver (Selenium; nothing downloaded)."""
    missing = [str(p) for p in (CHROMIUM, CHROMEDRIVER) if not p.exists()]
    if missing:
        pytest.fail(f'{", ".join(missing)} missing: make setup installs Debian\'s chromium and '
                    'chromium-driver', pytrace=False)
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        pytest.fail('selenium missing from the venv: run make setup', pytrace=False)
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in (*CHROMIUM_FLAGS, f'--user-data-dir={user_data_dir}',
                 f'--window-size={width},{height}'):
        options.add_argument(flag)
    return webdriver.Chrome(service=Service(executable_path=str(CHROMEDRIVER)), options=options)


def tile_states(driver) -> List[Dict[str, str]]:
    return driver.execute_script(
        "return Array.from(document.querySelectorAll('.tile')).map(t => ({"
        "camera: t.dataset.camera, state: t.dataset.state, frames: t.dataset.frames || '0',"
        "text: t.innerText}));")


def tile_picture(driver, index: int) -> np.ndarray:
    """What the browser shows in tile `index`'s picture, as pixels."""
    element = driver.find_elements('css selector', '.tile .picture')[index]
    return cv2.imdecode(np.frombuffer(element.screenshot_as_png, np.uint8), cv2.IMREAD_COLOR)


def moving(before: np.ndarray, after: np.ndarray) -> float:
    """Mean absolute difference of two screenshots of one tile (0..255)."""
    return float(cv2.absdiff(before, after).mean())


def tiles_move(driver, indices: List[int], timeout_s: float = 30.0) -> Dict[int, float]:
    """For each tile, how much a later screenshot differs from a first one: screenshots are
    taken until each tile has changed (a busy CPU serves some batches seconds apart)."""
    first = {index: tile_picture(driver, index) for index in indices}
    change = {index: 0.0 for index in indices}
    deadline_s = time.monotonic() + timeout_s
    while time.monotonic() < deadline_s and min(change.values()) <= MOVED:
        time.sleep(0.5)
        for index in indices:
            if change[index] <= MOVED:
                change[index] = moving(first[index], tile_picture(driver, index))
    return change


def quantised(image: np.ndarray, colours: int) -> np.ndarray:
    """`image` in a palette of `colours` k-means colours (PNG compresses those best)."""
    pixels = image.reshape(-1, 3).astype(np.float32)
    sample = pixels[np.random.default_rng(0).choice(len(pixels), 20000, replace=False)]
    criteria = (cv2.TERM_CRITERIA_EPS + cv2.TERM_CRITERIA_MAX_ITER, 20, 1.0)
    _, _, centres = cv2.kmeans(sample, colours, None, criteria, 1, cv2.KMEANS_PP_CENTERS)
    labels = np.empty(len(pixels), np.int64)
    squares = (centres ** 2).sum(1)
    for start in range(0, len(pixels), 65536):  # nearest centre, a slice at a time
        chunk = pixels[start:start + 65536]
        labels[start:start + 65536] = np.argmin(squares - 2.0 * chunk @ centres.T, axis=1)
    return np.clip(centres, 0, 255).astype(np.uint8)[labels].reshape(image.shape)


def small_png(screenshot: bytes, width: int = 840) -> bytes:
    """The page's screenshot made small enough for the README: smoothed a little (camera noise
    is what PNG compresses worst), then in as many colours as fit."""
    image = cv2.imdecode(np.frombuffer(screenshot, np.uint8), cv2.IMREAD_COLOR)
    height = round(image.shape[0] * width / image.shape[1])
    image = cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA)
    image = cv2.bilateralFilter(image, 5, 30, 5)
    for colours in (64, 56, 48, 40, 32, 16):
        ok, data = cv2.imencode('.png', quantised(image, colours),
                                [cv2.IMWRITE_PNG_COMPRESSION, 9])
        if len(data) < SCREENSHOT_MAX_BYTES:
            break
    return data.tobytes()


def write_config(path: Path, urls: List[str]) -> Path:
    cameras = ''.join(f'  - {{name: cam{i}, url: "{url}"}}\n' for i, url in enumerate(urls))
    path.write_text('camera_defaults:\n  fps: 4.0\n  reconnect_delay_max_s: 2.0\n'
                    'cameras:\n' + cameras + textwrap.dedent("""\
        detector:
          device: cpu
          tracking: {enabled: true}
        """))
    return path


@pytest.mark.timeout(300)
def test_every_tile_moves_in_chromium_and_a_stopped_camera_says_no_signal(
        rtsp_gstreamer_ready, node_launcher, ros_context, tmp_path):
    """Four cameras of real footage through RTSP, camera_node and the detector (NanoDet-g,
    CPU, tracking) into `multicam-ros view` and a real headless Chromium. The fourth camera's
    RTSP server is stopped half way: its tile must say NO SIGNAL while the others go on."""
    from rclpy.node import Node

    from multicam_testbed import footage_server
    from multicam_testbed.footage import DEMO_CUTS

    streams = footage_server(DEMO_CUTS[:3]).start()
    lonely = footage_server(DEMO_CUTS[3:]).start()  # the camera that will go away
    try:
        config = write_config(tmp_path / 'cams.yaml', streams.urls + lonely.urls)
        system = node_launcher.start(['multicam-ros', 'launch', str(config),
                                      '--status-period', '0'], name='launch')
        port = free_port()
        viewer = node_launcher.start(['multicam-ros', 'view', str(config), '--port', str(port)],
                                     name='view')
        url = f'http://127.0.0.1:{port}/'
        observer = Node('observer', context=ros_context)
        annotated = '/cam0/image_annotated'
        assert wait_for(lambda: f'open {url}' in viewer.output(), 60.0), viewer.output()
        # No browser, no work: the viewer does not even subscribe to the pictures.
        time.sleep(1.0)
        assert observer.count_subscribers(annotated) == 0

        driver = chromium(tmp_path / 'chromium-profile')
        try:
            driver.get(url)
            assert driver.title == 'multicam_ros live view'

            def all_live_and_counting() -> bool:
                states = tile_states(driver)
                return all(s['state'] == 'live' and int(s['frames']) >= 3 for s in states)
            assert wait_for(all_live_and_counting, 150.0, 0.5), \
                (tile_states(driver), system.output()[-3000:], viewer.output())
            assert observer.count_subscribers(annotated) == 1  # the browser watches: drawn
            states = tile_states(driver)
            assert [s['camera'] for s in states] == ['cam0', 'cam1', 'cam2', 'cam3']
            for state in states:
                assert ' fps' in state['text'] and ' ms' in state['text'], state
            # Every tile shows a moving picture: two screenshots of it differ.
            for index in range(4):
                assert tile_picture(driver, index).std() > 20, f'tile {index} looks flat'
            change = tiles_move(driver, [0, 1, 2, 3])
            assert min(change.values()) > MOVED, f'a tile does not move: {change}'

            lonely.stop()  # cam3's camera goes away
            assert wait_for(lambda: tile_states(driver)[3]['state'] == 'no signal', 30.0, 0.5), \
                tile_states(driver)
            assert 'NO SIGNAL' in driver.find_elements('css selector', '.tile')[3].text
            assert all(s['state'] == 'live' for s in tile_states(driver)[:3]), \
                tile_states(driver)
            change = tiles_move(driver, [0, 1, 2])
            assert min(change.values()) > MOVED, f'a live tile stopped moving: {change}'
            png = small_png(driver.get_screenshot_as_png())
            assert len(png) < SCREENSHOT_MAX_BYTES
            (tmp_path / 'viewer.png').write_bytes(png)
            if os.environ.get(SCREENSHOT_ENV):
                Path(os.environ[SCREENSHOT_ENV]).write_bytes(png)
        finally:
            driver.quit()
        # The browser left: the viewer lets go of the pictures again.
        assert wait_for(lambda: observer.count_subscribers(annotated) == 0, 10.0), \
            'the viewer still subscribes without a browser'
        observer.destroy_node()
        assert viewer.stop(signal.SIGINT, timeout_s=10.0) == 0, viewer.output()
        assert system.stop(signal.SIGINT, timeout_s=30.0) == 0, system.output()[-3000:]
    finally:
        streams.stop()
        lonely.stop()
