"""Fixtures of the fault suite: one whole system started as a user starts it
(`multicam-ros launch cams.yaml`), real RTSP servers, a silent TCP port, and a probe that
records what the system publishes, so that faults can be injected and recovery observed.

The system is shared by the tests of a module (starting one costs about 20-30 s on a 2-core
machine); each test waits until every camera is flowing before it injects its fault, so one
phase's failure is reported by that phase and not by the next one as a mystery.
"""
import os
import re
import signal
import socket
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Callable, Dict, Iterator, List, Optional, Sequence, Tuple

import pytest
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.node import Node
from rclpy.qos import QoSProfile, ReliabilityPolicy
from vision_msgs.msg import Detection2DArray

from multicam_ros.core import diagnostics
from multicam_ros.core.diagnostics import CameraReport, ServedCameraReport
from multicam_ros.core.shm_frames import NAME_PREFIX, SHM_DIR, channel_for_topic, \
    remove_stale_segments, segment_name
from multicam_testbed import RtspServerError, RtspTestServer, processes
from multicam_testbed.processes import alive
from model_fixtures import scripted_detector_yaml
from ros_helpers import LOCALHOST_DISCOVERY, ExecutorThread, NodeProcess, TopicRecorder, \
    isolated_env, make_context, next_domain_id, stamp_ns, wait_for

DEEP = QoSProfile(depth=200, reliability=ReliabilityPolicy.RELIABLE)
STARTED = re.compile(r'^\[launch\] started (\S+) \(pid (\d+)', re.MULTILINE)
RUN_MARK_VAR = 'MULTICAM_FAULTS_RUN'  # in every process of the system: finds orphans by environ


# -- processes ------------------------------------------------------------------------------------


def marked_pids(mark: str) -> List[int]:
    """Live processes whose environment carries RUN_MARK_VAR=mark (any process the run started,
    however it was started or re-parented)."""
    return processes.marked_pids(RUN_MARK_VAR, mark)


def server_pid(server: RtspTestServer) -> int:
    """The pid of a running RtspTestServer's process (the class keeps it private: tests only)."""
    proc = server._proc  # noqa: SLF001
    assert proc is not None and proc.poll() is None, 'the RTSP server is not running'
    return proc.pid


def kill_server(server: RtspTestServer) -> None:
    """SIGKILL the server process (no goodbye to its clients), then release its pipes."""
    pid = server_pid(server)
    os.kill(pid, signal.SIGKILL)
    server._proc.wait(timeout=10.0)  # noqa: SLF001
    server.stop()  # closes the pipes of the dead process; the next start() uses the same port


# -- a TCP port that accepts and never answers --------------------------------------------------


class SilentPort:
    """Listens on loopback, accepts every connection and never sends a byte: a camera whose
    TCP stack is alive but whose RTSP service hangs."""

    def __init__(self) -> None:
        self._sock = socket.socket()
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind(('127.0.0.1', 0))
        self._sock.listen(64)
        self._sock.settimeout(0.2)
        self.port = self._sock.getsockname()[1]
        self.accepted = 0
        self._held: List[socket.socket] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._accept, daemon=True, name='silent-port')
        self._thread.start()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except (socket.timeout, OSError):
                continue
            self._held.append(conn)  # read nothing, answer nothing, close nothing
            self.accepted += 1

    def url(self, path: str = 'stream') -> str:
        return f'rtsp://127.0.0.1:{self.port}/{path}'

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2.0)
        for conn in self._held:
            conn.close()
        self._sock.close()


# -- what the system publishes ----------------------------------------------------------------


class Probe:
    """Records, in the test process, every camera's detections and every /diagnostics report
    (with the monotonic time it arrived)."""

    def __init__(self, context, cameras: Sequence[str]) -> None:
        self.node = Node('fault_probe', context=context)
        self.cameras = list(cameras)
        self.detections = {cam: TopicRecorder(self.node, Detection2DArray, f'{cam}/detections',
                                              DEEP) for cam in self.cameras}
        self._lock = threading.Lock()
        self._camera_reports: Dict[str, List[Tuple[float, CameraReport]]] = {}
        self._served: Dict[str, ServedCameraReport] = {}
        self.node.create_subscription(DiagnosticArray, '/diagnostics', self._on_diagnostics, 100)

    def _on_diagnostics(self, msg: DiagnosticArray) -> None:
        now_s = time.monotonic()
        for status in msg.status:
            values = {kv.key: kv.value for kv in status.values}
            name = status.name
            with self._lock:
                if name.endswith('/camera_node: camera'):
                    report = diagnostics.parse(CameraReport, values)
                    if report is not None:
                        camera = name[:-len('/camera_node: camera')]
                        self._camera_reports.setdefault(camera, []).append((now_s, report))
                elif name.startswith('/detector: /'):
                    report = diagnostics.parse(ServedCameraReport, values)
                    if report is not None:
                        self._served[name[len('/detector: '):]] = report

    # -- diagnostics ----------------------------------------------------------------------
    def camera_reports(self, camera: str, since_s: float = 0.0) -> List[CameraReport]:
        """The camera_node reports of `camera` that arrived at or after monotonic `since_s`."""
        with self._lock:
            return [r for t, r in self._camera_reports.get(camera, []) if t >= since_s]

    def camera_state(self, camera: str) -> str:
        reports = self.camera_reports(camera)
        return reports[-1].state if reports else ''

    def served(self, camera: str) -> Optional[ServedCameraReport]:
        with self._lock:
            return self._served.get(camera)

    def input_path(self, camera: str) -> str:
        report = self.served(camera)
        return report.input_path if report else ''

    # -- detections -----------------------------------------------------------------------
    def stamps(self, camera: str) -> List[int]:
        """Header stamps (ns) of every detection of `camera` received so far, in order."""
        return [stamp_ns(m.header) for m in self.detections[camera].messages]

    def received_s(self, camera: str) -> List[Tuple[float, int]]:
        """(monotonic receive time in s, stamp ns) of each detection of `camera`. The
        recorder stamps arrivals with the ROS clock; converted here to this process's
        monotonic clock."""
        offset_s = time.monotonic() - time.time()
        return [(received_ns / 1e9 + offset_s, stamp_ns(m.header))
                for received_ns, m in self.detections[camera].items]

    def count_after(self, camera: str, since_ns: int) -> int:
        return sum(stamp > since_ns for stamp in self.stamps(camera))

    def is_back(self, camera: str, since_ns: int, since_s: float, frames: int = 5) -> bool:
        """The camera is streaming again: a camera_node report that arrived after `since_s`
        says so, and at least `frames` detections of frames captured after `since_ns`
        (ROS time) arrived."""
        return any(r.state == 'streaming' for r in self.camera_reports(camera, since_s)) \
            and self.count_after(camera, since_ns) >= frames

    def summary(self) -> str:
        return ', '.join(f'{cam}: {self.detections[cam].count()} detections, '
                         f'{self.camera_state(cam) or "no report"}, '
                         f'path {self.input_path(cam) or "-"}' for cam in self.cameras)

    def max_gap_s(self, camera: str, start_s: float, end_s: float) -> float:
        """The longest time without a detection of `camera` within [start_s, end_s]."""
        times = [start_s] + [t for t, _ in self.received_s(camera) if start_s < t < end_s]
        times.append(end_s)
        return max(b - a for a, b in zip(times, times[1:]))


def ros_now_ns() -> int:
    """Now on the clock the cameras stamp frames with (ROS time = system time)."""
    return time.time_ns()


# -- the system under test ------------------------------------------------------------------------


class LaunchedSystem:
    """`multicam-ros launch cams.yaml` in its own process group, as a user runs it, with
    TMPDIR pointed at a folder of this run (so its temporary files can be checked) and a
    marker variable in the environment of every process it starts."""

    def __init__(self, config: Path, domain_id: int, run_dir: Path, status_period_s: float = 5.0,
                 extra_env: Optional[Dict[str, str]] = None) -> None:
        self.mark = uuid.uuid4().hex[:12]
        self.domain_id = domain_id
        self.tmp_dir = run_dir / 'tmp'
        self.tmp_dir.mkdir()
        env = isolated_env(domain_id, {RUN_MARK_VAR: self.mark, 'TMPDIR': str(self.tmp_dir),
                                       **(extra_env or {})})
        self.process = NodeProcess(['multicam-ros', 'launch', str(config), '--status-period',
                                    str(status_period_s)], env, run_dir / 'launcher.log')
        self.exit_code: Optional[int] = None

    def output(self) -> str:
        return self.process.output()

    def started(self) -> Dict[str, List[int]]:
        """Node name -> pid of each start, in order, from the launcher's '[launch] started'."""
        pids: Dict[str, List[int]] = {}
        for name, pid in STARTED.findall(self.output()):
            pids.setdefault(name, []).append(int(pid))
        return pids

    def current_pid(self, node: str) -> int:
        return self.started()[node][-1]

    def all_started_pids(self) -> List[int]:
        return [pid for pids in self.started().values() for pid in pids]

    def stop(self, sig: int = signal.SIGINT, timeout_s: float = 40.0) -> Optional[int]:
        """Signal the launcher alone (it forwards the signal to every node) and wait."""
        if self.exit_code is None:
            self.exit_code = self.process.stop(sig, timeout_s=timeout_s)
        return self.exit_code

    def kill_leftovers(self) -> List[int]:
        """Safety net for teardown: SIGKILL whatever of this run still lives; return them."""
        left = marked_pids(self.mark)
        for pid in left:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        return left


def write_cams_yaml(path: Path, cameras: Dict[str, str], model_path: Path) -> Path:
    """A cams.yaml of `cameras` (name -> url) and a CPU detector with the scripted one-box
    TorchScript model (the cheapest real model: the test is about plumbing, not detection)."""
    lines = ['cameras:'] + [f'  - {{name: {name}, url: "{url}"}}' for name, url in cameras.items()]
    path.write_text('\n'.join(lines) + '\n' + scripted_detector_yaml(model_path))
    return path


def run_segments(domain_id: int) -> List[str]:
    """This user's shared-memory frame segments (and temporary ones) of ROS domain
    `domain_id` in /dev/shm: the channel names of shm_frames.channel_for_topic start with
    d<domain>/..., so their segment names hold `.d<domain>_` after the user prefix."""
    probe = segment_name(channel_for_topic('/x', domain_id))  # multicam_ros.u<uid>.d<domain>_x.
    prefix = probe[:probe.index(f'.d{domain_id}_x.')] + f'.d{domain_id}_'
    assert prefix.startswith(NAME_PREFIX)
    return sorted(name for name in os.listdir(SHM_DIR) if name.startswith(prefix))


def camera_segment(camera: str, domain_id: int) -> str:
    return segment_name(channel_for_topic(f'{camera}/image_raw', domain_id))


# -- the bed: servers, a silent port, the launched system and the probe ------------------------

REAL_CAMERAS = ('/cam0', '/cam1', '/cam2')  # cam0, cam1 on the main server; cam2 on its own
SILENT_CAMERA = '/mute'  # its URL is the silent port
TAIL_LINES = 120
TORCH_CACHE_PREFIX = 'torchinductor_'


class FaultBed:
    """Everything one module's tests act on and look at. Servers: `main` serves cam0 and
    cam1, `flap` serves cam2 alone (so it can go down while the others stay up)."""

    def __init__(self, domain_id: int, main: RtspTestServer, flap: RtspTestServer,
                 silent: SilentPort, system: LaunchedSystem, probe: Probe) -> None:
        self.domain_id = domain_id
        self.main = main
        self.flap = flap
        self.silent = silent
        self.system = system
        self.probe = probe
        self.cameras = list(REAL_CAMERAS)
        self.silent_camera = SILENT_CAMERA

    # -- looking ---------------------------------------------------------------------------
    def why(self, *extra: object) -> str:
        """Context for an assertion message: what the probe saw, the launcher's last lines."""
        tail = '\n'.join(self.system.output().splitlines()[-TAIL_LINES:])
        return '\n'.join([*map(str, extra), 'probe: ' + self.probe.summary(),
                          f'--- last {TAIL_LINES} lines of multicam-ros launch ---', tail])

    def wait(self, predicate: Callable[[], bool], timeout_s: float,
             interval_s: float = 0.2) -> bool:
        """wait_for, but fail at once (with the launcher's output) if the launcher exited."""
        running = self.system.process
        done = wait_for(lambda: not running.running or predicate(), timeout_s, interval_s)
        assert running.running, self.why('multicam-ros launch exited')
        return done

    def wait_all_flowing(self, timeout_s: float = 60.0, frames: int = 5) -> None:
        """Assert that every real camera delivers fresh detections (captured from now on)."""
        since_ns, since_s = ros_now_ns(), time.monotonic()
        assert self.wait(lambda: all(self.probe.is_back(cam, since_ns, since_s, frames)
                                     for cam in self.cameras), timeout_s), \
            self.why(f'not every camera delivered {frames} fresh detections in {timeout_s} s')

    def wait_back(self, cameras: Sequence[str], since_ns: int, since_s: float,
                  bound_s: float) -> Dict[str, float]:
        """Wait until each camera is back (Probe.is_back) after a fault ended at
        (`since_ns` ROS time, `since_s` monotonic); assert it within `bound_s`. Returns the
        seconds each one took (as seen from here, to its 5th fresh detection)."""
        took: Dict[str, float] = {}

        def check() -> bool:
            for cam in cameras:
                if cam not in took and self.probe.is_back(cam, since_ns, since_s):
                    took[cam] = time.monotonic() - since_s
            return len(took) == len(cameras)
        self.wait(check, bound_s, 0.1)
        missing = [cam for cam in cameras if cam not in took]
        assert not missing, self.why(f'{missing} not back within {bound_s} s (back: {took})')
        return took

    def assert_nothing_repeated(self) -> None:
        """Per camera, detection stamps strictly increase over the whole run: never a frame
        twice, never one out of order."""
        for cam in self.cameras:
            stamps = self.probe.stamps(cam)
            bad = [(i, a, b) for i, (a, b) in enumerate(zip(stamps, stamps[1:])) if b <= a]
            assert not bad, self.why(f'{cam}: stamps not strictly increasing at {bad[:5]} '
                                     f'of {len(stamps)}')

    def segments(self) -> List[str]:
        """This run's shared-memory segments in /dev/shm."""
        return run_segments(self.domain_id)

    def segment_of(self, camera: str) -> str:
        """The /dev/shm name of `camera`'s frame segment."""
        return camera_segment(camera, self.domain_id)

    @staticmethod
    def now_ns() -> int:
        return ros_now_ns()

    def leftovers(self) -> Dict[str, list]:
        """What the run left behind: live processes, temporary files and folders (in the
        TMPDIR the run was given), shared-memory segments. torch's per-user compile cache
        (`torchinductor_<user>`, which torch keeps in the temp folder and every later run
        reuses) is a cache, not a leftover of this run, and is not counted."""
        pids = set(marked_pids(self.system.mark))
        pids |= {pid for pid in self.system.all_started_pids() if alive(pid)}
        if self.system.process.running:
            pids.add(self.system.process.proc.pid)
        tmp = [name for name in os.listdir(self.system.tmp_dir)
               if not name.startswith(TORCH_CACHE_PREFIX)]
        return {'processes': sorted(pids), 'tmp': sorted(tmp), 'segments': self.segments()}

    alive = staticmethod(alive)

    # -- faults -----------------------------------------------------------------------------
    @staticmethod
    def kill_server(server: RtspTestServer) -> None:
        kill_server(server)

    @staticmethod
    def pause_server(server: RtspTestServer) -> None:
        os.kill(server_pid(server), signal.SIGSTOP)

    @staticmethod
    def resume_server(server: RtspTestServer) -> None:
        os.kill(server_pid(server), signal.SIGCONT)


def _server(servers: List[RtspTestServer], **kwargs) -> RtspTestServer:
    server = RtspTestServer(width=320, height=240, fps=15, **kwargs)
    servers.append(server)
    try:
        return server.start()
    except RtspServerError as exc:
        pytest.fail(str(exc), pytrace=False)


@pytest.fixture(scope='module')
def fault_bed(rtsp_gstreamer_ready, center_box_model) -> Iterator[FaultBed]:
    """The whole system under `multicam-ros launch`, in a ROS domain of its own: cameras
    cam0, cam1 (main server), cam2 (its own server) and mute (a silent TCP port), and one
    detector with the scripted one-box model on the CPU; the probe records from the start.
    Teardown stops what is still running and kills what does not stop (the tests assert the
    clean stop themselves)."""
    domain_id = next_domain_id()
    servers: List[RtspTestServer] = []
    with pytest.MonkeyPatch.context() as patch, \
            tempfile.TemporaryDirectory(prefix='multicam-faults-') as folder:
        patch.setenv('ROS_DOMAIN_ID', str(domain_id))
        for name, value in LOCALHOST_DISCOVERY.items():
            patch.setenv(name, value)
        run_dir = Path(folder)
        silent = SilentPort()
        context = make_context(domain_id)
        probe = Probe(context, [*REAL_CAMERAS, SILENT_CAMERA])
        system = None
        try:
            main = _server(servers, count=2)
            flap = _server(servers, count=1)
            config = write_cams_yaml(run_dir / 'cams.yaml', {
                'cam0': main.url(0), 'cam1': main.url(1), 'cam2': flap.url(0),
                SILENT_CAMERA.strip('/'): silent.url()}, center_box_model)
            with ExecutorThread(context, [probe.node]):
                system = LaunchedSystem(config, domain_id, run_dir)
                yield FaultBed(domain_id, main, flap, silent, system, probe)
                system.stop()
        finally:
            if system is not None:
                system.stop()
                if system.kill_leftovers():  # a test failed badly: clear up after it too
                    time.sleep(0.5)
                for camera in (*REAL_CAMERAS, SILENT_CAMERA):  # what a killed writer left
                    remove_stale_segments(channel_for_topic(f'{camera}/image_raw', domain_id))
            for server in servers:
                if server.running:
                    try:
                        os.kill(server_pid(server), signal.SIGCONT)  # a test may have paused it
                    except OSError:
                        pass
                server.stop()
            silent.close()
            probe.node.destroy_node()
            context.try_shutdown()
