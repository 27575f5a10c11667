"""Camera benchmark: how well camera_node's frames travel to a subscriber in another process.

For one live RTSP camera (RtspTestServer, one stream) at 1280x720@30 and 1920x1080@30, it starts
`.venv/bin/camera_node` and a subscriber process (bench/frame_probe.py) exactly as users would,
each with the same ROS_DOMAIN_ID of its own, for every pair of

- transport: `package profile` (camera_node as shipped, loading its large shared-memory Fast DDS
  profile; the subscriber with default settings, as rqt_image_view would run) or
  FASTDDS_BUILTIN_TRANSPORTS=DEFAULT / SHM / LARGE_DATA on both processes;
- reliability: reliable or best_effort (camera_node's `reliability` and the subscriber QoS),

and measures the fraction of the stream's frames that reach the subscriber, capture-to-receive
and capture-to-publish latency (p50, p99) and camera_node's CPU share of one core. The floor is
an in-memory copy of one frame. Results: bench/results/camera_bench.{json,md,png}
(camera_bench_quick.* for --quick, so a quick run never overwrites a full one).

Run: .venv/bin/python bench/camera_bench.py [--quick] [--seconds S]
"""
import argparse
import contextlib
import datetime
import importlib.metadata
import json
import os
import platform
import queue
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np

from multicam_testbed import RtspTestServer

REPO = Path(__file__).resolve().parent.parent
BENCH = Path(__file__).resolve().parent
VENV_BIN = Path(sys.executable).parent
PROBE_SCRIPT = BENCH / 'frame_probe.py'

STREAM_FPS = 30
RESOLUTIONS: Tuple[Tuple[int, int], ...] = ((1280, 720), (1920, 1080))
PACKAGE_PROFILE = 'package profile'
TRANSPORTS = (PACKAGE_PROFILE, 'DEFAULT', 'SHM', 'LARGE_DATA')
RELIABILITIES = ('reliable', 'best_effort')
QUICK_CONFIGS = ((PACKAGE_PROFILE, 'reliable'), ('DEFAULT', 'best_effort'))
SETTLE_S = 2.0
FIRST_FRAME_TIMEOUT_S = 12.0
# Fast DDS domains 215..232 are usable on Linux and lie outside the 1..200 the tests pick from.
DOMAIN_IDS = tuple(range(215, 233))
FASTDDS_ENV = ('FASTDDS_DEFAULT_PROFILES_FILE', 'FASTDDS_BUILTIN_TRANSPORTS')
CLK_TCK = os.sysconf('SC_CLK_TCK')


# -- processes ------------------------------------------------------------------------------

def process_cpu_s(pgid: int) -> float:
    """User + system CPU seconds of every live process in process group `pgid`."""
    total = 0
    for entry in os.listdir('/proc'):
        if not entry.isdigit():
            continue
        try:
            with open(f'/proc/{entry}/stat') as stat:
                fields = stat.read().rsplit(')', 1)[1].split()
        except OSError:
            continue  # ended meanwhile
        if int(fields[2]) == pgid:  # fields[0] is field 3 (state): pgrp is field 5
            total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14, 15)
    return total / CLK_TCK


def shm_segments_mib(pid: int) -> List[float]:
    """Sizes of the Fast DDS shared-memory segments mapped by `pid`, largest first."""
    sizes: Dict[str, float] = {}
    try:
        with open(f'/proc/{pid}/maps') as maps:
            for line in maps:
                parts = line.split()
                if len(parts) >= 6 and parts[5].startswith('/dev/shm/fastdds_'):
                    if 'port' in parts[5]:
                        continue  # port queues, not data segments
                    start, end = (int(x, 16) for x in parts[0].split('-'))
                    sizes[parts[5]] = sizes.get(parts[5], 0.0) + (end - start) / 2**20
    except OSError:
        return []
    return sorted((round(s, 2) for s in sizes.values()), reverse=True)


def rtsp_server_pid() -> Optional[int]:
    """The pid of our RtspTestServer's process (a child of ours running rtsp_server.py)."""
    for entry in os.listdir('/proc'):
        if not entry.isdigit():
            continue
        try:
            with open(f'/proc/{entry}/stat') as stat:
                ppid = int(stat.read().rsplit(')', 1)[1].split()[1])
            with open(f'/proc/{entry}/cmdline', 'rb') as cmdline:
                command = cmdline.read()
        except OSError:
            continue
        if ppid == os.getpid() and b'rtsp_server.py' in command:
            return int(entry)
    return None


class Child:
    """A child process in a session of its own, so that it and its children end together."""

    def __init__(self, command: Sequence[str], env: Dict[str, str], log_path: Path,
                 pipe_stdout: bool = False) -> None:
        self.log_path = log_path
        self._log = open(log_path, 'wb')
        self.proc = subprocess.Popen(
            list(command), env=env, cwd=str(REPO), stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE if pipe_stdout else self._log, stderr=self._log,
            start_new_session=True)
        self.lines: 'queue.Queue[Optional[str]]' = queue.Queue()
        if pipe_stdout:
            threading.Thread(target=self._read_lines, daemon=True).start()

    def _read_lines(self) -> None:
        try:
            for raw in self.proc.stdout:
                self.lines.put(raw.decode('utf-8', 'replace').rstrip('\n'))
        except (OSError, ValueError):
            pass  # stop() closed the pipe under us
        self.lines.put(None)  # end of output

    @property
    def pid(self) -> int:
        return self.proc.pid

    def next_line(self, deadline_s: float) -> Optional[str]:
        """The next stdout line, or None at end of output or at the deadline."""
        try:
            return self.lines.get(timeout=max(0.0, deadline_s - time.monotonic()))
        except queue.Empty:
            return None

    def stop(self, grace_s: float = 0.0, timeout_s: float = 5.0) -> str:
        """Wait up to `grace_s` for a clean exit, then SIGINT to the whole group, then SIGKILL
        if it does not end in time. Safe to repeat. Returns how it ended, e.g. `exit 0` or
        `exit 0 after SIGINT`."""
        how = ''
        try:
            self.proc.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            pass
        for sig in (signal.SIGINT, signal.SIGKILL):
            if self.proc.poll() is not None:
                break
            try:
                os.killpg(self.proc.pid, sig)
            except ProcessLookupError:
                break
            how = f' after {signal.Signals(sig).name}'
            try:
                self.proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                continue
        try:  # a grandchild that outlived its parent still belongs to the group
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        self._log.close()
        return f'exit {self.proc.wait()}{how}'

    def log_tail(self, chars: int = 1500) -> str:
        if not self._log.closed:
            self._log.flush()
        return self.log_path.read_text(errors='replace')[-chars:]


class InterruptGuard:
    """Turns SIGINT and SIGTERM into KeyboardInterrupt, except inside `deferred()`, where the
    interrupt waits until the block ends. (Blocking the signals instead would be inherited by
    the children as a signal mask, and they would then ignore our SIGINT.)"""

    def __init__(self) -> None:
        self._depth = 0
        self._pending = False

    def install(self) -> None:
        # Both explicitly: a shell that starts us in the background may have ignored SIGINT.
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, self._on_signal)

    def _on_signal(self, signum: int, frame: object) -> None:
        if self._depth:
            self._pending = True
        else:
            raise KeyboardInterrupt

    @contextlib.contextmanager
    def deferred(self) -> Iterator[None]:
        self._depth += 1
        try:
            yield
        finally:
            self._depth -= 1
            if not self._depth and self._pending:
                self._pending = False
                raise KeyboardInterrupt


def spawn(guard: InterruptGuard, children: List[Child], *args, **kwargs) -> Child:
    """Start a Child and record it in `children` with interrupts deferred meanwhile, so that
    Ctrl-C can never leave a started process unrecorded (and so never stopped)."""
    with guard.deferred():
        child = Child(*args, **kwargs)
        children.append(child)
    return child


def child_env(domain_id: int, transport: str) -> Dict[str, str]:
    """The environment of one benchmark process: its own domain, loopback discovery, and
    exactly the transport setting under test (nothing inherited from the caller's shell)."""
    env = {k: v for k, v in os.environ.items() if k not in FASTDDS_ENV}
    env.update(ROS_DOMAIN_ID=str(domain_id), ROS_AUTOMATIC_DISCOVERY_RANGE='LOCALHOST',
               PYTHONUNBUFFERED='1')
    if transport != PACKAGE_PROFILE:
        env['FASTDDS_BUILTIN_TRANSPORTS'] = transport
    return env


# -- one configuration ------------------------------------------------------------------------

def run_config(url: str, size: Tuple[int, int], transport: str, reliability: str,
               seconds: float, domain_id: int, log_dir: Path,
               guard: InterruptGuard) -> dict:
    """Start camera_node and the probe, measure one window, stop both; return the results."""
    tag = f'{size[0]}x{size[1]}-{transport.replace(" ", "_")}-{reliability}'
    result: dict = {'resolution': f'{size[0]}x{size[1]}', 'transport': transport,
                    'reliability': reliability, 'domain_id': domain_id, 'error': None}
    camera_cmd = [str(VENV_BIN / 'camera_node'), '--ros-args', '-r', '__ns:=/cam0',
                  '-p', f'url:={url}', '-p', f'reliability:={reliability}']
    probe_cmd = [sys.executable, str(PROBE_SCRIPT), '--topic', '/cam0/image_raw',
                 '--reliability', reliability, '--seconds', str(seconds),
                 '--settle', str(SETTLE_S), '--first-frame-timeout', str(FIRST_FRAME_TIMEOUT_S)]
    children: List[Child] = []
    started_s = time.monotonic()
    server_pid = rtsp_server_pid()  # its session id is its pid, as for our other children
    try:
        camera = spawn(guard, children, camera_cmd, child_env(domain_id, transport),
                       log_dir / f'{tag}-camera_node.log')
        probe = spawn(guard, children, probe_cmd, child_env(domain_id, transport),
                      log_dir / f'{tag}-probe.log', pipe_stdout=True)
        deadline = started_s + FIRST_FRAME_TIMEOUT_S + SETTLE_S + seconds + 30.0
        marks: Dict[str, Tuple[float, ...]] = {}  # time, then CPU s of camera, probe, server
        probe_out: Optional[dict] = None
        while probe_out is None:
            line = probe.next_line(deadline)
            if line is None:
                break
            if line in ('WINDOW_START', 'WINDOW_END'):
                marks[line] = (time.monotonic(), process_cpu_s(camera.pid),
                               process_cpu_s(probe.pid),
                               process_cpu_s(server_pid) if server_pid else 0.0)
                if line == 'WINDOW_START':
                    segments = shm_segments_mib(camera.pid)
                    result['camera_shm_segments_mib'] = segments
                    # The package profile's 32 MiB segment: proof that it was applied.
                    result['camera_has_large_shm_segment'] = bool(segments) and segments[0] >= 32
                    result['load_average'] = [round(x, 2) for x in os.getloadavg()]
            elif line.startswith('{'):
                probe_out = json.loads(line)
        if probe_out is None or len(marks) < 2:
            raise RuntimeError('the probe gave no result; its log:\n' + probe.log_tail())
        if camera.proc.poll() is not None:
            raise RuntimeError(f'camera_node exited with code {camera.proc.returncode}:\n'
                               + camera.log_tail())
        (t0, *cpu0), (t1, *cpu1) = marks['WINDOW_START'], marks['WINDOW_END']
        result.update(summarise(probe_out))
        for key, before, after in zip(('camera', 'probe', 'rtsp_server'), cpu0, cpu1):
            result[f'{key}_cpu_percent'] = round(100.0 * (after - before) / (t1 - t0), 1)
        if not server_pid:
            result['rtsp_server_cpu_percent'] = None
    except RuntimeError as exc:
        result['error'] = str(exc)
    finally:
        # The probe ends by itself after its result line; camera_node needs SIGINT. A Ctrl-C
        # meanwhile waits until both are stopped.
        with guard.deferred():
            for name, child in reversed(list(zip(('camera_node_end', 'probe_end'), children))):
                result[name] = child.stop(grace_s=5.0 if name == 'probe_end' else 0.0)
    result['wall_s'] = round(time.monotonic() - started_s, 1)
    return result


def _float(values: Dict[str, str], key: str) -> Optional[float]:
    try:
        value = float(values[key])
    except (KeyError, ValueError):
        return None
    return None if value != value else value  # NaN: no sample yet


def summarise(probe: dict) -> dict:
    """Turn the probe's JSON line into the benchmark's fields."""
    after = probe.get('diagnostics_after') or {}
    before = probe.get('diagnostics_before') or {}
    expected = STREAM_FPS * probe['window_s']
    published = None
    if 'frames_published' in after and 'frames_published' in before:
        published = int(after['frames_published']) - int(before['frames_published'])
    return {
        'window_s': probe['window_s'],
        'frames_received': probe['frames_received'],
        'frames_expected': round(expected, 1),
        'delivered_fraction': round(probe['frames_received'] / expected, 3),
        'receive_fps': probe['receive_fps'],
        'received_frame_size': probe['frame_size'],
        'first_frame_after_s': probe['first_frame_after_s'],
        'stamps_not_increasing': probe['stamps_not_increasing'],
        'capture_to_receive_p50_ms': _round(probe['capture_to_receive_p50_ms']),
        'capture_to_receive_p99_ms': _round(probe['capture_to_receive_p99_ms']),
        'capture_to_publish_p50_ms': _float(after, 'capture_to_publish_p50_ms'),
        'capture_to_publish_p99_ms': _float(after, 'capture_to_publish_p99_ms'),
        'camera_capture_fps': _float(after, 'capture_fps'),
        'camera_publish_fps': _float(after, 'publish_fps'),
        'camera_frames_published_in_window': published,
        'camera_state': after.get('state'),
        'received_of_published': (round(probe['frames_received'] / published, 3)
                                  if published else None),
    }


def _round(value: Optional[float], digits: int = 2) -> Optional[float]:
    return None if value is None else round(value, digits)


# -- floor and machine --------------------------------------------------------------------

def copy_floor_ms(width: int, height: int, repeats: int = 300) -> dict:
    """Median time of copying one bgr8 frame in memory: a new array, and into an existing one."""
    src = np.random.default_rng(0).integers(0, 256, (height, width, 3), dtype=np.uint8)
    dst = np.empty_like(src)

    def median_ms(action) -> float:
        for _ in range(10):
            action()
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            action()
            times.append(time.perf_counter() - start)
        return round(float(np.median(times)) * 1000.0, 3)

    return {'resolution': f'{width}x{height}', 'frame_bytes': src.nbytes,
            'copy_new_array_p50_ms': median_ms(src.copy),
            'copy_into_existing_p50_ms': median_ms(lambda: np.copyto(dst, src))}


def _version(dist: str) -> Optional[str]:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def machine_info() -> dict:
    """nproc, CPU model, kernel, date and the versions that matter for these numbers."""
    model = ''
    try:
        with open('/proc/cpuinfo') as cpuinfo:
            model = next((line.split(':', 1)[1].strip() for line in cpuinfo
                          if line.startswith('model name')), '')
    except OSError:
        pass
    gst = None
    if shutil.which('gst-launch-1.0'):
        done = subprocess.run(['gst-launch-1.0', '--version'], capture_output=True, text=True)
        gst = next((line.split()[-1] for line in done.stdout.splitlines()
                    if line.startswith('GStreamer ')), None)
    return {
        'nproc': os.cpu_count(), 'cpu_model': model, 'kernel': platform.release(),
        'date_utc': datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds'),
        'python': platform.python_version(),
        'versions': {dist: _version(dist) for dist in (
            'ros-rclpy', 'ros-rmw-fastrtps-cpp', 'ros-fastdds', 'numpy',
            'opencv-python-headless', 'matplotlib', 'multicam_ros')} | {'gstreamer': gst},
        'rmw_implementation': os.environ.get('RMW_IMPLEMENTATION', 'rmw_fastrtps_cpp (default)'),
    }


# -- report -------------------------------------------------------------------------------

def _pair(a: Optional[float], b: Optional[float], digits: int = 1) -> str:
    if a is None or b is None:
        return '–'
    return f'{a:.{digits}f} / {b:.{digits}f}'


def progress_line(run: dict) -> str:
    """One line per configuration for the terminal."""
    head = f'{run["resolution"]:>9}  {run["transport"]:<15} {run["reliability"]:<11}'
    if run['error']:
        return f'{head} ERROR: {run["error"]}'
    receive = _pair(run['capture_to_receive_p50_ms'], run['capture_to_receive_p99_ms'])
    publish = _pair(run['capture_to_publish_p50_ms'], run['capture_to_publish_p99_ms'])
    return (f'{head} {run["frames_received"]:4d}/{run["frames_expected"]:.0f} frames '
            f'({100 * run["delivered_fraction"]:5.1f} %)  capture->receive {receive} ms  '
            f'capture->publish {publish} ms  CPU camera_node {run["camera_cpu_percent"]:.0f} % '
            f'subscriber {run["probe_cpu_percent"]:.0f} % '
            f'rtsp server {_fmt(run["rtsp_server_cpu_percent"], "%", 0)}  '
            f'first frame {_fmt(run["first_frame_after_s"], "s")}  '
            f'load {run["load_average"][0]:.1f}')


def _fmt(value: Optional[float], unit: str, digits: int = 1) -> str:
    return 'never' if value is None else f'{value:.{digits}f} {unit}'


def markdown_table(results: dict) -> str:
    """The README table: one row per configuration, then the in-memory copy floor."""
    settings = results['settings']
    lines = [
        f'camera_node, one live RTSP camera at {STREAM_FPS} fps, subscriber in another process '
        f'(KEEP_LAST 1), {settings["seconds"]:g} s per row, '
        f'{results["machine"]["nproc"]} cores ({results["machine"]["cpu_model"]}), '
        f'load average {results["load_average_start"][0]:.1f} at start.',
        '',
        '| frame | transport | reliability | received, of the stream | received, of published '
        '| capture→receive p50 / p99 (ms) | capture→publish p50 / p99 (ms) '
        '| camera_node CPU (% of a core) |',
        '|---|---|---|---|---|---|---|---|',
    ]
    for run in results['runs']:
        transport = ('package profile (default subscriber)' if run['transport'] == PACKAGE_PROFILE
                     else f'`{run["transport"]}` on both')
        if run['error']:
            lines.append(f'| {run["resolution"]} | {transport} | {run["reliability"]} '
                         f'| error | – | – | – | – |')
            continue
        lines.append(
            f'| {run["resolution"]} | {transport} | {run["reliability"]} '
            f'| {100 * run["delivered_fraction"]:.0f} % ({run["receive_fps"]:.1f} fps) '
            f'| {_of_published(run)} '
            f'| {_pair(run["capture_to_receive_p50_ms"], run["capture_to_receive_p99_ms"])} '
            f'| {_pair(run["capture_to_publish_p50_ms"], run["capture_to_publish_p99_ms"])} '
            f'| {run["camera_cpu_percent"]:.0f} |')
    lines.append('')
    floors = ', '.join(f'{f["resolution"]} {f["copy_new_array_p50_ms"]:.2f} ms'
                       for f in results['floor'])
    lines.append(f'Floor, an in-memory copy of one bgr8 frame (numpy, median): {floors}.')
    lines.append('"Of the stream": frames received / (30 fps × window). "Of published": frames '
                 'received / frames camera_node published meanwhile (from its /diagnostics, '
                 'once a second, so ±1 %), i.e. the transport\'s share alone.')
    loads = [run['load_average'][0] for run in results['runs'] if run.get('load_average')]
    server = [run['rtsp_server_cpu_percent'] for run in results['runs']
              if run.get('rtsp_server_cpu_percent') is not None]
    if loads and server:
        lines.append(f'The machine was shared: 1-minute load average {min(loads):.1f}–'
                     f'{max(loads):.1f} during the runs; the RTSP test server (x264 encoder) '
                     f'alone used {min(server):.0f}–{max(server):.0f} % of a core.')
    return '\n'.join(lines) + '\n'


def _of_published(run: dict) -> str:
    published = run.get('camera_frames_published_in_window')
    if not published:
        return '–'
    return f'{100 * run["frames_received"] / published:.0f} % of {published}'


def plot(results: dict, path: Path) -> None:
    """Delivered fraction, capture-to-receive latency and camera_node CPU per configuration."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    resolutions = list(dict.fromkeys(run['resolution'] for run in results['runs']))
    transports = list(dict.fromkeys(run['transport'] for run in results['runs']))
    floor = {f['resolution']: f['copy_new_array_p50_ms'] for f in results['floor']}
    colors = {'reliable': '#1f77b4', 'best_effort': '#ff7f0e'}
    fig, axes = plt.subplots(len(resolutions), 3, figsize=(15, 4.2 * len(resolutions)),
                             squeeze=False)
    x = np.arange(len(transports))
    width = 0.38
    for row, resolution in enumerate(resolutions):
        ax_frac, ax_lat, ax_cpu = axes[row]
        for i, reliability in enumerate(RELIABILITIES):
            runs = {r['transport']: r for r in results['runs']
                    if r['resolution'] == resolution and r['reliability'] == reliability
                    and not r['error']}
            if not runs:
                continue
            offset = x + (i - 0.5) * width

            def values(key: str) -> List[float]:
                return [runs[t][key] if t in runs and runs[t][key] is not None else np.nan
                        for t in transports]

            ax_frac.bar(offset, [100 * v for v in values('delivered_fraction')], width,
                        color=colors[reliability], label=f'{reliability}, of the stream')
            of_published = [100 * runs[t]['frames_received']
                            / runs[t]['camera_frames_published_in_window']
                            if t in runs and runs[t].get('camera_frames_published_in_window')
                            else np.nan for t in transports]
            ax_frac.scatter(offset, of_published, marker='o', color='black', zorder=3,
                            label='of published' if i == 0 else None)
            ax_lat.bar(offset, values('capture_to_receive_p50_ms'), width,
                       color=colors[reliability], label=f'{reliability} p50')
            ax_lat.scatter(offset, values('capture_to_receive_p99_ms'), marker='_', s=300,
                           color='black', zorder=3, label='p99' if i == 0 else None)
            ax_cpu.bar(offset, values('camera_cpu_percent'), width,
                       color=colors[reliability], label=reliability)
        ax_lat.axhline(floor.get(resolution, np.nan), color='green', linestyle='--',
                       label=f'in-memory copy ({floor.get(resolution, np.nan):.2f} ms)')
        ax_lat.set_ylim(0, 1.3 * max([1.0] + [r['capture_to_receive_p99_ms'] for r in
                                              results['runs'] if r['resolution'] == resolution
                                              and r.get('capture_to_receive_p99_ms')]))
        for ax, title, unit in ((ax_frac, 'frames delivered', '% of stream'),
                                (ax_lat, 'capture → receive', 'ms'),
                                (ax_cpu, 'camera_node CPU', '% of one core')):
            ax.set_title(f'{resolution}@{STREAM_FPS}: {title}')
            ax.set_ylabel(unit)
            ax.set_xticks(x)
            ax.set_xticklabels(transports, fontsize=8)
            ax.legend(fontsize=7, loc='upper left')
        ax_frac.set_ylim(0, 140)  # room for the legend above 100 %
    fig.suptitle(f'camera_node → subscriber process, {results["machine"]["nproc"]} cores, '
                 f'{results["machine"]["date_utc"]}')
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


# -- main ---------------------------------------------------------------------------------

def configurations(quick: bool) -> List[Tuple[str, str]]:
    if quick:
        return list(QUICK_CONFIGS)
    return [(t, r) for t in TRANSPORTS for r in RELIABILITIES]


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--quick', action='store_true',
                        help=f'{len(QUICK_CONFIGS)} configurations per resolution, 3 s each')
    parser.add_argument('--seconds', type=float, default=None,
                        help='measurement window per configuration (default 10, quick 3)')
    parser.add_argument('--out-dir', type=Path, default=BENCH / 'results')
    parser.add_argument('--log-dir', type=Path, default=None,
                        help='keep the processes\' logs here (default: a temporary folder)')
    parser.add_argument('--replot', type=Path, metavar='JSON', default=None,
                        help='measure nothing: rewrite the table and plot of a results file')
    args = parser.parse_args(argv)
    if args.replot is not None:
        results = json.loads(args.replot.read_text())
        table = markdown_table(results)
        args.replot.with_suffix('.md').write_text(table)
        plot(results, args.replot.with_suffix('.png'))
        print(table)
        return 0
    seconds = args.seconds if args.seconds is not None else (3.0 if args.quick else 10.0)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    if args.log_dir is None:
        with tempfile.TemporaryDirectory(prefix='camera_bench_') as log_dir:
            return run_all(args, seconds, Path(log_dir))
    args.log_dir.mkdir(parents=True, exist_ok=True)
    return run_all(args, seconds, args.log_dir)


def run_all(args: argparse.Namespace, seconds: float, log_dir: Path) -> int:
    """Measure every configuration, then write the JSON, the table and the plot."""
    guard = InterruptGuard()
    guard.install()

    started = time.monotonic()
    results: dict = {
        'benchmark': 'camera_node frames to a subscriber process (bench/camera_bench.py)',
        'command': ' '.join([Path(sys.executable).relative_to(REPO).as_posix()
                             if Path(sys.executable).is_relative_to(REPO) else sys.executable,
                             'bench/camera_bench.py'] + sys.argv[1:]),
        'machine': machine_info(),
        'load_average_start': [round(x, 2) for x in os.getloadavg()],
        'settings': {'seconds': seconds, 'stream_fps': STREAM_FPS, 'settle_s': SETTLE_S,
                     'first_frame_timeout_s': FIRST_FRAME_TIMEOUT_S, 'quick': args.quick,
                     'subscriber_qos': 'KEEP_LAST depth 1, VOLATILE',
                     'discovery_range': 'LOCALHOST',
                     'delivered_fraction': f'frames received / ({STREAM_FPS} fps x window)',
                     'capture_to_publish': 'camera_node /diagnostics, last message of the '
                                           'window (its last 300 frames)'},
        'floor': [copy_floor_ms(w, h) for w, h in RESOLUTIONS],
        'runs': [],
    }
    for floor in results['floor']:
        print(f'floor {floor["resolution"]:>9}: in-memory copy {floor["copy_new_array_p50_ms"]}'
              f' ms (into an existing array {floor["copy_into_existing_p50_ms"]} ms)',
              flush=True)
    domain_ids: Iterator[int] = iter(random.Random().sample(DOMAIN_IDS, len(DOMAIN_IDS)) * 4)
    interrupted = False
    try:
        for width, height in RESOLUTIONS:
            with RtspTestServer(count=1, width=width, height=height, fps=STREAM_FPS) as server:
                for transport, reliability in configurations(args.quick):
                    run = run_config(server.url(0), (width, height), transport, reliability,
                                     seconds, next(domain_ids), log_dir, guard)
                    results['runs'].append(run)
                    print(progress_line(run), flush=True)
    except KeyboardInterrupt:
        interrupted = True
        print('interrupted: writing what was measured so far', file=sys.stderr, flush=True)
    results['load_average_end'] = [round(x, 2) for x in os.getloadavg()]
    results['duration_s'] = round(time.monotonic() - started, 1)
    results['interrupted'] = interrupted

    # A quick or interrupted run never overwrites the results of a full one.
    stem = 'camera_bench' + ('_quick' if args.quick else '') + (
        '_interrupted' if interrupted else '')
    out = args.out_dir / stem
    out.with_suffix('.json').write_text(json.dumps(results, indent=2) + '\n')
    table = markdown_table(results)
    out.with_suffix('.md').write_text(table)
    if results['runs']:
        plot(results, out.with_suffix('.png'))
    print()
    print(table)
    print(f'wrote {out}.{{json,md,png}} in {results["duration_s"]:.0f} s', flush=True)
    return 130 if interrupted else 0


if __name__ == '__main__':
    sys.exit(main())
