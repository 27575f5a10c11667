"""`multicam-ros launch CONFIG`: start the node plan without ROS's launch tools, and watch it.

The same processes as `ros2 launch multicam_ros cams.launch.py` (both take them from
plan.node_plan and follow supervision.py): one camera_node per camera, one detector_node. Each
runs as `python -m <module of its executable> --ros-args -r __ns:=... -r __node:=...
--params-file F` (executables.py), with its parameters in a private temporary YAML file (never
on the command line, where a camera password would show in `ps`), in a process group of its own,
with the environment of plan.process_environment (a camera's password variable reaches that
camera only) and PARENT_PID_ENV set to the supervisor's pid (the node ends when the supervisor
dies, however it dies: supervision.py).

The supervisor
- refuses to start a plan whose node names are already alive on the ROS graph (another run of
  the same configuration in the same ROS_DOMAIN_ID), naming them: exit code EXIT_RUNNING. On
  this host it knows at once: a run claims each node name in its ROS domain for its whole
  life (`claim_nodes`: abstract Unix socket addresses, which the kernel frees when the run
  dies, however it dies), so of two launches, even simultaneous ones, one gets the names.
  For nodes started otherwise (another host, ros2 launch) it asks the graph through
  `find_running` (cli.py gives it ros/graph.py, which waits for DDS discovery; without it,
  that check is skipped);
- cleans what killed runs left: their temporary folders (a run holds an flock on LOCK_NAME in
  its folder for its whole life, and the kernel drops it when the run dies, however it dies;
  a folder whose lock can be taken belongs to a dead run) and dead shared-memory frame
  segments (core/shm_frames.py);
- prints every line a node writes with the node's label in front (`[front] ...`,
  `[detector] ...`; its own lines start with `[launch]`), camera passwords replaced by ***;
- forwards SIGINT and SIGTERM (SIGHUP as SIGTERM) to every process group, kills what is left
  after a grace period (a second signal kills at once), and leaves no process behind;
- applies the supervision policy (supervision.py) when a process exits: a restart after the
  policy's delay (the detector too: the cameras go on publishing image_raw meanwhile); a camera
  with a configuration error is marked failed with its last output, and the others go on; a
  detector with a configuration error, or one that keeps failing fast, stops everything with
  its last output, telling apart a detector that never got going (no model report on
  /diagnostics yet) from one that stopped later;
- prints a status table every few seconds and at each exit (status.py), fed from /diagnostics
  by the listener it is given (`listen`: cli.py gives it ros/diagnostics_listener.py). This
  module stays ROS-free: without a listener the table shows only what the supervisor itself
  knows.

Processes are started from the thread that called `run`: the kernel's parent-death signal
fires when the thread that started a child ends, not only the process.
"""
import errno
import fcntl
import hashlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import deque
from pathlib import Path
from typing import Callable, Deque, Dict, IO, List, Mapping, Optional, Protocol, Sequence, \
    Tuple

import yaml

from multicam_ros.core.shm_frames import remove_stale_segments
from multicam_ros.core.sources import redact
from multicam_ros.system.config import ConfigError, load_config
from multicam_ros.system.executables import NODE_ENTRY_MODULE
from multicam_ros.system.plan import Plan, PlannedNode, node_plan
from multicam_ros.system.status import DiagnosticsBoard, ProcessStatus, detector_ready, \
    status_table
from multicam_ros.system.supervision import EXIT_CONFIG, Action, Decision, Supervision, \
    describe_exit, parent_pid_environment

STOP_TIMEOUT_S = 10.0
STATUS_PERIOD_S = 5.0
POLL_S = 0.1
TAIL_LINES = 15
MESSAGE_LINES = 3  # lines of a failed node's output that the status table repeats
# Exit codes of `multicam-ros launch`: 0 after SIGINT/SIGTERM; supervision.EXIT_FAILED (1) when
# the detector keeps failing; supervision.EXIT_CONFIG (2) for an invalid file (nothing started),
# a detector with a configuration error, or when every camera failed with one; and:
EXIT_RUNNING = 3  # the plan's nodes are already alive on the ROS graph: nothing started
WORKDIR_PREFIX = 'multicam-ros-'
WORKDIR_NAME = re.compile(re.escape(WORKDIR_PREFIX) + r'[a-z0-9_]{8}')  # what mkdtemp makes
PARAMS_SUFFIX = '.params.yaml'
LOCK_NAME = 'run.lock'  # held (flock) by the run that made the folder, for its whole life
UNLOCKED_GRACE_S = 60.0  # a folder without its lock file yet: being made, unless this old
CLAIM_PREFIX = 'multicam-ros'  # of the abstract socket addresses that claim node names
# Signals that stop the system. SIGHUP (the terminal went away) is handled too: the nodes run in
# sessions of their own, which a hang-up does not reach, so they must be stopped from here.
HANDLED_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


class Listener(Protocol):
    """What `listen` returns: something feeding the board until closed."""

    def close(self) -> None: ...


# listen(on_status) starts feeding on_status(name, values) with every /diagnostics status.
ListenerFactory = Callable[[Callable[[str, Dict[str, str]], None]], Listener]
# find_running(fqns) -> those of the fully qualified node names alive on the ROS graph now.
RunningNodesFinder = Callable[[Sequence[str]], List[str]]


# -- the run's folder ---------------------------------------------------------------------------


def make_workdir(parent: Optional[str] = None) -> Tuple[Path, int]:
    """A private temporary folder for this run and the descriptor of its lock (held until the
    descriptor is closed or the process dies)."""
    workdir = Path(tempfile.mkdtemp(prefix=WORKDIR_PREFIX, dir=parent))
    # Locked under another name first, then renamed into place: another launcher's clean-up
    # never finds the lock file unlocked (a folder holding an unknown name is left alone).
    making = workdir / (LOCK_NAME + '.new')
    descriptor = os.open(making, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o600)
    fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
    os.rename(making, workdir / LOCK_NAME)
    return workdir, descriptor


def claim_nodes(fqns: Sequence[str], domain_id: str,
                prefix: str = CLAIM_PREFIX) -> Tuple[List[socket.socket], List[str]]:
    """Claim each node name in ROS domain `domain_id` for this run, in sorted order: (the
    claims, to be kept for the run's life; the names another run on this host holds, empty
    when all were claimed). A claim is a Unix socket bound to an abstract address (Linux): one
    process at a time can hold it, it leaves no file behind, and the kernel frees it when the
    process dies, however it dies. Once a name is found held, those after it are only tried
    (bound and let go at once), so that the refusal names them all, and the claims made before
    it are let go: a refused run keeps nothing. Where abstract addresses do not exist, nothing
    is claimed; OSError where binding fails otherwise."""
    if not sys.platform.startswith('linux'):
        return [], []
    domain = re.sub(r'[^0-9A-Za-z_-]', '_', domain_id)
    claims: List[socket.socket] = []
    held: List[str] = []
    for fqn in sorted(set(fqns)):
        name = f'{prefix}/d{domain}{fqn}'.encode()
        if len(name) > 100:  # an abstract address holds 107 bytes: the long name's digest
            name = f'{CLAIM_PREFIX}/{hashlib.sha256(name).hexdigest()}'.encode()
        claim = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            claim.bind(b'\0' + name)
        except OSError as exc:
            claim.close()
            if exc.errno != errno.EADDRINUSE:
                raise
            held.append(fqn)
            continue
        if held:  # only trying, for the message
            claim.close()
        else:
            claims.append(claim)
    if held:
        for claim in claims:
            claim.close()
        claims = []
    return claims, held


def remove_dead_workdirs(parent: Optional[str] = None) -> List[Path]:
    """Remove the folders of this user's runs that died without cleaning up (their lock can be
    taken; params files in them may hold passwords) in `parent` (default: the temp folder);
    return those removed. Only folders that are certainly a run's are touched: a mkdtemp name
    with WORKDIR_PREFIX, this user's, holding nothing but a lock and params files. One without
    a lock file is left alone for UNLOCKED_GRACE_S (its run may be making it right now)."""
    parent = parent or tempfile.gettempdir()
    removed = []
    try:
        entries = list(os.scandir(parent))
    except OSError:
        return removed
    for entry in entries:
        try:
            if not WORKDIR_NAME.fullmatch(entry.name) or \
                    not entry.is_dir(follow_symlinks=False) or \
                    entry.stat(follow_symlinks=False).st_uid != os.getuid() or \
                    not _only_run_files(Path(entry.path)):
                continue
            if _dead_workdir(Path(entry.path), entry.stat(follow_symlinks=False).st_mtime):
                shutil.rmtree(entry.path, ignore_errors=True)
                removed.append(Path(entry.path))
        except OSError:
            continue
    return removed


def _only_run_files(path: Path) -> bool:
    """True if `path` holds only what a run writes there: its lock and params files."""
    return all(entry.is_file(follow_symlinks=False)
               and (entry.name == LOCK_NAME or entry.name.endswith(PARAMS_SUFFIX))
               for entry in os.scandir(path))


def _dead_workdir(path: Path, mtime_s: float) -> bool:
    try:
        descriptor = os.open(path / LOCK_NAME, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        return time.time() - mtime_s > UNLOCKED_GRACE_S
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except OSError as exc:
        if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
            return False  # its run is alive
        raise
    finally:
        os.close(descriptor)


# -- commands and parameter files --------------------------------------------------------------


def write_params_file(node: PlannedNode, directory: Path) -> Path:
    """Write the node's parameters in rclpy's --params-file layout, keyed by its full name,
    readable by this user only (they may hold a password)."""
    path = directory / (node.fqn.strip('/').replace('/', '.') + PARAMS_SUFFIX)
    document = {node.fqn: {'ros__parameters': dict(node.parameters)}}
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, 'w', encoding='utf-8') as stream:
        yaml.safe_dump(document, stream, default_flow_style=False, sort_keys=False)
    return path


def node_command(node: PlannedNode, params_file: Path, log_level: str) -> List[str]:
    """The command line of one planned node, run with this interpreter."""
    return [sys.executable, '-m', NODE_ENTRY_MODULE, node.executable, '--ros-args',
            '-r', f'__ns:={node.namespace}', '-r', f'__node:={node.name}',
            '--params-file', str(params_file), '--log-level', log_level]


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
        self.supervision = Supervision(node.on_exit)
        self.failed = False  # a configuration error: never started again
        self.last_exit = ''
        self.message = ''
        self.tail: Deque[str] = deque(maxlen=TAIL_LINES)
        self._reader: Optional[threading.Thread] = None

    @property
    def restarts(self) -> int:
        return max(0, self.starts - 1)

    def start(self) -> None:
        self.tail.clear()
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

    def status(self, now_s: Optional[float] = None) -> ProcessStatus:
        """A snapshot for the status table."""
        now_s = time.monotonic() if now_s is None else now_s
        left_s = None if self.restart_at_s is None else max(0.0, self.restart_at_s - now_s)
        return ProcessStatus(running=self.running, restarting=self.restart_at_s is not None,
                             started_s=self.started_s, restarts=self.restarts,
                             restart_in_s=left_s, failed=self.failed,
                             last_exit=self.last_exit, message=self.message)

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

    def exited(self, code: int, now_s: float) -> Decision:
        """Apply the policy (supervision.py) to the exit of the current process: plan the next
        start, or mark the node failed, or leave the decision to stop to the caller."""
        decision = self.supervision.after_exit(code, now_s - self.started_s)
        self.last_exit = decision.reason
        if decision.action is Action.RESTART:
            self.restart_at_s = now_s + decision.delay_s
        elif decision.action is Action.MARK_FAILED:
            self.join_output()
            self.failed = True
            self.message = failure_message(list(self.tail))
        return decision


def failure_message(tail: Sequence[str]) -> str:
    """What a failed node said about why, in one line: from its last 'error' line on (at most
    MESSAGE_LINES lines), else its last line."""
    lines = [line.strip() for line in tail if line.strip()]
    if not lines:
        return '(no output)'
    starts = [i for i, line in enumerate(lines) if 'error' in line.lower()]
    first = starts[-1] if starts else len(lines) - 1
    return ' | '.join(lines[first:first + MESSAGE_LINES])


# -- the supervisor -------------------------------------------------------------------------------


class Supervisor:
    """Starts the plan's processes and keeps them as the module docstring says."""

    def __init__(self, plan: Plan, log_level: str = 'info',
                 status_period_s: float = STATUS_PERIOD_S,
                 stop_timeout_s: float = STOP_TIMEOUT_S, stream: IO[str] = sys.stdout,
                 listen: Optional[ListenerFactory] = None,
                 find_running: Optional[RunningNodesFinder] = None) -> None:
        self.plan = plan
        self.log_level = log_level
        self.status_period_s = status_period_s
        self.stop_timeout_s = stop_timeout_s
        self.output = Output(stream, plan.secrets)
        self.board = DiagnosticsBoard()
        self._listen = listen
        self._find_running = find_running
        self._stop_signal: Optional[int] = None
        self._force = False
        self._started_s = time.monotonic()

    def _on_signal(self, signum: int, _frame) -> None:
        if self._stop_signal is None:
            self._stop_signal = signum
        else:
            self._force = True  # a second signal: no more waiting

    def run(self) -> int:
        """Run until a signal (exit 0) or until the policy stops the system (module
        docstring: the exit codes)."""
        previous = {sig: signal.signal(sig, self._on_signal) for sig in HANDLED_SIGNALS}
        children: Dict[str, Child] = {}
        listener: Optional[Listener] = None
        workdir: Optional[Path] = None
        lock: Optional[int] = None
        claims: List[socket.socket] = []
        try:
            claims, running = self._claim()
            running = running or self._already_running()
            if running:
                return self._refuse(running)
            if self._stop_signal is not None:
                return 0
            self._clean_leftovers()
            workdir, lock = make_workdir()
            for node in self.plan.nodes:
                command = node_command(node, write_params_file(node, workdir), self.log_level)
                env = {**self.plan.process_environment(node, os.environ),
                       'PYTHONUNBUFFERED': '1', **parent_pid_environment()}
                children[node.fqn] = Child(node, command, env, self.output)
            self.output.lines(['[launch] ' + line for line in self.plan.describe()])
            if self._listen is not None:
                listener = self._listen(self.board.update)
            self._started_s = time.monotonic()
            for child in children.values():
                if self._stop_signal is None:
                    self._start(child)
            return self._supervise(children)
        finally:
            if children:
                self._stop_all(list(children.values()))
                remove_stale_segments()  # those of nodes that had to be killed
                say(self.output, 'every node stopped')
            if listener is not None:
                listener.close()
            if workdir is not None:
                shutil.rmtree(workdir, ignore_errors=True)
            if lock is not None:
                os.close(lock)
            for claim in claims:
                claim.close()
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def _claim(self) -> Tuple[List[socket.socket], List[str]]:
        try:
            return claim_nodes([node.fqn for node in self.plan.nodes],
                               os.environ.get('ROS_DOMAIN_ID', '0'))
        except OSError as exc:  # the graph check below still runs
            say(self.output, f'warning: cannot claim the node names on this host ({exc}); '
                'relying on the ROS graph alone to find another run of them')
            return [], []

    def _already_running(self) -> List[str]:
        if self._find_running is None:
            return []
        try:
            return sorted(self._find_running([node.fqn for node in self.plan.nodes]))
        except Exception as exc:  # noqa: BLE001 - the check must not stop a launch
            say(self.output, f'warning: cannot look at the ROS graph ({exc}); starting '
                'without checking for nodes that already run')
            return []

    def _refuse(self, running: Sequence[str]) -> int:
        self.output.lines([
            f'[launch] error: not starting {self.plan.config_path}: these nodes are already '
            f'running in ROS_DOMAIN_ID {os.environ.get("ROS_DOMAIN_ID", "0")}: '
            + ', '.join(running),
            '[launch]   (another launch of this configuration?) Stop it first, or use '
            'another ROS_DOMAIN_ID or other camera names; nothing started'])
        return EXIT_RUNNING

    def _clean_leftovers(self) -> None:
        """What killed runs left behind: their folders and dead frame segments."""
        for path in remove_dead_workdirs():
            say(self.output, f'removed {path}, left by a run that was killed')
        for name in remove_stale_segments():
            say(self.output, f'removed the shared-memory segment {name} of a dead camera')

    def _start(self, child: Child) -> None:
        child.start()
        again = f', restart {child.restarts}' if child.restarts else ''
        say(self.output, f'started {child.node.fqn} (pid {child.proc.pid}{again})')

    def _supervise(self, children: Dict[str, Child]) -> int:
        next_status_s = self._started_s + self.status_period_s
        while self._stop_signal is None:
            now_s = time.monotonic()
            changed = False
            for child in children.values():
                if child.failed:
                    continue
                if child.restart_at_s is not None:
                    if now_s >= child.restart_at_s:
                        self._start(child)
                    continue
                code = child.poll()
                if code is None:
                    continue
                changed = True
                pid = child.proc.pid
                decision = child.exited(code, now_s)
                if decision.action is Action.STOP_SYSTEM:
                    return self._stop_system(child, decision)
                if decision.action is Action.RESTART:
                    say(self.output, f'{child.node.fqn} (pid {pid}) {describe_exit(code)}; '
                        f'restarting in {decision.delay_s:.1f} s')
                else:
                    self._say_failed(child, pid)
            cameras = [child for child in children.values() if child.node.is_camera]
            if cameras and all(child.failed for child in cameras):
                say(self.output, 'error: every camera failed with a configuration error; '
                    'nothing left to serve')
                self._print_status(children, now_s)
                return EXIT_CONFIG
            if self.status_period_s > 0 and (changed or now_s >= next_status_s):
                next_status_s = now_s + self.status_period_s
                self._print_status(children, now_s)
            time.sleep(POLL_S)
        say(self.output, f'{signal.Signals(self._stop_signal).name}: stopping every node')
        return 0

    def _print_status(self, children: Mapping[str, Child], now_s: float) -> None:
        self.output.lines(status_table(self.plan, self.board, _statuses(children, now_s),
                                       now_s - self._started_s))

    def _say_failed(self, child: Child, pid: int) -> None:
        """A node failed for good: say why (its last output), and that the others go on."""
        lines = [f'[launch] error: {child.node.fqn} (pid {pid}) failed, not restarted: '
                 f'{child.last_exit}; its last output:']
        lines += [f'[launch]   {text}' for text in child.tail] or ['[launch]   (none)']
        lines.append('[launch] the other nodes go on')
        self.output.lines(lines)

    def _stop_system(self, child: Child, decision: Decision) -> int:
        """The detector cannot go on: say why (its last output), then stop everything."""
        child.join_output()
        ready = detector_ready(self.board, child.node.fqn, child.started_s)
        what = 'stopped' if ready else 'could not start'
        lines = [f'[launch] error: the detector {child.node.fqn} {what}: {decision.reason}; '
                 f'its last output:']
        lines += [f'[launch]   {text}' for text in child.tail] or ['[launch]   (none)']
        lines.append('[launch] stopping the cameras: the detector is not restarted')
        self.output.lines(lines)
        self._stop_signal = signal.SIGTERM
        return decision.exit_code

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


def _statuses(children: Mapping[str, Child], now_s: float) -> Dict[str, ProcessStatus]:
    return {fqn: child.status(now_s) for fqn, child in children.items()}


def launch_main(config_path: str, detector: bool = True, log_level: str = 'info',
                status_period_s: float = STATUS_PERIOD_S, stop_timeout_s: float = STOP_TIMEOUT_S,
                dry_run: bool = False, listen: Optional[ListenerFactory] = None,
                find_running: Optional[RunningNodesFinder] = None) -> int:
    """Validate CONFIG, then start and supervise its plan (or only print it with dry_run).

    `listen` feeds the status table from /diagnostics, `find_running` finds the plan's nodes
    already on the ROS graph (see the module docstring). Exit codes: 0 after SIGINT/SIGTERM,
    1 when the detector keeps failing, 2 for an invalid file (then nothing was started), a
    detector with a configuration error or when every camera failed with one, 3 when the plan's
    nodes are already running (nothing started).
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
    return Supervisor(plan, log_level, status_period_s, stop_timeout_s, listen=listen,
                      find_running=find_running).run()
