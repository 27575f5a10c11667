"""Fault suite, supervision: what `multicam-ros launch` does when its own processes die, when it
dies itself, and when it is started twice (system/supervision.py, system/supervisor.py). Real
processes, real DDS, a real RTSP server, faults injected from outside with signals.

The first tests share one system, in file order (starting one costs 20-30 s on a 2-core
machine): cameras cam0 and cam1 on the RTSP server (cam0's password written in its url, cam1's
in a variable of the launcher's environment), cam2 with a calibration file that its node
refuses (a configuration error that the launcher's own checks cannot see), and one detector
with the scripted TorchScript model on the CPU. Each test waits until the cameras flow before it
injects its fault; the last one stops the system and asserts that nothing is left (processes,
the run's temporary folder, its /dev/shm segments). The other tests start systems of their own:
the launcher started twice and then SIGKILLed, and a detector that keeps dying at start.

Bounds are generous for a busy 2-core CI machine: they bound recovery, not speed.
"""
import os
import re
import signal
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterator, List

import pytest
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import Image

from conftest import LaunchedSystem, Probe, alive, marked_pids, run_segments  # noqa: E402
from multicam_ros.system.supervision import DETECTOR_FAST_FAILURES_MAX, PARENT_PID_ENV, \
    RESTART_DELAY_MAX_S, RESTART_DELAY_MIN_S, STABLE_RUN_S
from multicam_ros.system.supervisor import EXIT_RUNNING, LOCK_NAME, WORKDIR_PREFIX
from multicam_testbed import RtspServerError, RtspTestServer
from model_fixtures import scripted_detector_yaml
from ros_helpers import LOCALHOST_DISCOVERY, ExecutorThread, TopicRecorder, make_context, \
    next_domain_id, stamp_ns, wait_for

pytestmark = pytest.mark.timeout(300)

START_BOUND_S = 120.0  # first detections of every camera after `multicam-ros launch`
BACK_BOUND_S = 60.0  # a killed node restarted and its detections back
GAP_BOUND_S = 6.0  # a camera that a fault does not touch: never this long without an image
ORPHAN_BOUND_S = 15.0  # every node gone after its launcher was SIGKILLed
REFUSE_BOUND_S = 60.0  # a second launch of the same nodes refused and exited
STOP_BOUND_S = 40.0  # Ctrl-C: every process gone (the launcher's own grace period is 10 s)
DEEP = QoSProfile(depth=50, reliability=ReliabilityPolicy.RELIABLE)
CAMERAS = ('/cam0', '/cam1')  # the ones that work
BROKEN = '/cam2'  # its node exits with a configuration error
INLINE_SECRET = 'inline-pa55'
CAM1_SECRET = 'env-pa55'
CAM1_VAR = 'MULTICAM_FAULTS_CAM1_PASSWORD'
LAUNCHER_ID = re.compile(r'^\[launch\] started (\S+) \(pid (\d+)', re.MULTILINE)


RECONNECT_FAST = 'camera_defaults:\n  reconnect_delay_max_s: 2.0\n'  # cameras back soon


def write_config(path: Path, urls: Dict[str, str], model_path: Path, extra: str = '') -> Path:
    """cams.yaml: one camera per (name, url), then `extra` camera entries verbatim, and a CPU
    detector with the scripted one-box model."""
    cameras = ''.join(f'  - {{name: {name}, url: "{url}"}}\n' for name, url in urls.items())
    path.write_text('cameras:\n' + cameras + extra + RECONNECT_FAST
                    + scripted_detector_yaml(model_path))
    return path


def environ_of(pid: int) -> Dict[str, str]:
    """The environment of a live process, as the kernel holds it."""
    raw = Path(f'/proc/{pid}/environ').read_bytes()
    return dict(item.decode(errors='replace').split('=', 1)
                for item in raw.split(b'\0') if b'=' in item)


def workdirs(tmp_dir: Path) -> List[Path]:
    return sorted(p for p in tmp_dir.iterdir() if p.name.startswith(WORKDIR_PREFIX))


def leftovers(system: LaunchedSystem) -> Dict[str, list]:
    """What a run left: live processes, files in its TMPDIR, /dev/shm segments of its domain."""
    pids = set(marked_pids(system.mark)) | {p for p in system.all_started_pids() if alive(p)}
    if system.process.running:
        pids.add(system.process.proc.pid)
    # torch keeps its compile cache in TMPDIR/torchinductor_<user> on purpose, for every run.
    tmp = [name for name in os.listdir(system.tmp_dir) if not name.startswith('torchinductor_')]
    return {'processes': sorted(pids), 'tmp': sorted(tmp),
            'segments': run_segments(system.domain_id)}


NOTHING = {'processes': [], 'tmp': [], 'segments': []}


def table_lines(output: str, label: str) -> List[List[str]]:
    """Every status-table row of `label` printed so far, split into cells (status.py)."""
    return [re.split(r'\s{2,}', line.strip()) for line in output.splitlines()
            if line.startswith(f'  {label} ')]


def max_gap_s(recorder: TopicRecorder, start_ns: int, end_ns: int) -> float:
    """The longest time without a message on `recorder` within [start_ns, end_ns] (receive
    times, ROS clock)."""
    times = [start_ns] + [t for t, _ in recorder.items if start_ns < t < end_ns] + [end_ns]
    return max(b - a for a, b in zip(times, times[1:])) / 1e9


def strictly_increasing(stamps: List[int]) -> List[tuple]:
    """Where `stamps` fail to increase (a frame twice, or one out of order)."""
    return [(i, a, b) for i, (a, b) in enumerate(zip(stamps, stamps[1:])) if b <= a]


# -- one shared system -------------------------------------------------------------------------


@dataclass
class Bed:
    system: LaunchedSystem
    probe: Probe
    images: Dict[str, TopicRecorder]

    def why(self, *extra: object) -> str:
        tail = '\n'.join(self.system.output().splitlines()[-150:])
        return '\n'.join([*map(str, extra), 'probe: ' + self.probe.summary(),
                          '--- last lines of multicam-ros launch ---', tail])

    def wait(self, predicate, timeout_s: float, interval_s: float = 0.2) -> bool:
        """wait_for, failing at once (with the launcher's output) if the launcher exited."""
        running = self.system.process
        done = wait_for(lambda: not running.running or predicate(), timeout_s, interval_s)
        assert running.running, self.why('multicam-ros launch exited')
        return done

    def detections_after(self, camera: str, since_ns: int) -> int:
        return self.probe.count_after(camera, since_ns)

    def images_after(self, camera: str, since_ns: int) -> int:
        return sum(received > since_ns for received, _ in self.images[camera].items)

    def wait_flowing(self, timeout_s: float = BACK_BOUND_S, frames: int = 5) -> None:
        since_ns = time.time_ns()
        assert self.wait(lambda: all(self.detections_after(cam, since_ns) >= frames
                                     for cam in CAMERAS), timeout_s), \
            self.why(f'not every camera delivered {frames} fresh detections in {timeout_s} s')


@pytest.fixture(scope='module')
def bed(rtsp_gstreamer_ready, center_box_model) -> Iterator[Bed]:
    domain_id = next_domain_id()
    with pytest.MonkeyPatch.context() as patch, \
            tempfile.TemporaryDirectory(prefix='multicam-supervision-') as folder:
        patch.setenv('ROS_DOMAIN_ID', str(domain_id))
        for name, value in LOCALHOST_DISCOVERY.items():
            patch.setenv(name, value)
        run_dir = Path(folder)
        server = RtspTestServer(count=2, width=320, height=240, fps=15)
        try:
            server.start()
        except RtspServerError as exc:
            pytest.fail(str(exc), pytrace=False)
        context = make_context(domain_id)
        probe = Probe(context, [*CAMERAS, BROKEN])
        images = {cam: TopicRecorder(probe.node, Image, f'{cam}/image_raw', DEEP)
                  for cam in CAMERAS}
        calibration = run_dir / 'not_a_calibration.yaml'
        calibration.write_text('hello: 1\n')  # valid YAML, which only the node reads
        cam0 = server.url(0).replace('rtsp://', f'rtsp://admin:{INLINE_SECRET}@')
        cam1 = server.url(1).replace('rtsp://', 'rtsp://viewer@')
        config = write_config(run_dir / 'cams.yaml', {'cam0': cam0}, center_box_model, extra=(
            f'  - {{name: cam1, url: "{cam1}", password_env: {CAM1_VAR}}}\n'
            f'  - {{name: cam2, url: "{server.url(1)}", camera_info_url: "{calibration}"}}\n'))
        system = None
        try:
            with ExecutorThread(context, [probe.node]):
                system = LaunchedSystem(config, domain_id, run_dir, status_period_s=2.0,
                                        extra_env={CAM1_VAR: CAM1_SECRET})
                yield Bed(system, probe, images)
                system.stop()
        finally:
            if system is not None:
                system.stop()
                system.kill_leftovers()
            server.stop()
            probe.node.destroy_node()
            context.try_shutdown()


def test_each_password_reaches_only_its_camera_and_every_node_knows_its_launcher(bed):
    bed.wait_flowing(START_BOUND_S)
    system = bed.system
    pids = {name: system.current_pid(name) for name in
            ('/cam0/camera_node', '/cam1/camera_node', '/detector')}
    environs = {name: environ_of(pid) for name, pid in pids.items()}
    launcher = str(system.process.proc.pid)
    assert {name: env.get(PARENT_PID_ENV) for name, env in environs.items()} == \
        dict.fromkeys(pids, launcher)
    # cam0's password was moved out of its url into a variable of cam0 alone; cam1's variable
    # is in the launcher's environment, and reaches cam1 alone.
    secrets = {name: {key for key, value in env.items() if value in (INLINE_SECRET, CAM1_SECRET)}
               for name, env in environs.items()}
    assert secrets == {'/cam0/camera_node': {'MULTICAM_ROS_PASSWORD_CAM0'},
                       '/cam1/camera_node': {CAM1_VAR}, '/detector': set()}
    assert INLINE_SECRET not in system.output() and CAM1_SECRET not in system.output()


def test_camera_with_a_configuration_error_is_marked_failed_and_the_others_go_on(bed):
    system = bed.system
    assert bed.wait(lambda: 'error: /cam2/camera_node' in system.output(), START_BOUND_S), \
        bed.why('cam2 was not marked failed')
    output = system.output()
    assert re.search(r'^\[launch\] error: /cam2/camera_node \(pid \d+\) failed, not restarted: '
                     r'configuration error \(exit code 2 after [\d.]+ s\); its last output:$',
                     output, re.MULTILINE), bed.why()
    assert re.search(r"^\[launch\]   .*camera_info_url.*not_a_calibration\.yaml lacks the key "
                     r"'image_width'", output, re.MULTILINE), bed.why()
    # The table says it too, with the message; it stays failed, the others stream on.
    assert bed.wait(lambda: any(row[1] == 'failed' for row in
                                table_lines(system.output(), 'cam2')), 30.0), bed.why()
    assert re.search(r"^  cam2: failed, not restarted \(configuration error \(exit code 2 "
                     r"after [\d.]+ s\)\): .*camera_info_url.*lacks the key 'image_width'",
                     system.output(), re.MULTILINE), bed.why()
    bed.wait_flowing()
    assert len(system.started()['/cam2/camera_node']) == 1


def test_killed_camera_comes_back_and_the_others_never_stop(bed):
    bed.wait_flowing()
    system = bed.system
    others = {name: system.current_pid(name) for name in ('/cam1/camera_node', '/detector')}
    killed = system.current_pid('/cam0/camera_node')
    kill_ns = time.time_ns()
    os.kill(killed, signal.SIGKILL)
    assert bed.wait(lambda: len(system.started()['/cam0/camera_node']) == 2, 30.0), bed.why()
    assert f'/cam0/camera_node (pid {killed}) killed by SIGKILL; restarting in ' \
        f'{RESTART_DELAY_MIN_S:.1f} s' in system.output()
    assert bed.wait(lambda: bed.detections_after('/cam0', kill_ns) >= 5
                    and bed.images_after('/cam0', kill_ns) >= 5, BACK_BOUND_S), \
        bed.why('cam0 did not come back')
    back_ns = time.time_ns()
    assert {name: system.current_pid(name) for name in others} == others
    gap_s = max_gap_s(bed.images['/cam1'], kill_ns, back_ns)
    assert gap_s < GAP_BOUND_S, bed.why(f'cam1 went {gap_s:.1f} s without an image')
    gap_s = bed.probe.max_gap_s('/cam1', time.monotonic() - (back_ns - kill_ns) / 1e9,
                                time.monotonic())
    assert gap_s < GAP_BOUND_S, bed.why(f'cam1 went {gap_s:.1f} s without a detection')


def test_killed_detector_is_restarted_while_the_cameras_publish(bed):
    bed.wait_flowing()
    system = bed.system
    names = ('/cam0/camera_node', '/cam1/camera_node')
    cameras = {name: system.current_pid(name) for name in names}
    killed = system.current_pid('/detector')
    kill_ns = time.time_ns()
    os.kill(killed, signal.SIGKILL)
    assert bed.wait(lambda: len(system.started()['/detector']) == 2, 30.0), bed.why()
    restarted_ns = time.time_ns()
    output = system.output()
    assert f'/detector (pid {killed}) killed by SIGKILL; restarting in ' \
        f'{RESTART_DELAY_MIN_S:.1f} s' in output
    # The table, printed at the exit, shows it restarting: the delay left and why.
    assert any(row[:2] == ['detector', 'restarting'] for row in table_lines(output, 'detector'))
    assert re.search(r'^  detector: restarting in 1\.0 s, last exit: killed by SIGKILL after '
                     r'[\d.]+ s$', output, re.MULTILINE), bed.why()
    # Detections come back from the new detector, on both cameras.
    assert bed.wait(lambda: all(bed.detections_after(cam, restarted_ns) >= 5
                                for cam in CAMERAS), BACK_BOUND_S), \
        bed.why('the detections did not come back')
    back_ns = time.time_ns()
    # The cameras were never restarted and never stopped publishing image_raw meanwhile.
    assert {name: system.current_pid(name) for name in cameras} == cameras
    for cam in CAMERAS:
        assert bed.images_after(cam, kill_ns) > 0
        gap_s = max_gap_s(bed.images[cam], kill_ns, back_ns)
        assert gap_s < GAP_BOUND_S, bed.why(f'{cam} went {gap_s:.1f} s without an image')
    assert bed.wait(lambda: any(row[:2] == ['detector', 'running'] and row[-1] == '1'
                                for row in table_lines(system.output(), 'detector')), 30.0), \
        bed.why()


def test_sigint_stops_everything_and_leaves_nothing(bed):
    system = bed.system
    bed.wait_flowing(START_BOUND_S)
    assert bed.wait(lambda: 'error: /cam2/camera_node' in system.output(), START_BOUND_S)
    for cam in CAMERAS:  # over the whole run, restarts included: never a frame twice
        for what, stamps in (('image_raw', [stamp_ns(m.header) for m in bed.images[cam].messages]),
                             ('detections', bed.probe.stamps(cam))):
            bad = strictly_increasing(stamps)
            assert not bad, bed.why(f'{cam} {what}: stamps not increasing at {bad[:5]}')
    assert len(system.started()['/cam2/camera_node']) == 1  # never restarted
    (folder,) = workdirs(system.tmp_dir)  # the run's own, with its lock
    assert (folder / LOCK_NAME).is_file()
    assert system.stop(signal.SIGINT, timeout_s=STOP_BOUND_S) == 0, bed.why()
    assert 'did not stop' not in system.output(), bed.why()
    assert wait_for(lambda: leftovers(system) == NOTHING, 10.0), leftovers(system)


# -- systems of their own ------------------------------------------------------------------------


@pytest.fixture
def one_camera_config(tmp_path, rtsp_server_factory, center_box_model, ros_domain_id) -> Path:
    server = rtsp_server_factory(count=1, width=320, height=240, fps=10)
    return write_config(tmp_path / 'cams.yaml', {'cam0': server.url(0)}, center_box_model)


def _launched(tmp_path: Path, name: str, config: Path, domain_id: int, **env) -> LaunchedSystem:
    run_dir = tmp_path / name
    run_dir.mkdir()
    return LaunchedSystem(config, domain_id, run_dir, status_period_s=0.0, extra_env=env)


def test_second_launch_is_refused_and_a_killed_launcher_takes_its_nodes_along(
        one_camera_config, tmp_path, ros_domain_id, ros_context):
    launched: List[LaunchedSystem] = []
    try:
        first = _launched(tmp_path, 'first', one_camera_config, ros_domain_id)
        launched.append(first)
        probe = Probe(ros_context, ['/cam0'])
        with ExecutorThread(ros_context, [probe.node]):
            assert wait_for(lambda: probe.detections['/cam0'].count() >= 3, START_BOUND_S), \
                first.output()
        probe.node.destroy_node()
        nodes = first.all_started_pids()
        assert len(nodes) == 2 and all(alive(pid) for pid in nodes)

        # The same configuration again, in the same ROS domain: refused, nothing started.
        second = _launched(tmp_path, 'second', one_camera_config, ros_domain_id)
        launched.append(second)
        assert second.process.wait(timeout_s=REFUSE_BOUND_S) == EXIT_RUNNING, second.output()
        assert re.search(r'^\[launch\] error: not starting .*cams\.yaml: these nodes are '
                         r'already running in ROS_DOMAIN_ID \d+: /cam0/camera_node, /detector$',
                         second.output(), re.MULTILINE), second.output()
        assert second.started() == {} and workdirs(second.tmp_dir) == []
        assert all(alive(pid) for pid in nodes)  # the first run did not notice

        # SIGKILL of the first launcher: its nodes end by themselves (the parent-death
        # signal), and its folder stays, recognisably dead.
        (folder,) = workdirs(first.tmp_dir)
        os.kill(first.process.proc.pid, signal.SIGKILL)
        first.process.wait(timeout_s=10.0)
        assert wait_for(lambda: not marked_pids(first.mark), ORPHAN_BOUND_S), \
            (marked_pids(first.mark), first.output())
        assert folder.is_dir()

        # The next start removes it, and starts (the killed run's nodes left the graph).
        third = _launched(tmp_path, 'third', one_camera_config, ros_domain_id,
                          TMPDIR=str(first.tmp_dir))
        launched.append(third)
        assert wait_for(lambda: len(third.started()) == 2, REFUSE_BOUND_S), third.output()
        assert f'[launch] removed {folder}, left by a run that was killed' in third.output()
        assert not folder.exists() and len(workdirs(first.tmp_dir)) == 1
        assert third.stop(signal.SIGINT, timeout_s=STOP_BOUND_S) == 0, third.output()
        assert wait_for(lambda: leftovers(third) == NOTHING and not marked_pids(first.mark),
                        10.0), leftovers(third)
    finally:
        for system in launched:
            system.stop()
            system.kill_leftovers()


def test_detector_failing_fast_repeatedly_stops_the_system(tmp_path, ros_domain_id,
                                                           center_box_model):
    """Killed by the kernel (as for an out-of-memory) each time it starts: restarted with
    growing delays, DETECTOR_FAST_FAILURES_MAX times, then a clear stop with exit 1."""
    config = write_config(tmp_path / 'cams.yaml', {'cam0': 'rtsp://127.0.0.1:9/none'},
                          center_box_model)
    system = _launched(tmp_path, 'run', config, ros_domain_id)
    try:
        killed: List[int] = []

        def kill_each_detector() -> bool:
            for pid in system.started().get('/detector', []):
                if pid not in killed:
                    killed.append(pid)
                    os.kill(pid, signal.SIGKILL)
            return not system.process.running
        assert wait_for(kill_each_detector, START_BOUND_S, 0.05), system.output()
        assert system.process.wait(timeout_s=10.0) == 1, system.output()
        output = system.output()
        assert len(killed) == DETECTOR_FAST_FAILURES_MAX
        assert re.search(
            rf'^\[launch\] error: the detector /detector could not start: '
            rf'{DETECTOR_FAST_FAILURES_MAX} fast failures in a row \(each within '
            rf'{STABLE_RUN_S:g} s of its start\), the last: killed by SIGKILL after [\d.]+ s; '
            rf'its last output:$', output, re.MULTILINE), output
        delays = re.findall(r'^\[launch\] /detector \(pid \d+\) killed by SIGKILL; restarting '
                            r'in ([\d.]+) s$', output, re.MULTILINE)
        assert delays == [f'{min(RESTART_DELAY_MIN_S * 2 ** i, RESTART_DELAY_MAX_S):.1f}'
                          for i in range(DETECTOR_FAST_FAILURES_MAX - 1)]
        assert 'stopping the cameras: the detector is not restarted' in output
        assert 'every node stopped' in output
        assert wait_for(lambda: leftovers(system) == NOTHING, 10.0), leftovers(system)
    finally:
        system.stop()
        system.kill_leftovers()
