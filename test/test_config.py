"""The configuration file and the node plan: every validation rule, every bad-config case, and
the plan both starters use. Fast, and needs no running ROS."""
import os
import textwrap
import time
import tracemalloc
from pathlib import Path

import pytest

from multicam_ros.core import settings
from multicam_ros.core.params import CAMERA_PARAMS, DETECTOR_PARAMS
from multicam_ros.system import config as config_module
from multicam_ros.system.config import MAX_DEPTH, MAX_FILE_BYTES, MAX_NODES, MAX_PROBLEMS, \
    MAX_SCALAR_CHARS, MAX_TEXT_CHARS, ConfigError, load_config
from multicam_ros.system.executables import CAMERA_EXECUTABLE, DETECTOR_EXECUTABLE
from multicam_ros.system.plan import node_plan, parse_log_level, parse_switch
from multicam_ros.system.supervision import CAMERA_RULE, DETECTOR_RULE
from multicam_ros.system.transport import packaged_fastdds_profile, profile_environment, \
    transport_environment

REPO = Path(__file__).resolve().parent.parent
SECRET = 'hunter2-secret'
ENV = {'CAM_PASSWORD': SECRET}  # the environment `password_env` is read from

THREE_CAMERAS = """
camera_defaults:
  fps: 10
  rtsp_transport: udp
cameras:
  - name: front
    url: rtsp://admin:{secret}@10.0.0.5:554/stream1
  - name: back_2
    url: rtsp://viewer@10.0.0.6/live
    password_env: CAM_PASSWORD
    fps: 5.5
    width: 640
  - name: yard
    url: clips/yard.mp4
    camera_info_url: calib/yard.yaml
    loop: false
detector:
  model:
    backend: torchscript
    path: models/det.torchscript
    class_names: [person, car]
  device: cpu
  max_batch_size: 3
  classes: []
"""


def write(tmp_path: Path, text: str, name: str = 'cams.yaml') -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


@pytest.fixture
def three_camera_file(tmp_path: Path) -> Path:
    (tmp_path / 'clips').mkdir()
    (tmp_path / 'clips' / 'yard.mp4').write_bytes(b'not decoded at planning time')
    (tmp_path / 'calib').mkdir()
    (tmp_path / 'calib' / 'yard.yaml').write_text('image_width: 320\n')
    return write(tmp_path, THREE_CAMERAS.format(secret=SECRET))


def problems_of(tmp_path: Path, text: str) -> list:
    with pytest.raises(ConfigError) as caught:
        load_config(str(write(tmp_path, text)), environ=ENV)
    assert str(caught.value) == '\n'.join(caught.value.problems)
    return caught.value.problems


# -- the plan -----------------------------------------------------------------------------------


def test_plan_of_three_cameras(three_camera_file: Path, tmp_path: Path):
    plan = node_plan(load_config(str(three_camera_file), environ=ENV), environ={})
    front, back, yard, detector = plan.nodes
    assert [(n.executable, n.name, n.namespace, n.fqn, n.label) for n in plan.nodes] == [
        (CAMERA_EXECUTABLE, 'camera_node', '/front', '/front/camera_node', 'front'),
        (CAMERA_EXECUTABLE, 'camera_node', '/back_2', '/back_2/camera_node', 'back_2'),
        (CAMERA_EXECUTABLE, 'camera_node', '/yard', '/yard/camera_node', 'yard'),
        (DETECTOR_EXECUTABLE, 'detector', '/', '/detector', 'detector')]
    assert plan.cameras == (front, back, yard) and plan.detector is detector
    # Defaults merged with each camera's overrides (override wins), ints made floats.
    # A password written in the url travels in that camera's environment, never as a ROS
    # parameter (which every node could read).
    assert front.parameters == {'url': 'rtsp://admin@10.0.0.5:554/stream1',
                                'password_env': 'MULTICAM_ROS_PASSWORD_FRONT',
                                'fps': 10.0, 'rtsp_transport': 'udp'}
    assert front.environment == {'MULTICAM_ROS_PASSWORD_FRONT': SECRET}
    assert back.environment == {} and detector.environment == {}
    assert isinstance(front.parameters['fps'], float)
    assert back.parameters == {'url': 'rtsp://viewer@10.0.0.6/live', 'fps': 5.5,
                               'rtsp_transport': 'udp', 'password_env': 'CAM_PASSWORD',
                               'width': 640}
    # Relative paths are relative to the file, and planned absolute.
    assert yard.parameters == {'url': str(tmp_path / 'clips' / 'yard.mp4'), 'fps': 10.0,
                               'rtsp_transport': 'udp',
                               'camera_info_url': str(tmp_path / 'calib' / 'yard.yaml'),
                               'loop': False}
    # The detector: cameras filled in, model: flattened, empty lists left out.
    assert detector.parameters == {
        'cameras': ['/front', '/back_2', '/yard'], 'model.backend': 'torchscript',
        'model.path': str(tmp_path / 'models' / 'det.torchscript'),
        'model.class_names': ['person', 'car'], 'device': 'cpu', 'max_batch_size': 3}
    # What each one's exits lead to (supervision.py): the camera rule, the detector rule.
    assert [n.on_exit for n in plan.nodes] == [CAMERA_RULE] * 3 + [DETECTOR_RULE]
    assert all(n.package == 'multicam_ros' for n in plan.nodes)
    assert plan.environment == profile_environment(packaged_fastdds_profile())
    assert set(plan.secrets) >= {SECRET}


def test_every_planned_parameter_is_a_node_parameter(three_camera_file: Path):
    plan = node_plan(load_config(str(three_camera_file), environ=ENV))
    camera_names = {spec.name for spec in CAMERA_PARAMS}
    detector_names = {spec.name for spec in DETECTOR_PARAMS}
    for node in plan.cameras:
        assert set(node.parameters) <= camera_names
    assert set(plan.detector.parameters) <= detector_names


def test_plan_without_detector(three_camera_file: Path):
    plan = node_plan(load_config(str(three_camera_file), environ=ENV), detector=False)
    assert [n.executable for n in plan.nodes] == [CAMERA_EXECUTABLE] * 3
    assert plan.detector is None


def test_passwords_never_in_printed_plan(three_camera_file: Path):
    plan = node_plan(load_config(str(three_camera_file), environ=ENV))
    text = '\n'.join(plan.describe()) + repr(plan) + repr(load_config(
        str(three_camera_file), environ=ENV))
    assert SECRET not in text
    assert 'rtsp://admin:***@10.0.0.5:554/stream1' in text
    assert '/detector (detector_node): cameras=[/front,/back_2,/yard]' in text


def test_password_from_environment_is_redacted_wherever_it_appears(tmp_path: Path):
    config = load_config(str(write(tmp_path, """
        cameras:
          - name: cam
            url: rtsp://viewer@10.0.0.6/live
            password_env: CAM_PASSWORD
        """)), environ=ENV)
    plan = node_plan(config)
    assert SECRET in plan.secrets
    assert SECRET not in str(plan.describe())


def test_shipped_example_is_valid():
    plan = node_plan(load_config(str(REPO / 'config' / 'cams.yaml'), environ={}), environ={})
    assert [n.fqn for n in plan.nodes] == ['/cam0/camera_node', '/cam1/camera_node',
                                           '/cam2/camera_node', '/detector']
    assert plan.environment == profile_environment(packaged_fastdds_profile())


def test_device_index_and_absolute_video_file(tmp_path: Path):
    clip = tmp_path / 'clip.mp4'
    clip.write_bytes(b'x')
    config = load_config(str(write(tmp_path, f"""
        cameras:
          - {{name: usb, url: 0}}
          - {{name: dev, url: /dev/video2}}
          - {{name: clip, url: 'file://{clip}'}}
        """)))
    assert [c.parameters['url'] for c in config.cameras] == ['0', '/dev/video2', str(clip)]


def test_minimal_file_and_empty_sections(tmp_path: Path):
    config = load_config(str(write(tmp_path, """
        cameras: [{name: a, url: 'rtsp://h/x'}]
        camera_defaults:
        detector:
        transport:
        """)))
    plan = node_plan(config, environ={})
    assert plan.detector.parameters == {'cameras': ['/a']}
    assert plan.cameras[0].parameters == {'url': 'rtsp://h/x'}


def test_valid_names_are_valid_ros_namespaces(tmp_path: Path):
    """Every name the file accepts is accepted by ROS itself as a namespace."""
    from rclpy.validate_namespace import validate_namespace
    names = ['a', 'A_b', '_x', 'cam_01', 'x' * 64]
    config = load_config(str(write(tmp_path, 'cameras:\n' + ''.join(
        f'  - {{name: {n}, url: "rtsp://h/{i}"}}\n' for i, n in enumerate(names)))))
    for camera in config.cameras:
        assert validate_namespace('/' + camera.name)


# -- transport environment ----------------------------------------------------------------------


def test_packaged_profile_exists_and_is_the_default():
    assert Path(packaged_fastdds_profile()).is_file()
    assert transport_environment('package', {}) == profile_environment(
        packaged_fastdds_profile())


@pytest.mark.parametrize('environ', [
    {'FASTDDS_DEFAULT_PROFILES_FILE': '/etc/my_profile.xml'},
    {'FASTRTPS_DEFAULT_PROFILES_FILE': '/etc/my_profile.xml'},
    {'FASTDDS_BUILTIN_TRANSPORTS': 'LARGE_DATA'},
    {'RMW_IMPLEMENTATION': 'rmw_cyclonedds_cpp'},
])
@pytest.mark.parametrize('profile', ['package', 'none', '/abs/profile.xml'])
def test_the_starters_environment_has_the_last_word(environ, profile):
    assert transport_environment(profile, environ) == {}


MINIMAL_PROFILE = ('<dds xmlns="http://www.eprosima.com"><profiles>'
                   '<participant profile_name="p" is_default_profile="true"/>'
                   '</profiles></dds>')


def test_transport_section(tmp_path: Path):
    own = tmp_path / 'dds' / 'mine.xml'
    own.parent.mkdir()
    own.write_text(MINIMAL_PROFILE)
    base = "cameras: [{name: a, url: 'rtsp://h/x'}]\n"
    none = load_config(str(write(tmp_path, base + 'transport: {fastdds_profile: none}\n')))
    assert node_plan(none, environ={}).environment == {'FASTDDS_BUILTIN_TRANSPORTS': 'DEFAULT'}
    mine = load_config(str(write(tmp_path, base + 'transport: {fastdds_profile: dds/mine.xml}\n')))
    assert node_plan(mine, environ={}).environment == profile_environment(str(own))
    assert node_plan(mine, environ={'RMW_IMPLEMENTATION': 'rmw_fastrtps_dynamic_cpp'}
                     ).environment == profile_environment(str(own))


# -- bad configurations: each gives ONE message naming the entry and key -------------------------

CAM = "cameras:\n  - name: front\n    url: rtsp://h/x\n"


BAD_CONFIGS = {
    # file level
    'top level not a mapping': ('- a\n- b\n', 'cams.yaml: list is not a mapping; accepted: a '
                                'mapping with keys cameras, camera_defaults, detector, '
                                'transport'),
    'unknown top-level key': (CAM + 'detectors: {}\n',
                              "cams.yaml: detectors: unknown key (did you mean 'detector'?); "
                              "accepted: cameras, camera_defaults, detector, transport"),
    'key given twice': (CAM + 'detector: {}\ndetector: {}\n',
                        "cams.yaml: not valid YAML at line 5, column 1: key 'detector' is given "
                        "twice in one mapping"),
    'not YAML': ('cameras: [a\n  b: c]\n', "cams.yaml: not valid YAML at line 2, column 4: "
                 "while parsing a flow sequence; expected ',' or ']', but got ':'"),
    # cameras list
    'cameras missing': ('detector: {}\n', 'cams.yaml: cameras: missing; accepted: a list of '
                        'cameras, each a mapping with a name and a url'),
    'cameras empty': ('cameras: []\n', 'cams.yaml: cameras: empty; accepted: a list of at least '
                      'one camera'),
    'cameras not a list': ('cameras: {name: a}\n',
                           'cams.yaml: cameras: dict is not a list; accepted: a list of cameras'),
    'camera not a mapping': ('cameras: [rtsp://h/x]\n',
                             "cams.yaml: cameras[0]: str 'rtsp://h/x' is not a mapping; "
                             "accepted: a mapping with a name and a url"),
    # names
    'name missing': ('cameras: [{url: rtsp://h/x}]\n',
                     'cams.yaml: cameras[0]: name: missing (every camera needs one: its '
                     'namespace); accepted: letters, digits and _'),
    'name starts with a digit': ("cameras: [{name: 1cam, url: 'rtsp://h/x'}]\n",
                                 "cams.yaml: cameras[0]: name: '1cam' is not a valid ROS name"),
    'name with a dash': ("cameras: [{name: front-left, url: 'rtsp://h/x'}]\n",
                         "cams.yaml: cameras[0]: name: 'front-left' is not a valid ROS name"),
    'name with a slash': ("cameras: [{name: site/front, url: 'rtsp://h/x'}]\n",
                          "cams.yaml: cameras[0]: name: 'site/front' is not a valid ROS name"),
    'name empty': ("cameras: [{name: '', url: 'rtsp://h/x'}]\n",
                   "cams.yaml: cameras[0]: name: '' is not a valid ROS name"),
    'name a number': ("cameras: [{name: 7, url: 'rtsp://h/x'}]\n",
                      "cams.yaml: cameras[0]: name: 7 is not a valid ROS name"),
    'name too long': (f"cameras: [{{name: {'x' * 65}, url: 'rtsp://h/x'}}]\n",
                      'is not a valid ROS name; accepted: letters, digits and _, not starting '
                      'with a digit, at most 64 characters'),
    'duplicate names': (CAM + '  - name: front\n    url: rtsp://h/y\n',
                        "cams.yaml: cameras[1]: name: 'front' is already the name of "
                        "cameras[0]; accepted: a name no other camera has"),
    # camera keys
    'unknown camera key': (CAM + '  - {name: back, url: rtsp://h/y}\n'
                           '  - {name: yard, url: rtsp://h/z, fsp: 5}\n',
                           "cams.yaml: cameras[2] (name 'yard'): fsp: unknown key (did you "
                           "mean 'fps'?); accepted: name, url, password_env"),
    'url missing': ('cameras: [{name: a, fps: 5.0}]\n',
                    "cams.yaml: cameras[0] (name 'a'): url: missing; accepted: rtsp://"),
    'url not a string': ("cameras: [{name: a, url: [x]}]\n",
                         "cams.yaml: cameras[0] (name 'a'): url: ['x'] has the wrong type; "
                         "accepted: a string"),
    'url one slash': ("cameras: [{name: a, url: 'rtsp:/host/x'}]\n",
                      "cams.yaml: cameras[0] (name 'a'): url: malformed URL"),
    'url without host': ("cameras: [{name: a, url: 'rtsp:///x'}]\n",
                         "cams.yaml: cameras[0] (name 'a'): url: a rtsp:// URL needs a host"),
    'url bad port': ("cameras: [{name: a, url: 'rtsp://h:99999/x'}]\n",
                     "cams.yaml: cameras[0] (name 'a'): url: the port must be a number"),
    'url with a space': ("cameras: [{name: a, url: 'rtsp://h /x'}]\n",
                         "cams.yaml: cameras[0] (name 'a'): url: a URL may not contain "
                         "whitespace"),
    'url unknown scheme': ("cameras: [{name: a, url: 'ftp://h/x'}]\n",
                           "cams.yaml: cameras[0] (name 'a'): url: unsupported scheme 'ftp'"),
    'video file missing': ("cameras: [{name: a, url: clips/none.mp4}]\n",
                           "cams.yaml: cameras[0] (name 'a'): url: no such video file"),
    'password_env not set': ("cameras: [{name: a, url: 'rtsp://u@h/x', "
                             "password_env: NO_SUCH_VARIABLE}]\n",
                             "cams.yaml: cameras[0] (name 'a'): password_env: environment "
                             "variable NO_SUCH_VARIABLE is not set"),
    'password_env and a password': ("cameras: [{name: a, url: 'rtsp://u:pw@h/x', "
                                    "password_env: CAM_PASSWORD}]\n",
                                    "cams.yaml: cameras[0] (name 'a'): url: already contains "
                                    "a password"),
    'password_env without user': ("cameras: [{name: a, url: 'rtsp://h/x', "
                                  "password_env: CAM_PASSWORD}]\n",
                                  "cams.yaml: cameras[0] (name 'a'): password_env: needs a "
                                  "user name in url"),
    # camera parameter types and ranges (Setting.check of core/settings.py)
    'fps not a number': ("cameras: [{name: a, url: 'rtsp://h/x', fps: fast}]\n",
                         "cams.yaml: cameras[0] (name 'a'): fps: 'fast' has the wrong type; "
                         "accepted: a number from 0 to 1000"),
    'fps negative': ("cameras: [{name: a, url: 'rtsp://h/x', fps: -1}]\n",
                     "cams.yaml: cameras[0] (name 'a'): fps: -1.0 is out of range; accepted: a "
                     "number from 0 to 1000"),
    'width a float': ("cameras: [{name: a, url: 'rtsp://h/x', width: 640.5}]\n",
                      "cams.yaml: cameras[0] (name 'a'): width: 640.5 has the wrong type; "
                      "accepted: an integer from 0 to 16384"),
    'width too large': ("cameras: [{name: a, url: 'rtsp://h/x', width: 20000}]\n",
                        "cams.yaml: cameras[0] (name 'a'): width: 20000 is out of range; "
                        "accepted: an integer from 0 to 16384"),
    'loop not a bool': ("cameras: [{name: a, url: 'rtsp://h/x', loop: sometimes}]\n",
                        "cams.yaml: cameras[0] (name 'a'): loop: 'sometimes' has the wrong "
                        "type; accepted: true or false"),
    'encoding choice': ("cameras: [{name: a, url: 'rtsp://h/x', encoding: yuv422}]\n",
                        "cams.yaml: cameras[0] (name 'a'): encoding: 'yuv422' is not a choice; "
                        "accepted: one of 'bgr8', 'rgb8', 'mono8'"),
    'rtsp_transport choice': ("cameras: [{name: a, url: 'rtsp://h/x', rtsp_transport: http}]\n",
                              "cams.yaml: cameras[0] (name 'a'): rtsp_transport: 'http' is not "
                              "a choice; accepted: one of 'tcp', 'udp'"),
    'timeout zero': ("cameras: [{name: a, url: 'rtsp://h/x', open_timeout_s: 0}]\n",
                     "cams.yaml: cameras[0] (name 'a'): open_timeout_s: 0.0 is out of range; "
                     "accepted: a number from 0.1 to 600"),
    # rules across settings (the core configs' own, as the nodes apply them)
    'reconnect delays crossed': ("cameras: [{name: a, url: 'rtsp://h/x', "
                                 "reconnect_delay_min_s: 20.0}]\n",
                                 "cams.yaml: cameras[0] (name 'a'): reconnect_delay_min_s: 20 is "
                                 "more than reconnect_delay_max_s (10); accepted: a delay no "
                                 "longer than reconnect_delay_max_s"),
    'tracking thresholds crossed': (CAM + 'detector: {tracking.low_score_threshold: 0.9, '
                                    'tracking.high_score_threshold: 0.5}\n',
                                    'cams.yaml: detector: tracking.low_score_threshold: 0.9 is '
                                    'more than tracking.high_score_threshold (0.5); accepted: '),
    'calibration file missing': ("cameras: [{name: a, url: 'rtsp://h/x', "
                                 "camera_info_url: calib/none.yaml}]\n",
                                 "cams.yaml: cameras[0] (name 'a'): camera_info_url: no such "
                                 "file: calib/none.yaml; accepted: a path or file:// URL"),
    # camera defaults
    'defaults with url': (CAM + 'camera_defaults: {url: rtsp://h/x}\n',
                          'cams.yaml: camera_defaults: url: set per camera, not in '
                          'camera_defaults'),
    'defaults unknown key': (CAM + 'camera_defaults: {heigth: 480}\n',
                             "cams.yaml: camera_defaults: heigth: unknown key (did you mean "
                             "'height'?); accepted: password_env, "),
    'defaults bad value': (CAM + 'camera_defaults: {reliability: sometimes}\n',
                           "cams.yaml: camera_defaults: reliability: 'sometimes' is not a "
                           "choice; accepted: one of 'reliable', 'best_effort'"),
    'defaults not a mapping': (CAM + 'camera_defaults: [fps]\n',
                               'cams.yaml: camera_defaults: list is not a mapping; accepted: a '
                               'mapping of camera_node parameters'),
    'defaults crossing a camera': (CAM + 'camera_defaults: {reconnect_delay_max_s: 0.1}\n',
                                   "cams.yaml: cameras[0] (name 'front'): reconnect_delay_min_s: "
                                   "0.5 is more than reconnect_delay_max_s (0.1)"),
    # detector
    'detector unknown key': (CAM + 'detector: {devise: cpu}\n',
                             "cams.yaml: detector: devise: unknown key (did you mean "
                             "'device'?); accepted: max_batch_size, "),
    'detector unknown model key': (CAM + 'detector: {model: {pth: m.pt}}\n',
                                   "cams.yaml: detector: model.pth: unknown key (did you mean "
                                   "'model.path'?); accepted: "),
    'detector model not a mapping': (CAM + 'detector: {model: yolo}\n',
                                     "cams.yaml: detector: model: str 'yolo' is not a mapping; "
                                     'accepted: a mapping of model settings'),
    'detector cameras given': (CAM + 'detector: {cameras: [/front]}\n',
                               'cams.yaml: detector: cameras: filled in from the cameras list'),
    'detector key nested and dotted': (CAM + 'detector:\n  model: {backend: torchscript}\n'
                                       '  model.backend: torchvision\n',
                                       'cams.yaml: detector: model.backend: given twice'),
    'detector backend choice': (CAM + 'detector: {model: {backend: onnx}}\n',
                                "cams.yaml: detector: model.backend: 'onnx' is not a choice; "
                                "accepted: one of 'nanodet', 'torchvision', 'torchscript', "
                                "'ultralytics'"),
    'detector batch range': (CAM + 'detector: {max_batch_size: 0}\n',
                             'cams.yaml: detector: max_batch_size: 0 is out of range; accepted: '
                             'an integer from 1 to 256'),
    'detector threshold range': (CAM + 'detector: {confidence_threshold: 1.5}\n',
                                 'cams.yaml: detector: confidence_threshold: 1.5 is out of '
                                 'range; accepted: a number from 0 to 1'),
    'detector class names type': (CAM + 'detector: {model: {class_names: person}}\n',
                                  "cams.yaml: detector: model.class_names: 'person' has the "
                                  "wrong type; accepted: a list of strings"),
    'detector half type': (CAM + 'detector: {half: 1}\n',
                           'cams.yaml: detector: half: 1 has the wrong type; accepted: true or '
                           'false'),
    'detector not a mapping': (CAM + 'detector: yes\n',
                               'cams.yaml: detector: bool True is not a mapping; accepted: a '
                               'mapping of detector_node parameters'),
    # transport
    'transport unknown key': (CAM + 'transport: {profile: package}\n',
                              "cams.yaml: transport: profile: unknown key (did you mean "
                              "'fastdds_profile'?); accepted: fastdds_profile"),
    'transport profile missing': (CAM + 'transport: {fastdds_profile: none.xml}\n',
                                  'cams.yaml: transport: fastdds_profile: no such file: '
                                  "none.xml; accepted: 'package', 'none' or the path of a Fast "
                                  'DDS XML profile'),
    'transport profile type': (CAM + 'transport: {fastdds_profile: 3}\n',
                               "cams.yaml: transport: fastdds_profile: 3 is not a profile; "
                               "accepted: 'package', 'none' or the path of a Fast DDS XML "
                               "profile"),
}


@pytest.mark.parametrize('case', sorted(BAD_CONFIGS))
def test_bad_config_gives_one_clear_message(tmp_path: Path, case: str):
    text, expected = BAD_CONFIGS[case]
    problems = problems_of(tmp_path, text)
    assert len(problems) == 1, problems
    assert expected in problems[0].replace(str(tmp_path) + os.sep, ''), problems[0]


def test_one_error_type():
    """The file's problems are the core's ConfigError, like every other configuration error."""
    assert ConfigError is settings.ConfigError


def test_missing_file(tmp_path: Path):
    with pytest.raises(ConfigError, match='none.yaml: cannot read: No such file'):
        load_config(str(tmp_path / 'none.yaml'))


def test_every_problem_reported_at_once(tmp_path: Path):
    problems = problems_of(tmp_path, """
        cameras:
          - {name: 1a, url: 'rtsp://h/x'}
          - {name: b, url: 'rtsp:/h', fsp: 3}
        detector: {devise: cpu}
        transport: {x: 1}
        """)
    assert [p.split(': ')[1] for p in problems] == [
        'cameras[0]', "cameras[1] (name 'b')", "cameras[1] (name 'b')", 'detector',
        'transport']


@pytest.mark.parametrize('text', [
    "cameras: [{name: a, url: 'rtsp://u:{s}@h /x'}]\n",  # malformed URL with a password
    "cameras: [{name: a, url: 'rtsp://h/x', frame_id: ['rtsp://u:{s}@h/x']}]\n",
    "cameras: ['rtsp://u:{s}@h/x']\n",
    "cameras: [{name: a, url: 'rtsp://u:{s}@h/x', password_env: CAM_PASSWORD}]\n",
])
def test_passwords_never_in_messages(tmp_path: Path, text: str):
    problems = problems_of(tmp_path, text.replace('{s}', SECRET))
    assert problems and SECRET not in '\n'.join(problems)


def test_nothing_is_planned_from_an_invalid_file(tmp_path: Path):
    """load_config raises, so there is no Config for node_plan to start."""
    with pytest.raises(ConfigError):
        node_plan(load_config(str(write(tmp_path, 'cameras: []\n'))))


def test_launch_arguments():
    assert parse_switch('true', 'detector') is True
    assert parse_switch('False', 'detector') is False
    with pytest.raises(ConfigError, match="^detector: 'yes' is not a switch; accepted: 'true' "
                                          "or 'false'$"):
        parse_switch('yes', 'detector')
    assert parse_log_level('debug') == 'debug'
    with pytest.raises(ConfigError, match="^log_level: 'loud' is not a log level; accepted: "
                                          "debug, info, warn, error, fatal$"):
        parse_log_level('loud')


# -- hostile files: refused at once, in a short message that names the limit --------------------


def laughs(levels: int = 9, width: int = 9) -> str:
    """The "billion laughs" of YAML: each anchor a list of `width` aliases of the previous one
    (9 levels of 9: 387 million strings, in under 500 bytes)."""
    lines = ['a0: &a0 [' + ', '.join(['lol'] * width) + ']']
    lines += [f'a{i}: &a{i} [' + ', '.join([f'*a{i - 1}'] * width) + ']'
              for i in range(1, levels)]
    return '\n'.join(lines) + f'\ncameras: *a{levels - 1}\n'


def merge_bomb(levels: int = 30) -> str:
    """The same with merge keys: each mapping merges the previous one twice."""
    lines = ['- &m0 {k0: 1, k1: 2}']
    lines += [f'- &m{i} {{<<: [*m{i - 1}, *m{i - 1}], k{i}: 1}}' for i in range(1, levels)]
    return 'cameras:\n' + '\n'.join('  ' + line for line in lines) + '\n'


def deep_by_aliases(levels: int = MAX_DEPTH) -> str:
    """A file only a few levels deep whose aliases nest deeper than MAX_DEPTH."""
    lines = ['  - &d0 [x]'] + [f'  - &d{i} [*d{i - 1}]' for i in range(1, levels)]
    return 'cameras:\n' + '\n'.join(lines) + '\n'


HOSTILE = {
    'billion laughs': (laughs(), f'more than {MAX_NODES} nodes'),
    'merge bomb': (merge_bomb(), f'more than {MAX_NODES} nodes'),
    'long strings aliased': (
        's: &s ' + 'x' * MAX_SCALAR_CHARS + '\nl1: &l1 [' + ', '.join(['*s'] * 16)
        + ']\ncameras: [' + ', '.join(['*l1'] * 16) + ']\n',
        f'more than {MAX_TEXT_CHARS} characters of text'),
    'deep flow nesting': ('cameras: ' + '[' * 5000 + ']' * 5000 + '\n',
                          f'nested deeper than {MAX_DEPTH} levels'),
    'deep block nesting': (''.join('  ' * i + 'k:\n' for i in range(MAX_DEPTH + 5)),
                           f'nested deeper than {MAX_DEPTH} levels'),
    'deep by aliases': (deep_by_aliases(), f'nested deeper than {MAX_DEPTH} levels'),
    'recursive list': ('cameras: &a [*a]\n', 'the alias *a is inside its own anchor'),
    'recursive mapping': ('cameras: [&a {name: *a}]\n', 'the alias *a is inside its own anchor'),
    'one huge scalar': (f"cameras: [{{name: {'n' * (MAX_SCALAR_CHARS + 1)}, url: h}}]\n",
                        f'a scalar of {MAX_SCALAR_CHARS + 1} characters'),
    'integer beyond int64': ('cameras: [{name: a, url: rtsp://h/x, fps: 1' + '0' * 400 + '}]\n',
                             'has 1329 bits'),
    'hex integer beyond int64': ('cameras: [{name: a, url: rtsp://h/x, width: 0x'
                                 + 'f' * 4000 + '}]\n', 'has 16000 bits'),
}


@pytest.mark.parametrize('case', sorted(HOSTILE))
def test_hostile_file_is_refused_naming_the_limit(tmp_path: Path, case: str):
    text, expected = HOSTILE[case]
    assert len(text.encode()) <= MAX_FILE_BYTES
    problems = problems_of(tmp_path, text)
    assert len(problems) == 1 and expected in problems[0], problems
    assert len(problems[0]) < 400 + len(str(tmp_path)), problems[0]


def test_alias_bomb_is_refused_at_once_with_little_memory(tmp_path: Path):
    """Once: 41 s, 2.1 GB and a 522 MB message for 400 bytes. Now it is refused while being
    composed, before any object is built (the bounds are generous: it takes milliseconds)."""
    path = write(tmp_path, laughs())
    tracemalloc.start()
    started = time.monotonic()
    try:
        with pytest.raises(ConfigError) as caught:
            load_config(str(path))
        elapsed_s = time.monotonic() - started
        peak_bytes = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert elapsed_s < 5.0 and peak_bytes < 5_000_000, (elapsed_s, peak_bytes)
    assert str(caught.value) == (
        f'{path}: more than {MAX_NODES} nodes (at line 5, column 15); accepted: a file of at '
        f'most {MAX_NODES} nodes (scalars, lists and mappings), counting each alias (*name) as '
        'a copy of its anchor (&name)')


def test_aliases_and_merge_keys_within_the_limits_work(tmp_path: Path):
    config = load_config(str(write(tmp_path, """
        cameras:
          - &first {name: a, url: 'rtsp://h/a', fps: 5.0, width: 640}
          - {<<: *first, name: b, url: 'rtsp://h/b', fps: 7.5}
        """)))
    assert [c.parameters for c in config.cameras] == [
        {'url': 'rtsp://h/a', 'fps': 5.0, 'width': 640},
        {'url': 'rtsp://h/b', 'fps': 7.5, 'width': 640}]


def test_file_size_limit(tmp_path: Path):
    valid = "cameras: [{name: a, url: 'rtsp://h/x'}]\n"
    path = tmp_path / 'cams.yaml'
    path.write_text(valid + '#' * (MAX_FILE_BYTES - len(valid) - 1) + '\n')
    assert path.stat().st_size == MAX_FILE_BYTES
    assert [c.name for c in load_config(str(path)).cameras] == ['a']
    path.write_text(valid + '#' * (MAX_FILE_BYTES - len(valid)) + '\n')
    with pytest.raises(ConfigError) as caught:
        load_config(str(path))
    assert str(caught.value) == (f'{path}: larger than {MAX_FILE_BYTES} bytes; accepted: a '
                                 f'configuration file of at most {MAX_FILE_BYTES} bytes (64 KiB)')


def test_file_that_is_not_utf8_is_named_with_the_offset(tmp_path: Path):
    path = tmp_path / 'cams.yaml'
    head = "cameras:\n  - {name: a, url: 'rtsp://h/x'}\n# caf".encode()
    path.write_bytes(head + b'\xe9 au lait\n')  # Latin-1
    with pytest.raises(ConfigError) as caught:
        load_config(str(path))
    assert str(caught.value) == (f'{path}: not UTF-8: byte 0xe9 at offset {len(head)} (line 3): '
                                 'invalid continuation byte; accepted: a text file in UTF-8')


def test_utf8_with_a_byte_order_mark_is_fine(tmp_path: Path):
    path = tmp_path / 'cams.yaml'
    path.write_bytes(b'\xef\xbb\xbf' + "cameras: [{name: a, url: 'rtsp://h/x'}]\n".encode())
    assert [c.name for c in load_config(str(path)).cameras] == ['a']


def test_every_message_is_bounded(tmp_path: Path):
    """Echoed keys and values are cut, each on one line; at most MAX_PROBLEMS are listed."""
    long_list = '[' + ', '.join(['*w'] * 200) + ']'
    problems = problems_of(tmp_path, f"""
        cameras:
          - name: a
            url: 'rtsp://h/x'
            {'k' * 1000}: 1
            "two\\nlines": 1
            frame_id: &w [{', '.join(['w' * 40] * 50)}]
            encoding: {long_list}
        """)
    assert len(problems) == 4, problems
    assert all(len(line) < 700 + len(str(tmp_path)) for line in problems), problems
    assert '(900 more characters): unknown key' in problems[0]
    assert "'two\\nlines': unknown key" in problems[1]
    assert 'frame_id: [' in problems[2] and 'more characters) has the wrong type' in problems[2]
    for bad in ('fps: -1', 'fsp: 1'):  # a core check's problem, one of this module's
        many = problems_of(tmp_path, 'cameras:\n' + ''.join(
            f"  - {{name: c{i}, url: 'rtsp://h/x', {bad}}}\n" for i in range(50)))
        assert len(many) == MAX_PROBLEMS + 1
        assert many[-1].endswith(f'cams.yaml: {50 - MAX_PROBLEMS} more problems not shown; '
                                 'accepted: a file without the problems above')


# -- passwords: never in a message, wherever in the file they are ------------------------------

# Passwords of the forms redact() does not see on its own: with a '/' and a space in them.
ODD_SECRET = 'hun/ter2 xyzzy'


@pytest.mark.parametrize('password', [SECRET, 'hun@ter2', ODD_SECRET])
@pytest.mark.parametrize('text', [
    "cameras: [{name: 'rtsp://u:{s}@h/x', url: 'rtsp://h/x'}]\n",  # in a name
    "cameras: [{name: 'u:{s}@10.0.0.5', url: 'rtsp://h/x'}]\n",  # without a scheme
    "cameras: [{name: ['rtsp://u:{s}@h/x'], url: 'rtsp://h/x'}]\n",  # in a list as a name
    "cameras: [{name: a, url: 'rtsp://h/x', 'rtsp://u:{s}@h/x': 1}]\n",  # a camera key
    "'rtsp://u:{s}@h/x': 1\ncameras: [{name: a, url: 'rtsp://h/x'}]\n",  # a top-level key
    "cameras: [{name: a, url: 'rtsp://h/x'}]\ncamera_defaults: {'rtsp://u:{s}@h': 1}\n",
    "cameras: [{name: a, url: 'rtsp://h/x'}]\ndetector: {model: {'rtsp://u:{s}@h': 1}}\n",
    "cameras: [{name: a, url: 'rtsp://h/x'}]\ntransport: {'rtsp://u:{s}@h': 1}\n",
    "cameras: [{name: a, url: 'rtsp://h/x', fps: 'rtsp://u:{s}@h/x'}]\n",  # a wrong type
    "cameras: [{name: a, url: 'rtsp://h/x', frame_id: ['u:{s}@h/x']}]\n",  # a wrong type
    "cameras: [{name: a, url: 'rtsp://h/x', encoding: 'rtsp://u:{s}@h/x'}]\n",  # no choice
    "cameras: ['rtsp://u:{s}@h/x']\n",  # a camera that is no mapping
    "cameras: [{name: a, url: 'rtsp://h/x'}]\ntransport: {fastdds_profile: 'rtsp://u:{s}@h'}\n",
    "cameras: [{name: a, url: 'rtsp://h/x'}]\n'rtsp://u:{s}@h/x': 1\n'rtsp://u:{s}@h/x': 2\n",
    "cameras: !<rtsp://u:{s}@h/x> [1]\n",  # a tag
])
def test_passwords_never_in_any_message(tmp_path: Path, text: str, password: str):
    problems = problems_of(tmp_path, text.replace('{s}', password.replace("'", "''")))
    message = '\n'.join(problems)
    assert problems and all(part not in message for part in password.split()), message
    assert all(part not in message for part in password.split('@')), message


def test_masking_keeps_what_is_no_password(tmp_path: Path):
    """An echoed key or value with a '@' is shown from its last '@' on; the package's own
    words that look like URLs with a user or a password are left alone."""
    problems = problems_of(tmp_path, "cameras: [{name: a, url: 'rtsp://h/x', "
                                     "fps: 'rtsp://u:pw@h/x', 'rtsp://u:pw@h/y': 1}, "
                                     "{name: b, url: 'rtsp://h/x', password_env: CAM_PASSWORD}, "
                                     "{name: c, url: 'rtsp:///x'}]\n")
    assert len(problems) == 4, problems
    assert "(name 'a'): fps: '***@h/x' has the wrong type" in problems[0], problems
    assert "(name 'a'): ***@h/y: unknown key" in problems[1], problems
    assert "password_env: needs a user name in url (like rtsp://user@host/path), got " \
        "'rtsp://h/x'; accepted: a URL with a user and no password (scheme://user@host/path)" \
        in problems[2], problems
    assert problems[3].endswith(": cameras[2] (name 'c'): url: a rtsp:// URL needs a host (got "
                                "'rtsp:///x'); accepted: rtsp://[user[:password]@]host[:port]/"
                                "path, rtsps://..., http(s)://host[:port]/path, a path to an "
                                "existing video file (or file:///path), /dev/videoN, or a camera "
                                "index N"), problems


def test_cutting_never_leaves_part_of_a_password(tmp_path: Path):
    """A value cut in the middle of its password: the URL it was in goes too."""
    secret = 'p' * 120
    url = f"rtsp://u:{secret}@h/x"
    problems = problems_of(tmp_path, f"cameras: [{{name: a, url: 'rtsp://h/x', "
                                     f"frame_id: ['{'w' * 20}', '{url}']}}]\n")
    assert 'p' * 10 not in problems[0], problems
    assert config_module._echo('x' * 60 + 'rtsp://u:' + secret + '@h', 100) == \
        'x' * 60 + 'rtsp... (127 more characters)'


# -- Fast DDS profiles named in the file ------------------------------------------------------

PROFILE_CASES = {
    'not XML': ('this is not XML\n', 'not well-formed XML (syntax error: line 1, column 0)'),
    'empty': ('', 'not well-formed XML (no element found'),
    'no participant': ('<dds xmlns="http://www.eprosima.com"><profiles><data_writer '
                       'profile_name="w"/></profiles></dds>',
                       'no <participant profile_name="..."> in <profiles>'),
    'no default participant': ('<profiles><participant profile_name="p"/></profiles>',
                               'no participant profile is marked is_default_profile="true"'),
    'a DOCTYPE': ('<?xml version="1.0"?><!DOCTYPE dds [<!ENTITY a "b">]>' + MINIMAL_PROFILE,
                  'has a DOCTYPE'),
}


@pytest.mark.parametrize('case', sorted(PROFILE_CASES))
def test_fastdds_profile_is_checked(tmp_path: Path, case: str):
    content, expected = PROFILE_CASES[case]
    (tmp_path / 'profile.xml').write_text(content)
    problems = problems_of(tmp_path, CAM + 'transport: {fastdds_profile: profile.xml}\n')
    assert len(problems) == 1, problems
    assert problems[0].startswith(f'{tmp_path}/cams.yaml: transport: fastdds_profile: '
                                  f'{tmp_path}/profile.xml: {expected}'), problems[0]
    assert problems[0].endswith("accepted: a Fast DDS XML profile file: <dds xmlns="
                                '"http://www.eprosima.com"><profiles> (the 3.x layout) or '
                                '<profiles xmlns="http://www.eprosima.com/XMLSchemas/fastRTPS_'
                                'Profiles"> (2.x), holding a <participant profile_name="..." '
                                'is_default_profile="true">, without a DOCTYPE'), problems[0]


def test_the_packaged_profile_passes_the_check(tmp_path: Path):
    config = load_config(str(write(tmp_path, CAM + 'transport: {fastdds_profile: '
                                   f'{packaged_fastdds_profile()}}}\n')))
    assert config.fastdds_profile == packaged_fastdds_profile()
