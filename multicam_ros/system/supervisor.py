"""`multicam-ros launch CONFIG`: start the node plan without ROS's launch tools, and watch it.

The same processes as `ros2 launch multicam_ros cams.launch.py` (both take them from
plan.node_plan and follow supervision.py): one camera_node per camera, one detector_node. Each
runs as `python -m <module of its executable> --ros-args -r __ns:=... -r __node:=...
--params-file F` (executables.py), with its parameters in a private temporary YAML file (never
on the command line, where a camera password would show in `ps`), in a process group of its own.

The supervisor
- prints every line a node writes with the node's label in front (`[front] ...`,
  `[detector] ...`; its own lines start with `[launch]`), camera passwords replaced by ***;
- forwards SIGINT and SIGTERM (SIGHUP as SIGTERM) to every process group, kills what is left
  after a grace period (a second signal kills at once), and leaves no process behind (unless
  it is itself killed with SIGKILL, which no process can act on);
- applies the supervision policy when a process exits: a camera is started again after the
  policy's delay; the detector's exit stops everything with a clear message and exit code 1,
  telling apart a detector that could not start (no /diagnostics from it yet) from one that
  stopped later;
- prints a status table every few seconds (status.py), fed from /diagnostics by the listener it
  is given (`listen`: cli.py gives it ros/diagnostics_listener.py). This module stays ROS-free:
  without a listener the table shows only what the supervisor itself knows.
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
from typing import Callable, Deque, Dict, IO, List, Mapping, Optional, Protocol, Sequence

import yaml

from multicam_ros.core.sources import redact
from multicam_ros.system.config import ConfigError, load_config
from multicam_ros.system.executables import NODE_MODULES
from multicam_ros.system.plan import Plan, PlannedNode, node_plan
from multicam_ros.system.status import DiagnosticsBoard, ProcessStatus, detector_ready, \
    status_table
from multicam_ros.system.supervision import OnExit, RestartDelay

STOP_TIMEOUT_S = 10.0
STATUS_PERIOD_S = 5.0
POLL_S = 0.1
TAIL_LINES = 15
EXIT_CONFIG = 2
EXIT_DETECTOR = 1
# Signals that stop the system. SIGHUP (the terminal went away) is handled too: the nodes run in
# sessions of their own, which a hang-up does not reach, so they must be stopped from here.
HANDLED_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


class Listener(Protocol):
    """What `listen` returns: something feeding the board until closed."""

    def close(self) -> None: ...


# listen(on_status) starts feeding on_status(name, values) with every /diagnostics status.
ListenerFactory = Callable[[Callable[[str, Dict[str, str]], None]], Listener]


# -- commands and parameter files --------------------------------------------------------------


def write_params_file(node: PlannedNode, directory: Path) -> Path:
    """Write the node's parameters in rclpy's --params-file layout, keyed by its full name,
    readable by this user only (they may hold a password)."""
    path = directory / (node.fqn.strip('/').replace('/', '.') + '.params.yaml')
    document = {node.fqn: {'ros__parameters': dict(node.parameters)}}
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, 'w', encoding='utf-8') as stream:
        yaml.safe_dump(document, stream, default_flow_style=False, sort_keys=False)
    return path


def node_command(node: PlannedNode, params_file: Path, log_level: str) -> List[str]:
    """The command line of one planned node, run with this interpreter."""
    return [sys.executable, '-m', NODE_MODULES[node.executable], '--ros-args',
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
        self.restart_delay = RestartDelay()
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

    def status(self) -> ProcessStatus:
        """A snapshot for the status table."""
        return ProcessStatus(running=self.running, restarting=self.restart_at_s is not None,
                             started_s=self.started_s, restarts=self.restarts)

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
        """Plan the next start after the policy's delay (supervision.py); returns the delay."""
        delay_s = self.restart_delay.after_exit(now_s - self.started_s)
        self.restart_at_s = now_s + delay_s
        return delay_s


# -- the supervisor -------------------------------------------------------------------------------


class Supervisor:
    """Starts the plan's processes and keeps them as the module docstring says."""

    def __init__(self, plan: Plan, log_level: str = 'info',
                 status_period_s: float = STATUS_PERIOD_S,
                 stop_timeout_s: float = STOP_TIMEOUT_S, stream: IO[str] = sys.stdout,
                 listen: Optional[ListenerFactory] = None) -> None:
        self.plan = plan
        self.log_level = log_level
        self.status_period_s = status_period_s
        self.stop_timeout_s = stop_timeout_s
        self.output = Output(stream, plan.secrets)
        self.board = DiagnosticsBoard()
        self._listen = listen
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
        listener: Optional[Listener] = None
        try:
            env = {**os.environ, **self.plan.environment, 'PYTHONUNBUFFERED': '1'}
            for node in self.plan.nodes:
                command = node_command(node, write_params_file(node, workdir), self.log_level)
                children[node.fqn] = Child(node, command, {**env, **node.environment},
                                           self.output)
            self.output.lines(['[launch] ' + line for line in self.plan.describe()])
            if self._listen is not None:
                listener = self._listen(self.board.update)
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
                    if child.node.on_exit is OnExit.STOP_SYSTEM:
                        return self._stop_system(child, code)
                    delay_s = child.schedule_restart(now_s)
                    say(self.output, f'{child.node.fqn} (pid {child.proc.pid}) '
                        f'{describe_exit(code)}; restarting in {delay_s:.1f} s')
            if self.status_period_s > 0 and now_s >= next_status_s:
                next_status_s = now_s + self.status_period_s
                self.output.lines(status_table(self.plan, self.board,
                                               _statuses(children), now_s - started_s))
            time.sleep(POLL_S)
        say(self.output, f'{signal.Signals(self._stop_signal).name}: stopping every node')
        return 0

    def _stop_system(self, child: Child, code: int) -> int:
        """The detector exited: say why (its last output), then stop everything."""
        child.join_output()
        ready = detector_ready(self.board, child.node.fqn, child.started_s)
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


def _statuses(children: Mapping[str, Child]) -> Dict[str, ProcessStatus]:
    return {fqn: child.status() for fqn, child in children.items()}


def launch_main(config_path: str, detector: bool = True, log_level: str = 'info',
                status_period_s: float = STATUS_PERIOD_S, stop_timeout_s: float = STOP_TIMEOUT_S,
                dry_run: bool = False, listen: Optional[ListenerFactory] = None) -> int:
    """Validate CONFIG, then start and supervise its plan (or only print it with dry_run).

    `listen` feeds the status table from /diagnostics (see the module docstring). Exit codes:
    0 after SIGINT/SIGTERM, 1 when the detector exits, 2 for an invalid file (then nothing was
    started).
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
    return Supervisor(plan, log_level, status_period_s, stop_timeout_s, listen=listen).run()
