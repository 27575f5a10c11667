"""Fault suite, no orphans: a node ends when the launcher that started it dies, however it dies
(SIGKILL included), cleanly, and leaves no shared-memory segment (issue 12; core/process.py
exit_with_parent, called by ros/node_main.py run_node for every node).

The launcher here is a throwaway parent process that puts its own pid in PARENT_PID_ENV (as
`multicam-ros launch` and cams.launch.py do), starts camera_node and is then SIGKILLed. This
test process makes itself the child subreaper meanwhile, so that the orphaned node is
re-parented to it and its exit status can be read.
"""
import ctypes
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from multicam_ros.core.process import PARENT_PID_ENV
from multicam_ros.core.shm_frames import SHM_DIR, channel_for_topic, segment_name
from multicam_testbed import make_test_clip
from ros_helpers import VENV_BIN, isolated_env, wait_for

pytestmark = pytest.mark.timeout(180)

CAMERA = '/cam0'
CAMERA_UP = f'-> {CAMERA}/image_raw'
EXIT_BOUND_S = 5.0  # the node ends this soon after its launcher was killed
PR_SET_CHILD_SUBREAPER = 36
PR_GET_PDEATHSIG = 2

# The throwaway launcher: its pid in PARENT_PID_ENV, the node's output to a log, the node's pid
# on stdout, then it waits to be killed.
PARENT = f'''
import os, subprocess, sys, time
env = dict(os.environ, {PARENT_PID_ENV}=str(os.getpid()))
with open(sys.argv[1], 'wb') as log:
    child = subprocess.Popen(sys.argv[2:], env=env, stdout=log, stderr=subprocess.STDOUT)
print(child.pid, flush=True)
time.sleep(3600)
'''


def prctl(option: int, value: int) -> int:
    libc = ctypes.CDLL(None, use_errno=True)
    return libc.prctl(option, ctypes.c_ulong(value), ctypes.c_ulong(0), ctypes.c_ulong(0),
                      ctypes.c_ulong(0))


def wait_exit_status(pid: int, timeout_s: float):
    """The exit status of our child `pid` once it ends (None if it did not in time)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done == pid:
            return status
        time.sleep(0.05)
    return None


@pytest.fixture
def subreaper():
    """Orphans of this test's descendants become this process's children for the test."""
    if not sys.platform.startswith('linux') or prctl(PR_SET_CHILD_SUBREAPER, 1) != 0:
        pytest.skip('needs Linux PR_SET_CHILD_SUBREAPER')
    try:
        yield
    finally:
        prctl(PR_SET_CHILD_SUBREAPER, 0)


def test_camera_node_ends_cleanly_when_its_launcher_is_sigkilled(
        ros_domain_id, tmp_path, subreaper):
    clip = make_test_clip(tmp_path / 'clip.mp4', seconds=2.0, width=320, height=240, fps=30)
    log = tmp_path / 'camera_node.log'
    segment = Path(SHM_DIR) / segment_name(channel_for_topic(f'{CAMERA}/image_raw',
                                                             ros_domain_id))
    parent = subprocess.Popen(
        [sys.executable, '-c', PARENT, str(log), str(VENV_BIN / 'camera_node'), '--ros-args',
         '-r', f'__ns:={CAMERA}', '-p', f'url:={clip}'],
        env=isolated_env(ros_domain_id), stdout=subprocess.PIPE, text=True)
    node_pid = int(parent.stdout.readline())
    try:
        # Up and writing frames into its shared-memory segment.
        assert wait_for(lambda: CAMERA_UP in log.read_text(errors='replace')
                        and segment.exists(), 60.0), log.read_text(errors='replace')
        os.kill(parent.pid, signal.SIGKILL)
        parent.wait(timeout=10.0)
        killed_s = time.monotonic()
        status = wait_exit_status(node_pid, EXIT_BOUND_S)
        output = log.read_text(errors='replace')
        assert status is not None, f'the node outlived its launcher by {EXIT_BOUND_S} s:\n{output}'
        took_s = time.monotonic() - killed_s
        assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0, \
            f'status {status} ({took_s:.1f} s after the kill):\n{output}'
        assert 'Traceback' not in output, output
        assert not segment.exists(), f'{segment} left behind'
    finally:
        for pid in (node_pid, parent.pid):
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        parent.wait(timeout=5.0)
        try:
            wait_exit_status(node_pid, 2.0)  # collect it if it is still ours to collect
        except ChildProcessError:
            pass


def test_node_whose_launcher_is_already_gone_does_not_start(ros_domain_id):
    """The launcher died before the node asked for the parent-death signal: no signal will
    come, so the node stops at once, cleanly."""
    gone = subprocess.Popen([sys.executable, '-c', 'pass'])
    gone.wait(timeout=10.0)
    done = subprocess.run(
        [str(VENV_BIN / 'camera_node'), '--ros-args', '-p', 'url:=rtsp://127.0.0.1:9/x'],
        env=isolated_env(ros_domain_id, {PARENT_PID_ENV: str(gone.pid)}),
        capture_output=True, text=True, timeout=60.0)
    assert done.returncode == 0, done.stderr
    assert f'the launcher that started it (pid {gone.pid}) is gone: not starting' \
        in done.stderr
    assert 'Traceback' not in done.stderr + done.stdout


PROBE = '''
import ctypes, sys
from multicam_ros.core.process import exit_with_parent
alive = exit_with_parent()
value = ctypes.c_int(0)
ctypes.CDLL(None).prctl(2, ctypes.byref(value), 0, 0, 0)  # PR_GET_PDEATHSIG
print(alive, value.value)
'''


@pytest.mark.parametrize('variable, expected', [
    (None, 'True 0'),  # not started by a launcher: nothing asked
    ('', 'True 0'),
    ('not-a-pid', 'True 0'),
    ('1', 'True 0'),  # init is never a launcher
    ('PARENT', f'True {int(signal.SIGTERM)}'),  # this test process: tied to it
], ids=['unset', 'empty', 'garbage', 'init', 'parent'])
def test_exit_with_parent_asks_for_sigterm_only_for_its_launcher(variable, expected):
    env = dict(os.environ)
    env.pop(PARENT_PID_ENV, None)
    if variable is not None:
        env[PARENT_PID_ENV] = str(os.getpid()) if variable == 'PARENT' else variable
    done = subprocess.run([sys.executable, '-c', PROBE], env=env, capture_output=True,
                          text=True, timeout=60.0, cwd=str(Path(__file__).resolve().parents[2]))
    assert done.stdout.split() == expected.split(), done.stderr
