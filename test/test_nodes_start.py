"""Both node commands start as real ROS 2 nodes and end within 2 s on SIGINT and SIGTERM; a
malformed --ros-args is a clear error (exit 2), unknown parameters are warned about, and
cpu_affinity keeps every thread of a node on its CPUs."""
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.node import Node

from ros_helpers import VENV_BIN, ExecutorThread, TopicRecorder, isolated_env, \
    stop_signals_caught, wait_for


def graph_has(node: Node, name: str, namespace: str) -> bool:
    return (name, namespace) in node.get_node_names_and_namespaces()


# name and parameters
NODES = {
    'camera_node': ('camera_node', ['-p', 'url:=rtsp://127.0.0.1:9/unreachable']),
    'detector_node': ('detector', ['-p', 'cameras:=[/cam0]', '-p', 'device:=cpu',
                                   '-p', 'model.backend:=torchvision',
                                   '-p', 'model.name:=ssdlite320_mobilenet_v3_large',
                                   '-p', 'model.weights:=none']),
}


@pytest.mark.parametrize('script', sorted(NODES))
@pytest.mark.parametrize('sig', [signal.SIGINT, signal.SIGTERM])
def test_node_joins_graph_and_stops_on_signal(ros_context, node_launcher, script, sig):
    observer = Node('observer', context=ros_context)
    name, params = NODES[script]
    # Its first /diagnostics message comes from a timer: the node is fully up and spinning.
    diagnostics = TopicRecorder(observer, DiagnosticArray, '/diagnostics', 50)
    proc = node_launcher.start([script, '--ros-args', '-r', '__ns:=/probe', *params])
    assert wait_for(lambda: graph_has(observer, name, '/probe'), timeout_s=20.0), \
        node_launcher.logs()
    with ExecutorThread(ros_context, [observer]):
        assert wait_for(lambda: any(s.name.startswith(f'/probe/{name}:')
                                    for m in diagnostics.messages for s in m.status), 60.0), \
            node_launcher.logs()
    started = time.monotonic()
    proc.send(sig)
    assert proc.wait(timeout_s=5.0) == 0, proc.output()
    assert time.monotonic() - started < 2.0
    observer.destroy_node()


@pytest.mark.parametrize('script', sorted(NODES))
@pytest.mark.parametrize('sig', [signal.SIGINT, signal.SIGTERM])
def test_a_signal_while_the_node_still_imports_stops_it_cleanly(ros_domain_id, script, sig):
    """The executables take their stop signals before the node's modules (rclpy, OpenCV, torch:
    1-3 s of imports), so a launcher stopping everything right after the start gets exit 0 and
    no traceback, not a KeyboardInterrupt or a death by SIGTERM."""
    proc = subprocess.Popen([str(VENV_BIN / script), '--ros-args', '-r', '__ns:=/probe',
                             *NODES[script][1]], env=isolated_env(ros_domain_id),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    # From the moment it handles SIGTERM (its first tenths of a second belong to the interpreter),
    # while the node's imports still run.
    assert wait_for(lambda: stop_signals_caught(proc.pid) or proc.poll() is not None, 30.0,
                    interval_s=0.005)
    proc.send_signal(sig)
    output, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, output
    assert 'Traceback' not in output, output
    assert f'[{script}] stopped while starting' in output, output


@pytest.mark.parametrize('script', sorted(NODES))
def test_the_executables_take_their_signals_before_any_slow_import(ros_domain_id, script):
    """In the console script's own process: when the stop signals are installed, none of
    rclpy, OpenCV or torch is imported yet."""
    probe = textwrap.dedent(f"""
        import sys
        from multicam_ros.ros import entry
        installed = entry.catch_stop_signals
        def spy():
            print('heavy at install:', sorted(m for m in ('rclpy', 'cv2', 'torch')
                                               if m in sys.modules), flush=True)
            return installed()
        entry.catch_stop_signals = spy
        sys.exit(entry.{script}())
    """)
    done = subprocess.run([sys.executable, '-c', probe, '--ros-args', '-p', 'zzz:=1'],
                          env=isolated_env(ros_domain_id), capture_output=True, text=True,
                          timeout=120)
    assert 'heavy at install: []' in done.stdout, done.stdout + done.stderr


# -- malformed ROS arguments -------------------------------------------------------------------

@pytest.mark.parametrize('ros_args, expected', [
    (['-p', 'url'], "'-p url': -p takes NAME:=VALUE, e.g. -p url:=rtsp://cam/stream"),
    (['-p', 'url:='], "'-p url:=': nothing after ':='"),
    (['-r'], "'-r' needs a value after it"),
    (['-r', '__ns'], "'-r __ns': -r takes FROM:=TO, e.g. -r __ns:=/cam0"),
    (['--foo'], "unknown ROS argument '--foo'"),
    (['--remapp', 'x:=y'], "unknown ROS argument '--remapp' (did you mean '--remap'?)"),
    (['--params-file', '/nonexistent/params.yaml'],
     "'--params-file /nonexistent/params.yaml': no such file"),
    (['--log-level', 'loud'], "'--log-level loud': 'loud' is not a log level"),
    (['-r', 'rtsp://admin:Hunter2Secret@cam/s'], "'-r rtsp://admin:***@cam/s': -r takes"),
], ids=['param-without-assignment', 'param-without-value', 'remap-without-rule',
        'remap-without-assignment', 'unknown-flag', 'flag-typo', 'missing-params-file',
        'bad-log-level', 'password-redacted'])
def test_malformed_ros_args_give_one_clear_paragraph_and_exit_2(ros_domain_id, ros_args,
                                                                expected):
    done = subprocess.run([str(VENV_BIN / 'camera_node'), '--ros-args', *ros_args],
                          env=isolated_env(ros_domain_id), capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 2, done.stderr
    assert 'Traceback' not in done.stderr + done.stdout, done.stderr
    ours = [line for line in done.stderr.splitlines()
            if line.startswith('[camera_node] invalid ROS arguments: ')]
    assert len(ours) == 1, done.stderr  # one paragraph, on one line
    assert expected in ours[0], ours[0]
    assert 'Accepted after --ros-args: -p NAME:=VALUE' in ours[0]
    assert 'Hunter2Secret' not in done.stderr + done.stdout


def test_well_formed_ros_args_are_not_faulted():
    from multicam_ros.ros.node_main import ros_args_problem
    assert ros_args_problem(['camera_node', '--ros-args', '-r', '__ns:=/cam0', '-p',
                             'url:=rtsp://cam/s', '--log-level', 'camera_node:=DEBUG',
                             '--disable-rosout-logs', '-e', '/enclave', '--', '-p']) is None
    assert ros_args_problem(['camera_node', '-p', 'url']) is None  # not a ROS argument


# -- unknown parameters --------------------------------------------------------------------------

def test_unknown_parameters_are_warned_about_with_the_closest_name(ros_domain_id, tmp_path,
                                                                   node_launcher):
    params_file = tmp_path / 'params.yaml'
    params_file.write_text(
        '/probe/camera_node:\n  ros__parameters:\n    reconect_delay_max_s: 3.0\n'
        '/**:\n  ros__parameters:\n    zzz_not_a_setting: 1\n'
        '/other/node:\n  ros__parameters:\n    for_another_node: 1\n')
    proc = node_launcher.start(['camera_node', '--ros-args', '-r', '__ns:=/probe',
                                '-p', 'url:=rtsp://127.0.0.1:9/unreachable', '-p', 'fsp:=5.0',
                                '--params-file', str(params_file)])
    expected = ["unknown parameter 'fsp' (ignored); did you mean 'fps'?",
                "unknown parameter 'reconect_delay_max_s' (ignored); did you mean "
                "'reconnect_delay_max_s'?",
                "unknown parameter 'zzz_not_a_setting' (ignored); known parameters: "]
    assert wait_for(lambda: all(text in proc.output() for text in expected), 30.0), \
        proc.output()
    assert 'for_another_node' not in proc.output()  # another node's key is not ours
    assert "'url'" not in proc.output() and "'use_sim_time'" not in proc.output()
    assert proc.stop() == 0, proc.output()


def test_a_typo_is_warned_about_even_when_the_node_then_fails(ros_domain_id):
    """`-p ulr:=...` leaves url empty, a configuration error: the warning says why."""
    done = subprocess.run([str(VENV_BIN / 'camera_node'), '--ros-args', '-p',
                           'ulr:=rtsp://cam/s'], env=isolated_env(ros_domain_id),
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2, done.stderr
    assert "unknown parameter 'ulr' (ignored); did you mean 'url'?" in done.stderr
    assert '[camera_node] configuration error: url: empty' in done.stderr
    assert 'Traceback' not in done.stderr


def test_unknown_parameter_message():
    from multicam_ros.ros.node_main import unknown_parameter_message
    assert unknown_parameter_message('max_batchsize', ['max_batch_size', 'cameras']) == \
        "unknown parameter 'max_batchsize' (ignored); did you mean 'max_batch_size'?"
    assert unknown_parameter_message('qqq', ['b', 'a']) == \
        "unknown parameter 'qqq' (ignored); known parameters: a, b"


# -- CPU affinity -----------------------------------------------------------------------------

def _threads_cpus(pid: int) -> dict:
    """Every thread of process `pid` -> its Cpus_allowed_list."""
    found = {}
    for task in Path(f'/proc/{pid}/task').iterdir():
        for line in (task / 'status').read_text().splitlines():
            if line.startswith('Cpus_allowed_list:'):
                found[task.name] = line.split(':', 1)[1].strip()
    return found


@pytest.mark.parametrize('script', sorted(NODES))
def test_cpu_affinity_keeps_every_thread_of_the_node_on_those_cpus(ros_context, node_launcher,
                                                                   script):
    """Threads that rclpy, Fast DDS, torch or FFmpeg started before the parameter was read, and
    those started after it (the capture, inference and result threads), all stay there."""
    cpu = max(os.sched_getaffinity(0))
    observer = Node('observer', context=ros_context)
    name, params = NODES[script]
    diagnostics = TopicRecorder(observer, DiagnosticArray, '/diagnostics', 50)
    proc = node_launcher.start([script, '--ros-args', '-r', '__ns:=/probe', *params,
                                '-p', f"cpu_affinity:='{cpu}'"])
    with ExecutorThread(ros_context, [observer]):
        assert wait_for(lambda: any(s.name.startswith(f'/probe/{name}:')
                                    for m in diagnostics.messages for s in m.status), 60.0), \
            node_launcher.logs()
    threads = _threads_cpus(proc.proc.pid)
    assert len(threads) > 5, threads  # DDS, executor and the node's own threads
    assert set(threads.values()) == {str(cpu)}, threads
    assert proc.stop() == 0, proc.output()
    observer.destroy_node()


@pytest.mark.parametrize('value, expected', [
    ('0-3x', "cpu_affinity: '0-3x': '0-3x' is not a CPU number or range"),
    ('3-1', "cpu_affinity: '3-1': '3-1' is not a range of CPU numbers from 0 to 4095"),
    ('4095', "cpu_affinity: '4095' names CPU 4095, which this process may not use; accepted: "
             'CPUs among '),
])
@pytest.mark.parametrize('script', sorted(NODES))
def test_a_bad_cpu_affinity_is_a_configuration_error(ros_domain_id, script, value, expected):
    if value == '4095' and 4095 in os.sched_getaffinity(0):
        pytest.fail('this test needs a host without CPU 4095')
    done = subprocess.run([str(VENV_BIN / script), '--ros-args', *NODES[script][1], '-p',
                           f"cpu_affinity:='{value}'"], env=isolated_env(ros_domain_id),
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2, done.stderr
    assert 'Traceback' not in done.stderr, done.stderr
    assert f'configuration error: {expected}' in done.stderr, done.stderr
