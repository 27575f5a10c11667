"""Bring-up: `multicam-ros launch` end to end on the RTSP test bed, and the launch file's use of
the node plan (with launch_ros where it imports, with recording stand-ins where it does not)."""
import importlib.util
import io
import os
import re
import signal
import subprocess
import sys
import time
import types
from pathlib import Path
from typing import Dict, List, Optional

import pytest
from rclpy.node import Node
from rclpy.qos import QoSProfile, ReliabilityPolicy
from vision_msgs.msg import Detection2DArray

from multicam_ros.system.config import ConfigError, load_config
from multicam_ros.system.plan import Plan, node_plan
from multicam_ros.system.supervision import CONFIG_ERROR_EXIT, DETECTOR_FAST_FAILURES_MAX, \
    PARENT_PID_ENV, RESTART_DELAY_MAX_S, RESTART_DELAY_MIN_S, STABLE_RUN_S, Action, Supervision
from multicam_ros.system.supervisor import UNLOCKED_GRACE_S, WORKDIR_PREFIX, Child, Output, \
    claim_nodes, make_workdir, remove_dead_workdirs
from multicam_ros.system.transport import FASTDDS_BUILTIN_TRANSPORTS_ENV, FASTDDS_PROFILE_ENV, \
    FASTRTPS_PROFILE_ENV, packaged_fastdds_profile
from multicam_testbed.processes import alive, cmdline
from model_fixtures import scripted_detector_yaml
from ros_helpers import REPO, ExecutorThread, TopicRecorder, stamp_ns, wait_for

pytestmark = pytest.mark.timeout(240)

LAUNCH_FILE = REPO / 'launch' / 'cams.launch.py'
DEEP = QoSProfile(depth=50, reliability=ReliabilityPolicy.RELIABLE)
SECRET = 'pa55-word-from-env'
PASSWORD_VAR = 'MULTICAM_TEST_CAM_PASSWORD'
STARTED = re.compile(r'^\[launch\] started (\S+) \(pid (\d+)', re.MULTILINE)


RECONNECT_FAST = 'camera_defaults:\n  reconnect_delay_max_s: 2.0\n'  # cameras back soon


def write_config(path: Path, urls: List[str], model_path: Path) -> Path:
    """Cameras cam0..camN-1; the last one takes its password from the environment (a password
    written in a url stays in that url)."""
    cameras = ''.join(f'  - {{name: cam{i}, url: "{url}"}}\n' for i, url in enumerate(urls[:-1]))
    last = urls[-1].replace('rtsp://', 'rtsp://viewer@')
    cameras += (f'  - name: cam{len(urls) - 1}\n    url: "{last}"\n'
                f'    password_env: {PASSWORD_VAR}\n')
    path.write_text('cameras:\n' + cameras + RECONNECT_FAST + scripted_detector_yaml(model_path))
    return path


def started_pids(output: str) -> Dict[str, List[int]]:
    """Node name -> pid of each start, in order, from the launcher's '[launch] started' lines."""
    pids: Dict[str, List[int]] = {}
    for name, pid in STARTED.findall(output):
        pids.setdefault(name, []).append(int(pid))
    return pids


@pytest.fixture
def leftover_guard():
    """Safety net: kill any node pid a test recorded that is still alive at teardown, so a
    failing test cannot leave processes behind for the next ones."""
    pids: List[int] = []
    yield pids
    for pid in pids:
        try:
            if alive(pid) and any('multicam_ros' in arg for arg in cmdline(pid)):
                os.kill(pid, signal.SIGKILL)
        except OSError:
            pass


def status_rows(output: str, camera: str) -> List[List[str]]:
    """Cells of every status-table row of `camera` printed so far (cells are separated by two
    spaces or more; status.py)."""
    rows = [re.split(r'\s{2,}', line.strip()) for line in output.splitlines()
            if line.startswith(f'  {camera} ')]
    return [row for row in rows if len(row) == len(CAMERA_COLUMNS)]


CAMERA_COLUMNS = ['camera', 'state', 'fps in', 'fps done', 'latency ms', 'dropped', 'invalid',
                  'too large', 'bad stamps', 'restarts']
RESTARTS = CAMERA_COLUMNS.index('restarts')


# -- end to end ---------------------------------------------------------------------------------


def test_three_cameras_detect_survive_a_killed_camera_and_stop_on_sigint(
        rtsp_server_factory, node_launcher, ros_context, center_box_model, tmp_path,
        leftover_guard):
    server = rtsp_server_factory(count=3, width=320, height=240, fps=15)
    config = write_config(tmp_path / 'cams.yaml', [server.url(i) for i in range(3)],
                          center_box_model)
    launcher = node_launcher.start(
        ['multicam-ros', 'launch', str(config), '--status-period', '2'], name='launcher',
        env={PASSWORD_VAR: SECRET})
    cameras = ['/cam0', '/cam1', '/cam2']
    probe = Node('probe', context=ros_context)
    detections = {cam: TopicRecorder(probe, Detection2DArray, f'{cam}/detections', DEEP)
                  for cam in cameras}
    with ExecutorThread(ros_context, [probe]):
        assert wait_for(lambda: all(d.count() >= 5 for d in detections.values()), 90.0), \
            {cam: d.count() for cam, d in detections.items()}
        leftover_guard.extend(p for ps in started_pids(launcher.output()).values() for p in ps)
        for cam in cameras:
            result = detections[cam].messages[-1]
            assert result.header.frame_id == f'{cam[1:]}_optical_frame'
            box = result.detections[0].bbox
            assert (box.center.position.x, box.center.position.y) == (160.0, 120.0)

        # The status table: a row per camera, read from /diagnostics.
        def table_shows_all_streaming() -> bool:
            output = launcher.output()
            return all(any(row[1] == 'streaming' and row[3] != '-'
                           for row in status_rows(output, cam[1:])) for cam in cameras)
        assert wait_for(table_shows_all_streaming, 30.0, interval_s=0.5), launcher.output()
        assert re.search(r'^  detector +running +[\d.]+ +\d+ +cpu ', launcher.output(),
                         re.MULTILINE), launcher.output()

        # Kill one camera process: it is started again and its detections resume.
        pids = started_pids(launcher.output())
        assert sorted(pids) == ['/cam0/camera_node', '/cam1/camera_node', '/cam2/camera_node',
                                '/detector']
        killed = pids['/cam1/camera_node'][0]
        os.kill(killed, signal.SIGKILL)
        assert wait_for(lambda: len(started_pids(launcher.output()).get(
            '/cam1/camera_node', [])) == 2, 30.0), launcher.output()
        restarted = started_pids(launcher.output())['/cam1/camera_node'][1]
        leftover_guard.append(restarted)
        assert restarted != killed and not alive(killed)
        assert f'/cam1/camera_node (pid {killed}) killed by SIGKILL; restarting in ' \
            f'{RESTART_DELAY_MIN_S:.1f} s' in launcher.output()
        assert 'cam1: restarting in 1.0 s, last exit: killed by SIGKILL after ' \
            in launcher.output()  # the table printed at the exit
        restart_ns = probe.get_clock().now().nanoseconds
        assert wait_for(lambda: sum(stamp_ns(m.header) > restart_ns
                                    for m in detections['/cam1'].messages) >= 5, 60.0), \
            launcher.output()
        assert wait_for(lambda: any(row[1] == 'streaming' and row[RESTARTS] == '1' for row in
                                    status_rows(launcher.output(), 'cam1')), 30.0, 0.5)

    # SIGINT to the launcher alone: it forwards it, and every node process ends.
    node_pids = [p for ps in started_pids(launcher.output()).values() for p in ps]
    assert len(node_pids) == 5
    launcher.send(signal.SIGINT)
    assert launcher.wait(timeout_s=30.0) == 0, launcher.output()
    assert [pid for pid in node_pids if alive(pid)] == []
    output = launcher.output()
    assert 'SIGINT: stopping every node' in output and 'every node stopped' in output
    assert 'did not stop' not in output  # they stopped on the forwarded signal, not killed
    assert SECRET not in output
    assert 'rtsp://viewer:***@' in output  # cam2's camera_node said where it connected
    probe.destroy_node()


def test_detector_with_a_configuration_error_stops_everything(node_launcher, tmp_path,
                                                              leftover_guard):
    """A configuration error is not restarted: exit 2 with the detector's own message."""
    broken_model = tmp_path / 'broken.torchscript'
    broken_model.write_bytes(b'this is not a TorchScript archive')
    config = write_config(tmp_path / 'cams.yaml', ['rtsp://127.0.0.1:9/none'] * 2,
                          broken_model)
    launcher = node_launcher.start(['multicam-ros', 'launch', str(config),
                                    '--status-period', '0'], name='launcher',
                                   env={PASSWORD_VAR: SECRET})
    assert launcher.wait(timeout_s=120.0) == 2, launcher.output()
    output = launcher.output()
    node_pids = [p for ps in started_pids(output).values() for p in ps]
    leftover_guard.extend(node_pids)
    assert len(node_pids) == 3  # started once each: no restart
    assert '[launch] error: the detector /detector could not start: configuration error ' \
        '(exit code 2 after ' in output
    assert re.search(r"^\[launch\]   .*model\.path: cannot load '.*broken\.torchscript'",
                     output, re.MULTILINE), output
    assert [pid for pid in node_pids if alive(pid)] == []
    assert 'every node stopped' in output


def test_sigterm_stops_cameras_only_system(node_launcher, tmp_path, leftover_guard):
    """--no-detector starts the cameras alone; SIGTERM is forwarded like SIGINT."""
    config = tmp_path / 'cams.yaml'
    config.write_text('cameras: [{name: a, url: "rtsp://127.0.0.1:9/a"}, '
                      '{name: b, url: "rtsp://127.0.0.1:9/b"}]\n')
    launcher = node_launcher.start(['multicam-ros', 'launch', str(config), '--no-detector',
                                    '--status-period', '1'], name='launcher')
    assert wait_for(lambda: len(status_rows(launcher.output(), 'b')) > 0
                    and 'reconnecting' in launcher.output(), 60.0), launcher.output()
    node_pids = [p for ps in started_pids(launcher.output()).values() for p in ps]
    leftover_guard.extend(node_pids)
    assert len(node_pids) == 2 and '/detector' not in launcher.output()
    assert all(alive(pid) for pid in node_pids)
    launcher.send(signal.SIGTERM)
    assert launcher.wait(timeout_s=30.0) == 0, launcher.output()
    assert [pid for pid in node_pids if alive(pid)] == []
    assert 'SIGTERM: stopping every node' in launcher.output()


def test_invalid_config_starts_nothing(node_launcher, tmp_path):
    config = tmp_path / 'bad.yaml'
    config.write_text('cameras:\n  - {name: front, url: "rtsp://h/x", fsp: 5}\n'
                      '  - {name: front, url: "rtsp:/h"}\n')
    launcher = node_launcher.start(['multicam-ros', 'launch', str(config)])
    assert launcher.wait(timeout_s=60.0) == 2
    output = launcher.output()
    assert f'{config} is not valid, nothing started' in output
    assert f"{config}: cameras[0] (name 'front'): fsp: unknown key" in output
    assert f"{config}: cameras[1]: name: 'front' is already the name of cameras[0]" in output
    assert '[launch]' not in output  # no plan printed, no process started


def test_dry_run_prints_the_plan_without_passwords(node_launcher, tmp_path):
    config = tmp_path / 'cams.yaml'
    config.write_text(f'cameras: [{{name: gate, url: "rtsp://admin:{SECRET}@10.1.2.3/s"}}]\n')
    launcher = node_launcher.start(['multicam-ros', 'launch', str(config), '--dry-run',
                                    '--no-detector'])
    assert launcher.wait(timeout_s=60.0) == 0
    output = launcher.output()
    assert '/gate/camera_node (camera_node): url=rtsp://admin@10.1.2.3/s, ' \
        'password_env=MULTICAM_ROS_PASSWORD_GATE' in output
    assert '1 camera, no detector' in output and '/detector' not in output
    assert SECRET not in output


# -- the launch file ------------------------------------------------------------------------------


class _Recorded:
    """Stand-in for a launch / launch_ros class: keeps its constructor arguments."""

    def __init__(self, *args, **kwargs) -> None:
        self.args = args
        self.kwargs = kwargs


class _LaunchConfiguration(_Recorded):
    def perform(self, context) -> str:
        return context.launch_configurations[self.args[0]]


def _stand_in_modules() -> Dict[str, types.ModuleType]:
    """Minimal `launch` and `launch_ros` modules whose classes record how they were made."""
    def module(name: str, **classes) -> types.ModuleType:
        made = types.ModuleType(name)
        for class_name, base in classes.items():
            setattr(made, class_name, type(class_name, (base,), {}))
        return made
    launch = module('launch', LaunchDescription=_Recorded)
    launch.actions = module('launch.actions', DeclareLaunchArgument=_Recorded, LogInfo=_Recorded,
                            OpaqueFunction=_Recorded, RegisterEventHandler=_Recorded,
                            TimerAction=_Recorded)
    launch.event_handlers = module('launch.event_handlers', OnProcessExit=_Recorded)
    launch.substitutions = module('launch.substitutions',
                                  LaunchConfiguration=_LaunchConfiguration)
    launch_ros = module('launch_ros')
    launch_ros.actions = module('launch_ros.actions', Node=_Recorded)
    return {'launch': launch, 'launch.actions': launch.actions,
            'launch.event_handlers': launch.event_handlers,
            'launch.substitutions': launch.substitutions, 'launch_ros': launch_ros,
            'launch_ros.actions': launch_ros.actions}


def _load_launch_file() -> types.ModuleType:
    spec = importlib.util.spec_from_file_location('cams_launch', LAUNCH_FILE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def launch_file_with_stand_ins(monkeypatch):
    """cams.launch.py loaded against the stand-ins, and the venv as the ament prefix."""
    for name, module in _stand_in_modules().items():
        monkeypatch.setitem(sys.modules, name, module)
    if not os.environ.get('AMENT_PREFIX_PATH'):
        monkeypatch.setenv('AMENT_PREFIX_PATH', sys.prefix)
    return _load_launch_file()


def _context(shutting_down: bool = False, environment: Optional[Dict[str, str]] = None,
             **configurations) -> types.SimpleNamespace:
    """What the launch file reads of a LaunchContext."""
    return types.SimpleNamespace(launch_configurations=configurations,
                                 is_shutdown=shutting_down,
                                 environment=dict(os.environ if environment is None
                                                  else environment))


def _run_launch_file(module, environment: Optional[Dict[str, str]] = None, **arguments) -> list:
    """generate_launch_description, then the OpaqueFunction, as `ros2 launch` would."""
    description = module.generate_launch_description()
    entities = description.args[0]
    declared = {e.args[0]: e.kwargs['default_value'] for e in entities
                if type(e).__name__ == 'DeclareLaunchArgument'}
    opaque = [e for e in entities if type(e).__name__ == 'OpaqueFunction']
    assert len(opaque) == 1
    return opaque[0].kwargs['function'](_context(environment=environment,
                                                 **{**declared, **arguments}))


def _nodes(entities: list) -> list:
    return [e for e in entities if type(e).__name__ == 'Node']


def _exit_handler(entities: list, node) -> Optional[_Recorded]:
    """The OnProcessExit registered for `node` among `entities`, if any."""
    handlers = [e.args[0] for e in entities if type(e).__name__ == 'RegisterEventHandler'
                and e.args[0].kwargs['target_action'] is node]
    assert len(handlers) <= 1
    return handlers[0] if handlers else None


def _expected_node_arguments(plan: Plan, log_level: str, environ: Dict[str, str]) -> List[dict]:
    """What each launch_ros Node must be given, from the plan's data: every parameter, and the
    environment of plan.process_environment with the launcher's pid."""
    expected = []
    for planned in plan.nodes:
        expected.append(dict(
            package='multicam_ros', executable=planned.executable, name=planned.name,
            namespace=planned.namespace, parameters=[planned.parameters],
            env={**plan.process_environment(planned, environ), PARENT_PID_ENV: str(os.getpid())},
            ros_arguments=['--log-level', log_level], output='screen'))
    return expected


def test_launch_file_declares_its_arguments(launch_file_with_stand_ins):
    description = launch_file_with_stand_ins.generate_launch_description()
    declared = {e.args[0]: e.kwargs['default_value'] for e in description.args[0]
                if type(e).__name__ == 'DeclareLaunchArgument'}
    installed = Path(sys.prefix) / 'share' / 'multicam_ros' / 'config' / 'cams.yaml'
    assert declared == {'config': str(installed), 'detector': 'true', 'log_level': 'info'}
    assert installed.is_file()


INLINE_SECRET = 'inline-pa55'


def test_launch_file_starts_exactly_the_plan(launch_file_with_stand_ins, tmp_path, monkeypatch):
    for variable in (FASTDDS_PROFILE_ENV, FASTRTPS_PROFILE_ENV, FASTDDS_BUILTIN_TRANSPORTS_ENV,
                     'RMW_IMPLEMENTATION'):
        monkeypatch.delenv(variable, raising=False)
    # cam0's password is written in its url: it must travel in cam0's environment only; cam2's
    # is in the launch's environment, and must reach cam2 only.
    environ = {'PATH': '/usr/bin', 'ROS_DOMAIN_ID': '7', PASSWORD_VAR: SECRET,
               'MULTICAM_ROS_PASSWORD_OLD': 'stale'}
    config = write_config(tmp_path / 'cams.yaml', [f'rtsp://admin:{INLINE_SECRET}@10.0.0.1/a',
                                                   'rtsp://10.0.0.2/b', 'rtsp://10.0.0.3/c'],
                          tmp_path / 'm.pt')
    monkeypatch.setenv(PASSWORD_VAR, SECRET)  # load_config checks that it is set
    entities = _run_launch_file(launch_file_with_stand_ins, environment=environ,
                                config=str(config))
    nodes = _nodes(entities)
    assert len(nodes) == 4

    # Written out here, not derived from the plan: a value the launch file drops, or the plan
    # loses, fails this.
    every = {'PATH': '/usr/bin', 'ROS_DOMAIN_ID': '7',
             FASTDDS_PROFILE_ENV: packaged_fastdds_profile(),
             FASTRTPS_PROFILE_ENV: packaged_fastdds_profile(),
             PARENT_PID_ENV: str(os.getpid())}  # the launch file runs in `ros2 launch`
    camera = dict(package='multicam_ros', executable='camera_node', name='camera_node',
                  ros_arguments=['--log-level', 'info'], output='screen')
    assert [node.kwargs for node in nodes] == [
        dict(camera, namespace='/cam0', parameters=[{
            'url': 'rtsp://admin@10.0.0.1/a', 'reconnect_delay_max_s': 2.0,
            'password_env': 'MULTICAM_ROS_PASSWORD_CAM0'}],
            env={**every, 'MULTICAM_ROS_PASSWORD_CAM0': INLINE_SECRET}),
        dict(camera, namespace='/cam1', parameters=[{
            'url': 'rtsp://10.0.0.2/b', 'reconnect_delay_max_s': 2.0}], env=every),
        dict(camera, namespace='/cam2', parameters=[{
            'url': 'rtsp://viewer@10.0.0.3/c', 'reconnect_delay_max_s': 2.0,
            'password_env': PASSWORD_VAR}], env={**every, PASSWORD_VAR: SECRET}),
        dict(package='multicam_ros', executable='detector_node', name='detector', namespace='/',
             parameters=[{'cameras': ['/cam0', '/cam1', '/cam2'],
                          'model.backend': 'torchscript', 'model.path': str(tmp_path / 'm.pt'),
                          'model.class_names': ['thing', 'other'], 'device': 'cpu',
                          'input_size': 320}],
             env=every, ros_arguments=['--log-level', 'info'], output='screen')]
    # ... and it is the plan `multicam-ros launch` starts.
    plan = node_plan(load_config(str(config)))
    assert [node.kwargs for node in nodes] == _expected_node_arguments(plan, 'info', environ)
    # Every node, the detector too, is supervised (restarted, or the launch ends).
    assert all(_exit_handler(entities, node) is not None for node in nodes)


def _expected_delays_s(count: int) -> List[float]:
    """The policy in words: from the minimum, doubling, capped at the maximum."""
    return [min(RESTART_DELAY_MIN_S * 2 ** i, RESTART_DELAY_MAX_S) for i in range(count)]


class _Clock:
    def __init__(self) -> None:
        self.now_s = 1000.0

    def monotonic(self) -> float:
        return self.now_s


def _only(entities: list, kind: str):
    (found,) = [e for e in entities if type(e).__name__ == kind]
    return found


def test_launch_file_restarts_a_camera_with_the_policy(launch_file_with_stand_ins, tmp_path,
                                                       monkeypatch):
    clock = _Clock()
    monkeypatch.setattr(launch_file_with_stand_ins, 'time', clock)
    config = tmp_path / 'cams.yaml'
    config.write_text('cameras: [{name: a, url: "rtsp://h/x"}]\n')
    entities = _run_launch_file(launch_file_with_stand_ins, config=str(config),
                                detector='false')
    (first,) = _nodes(entities)
    node = first
    delays_s = []
    # It keeps dying (never giving up: a camera), then one run is stable.
    runs_s = [0.5] * (DETECTOR_FAST_FAILURES_MAX + 3) + [STABLE_RUN_S]
    for run_s in runs_s:
        handler = _exit_handler(entities, node)
        assert handler.kwargs['handle_once'] is True
        clock.now_s += run_s
        log, timer = handler.kwargs['on_exit'](types.SimpleNamespace(returncode=1), _context())
        delays_s.append(timer.kwargs['period'])
        assert log.kwargs['msg'] == (f'/a/camera_node exited (exit code 1 after {run_s:.1f} s)'
                                     f'; restarting in {delays_s[-1]:.1f} s')
        (restart,) = timer.kwargs['actions']
        entities = restart.kwargs['function'](_context())
        (fresh,) = _nodes(entities)
        assert fresh is not node and fresh.kwargs == first.kwargs  # a new Node, same node
        node = fresh
    assert delays_s == _expected_delays_s(len(runs_s) - 1) + [RESTART_DELAY_MIN_S]
    # A configuration error: not restarted, and the launch goes on.
    (log,) = _exit_handler(entities, node).kwargs['on_exit'](
        types.SimpleNamespace(returncode=CONFIG_ERROR_EXIT), _context())
    assert log.kwargs['msg'].startswith('error: /a/camera_node failed, not restarted: '
                                        'configuration error (exit code 2 after ')
    assert log.kwargs['msg'].endswith('the other nodes go on')
    # While the launch shuts down, an exit is the end.
    handler = _exit_handler(entities, node)
    assert handler.kwargs['on_exit'](types.SimpleNamespace(returncode=-2),
                                     _context(shutting_down=True)) == []


def _launch_file_detector(module, tmp_path):
    config = tmp_path / 'cams.yaml'
    config.write_text(f'cameras: [{{name: a, url: "rtsp://h/x"}}]\n'
                      f'detector: {{model: {{path: {tmp_path / "m.pt"}}}}}\n')
    entities = _run_launch_file(module, config=str(config))
    detector = _nodes(entities)[-1]
    assert detector.kwargs['executable'] == 'detector_node'
    return entities, detector


def _stops_the_launch(actions: list, *words: str) -> None:
    """The actions say why, then end the launch with an error (ros2 launch exits 1)."""
    log, stop = actions
    assert log.kwargs['msg'].startswith('error: the detector /detector is not restarted: ')
    for word in words:
        assert word in log.kwargs['msg']
    with pytest.raises(RuntimeError, match='the detector /detector is not restarted'):
        stop.kwargs['function'](_context(), *stop.kwargs['args'])


def test_launch_file_restarts_the_detector_until_it_keeps_failing(
        launch_file_with_stand_ins, tmp_path, monkeypatch):
    clock = _Clock()
    monkeypatch.setattr(launch_file_with_stand_ins, 'time', clock)
    entities, node = _launch_file_detector(launch_file_with_stand_ins, tmp_path)
    delays_s = []
    # Killed after a stable run: restarted after the minimum delay; then it fails fast.
    for run_s in [STABLE_RUN_S] + [0.5] * (DETECTOR_FAST_FAILURES_MAX - 1):
        clock.now_s += run_s
        log, timer = _exit_handler(entities, node).kwargs['on_exit'](
            types.SimpleNamespace(returncode=-9), _context())
        assert log.kwargs['msg'].startswith('/detector exited (killed by SIGKILL after ')
        delays_s.append(timer.kwargs['period'])
        entities = timer.kwargs['actions'][0].kwargs['function'](_context())
        (node,) = _nodes(entities)
    assert delays_s == _expected_delays_s(DETECTOR_FAST_FAILURES_MAX)
    clock.now_s += 0.5  # the DETECTOR_FAST_FAILURES_MAX-th fast failure in a row
    on_exit = _exit_handler(entities, node).kwargs['on_exit']
    _stops_the_launch(on_exit(types.SimpleNamespace(returncode=1), _context()),
                      f'{DETECTOR_FAST_FAILURES_MAX} fast failures in a row',
                      'the last: exit code 1')


def test_launch_file_stops_on_a_detector_configuration_error(launch_file_with_stand_ins,
                                                             tmp_path):
    entities, node = _launch_file_detector(launch_file_with_stand_ins, tmp_path)
    on_exit = _exit_handler(entities, node).kwargs['on_exit']
    _stops_the_launch(on_exit(types.SimpleNamespace(returncode=CONFIG_ERROR_EXIT), _context()),
                      'configuration error (exit code 2')


# -- the policy -------------------------------------------------------------------------------


def _camera_and_detector(tmp_path: Path):
    config = tmp_path / 'cams.yaml'
    config.write_text('cameras: [{name: a, url: "rtsp://h/x"}]\n')
    return node_plan(load_config(str(config))).nodes


def test_both_starters_follow_one_policy(tmp_path):
    """`multicam-ros launch` waits exactly as long as the launch file before each restart."""
    camera, _ = _camera_and_detector(tmp_path)
    child = Child(camera, [], {}, Output(io.StringIO()))
    delays_s = []
    now_s = 1000.0
    for run_s in [0.5] * 7 + [STABLE_RUN_S]:
        child.started_s = now_s
        now_s += run_s
        decision = child.exited(-9, now_s)
        assert decision.action is Action.RESTART and child.restart_at_s == now_s + decision.delay_s
        delays_s.append(decision.delay_s)
        now_s = child.restart_at_s
    assert delays_s == _expected_delays_s(7) + [RESTART_DELAY_MIN_S]
    assert child.last_exit == f'killed by SIGKILL after {STABLE_RUN_S:.1f} s'


def test_policy_config_errors_fast_failures_and_stable_runs(tmp_path):
    camera, detector = _camera_and_detector(tmp_path)
    assert CONFIG_ERROR_EXIT == node_main_exit_config()
    # A configuration error: a camera is marked failed, the detector stops the system (exit 2).
    assert Supervision(camera.on_exit).after_exit(2, 1.0).action is Action.MARK_FAILED
    stop = Supervision(detector.on_exit).after_exit(2, 100.0)
    assert (stop.action, stop.exit_code) == (Action.STOP_SYSTEM, 2)
    # The detector gives up after DETECTOR_FAST_FAILURES_MAX fast failures in a row (exit 1);
    # a stable run in between starts the count again.
    policy = Supervision(detector.on_exit)
    runs_s = [1.0] * (DETECTOR_FAST_FAILURES_MAX - 1) + [STABLE_RUN_S] \
        + [STABLE_RUN_S - 0.1] * (DETECTOR_FAST_FAILURES_MAX - 1)
    assert [policy.after_exit(1, run_s).action for run_s in runs_s] == \
        [Action.RESTART] * len(runs_s)
    stop = policy.after_exit(-9, 0.2)
    assert (stop.action, stop.exit_code) == (Action.STOP_SYSTEM, 1)
    assert stop.reason == (f'{DETECTOR_FAST_FAILURES_MAX} fast failures in a row (each within '
                           f'{STABLE_RUN_S:g} s of its start), the last: killed by SIGKILL '
                           f'after 0.2 s')
    # A camera never gives up, and its delays stop growing at the maximum.
    policy = Supervision(camera.on_exit)
    decisions = [policy.after_exit(1, 0.1) for _ in range(20)]
    assert {d.action for d in decisions} == {Action.RESTART}
    assert decisions[-1].delay_s == RESTART_DELAY_MAX_S


def node_main_exit_config() -> int:
    from multicam_ros.ros.node_main import EXIT_CONFIG
    return EXIT_CONFIG


def test_each_camera_gets_only_its_own_password_variable(tmp_path, monkeypatch):
    monkeypatch.setenv('GATE_PW', 'gate-secret')
    config = tmp_path / 'cams.yaml'
    config.write_text('cameras: [{name: yard, url: "rtsp://u:yard-secret@h/x"},\n'
                      '  {name: gate, url: "rtsp://u@h/y", password_env: GATE_PW},\n'
                      '  {name: door, url: "rtsp://h/z"}]\n')
    plan = node_plan(load_config(str(config)))
    environ = {'HOME': '/home/u', 'GATE_PW': 'gate-secret', 'MULTICAM_ROS_PASSWORD_X': 'old'}
    yard, gate, door, detector = [plan.process_environment(node, environ)
                                  for node in plan.nodes]
    common = {'HOME': '/home/u', **plan.environment}
    assert yard == {**common, 'MULTICAM_ROS_PASSWORD_YARD': 'yard-secret'}
    assert gate == {**common, 'GATE_PW': 'gate-secret'}
    assert door == common and detector == common


# -- leftovers and the graph ---------------------------------------------------------------------


def test_dead_runs_folders_are_removed_live_ones_kept(tmp_path):
    live, lock = make_workdir(str(tmp_path))
    (live / 'x.params.yaml').write_text('secret')
    dead, dead_lock = make_workdir(str(tmp_path))
    os.close(dead_lock)  # what the kernel does when its run dies
    being_made = tmp_path / (WORKDIR_PREFIX + 'new_0000')
    being_made.mkdir()
    # Not a run's: another name, or other files in it (a user's clone, say); never touched.
    unrelated = [tmp_path / 'other-folder', tmp_path / (WORKDIR_PREFIX + 'dev'),
                 tmp_path / (WORKDIR_PREFIX + 'clone_00')]
    for folder in unrelated:
        folder.mkdir()
    (unrelated[2] / 'setup.py').write_text('')
    old = time.time() - UNLOCKED_GRACE_S - 1
    for folder in unrelated:
        os.utime(folder, (old, old))
    try:
        assert remove_dead_workdirs(str(tmp_path)) == [dead]
        assert live.is_dir() and not dead.exists() and being_made.is_dir()
        os.utime(being_made, (old, old))  # no lock file and old: a run that died making it
        assert remove_dead_workdirs(str(tmp_path)) == [being_made]
        assert all(folder.is_dir() for folder in unrelated)
    finally:
        os.close(lock)
    assert remove_dead_workdirs(str(tmp_path)) == [live]


def test_node_names_are_claimed_by_one_run_until_it_dies(tmp_path):
    """A run claims its node names in its ROS domain for its whole life: another run on the
    host is told which it holds, at once, without DDS discovery; nothing of a refused claim
    stays claimed; another domain or other names are free; a run killed with SIGKILL frees
    them. A real process holds them, with an address prefix of this test's own."""
    prefix = f'multicam-ros-test-{os.getpid()}-{tmp_path.name}'
    holder = subprocess.Popen([sys.executable, '-c', (
        'import sys, time\n'
        'from multicam_ros.system.supervisor import claim_nodes\n'
        f'taken, held = claim_nodes(["/cam0/camera_node", "/detector"], "7", {prefix!r})\n'
        'print(len(taken), held, flush=True)\n'
        'time.sleep(60)\n')], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().split() == ['2', '[]']
        taken, held = claim_nodes(['/detector', '/cam0/camera_node', '/a/camera_node'], '7',
                                  prefix)  # '/a/...' comes first: claimed, then let go
        assert (taken, held) == ([], ['/cam0/camera_node', '/detector'])
        mine, held = claim_nodes(['/a/camera_node'], '7', prefix)
        assert len(mine) == 1 and held == []  # not kept by the refused claim above
        other, held = claim_nodes(['/detector'], '8', prefix)
        assert len(other) == 1 and held == []
        long_name = '/' + 'x' * 200  # over an abstract address's length: hashed, still one
        first, _ = claim_nodes([long_name], '7', prefix)
        assert len(first) == 1 and claim_nodes([long_name], '7', prefix) == ([], [long_name])
        for claim in mine + other + first:
            claim.close()
    finally:
        holder.kill()
        holder.wait(10)
    taken, held = claim_nodes(['/cam0/camera_node', '/detector'], '7', prefix)
    assert len(taken) == 2 and held == []
    for claim in taken:
        claim.close()


def test_running_nodes_lists_the_nodes_on_the_graph(ros_context):
    from multicam_ros.ros.graph import running_nodes
    node = Node('camera_node', namespace='/graph_cam', context=ros_context)
    try:
        wanted = ['/graph_cam/camera_node', '/graph_other/camera_node']
        assert running_nodes(wanted, wait_s=10.0) == ['/graph_cam/camera_node']
        assert running_nodes(['/graph_cam/camera_node'], wait_s=10.0) == wanted[:1]
    finally:
        node.destroy_node()


def test_launch_file_arguments_detector_and_log_level(launch_file_with_stand_ins, tmp_path):
    config = tmp_path / 'cams.yaml'
    config.write_text('cameras: [{name: a, url: "rtsp://u:pw12@h/x"}, '
                      '{name: b, url: "rtsp://h/y"}]\n')
    nodes = _nodes(_run_launch_file(launch_file_with_stand_ins, config=str(config),
                                    detector='false', log_level='debug'))
    plan = node_plan(load_config(str(config)), detector=False)
    assert [node.kwargs for node in nodes] == _expected_node_arguments(plan, 'debug',
                                                                       dict(os.environ))
    assert nodes[0].kwargs['env']['MULTICAM_ROS_PASSWORD_A'] == 'pw12'
    assert 'MULTICAM_ROS_PASSWORD_A' not in nodes[1].kwargs['env']
    with pytest.raises(ConfigError, match="detector: 'maybe' is not a switch; accepted: 'true' "
                                          "or 'false'"):
        _run_launch_file(launch_file_with_stand_ins, config=str(config), detector='maybe')
    with pytest.raises(ConfigError, match="log_level: 'loud' is not a log level; accepted: "
                                          "debug, info"):
        _run_launch_file(launch_file_with_stand_ins, config=str(config), log_level='loud')


def test_launch_file_refuses_an_invalid_config(launch_file_with_stand_ins, tmp_path):
    config = tmp_path / 'cams.yaml'
    config.write_text('cameras: [{name: a-b, url: "rtsp://h/x"}]\n')
    with pytest.raises(ConfigError, match=r"cameras\[0\]: name: 'a-b' is not a valid ROS name"):
        _run_launch_file(launch_file_with_stand_ins, config=str(config))


def _real_launch_ros_check(tmp_path):
    """Where launch_ros is installed, the real classes accept what the launch file passes."""
    import launch
    from launch.actions import RegisterEventHandler
    from launch_ros.actions import Node as RosNode
    config = tmp_path / 'cams.yaml'
    config.write_text('cameras: [{name: a, url: "rtsp://h/x"}, {name: b, url: "rtsp://h/y"}]\n')
    context = launch.LaunchContext()
    context.launch_configurations.update(config=str(config), detector='true',
                                         log_level='info')
    description = _load_launch_file().generate_launch_description()
    opaque = [e for e in description.entities if isinstance(e, launch.actions.OpaqueFunction)]
    entities = opaque[0].execute(context)
    nodes = [e for e in entities if isinstance(e, RosNode)]
    plan = node_plan(load_config(str(config)))
    assert [(n.node_package, n.node_executable) for n in nodes] == [
        (p.package, p.executable) for p in plan.nodes]
    assert sum(isinstance(e, RegisterEventHandler) for e in entities) == 3  # one per node


# Collected only where launch_ros imports (a ROS install); elsewhere the stand-in tests above
# cover the launch file, and nothing is skipped.
if importlib.util.find_spec('launch_ros') is not None:
    test_launch_file_with_real_launch_ros = _real_launch_ros_check
