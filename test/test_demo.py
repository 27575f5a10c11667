"""`make demo` as a newcomer starts it: real footage, the default model, tracking, the live
view; Ctrl-C stops everything. And the default model's fetch command and its error."""
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Set

import pytest

from multicam_ros.core.cache import CACHE_VARIABLE, FETCH_COMMAND
from multicam_ros.system import model_store
from ros_helpers import REPO, wait_for

MAKE = '/usr/bin/make'


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(('127.0.0.1', 0))
        return sock.getsockname()[1]


def descendants(pid: int) -> Set[int]:
    """Every process below `pid` (new sessions included: they keep their parent)."""
    children: dict = {}
    for entry in Path('/proc').iterdir():
        if entry.name.isdigit():
            try:
                parent = int((entry / 'stat').read_text().rsplit(')', 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(parent, set()).add(int(entry.name))
    found, todo = set(), [pid]
    while todo:
        for child in children.get(todo.pop(), ()):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f'/proc/{pid}/stat').read_text().rsplit(')', 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != 'Z'


@pytest.mark.timeout(300)
def test_make_demo_detects_shows_the_view_and_stops_cleanly_on_ctrl_c(node_launcher, tmp_path):
    """`make demo` in a terminal of its own; Ctrl-C reaches its whole foreground process group,
    as a terminal sends it. The demo must exit 0: make prints `*** [demo] Error N` (or
    Interrupt) when its recipe does not, and otherwise, as for any target interrupted by Ctrl-C,
    ends itself with the same signal."""
    rtsp_port, view_port = free_port(), free_port()
    demo = node_launcher.start([MAKE, '--no-print-directory', 'demo',
                                f'DEMO_ARGS=--port {rtsp_port} --view-port {view_port}'],
                               name='make-demo')
    url = f'http://127.0.0.1:{view_port}/'
    first = '[demo] detections are coming in from every camera'
    assert wait_for(lambda: first in demo.output() or not demo.running, 200.0, 1.0), \
        demo.output()[-5000:]
    output = demo.output()
    assert first in output, output[-5000:]
    assert 'make demo: running make setup first' not in output  # set up already
    assert f'[demo] live view: open {url} in a browser' in output
    assert re.search(r'model\.backend=nanodet', output) and 'tracking.enabled=True' in output
    assert 'nanodet-g' in output  # the detector loaded the default model
    assert wait_for(lambda: re.search(r'^  detector +running ', demo.output(), re.MULTILINE),
                    30.0, 1.0), demo.output()[-3000:]
    for camera in ('cam0', 'cam1', 'cam2', 'cam3'):
        assert re.search(rf'^  {camera} +streaming ', demo.output(), re.MULTILINE), camera
    # The live view answers: the page, and a picture of a camera with its detections drawn.
    page = urllib.request.urlopen(url, timeout=10).read().decode()
    assert all(f'data-camera="cam{i}"' in page for i in range(4))
    snapshot = urllib.request.urlopen(url + 'snapshot/1', timeout=30)
    assert snapshot.headers['Content-Type'] == 'image/jpeg' and len(snapshot.read()) > 10_000

    processes = descendants(demo.proc.pid)
    assert len(processes) >= 6, processes  # the demo, the RTSP server, 4 cameras, a detector
    os.killpg(demo.proc.pid, signal.SIGINT)  # Ctrl-C
    code = demo.proc.wait(timeout=60)
    output = demo.output()
    assert code in (0, -signal.SIGINT), (code, output[-3000:])
    assert 'make: ***' not in output, output[-3000:]
    assert '[launch] every node stopped' in output
    assert output.rstrip().endswith('[demo] stopped'), output[-2000:]
    assert 'Traceback' not in output, output
    assert wait_for(lambda: not any(alive(pid) for pid in processes), 10.0), \
        [pid for pid in processes if alive(pid)]


def test_models_command_is_wired():
    cli = [sys.executable, '-m', 'multicam_ros.cli', 'models']
    done = subprocess.run(cli + ['--help'], cwd=REPO, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0 and 'fetch' in done.stdout and 'footage' in done.stdout
    done = subprocess.run(cli + ['path'], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert f'model:   {model_store.model_path()}' in done.stdout
    assert f'footage: {model_store.footage_path()}' in done.stdout
    top = subprocess.run([sys.executable, '-m', 'multicam_ros.cli', '--help'], cwd=REPO,
                         capture_output=True, text=True, timeout=60)
    assert 'models' in top.stdout and 'view' in top.stdout


def test_without_the_model_or_the_footage_the_error_names_the_fetch_command(
        node_launcher, tmp_path):
    empty = {CACHE_VARIABLE: str(tmp_path / 'empty-cache')}
    # The detector with its defaults: NanoDet-g, which is not in this cache.
    detector = node_launcher.start(['detector_node', '--ros-args', '-p', 'cameras:=[/cam0]',
                                    '-p', 'device:=cpu'], env=empty)
    assert detector.wait(timeout_s=120.0) == 2, detector.output()
    assert FETCH_COMMAND in detector.output() and 'model.path' in detector.output()
    assert 'Traceback' not in detector.output()
    # The demo, before it starts anything.
    started_s = time.monotonic()
    demo = node_launcher.start(['multicam-ros', 'demo', '--port', str(free_port()),
                                '--no-view'], name='demo', env=empty)
    assert demo.wait(timeout_s=60.0) == 1, demo.output()
    assert model_store.FOOTAGE_COMMAND in demo.output(), demo.output()
    assert time.monotonic() - started_s < 60.0
