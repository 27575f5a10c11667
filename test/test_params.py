"""The settings: declared once (core/settings.py, as field metadata of the core's configs) and
the same wherever they show up: core defaults, ROS parameters, node configs, the README."""
import dataclasses
import importlib.util
import logging
import subprocess
import sys
import textwrap

import pytest
from rclpy.node import Node

from multicam_ros.core.capture import CaptureOptions
from multicam_ros.core.models.base import ModelConfig
from multicam_ros.core.params import (CAMERA_PARAMS, DETECTOR_PARAMS, TRACKING_PREFIX,
                                      CameraSettings, DetectorSettings, camera_configs,
                                      detector_configs, normalise_cameras)
from multicam_ros.core.settings import ConfigError, Setting, build, settings_of
from multicam_ros.core.tracking import TrackerConfig
from multicam_ros.ros.node_main import declare_params, forward_core_logs
from ros_helpers import REPO

_SPEC = importlib.util.spec_from_file_location('param_tables', REPO / 'tools' / 'param_tables.py')
param_tables = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(param_tables)

CONFIGS = [(CameraSettings, ''), (CaptureOptions, ''), (DetectorSettings, ''),
           (ModelConfig, ''), (TrackerConfig, TRACKING_PREFIX)]


@pytest.mark.parametrize('specs', [CAMERA_PARAMS, DETECTOR_PARAMS], ids=['camera', 'detector'])
def test_names_unique_defaults_valid_descriptions_present(specs):
    names = [spec.name for spec in specs]
    assert len(names) == len(set(names))
    for spec in specs:
        assert spec.check(spec.default) == spec.default, spec.name
        assert len(spec.description) > 10, spec.name


def test_each_node_has_only_its_own_parameters():
    camera = {spec.name for spec in CAMERA_PARAMS}
    detector = {spec.name for spec in DETECTOR_PARAMS}
    assert camera & detector == {'reliability', 'diagnostics_period_s', 'cpu_affinity'}
    assert not any(name.startswith(('model.', 'tracking.')) for name in camera)
    assert {'tracking.enabled', 'tracking.max_age_s', 'tracking.match_iou_threshold',
            'model.backend', 'device', 'max_batch_size'} <= detector


@pytest.mark.parametrize('cls,prefix', CONFIGS, ids=[c.__name__ for c, _ in CONFIGS])
def test_every_core_default_equals_the_declared_parameter_default(cls, prefix):
    made = cls()  # the core's own default, as code that never sees ROS makes it
    specs = settings_of(cls, prefix)
    assert specs, cls
    for spec in specs:
        value = getattr(made, spec.field)
        assert (list(value) if isinstance(value, tuple) else value) == spec.default, spec.name


def test_the_nodes_declare_exactly_those_defaults(ros_context):
    """A node with no overrides gets every declared default as its ROS parameter, and builds
    the same configs as the core's defaults."""
    node = Node('defaults_probe', context=ros_context)
    try:
        camera_values = declare_params(node, CAMERA_PARAMS)
    finally:
        node.destroy_node()
    node = Node('defaults_probe2', context=ros_context)
    try:
        detector_values = declare_params(node, DETECTOR_PARAMS)
        assert node.get_parameter('tracking.max_age_s').value == 1.0
    finally:
        node.destroy_node()
    assert camera_values == {spec.name: spec.default for spec in CAMERA_PARAMS}
    assert detector_values == {spec.name: spec.default for spec in DETECTOR_PARAMS}
    assert camera_configs(camera_values) == (CameraSettings(), CaptureOptions())
    configs = detector_configs(detector_values)
    assert configs.settings == DetectorSettings() and configs.tracker == TrackerConfig()
    # With tracking on, the model keeps weak detections for the tracker; publishing does not.
    assert configs.model == dataclasses.replace(
        ModelConfig(), confidence_threshold=TrackerConfig().low_score_threshold)
    assert configs.publish_threshold == ModelConfig().confidence_threshold


def test_descriptors_carry_ranges_choices_and_read_only(ros_context):
    node = Node('descriptor_probe', context=ros_context)
    try:
        declare_params(node, CAMERA_PARAMS)
        fps, encoding, url = node.describe_parameters(['fps', 'encoding', 'url'])
    finally:
        node.destroy_node()
    assert fps.floating_point_range[0].to_value == 1000.0 and not fps.read_only
    assert encoding.additional_constraints == 'one of: bgr8, rgb8, mono8' and encoding.read_only
    assert 'rtsp://' in url.description


@pytest.mark.parametrize('value,problem', [
    (-1.0, 'is out of range'), (11.0, 'is out of range'), ('fast', 'has the wrong type'),
    (True, 'has the wrong type'), (float('nan'), 'is out of range')])
def test_one_error_form_key_problem_accepted(value, problem):
    spec = Setting('fps', 0.0, 'Frames per second cap.', min_value=0.0, max_value=10.0)
    with pytest.raises(ConfigError) as info:
        spec.check(value)
    assert str(info.value) == f'fps: {value!r} {problem}; accepted: a number from 0 to 10'


def test_check_coerces_integers_for_numbers_and_checks_choices():
    assert Setting('fps', 0.0, 'Frames per second cap.').check(15) == 15.0
    encoding = Setting('encoding', 'bgr8', 'Image encoding.', choices=('bgr8', 'mono8'))
    with pytest.raises(ConfigError, match="encoding: 'rgb16' is not a choice; accepted: one of "
                                          "'bgr8', 'mono8'"):
        encoding.check('rgb16')
    names = Setting('classes', [], 'Class names to keep.')
    assert names.check(('a', 'b')) == ['a', 'b']
    with pytest.raises(ConfigError, match='accepted: a list of strings'):
        names.check(['a', 3])


def test_configs_made_in_code_follow_the_same_rules():
    with pytest.raises(ConfigError, match='read_timeout_s: 0.0 is out of range; accepted: a '
                                          'number from 0.1 to 600'):
        CaptureOptions(read_timeout_s=0.0)
    with pytest.raises(ConfigError, match='reconnect_delay_min_s: 5 is more than '
                                          r'reconnect_delay_max_s \(2\)'):
        build(CaptureOptions, {'reconnect_delay_min_s': 5.0, 'reconnect_delay_max_s': 2.0})
    with pytest.raises(ConfigError, match="model.backend: 'onnx' is not a choice"):
        build(ModelConfig, {'model.backend': 'onnx'})
    assert build(ModelConfig, {'model.class_names': ['a', 'b']}).class_names == ('a', 'b')


def test_cameras_parameter_is_normalised_or_named_in_the_error():
    assert normalise_cameras(['cam0', '/cam1/', ' /robot/front ']) == \
        ['/cam0', '/cam1', '/robot/front']
    for bad, words in [([], 'empty'), (['9cam'], 'not a valid ROS namespace'),
                       (['a-b'], 'not a valid ROS namespace'), (['/a', 'a'], 'listed twice'),
                       ([''], 'not a valid ROS namespace')]:
        with pytest.raises(ConfigError, match=f'^cameras: .*{words}.*; accepted: camera '
                                              'namespaces'):
            normalise_cameras(bad)


def test_readme_parameter_tables_are_made_from_the_settings():
    held = param_tables.readme_tables((REPO / 'README.md').read_text())
    for name, specs in param_tables.TABLES.items():
        assert held[name] == param_tables.table(specs), \
            f'README.md is out of date: run python tools/param_tables.py --write ({name})'


def test_core_logs_reach_the_node_logger_at_its_level(ros_context, capfd):
    node = Node('log_probe', context=ros_context)
    try:
        forward_core_logs(node)
        logging.getLogger('multicam_ros.core.models').warning('forwarded-warning-17')
        logging.getLogger('multicam_ros.core.models').debug('hidden-debug-17')
    finally:
        node.destroy_node()
    err = capfd.readouterr().err
    assert 'forwarded-warning-17' in err and '[log_probe]' in err
    assert 'hidden-debug-17' not in err  # the node's level is info


# -- cpu_affinity ------------------------------------------------------------------------------

@pytest.mark.parametrize('text, cpus', [
    ('', set()), ('  ', set()), ('3', {3}), ('0-3', {0, 1, 2, 3}), ('0,2,4-6', {0, 2, 4, 5, 6}),
    (' 1 , 5-5 ', {1, 5}), ('4095', {4095})])
def test_cpu_lists_are_read_as_linux_writes_them(text, cpus):
    from multicam_ros.core.process import cpu_list_text, parse_cpu_list
    assert parse_cpu_list(text, 'cpu_affinity') == cpus
    assert parse_cpu_list(cpu_list_text(cpus), 'cpu_affinity') == cpus


def test_cpu_list_text_is_compact():
    from multicam_ros.core.process import cpu_list_text
    assert cpu_list_text({0, 1, 2, 3, 8, 10, 11}) == '0-3,8,10-11'


@pytest.mark.parametrize('text', ['x', '1-', '-1', '3-1', '0,,1', '4096', '1.5', '0-3x'])
@pytest.mark.parametrize('settings', [CameraSettings, DetectorSettings])
def test_a_malformed_cpu_list_names_cpu_affinity_and_the_accepted_form(text, settings):
    with pytest.raises(ConfigError) as caught:
        build(settings, {'cpu_affinity': text, 'url': 'rtsp://cam/s'} if settings is CameraSettings
              else {'cpu_affinity': text})
    message = str(caught.value)
    assert message.startswith(f"cpu_affinity: '{text}'"), message
    assert "accepted: a Linux CPU list such as '0-3' or '0,2,4-7'" in message, message


def test_pin_to_cpus_moves_the_threads_already_running_and_those_started_later():
    """In a child process, so this one keeps its CPUs."""
    script = textwrap.dedent('''
        import os, threading, time
        from multicam_ros.core.process import pin_to_cpus
        stop = threading.Event()
        early = threading.Thread(target=stop.wait)
        early.start()
        cpu = max(os.sched_getaffinity(0))
        assert pin_to_cpus(str(cpu), 'cpu_affinity') == {cpu}
        late = threading.Thread(target=stop.wait)
        late.start()
        seen = {}
        for tid in os.listdir('/proc/self/task'):
            seen[tid] = sorted(os.sched_getaffinity(int(tid)))
        stop.set()
        assert len(seen) == 3 and all(cpus == [cpu] for cpus in seen.values()), seen
        assert pin_to_cpus('', 'cpu_affinity') == frozenset()  # empty: no change
        assert os.sched_getaffinity(0) == {cpu}
        print('ok')
    ''')
    done = subprocess.run([sys.executable, '-c', script], capture_output=True, text=True,
                          timeout=60, cwd=str(REPO))
    assert done.returncode == 0 and done.stdout.strip() == 'ok', done.stderr
