"""Hostile and broken configuration files given to `multicam-ros launch`, run for real.

Each case starts `python -m multicam_ros.cli launch FILE` as a user would, in a process group of
its own with TMPDIR pointed at a folder of the test and a marker variable in its environment,
and asserts: exit code 2 within a generous bound, a short message on stderr that names the file
and the limit or key, no traceback, and nothing left behind (no process that carries the marker,
nothing in its temporary folder). The alias bomb is also held to a small peak memory: it once
took 41 s, 2.1 GB and printed a 522 MB message.
"""
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Dict, List, Tuple

import pytest

from multicam_ros.system.config import MAX_DEPTH, MAX_NODES
from multicam_testbed import processes
from ros_helpers import REPO, isolated_env, next_domain_id

pytestmark = pytest.mark.timeout(240)

MARK_VAR = 'MULTICAM_CONFIG_INPUTS_RUN'
RUN_LIMIT_S = 60.0  # a refused file takes about 2 s here, most of it Python starting
MAX_STDERR_CHARS = 2000
CAMERA = "cameras: [{name: cam0, url: 'rtsp://127.0.0.1:9/none'}]\n"
PROFILE = "transport: {fastdds_profile: profile.xml}\n"


def laughs(levels: int = 9, width: int = 9) -> str:
    """YAML's "billion laughs": 387 million strings in under 500 bytes."""
    lines = ['a0: &a0 [' + ', '.join(['lol'] * width) + ']']
    lines += [f'a{i}: &a{i} [' + ', '.join([f'*a{i - 1}'] * width) + ']'
              for i in range(1, levels)]
    return '\n'.join(lines) + f'\ncameras: *a{levels - 1}\n'


# case: (cams.yaml bytes, profile.xml text or None, what stderr must say)
CASES: Dict[str, Tuple[bytes, object, str]] = {
    'alias bomb': (laughs().encode(), None, f'cams.yaml: more than {MAX_NODES} nodes'),
    'deep nesting': (('cameras: ' + '[' * 2000 + ']' * 2000 + '\n').encode(), None,
                     f'cams.yaml: nested deeper than {MAX_DEPTH} levels'),
    'not UTF-8': (CAMERA.encode() + b'# caf\xe9\n', None,
                  f'cams.yaml: not UTF-8: byte 0xe9 at offset {len(CAMERA) + 5} (line 2)'),
    'profile not XML': ((CAMERA + PROFILE).encode(), 'not XML at all\n',
                        'cams.yaml: transport: fastdds_profile: '),
    'profile with entities': ((CAMERA + PROFILE).encode(),
                              '<?xml version="1.0"?><!DOCTYPE dds [<!ENTITY a "aaaa">'
                              '<!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;">]><dds>&b;</dds>\n',
                              'cams.yaml: transport: fastdds_profile: '),
    'profile without participant': ((CAMERA + PROFILE).encode(),
                                    '<dds xmlns="http://www.eprosima.com"><profiles/></dds>\n',
                                    'cams.yaml: transport: fastdds_profile: '),
}
PROFILE_PROBLEMS = {
    'profile not XML': 'not well-formed XML',
    'profile with entities': 'has a DOCTYPE',
    'profile without participant': 'no <participant profile_name="..."> in <profiles>',
}


def marked_pids(mark: str) -> List[int]:
    """Live processes whose environment carries MARK_VAR=mark, however re-parented."""
    return processes.marked_pids(MARK_VAR, mark)


def run_launch(config: Path, tmp_dir: Path, out_dir: Path) -> Tuple[int, str, str, int, float]:
    """Run `multicam-ros launch CONFIG`; (exit code, stdout, stderr, peak RSS in KiB, seconds).
    Output goes to files, so a huge message cannot block the child on a full pipe."""
    mark = uuid.uuid4().hex[:12]
    env = isolated_env(next_domain_id(), {MARK_VAR: mark, 'TMPDIR': str(tmp_dir)})
    stdout_path, stderr_path = out_dir / 'stdout', out_dir / 'stderr'
    started = time.monotonic()
    with open(stdout_path, 'wb') as stdout, open(stderr_path, 'wb') as stderr:
        proc = subprocess.Popen([sys.executable, '-m', 'multicam_ros.cli', 'launch',
                                 str(config), '--status-period', '0'], env=env, cwd=str(REPO),
                                stdout=stdout, stderr=stderr, start_new_session=True)
    try:
        while True:  # os.wait4: the child's own peak RSS, which Popen.wait does not give
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            if time.monotonic() - started > RUN_LIMIT_S:
                os.killpg(proc.pid, signal.SIGKILL)
                os.wait4(proc.pid, 0)
                pytest.fail(f'multicam-ros launch {config.name} still ran after '
                            f'{RUN_LIMIT_S:.0f} s', pytrace=False)
            time.sleep(0.05)
        proc.returncode = os.waitstatus_to_exitcode(status)
        elapsed_s = time.monotonic() - started
        # Nothing of the run may survive it: no node it started, nothing in its TMPDIR.
        time.sleep(0.2)
        left = marked_pids(mark)
        assert left == [], f'processes left behind: {left}'
    finally:
        for pid in marked_pids(mark):  # safety net for a broken run: it started nodes
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
    return (proc.returncode, stdout_path.read_text(errors='replace'),
            stderr_path.read_text(errors='replace'), usage.ru_maxrss, elapsed_s)


@pytest.fixture(scope='module')
def baseline_rss_kib(tmp_path_factory) -> int:
    """The peak RSS of `multicam-ros launch` refusing a small invalid file: what starting
    Python and importing the package costs, against which the hostile cases are measured."""
    folder = tmp_path_factory.mktemp('baseline')
    (folder / 'tmp').mkdir()
    config = folder / 'cams.yaml'
    config.write_text('cameras: []\n')
    code, _, stderr, rss_kib, _ = run_launch(config, folder / 'tmp', folder)
    assert code == 2, stderr
    return rss_kib


@pytest.mark.parametrize('case', sorted(CASES))
def test_hostile_config_is_refused_with_exit_2_and_a_short_named_error(
        tmp_path, baseline_rss_kib, case):
    content, profile, expected = CASES[case]
    config = tmp_path / 'cams.yaml'
    config.write_bytes(content)
    if profile is not None:
        (tmp_path / 'profile.xml').write_text(profile)
    tmp_dir = tmp_path / 'tmp'
    tmp_dir.mkdir()
    code, stdout, stderr, rss_kib, elapsed_s = run_launch(config, tmp_dir, tmp_path)
    output = stdout + stderr
    assert code == 2, output[:MAX_STDERR_CHARS]
    assert 'Traceback' not in output, output[:MAX_STDERR_CHARS]
    assert len(stderr) < MAX_STDERR_CHARS, (len(stderr), stderr[:MAX_STDERR_CHARS])
    assert stderr.startswith(f'multicam-ros launch: {config} is not valid, nothing started:\n'
                             f'{tmp_path}/{expected}'), stderr
    if case in PROFILE_PROBLEMS:
        assert f'fastdds_profile: {tmp_path}/profile.xml: {PROFILE_PROBLEMS[case]}' in stderr, \
            stderr
    assert stderr.count('\n') == 2, stderr  # the heading and one problem
    assert os.listdir(tmp_dir) == [], 'the run left files in its TMPDIR'
    # Refused before anything grows: the same memory as refusing `cameras: []`, give or take.
    assert rss_kib < baseline_rss_kib + 50 * 1024, (rss_kib, baseline_rss_kib, elapsed_s)
