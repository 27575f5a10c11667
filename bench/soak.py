"""Soak: run the whole system for a long time under periodic faults and watch its resources.

    .venv/bin/python bench/soak.py --duration 3600 --cameras 3 [--fault-period 60]
                                   [--out bench/results/soak] [--kill-detector]

What it runs, as a user would:
- `multicam-ros test-streams --count N` (the RTSP test bed: cam0..camN-1 on loopback);
- `multicam-ros launch cams.yaml` with a generated cams.yaml: N cameras and one detector on the
  CPU with the default model (NanoDet-g) when it is in the cache (`multicam-ros models check`),
  else a tiny scripted TorchScript model written into the run's folder (`--model` picks).
Each in a session of its own, in a ROS domain of its own (`--domain-id`, default: a free one)
with discovery on loopback only.

Every `--fault-period` seconds it injects the next fault of the rotation:
  kill_camera     SIGKILL one camera_node (the cameras in turn, or always `--victim`); the
                  launcher restarts it;
  restart_server  stop the RTSP test server (SIGTERM) and start it again on the same port;
  stall_server    SIGSTOP the GStreamer server process for 5 s, then SIGCONT;
  kill_detector   SIGKILL the detector (only with --kill-detector: the launcher may stop the
                  whole system when its detector dies, which ends the soak).
After each fault it waits for recovery: every camera_node reports `streaming` on /diagnostics
and the detector has processed new frames of every camera (a probe in this process listens to
/diagnostics only); the seconds that took are recorded per fault.

Every `--sample-period` seconds (5) it samples every process of the system, found by walking
the launcher's process tree (so restarted nodes are followed under their new pids): RSS (and its
anonymous and shared-memory parts), threads, open file descriptors and CPU time, grouped by kind
(launcher, detector, cam0..camN-1; the test bed separately), and the run's shared-memory frame
segments in /dev/shm (count, size, allocated bytes). It prints a progress line every
`--progress-period` seconds.

At the end (or on Ctrl-C, with what was gathered) it writes <out>.json (every sample, every
fault, the analysis), <out>.png (one panel per metric, one line per kind, faults marked, the
analysed window shaded) and <out>.md (summary table). Growth: over the second half of the run
(after warm-up), leaving out the first `--restart-warmup` seconds of every (re)started process
and every fault's disturbance (from the fault until 10 s after its recovery), a least-squares
slope with one intercept per process instance (a restarted camera is a new process, its level
may differ; its slope counts) over the instances that live at least 10 minutes of the window,
in units per hour, with its standard error. A kind none of whose instances lives that long is
`short-lived`: only its level is shown (a process killed every few minutes shows its warm-up,
not a leak; `--victim cam0` keeps the other cameras alive for the whole run).
A metric grows when its slope exceeds both 3 standard errors and a floor (RSS: 4 MiB/h or 2 %
of its mean per hour, threads: 1/h, fds: 2/h, shared memory: 1 MiB/h). The verdict line says
FLAT or GROWS (naming what grows), and how many faults recovered.

Ctrl-C (or SIGTERM): stops the faults, resumes a paused server, stops the launcher with SIGINT
(it stops every node), stops the test bed, removes the run's folder and any segment of the run's
domain that a dead writer left, checks that no process of the run is left (by a marker variable
in their environment), writes the results and exits 130. A normal end exits 0; 1 when the system
failed (the launcher exited by itself, or a process of the run was left and had to be killed).
"""
from __future__ import annotations

import argparse
import collections
import ctypes
import datetime
import json
import math
import os
import platform
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
import uuid
from pathlib import Path
from typing import Any, Deque, Dict, List, Optional, Sequence, Tuple

from multicam_testbed import processes
from multicam_testbed.processes import alive, cmdline, stat_fields

REPO = Path(__file__).resolve().parent.parent
PAGE_BYTES = os.sysconf('SC_PAGE_SIZE')
CLOCK_TICKS = os.sysconf('SC_CLK_TCK')
RUN_MARK_VAR = 'MULTICAM_SOAK_RUN'
STALL_S = 5.0
FAULTS = ('kill_camera', 'restart_server', 'stall_server', 'kill_detector')
METRICS = ('rss_mib', 'threads', 'fds', 'shm_mib')
SYSTEM_KINDS_FIXED = ('launcher', 'detector')
# Growth floors per hour (below these a slope is noise whatever its standard error says).
RSS_FLOOR_MIB_H = 4.0
RSS_FLOOR_FRACTION_H = 0.02
FLOORS_H = {'threads': 1.0, 'fds': 2.0, 'shm_mib': 1.0}
SIGMAS = 3.0
# ... and it must add up to at least this within the analysed window (one allocator step of
# RSS, one thread or descriptor, about a third of one camera's segment).
MIN_CHANGE = {'rss_mib': 1.0, 'threads': 1.0, 'fds': 1.0, 'shm_mib': 1.0}
# Samples from a fault until this long after its recovery are left out of the fit: a fault
# makes transient dips and bumps (a camera's segment closed and opened again, a decoder freed
# and allocated again) that are not growth.
FAULT_SETTLE_S = 10.0
# Only process instances that live this long in the analysed window are fitted.
MIN_INSTANCE_S = 600.0
MIB = 1024.0 * 1024.0


def say(text: str) -> None:
    print(f'[soak] {text}', flush=True)


def hms(seconds: float) -> str:
    seconds = int(max(0.0, seconds))
    return f'{seconds // 3600:02d}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}'


# -- /proc ------------------------------------------------------------------------------------


def descendants(root: int) -> List[int]:
    """`root` and every live process below it (by parent pid)."""
    children: Dict[int, List[int]] = collections.defaultdict(list)
    for entry in os.listdir('/proc'):
        if entry.isdigit():
            fields = stat_fields(int(entry))
            if fields is not None and fields[0] != 'Z':
                children[int(fields[1])].append(int(entry))
    found: List[int] = []
    stack = [root] if alive(root) else []
    while stack:
        pid = stack.pop()
        if pid not in found:
            found.append(pid)
            stack.extend(children.get(pid, ()))
    return found


def marked_pids(mark: str) -> List[int]:
    """Live processes whose environment holds RUN_MARK_VAR=mark."""
    return processes.marked_pids(RUN_MARK_VAR, mark)


def process_sample(pid: int) -> Optional[Dict[str, float]]:
    """RSS (total, anonymous, shared memory) in MiB, threads, fds and CPU seconds of `pid`."""
    try:
        status = Path(f'/proc/{pid}/status').read_text()
        fds = len(os.listdir(f'/proc/{pid}/fd'))
    except OSError:
        return None
    fields = stat_fields(pid)
    if fields is None:
        return None
    values: Dict[str, float] = {}
    for line in status.splitlines():
        key, _, rest = line.partition(':')
        if key in ('VmRSS', 'RssAnon', 'RssShmem'):
            values[key] = int(rest.split()[0]) / 1024.0  # kB -> MiB
        elif key == 'Threads':
            values['threads'] = int(rest.split()[0])
    return {'rss_mib': values.get('VmRSS', 0.0), 'anon_mib': values.get('RssAnon', 0.0),
            'shmem_mib': values.get('RssShmem', 0.0), 'threads': values.get('threads', 0),
            'fds': fds, 'cpu_s': (int(fields[11]) + int(fields[12])) / CLOCK_TICKS}


def node_kind(pid: int) -> str:
    """What a process of the launcher's tree is: detector, a camera's name, or other."""
    args = cmdline(pid)
    joined = ' '.join(args)
    if 'multicam_ros.ros.detector_node' in joined or 'detector_node' in joined:
        return 'detector'
    if 'camera_node' in joined:
        for arg in args:
            if arg.startswith('__ns:='):
                return arg[len('__ns:='):].strip('/') or 'camera'
        return 'camera'
    return 'other'


# -- shared memory of the run -------------------------------------------------------------------


def shm_of_domain(domain_id: int) -> Dict[str, float]:
    """This user's frame segments of ROS domain `domain_id` (core/shm_frames.py names them
    multicam_ros.u<uid>.d<domain>_<topic>.<hash>) and /dev/shm as a whole."""
    from multicam_ros.core.shm_frames import SHM_DIR, channel_for_topic, segment_name
    prefix = segment_name(channel_for_topic('/x', domain_id)).split('.d', 1)[0] + f'.d{domain_id}_'
    count, size, allocated = 0, 0, 0
    names = []
    try:
        entries = list(os.scandir(SHM_DIR))
    except OSError:
        entries = []
    for entry in entries:
        if entry.name.startswith(prefix):
            try:
                info = entry.stat()
            except OSError:
                continue
            count += 1
            size += info.st_size
            allocated += info.st_blocks * 512
            names.append(entry.name)
    try:
        vfs = os.statvfs(SHM_DIR)
        used = (vfs.f_blocks - vfs.f_bfree) * vfs.f_frsize
    except OSError:
        used = 0
    return {'segments': count, 'size_mib': size / MIB, 'shm_mib': allocated / MIB,
            'dev_shm_used_mib': used / MIB, 'dev_shm_files': len(entries), 'names': names}


def remove_run_segments(domain_id: int, cameras: Sequence[str]) -> List[str]:
    """Remove the run's segments whose writer is dead (a node that had to be killed)."""
    from multicam_ros.core.shm_frames import channel_for_topic, remove_stale_segments
    removed: List[str] = []
    for camera in cameras:
        removed += remove_stale_segments(channel_for_topic(f'/{camera}/image_raw', domain_id))
    return removed


def free_domain_id() -> int:
    """A ROS domain id (1..200) with no frame segment of this user in /dev/shm."""
    from multicam_ros.core.shm_frames import SHM_DIR, NAME_PREFIX
    try:
        taken = {name.split('.d', 1)[1].split('_', 1)[0] for name in os.listdir(SHM_DIR)
                 if name.startswith(NAME_PREFIX) and '.d' in name}
    except OSError:
        taken = set()
    choices = [d for d in range(101, 201) if str(d) not in taken] or list(range(101, 201))
    return random.Random().choice(choices)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(('127.0.0.1', 0))
        return sock.getsockname()[1]


# -- child processes ----------------------------------------------------------------------------

_LIBC = ctypes.CDLL(None, use_errno=True)
_PR_SET_PDEATHSIG = 1


def _own_session_dying_with_us() -> None:
    """In the child, before exec: a session of its own (a Ctrl-C in the terminal reaches only
    this process, which stops the children in order), and SIGTERM if this process dies."""
    os.setsid()
    _LIBC.prctl(_PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0)


class Child:
    """A process of the run, output appended to a log file; its tail kept for messages."""

    def __init__(self, label: str, command: List[str], env: Dict[str, str],
                 log_path: Path) -> None:
        self.label = label
        self.command = command
        self.env = env
        self.log_path = log_path
        self.proc: Optional[subprocess.Popen] = None
        self.tail: Deque[str] = collections.deque(maxlen=60)
        self._reader: Optional[threading.Thread] = None

    def start(self) -> 'Child':
        log = self.log_path.open('ab')
        self.proc = subprocess.Popen(self.command, env=self.env, stdin=subprocess.DEVNULL,
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     cwd=str(REPO), preexec_fn=_own_session_dying_with_us)
        self._reader = threading.Thread(target=self._read, args=(self.proc, log), daemon=True,
                                        name=f'read-{self.label}')
        self._reader.start()
        return self

    def _read(self, proc: subprocess.Popen, log) -> None:
        assert proc.stdout is not None
        for raw in iter(proc.stdout.readline, b''):
            log.write(raw)
            log.flush()
            self.tail.append(raw.decode('utf-8', 'replace').rstrip('\n'))
        proc.stdout.close()
        log.close()

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def text(self) -> str:
        return '\n'.join(self.tail)

    def stop(self, sig: int = signal.SIGTERM, grace_s: float = 10.0) -> Optional[int]:
        """`sig` to the process, wait `grace_s`, then SIGKILL its whole session's group."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            try:
                self.proc.send_signal(sig)
                self.proc.wait(timeout=grace_s)
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(self.proc.pid, signal.SIGKILL)
                except OSError:
                    pass
                self.proc.wait(timeout=10.0)
        if self._reader is not None:
            self._reader.join(timeout=5.0)
        return self.proc.returncode


def console_script(name: str) -> List[str]:
    """The venv's console script `name` (as users run it), else `python -m` of its module."""
    script = Path(sys.executable).parent / name
    if script.exists():
        return [str(script)]
    return [sys.executable, '-m', 'multicam_ros.cli']


class TestStreams:
    """`multicam-ros test-streams --count N --port P` and its GStreamer server child."""

    def __init__(self, count: int, port: int, width: int, height: int, fps: int,
                 env: Dict[str, str], log_path: Path) -> None:
        self.count = count
        self.port = port
        self.args = ['test-streams', '--count', str(count), '--port', str(port),
                     '--width', str(width), '--height', str(height), '--fps', str(fps)]
        self.env = env
        self.log_path = log_path
        self.child: Optional[Child] = None
        self.paused_pid: Optional[int] = None

    def urls(self) -> List[str]:
        return [f'rtsp://127.0.0.1:{self.port}/cam{i}' for i in range(self.count)]

    def start(self, timeout_s: float = 30.0) -> None:
        deadline_s = time.monotonic() + timeout_s
        while True:
            self.child = Child('test-streams', console_script('multicam-ros') + self.args,
                               self.env, self.log_path).start()
            while time.monotonic() < deadline_s and self.child.running:
                if 'Press Ctrl-C to stop.' in self.child.text():
                    return
                time.sleep(0.1)
            if self.child.running or time.monotonic() >= deadline_s:
                raise RuntimeError('multicam-ros test-streams did not come up:\n'
                                   + self.child.text())
            time.sleep(0.5)  # the port may still be closing: try again until the deadline

    def server_pid(self) -> Optional[int]:
        """The GStreamer server process (rtsp_server.py) below test-streams."""
        if self.child is None or not self.child.running:
            return None
        for pid in descendants(self.child.pid):
            if any(arg.endswith('rtsp_server.py') for arg in cmdline(pid)):
                return pid
        return None

    def pause(self) -> bool:
        pid = self.server_pid()
        if pid is None:
            return False
        os.kill(pid, signal.SIGSTOP)
        self.paused_pid = pid
        return True

    def resume(self) -> None:
        if self.paused_pid is not None:
            try:
                os.kill(self.paused_pid, signal.SIGCONT)
            except OSError:
                pass
            self.paused_pid = None

    def stop(self) -> None:
        self.resume()
        if self.child is not None:
            self.child.stop(signal.SIGTERM, grace_s=10.0)


# -- what the system says on /diagnostics -------------------------------------------------------


class DiagnosticsProbe:
    """Listens to /diagnostics in this process: each camera_node's state, and the detector's
    processed-frame count per camera, with the monotonic time each report arrived."""

    def __init__(self, domain_id: int, cameras: Sequence[str]) -> None:
        import rclpy
        from diagnostic_msgs.msg import DiagnosticArray
        from rclpy.context import Context
        from rclpy.executors import SingleThreadedExecutor

        from multicam_ros.core import diagnostics
        from multicam_ros.core.diagnostics import CameraReport, ServedCameraReport

        self._diagnostics = diagnostics
        self._camera_report = CameraReport
        self._served_report = ServedCameraReport
        self.cameras = list(cameras)
        self._lock = threading.Lock()
        # Per camera: (arrival, state) of its camera_node, (arrival, frames processed) of the
        # detector's report on it.
        self.states: Dict[str, Deque[Tuple[float, str]]] = collections.defaultdict(
            lambda: collections.deque(maxlen=600))
        self.served: Dict[str, Deque[Tuple[float, int]]] = collections.defaultdict(
            lambda: collections.deque(maxlen=600))
        self._context = Context()
        rclpy.init(context=self._context, domain_id=domain_id)
        self._node = rclpy.create_node('soak_probe', context=self._context)
        self._node.create_subscription(DiagnosticArray, '/diagnostics', self._on, 100)
        self._executor = SingleThreadedExecutor(context=self._context)
        self._executor.add_node(self._node)
        self._thread = threading.Thread(target=self._spin, daemon=True, name='soak-probe')
        self._thread.start()

    def _spin(self) -> None:
        try:
            self._executor.spin()
        except Exception:  # noqa: BLE001 - the context is shut down at the end
            pass

    def _on(self, msg) -> None:
        now_s = time.monotonic()
        for status in msg.status:
            values = {kv.key: kv.value for kv in status.values}
            name = status.name
            with self._lock:
                if name.endswith('/camera_node: camera'):
                    report = self._diagnostics.parse(self._camera_report, values)
                    if report is not None:
                        self.states[name.split('/')[1]].append((now_s, report.state))
                elif name.startswith('/detector: /'):
                    report = self._diagnostics.parse(self._served_report, values)
                    if report is not None:
                        self.served[name.split('/')[-1]].append(
                            (now_s, report.frames_processed))

    def processed(self) -> Dict[str, int]:
        with self._lock:
            return {cam: hist[-1][1] for cam, hist in self.served.items() if hist}

    def streaming(self) -> List[str]:
        """Cameras whose latest report (of the last 5 s) says streaming."""
        now_s = time.monotonic()
        with self._lock:
            return [cam for cam, hist in self.states.items()
                    if hist and hist[-1][1] == 'streaming' and now_s - hist[-1][0] < 5.0]

    def _back_at(self, camera: str, fault_s: float, since_s: float) -> Optional[float]:
        """When `camera` was seen streaming again after being seen down since `fault_s`: a
        report that is not `streaming`, or a gap in its reports (its process was dead)."""
        down_at: Optional[float] = None
        previous: Optional[float] = None
        for at_s, state in self.states[camera]:
            if at_s >= fault_s and down_at is None and (
                    state != 'streaming' or (previous is not None and at_s - previous > 2.5)):
                down_at = at_s
            if down_at is not None and state == 'streaming' and at_s >= since_s:
                return at_s
            previous = at_s
        return None

    def recovered_at(self, fault_s: float, since_s: float,
                     affected: Sequence[str]) -> Optional[float]:
        """When the system was whole again after a fault that began at `fault_s` and ended at
        `since_s` (monotonic): every `affected` camera was seen down and then streaming, and
        after that the detector processed new frames of every camera (two of its reports on
        each camera, the later with a higher count). None: not yet."""
        with self._lock:
            after_s = since_s
            for camera in affected:
                back_s = self._back_at(camera, fault_s, since_s)
                if back_s is None:
                    return None
                after_s = max(after_s, back_s)
            done_s = after_s
            for camera in self.cameras:
                reports = [(t, n) for t, n in self.served[camera] if t > after_s]
                later = [t for t, n in reports[1:] if n > reports[0][1]] if reports else []
                if not later:
                    return None
                done_s = max(done_s, later[0])
        return done_s

    def close(self) -> None:
        self._executor.shutdown(timeout_sec=2.0)
        self._node.destroy_node()
        self._context.try_shutdown()
        self._thread.join(timeout=5.0)


# -- models and configuration -------------------------------------------------------------------


def default_model_ready() -> bool:
    try:
        from multicam_ros.system import model_store
        return bool(model_store.is_current())
    except Exception:  # noqa: BLE001 - no model store, no torch: the test model then
        return False


def write_config(path: Path, urls: Sequence[str], model: str, model_path: Optional[Path]) -> None:
    cameras = ''.join(f'  - {{name: cam{i}, url: "{url}"}}\n' for i, url in enumerate(urls))
    if model == 'nanodet':
        detector = 'detector:\n  model:\n    backend: nanodet\n  device: cpu\n'
    else:
        detector = textwrap.dedent(f"""\
            detector:
              model:
                backend: torchscript
                path: {model_path}
                class_names: [thing, other]
              device: cpu
              input_size: 320
            """)
    path.write_text('# written by bench/soak.py\ncameras:\n' + cameras + detector)


# -- analysis -----------------------------------------------------------------------------------


def within_instance_slope(
        points: Sequence[Tuple[float, float, int]]) -> Optional[Dict[str, float]]:
    """Least-squares slope of y over t (seconds) with one intercept per instance id:
    (t, y, instance). Returns slope and standard error per hour, mean and count; None when
    there is not enough to fit."""
    groups: Dict[int, List[Tuple[float, float]]] = collections.defaultdict(list)
    for t, y, instance in points:
        groups[instance].append((t, y))
    sxx = sxy = 0.0
    n = 0
    centred: List[Tuple[float, float]] = []
    for pairs in groups.values():
        if len(pairs) < 2:
            continue
        t_mean = sum(t for t, _ in pairs) / len(pairs)
        y_mean = sum(y for _, y in pairs) / len(pairs)
        for t, y in pairs:
            centred.append((t - t_mean, y - y_mean))
            sxx += (t - t_mean) ** 2
            sxy += (t - t_mean) * (y - y_mean)
        n += len(pairs)
    used_groups = sum(1 for pairs in groups.values() if len(pairs) >= 2)
    dof = n - used_groups - 1
    if n < 4 or sxx <= 0 or dof < 1:
        return None
    slope = sxy / sxx
    residual = sum((y - slope * t) ** 2 for t, y in centred)
    stderr = math.sqrt(residual / dof / sxx)
    mean = sum(y for _, y, _ in points) / len(points)
    return {'slope_per_h': slope * 3600.0, 'stderr_per_h': stderr * 3600.0, 'mean': mean,
            'samples': n, 'instances': used_groups}


def growth_floor(metric: str, mean: float) -> float:
    if metric == 'rss_mib':
        return max(RSS_FLOOR_MIB_H, RSS_FLOOR_FRACTION_H * mean)
    return FLOORS_H[metric]


def disturbed(t_s: float, faults: Sequence[Dict[str, Any]], fault_period_s: float) -> bool:
    """Whether a sample at t_s lies inside a fault's disturbance: from the fault until
    FAULT_SETTLE_S after its recovery (or the next fault when it never recovered)."""
    for fault in faults:
        took = fault.get('recovered_s')
        end = fault['t_s'] + (took if took is not None else fault_period_s) + FAULT_SETTLE_S
        if fault['t_s'] <= t_s <= end:
            return True
    return False


def analyse(samples: List[Dict[str, Any]], kinds: Sequence[str], restart_warmup_s: float,
            elapsed_s: float, faults: Sequence[Dict[str, Any]] = (),
            fault_period_s: float = 0.0) -> Dict[str, Any]:
    """Growth per hour of each metric of each kind over the second half of the run, from the
    samples outside every fault's disturbance, of the process instances that live at least
    MIN_INSTANCE_S of that window (a process killed every few minutes cannot show a leak, only
    its warm-up)."""
    start_s = elapsed_s / 2.0
    first_seen: Dict[Tuple[str, int], float] = {}  # (kind, pid) -> when that pid appeared
    first_pid: Dict[str, int] = {}  # kind -> its first pid (a later one is a restart)
    for sample in samples:
        for kind, info in sample['kinds'].items():
            first_seen.setdefault((kind, info['pid']), sample['t_s'])
            first_pid.setdefault(kind, info['pid'])
    result: Dict[str, Any] = {'window_s': [round(start_s, 1), round(elapsed_s, 1)],
                              'restart_warmup_s': restart_warmup_s,
                              'fault_settle_s': FAULT_SETTLE_S,
                              'min_instance_s': MIN_INSTANCE_S, 'kinds': {}}
    growing: List[str] = []
    for kind in kinds:
        per_metric: Dict[str, Any] = {}
        for metric in METRICS:
            points = []
            for sample in samples:
                if sample['t_s'] < start_s or disturbed(sample['t_s'], faults, fault_period_s):
                    continue
                if metric == 'shm_mib':
                    if kind != 'shared_memory':
                        continue
                    points.append((sample['t_s'], sample['shm']['shm_mib'], 0))
                    continue
                info = sample['kinds'].get(kind)
                if info is None or kind == 'shared_memory':
                    continue
                restarted = info['pid'] != first_pid[kind]
                if restarted and sample['t_s'] - first_seen[(kind, info['pid'])] \
                        < restart_warmup_s:
                    continue  # a process that restarted lately is still warming up
                points.append((sample['t_s'], float(info[metric]), info['pid']))
            spans: Dict[int, List[float]] = collections.defaultdict(list)
            for t, _, instance in points:
                spans[instance].append(t)
            lasting = {i for i, ts in spans.items() if max(ts) - min(ts) >= MIN_INSTANCE_S}
            if spans and not lasting:
                per_metric[metric] = {'verdict': 'short-lived', 'instances': len(spans),
                                      'samples': len(points),
                                      'mean': sum(y for _, y, _ in points) / len(points),
                                      'peak': max(y for _, y, _ in points)}
                continue
            fit = within_instance_slope([p for p in points if p[2] in lasting])
            if fit is None:
                continue
            floor = growth_floor(metric, fit['mean'])
            change = fit['slope_per_h'] * (elapsed_s - start_s) / 3600.0
            grows = (fit['slope_per_h'] > max(SIGMAS * fit['stderr_per_h'], floor)
                     and change >= MIN_CHANGE[metric])
            fit['floor_per_h'] = floor
            fit['change_in_window'] = change
            fit['verdict'] = 'grows' if grows else 'flat'
            per_metric[metric] = fit
            if grows:
                growing.append(f'{kind} {metric} {fit["slope_per_h"]:+.2f}/h '
                               f'(±{fit["stderr_per_h"]:.2f}, floor {floor:.2f})')
        if per_metric:
            result['kinds'][kind] = per_metric
    result['growing'] = growing
    return result


# -- output -------------------------------------------------------------------------------------


def kind_order(kinds: Sequence[str]) -> List[str]:
    fixed = [k for k in SYSTEM_KINDS_FIXED if k in kinds]
    cams = sorted((k for k in kinds if k.startswith('cam')), key=lambda k: (len(k), k))
    rest = sorted(k for k in kinds if k not in fixed and k not in cams)
    return fixed + cams + rest


def write_plot(path: Path, result: Dict[str, Any]) -> Optional[str]:
    """The PNG: RSS, threads, fds and shared memory over time, one line per kind."""
    try:
        import matplotlib
        matplotlib.use('Agg')
        import matplotlib.pyplot as plt
    except ImportError as exc:
        return f'no plot: matplotlib is not importable ({exc})'
    samples = result['samples']
    if not samples:
        return 'no plot: no samples'
    minutes = [s['t_s'] / 60.0 for s in samples]
    kinds = kind_order({k for s in samples for k in s['kinds']})
    fig, axes = plt.subplots(4, 1, figsize=(11, 12), sharex=True)
    titles = {'rss_mib': 'RSS (MiB)', 'threads': 'threads', 'fds': 'open fds',
              'shm_mib': 'frame segments (MiB)'}
    colours = {'kill_camera': 'tab:red', 'restart_server': 'tab:orange',
               'stall_server': 'tab:purple', 'kill_detector': 'black'}
    window = result['analysis'].get('window_s', [0, 0])
    for axis, metric in zip(axes, METRICS):
        if metric == 'shm_mib':
            axis.plot(minutes, [s['shm']['shm_mib'] for s in samples], label='segments')
        else:
            for kind in kinds:
                if kind == 'testbed':
                    continue
                xs = [m for m, s in zip(minutes, samples) if kind in s['kinds']]
                ys = [s['kinds'][kind][metric] for s in samples if kind in s['kinds']]
                axis.plot(xs, ys, label=kind, linewidth=1.2)
        for fault in result['faults']:
            axis.axvline(fault['t_s'] / 60.0, color=colours.get(fault['kind'], 'grey'),
                         alpha=0.35, linewidth=0.8)
        axis.axvspan(window[0] / 60.0, window[1] / 60.0, color='tab:green', alpha=0.06)
        axis.set_ylabel(titles[metric])
        axis.grid(alpha=0.3)
        axis.legend(loc='center left', bbox_to_anchor=(1.0, 0.5), fontsize=8)
        axis.set_ylim(bottom=0)
    axes[-1].set_xlabel('minutes. Vertical lines: faults (red kill_camera, orange '
                        'restart_server, purple stall_server, black kill_detector); green: '
                        'the analysed window', fontsize=9)
    fig.suptitle(f'soak: {result["config"]["cameras"]} cameras, '
                 f'{result["elapsed_s"] / 60:.1f} min, {len(result["faults"])} faults\n'
                 + '\n'.join(textwrap.wrap(result['verdict'], 110)), fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return None


def write_markdown(path: Path, result: Dict[str, Any]) -> None:
    cfg = result['config']
    lines = [f'# Soak: {cfg["cameras"]} cameras, {result["elapsed_s"] / 60:.1f} min, '
             f'faults every {cfg["fault_period_s"]:g} s', '',
             f'{result["started_utc"]}; host {result["host"]["cpus"]} CPU cores; '
             f'git {result["host"]["git"]}; model {cfg["model"]}; streams '
             f'{cfg["width"]}x{cfg["height"]} at {cfg["fps"]} fps; sample every '
             f'{cfg["sample_period_s"]:g} s.', '',
             f'Command: `{result["command"]}`', '',
             f'**{result["verdict"]}**', '']
    if result.get('interrupted'):
        lines += ['Interrupted (Ctrl-C): these are the figures up to then.', '']
    if result.get('problems'):
        lines += ['Problems:'] + [f'- {p}' for p in result['problems']] + ['']
    faults = result['faults']
    by_kind = collections.Counter(f['kind'] for f in faults)
    recovered = [f['recovered_s'] for f in faults if f.get('recovered_s') is not None]
    lines += ['## Faults', '', '| fault | count | recovered | recovery p50 s | max s |',
              '|---|---:|---:|---:|---:|']
    for kind in FAULTS:
        if by_kind.get(kind):
            times = sorted(f['recovered_s'] for f in faults
                           if f['kind'] == kind and f.get('recovered_s') is not None)
            p50 = f'{times[len(times) // 2]:.1f}' if times else '-'
            top = f'{times[-1]:.1f}' if times else '-'
            lines.append(f'| {kind} | {by_kind[kind]} | {len(times)} | {p50} | {top} |')
    lines += ['', f'{len(recovered)} of {len(faults)} faults recovered before the next one.', '']
    analysis = result['analysis']
    window = analysis.get('window_s', [0, 0])
    lines += ['## Growth per hour', '',
              f'Window {window[0] / 60:.1f}-{window[1] / 60:.1f} min (the second half), '
              'each (re)started process left out for its first '
              f'{analysis.get("restart_warmup_s", 0):g} s, every fault from its start until '
              f'{analysis.get("fault_settle_s", 0):g} s after its recovery left out; only '
              'process instances that live at least '
              f'{analysis.get("min_instance_s", 0) / 60:g} min of the window are fitted '
              '(short-lived: none does, so only its level is shown); '
              'slope with one intercept per process instance, ± its standard error. A metric '
              f'grows when its slope is above {SIGMAS:g} standard errors and above the floor '
              '(RSS: 4 MiB/h or 2 % of its mean per hour; threads 1/h; fds 2/h; shared memory '
              '1 MiB/h), and adds up to at least one unit (1 MiB, 1 thread, 1 fd) within the '
              'window.',
              '', '| kind | metric | mean | growth / h | ± | floor / h | change in window '
              '| verdict | samples | instances |',
              '|---|---|---:|---:|---:|---:|---:|---|---:|---:|']
    for kind in kind_order(list(analysis.get('kinds', {}))):
        for metric, fit in analysis['kinds'][kind].items():
            if fit['verdict'] == 'short-lived':
                lines.append(f'| {kind} | {metric} | {fit["mean"]:.1f} | - | - | - | - | '
                             f'short-lived (peak {fit["peak"]:.1f}) | {fit["samples"]} | '
                             f'{fit["instances"]} |')
                continue
            lines.append(f'| {kind} | {metric} | {fit["mean"]:.1f} | {fit["slope_per_h"]:+.2f} | '
                         f'{fit["stderr_per_h"]:.2f} | {fit["floor_per_h"]:.2f} | '
                         f'{fit.get("change_in_window", 0.0):+.2f} | '
                         f'{fit["verdict"]} | {fit["samples"]} | {fit["instances"]} |')
    last = result['samples'][-1] if result['samples'] else None
    if last is not None:
        lines += ['', '## Last sample', '', '| kind | pid | RSS MiB | anon MiB | threads | fds |',
                  '|---|---:|---:|---:|---:|---:|']
        for kind in kind_order(list(last['kinds'])):
            info = last['kinds'][kind]
            lines.append(f'| {kind} | {info["pid"]} | {info["rss_mib"]:.1f} | '
                         f'{info["anon_mib"]:.1f} | {info["threads"]} | {info["fds"]} |')
        shm = last['shm']
        lines += ['', f'Shared memory of the run: {shm["segments"]} segments, '
                  f'{shm["shm_mib"]:.2f} MiB allocated; /dev/shm as a whole (every user of the '
                  f'machine): {shm["dev_shm_used_mib"]:.1f} MiB in {shm["dev_shm_files"]} files.']
    lines += ['', f'Restarts seen (new pids): {result["restarts"]}.', '',
              f'Left at the end: {result["left_at_end"]}.', '']
    path.write_text('\n'.join(lines))


def git_revision() -> str:
    try:
        return subprocess.run(['git', '-C', str(REPO), 'rev-parse', '--short', 'HEAD'],
                              capture_output=True, text=True, timeout=10).stdout.strip() or '?'
    except (OSError, subprocess.TimeoutExpired):
        return '?'


# -- the soak -----------------------------------------------------------------------------------


class Soak:
    def __init__(self, args: argparse.Namespace) -> None:
        self.git = git_revision()  # the code that runs, not what the tree holds at the end
        self.args = args
        self.mark = f'{os.getpid()}-{uuid.uuid4().hex[:8]}'
        self.domain_id = args.domain_id or free_domain_id()
        self.cameras = [f'cam{i}' for i in range(args.cameras)]
        self.stop_signal: Optional[int] = None
        self.samples: List[Dict[str, Any]] = []
        self.faults: List[Dict[str, Any]] = []
        self.problems: List[str] = []
        self.pids_seen: Dict[str, List[int]] = collections.defaultdict(list)
        self.workdir = Path(tempfile.mkdtemp(prefix='multicam-soak-'))
        self.tmp_dir = self.workdir / 'tmp'
        self.tmp_dir.mkdir()
        self.streams: Optional[TestStreams] = None
        self.launcher: Optional[Child] = None
        self.probe: Optional[DiagnosticsProbe] = None
        self.model = args.model
        self.started_s = 0.0
        self.started_utc = ''
        self.left_at_end: Dict[str, Any] = {}
        self._last_cpu: Dict[Tuple[str, int], Tuple[float, float]] = {}

    # -- set-up ---------------------------------------------------------------------------
    def environment(self) -> Dict[str, str]:
        env = dict(os.environ)
        env.update({'ROS_DOMAIN_ID': str(self.domain_id), 'ROS_LOCALHOST_ONLY': '1',
                    'ROS_AUTOMATIC_DISCOVERY_RANGE': 'LOCALHOST', 'PYTHONUNBUFFERED': '1',
                    RUN_MARK_VAR: self.mark, 'TMPDIR': str(self.tmp_dir)})
        return env

    def start(self) -> None:
        args = self.args
        env = self.environment()
        for name in ('ROS_LOCALHOST_ONLY', 'ROS_AUTOMATIC_DISCOVERY_RANGE'):
            os.environ[name] = env[name]
        if self.model == 'auto':
            self.model = 'nanodet' if default_model_ready() else 'test'
        model_path = None
        if self.model == 'test':
            from multicam_testbed.models import save_center_box_model  # torch
            model_path = save_center_box_model(self.workdir / 'one_box.torchscript')
        self.streams = TestStreams(args.cameras, args.port or free_port(), args.width,
                                   args.height, args.fps, env, self.workdir / 'streams.log')
        say(f'RTSP test streams on port {self.streams.port}; ROS domain {self.domain_id}; '
            f'model {self.model}; run folder {self.workdir}')
        self.streams.start()
        config = self.workdir / 'cams.yaml'
        write_config(config, self.streams.urls(), self.model, model_path)
        self.probe = DiagnosticsProbe(self.domain_id, self.cameras)
        self.launcher = Child('launcher', console_script('multicam-ros') + [
            'launch', str(config), '--status-period', str(args.status_period)], env,
            self.workdir / 'launcher.log').start()
        self.started_utc = datetime.datetime.now(datetime.timezone.utc).replace(
            microsecond=0).isoformat()
        say(f'started multicam-ros launch (pid {self.launcher.pid}) with {args.cameras} '
            f'cameras; waiting for every camera to be processed')
        self.started_s = time.monotonic()

    # -- sampling -------------------------------------------------------------------------
    def sample(self, now_s: float) -> Dict[str, Any]:
        kinds: Dict[str, Dict[str, Any]] = {}
        assert self.launcher is not None
        pids = descendants(self.launcher.pid)
        for pid in pids:
            kind = 'launcher' if pid == self.launcher.pid else node_kind(pid)
            values = process_sample(pid)
            if values is None:
                continue
            if kind in kinds:  # two of a kind (e.g. 'other'): add them up
                for key in ('rss_mib', 'anon_mib', 'shmem_mib', 'threads', 'fds', 'cpu_s'):
                    kinds[kind][key] += values[key]
                continue
            kinds[kind] = {'pid': pid, **values}
            if pid not in self.pids_seen[kind]:
                self.pids_seen[kind].append(pid)
        if self.streams is not None and self.streams.child is not None \
                and self.streams.child.running:
            test_bed = [process_sample(p) for p in descendants(self.streams.child.pid)]
            test_bed = [v for v in test_bed if v is not None]
            if test_bed:
                kinds['testbed'] = {'pid': self.streams.child.pid, **{
                    key: sum(v[key] for v in test_bed) for key in test_bed[0]}}
        for kind, info in kinds.items():  # CPU use since the last sample of the same pid
            last = self._last_cpu.get((kind, info['pid']))
            info['cpu_pct'] = (100.0 * (info['cpu_s'] - last[1]) / (now_s - last[0])
                               if last and now_s > last[0] else None)
            self._last_cpu[(kind, info['pid'])] = (now_s, info['cpu_s'])
        shm = shm_of_domain(self.domain_id)
        streaming = self.probe.streaming() if self.probe else []
        sample = {'t_s': round(now_s - self.started_s, 2), 'kinds': kinds,
                  'shm': {k: v for k, v in shm.items() if k != 'names'},
                  'streaming': len(streaming),
                  'processed': self.probe.processed() if self.probe else {}}
        self.samples.append(sample)
        return sample

    def progress(self, sample: Dict[str, Any]) -> None:
        kinds = sample['kinds']
        system = [k for k in kinds if k != 'testbed']
        rss = sum(kinds[k]['rss_mib'] for k in system)
        threads = sum(kinds[k]['threads'] for k in system)
        fds = sum(kinds[k]['fds'] for k in system)
        counts = collections.Counter(f['kind'] for f in self.faults)
        recovered = sum(1 for f in self.faults if f.get('recovered_s') is not None)
        parts = ', '.join(f'{k} {kinds[k]["rss_mib"]:.0f}' for k in kind_order(system))
        processed = sum(sample['processed'].values())
        say(f'{hms(sample["t_s"])} / {hms(self.args.duration)}  faults {len(self.faults)} '
            f'({", ".join(f"{k} {v}" for k, v in counts.items()) or "none yet"}; '
            f'{recovered} recovered)  cameras streaming {sample["streaming"]}/'
            f'{len(self.cameras)}  processed {processed}  RSS {rss:.0f} MiB ({parts})  '
            f'threads {threads}  fds {fds}  shm {sample["shm"]["segments"]} segments '
            f'{sample["shm"]["shm_mib"]:.1f} MiB')

    # -- faults ---------------------------------------------------------------------------
    def rotation(self) -> List[str]:
        names = ['kill_camera', 'restart_server', 'stall_server']
        return names + (['kill_detector'] if self.args.kill_detector else [])

    def current_pid(self, kind: str) -> Optional[int]:
        assert self.launcher is not None
        for pid in descendants(self.launcher.pid):
            if pid != self.launcher.pid and node_kind(pid) == kind:
                return pid
        return None

    def inject(self, index: int, now_s: float) -> Dict[str, Any]:
        kind = self.rotation()[index % len(self.rotation())]
        fault: Dict[str, Any] = {'t_s': round(now_s - self.started_s, 2), 'kind': kind,
                                 'target': None, 'recovered_s': None, '_fault_s': now_s,
                                 '_since_s': now_s, '_affected': list(self.cameras)}
        assert self.streams is not None
        if kind == 'kill_camera':
            camera = self.args.victim or \
                self.cameras[(index // len(self.rotation())) % len(self.cameras)]
            pid = self.current_pid(camera)
            fault['target'] = f'{camera} (pid {pid})'
            fault['_affected'] = [camera]
            if pid is not None:
                os.kill(pid, signal.SIGKILL)
        elif kind == 'restart_server':
            fault['target'] = 'test-streams'
            self.streams.stop()
            self.streams.start()
            fault['_since_s'] = time.monotonic()
        elif kind == 'stall_server':
            fault['target'] = f'rtsp_server.py (pid {self.streams.server_pid()})'
            if not self.streams.pause():
                self.problems.append(f'{hms(now_s - self.started_s)} stall_server: no server '
                                     'process to stop')
        elif kind == 'kill_detector':
            pid = self.current_pid('detector')
            fault['target'] = f'detector (pid {pid})'
            fault['_affected'] = []
            if pid is not None:
                os.kill(pid, signal.SIGKILL)
        say(f'{hms(now_s - self.started_s)} fault {len(self.faults) + 1}: {kind} '
            f'{fault["target"] or ""}')
        return fault

    # -- main loop ------------------------------------------------------------------------
    def _on_signal(self, signum: int, _frame) -> None:
        if self.stop_signal is None:
            self.stop_signal = signum
            print(flush=True)
            say(f'{signal.Signals(signum).name}: stopping (a second one is not needed)')

    def run(self) -> int:
        previous = {sig: signal.signal(sig, self._on_signal)
                    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
        code = 0
        try:
            self.start()
            code = self.loop()
        except Exception as exc:  # noqa: BLE001 - say it, then clean up as always
            self.problems.append(f'soak failed: {type(exc).__name__}: {exc}')
            say(self.problems[-1])
            code = 1
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            # Another Ctrl-C during the clean-up must not cut it short.
            ignored = {sig: signal.signal(sig, signal.SIG_IGN) for sig in previous}
            try:
                if self.cleanup() and code == 0:
                    code = 1
                self.write_results()
            finally:
                for sig, handler in ignored.items():
                    signal.signal(sig, handler)
        if self.stop_signal is not None and code == 0:
            code = 130
        say(f'exit code {code}')
        return code

    def loop(self) -> int:
        args = self.args
        assert self.launcher is not None and self.probe is not None
        end_s = self.started_s + args.duration
        next_sample_s = self.started_s
        next_progress_s = self.started_s + args.progress_period
        next_fault_s = math.inf
        up = False
        fault_index = 0
        resume_at_s: Optional[float] = None
        pending: Optional[Dict[str, Any]] = None  # the last fault, until it has recovered
        while self.stop_signal is None:
            now_s = time.monotonic()
            if now_s >= end_s:
                break
            if not self.launcher.running:
                self.problems.append(f'{hms(now_s - self.started_s)} multicam-ros launch exited '
                                     f'by itself (code {self.launcher.proc.returncode}); its '
                                     'last output:\n' + '\n'.join(list(self.launcher.tail)[-25:]))
                say(self.problems[-1])
                return 1
            if not up:  # up: the detector processes frames of every camera
                if self.probe.recovered_at(self.started_s, self.started_s, []) is not None:
                    up = True
                    next_fault_s = now_s + min(args.fault_period, max(10.0, args.duration / 10))
                    say(f'{hms(now_s - self.started_s)} every camera is streaming and '
                        f'processed; first fault at {hms(next_fault_s - self.started_s)}')
                elif now_s - self.started_s > args.start_timeout:
                    self.problems.append(f'the system did not come up within '
                                         f'{args.start_timeout:g} s')
                    say(self.problems[-1] + ':\n' + '\n'.join(list(self.launcher.tail)[-25:]))
                    return 1
            if resume_at_s is not None and now_s >= resume_at_s:
                assert self.streams is not None and pending is not None
                self.streams.resume()
                resume_at_s = None
                pending['_since_s'] = time.monotonic()
            if pending is not None and resume_at_s is None:
                done_s = self.probe.recovered_at(pending['_fault_s'], pending['_since_s'],
                                                 pending['_affected'])
                if done_s is not None:
                    pending['recovered_s'] = round(done_s - pending['_since_s'], 2)
                    say(f'{hms(now_s - self.started_s)}   recovered in '
                        f'{pending["recovered_s"]:.1f} s')
                    pending = None
            if now_s >= next_fault_s and end_s - now_s < min(args.fault_period, 30.0):
                next_fault_s = math.inf  # too close to the end to see it recover
            if now_s >= next_fault_s and resume_at_s is None:
                if pending is not None:
                    self.problems.append(f'{pending["kind"]} at {hms(pending["t_s"])} not '
                                         f'recovered within the fault period')
                    say(self.problems[-1])
                fault = self.inject(fault_index, now_s)
                fault_index += 1
                self.faults.append(fault)
                pending = fault
                if fault['kind'] == 'stall_server':
                    resume_at_s = time.monotonic() + STALL_S
                next_fault_s += args.fault_period
                while next_fault_s <= time.monotonic():
                    next_fault_s += args.fault_period
            if now_s >= next_sample_s:
                sample = self.sample(now_s)
                next_sample_s += args.sample_period
                if now_s >= next_progress_s:
                    self.progress(sample)
                    next_progress_s += args.progress_period
            time.sleep(0.1)
        if pending is not None and resume_at_s is None:
            # The run ended during the last fault's recovery: give it a little more time.
            deadline_s = time.monotonic() + 30.0
            while self.stop_signal is None and time.monotonic() < deadline_s:
                done_s = self.probe.recovered_at(pending['_fault_s'], pending['_since_s'],
                                                 pending['_affected'])
                if done_s is not None:
                    pending['recovered_s'] = round(done_s - pending['_since_s'], 2)
                    break
                time.sleep(0.2)
        return 0

    # -- the end --------------------------------------------------------------------------
    def cleanup(self) -> bool:
        """Stop everything; True if something had to be killed or was left."""
        trouble = False
        if self.streams is not None:
            self.streams.resume()  # a paused server must not hold the cameras' stop
        if self.launcher is not None:
            say('stopping multicam-ros launch (SIGINT: it stops every node)')
            code = self.launcher.stop(signal.SIGINT, grace_s=40.0)
            say(f'multicam-ros launch exited with code {code}')
        if self.probe is not None:
            self.probe.close()
        if self.streams is not None:
            self.streams.stop()
        left = [pid for pid in marked_pids(self.mark)]
        if left:
            trouble = True
            self.problems.append(f'processes left after the stop, killed: '
                                 f'{[(pid, " ".join(cmdline(pid))[:80]) for pid in left]}')
            say(self.problems[-1])
            for pid in left:
                try:
                    os.kill(pid, signal.SIGKILL)
                except OSError:
                    pass
            time.sleep(0.5)
        time.sleep(0.3)
        segments = shm_of_domain(self.domain_id)['names']
        tmp_left = sorted(p.name for p in self.tmp_dir.iterdir()
                          if not p.name.startswith('torchinductor_'))
        removed = remove_run_segments(self.domain_id, self.cameras) if segments else []
        self.left_at_end = {'processes': left, 'segments': segments, 'segments_removed': removed,
                            'tmp': tmp_left}
        if segments or tmp_left:
            trouble = True
            self.problems.append(f'left by the system: segments {segments}, temporary files '
                                 f'{tmp_left}')
            say(self.problems[-1])
        shutil.rmtree(self.workdir, ignore_errors=True)
        return trouble

    def write_results(self) -> None:
        args = self.args
        result = {
            'command': ' '.join([Path(sys.executable).name, *sys.argv]),
            'started_utc': self.started_utc,
            'host': {'cpus': os.cpu_count(), 'platform': platform.platform(),
                     'python': platform.python_version(), 'git': self.git},
            'config': {'duration_s': args.duration, 'cameras': args.cameras,
                       'fault_period_s': args.fault_period, 'kill_detector': args.kill_detector,
                       'victim': args.victim,
                       'model': self.model, 'width': args.width, 'height': args.height,
                       'fps': args.fps, 'sample_period_s': args.sample_period,
                       'domain_id': self.domain_id},
            'elapsed_s': self.samples[-1]['t_s'] if self.samples else 0.0,
            'interrupted': self.stop_signal is not None, 'problems': self.problems,
            'restarts': {k: len(v) - 1 for k, v in sorted(self.pids_seen.items())},
            'left_at_end': self.left_at_end,
            'faults': [{k: v for k, v in f.items() if not k.startswith('_')} for f in self.faults],
            'launcher_tail': list(self.launcher.tail)[-30:] if self.launcher else [],
            'samples': self.samples}
        finish(result, args.restart_warmup, Path(args.out))


def finish(result: Dict[str, Any], restart_warmup_s: float, out: Path) -> None:
    """Analyse the samples, set the verdict, write <out>.json, .png and .md."""
    samples = result['samples']
    elapsed_s = result['elapsed_s']
    kinds = kind_order({k for s in samples for k in s['kinds'] if k != 'testbed'})
    analysis = analyse(samples, kinds + ['shared_memory'], restart_warmup_s, elapsed_s,
                       result['faults'], result['config']['fault_period_s'])
    faults = result['faults']
    recovered = sum(1 for f in faults if f.get('recovered_s') is not None)
    short = (f' (indicative only: the analysed window is {elapsed_s / 2 / 60:.1f} min)'
             if elapsed_s < 2400 else '')
    if analysis['growing']:
        verdict = 'VERDICT: GROWS: ' + '; '.join(analysis['growing'])
    elif not analysis['kinds']:
        verdict = 'VERDICT: NONE: too few samples to judge'
    else:
        verdict = ('VERDICT: FLAT: no process kind grows in RSS, threads, fds or shared '
                   'memory beyond noise')
    problems = result.get('problems') or []
    verdict += (f'{short}; {recovered} of {len(faults)} faults recovered'
                + (f'; PROBLEMS: {len(problems)}' if problems else ''))
    result['analysis'] = analysis
    result['verdict'] = verdict
    ordered = {k: v for k, v in result.items() if k != 'samples'}
    ordered['samples'] = samples  # the long part last, for people reading the file
    out.parent.mkdir(parents=True, exist_ok=True)
    json_path = out.with_name(out.name + '.json')
    json_path.write_text(json.dumps(ordered, indent=1))
    note = write_plot(out.with_name(out.name + '.png'), result)
    write_markdown(out.with_name(out.name + '.md'), result)
    say(verdict)
    say(f'wrote {json_path}, .md' + (f' ({note})' if note else ', .png'))


def reanalyse(path: Path, restart_warmup_s: Optional[float], out: Optional[Path]) -> int:
    """Rewrite the analysis, verdict, plot and table of an earlier run's JSON."""
    result = json.loads(path.read_text())
    warmup_s = (restart_warmup_s if restart_warmup_s is not None
                else result.get('analysis', {}).get('restart_warmup_s', 60.0))
    finish(result, warmup_s, out or path.with_suffix(''))
    return 0


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description='Run the system under periodic faults and sample its resources '
                    '(bench/soak.py module docstring).')
    parser.add_argument('--duration', type=float, default=3600.0, metavar='S',
                        help='seconds to run (default 3600)')
    parser.add_argument('--cameras', type=int, default=3, help='number of cameras (default 3)')
    parser.add_argument('--fault-period', type=float, default=60.0, metavar='S',
                        help='seconds between faults (default 60)')
    parser.add_argument('--kill-detector', action='store_true',
                        help='also SIGKILL the detector in the rotation')
    parser.add_argument('--victim', metavar='CAMERA', default=None,
                        help='kill_camera always kills this camera (cam0..camN-1), so the '
                             'others live the whole run; default: the cameras in turn')
    parser.add_argument('--out', default=str(REPO / 'bench' / 'results' / 'soak'),
                        help='results path without suffix (default bench/results/soak)')
    parser.add_argument('--model', choices=('auto', 'nanodet', 'test'), default='auto',
                        help='auto: NanoDet-g if it is in the cache, else the test model')
    parser.add_argument('--sample-period', type=float, default=5.0, metavar='S')
    parser.add_argument('--progress-period', type=float, default=30.0, metavar='S')
    parser.add_argument('--restart-warmup', type=float, default=None, metavar='S',
                        help='leave a restarted process out of the fit for this long '
                             '(default 60)')
    parser.add_argument('--reanalyse', metavar='JSON', default=None,
                        help="run nothing: redo the analysis, plot and table of an earlier "
                             "run's JSON (written next to it, or to --out)")
    parser.add_argument('--status-period', type=float, default=30.0, metavar='S',
                        help="the launcher's status table period (its log)")
    parser.add_argument('--start-timeout', type=float, default=180.0, metavar='S')
    parser.add_argument('--width', type=int, default=640)
    parser.add_argument('--height', type=int, default=480)
    parser.add_argument('--fps', type=int, default=15)
    parser.add_argument('--port', type=int, default=0, help='RTSP port (default: a free one)')
    parser.add_argument('--domain-id', type=int, default=0,
                        help='ROS_DOMAIN_ID of the run (default: a free one of 101-200)')
    args = parser.parse_args(argv)
    args.out_given = args.out != parser.get_default('out')
    if args.reanalyse:
        return args
    if args.restart_warmup is None:
        args.restart_warmup = 60.0
    if args.cameras < 1 or args.duration <= 0 or args.fault_period <= STALL_S + 1:
        parser.error(f'need --cameras >= 1, --duration > 0 and --fault-period > {STALL_S + 1:g}')
    names = [f'cam{i}' for i in range(args.cameras)]
    if args.victim is not None and args.victim not in names:
        parser.error(f'--victim {args.victim!r}: expected one of {", ".join(names)}')
    return args


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    if args.reanalyse:
        return reanalyse(Path(args.reanalyse), args.restart_warmup,
                         Path(args.out) if args.out_given else None)
    return Soak(args).run()


if __name__ == '__main__':
    sys.exit(main())
