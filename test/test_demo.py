"""`make demo` runs the whole system on live test streams and stops cleanly on Ctrl-C."""
import signal
import socket

import pytest

from ros_helpers import wait_for

pytestmark = pytest.mark.timeout(180)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(('127.0.0.1', 0))
        return sock.getsockname()[1]


def test_demo_runs_every_part_and_stops_on_sigint(node_launcher):
    proc = node_launcher.start(['multicam-ros', 'demo', '--port', str(free_port()),
                                '--weights', 'none'], name='demo')
    # The status table shows the detector running batches from all four cameras.
    assert wait_for(lambda: 'detector  running' in proc.output(), 150.0, 1.0), proc.output()
    output = proc.output()
    assert 'RANDOM weights' in output
    for camera in ('cam0', 'cam1', 'cam2', 'cam3'):
        assert f'{camera}    streaming' in output, output
    assert proc.stop(signal.SIGINT, timeout_s=30.0) == 0, proc.output()
    assert '[launch] every node stopped' in proc.output()
