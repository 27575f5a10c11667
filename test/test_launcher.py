"""Bring-up: `multicam-ros launch` end to end on the RTSP test bed, and the launch file's use of
the node plan (with launch_ros where it imports, with recording stand-ins where it does not)."""
import importlib.util
import io
import os
import re
import signal
import sys
import textwrap
import types
from pathlib import Path
from typing import Dict, List, Optional

import pytest
from rclpy.node import Node
from rclpy.qos import QoSProfile, ReliabilityPolicy
from vision_msgs.msg import Detection2DArray

from multicam_ros.system.config import ConfigError, load_config
from multicam_ros.system.plan import Plan, node_plan
from multicam_ros.system.supervision import RESTART_DELAY_MAX_S, RESTART_DELAY_MIN_S, \
    STABLE_RUN_S
from multicam_ros.system.supervisor import Child, Output
from multicam_ros.system.transport import FASTDDS_BUILTIN_TRANSPORTS_ENV, FASTDDS_PROFILE_ENV, \
    FASTRTPS_PROFILE_ENV, packaged_fastdds_profile
from ros_helpers import REPO, ExecutorThread, TopicRecorder, stamp_ns, wait_for

pytestmark = pytest.mark.timeout(240)

LAUNCH_FILE = REPO / 'launch' / 'cams.launch.py'
DEEP = QoSProfile(depth=50, reliability=ReliabilityPolicy.RELIABLE)
SECRET = 'pa55-word-from-env'
PASSWORD_VAR = 'MULTICAM_TEST_CAM_PASSWORD'
STARTED = re.compile(r'^\[launch\] started (\S+) \(pid (\d+)', re.MULTILINE)


def write_config(path: Path, urls: List[str], model_path: Path) -> Path:
    """Cameras cam0..camN-1; the last one takes its password from the environment (a password
    written in a url stays in that url)."""
    cameras = ''.join(f'  - {{name: cam{i}, url: "{url}"}}\n' for i, url in enumerate(urls[:-1]))
    last = urls[-1].replace('rtsp://', 'rtsp://viewer@')
    cameras += (f'  - name: cam{len(urls) - 1}\n    url: "{last}"\n'
                f'    password_env: {PASSWORD_VAR}\n')
    path.write_text('cameras:\n' + cameras + textwrap.dedent(f"""\
        camera_defaults:
          reconnect_delay_max_s: 2.0
        detector:
          model:
            backend: torchscript
            path: {model_path}
            class_names: [thing, other]
          device: cpu
          input_size: 320
        """))
    return path


def started_pids(output: str) -> Dict[str, List[int]]:
    """Node name -> pid of each start, in order, from the launcher's '[launch] started' lines."""
    pids: Dict[str, List[int]] = {}
    for name, pid in STARTED.findall(output):
        pids.setdefault(name, []).append(int(pid))
    return pids


def alive(pid: int) -> bool:
    """True if `pid` is a live (not zombie) process."""
    try:
        stat = Path(f'/proc/{pid}/stat').read_text()
    except OSError:
        return False
    return stat.rsplit(')', 1)[1].split()[0] != 'Z'


@pytest.fixture
def leftover_guard():
    """Safety net: kill any node pid a test recorded that is still alive at teardown, so a
    failing test cannot leave processes behind for the next ones."""
    pids: List[int] = []
    yield pids
    for pid in pids:
        try:
            if alive(pid) and b'multicam_ros' in Path(f'/proc/{pid}/cmdline').read_bytes():
                os.kill(pid, signal.SIGKILL)
        except OSError:
            pass


def status_rows(output: str, camera: str) -> List[List[str]]:
    """Cells of every status-table row of `camera` printed so far."""
    return [line.split() for line in output.splitlines()
            if line.startswith(f'  {camera} ') and len(line.split()) == 7]


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
        restart_ns = probe.get_clock().now().nanoseconds
        assert wait_for(lambda: sum(stamp_ns(m.header) > restart_ns
                                    for m in detections['/cam1'].messages) >= 5, 60.0), \
            launcher.output()
        assert wait_for(lambda: any(row[1] == 'streaming' and row[6] == '1' for row in
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


def test_detector_that_cannot_start_stops_everything(node_launcher, tmp_path, leftover_guard):
    broken_model = tmp_path / 'broken.torchscript'
    broken_model.write_bytes(b'this is not a TorchScript archive')
    config = write_config(tmp_path / 'cams.yaml', ['rtsp://127.0.0.1:9/none'] * 2,
                          broken_model)
    launcher = node_launcher.start(['multicam-ros', 'launch', str(config),
                                    '--status-period', '0'], name='launcher',
                                   env={PASSWORD_VAR: SECRET})
    assert launcher.wait(timeout_s=120.0) == 1, launcher.output()
    output = launcher.output()
    node_pids = [p for ps in started_pids(output).values() for p in ps]
    leftover_guard.extend(node_pids)
    assert len(node_pids) == 3
    assert '[launch] error: the detector /detector could not start (exit code 2)' in output
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
                            Shutdown=_Recorded, TimerAction=_Recorded)
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


def _context(shutting_down: bool = False, **configurations) -> types.SimpleNamespace:
    """What the launch file reads of a LaunchContext."""
    return types.SimpleNamespace(launch_configurations=configurations,
                                 is_shutdown=shutting_down)


def _run_launch_file(module, **arguments) -> list:
    """generate_launch_description, then the OpaqueFunction, as `ros2 launch` would."""
    description = module.generate_launch_description()
    entities = description.args[0]
    declared = {e.args[0]: e.kwargs['default_value'] for e in entities
                if type(e).__name__ == 'DeclareLaunchArgument'}
    opaque = [e for e in entities if type(e).__name__ == 'OpaqueFunction']
    assert len(opaque) == 1
    return opaque[0].kwargs['function'](_context(**{**declared, **arguments}))


def _nodes(entities: list) -> list:
    return [e for e in entities if type(e).__name__ == 'Node']


def _exit_handler(entities: list, node) -> Optional[_Recorded]:
    """The OnProcessExit registered for `node` among `entities`, if any."""
    handlers = [e.args[0] for e in entities if type(e).__name__ == 'RegisterEventHandler'
                and e.args[0].kwargs['target_action'] is node]
    assert len(handlers) <= 1
    return handlers[0] if handlers else None


def _expected_node_arguments(plan: Plan, log_level: str) -> List[dict]:
    """What each launch_ros Node must be given, from the plan's data: every parameter, and the
    plan's environment merged with the node's own (a camera password moved out of its url)."""
    expected = []
    for planned in plan.nodes:
        expected.append(dict(
            package='multicam_ros', executable=planned.executable, name=planned.name,
            namespace=planned.namespace, parameters=[planned.parameters],
            additional_env={**plan.environment, **planned.environment},
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
    monkeypatch.setenv(PASSWORD_VAR, SECRET)
    # cam0's password is written in its url: it must travel in cam0's environment only.
    config = write_config(tmp_path / 'cams.yaml', [f'rtsp://admin:{INLINE_SECRET}@10.0.0.1/a',
                                                   'rtsp://10.0.0.2/b', 'rtsp://10.0.0.3/c'],
                          tmp_path / 'm.pt')
    entities = _run_launch_file(launch_file_with_stand_ins, config=str(config))
    nodes = _nodes(entities)
    assert len(nodes) == 4
    on_exit = [node.kwargs.pop('on_exit', None) for node in nodes]

    # Written out here, not derived from the plan: a value the launch file drops, or the plan
    # loses, fails this.
    every = {FASTDDS_PROFILE_ENV: packaged_fastdds_profile(),
             FASTRTPS_PROFILE_ENV: packaged_fastdds_profile()}
    camera = dict(package='multicam_ros', executable='camera_node', name='camera_node',
                  ros_arguments=['--log-level', 'info'], output='screen')
    assert [node.kwargs for node in nodes] == [
        dict(camera, namespace='/cam0', parameters=[{
            'url': 'rtsp://admin@10.0.0.1/a', 'reconnect_delay_max_s': 2.0,
            'password_env': 'MULTICAM_ROS_PASSWORD_CAM0'}],
            additional_env={**every, 'MULTICAM_ROS_PASSWORD_CAM0': INLINE_SECRET}),
        dict(camera, namespace='/cam1', parameters=[{
            'url': 'rtsp://10.0.0.2/b', 'reconnect_delay_max_s': 2.0}], additional_env=every),
        dict(camera, namespace='/cam2', parameters=[{
            'url': 'rtsp://viewer@10.0.0.3/c', 'reconnect_delay_max_s': 2.0,
            'password_env': PASSWORD_VAR}], additional_env=every),
        dict(package='multicam_ros', executable='detector_node', name='detector', namespace='/',
             parameters=[{'cameras': ['/cam0', '/cam1', '/cam2'],
                          'model.backend': 'torchscript', 'model.path': str(tmp_path / 'm.pt'),
                          'model.class_names': ['thing', 'other'], 'device': 'cpu',
                          'input_size': 320}],
             additional_env=every, ros_arguments=['--log-level', 'info'], output='screen')]
    # ... and it is the plan `multicam-ros launch` starts.
    plan = node_plan(load_config(str(config)))
    assert [node.kwargs for node in nodes] == _expected_node_arguments(plan, 'info')
    # The detector's exit ends the launch, like `multicam-ros launch`; cameras restart instead.
    assert on_exit[:3] == [None] * 3
    assert type(on_exit[3]).__name__ == 'Shutdown'
    assert [_exit_handler(entities, node) is not None for node in nodes] == [True] * 3 + [False]


def _expected_delays_s(count: int) -> List[float]:
    """The policy in words: from the minimum, doubling, capped at the maximum."""
    return [min(RESTART_DELAY_MIN_S * 2 ** i, RESTART_DELAY_MAX_S) for i in range(count)]


class _Clock:
    def __init__(self) -> None:
        self.now_s = 1000.0

    def monotonic(self) -> float:
        return self.now_s


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
    for run_s in [0.5] * 7 + [STABLE_RUN_S]:  # it keeps dying, then one run is stable
        handler = _exit_handler(entities, node)
        assert handler.kwargs['handle_once'] is True
        clock.now_s += run_s
        log, timer = handler.kwargs['on_exit'](types.SimpleNamespace(returncode=1), _context())
        delays_s.append(timer.kwargs['period'])
        assert log.kwargs['msg'] == (f'/a/camera_node exited with code 1; restarting in '
                                     f'{delays_s[-1]:.1f} s')
        (restart,) = timer.kwargs['actions']
        entities = restart.kwargs['function'](_context())
        (fresh,) = _nodes(entities)
        assert fresh is not node and fresh.kwargs == first.kwargs  # a new Node, same node
        node = fresh
    assert delays_s == _expected_delays_s(7) + [RESTART_DELAY_MIN_S]
    # While the launch shuts down, an exit is the end.
    handler = _exit_handler(entities, node)
    assert handler.kwargs['on_exit'](types.SimpleNamespace(returncode=-2),
                                     _context(shutting_down=True)) == []


def test_both_starters_follow_one_policy(tmp_path):
    """`multicam-ros launch` waits exactly as long as the launch file before each restart."""
    config = tmp_path / 'cams.yaml'
    config.write_text('cameras: [{name: a, url: "rtsp://h/x"}]\n')
    (camera,) = node_plan(load_config(str(config)), detector=False).nodes
    child = Child(camera, [], {}, Output(io.StringIO()))
    delays_s = []
    now_s = 1000.0
    for run_s in [0.5] * 7 + [STABLE_RUN_S]:
        child.started_s = now_s
        now_s += run_s
        delays_s.append(child.schedule_restart(now_s))
        assert child.restart_at_s == now_s + delays_s[-1]
        now_s = child.restart_at_s
    assert delays_s == _expected_delays_s(7) + [RESTART_DELAY_MIN_S]


def test_launch_file_arguments_detector_and_log_level(launch_file_with_stand_ins, tmp_path):
    config = tmp_path / 'cams.yaml'
    config.write_text('cameras: [{name: a, url: "rtsp://u:pw12@h/x"}, '
                      '{name: b, url: "rtsp://h/y"}]\n')
    nodes = _nodes(_run_launch_file(launch_file_with_stand_ins, config=str(config),
                                    detector='false', log_level='debug'))
    plan = node_plan(load_config(str(config)), detector=False)
    assert [node.kwargs for node in nodes] == _expected_node_arguments(plan, 'debug')
    assert nodes[0].kwargs['additional_env']['MULTICAM_ROS_PASSWORD_A'] == 'pw12'
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
    assert sum(isinstance(e, RegisterEventHandler) for e in entities) == 2  # one per camera


# Collected only where launch_ros imports (a ROS install); elsewhere the stand-in tests above
# cover the launch file, and nothing is skipped.
if importlib.util.find_spec('launch_ros') is not None:
    test_launch_file_with_real_launch_ros = _real_launch_ros_check
