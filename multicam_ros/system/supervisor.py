"""`multicam-ros launch CONFIG`: start the node plan without ROS's launch tools, and watch it.

The same processes as `ros2 launch multicam_ros cams.launch.py` (both take them from
config.node_plan): one camera_node per camera, one detector_node. Each runs as
`python -m multicam_ros.<executable> --ros-args -r __ns:=... -r __node:=... --params-file F`,
with its parameters in a private temporary YAML file (never on the command line, where a camera
password would show in `ps`), in a process group of its own.

The launcher
- prints every line a node writes with the node's label in front (`[front] ...`,
  `[detector] ...`; its own lines start with `[launch]`), camera passwords replaced by ***;
- forwards SIGINT and SIGTERM (SIGHUP as SIGTERM) to every process group, kills what is left
  after a grace period (a second signal kills at once), and leaves no process behind (unless
  the launcher itself is killed with SIGKILL, which no process can act on);
- starts a camera process that died again, waiting 1 s, then doubling up to 30 s while it keeps
  dying (config.RESTART_DELAY_*);
- stops everything with a clear message and exit code 1 when the detector exits, telling apart
  a detector that could not start (no /diagnostics from it yet) from one that stopped later;
- prints a status table every few seconds, read from /diagnostics by a small rclpy node in this
  process: exactly what a ROS user sees there.
"""
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import deque
from pathlib import Path
from typing import Deque, Dict, IO, List, Optional, Sequence, Tuple

import yaml

from multicam_ros.system.config import (CAMERA_EXECUTABLE, DETECTOR_EXECUTABLE, RESTART_DELAY_MAX_S,
                                 RESTART_DELAY_MIN_S, STABLE_RUN_S, ConfigError, Plan,
                                 PlannedNode, load_config, node_plan)
from multicam_ros.core.sources import redact

EXECUTABLE_MODULES = {CAMERA_EXECUTABLE: 'multicam_ros.ros.camera_node',
                      DETECTOR_EXECUTABLE: 'multicam_ros.ros.detector_node'}
STOP_TIMEOUT_S = 10.0
STATUS_PERIOD_S = 5.0
POLL_S = 0.1
TAIL_LINES = 15
LISTENER_NODE_NAME = 'multicam_ros_launch'
EXIT_CONFIG = 2
EXIT_DETECTOR = 1
EMPTY = '-'
# Signals that stop the system. SIGHUP (the terminal went away) is handled too: the nodes run in
# sessions of their own, which a hang-up does not reach, so they must be stopped from here.
HANDLED_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


# -- commands and parameter files --------------------------------------------------------------


def params_document(node: PlannedNode) -> Dict[str, Dict]:
    """The node's parameters in rclpy's --params-file layout, keyed by its full name."""
    return {node.fqn: {'ros__parameters': dict(node.parameters)}}


def write_params_file(node: PlannedNode, directory: Path) -> Path:
    """Write the node's parameter file, readable by this user only (it may hold a password)."""
    path = directory / (node.fqn.strip('/').replace('/', '.') + '.params.yaml')
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, 'w', encoding='utf-8') as stream:
        yaml.safe_dump(params_document(node), stream, default_flow_style=False, sort_keys=False)
    return path


def node_command(node: PlannedNode, params_file: Path, log_level: str) -> List[str]:
    """The command line of one planned node, run with this interpreter."""
    return [sys.executable, '-m', EXECUTABLE_MODULES[node.executable], '--ros-args',
            '-r', f'__ns:={node.namespace}', '-r', f'__node:={node.name}',
            '--params-file', str(params_file), '--log-level', log_level]


def describe_exit(code: int) -> str:
    """Popen return code -> 'exit code 2' or 'killed by SIGKILL'."""
    if code < 0:
        try:
            return f'killed by {signal.Signals(-code).name}'
        except ValueError:
            return f'killed by signal {-code}'
    return f'exit code {code}'


# -- output -------------------------------------------------------------------------------------


class Output:
    """Writes whole lines from all threads to one stream, labelled and redacted."""

    def __init__(self, stream: IO[str], secrets: Sequence[str] = ()) -> None:
        self._stream = stream
        self._secrets = tuple(secrets)
        self._lock = threading.Lock()

    def line(self, label: str, text: str) -> str:
        """Print `[label] text`; returns the printed (redacted) text."""
        text = redact(text, self._secrets)
        self.lines([f'[{label}] {text}'])
        return text

    def lines(self, lines: Sequence[str]) -> None:
        text = ''.join(redact(line, self._secrets) + '\n' for line in lines)
        with self._lock:
            try:
                self._stream.write(text)
                self._stream.flush()
            except (OSError, ValueError):  # stdout closed: keep draining the nodes' pipes
                pass


def say(output: Output, text: str) -> None:
    output.line('launch', text)


# -- processes ----------------------------------------------------------------------------------


class Child:
    """One planned node as a supervised process; `start` may be called again after it died."""

    def __init__(self, node: PlannedNode, command: List[str], env: Dict[str, str],
                 output: Output) -> None:
        self.node = node
        self.command = command
        self.env = env
        self.output = output
        self.proc: Optional[subprocess.Popen] = None
        self.started_s = 0.0
        self.starts = 0
        self.restart_at_s: Optional[float] = None
        self.delay_s = RESTART_DELAY_MIN_S
        self.tail: Deque[str] = deque(maxlen=TAIL_LINES)
        self._reader: Optional[threading.Thread] = None

    @property
    def restarts(self) -> int:
        return max(0, self.starts - 1)

    def start(self) -> None:
        self.proc = subprocess.Popen(self.command, env=self.env, stdin=subprocess.DEVNULL,
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        self.started_s = time.monotonic()
        self.starts += 1
        self.restart_at_s = None
        self._reader = threading.Thread(target=self._read, args=(self.proc,), daemon=True,
                                        name=f'output-{self.node.label}')
        self._reader.start()

    def _read(self, proc: subprocess.Popen) -> None:
        for raw in iter(proc.stdout.readline, b''):
            text = raw.decode('utf-8', errors='replace').rstrip('\r\n')
            self.tail.append(self.output.line(self.node.label, text))
        proc.stdout.close()

    def poll(self) -> Optional[int]:
        """The exit code once the current process ended, else None."""
        return None if self.proc is None else self.proc.poll()

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def signal_group(self, sig: int) -> None:
        """Send `sig` to the process group (the node and anything it started)."""
        if self.proc is None:
            return
        try:
            os.killpg(self.proc.pid, sig)
        except (ProcessLookupError, PermissionError):
            pass

    def join_output(self, timeout_s: float = 2.0) -> None:
        if self._reader is not None:
            self._reader.join(timeout=timeout_s)

    def schedule_restart(self, now_s: float) -> float:
        """Plan the next start with exponential backoff; returns the delay."""
        if now_s - self.started_s >= STABLE_RUN_S:
            self.delay_s = RESTART_DELAY_MIN_S
        delay_s = self.delay_s
        self.restart_at_s = now_s + delay_s
        self.delay_s = min(self.delay_s * 2.0, RESTART_DELAY_MAX_S)
        return delay_s


# -- status from /diagnostics ---------------------------------------------------------------------


class DiagnosticsBoard:
    """The newest /diagnostics status of each name, with when it arrived. Thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._statuses: Dict[str, Tuple[float, Dict[str, str]]] = {}

    def update(self, name: str, values: Dict[str, str]) -> None:
        with self._lock:
            self._statuses[name] = (time.monotonic(), dict(values))

    def values(self, name: str, since_s: float = 0.0) -> Optional[Dict[str, str]]:
        """The values of status `name` received at or after `since_s`, or None."""
        with self._lock:
            entry = self._statuses.get(name)
        if entry is None or entry[0] < since_s:
            return None
        return entry[1]


def _value(values: Optional[Dict[str, str]], key: str) -> str:
    """values[key], or '-' when there is no such status or value (yet)."""
    return EMPTY if not values or key not in values else values[key]


def _table(header: Sequence[str], rows: Sequence[Sequence[str]], left: int) -> List[str]:
    """Columns padded to their widest cell; the first `left` columns left-aligned."""
    widths = [max(len(str(row[i])) for row in [header, *rows]) for i in range(len(header))]
    lines = []
    for row in [header, *rows]:
        cells = [str(cell).ljust(width) if i < left else str(cell).rjust(width)
                 for i, (cell, width) in enumerate(zip(row, widths))]
        lines.append('  ' + '  '.join(cells).rstrip())
    return lines


def status_table(plan: Plan, board: DiagnosticsBoard, children: Dict[str, Child],
                 uptime_s: float) -> List[str]:
    """The people's view of the system: one row per camera, one for the detector.

    Camera: state and capture fps (`fps in`) from its camera_node; frames processed per second,
    capture-to-detections latency p50 and drops from the detector; dropped = frames the camera
    replaced before publishing + frames the detector replaced before inference. Detector: mean
    and largest batch, device, model size, GPU memory reserved (CUDA only), inference p50.
    """
    detector = plan.detector
    rows = []
    for node in plan.cameras:
        child = children[node.fqn]
        camera = board.values(f'{node.fqn}: camera', child.started_s)
        served = board.values(f'{detector.fqn}: {node.namespace}') if detector else None
        if child.running:
            state = camera.get('state', EMPTY) if camera else 'starting'
        else:
            state = 'restarting' if child.restart_at_s is not None else 'exited'
        dropped = EMPTY
        if camera or served:
            dropped = str(sum(int((values or {}).get(key, 0)) for values, key in (
                (camera, 'stale_frames_dropped'), (served, 'frames_dropped'))))
        rows.append([node.label, state, _value(camera, 'capture_fps'),
                     _value(served, 'frames_processed_hz'), _value(served, 'latency_p50_ms'),
                     dropped, str(child.restarts)])
    lines = [f'[launch] status after {uptime_s:.0f} s']
    lines += _table(['camera', 'state', 'fps in', 'fps done', 'latency ms', 'dropped',
                     'restarts'], rows, left=2)
    if detector:
        child = children[detector.fqn]
        model = board.values(f'{detector.fqn}: model', child.started_s)
        state = ('running' if model else 'starting') if child.running else 'exited'
        lines += _table(
            ['detector', 'state', 'batch', 'max', 'device', 'model MB', 'GPU MB',
             'inference ms'],
            [[detector.label, state, _value(model, 'batch_size_mean'),
              _value(model, 'batch_size_max'),
              _value(model, 'device'), _value(model, 'model_memory_mb'),
              _value(model, 'cuda_reserved_mb'), _value(model, 'inference_p50_ms')]],
            left=2)
    return lines


class DiagnosticsListener:
    """A small rclpy node in this process that feeds /diagnostics into a DiagnosticsBoard."""

    def __init__(self, board: DiagnosticsBoard) -> None:
        import rclpy
        from diagnostic_msgs.msg import DiagnosticArray
        from rclpy.context import Context
        from rclpy.executors import SingleThreadedExecutor
        from rclpy.signals import SignalHandlerOptions

        self._board = board
        self._context = Context()
        # The launcher handles SIGINT/SIGTERM itself: they must reach the children first.
        rclpy.init(args=[], context=self._context,
                   signal_handler_options=SignalHandlerOptions.NO)
        self._node = rclpy.create_node(LISTENER_NODE_NAME, context=self._context)
        self._node.create_subscription(DiagnosticArray, '/diagnostics', self._on_message, 50)
        self._executor = SingleThreadedExecutor(context=self._context)
        self._executor.add_node(self._node)
        self._thread = threading.Thread(target=self._spin, daemon=True, name='diagnostics')
        self._thread.start()

    def _spin(self) -> None:
        try:
            self._executor.spin()
        except Exception:  # noqa: BLE001 - the context is shut down under it at close
            pass

    def _on_message(self, msg) -> None:
        for status in msg.status:
            self._board.update(status.name, {kv.key: kv.value for kv in status.values})

    def close(self) -> None:
        self._executor.shutdown(timeout_sec=1.0)
        self._node.destroy_node()
        self._context.try_shutdown()
        self._thread.join(timeout=2.0)


# -- the supervisor -------------------------------------------------------------------------------


class Supervisor:
    """Starts the plan's processes and keeps them as the module docstring says."""

    def __init__(self, plan: Plan, log_level: str = 'info',
                 status_period_s: float = STATUS_PERIOD_S,
                 stop_timeout_s: float = STOP_TIMEOUT_S, stream: IO[str] = sys.stdout) -> None:
        self.plan = plan
        self.log_level = log_level
        self.status_period_s = status_period_s
        self.stop_timeout_s = stop_timeout_s
        self.output = Output(stream, plan.secrets)
        self.board = DiagnosticsBoard()
        self._stop_signal: Optional[int] = None
        self._force = False

    def _on_signal(self, signum: int, _frame) -> None:
        if self._stop_signal is None:
            self._stop_signal = signum
        else:
            self._force = True  # a second signal: no more waiting

    def run(self) -> int:
        """Run until a signal (exit 0) or until the detector exits (exit 1)."""
        previous = {sig: signal.signal(sig, self._on_signal) for sig in HANDLED_SIGNALS}
        workdir = Path(tempfile.mkdtemp(prefix='multicam-ros-'))
        children: Dict[str, Child] = {}
        listener = None
        try:
            env = {**os.environ, **self.plan.environment, 'PYTHONUNBUFFERED': '1'}
            for node in self.plan.nodes:
                command = node_command(node, write_params_file(node, workdir), self.log_level)
                children[node.fqn] = Child(node, command, {**env, **node.environment},
                                           self.output)
            self.output.lines(['[launch] ' + line for line in self.plan.describe()])
            listener = DiagnosticsListener(self.board)
            for child in children.values():
                if self._stop_signal is None:
                    self._start(child)
            return self._supervise(children)
        finally:
            self._stop_all(list(children.values()))
            say(self.output, 'every node stopped')
            if listener is not None:
                listener.close()
            shutil.rmtree(workdir, ignore_errors=True)
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def _start(self, child: Child) -> None:
        child.start()
        again = f', restart {child.restarts}' if child.restarts else ''
        say(self.output, f'started {child.node.fqn} (pid {child.proc.pid}{again})')

    def _supervise(self, children: Dict[str, Child]) -> int:
        started_s = time.monotonic()
        next_status_s = started_s + self.status_period_s
        while self._stop_signal is None:
            now_s = time.monotonic()
            for child in children.values():
                code = child.poll()
                if child.restart_at_s is not None:
                    if now_s >= child.restart_at_s:
                        self._start(child)
                elif code is not None:
                    if child.node.required:
                        return self._detector_exited(child, code)
                    delay_s = child.schedule_restart(now_s)
                    say(self.output, f'{child.node.fqn} (pid {child.proc.pid}) '
                        f'{describe_exit(code)}; restarting in {delay_s:.1f} s')
            if self.status_period_s > 0 and now_s >= next_status_s:
                next_status_s = now_s + self.status_period_s
                self.output.lines(status_table(self.plan, self.board, children,
                                               now_s - started_s))
            time.sleep(POLL_S)
        say(self.output, f'{signal.Signals(self._stop_signal).name}: stopping every node')
        return 0

    def _detector_exited(self, child: Child, code: int) -> int:
        child.join_output()
        ready = self.board.values(f'{child.node.fqn}: model', child.started_s) is not None
        what = 'stopped' if ready else 'could not start'
        lines = [f'[launch] error: the detector {child.node.fqn} {what} '
                 f'({describe_exit(code)}); its last output:']
        lines += [f'[launch]   {text}' for text in child.tail] or ['[launch]   (none)']
        lines.append('[launch] stopping the cameras: there is nothing to serve them')
        self.output.lines(lines)
        self._stop_signal = signal.SIGTERM
        return EXIT_DETECTOR

    def _stop_all(self, children: List[Child]) -> None:
        """Forward the stop signal to every process group, wait, then kill what is left."""
        sig = signal.SIGTERM if self._stop_signal in (None, signal.SIGHUP) else self._stop_signal
        running = [child for child in children if child.running]
        for child in running:
            child.signal_group(sig)
        deadline_s = time.monotonic() + self.stop_timeout_s
        while any(child.running for child in running) and not self._force \
                and time.monotonic() < deadline_s:
            time.sleep(POLL_S)
        for child in running:
            if child.running:
                say(self.output, f'{child.node.fqn} (pid {child.proc.pid}) did not stop in '
                    f'{self.stop_timeout_s:g} s: killing it')
            child.signal_group(signal.SIGKILL)  # also whatever the node itself started
        for child in running:
            child.proc.wait()
            child.join_output()
        for child in children:
            child.restart_at_s = None


def launch_main(config_path: str, detector: bool = True, log_level: str = 'info',
                status_period_s: float = STATUS_PERIOD_S, stop_timeout_s: float = STOP_TIMEOUT_S,
                dry_run: bool = False) -> int:
    """Validate CONFIG, then start and supervise its plan (or only print it with dry_run).

    Exit codes: 0 after SIGINT/SIGTERM, 1 when the detector exits, 2 for an invalid file
    (then nothing was started).
    """
    try:
        plan = node_plan(load_config(config_path), detector=detector)
    except ConfigError as exc:
        print(f'multicam-ros launch: {config_path} is not valid, nothing started:\n{exc}',
              file=sys.stderr, flush=True)
        return EXIT_CONFIG
    if dry_run:
        print('\n'.join(plan.describe()), flush=True)
        return 0
    return Supervisor(plan, log_level, status_period_s, stop_timeout_s).run()
