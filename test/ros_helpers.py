"""Helpers for tests that use real rclpy and DDS: isolated contexts, executor threads, and
nodes started as separate processes exactly as a user starts them."""
import itertools
import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence

import rclpy
from rclpy.context import Context
from rclpy.executors import MultiThreadedExecutor, SingleThreadedExecutor
from rclpy.node import Node

REPO = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent

# Domain ids 1..200 are valid for Fast DDS on every distro; start at a random point so that
# two suites running at once on one machine are unlikely to share one.
_domain_ids = itertools.cycle(random.Random(os.getpid()).sample(range(1, 201), 200))


def next_domain_id() -> int:
    """A ROS_DOMAIN_ID that no other test of this run uses at the same time."""
    return next(_domain_ids)


# Discovery on loopback only, on every distro: Iron and later read ROS_AUTOMATIC_DISCOVERY_RANGE,
# Humble's rcl knows only ROS_LOCALHOST_ONLY (Jazzy honours it too, with a deprecation warning;
# Kilted and later ignore it).
LOCALHOST_DISCOVERY = {'ROS_AUTOMATIC_DISCOVERY_RANGE': 'LOCALHOST', 'ROS_LOCALHOST_ONLY': '1'}


def isolated_env(domain_id: int, extra: Optional[Dict[str, str]] = None) -> Dict[str, str]:
    """Environment for a child process that only talks to this test's domain, on loopback."""
    env = dict(os.environ)
    env['ROS_DOMAIN_ID'] = str(domain_id)
    env.update(LOCALHOST_DISCOVERY)
    env['PYTHONUNBUFFERED'] = '1'
    env.update(extra or {})
    return env


def ros_distro() -> str:
    """The ROS 2 distribution under test, lower case: ROS_DISTRO where a setup script set it,
    else told by rclpy's version (the venv's PyPI wheels set no ROS_DISTRO)."""
    if os.environ.get('ROS_DISTRO'):
        return os.environ['ROS_DISTRO'].strip().lower()
    from importlib.metadata import PackageNotFoundError, version
    try:
        major = int(version('ros-rclpy').split('.')[0])
    except PackageNotFoundError:
        import xml.etree.ElementTree as ElementTree
        from ament_index_python.packages import get_package_share_directory
        manifest = Path(get_package_share_directory('rclpy')) / 'package.xml'
        major = int(ElementTree.parse(manifest).getroot().findtext('version').split('.')[0])
    # rclpy's major version per release: Humble 3, Iron 4, Jazzy 7, Kilted 9 (rolling between
    # releases counts as the next one).
    for last_major, distro in ((3, 'humble'), (4, 'iron'), (7, 'jazzy'), (9, 'kilted')):
        if major <= last_major:
            return distro
    return 'rolling'


def make_context(domain_id: int) -> Context:
    """An rclpy context of its own, so a test never shares the global one."""
    context = Context()
    rclpy.init(context=context, domain_id=domain_id)
    return context


class ExecutorThread:
    """Spins nodes in a background thread: a SingleThreadedExecutor by default (in rclpy it
    takes messages much faster than the multi-threaded one), or a MultiThreadedExecutor with
    `num_threads` > 1."""

    def __init__(self, context: Context, nodes: Sequence[Node] = (), num_threads: int = 1):
        self._executor = (MultiThreadedExecutor(num_threads=num_threads, context=context)
                          if num_threads > 1 else SingleThreadedExecutor(context=context))
        for node in nodes:
            self._executor.add_node(node)
        self._thread = threading.Thread(target=self._spin, daemon=True)

    def _spin(self) -> None:
        try:
            self._executor.spin()
        except Exception:  # noqa: BLE001 - context shut down under us at teardown
            pass

    def add_node(self, node: Node) -> None:
        self._executor.add_node(node)

    def __enter__(self) -> 'ExecutorThread':
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._executor.shutdown(timeout_sec=2.0)
        self._thread.join(timeout=5.0)


def wait_for(predicate: Callable[[], bool], timeout_s: float, interval_s: float = 0.05) -> bool:
    """Poll `predicate` until it is true or `timeout_s` passes; returns its last value."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval_s)
    return bool(predicate())


def stop_signals_caught(pid: int) -> bool:
    """Whether process `pid` handles SIGTERM itself: a node executable does from the moment it
    installed its stop signals, before the node's slow imports (multicam_ros/ros/entry.py);
    the interpreter alone never does."""
    try:
        for line in Path(f'/proc/{pid}/status').read_text().splitlines():
            if line.startswith('SigCgt:'):
                return bool(int(line.split()[1], 16) & (1 << (signal.SIGTERM - 1)))
    except OSError:
        pass
    return False


class NodeProcess:
    """A node (or any console script of the venv) in its own process, as a user runs it.

    Output goes to a log file so that a test can show it when something fails.
    """

    def __init__(self, command: Sequence[str], env: Dict[str, str], log_path: Path):
        self.command = list(command)
        self.log_path = log_path
        self._log = open(log_path, 'wb')
        executable = self.command[0]
        if os.sep not in executable:
            candidate = VENV_BIN / executable
            if not candidate.exists():
                raise FileNotFoundError(
                    f'{candidate} does not exist: run `make setup` to install the console '
                    f'scripts of multicam_ros into .venv')
            self.command[0] = str(candidate)
        self.proc = subprocess.Popen(self.command, env=env, stdout=self._log,
                                     stderr=subprocess.STDOUT, cwd=str(REPO),
                                     start_new_session=True)

    @property
    def running(self) -> bool:
        return self.proc.poll() is None

    def output(self) -> str:
        if not self._log.closed:
            self._log.flush()
        return self.log_path.read_text(errors='replace')

    def send(self, sig: int) -> None:
        if self.running:
            self.proc.send_signal(sig)

    def stop(self, sig: int = signal.SIGINT, timeout_s: float = 10.0) -> Optional[int]:
        """Send `sig`, wait, and kill the whole process group if it does not end in time."""
        if self.running:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=5.0)
        self._log.close()
        return self.proc.returncode

    def wait(self, timeout_s: float) -> int:
        return self.proc.wait(timeout=timeout_s)


class NodeLauncher:
    """Starts node processes for one test and stops every one of them at teardown."""

    def __init__(self, domain_id: int, log_dir: Path):
        self.domain_id = domain_id
        self.log_dir = log_dir
        self.processes: List[NodeProcess] = []

    def start(self, command: Sequence[str], name: Optional[str] = None,
              env: Optional[Dict[str, str]] = None) -> NodeProcess:
        name = name or Path(command[0]).name
        log_path = self.log_dir / f'{len(self.processes):02d}-{name}.log'
        proc = NodeProcess(command, isolated_env(self.domain_id, env), log_path)
        self.processes.append(proc)
        return proc

    def stop_all(self) -> None:
        for proc in self.processes:
            proc.stop()

    def logs(self) -> str:
        return '\n'.join(f'--- {p.log_path.name} ---\n{p.output()}' for p in self.processes)


class TopicRecorder:
    """Records every message of one topic with its receive time (ns, ROS clock)."""

    def __init__(self, node: Node, msg_type, topic: str, qos) -> None:
        self._node = node
        self._lock = threading.Lock()
        self._items: List[tuple] = []
        self.subscription = node.create_subscription(msg_type, topic, self._on_message, qos)

    def _on_message(self, msg) -> None:
        received_ns = self._node.get_clock().now().nanoseconds
        with self._lock:
            self._items.append((received_ns, msg))

    @property
    def items(self) -> List[tuple]:
        """(received_ns, message) pairs so far."""
        with self._lock:
            return list(self._items)

    @property
    def messages(self) -> list:
        return [msg for _, msg in self.items]

    def count(self) -> int:
        with self._lock:
            return len(self._items)

    def clear(self) -> None:
        with self._lock:
            self._items.clear()


def stamp_ns(header) -> int:
    return header.stamp.sec * 1_000_000_000 + header.stamp.nanosec
