"""End-to-end benchmark: this package against the two designs it exists to beat, same run.

Three systems on the same looping H.264 clips and the same model, per number of cameras N:

- a) this package as users start it: `python -m multicam_ros.cli launch cams.yaml`, N
  camera_node processes reading the clips (`loop: true`) and one detector_node, once per frame
  path of `--paths` (subscription, shm, auto: the detector's `frame_path` parameter; a path the
  detector does not offer is skipped with a note, and the path each camera actually took is
  read back from /diagnostics). Results are read as a ROS user reads them: a probe subscribes
  to every `<cam>/detections` (latency = receive time - header.stamp, the capture stamp) and to
  /diagnostics (offered frames = the cameras' frames_captured, the detector's own figures).
- b) the problem statement's design, reproduced: ONE process, a capture thread per stream
  keeping only the newest frame, and a loop that calls `multiprocessing.dummy.Pool(8).map` over
  the streams with a new frame, each call running the shared model on ONE frame; results are
  appended to a deque per stream. (A frame already processed is not processed again, which only
  helps b.)
- c) one model per camera: N processes, each with its own capture thread and its own model.

b) and c) use the package's own ROS-free capture (core/capture.py CaptureWorker: OpenCV
VideoCapture, newest frame only, files paced at their fps, stamped with the wall clock as
camera_node stamps its headers) and load the model with multicam_ros.core.models.load_detector,
so all three run identical capture and back-end code; they differ in how frames reach the model.

Measured per system and N after a warm-up, over a window of `--seconds`: frames processed/s in
total and for the slowest camera, the fraction of offered (captured) frames processed, latency
from capture stamp to result (p50, p99), CPU cores used (utime+stime deltas of every process of
the system and its children, from /proc), host memory (RSS and PSS sums; PSS read after the
window), GPU memory of the system's processes (nvidia-smi --query-compute-apps, after the
window: `--samples-in-window` reads both during it too), and, once per call, the model-only
ceiling: the batched forward pass on frames already on the device at batch min(N,
max_batch_size) (and `infer` on host frames, upload and post-processing included).

Every run of a system gets its own ROS_DOMAIN_ID with ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST;
every process is stopped (process groups, then a sweep for processes carrying this run's
marker variable) before the next point, also on Ctrl-C; a process left by an earlier, killed
run of this bench is ended at start.

Results: <results-dir>/e2e_<sweep>.json (written after every point), .md (table) and .png
(processed fps, p99 latency, GPU memory or host memory, CPU cores against N, one line per
system). `--replot A.json [B.json ...]` merges result files (later points win) and rewrites
table and plot without running anything.

Examples:
  .venv/bin/python bench/e2e_bench.py --sweep cpu                  # N = 1, 2, 4, 8 at VGA
  .venv/bin/python bench/e2e_bench.py --sweep cpu --n 1,2 --seconds 15
  python3 bench/e2e_bench.py --sweep gpu --n 1,2,4,8,16            # N up to 64 at 720p
  python3 bench/e2e_bench.py --sweep gpu --replot first.json second.json
Clips: bench/device/make_kit.sh makes .clips/{720p,vga}/cam{0,1}.mp4; `--clip` takes others.
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
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Deque, Dict, Iterable, List, Optional, Sequence, Tuple

REPO = Path(__file__).resolve().parent.parent
PROFILING_DIR = REPO / 'bench' / 'profiling'  # its sitecustomize.py: --profile-detector,
# --jit-variant
if str(REPO) not in sys.path:  # run from a checkout without installing the package
    sys.path.insert(0, str(REPO))
from multicam_testbed.processes import cmdline, environ_value, other_pids, \
    stat_fields  # noqa: E402 - needs the path above
sys.path.append(str(PROFILING_DIR))
from jit_variants import VARIANTS as JIT_VARIANTS  # noqa: E402 - needs the path above

MARKER_ENV = 'MULTICAM_E2E_TOKEN'  # every process this bench starts carries it
PREFIX = 'E2E '  # protocol lines of the worker roles on stdout
MIB = 2 ** 20
CLOCK_TICKS = os.sysconf('SC_CLK_TCK')
PAGE_BYTES = os.sysconf('SC_PAGE_SIZE')
POOL_THREADS = 8
UP_GRACE_S = 8.0  # system a: wait this long after every node reports for all cameras' results

SYSTEMS: Dict[str, str] = {
    'a_sub': 'a) package, subscriptions',
    'a_shm': 'a) package, shared memory',
    'a_auto': 'a) package, frame_path auto',
    'b_pool': 'b) ThreadPool(8), one model',
    'c_each': 'c) one model per camera',
}
PATH_SYSTEMS = {'subscription': 'a_sub', 'shm': 'a_shm', 'auto': 'a_auto'}
A_SYSTEMS = tuple(PATH_SYSTEMS.values())
SYSTEM_STYLE = {'a_sub': ('tab:blue', 'o', '-'), 'a_shm': ('tab:green', 's', '-'),
                'a_auto': ('tab:cyan', 'D', '-'),
                'b_pool': ('tab:red', '^', '--'), 'c_each': ('tab:purple', 'v', '--')}


@dataclass(frozen=True)
class Sweep:
    """One named sweep: camera counts, resolution, clips and default timings."""

    name: str
    counts: Tuple[int, ...]
    size: str  # folder under .clips/
    seconds: float
    warmup_s: float
    device: str


SWEEPS = {
    'cpu': Sweep('cpu', (1, 2, 4, 8), 'vga', 20.0, 8.0, 'cpu'),
    'gpu': Sweep('gpu', (1, 2, 4, 8, 16, 32, 64), '720p', 30.0, 10.0, 'cuda'),
}


def say(text: str) -> None:
    """One progress line, with the time of day."""
    print(f'[e2e {time.strftime("%H:%M:%S")}] {text}', flush=True)


# -- worker roles (run in child processes: `e2e_bench.py --role NAME --role-config JSON`) ---------


def emit(kind: str, payload: Any = None) -> None:
    """A protocol line for the orchestrator."""
    sys.stdout.write(f'{PREFIX}{kind} {json.dumps(payload)}\n')
    sys.stdout.flush()


class Recorder:
    """Results per camera inside the measurement window: counts and capture->result latency."""

    def __init__(self, cameras: int) -> None:
        self._lock = threading.Lock()
        self._recording = False
        self._started_s = 0.0
        self.counts = [0] * cameras
        self.latencies_ms: List[float] = []

    def add(self, camera: int, stamp_ns: int, now_ns: int) -> None:
        """One result of `camera` for the frame captured at `stamp_ns` (wall clock)."""
        if not self._recording:
            return
        with self._lock:
            self.counts[camera] += 1
            self.latencies_ms.append((now_ns - stamp_ns) / 1e6)

    def start(self) -> None:
        with self._lock:
            self.counts = [0] * len(self.counts)
            self.latencies_ms = []
            self._started_s = time.monotonic()
            self._recording = True

    def stop(self) -> Dict[str, Any]:
        """The window's figures (raw latencies rounded to 0.1 ms, for pooled percentiles)."""
        with self._lock:
            self._recording = False
            return {'window_s': time.monotonic() - self._started_s,
                    'processed': list(self.counts),
                    'latencies_ms': [round(value, 1) for value in self.latencies_ms]}


def serve_commands(on_start: Callable[[], None],
                   on_stop: Callable[[], Dict[str, Any]]) -> None:
    """Obey `start` and `stop` lines on stdin; `stop` answers with a RESULT line."""
    for line in sys.stdin:
        command = line.strip()
        if command == 'start':
            on_start()
        elif command == 'stop':
            emit('RESULT', on_stop())
            return


def load_model(values: Dict[str, Any]) -> Any:
    """The Detector for flat model parameter values, exactly as detector_node loads it."""
    from multicam_ros.core.models import load_detector
    from multicam_ros.core.models.base import ModelConfig
    from multicam_ros.core.settings import build
    return load_detector(build(ModelConfig, values))


def start_capture(clip: str, name: str) -> Any:
    """The package's capture thread on a looping video file, stamped with the wall clock."""
    from multicam_ros.core.capture import CaptureOptions, CaptureWorker
    from multicam_ros.core.sources import validate_source
    return CaptureWorker(validate_source(clip), time.time_ns, CaptureOptions(loop=True),
                         name=name).start()


def read_frames(clip: str, count: int) -> List[Any]:
    """The first `count` frames of a clip (repeated if the clip is shorter)."""
    import cv2
    capture = cv2.VideoCapture(clip)
    frames = []
    while len(frames) < count:
        ok, image = capture.read()
        if not ok:
            if not frames:
                raise RuntimeError(f'cannot read frames from {clip}')
            break
        frames.append(image)
    capture.release()
    return [frames[index % len(frames)] for index in range(count)]


def wait_first_frames(workers: Sequence[Any], timeout_s: float = 60.0) -> None:
    """Until every capture has delivered a frame (or the timeout)."""
    deadline_s = time.monotonic() + timeout_s
    while time.monotonic() < deadline_s:
        if all(worker.snapshot().frames_captured > 0 for worker in workers):
            return
        time.sleep(0.05)


def role_pool(config: Dict[str, Any]) -> None:
    """System b: one process, capture threads, Pool(8).map, one model call per frame."""
    from multiprocessing.dummy import Pool

    clips: List[str] = config['clips']
    detector = load_model(config['model'])
    workers = [start_capture(clip, f'cam{index}') for index, clip in enumerate(clips)]
    recorder = Recorder(len(clips))
    results: List[Deque[Tuple[int, Any]]] = [collections.deque(maxlen=256) for _ in clips]
    pool = Pool(config.get('threads', POOL_THREADS))
    stop = threading.Event()

    def process(item: Tuple[int, Any]) -> None:
        index, frame = item
        detections = detector.infer([frame.image])[0]  # the shared model, one frame a call
        results[index].append((frame.stamp_ns, detections))
        recorder.add(index, frame.stamp_ns, time.time_ns())

    def loop() -> None:
        while not stop.is_set():
            batch = []
            for index, worker in enumerate(workers):
                frame = worker.slot.take(0)
                if frame is not None:
                    batch.append((index, frame))
            if not batch:
                time.sleep(0.002)
                continue
            pool.map(process, batch)

    wait_first_frames(workers)
    first = read_frames(clips[0], 1)[0]
    detector.infer([first])  # warm the model before the clock starts
    threading.Thread(target=loop, daemon=True, name='pool-loop').start()
    emit('READY', {'cameras': len(clips), 'device': detector.device,
                   'model': detector.description})
    captured: List[int] = []

    def on_start() -> None:
        captured[:] = [worker.snapshot().frames_captured for worker in workers]
        recorder.start()

    def on_stop() -> Dict[str, Any]:
        result = recorder.stop()
        result['offered'] = [worker.snapshot().frames_captured - before
                             for worker, before in zip(workers, captured)]
        return result

    serve_commands(on_start, on_stop)
    stop.set()
    for worker in workers:
        worker.stop(timeout_s=1.0)


def role_single(config: Dict[str, Any]) -> None:
    """System c: one camera, its own model, in its own process."""
    detector = load_model(config['model'])
    worker = start_capture(config['clip'], f'cam{config["camera"]}')
    recorder = Recorder(1)
    stop = threading.Event()

    def loop() -> None:
        while not stop.is_set():
            frame = worker.slot.take(0.5)
            if frame is None:
                continue
            detector.infer([frame.image])
            recorder.add(0, frame.stamp_ns, time.time_ns())

    wait_first_frames([worker])
    detector.infer(read_frames(config['clip'], 1))  # warm-up
    threading.Thread(target=loop, daemon=True, name='single-loop').start()
    emit('READY', {'cameras': 1, 'device': detector.device, 'model': detector.description})
    captured = [0]

    def on_start() -> None:
        captured[0] = worker.snapshot().frames_captured
        recorder.start()

    def on_stop() -> Dict[str, Any]:
        result = recorder.stop()
        result['offered'] = [worker.snapshot().frames_captured - captured[0]]
        return result

    serve_commands(on_start, on_stop)
    stop.set()
    worker.stop(timeout_s=1.0)


def _device_forward(detector: Any, frames: Sequence[Any]) -> Optional[Callable[[], Any]]:
    """A call running only the model's forward pass on `frames` already on the device.

    Back-end independent: one `infer` runs with the back-end's model attribute wrapped, which
    records the inputs the back-end built (uploaded, resized, normalised on the device) and
    whether autocast was on; the call replays the model on exactly those inputs. None when the
    back-end has no `model` attribute or never called it."""
    import torch
    model = getattr(detector, 'model', None)
    if model is None or not callable(model):
        return None
    captured: Dict[str, Any] = {}

    class _Spy:
        def __call__(self, *args: Any, **kwargs: Any) -> Any:
            captured['args'], captured['kwargs'] = args, kwargs
            try:
                captured['autocast'] = torch.is_autocast_enabled('cuda')
            except TypeError:  # older torch: no device argument
                captured['autocast'] = torch.is_autocast_enabled()
            return model(*args, **kwargs)

        def __getattr__(self, name: str) -> Any:
            return getattr(model, name)

    detector.model = _Spy()
    try:
        detector.infer(frames)
    finally:
        detector.model = model
    if 'args' not in captured:
        return None
    args, kwargs = captured['args'], captured['kwargs']
    autocast = bool(captured.get('autocast'))

    def forward() -> Any:
        with torch.inference_mode():
            if autocast:
                with torch.autocast('cuda', dtype=torch.float16):
                    return model(*args, **kwargs)
            return model(*args, **kwargs)
    return forward


def _rate(call: Callable[[], Any], batch: int, device: str, seconds: float) -> Dict[str, float]:
    """Images per second of `call` on a batch: 2 warm-up calls, then calls for `seconds`."""
    import torch

    def sync() -> None:
        if device.startswith('cuda'):
            torch.cuda.synchronize(device)
    for _ in range(2):
        call()
    sync()
    calls, started_s = 0, time.perf_counter()
    while True:
        call()
        calls += 1
        sync()
        elapsed_s = time.perf_counter() - started_s
        if (elapsed_s >= seconds and calls >= 3) or elapsed_s >= 4 * seconds:
            break
    return {'images_per_s': round(calls * batch / elapsed_s, 1),
            'ms_per_batch': round(1000 * elapsed_s / calls, 2), 'calls': calls}


def role_ceiling(config: Dict[str, Any]) -> None:
    """The model-only ceiling: the forward pass on device-resident frames, per batch size."""
    import torch
    detector = load_model(config['model'])
    out: Dict[str, Any] = {'device': detector.device, 'model': detector.description,
                           'batches': {}}
    if detector.device.startswith('cuda'):
        out['gpu'] = torch.cuda.get_device_name(detector.device)
    frames_all = read_frames(config['clip'], max(config['batches']))
    for batch in config['batches']:
        frames = frames_all[:batch]
        entry: Dict[str, Any] = {}
        try:
            forward = _device_forward(detector, frames)
            if forward is not None:
                entry['forward'] = _rate(forward, batch, detector.device, config['seconds'])
        except Exception as exc:  # noqa: BLE001 - a back-end without a plain forward
            entry['forward_error'] = f'{type(exc).__name__}: {exc}'[:300]
        entry['infer'] = _rate(lambda: detector.infer(frames), batch, detector.device,
                               config['seconds'])
        out['batches'][str(batch)] = entry
        forward_text = entry.get('forward', {}).get('images_per_s', '-')
        print(f'ceiling batch {batch}: forward {forward_text} images/s, infer '
              f'{entry["infer"]["images_per_s"]} images/s', flush=True)
    emit('RESULT', out)


def role_probe(config: Dict[str, Any]) -> None:
    """System a's measurement: every <cam>/detections (raw: only the header stamp is read)
    and /diagnostics, as any ROS user would receive them."""
    import rclpy
    from diagnostic_msgs.msg import DiagnosticArray
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from vision_msgs.msg import Detection2DArray

    cameras: List[str] = config['cameras']
    context = rclpy.Context()
    rclpy.init(args=[], context=context)
    node = rclpy.create_node('e2e_probe', context=context)
    recorder = Recorder(len(cameras))
    seen = [False] * len(cameras)
    lock = threading.Lock()
    camera_reports: Dict[str, List[Tuple[float, Dict[str, str]]]] = {c: [] for c in cameras}
    served_reports: Dict[str, List[Tuple[float, Dict[str, str]]]] = {c: [] for c in cameras}
    model_reports: List[Tuple[float, Dict[str, str]]] = []
    window = {'open': False, 'up': False}

    def on_detections(index: int, data: bytes) -> None:
        now_ns = time.time_ns()
        little = data[1] == 1  # CDR encapsulation: 0x0001 little endian, 0x0000 big endian
        sec = int.from_bytes(data[4:8], 'little' if little else 'big', signed=True)
        nanosec = int.from_bytes(data[8:12], 'little' if little else 'big')
        recorder.add(index, sec * 1_000_000_000 + nanosec, now_ns)
        if not seen[index]:
            seen[index] = True
            emit('SEEN', sum(seen))

    def on_diagnostics(msg: Any) -> None:
        now_s = time.monotonic()
        for status in msg.status:
            values = {kv.key: kv.value for kv in status.values}
            name = status.name
            with lock:
                if name.endswith('/camera_node: camera'):
                    camera = name[:-len('/camera_node: camera')]
                    if camera in camera_reports:
                        camera_reports[camera].append((now_s, values))
                elif name == '/detector: model':
                    model_reports.append((now_s, values))
                elif name.startswith('/detector: '):
                    camera = name[len('/detector: '):]
                    if camera in served_reports:
                        served_reports[camera].append((now_s, values))
                for reports in (camera_reports, served_reports):
                    for history in reports.values():
                        if len(history) > 4 and not window['open']:
                            del history[:-2]  # before the window only the newest matter
                up = bool(model_reports) and all(camera_reports.values()) and any(seen)
                if up and not window['up']:
                    window['up'] = True
                    emit('UP', sum(seen))  # every node reports, results are flowing

    qos = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
    for index, camera in enumerate(cameras):
        node.create_subscription(Detection2DArray, f'{camera}/detections',
                                 lambda data, index=index: on_detections(index, data), qos,
                                 raw=True)
    node.create_subscription(DiagnosticArray, '/diagnostics', on_diagnostics, 100)
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(node)
    threading.Thread(target=executor.spin, daemon=True, name='probe-spin').start()
    emit('READY', {'cameras': len(cameras)})
    marks: Dict[str, float] = {}

    def on_start() -> None:
        with lock:
            window['open'] = True
            marks['start'] = time.monotonic()
        recorder.start()

    def on_stop() -> Dict[str, Any]:
        result = recorder.stop()
        end_s = time.monotonic()
        with lock:
            result.update(_probe_summary(cameras, camera_reports, served_reports,
                                         model_reports, marks['start'], end_s,
                                         result['window_s']))
        return result

    serve_commands(on_start, on_stop)
    try:
        executor.shutdown(timeout_sec=1.0)
        node.destroy_node()
        context.try_shutdown()
    except Exception:  # noqa: BLE001 - leaving anyway
        pass


def _counter_rate(history: List[Tuple[float, Dict[str, str]]], key: str, start_s: float,
                  end_s: float) -> Optional[float]:
    """Rate of an integer counter over the reports nearest the window's ends."""
    inside = [(t, v) for t, v in history if start_s - 1.5 <= t <= end_s + 0.5 and key in v]
    if len(inside) < 2 or inside[-1][0] <= inside[0][0]:
        return None
    try:
        delta = int(inside[-1][1][key]) - int(inside[0][1][key])
    except ValueError:
        return None
    return delta / (inside[-1][0] - inside[0][0])


def _probe_summary(cameras: List[str], camera_reports: Dict[str, list],
                   served_reports: Dict[str, list], model_reports: list, start_s: float,
                   end_s: float, window_s: float) -> Dict[str, Any]:
    """Offered frames per camera (camera_node's frames_captured) and the detector's figures."""
    offered: List[Optional[float]] = []
    for camera in cameras:
        rate = _counter_rate(camera_reports[camera], 'frames_captured', start_s, end_s)
        offered.append(None if rate is None else rate * window_s)
    detector_rates = [_counter_rate(served_reports[c], 'frames_processed', start_s, end_s)
                      for c in cameras]
    dropped = [_counter_rate(served_reports[c], 'frames_dropped', start_s, end_s)
               for c in cameras]
    paths: Dict[str, int] = collections.Counter()
    for camera in cameras:
        if served_reports[camera]:
            values = served_reports[camera][-1][1]
            for key, value in values.items():
                if 'path' in key or 'transport' in key:
                    paths[f'{key}={value}'] += 1
    return {
        'offered': offered,
        'detector_processed_fps': None if None in detector_rates
        else round(sum(detector_rates), 1),
        'detector_dropped_fps': None if None in dropped else round(sum(dropped), 1),
        'detector_model': model_reports[-1][1] if model_reports else None,
        'detector_camera0': served_reports[cameras[0]][-1][1]
        if served_reports[cameras[0]] else None,
        'camera0': camera_reports[cameras[0]][-1][1] if camera_reports[cameras[0]] else None,
        'frame_paths': dict(paths),
    }


ROLES: Dict[str, Callable[[Dict[str, Any]], None]] = {
    'pool': role_pool, 'single': role_single, 'ceiling': role_ceiling, 'probe': role_probe}


def run_role(name: str, config_text: str) -> int:
    """Entry of a worker process; ends with os._exit (capture threads may sit in OpenCV)."""
    code = 0
    try:
        ROLES[name](json.loads(config_text))
    except Exception as exc:  # noqa: BLE001 - report it on the protocol, then exit non-zero
        import traceback
        traceback.print_exc()
        emit('ERROR', f'{type(exc).__name__}: {exc}'[:2000])
        code = 1
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


# -- processes ------------------------------------------------------------------------------------


_LIBC = ctypes.CDLL(None, use_errno=True)
_PR_SET_PDEATHSIG = 1


def _child_setup() -> None:
    """In the child before exec: its own process group; SIGTERM when the bench dies."""
    os.setpgid(0, 0)
    _LIBC.prctl(_PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0)


class Child:
    """A process of this bench: its own process group, output to a log, protocol lines kept."""

    def __init__(self, command: List[str], env: Dict[str, str], log_path: Path,
                 label: str) -> None:
        self.label = label
        self.log_path = log_path
        self._log = log_path.open('w', encoding='utf-8', errors='replace')
        self.proc = subprocess.Popen(command, env=env, stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     preexec_fn=_child_setup, cwd=str(REPO))
        self.ready: Optional[Dict[str, Any]] = None
        self.seen = 0
        self.up_s: Optional[float] = None  # when the probe saw every node up
        self.result: Optional[Dict[str, Any]] = None
        self.error: Optional[str] = None
        self.tail: Deque[str] = collections.deque(maxlen=40)
        self._event = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True, name=f'read-{label}')
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for raw in iter(self.proc.stdout.readline, b''):
            text = raw.decode('utf-8', errors='replace').rstrip('\n')
            if text.startswith(PREFIX):
                kind, _, payload = text[len(PREFIX):].partition(' ')
                try:
                    value = json.loads(payload) if payload else None
                except ValueError:
                    value = payload
                with self._event:
                    if kind == 'READY':
                        self.ready = value if isinstance(value, dict) else {}
                    elif kind == 'SEEN':
                        self.seen = int(value)
                    elif kind == 'UP':
                        self.up_s = time.monotonic()
                    elif kind == 'RESULT':
                        self.result = value
                    elif kind == 'ERROR':
                        self.error = str(value)
                    self._event.notify_all()
                if kind == 'RESULT':
                    continue  # can be large; keep it out of the log
            self.tail.append(text)
            try:
                self._log.write(text + '\n')
                self._log.flush()
            except ValueError:
                pass
        with self._event:
            self._event.notify_all()

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def alive(self) -> bool:
        return self.proc.poll() is None

    def send(self, line: str) -> None:
        """A command line on the child's stdin (ignored once it is gone)."""
        try:
            assert self.proc.stdin is not None
            self.proc.stdin.write((line + '\n').encode())
            self.proc.stdin.flush()
        except (BrokenPipeError, OSError, ValueError):
            pass

    def wait_result(self, timeout_s: float) -> Optional[Dict[str, Any]]:
        """The RESULT payload, waiting up to `timeout_s` (None if it died or timed out)."""
        deadline_s = time.monotonic() + timeout_s
        with self._event:
            while self.result is None and self.error is None and self.alive:
                remaining_s = deadline_s - time.monotonic()
                if remaining_s <= 0:
                    break
                self._event.wait(min(remaining_s, 0.5))
        return self.result

    def signal_group(self, sig: int) -> None:
        try:
            os.killpg(self.proc.pid, sig)
        except (ProcessLookupError, PermissionError):
            pass

    def stop(self, first: Optional[int] = signal.SIGTERM, grace_s: float = 5.0) -> None:
        """`first` to the process group (None: already sent), SIGKILL after `grace_s`, then
        reap."""
        if self.alive:
            if first is not None:
                self.signal_group(first)
            try:
                self.proc.wait(timeout=grace_s)
            except subprocess.TimeoutExpired:
                pass
        self.signal_group(signal.SIGKILL)  # also whatever it started in its group
        try:
            self.proc.wait(timeout=5.0)
        except subprocess.TimeoutExpired:
            pass
        self._reader.join(timeout=2.0)
        self._log.close()

    def last_lines(self, count: int = 12) -> List[str]:
        return list(self.tail)[-count:]


def marked_pids(token: Optional[str] = None, orphans: bool = False) -> List[int]:
    """Processes carrying this bench's marker variable: of run `token`, or with `orphans`
    those of runs whose bench process is gone (the token starts with its pid)."""
    found = []
    for pid in other_pids():
        value = environ_value(pid, MARKER_ENV)
        if value is not None and ((token is not None and value == token)
                                  or (orphans and not _bench_alive(value))):
            found.append(pid)
    return found


def _bench_alive(token: str) -> bool:
    """Whether the bench process that made `token` (`<pid>-<time>`) still runs."""
    pid_text = token.partition('-')[0]
    if not pid_text.isdigit():
        return False
    return any('e2e_bench' in arg for arg in cmdline(int(pid_text)))


def kill_marked(token: Optional[str] = None, why: str = '', orphans: bool = False) -> int:
    """SIGKILL the processes `marked_pids` finds; returns how many. These are processes this
    bench started (nodes outlive a launcher that was killed)."""
    pids = marked_pids(token, orphans)
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
    if pids and why:
        say(f'{why}: ended {len(pids)} leftover process(es) {pids[:8]}')
    return len(pids)


# -- measuring processes from outside -------------------------------------------------------------


def process_tree(roots: Iterable[int]) -> List[int]:
    """`roots` and all their descendants that are alive now."""
    children: Dict[int, List[int]] = collections.defaultdict(list)
    for entry in os.listdir('/proc'):
        if entry.isdigit():
            fields = stat_fields(int(entry))
            if fields is not None:
                children[int(fields[1])].append(int(entry))
    found, stack = [], [root for root in roots if Path(f'/proc/{root}').exists()]
    while stack:
        pid = stack.pop()
        if pid in found:
            continue
        found.append(pid)
        stack.extend(children.get(pid, ()))
    return found


def cpu_ticks(pids: Iterable[int]) -> int:
    """utime + stime + cutime + cstime summed (reaped children stay counted in parents)."""
    total = 0
    for pid in pids:
        fields = stat_fields(pid)
        if fields is not None:
            total += sum(int(value) for value in fields[11:15])
    return total


def rss_bytes(pids: Iterable[int]) -> int:
    total = 0
    for pid in pids:
        fields = stat_fields(pid)
        if fields is not None:
            total += int(fields[21]) * PAGE_BYTES
    return total


def pss_bytes(pids: Iterable[int]) -> Optional[int]:
    """Proportional set size summed (shared libraries counted once), None if unreadable."""
    total, any_read = 0, False
    for pid in pids:
        try:
            text = Path(f'/proc/{pid}/smaps_rollup').read_text()
        except OSError:
            continue
        match = re.search(r'^Pss:\s+(\d+) kB', text, re.MULTILINE)
        if match:
            total += int(match.group(1)) * 1024
            any_read = True
    return total if any_read else None


def gpu_apps() -> Optional[Dict[int, float]]:
    """pid -> MiB of GPU memory, from nvidia-smi; None without nvidia-smi."""
    if shutil.which('nvidia-smi') is None:
        return None
    try:
        text = subprocess.run(['nvidia-smi', '--query-compute-apps=pid,used_memory',
                               '--format=csv,noheader,nounits'], capture_output=True,
                              text=True, timeout=10).stdout
    except (OSError, subprocess.TimeoutExpired):
        return None
    apps: Dict[int, float] = {}
    for line in text.splitlines():
        parts = [part.strip() for part in line.split(',')]
        if len(parts) == 2 and parts[0].isdigit():
            try:
                apps[int(parts[0])] = apps.get(int(parts[0]), 0.0) + float(parts[1])
            except ValueError:
                continue
    return apps


def gpu_used_mib() -> Optional[float]:
    """Memory in use on GPU 0 as nvidia-smi reports it."""
    if shutil.which('nvidia-smi') is None:
        return None
    try:
        text = subprocess.run(['nvidia-smi', '--query-gpu=memory.used',
                               '--format=csv,noheader,nounits'], capture_output=True,
                              text=True, timeout=10).stdout
        return float(text.split()[0])
    except (OSError, subprocess.TimeoutExpired, ValueError, IndexError):
        return None


class Sampler:
    """CPU, host memory and GPU memory of a set of process trees over the window.

    During the window only the cheap figures are read (process list, RSS from /proc/PID/stat,
    every `period_s`); PSS (/proc/PID/smaps_rollup) and GPU memory (nvidia-smi) just before it
    and again after it where the processes still run (the largest counts), unless
    `heavy_in_window`: reading a CUDA process's smaps walks its whole address space under that
    process's memory-map lock, and nvidia-smi talks to the driver the model uses, so either
    could stall what is measured."""

    def __init__(self, period_s: float = 1.0, heavy_in_window: bool = False) -> None:
        self.period_s = period_s
        self.heavy_in_window = heavy_in_window
        self._roots: List[int] = []
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None
        self._rss: List[int] = []
        self._pss: List[int] = []
        self._gpu_apps: List[float] = []
        self._gpu_used: List[float] = []
        self._gpu_matched = True
        self._ticks0 = 0
        self._t0 = 0.0
        self._procs: List[int] = []
        self.gpu_baseline_mib = gpu_used_mib()

    def begin(self, roots: List[int]) -> None:
        """Before the window opens (the heavy figures first, so that they are read before)."""
        self._roots = roots
        tree = process_tree(roots)
        self._heavy(tree, pss=True, gpu=True)
        self._ticks0 = cpu_ticks(tree)
        self._t0 = time.monotonic()
        self._thread = threading.Thread(target=self._run, daemon=True, name='sampler')
        self._thread.start()

    def _run(self) -> None:
        rounds = 0
        while not self._stop.is_set():
            tree = process_tree(self._roots)
            self._procs.append(len(tree))
            self._rss.append(rss_bytes(tree))
            if self.heavy_in_window:
                self._heavy(tree, pss=rounds % 5 == 0, gpu=rounds % 2 == 0)
            rounds += 1
            self._stop.wait(self.period_s)

    def _heavy(self, tree: List[int], pss: bool, gpu: bool) -> None:
        if pss:
            total = pss_bytes(tree)
            if total is not None:
                self._pss.append(total)
        if gpu:
            apps = gpu_apps()
            if apps is not None:
                mine = [mib for pid, mib in apps.items() if pid in tree]
                if mine or not apps:
                    self._gpu_apps.append(sum(mine))
                else:  # pids from another namespace: take every app on the GPU
                    self._gpu_matched = False
                    self._gpu_apps.append(sum(apps.values()))
            used = gpu_used_mib()
            if used is not None:
                self._gpu_used.append(used)

    def end(self) -> Dict[str, Any]:
        ticks1 = cpu_ticks(process_tree(self._roots))
        elapsed_s = time.monotonic() - self._t0
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=15)
        tree = process_tree(self._roots)
        if tree:  # system a still runs after its probes stopped; b and c end with theirs
            self._heavy(tree, pss=True, gpu=True)
        out: Dict[str, Any] = {
            'cpu_cores': round((ticks1 - self._ticks0) / CLOCK_TICKS / elapsed_s, 2)
            if elapsed_s > 0 else None,
            'processes': max(self._procs) if self._procs else None,
            'rss_mb': round(max(self._rss) / MIB) if self._rss else None,
            'pss_mb': round(max(self._pss) / MIB) if self._pss else None,
            'gpu_mem_mb': round(max(self._gpu_apps)) if self._gpu_apps else None,
            'gpu_mem_source': None,
        }
        if self._gpu_apps:
            out['gpu_mem_source'] = 'nvidia-smi compute apps of the system' if \
                self._gpu_matched else 'nvidia-smi compute apps (all: pids not matched)'
        if self._gpu_used and self.gpu_baseline_mib is not None:
            out['gpu_used_delta_mb'] = round(max(self._gpu_used) - self.gpu_baseline_mib)
        return out


# -- the systems ----------------------------------------------------------------------------------


@dataclass
class Plan:
    """Everything one call runs."""

    sweep: Sweep
    counts: Tuple[int, ...]
    systems: Tuple[str, ...]
    seconds: float
    warmup_s: float
    clips: Tuple[str, ...]
    model: Dict[str, Any]  # flat detector/model parameter values (model.*, device, ...)
    max_batch_size: int
    detector_params: Dict[str, Any]
    camera_params: Dict[str, Any]
    frame_path: Dict[str, Optional[str]]  # system -> value of the detector's frame_path
    max_n: Dict[str, int]
    ready_timeout_s: float
    deadline_s: float
    results_dir: Path
    workdir: Path
    token: str
    notes: List[str] = field(default_factory=list)
    domain_counter: int = 0
    profile_s: float = 0.0  # --profile-detector
    samples_in_window: bool = False  # --samples-in-window
    jit_variant: str = 'default'  # --jit-variant
    clip_fps: float = 30.0

    def clip(self, camera: int) -> str:
        return self.clips[camera % len(self.clips)]

    def next_domain(self) -> int:
        """A ROS domain id for one run: 100..199, starting where the pid points."""
        self.domain_counter += 1
        return 100 + (os.getpid() + self.domain_counter) % 100


def child_env(plan: Plan, domain: int) -> Dict[str, str]:
    """The environment of every process of one run."""
    env = dict(os.environ)
    env['PYTHONPATH'] = os.pathsep.join(
        [str(REPO)] + [p for p in env.get('PYTHONPATH', '').split(os.pathsep) if p])
    env['PYTHONUNBUFFERED'] = '1'
    env['ROS_DOMAIN_ID'] = str(domain)
    env['ROS_AUTOMATIC_DISCOVERY_RANGE'] = 'LOCALHOST'
    env.pop('ROS_LOCALHOST_ONLY', None)
    env[MARKER_ENV] = plan.token
    if plan.profile_s:
        env['MULTICAM_E2E_PROFILE'] = '1'
    if plan.jit_variant != 'default':
        env['MULTICAM_E2E_JIT_VARIANT'] = plan.jit_variant
    if plan.profile_s or plan.jit_variant != 'default':
        env['PYTHONPATH'] = os.pathsep.join([str(PROFILING_DIR), env['PYTHONPATH']])
    return env


def start_profiles(plan: Plan, running: 'Running', name: str) -> List[Tuple[Path, Any]]:
    """py-spy on the detector of system a and its model process for plan.profile_s seconds:
    one profile of every thread on the CPU, one of the thread holding the GIL (collapsed stacks
    per process and thread)."""
    launcher = running.system_procs[0].pid
    detector = [pid for pid in process_tree([launcher])
                if 'detector_node' in ' '.join(cmdline(pid))]
    if not detector or shutil.which('py-spy') is None:
        plan.notes.append('--profile-detector: ' + ('no py-spy on PATH' if detector
                                                    else 'no detector process found'))
        return []
    folder = plan.results_dir / 'profiles'
    folder.mkdir(parents=True, exist_ok=True)
    started = []
    for mode, extra in (('cpu', []), ('gil', ['--gil'])):
        path = folder / f'{name}_{mode}.txt'
        command = ['py-spy', 'record', '--pid', str(detector[0]), '--duration',
                   str(int(plan.profile_s)), '--rate', '200', '--nonblocking', '--threads',
                   '--subprocesses',
                   '--format', 'raw', '--output', str(path), *extra]
        started.append((path, subprocess.Popen(command, stdout=subprocess.DEVNULL,
                                               stderr=subprocess.PIPE, text=True)))
    return started


def finish_profiles(started: List[Tuple[Path, Any]]) -> Dict[str, Any]:
    """Wait for the profilers; the profile files by name, or why one is missing
    (bench/profiling/summary.py reads them)."""
    out: Dict[str, Any] = {}
    for path, proc in started:
        try:
            _, err = proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            err = 'timed out'
        out[path.stem] = ({'file': path.name} if path.is_file()
                          else {'error': (err or 'no output')[-500:]})
    return out


def role_command(role: str, config: Dict[str, Any]) -> List[str]:
    return [sys.executable, str(Path(__file__).resolve()), '--role', role,
            '--role-config', json.dumps(config)]


def nested(flat: Dict[str, Any]) -> Dict[str, Any]:
    """{'model.path': x, 'device': y} -> {'model': {'path': x}, 'device': y} (cams.yaml)."""
    out: Dict[str, Any] = {}
    for key, value in flat.items():
        head, dot, rest = key.partition('.')
        if dot:
            out.setdefault(head, {})[rest] = value
        else:
            out[key] = value
    return out


def write_config(plan: Plan, system: str, count: int, directory: Path) -> Path:
    """The cams.yaml of system a with `count` cameras."""
    import yaml
    detector = {**plan.model, 'max_batch_size': plan.max_batch_size, **plan.detector_params}
    if plan.frame_path.get(system):
        detector['frame_path'] = plan.frame_path[system]
    document = {
        'camera_defaults': {'fps': 0.0, 'loop': True, **plan.camera_params},
        'cameras': [{'name': f'cam{index}', 'url': plan.clip(index)} for index in range(count)],
        'detector': nested(detector),
        'transport': {'fastdds_profile': 'package'},
    }
    path = directory / 'cams.yaml'
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    return path


@dataclass
class Running:
    """One system while it runs: what to sample, what measures, how to tell it is ready."""

    system_procs: List[Child]
    measure_procs: List[Child]
    ready: Callable[[], int]  # cameras with results so far
    ready_all: Callable[[], bool]  # whether to start the warm-up
    extra: List[Child] = field(default_factory=list)  # e.g. the probe

    def all_children(self) -> List[Child]:
        return self.system_procs + self.extra


def start_system(plan: Plan, system: str, count: int, directory: Path,
                 env: Dict[str, str]) -> Running:
    """Start system `system` with `count` cameras (not waiting for it)."""
    if system in A_SYSTEMS:
        cameras = [f'/cam{index}' for index in range(count)]
        probe = Child(role_command('probe', {'cameras': cameras}), env,
                      directory / 'probe.log', 'probe')
        config = write_config(plan, system, count, directory)
        launcher = Child([sys.executable, '-m', 'multicam_ros.cli', 'launch', str(config),
                          '--status-period', '0', '--stop-timeout', '5'], env,
                         directory / 'launch.log', 'launch')
        # Every camera has results, or every node reports and results flow: a detector that
        # cannot serve every camera (the collapse this bench shows) must not stall the run.
        return Running([launcher], [probe], lambda: probe.seen,
                       lambda: probe.seen >= count or (
                           probe.up_s is not None and time.monotonic() - probe.up_s > UP_GRACE_S),
                       extra=[probe])
    model = {**plan.model}
    if system == 'b_pool':
        clips = [plan.clip(index) for index in range(count)]
        proc = Child(role_command('pool', {'clips': clips, 'model': model,
                                           'threads': POOL_THREADS}),
                     env, directory / 'pool.log', 'pool')
        return Running([proc], [proc], lambda: count if proc.ready is not None else 0,
                       lambda: proc.ready is not None)
    procs = [Child(role_command('single', {'clip': plan.clip(index), 'model': model,
                                           'camera': index}),
                   env, directory / f'single{index}.log', f'single{index}')
             for index in range(count)]
    return Running(procs, procs, lambda: sum(p.ready is not None for p in procs),
                   lambda: all(p.ready is not None for p in procs))


def stop_system(running: Running, plan: Plan) -> None:
    """Stop every process of a run: the launcher gets SIGINT (it stops its nodes), workers
    SIGTERM; then SIGKILL, then anything still carrying the marker."""
    children = running.all_children()
    for child in children:  # one signal each: a second SIGINT makes the launcher kill at once
        child.signal_group(signal.SIGINT if child.label == 'launch' else signal.SIGTERM)
    for child in children:
        child.stop(first=None, grace_s=8.0 if child.label == 'launch' else 3.0)
    deadline_s = time.monotonic() + 3.0
    while marked_pids(plan.token) and time.monotonic() < deadline_s:
        time.sleep(0.2)
    kill_marked(plan.token, 'after the run')


def percentile(values: Sequence[float], q: float) -> Optional[float]:
    if not values:
        return None
    import numpy as np
    return round(float(np.percentile(np.asarray(values, dtype=np.float64), q)), 1)


def summarise(system: str, count: int, results: List[Dict[str, Any]],
              plan: Plan) -> Dict[str, Any]:
    """Pool the RESULT payloads of a run into the point's figures."""
    processed_fps: List[float] = []
    offered_fps: List[Optional[float]] = []
    latencies: List[float] = []
    for result in results:
        window_s = max(result['window_s'], 1e-6)
        processed_fps += [n / window_s for n in result['processed']]
        offered_fps += [None if n is None else n / window_s for n in result['offered']]
        latencies += result['latencies_ms']
    missing = count - len(processed_fps)  # system c: processes that died or did not answer
    processed_fps += [0.0] * max(0, missing)
    offered_fps += [None] * max(0, missing)
    estimated = sum(value is None for value in offered_fps)
    offered_fps = [plan.clip_fps if value is None else value for value in offered_fps]
    point: Dict[str, Any] = {
        'window_s': round(sum(r['window_s'] for r in results) / len(results), 2),
        'processed_fps_total': round(sum(processed_fps), 1),
        'processed_fps_min_camera': round(min(processed_fps), 2) if processed_fps else None,
        'processed_fps_per_camera': [round(value, 2) for value in processed_fps],
        'offered_fps_total': round(sum(offered_fps), 1) if offered_fps else None,
        'latency_p50_ms': percentile(latencies, 50),
        'latency_p99_ms': percentile(latencies, 99),
        'latency_count': len(latencies),
    }
    if estimated:
        point['offered_estimated_cameras'] = estimated  # no count: the clip's fps was taken
    if point['offered_fps_total']:
        point['fraction_offered'] = round(point['processed_fps_total']
                                          / point['offered_fps_total'], 3)
    if system in A_SYSTEMS and results:
        extra = {k: v for k, v in results[0].items()
                 if k not in ('window_s', 'processed', 'offered', 'latencies_ms')}
        point['diagnostics'] = extra
    return point


def measure_point(plan: Plan, system: str, count: int) -> Dict[str, Any]:
    """Run one system with `count` cameras: start, wait until ready, warm up, measure, stop."""
    started_s = time.monotonic()
    directory = plan.workdir / f'{system}_n{count}'
    directory.mkdir(parents=True, exist_ok=True)
    domain = plan.next_domain()
    env = child_env(plan, domain)
    point: Dict[str, Any] = {'system': system, 'label': SYSTEMS[system], 'n': count,
                             'domain_id': domain, 'ok': False,
                             'offered_fps_nominal': None}
    sampler = Sampler(heavy_in_window=plan.samples_in_window)
    running = start_system(plan, system, count, directory, env)
    try:
        ready_s = wait_ready(running, count, plan.ready_timeout_s or 60.0 + count, system)
        point['ready_cameras'] = running.ready()
        point['ready_s'] = round(ready_s, 1)
        if point['ready_cameras'] == 0:
            raise RuntimeError(_failure_text(running, running.all_children()))
        check_alive(running, system, point)
        deadline_s = time.monotonic() + plan.warmup_s
        while time.monotonic() < deadline_s:
            time.sleep(0.2)
            check_alive(running, system, point)
        sampler.begin([c.pid for c in running.system_procs])
        for child in running.measure_procs:
            child.send('start')
        profiles = (start_profiles(plan, running, f'{system}_n{count}')
                    if plan.profile_s and system in A_SYSTEMS else [])
        time.sleep(plan.seconds)
        if profiles:
            point['profiles'] = finish_profiles(profiles)
        for child in running.measure_procs:
            child.send('stop')
        results = [child.wait_result(20.0) for child in running.measure_procs]
        point.update(sampler.end())
        got = [r for r in results if r is not None]
        if not got:
            raise RuntimeError('no result: ' + _failure_text(running, running.measure_procs))
        if len(got) < len(results):
            point['missing_results'] = len(results) - len(got)
        point.update(summarise(system, count, got, plan))
        point['ok'] = True
    except RuntimeError as exc:
        point['error'] = str(exc)[:3000]
        say(f'N={count} {system}: FAILED: {str(exc).splitlines()[0][:300]}')
    finally:
        stop_system(running, plan)
        point['took_s'] = round(time.monotonic() - started_s, 1)
    return point


def check_alive(running: Running, system: str, point: Dict[str, Any]) -> None:
    """RuntimeError when a process of the run died. System c goes on without its dead
    processes (their cameras count as processing nothing) unless all died."""
    dead = [c for c in running.all_children() if not c.alive]
    if not dead:
        return
    if system == 'c_each' and len(dead) < len(running.system_procs):
        if point.get('dead_processes') != len(dead):
            point['dead_processes'] = len(dead)
            point['dead_log'] = _failure_text(running, dead[:1])[:1500]
            say(f'N={point["n"]} {system}: {len(dead)} process(es) died; measuring the rest')
        return
    raise RuntimeError(_failure_text(running, dead))


def wait_ready(running: Running, count: int, timeout_s: float, system: str) -> float:
    """Seconds until every camera is ready (results flowing), or the timeout."""
    started_s = time.monotonic()
    next_note_s = started_s + 15.0
    while time.monotonic() - started_s < timeout_s:
        if running.ready_all():
            break
        if any(not c.alive for c in running.all_children()):
            break
        if time.monotonic() >= next_note_s:
            next_note_s += 15.0
            say(f'N={count} {system}: {running.ready()}/{count} cameras ready after '
                f'{time.monotonic() - started_s:.0f} s')
        time.sleep(0.1)
    return time.monotonic() - started_s


def _failure_text(running: Running, dead: Sequence[Child]) -> str:
    lines = []
    for child in dead or running.all_children():
        code = child.proc.poll()
        state = f'exit {code}' if code is not None else 'running'
        lines.append(f'{child.label} ({state}), log {child.log_path}:')
        if child.error:
            lines.append(f'  error: {child.error}')
        lines += [f'  {line}' for line in child.last_lines()]
    return '\n'.join(lines)


def measure_ceiling(plan: Plan) -> Dict[str, Any]:
    """The model-only ceiling for every batch size of the call, in one process."""
    batches = sorted({min(count, plan.max_batch_size) for count in plan.counts})
    seconds = 1.5 if plan.sweep.device.startswith('cuda') else 2.0
    directory = plan.workdir / 'ceiling'
    directory.mkdir(parents=True, exist_ok=True)
    env = child_env(plan, plan.next_domain())
    child = Child(role_command('ceiling', {'clip': plan.clip(0), 'model': plan.model,
                                           'batches': batches, 'seconds': seconds}),
                  env, directory / 'ceiling.log', 'ceiling')
    say(f'model-only ceiling at batch {", ".join(map(str, batches))}')
    try:
        result = child.wait_result(120.0 + 20.0 * len(batches))
    finally:
        child.stop(grace_s=2.0)
    if result is None:
        text = '\n'.join(child.last_lines())
        say(f'ceiling FAILED: {child.error or text}')
        return {'error': child.error or text}
    for batch, entry in result['batches'].items():
        best = entry.get('forward') or entry['infer']
        say(f'  batch {batch}: forward {entry.get("forward", {}).get("images_per_s", "-")} '
            f'images/s, infer {entry["infer"]["images_per_s"]} images/s '
            f'({best["ms_per_batch"]} ms a batch)')
    return result


def ceiling_fps(results: Dict[str, Any], batch: int) -> Optional[float]:
    entry = (results.get('ceiling') or {}).get('batches', {}).get(str(batch))
    if not entry:
        return None
    return (entry.get('forward') or entry.get('infer') or {}).get('images_per_s')


# -- orchestration --------------------------------------------------------------------------------


def frame_path_values(paths: Sequence[str], notes: List[str]) -> Dict[str, Optional[str]]:
    """system -> the detector's frame_path value for each requested path; paths the detector
    cannot take are left out, with a note saying why."""
    from multicam_ros.core.params import DETECTOR_PARAMS
    from multicam_ros.core.settings import by_name
    setting = by_name(DETECTOR_PARAMS).get('frame_path')
    out: Dict[str, Optional[str]] = {}
    for path in paths:
        system = PATH_SYSTEMS[path]
        if setting is None:
            if path == 'subscription':
                out[system] = None  # the detector's only path: nothing to set
            else:
                notes.append(f'--paths {path}: detector_node has no frame_path parameter yet; '
                             'only the subscription path ran')
            continue
        wanted = {'subscription': ('subscription',), 'auto': ('auto',)}.get(
            path, ('shared_memory', 'shm'))
        choice = next((c for c in wanted if c in setting.choices), None)
        if choice is None and not setting.choices:
            choice = wanted[0]
        if choice is None:
            notes.append(f'--paths {path}: frame_path accepts {setting.choices}, none of '
                         f'{wanted}; skipped')
            continue
        out[system] = choice
    return out


def parse_counts(text: str) -> Tuple[int, ...]:
    counts = tuple(int(part) for part in text.split(',') if part.strip())
    if not counts or min(counts) < 1:
        raise argparse.ArgumentTypeError('a comma-separated list of camera counts >= 1')
    return counts


def parse_assignments(items: Sequence[str], what: str) -> Dict[str, Any]:
    """KEY=VALUE items (VALUE read as YAML: numbers, true/false, lists)."""
    import yaml
    out: Dict[str, Any] = {}
    for item in items:
        key, eq, value = item.partition('=')
        if not eq or not key.strip():
            raise SystemExit(f'e2e_bench: {what} {item!r}: expected KEY=VALUE')
        out[key.strip()] = yaml.safe_load(value)
    return out


def default_clips(sweep: Sweep) -> Tuple[str, ...]:
    folder = REPO / '.clips' / sweep.size
    clips = tuple(str(p) for p in sorted(folder.glob('*.mp4')))
    if not clips:
        raise SystemExit(f'e2e_bench: no clips in {folder}; make them with '
                         'bench/device/make_kit.sh, or give --clip')
    return clips


def model_values(args: argparse.Namespace, device: str) -> Dict[str, Any]:
    """Flat model parameter values shared by all three systems."""
    values: Dict[str, Any] = {'device': device}
    if args.model:
        values['model.backend'] = args.model_backend or 'torchscript'
        values['model.path'] = str(Path(args.model).resolve())
        if args.input_size:
            values['input_size'] = args.input_size
    else:
        values['model.backend'] = args.model_backend or 'torchvision'
        values['model.name'] = 'fasterrcnn_mobilenet_v3_large_320_fpn'
        values['model.weights'] = 'none'
    values.update(parse_assignments(args.model_param, '--model-param'))
    return values


def host_info(device: str) -> Dict[str, Any]:
    info: Dict[str, Any] = {'python': platform.python_version(), 'machine': platform.machine(),
                            'cpu_count': os.cpu_count(), 'hostname': platform.node()}
    try:
        commit = subprocess.run(['git', 'rev-parse', '--short', 'HEAD'], cwd=REPO,
                                capture_output=True, text=True, timeout=5).stdout.strip()
        dirty = subprocess.run(['git', 'status', '--porcelain', '--untracked-files=no'],
                               cwd=REPO, capture_output=True, text=True, timeout=5).stdout
        info['git'] = commit + ('+dirty' if dirty.strip() else '') if commit else None
    except (OSError, subprocess.TimeoutExpired):
        info['git'] = None
    if shutil.which('nvidia-smi'):
        try:
            info['gpu'] = subprocess.run(
                ['nvidia-smi', '--query-gpu=name,memory.total,driver_version',
                 '--format=csv,noheader'], capture_output=True, text=True,
                timeout=10).stdout.strip()
        except (OSError, subprocess.TimeoutExpired):
            pass
    info['device'] = device
    return info


def load_results(paths: Sequence[Path]) -> Dict[str, Any]:
    """Merge result files: later files win per (system, N) and per ceiling batch."""
    merged: Dict[str, Any] = {}
    points: Dict[Tuple[str, int], Dict[str, Any]] = {}
    for path in paths:
        data = json.loads(Path(path).read_text())
        for point in data.get('points', []):
            points[(point['system'], point['n'])] = point
        ceiling = merged.get('ceiling') or {}
        new_ceiling = data.get('ceiling') or {}
        batches = {**ceiling.get('batches', {}), **new_ceiling.get('batches', {})}
        notes = merged.get('notes', []) + [n for n in data.get('notes', [])
                                           if n not in merged.get('notes', [])]
        calls = merged.get('calls', []) + data.get('calls', [])
        merged.update({k: v for k, v in data.items() if k not in ('points', 'ceiling')})
        merged['ceiling'] = {**ceiling, **new_ceiling, 'batches': batches}
        merged['notes'] = notes
        merged['calls'] = calls
    merged['points'] = sorted(points.values(), key=lambda p: (p['n'], list(SYSTEMS).index(
        p['system'])))
    return merged


def write_outputs(results: Dict[str, Any], results_dir: Path, sweep: str) -> Path:
    """JSON, markdown table and plot; returns the JSON path."""
    results_dir.mkdir(parents=True, exist_ok=True)
    path = results_dir / f'e2e_{sweep}.json'
    temporary = path.with_suffix('.json.tmp')
    temporary.write_text(json.dumps(results, indent=1))
    temporary.replace(path)
    (results_dir / f'e2e_{sweep}.md').write_text(markdown(results))
    try:
        plot(results, results_dir / f'e2e_{sweep}.png')
    except ImportError as exc:
        say(f'no plot ({exc}); rewrite it elsewhere with --replot {path}')
    return path


def _fmt(value: Any, digits: int = 0, unit: str = '') -> str:
    if value is None:
        return '—'
    if isinstance(value, float) and math.isnan(value):
        return '—'
    return f'{value:,.{digits}f}{unit}'


def markdown(results: Dict[str, Any]) -> str:
    """The table for bench/results and the README, plus run facts and ratios."""
    settings = results.get('settings', {})
    host = results.get('host', {})
    lines = [f'# End-to-end benchmark, sweep `{results.get("sweep")}`', '',
             f'{results.get("created", "")}; host {host.get("cpu_count")} CPU cores'
             + (f', {host["gpu"]}' if host.get('gpu') else '')
             + f'; git {host.get("git")}; python {host.get("python")}.',
             f'Model: {results.get("model_description") or settings.get("model")}; device '
             f'{settings.get("device")}; max_batch_size {settings.get("max_batch_size")}; '
             f'clips {", ".join(Path(c).name for c in settings.get("clips", []))} '
             f'({settings.get("frame_size")}, looping); warm-up {settings.get("warmup_s")} s, '
             f'window {settings.get("seconds")} s per point.', '',
             '| N | system | processed fps | offered fps | processed / offered | slowest camera '
             'fps | latency p50 ms | latency p99 ms | CPU cores | host RSS MB | host PSS MB | '
             'GPU MB | model-only ceiling fps (batch) |',
             '|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|']
    max_batch = settings.get('max_batch_size', 32)
    for point in results.get('points', []):
        batch = min(point['n'], max_batch)
        ceiling = ceiling_fps(results, batch)
        if not point.get('ok'):
            error = (point.get('error') or 'failed').splitlines()[0][:120].replace('|', '/')
            lines.append(f'| {point["n"]} | {point["label"]} | failed: {error} |' + ' |' * 10)
            continue
        fraction = point.get('fraction_offered')
        lines.append(
            f'| {point["n"]} | {point["label"]} | {_fmt(point["processed_fps_total"], 1)} | '
            f'{_fmt(point.get("offered_fps_total"), 1)} | '
            f'{_fmt(None if fraction is None else 100 * fraction, 0, " %")} | '
            f'{_fmt(point.get("processed_fps_min_camera"), 1)} | '
            f'{_fmt(point.get("latency_p50_ms"))} | {_fmt(point.get("latency_p99_ms"))} | '
            f'{_fmt(point.get("cpu_cores"), 2)} | {_fmt(point.get("rss_mb"))} | '
            f'{_fmt(point.get("pss_mb"))} | {_fmt(point.get("gpu_mem_mb"))} | '
            f'{_fmt(ceiling, 0 if (ceiling or 0) >= 100 else 1)} ({batch}) |')
    lines += ['', *ratio_lines(results), *detector_lines(results)]
    notes = results.get('notes') or []
    if notes:
        lines += ['', 'Notes:'] + [f'- {note}' for note in notes]
    lines += ['', 'processed fps: detection results per second over the window (a: messages '
              'received on <cam>/detections); offered: frames the cameras captured; latency: '
              'capture stamp to result; CPU cores: utime+stime of all processes of the system '
              '(a: launcher, cameras, detector; not the probe); RSS double-counts shared '
              'libraries, PSS does not; GPU: nvidia-smi compute apps of the system. Ceiling: '
              'forward pass on frames already on the device (infer on host frames where the '
              'back-end has no plain forward).', '']
    return '\n'.join(lines)


def detector_lines(results: Dict[str, Any]) -> List[str]:
    """System a as its own detector reports it on /diagnostics (last report of the window)."""
    rows = []
    for point in results.get('points', []):
        diagnostics = point.get('diagnostics') or {}
        model = diagnostics.get('detector_model') or {}
        if not point.get('ok') or not diagnostics:
            continue
        paths = ', '.join(f'{k} x{v}' for k, v in (diagnostics.get('frame_paths') or {}).items())
        rows.append(
            f'| {point["n"]} | {point["label"]} | '
            f'{_fmt(diagnostics.get("detector_processed_fps"), 1)} | '
            f'{_fmt(diagnostics.get("detector_dropped_fps"), 1)} | '
            f'{model.get("batch_size_mean", "—")} | {model.get("inference_p50_ms", "—")} | '
            f'{model.get("inference_p95_ms", "—")} | {model.get("inference_max_ms", "—")} | '
            f'{model.get("results_handover_max_ms", "—")} | '
            f'{model.get("cuda_reserved_mb", "—")} | '
            f'{paths or "—"} |')
    if not rows:
        return []
    return ['', 'System a as its detector reports it (/diagnostics, last report in the window):',
            '', '| N | system | processed fps | dropped fps (slot overwritten) | mean batch | '
            'inference p50 ms | inference p95 ms | inference max ms | results hand-over max ms | '
            'CUDA reserved MB | frame path |',
            '|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---|', *rows]


def ratio_lines(results: Dict[str, Any]) -> List[str]:
    """Ratios quoted from this one run."""
    by_key = {(p['system'], p['n']): p for p in results.get('points', []) if p.get('ok')}
    counts = sorted({n for _, n in by_key})
    lines = []
    for count in counts:
        parts = []
        for a_system in A_SYSTEMS:
            a = by_key.get((a_system, count))
            if a is None:
                continue
            for other in ('b_pool', 'c_each'):
                o = by_key.get((other, count))
                if o and o['processed_fps_total']:
                    parts.append(f'{a_system}/{other} processed fps '
                                 f'{a["processed_fps_total"] / o["processed_fps_total"]:.2f}x')
            c = by_key.get(('c_each', count))
            if c and c.get('gpu_mem_mb') and a.get('gpu_mem_mb') is not None:
                parts.append(f'{a_system}/c_each GPU memory '
                             f'{100 * a["gpu_mem_mb"] / c["gpu_mem_mb"]:.0f} %')
        if parts:
            lines.append(f'- N={count}: ' + '; '.join(parts))
    return (['Ratios (same run):'] + lines) if lines else []


def plot(results: Dict[str, Any], path: Path) -> None:
    """Processed fps, p99 latency, GPU (or host) memory and CPU cores against N."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    points = [p for p in results.get('points', []) if p.get('ok')]
    systems = [s for s in SYSTEMS if any(p['system'] == s for p in points)]
    gpu = any(p.get('gpu_mem_mb') is not None for p in points)
    figure, axes = plt.subplots(2, 2, figsize=(12, 8.5))
    panels = [
        (axes[0][0], 'processed_fps_total', 'frames processed / s (all cameras)', True),
        (axes[0][1], 'latency_p99_ms', 'latency p99, capture to result (ms)', True),
        (axes[1][0], 'gpu_mem_mb' if gpu else 'pss_mb',
         'GPU memory of the system (MiB)' if gpu else 'host memory, PSS (MiB; no GPU)', False),
        (axes[1][1], 'cpu_cores', 'CPU cores used', False),
    ]
    counts = sorted({p['n'] for p in points})
    for axis, key, title, log in panels:
        for system in systems:
            mine = sorted((p for p in points if p['system'] == system and p.get(key)
                           is not None), key=lambda p: p['n'])
            if not mine:
                continue
            color, marker, style = SYSTEM_STYLE[system]
            axis.plot([p['n'] for p in mine], [p[key] for p in mine], marker=marker,
                      linestyle=style, color=color, label=SYSTEMS[system])
        if key == 'processed_fps_total' and counts:
            offered = {}
            for p in points:
                if p.get('offered_fps_total'):
                    offered.setdefault(p['n'], []).append(p['offered_fps_total'])
            xs = sorted(offered)
            axis.plot(xs, [max(offered[n]) for n in xs], color='grey', linestyle=':',
                      label='offered')
            max_batch = results.get('settings', {}).get('max_batch_size', 32)
            ceiling = [(n, ceiling_fps(results, min(n, max_batch))) for n in counts]
            ceiling = [(n, c) for n, c in ceiling if c]
            if ceiling:
                axis.plot([n for n, _ in ceiling], [c for _, c in ceiling], color='black',
                          linestyle='-.', linewidth=1, label='model-only ceiling')
        axis.set_title(title)
        axis.set_xlabel('cameras N')
        axis.set_xscale('log', base=2)
        axis.set_xticks(counts or [1])
        axis.set_xticklabels([str(n) for n in counts] or ['1'])
        if log and key == 'processed_fps_total':
            axis.set_yscale('symlog', linthresh=1.0)  # keeps a collapse to 0 fps visible
            axis.set_ylim(bottom=0)
        elif log:
            axis.set_yscale('log')
        axis.grid(True, alpha=0.3)
        if axis.get_legend_handles_labels()[0]:
            axis.legend(fontsize=8)
    settings = results.get('settings', {})
    figure.suptitle(f'multicam_ros end to end, sweep {results.get("sweep")}: '
                    f'{settings.get("frame_size")} clips, {settings.get("device")}, '
                    f'{results.get("model_description") or ""}', fontsize=10)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description='End-to-end benchmark of multicam_ros against the thread-pool design and '
                    'one model per camera (see the module docstring).')
    parser.add_argument('--sweep', choices=sorted(SWEEPS), default='cpu',
                        help='cpu: N 1,2,4,8 at VGA; gpu: N 1..64 at 720p (default cpu)')
    parser.add_argument('--n', type=parse_counts, help='camera counts, e.g. 1,2,4 '
                        '(default: the sweep\'s)')
    parser.add_argument('--systems', default='a,b,c',
                        help='which systems: a (this package), b (thread pool), c (one model '
                             'per camera); default a,b,c')
    parser.add_argument('--paths', default='subscription,shm',
                        help='frame paths of system a: subscription, shm, auto (the '
                             'detector\'s default); default subscription,shm')
    parser.add_argument('--seconds', type=float, help='measurement window per point, s '
                        '(default 30 gpu, 20 cpu)')
    parser.add_argument('--warmup', type=float, help='warm-up after all cameras are ready, s '
                        '(default 10 gpu, 8 cpu)')
    parser.add_argument('--ready-timeout', type=float, default=0.0,
                        help='longest wait for every camera to produce results, s (default '
                             '60 + N)')
    parser.add_argument('--deadline-s', type=float, default=0.0,
                        help='skip points that would end after this many seconds from the '
                             'start (0: no deadline); skipped points are listed')
    parser.add_argument('--max-n', action='append', default=[], metavar='SYSTEM=N',
                        help='largest N for a system, e.g. c=32 (repeatable)')
    parser.add_argument('--clip', action='append', default=[],
                        help='video file(s) for the cameras (camera i reads clip i mod k); '
                             'default .clips/<size>/*.mp4')
    parser.add_argument('--model', help='TorchScript model file for all systems (default: '
                        'torchvision fasterrcnn_mobilenet_v3_large_320_fpn, random weights)')
    parser.add_argument('--model-backend', help='model.backend (default torchscript with '
                        '--model, else torchvision)')
    parser.add_argument('--input-size', type=int, help='input_size (of the detector) with --model')
    parser.add_argument('--model-param', action='append', default=[], metavar='KEY=VALUE',
                        help='another model setting for all systems, e.g. half=true')
    parser.add_argument('--detector-param', action='append', default=[], metavar='KEY=VALUE',
                        help='another detector_node parameter for system a')
    parser.add_argument('--camera-param', action='append', default=[], metavar='KEY=VALUE',
                        help='another camera_node parameter for system a')
    parser.add_argument('--device', help='model device (default cuda for gpu, cpu for cpu)')
    parser.add_argument('--max-batch-size', type=int, default=32,
                        help='detector max_batch_size, also the ceiling\'s batch cap '
                             '(default 32)')
    parser.add_argument('--profile-detector', type=float, default=0.0, metavar='S',
                        help="py-spy system a's detector for S seconds of each measurement "
                             "window (py-spy on PATH): <results-dir>/profiles/")
    parser.add_argument('--no-ceiling', action='store_true', help='skip the model-only '
                        'ceiling')
    parser.add_argument('--jit-variant', choices=JIT_VARIANTS, default='default',
                        help="TorchScript's fuser in every process that loads the model "
                             '(bench/profiling/jit_variants.py; default: as torch has it)')
    parser.add_argument('--samples-in-window', action='store_true',
                        help='read PSS and nvidia-smi during the window too (every 5 and 2 s, '
                             'as before 2026-12-02), not only after it')
    parser.add_argument('--results-dir', type=Path, default=REPO / 'bench' / 'results',
                        help='where e2e_<sweep>.{json,md,png} go (default bench/results)')
    parser.add_argument('--merge', action='store_true',
                        help='merge into an existing e2e_<sweep>.json in --results-dir '
                             '(points of this call replace the same system and N)')
    parser.add_argument('--keep-dir', type=Path,
                        help='also keep a copy of the JSON here and merge with the one found '
                             'there (survives $OUT being emptied between device calls)')
    parser.add_argument('--replot', nargs='+', type=Path, metavar='JSON',
                        help='merge these result files and rewrite JSON, table and plot; '
                             'runs nothing')
    parser.add_argument('--role', choices=sorted(ROLES), help=argparse.SUPPRESS)
    parser.add_argument('--role-config', help=argparse.SUPPRESS)
    return parser


def make_plan(args: argparse.Namespace, token: str, workdir: Path) -> Plan:
    sweep = SWEEPS[args.sweep]
    notes: List[str] = []
    wanted = [part.strip() for part in args.systems.split(',') if part.strip()]
    paths = [part.strip() for part in args.paths.split(',') if part.strip()]
    for path in paths:
        if path not in PATH_SYSTEMS:
            raise SystemExit(f'e2e_bench: --paths {path}: accepted: subscription, shm, auto')
    systems: List[str] = []
    frame_path: Dict[str, Optional[str]] = {}
    for letter in wanted:
        if letter == 'a':
            frame_path = frame_path_values(paths, notes)
            systems += [s for s in A_SYSTEMS if s in frame_path]
        elif letter == 'b':
            systems.append('b_pool')
        elif letter == 'c':
            systems.append('c_each')
        else:
            raise SystemExit(f'e2e_bench: --systems {letter}: accepted: a, b, c')
    max_n: Dict[str, int] = {}
    for key, value in parse_assignments(args.max_n, '--max-n').items():
        system = {'a': 'a_sub', 'b': 'b_pool', 'c': 'c_each'}.get(key, key)
        if system not in SYSTEMS:
            raise SystemExit(f'e2e_bench: --max-n {key}: accepted: {", ".join(SYSTEMS)}')
        max_n[system] = int(value)
        if system == 'a_sub':
            max_n.update({a_system: int(value) for a_system in A_SYSTEMS})
    device = args.device or sweep.device
    clips = tuple(str(Path(c).resolve()) for c in args.clip) or default_clips(sweep)
    for clip in clips:
        if not Path(clip).is_file():
            raise SystemExit(f'e2e_bench: clip {clip} does not exist')
    return Plan(sweep=sweep, counts=args.n or sweep.counts, systems=tuple(systems),
                seconds=args.seconds or sweep.seconds,
                warmup_s=sweep.warmup_s if args.warmup is None else args.warmup,
                clips=clips, model=model_values(args, device),
                max_batch_size=args.max_batch_size,
                detector_params=parse_assignments(args.detector_param, '--detector-param'),
                camera_params=parse_assignments(args.camera_param, '--camera-param'),
                frame_path=frame_path, max_n=max_n, ready_timeout_s=args.ready_timeout,
                deadline_s=args.deadline_s, results_dir=args.results_dir, workdir=workdir,
                token=token, notes=notes, profile_s=args.profile_detector,
                samples_in_window=args.samples_in_window, jit_variant=args.jit_variant)


def clip_facts(clip: str) -> Tuple[str, float]:
    """'WxH' and fps of a clip."""
    import cv2
    capture = cv2.VideoCapture(clip)
    size = f'{int(capture.get(cv2.CAP_PROP_FRAME_WIDTH))}x' \
           f'{int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT))}'
    fps = float(capture.get(cv2.CAP_PROP_FPS) or 0.0)
    capture.release()
    return size, fps


def run(args: argparse.Namespace) -> int:
    """Run the sweep of `args`; results are written after every point."""
    token = f'{os.getpid()}-{int(time.time())}'
    kill_marked(None, 'at start (left by a bench run that was killed)', orphans=True)
    workdir = Path(tempfile.mkdtemp(prefix='multicam-e2e-'))
    plan = make_plan(args, token, workdir)
    size, clip_fps = clip_facts(plan.clip(0))
    plan.clip_fps = clip_fps or 30.0
    started_s = time.monotonic()
    previous: List[Path] = []
    json_path = plan.results_dir / f'e2e_{plan.sweep.name}.json'
    if args.merge and json_path.is_file():
        previous.append(json_path)
    keep_path = args.keep_dir / json_path.name if args.keep_dir else None
    if keep_path is not None and keep_path.is_file() and keep_path not in previous:
        previous.insert(0, keep_path)
    base = load_results(previous) if previous else {}
    old_settings = base.get('settings') or {}
    if base and (old_settings.get('model') != plan.model
                 or old_settings.get('frame_size') != size):
        say(f'not merging {", ".join(map(str, previous))}: another model or frame size')
        base = {}
    call = {'started': datetime.datetime.now().isoformat(timespec='seconds'),
            'counts': list(plan.counts), 'systems': list(plan.systems)}
    results: Dict[str, Any] = {
        **base, 'sweep': plan.sweep.name,
        'created': datetime.datetime.now().isoformat(timespec='seconds'),
        'host': host_info(plan.model['device']),
        'settings': {'device': plan.model['device'], 'model': plan.model,
                     'max_batch_size': plan.max_batch_size, 'clips': list(plan.clips),
                     'frame_size': size, 'clip_fps': clip_fps, 'seconds': plan.seconds,
                     'warmup_s': plan.warmup_s, 'pool_threads': POOL_THREADS,
                     'frame_path': plan.frame_path, 'detector_params': plan.detector_params,
                     'camera_params': plan.camera_params,
                     'samples_in_window': plan.samples_in_window,
                     'jit_variant': plan.jit_variant},
        'notes': list(dict.fromkeys(base.get('notes', []) + plan.notes)),
        'calls': base.get('calls', []) + [call],
    }
    points: Dict[Tuple[str, int], Dict[str, Any]] = {
        (p['system'], p['n']): p for p in base.get('points', [])}

    def save() -> None:
        results['points'] = sorted(points.values(), key=lambda p: (
            p['n'], list(SYSTEMS).index(p['system'])))
        path = write_outputs(results, plan.results_dir, plan.sweep.name)
        if keep_path is not None:
            keep_path.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, keep_path)

    for note in plan.notes:
        say(f'note: {note}')
    say(f'sweep {plan.sweep.name}: N {list(plan.counts)}, systems {list(plan.systems)}, '
        f'{size} at {clip_fps:g} fps from {len(plan.clips)} clip(s), device '
        f'{plan.model["device"]}, warm-up {plan.warmup_s:g} s, window {plan.seconds:g} s; '
        f'logs in {workdir}')
    todo = [(system, count) for count in plan.counts for system in plan.systems
            if count <= plan.max_n.get(system, 1 << 30)]
    guess_s = sum(estimate_point_s(plan, None, count) for _, count in todo) + 30.0
    say(f'{len(todo)} points, about {guess_s / 60:.0f} min (start-up guessed at 15 s + 0.5 s '
        'per camera a point)')
    try:
        if not args.no_ceiling:
            ceiling = measure_ceiling(plan)
            if 'error' not in ceiling:
                old = results.get('ceiling') or {}
                results['ceiling'] = {**old, **ceiling, 'batches': {
                    **old.get('batches', {}), **ceiling['batches']}}
                results['model_description'] = ceiling.get('model')
            else:
                results['notes'].append(f'ceiling failed: {ceiling["error"][:300]}')
            save()
        durations: Dict[str, Tuple[int, float]] = {}  # system -> (N, seconds) of its last
        skipped: List[str] = []
        for count in plan.counts:
            for system in plan.systems:
                if count > plan.max_n.get(system, 1 << 30):
                    continue
                estimate_s = estimate_point_s(plan, durations.get(system), count)
                elapsed_s = time.monotonic() - started_s
                if plan.deadline_s and elapsed_s + estimate_s > plan.deadline_s:
                    skipped.append(f'{system} N={count}')
                    continue
                say(f'N={count} {system} ({SYSTEMS[system]}): starting '
                    f'(elapsed {elapsed_s:.0f} s)')
                point = measure_point(plan, system, count)
                point['offered_fps_nominal'] = round(count * clip_fps, 1)
                point['ceiling_batch'] = min(count, plan.max_batch_size)
                point['ceiling_fps'] = ceiling_fps(results, point['ceiling_batch'])
                durations[system] = (count, point['took_s'])
                points[(system, count)] = point
                if point['ok']:
                    say(point_line(point))
                save()
        if skipped:
            text = f'deadline {plan.deadline_s:g} s: not run: {", ".join(skipped)}'
            results['notes'].append(text)
            say(text)
            save()
    except KeyboardInterrupt:
        say('interrupted: stopping every process')
        results['notes'].append('interrupted before the end')
        save()
        return 130
    finally:
        kill_marked(token, 'at exit')
        if not args.keep_logs:
            shutil.rmtree(workdir, ignore_errors=True)
    say(f'done in {time.monotonic() - started_s:.0f} s: {json_path}')
    return 0


def estimate_point_s(plan: Plan, last: Optional[Tuple[int, float]], count: int) -> float:
    """How long a point will take: the system's last point, its start-up part growing with N
    (the warm-up and window stay)."""
    fixed_s = plan.warmup_s + plan.seconds
    if last is None:
        return fixed_s + 15.0 + 0.5 * count
    last_count, last_s = last
    startup_s = max(last_s - fixed_s, 5.0)
    return fixed_s + startup_s * max(1.0, count / last_count) ** 0.5


def point_line(point: Dict[str, Any]) -> str:
    fraction = point.get('fraction_offered')
    share = f' ({100 * fraction:.0f} %)' if fraction is not None else ''
    return (f'N={point["n"]} {point["system"]}: {point["processed_fps_total"]:.1f}/'
            f'{_fmt(point.get("offered_fps_total"), 1)} fps{share}, slowest camera '
            f'{_fmt(point.get("processed_fps_min_camera"), 1)}, p50 '
            f'{_fmt(point.get("latency_p50_ms"))} ms, p99 {_fmt(point.get("latency_p99_ms"))} '
            f'ms, CPU {_fmt(point.get("cpu_cores"), 2)} cores, RSS '
            f'{_fmt(point.get("rss_mb"))} MB, GPU {_fmt(point.get("gpu_mem_mb"))} MB '
            f'(ready in {point.get("ready_s")} s, took {point["took_s"]} s)')


def _raise_interrupt(signum: int, _frame: Any) -> None:
    raise KeyboardInterrupt(f'signal {signum}')


def main(argv: Optional[List[str]] = None) -> int:
    parser = build_parser()
    parser.add_argument('--keep-logs', action='store_true',
                        help='keep the per-point logs (printed path) instead of deleting them')
    args = parser.parse_args(argv)
    if args.role:
        return run_role(args.role, args.role_config or '{}')
    if args.replot:
        results = load_results(args.replot)
        path = write_outputs(results, args.results_dir, results.get('sweep') or args.sweep)
        say(f'wrote {path} and its table and plot from {len(args.replot)} file(s)')
        return 0
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _raise_interrupt)
    return run(args)


if __name__ == '__main__':
    sys.exit(main())
