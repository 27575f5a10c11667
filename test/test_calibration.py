"""Calibration files: parsing, every bad input, and scaling with a resize."""
import re

import pytest

from multicam_ros.core.calibration import load_calibration, uncalibrated
from multicam_ros.core.settings import ConfigError

GOOD = """image_width: 640
image_height: 480
camera_name: front
camera_matrix: {rows: 3, cols: 3, data: [500.0, 0, 320.0, 0, 510.0, 240.0, 0, 0, 1]}
distortion_model: plumb_bob
distortion_coefficients: {rows: 1, cols: 5, data: [0.1, -0.2, 0.001, 0.002, 0.0]}
rectification_matrix: {rows: 3, cols: 3, data: [1, 0, 0, 0, 1, 0, 0, 0, 1]}
projection_matrix: {rows: 3, cols: 4, data: [500.0, 0, 320.0, 0, 0, 510.0, 240.0, 0, 0, 0, 1, 0]}
"""


def write(tmp_path, text):
    path = tmp_path / 'calib.yaml'
    path.write_text(text)
    return path


def test_reads_camera_calibration_format(tmp_path):
    path = write(tmp_path, GOOD)
    for url in (str(path), f'file://{path}'):
        calib = load_calibration(url)
        assert (calib.width, calib.height, calib.camera_name) == (640, 480, 'front')
        assert calib.k[0] == 500.0 and calib.k[4] == 510.0 and calib.calibrated
        assert calib.d == [0.1, -0.2, 0.001, 0.002, 0.0]
        assert len(calib.p) == 12 and calib.p[2] == 320.0


def test_scaling_follows_resize(tmp_path):
    half = load_calibration(str(write(tmp_path, GOOD))).scaled_to(320, 240)
    assert (half.width, half.height) == (320, 240)
    assert half.k == [250.0, 0, 160.0, 0, 255.0, 120.0, 0, 0, 1]
    assert half.p[:4] == [250.0, 0, 160.0, 0] and half.p[4:8] == [0, 255.0, 120.0, 0]
    assert half.d == [0.1, -0.2, 0.001, 0.002, 0.0]


def test_uncalibrated_has_size_and_zero_intrinsics():
    calib = uncalibrated(1280, 720).scaled_to(640, 360)
    assert (calib.width, calib.height) == (640, 360)
    assert not calib.calibrated and calib.k == [0.0] * 9


def test_every_matrix_value_is_a_float(tmp_path):
    """sensor_msgs/CameraInfo's d, k, r and p are float64 arrays: with strict field checks
    (ROS_PYTHON_CHECK_FIELDS=1, always on in Humble) an int in them is an error."""
    loaded = load_calibration(str(write(tmp_path, GOOD)))  # the file's data holds ints
    for calib in (uncalibrated(640, 480), uncalibrated(640, 480).scaled_to(320, 240),
                  loaded, loaded.scaled_to(320, 240)):
        for name in ('d', 'k', 'r', 'p'):
            values = getattr(calib, name)
            assert all(type(value) is float for value in values), (name, values)
    assert uncalibrated(640, 480).r == [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0]


@pytest.mark.parametrize('text,expected,accepted', [
    ('[1, 2]', 'does not hold a mapping', 'a camera_calibration YAML file'),
    (': : :', 'is not valid YAML (', 'a camera_calibration YAML file'),
    (GOOD.replace('image_width: 640\n', ''), "lacks the key 'image_width'",
     'a camera_calibration YAML file (image_width, '),
    (GOOD.replace('image_width: 640', 'image_width: -5'), 'must be > 0, got -5 x 480',
     'a camera_calibration YAML file'),
    (GOOD.replace('image_width: 640', "image_width: '640'"), "'image_width' is not an integer",
     'a camera_calibration YAML file'),
    (GOOD.replace('rows: 3, cols: 4', 'rows: 3, cols: 3'), "'projection_matrix' must have",
     'a camera_calibration YAML file'),
    (GOOD.replace('500.0, 0, 320.0', 'x, 0, 320.0', 1), "'camera_matrix' holds a value that "
     'is not a number', 'a camera_calibration YAML file'),
    (GOOD.replace('plumb_bob', 'fisheye9'), "distortion_model 'fisheye9' is not supported",
     "distortion_model one of 'plumb_bob', 'rational_polynomial', 'equidistant'"),
])
def test_bad_files_name_the_parameter(tmp_path, text, expected, accepted):
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_calibration(str(path))
    message = str(info.value)
    assert message.startswith(f'camera_info_url: {path}')  # the file at fault
    assert '\n' not in message  # one line, even for a YAML parser's report
    assert expected in message
    assert f'; accepted: {accepted}' in message


def test_missing_file_and_bad_scheme(tmp_path):
    with pytest.raises(ConfigError, match=r'^camera_info_url: cannot read .*absent.yaml \(No such '
                                          r'file or directory\); accepted: '):
        load_calibration(str(tmp_path / 'absent.yaml'))
    with pytest.raises(ConfigError, match=r"^camera_info_url: unsupported scheme 'package://' in "
                                          r"'package://cam/calib.yaml'; accepted: a plain path "
                                          r'or file:///'):
        load_calibration('package://cam/calib.yaml')


ACCEPTED_FILE = '; accepted: a camera_calibration YAML file'


def write_bytes(tmp_path, data: bytes):
    path = tmp_path / 'calib.yaml'
    path.write_bytes(data)
    return path


@pytest.mark.parametrize('data, expected', [
    (GOOD.encode('utf-8').replace(b'front', b'fr\xf6nt'),  # Latin-1, as some editors save it
     r'is not UTF-8 text \(byte 0xf6 at offset \d+\)'),
    (b'\xff\xfe\x00\x00garbage', r'is not UTF-8 text \(byte 0xff at offset 0\)'),
    (GOOD.replace('image_height: 480', 'image_height: &h 480\nheight_again: *h').encode(),
     r'uses a YAML alias \(\*h \(line \d+\)\); calibration files have none; accepted: .*'
     r'without anchors'),
    (b'a: &a [x, x]\nb: &b [*a, *a]\nc: &c [*b, *b]\nd: [*c, *c]\n',  # an alias bomb, small
     r'uses a YAML alias \(\*a'),
    (b'[' * 5000 + b']' * 5000, r'(is nested too deeply|is not valid YAML)'),
    (b'x: ' + b'0' * (1 << 20), r'is larger than 1048576 bytes: not a calibration file'),
    (GOOD.replace('data: [500.0, 0, 320.0', 'data: [.nan, 0, 320.0').encode(),
     r"'camera_matrix' holds a value that is not a finite number \(nan\)"),
    (GOOD.replace('data: [500.0, 0, 320.0', 'data: [true, 0, 320.0').encode(),
     r"'camera_matrix' holds a value that is not a number \(True\)"),
    (GOOD.replace('data: [1, 0, 0, 0, 1, 0, 0, 0, 1]', 'data: [1, 0, 0, 0, 1, 0]').encode(),
     r"'rectification_matrix' must have rows: 3, cols: 3 and 9 data values, got rows: 3, "
     r'cols: 3, 6 data values'),
    (GOOD.replace('{rows: 3, cols: 4,', '{rows: 4, cols: 3,').encode(),
     r"'projection_matrix' must have rows: 3, cols: 4 and 12 data values, got rows: 4, "
     r'cols: 3, 12 data values'),
    (GOOD.replace('rows: 1, cols: 5', 'rows: 1, cols: 4').encode(),
     r"'distortion_coefficients' has rows: 1, cols: 4 but 5 data values"),
], ids=['latin-1', 'utf-32', 'alias', 'alias-bomb', 'deep', 'huge', 'nan', 'bool',
        'rectification-size', 'projection-shape', 'distortion-count'])
def test_every_bad_file_names_camera_info_url_and_what_is_accepted(tmp_path, data, expected):
    path = write_bytes(tmp_path, data)
    with pytest.raises(ConfigError) as info:
        load_calibration(str(path))
    message = str(info.value)
    assert message.startswith(f'camera_info_url: {path}'), message
    assert '\n' not in message and len(message) < 1000
    assert re.search(expected, message), message
    assert ACCEPTED_FILE in message, message


def test_a_folder_a_missing_file_and_another_host(tmp_path):
    for url, expected in ((str(tmp_path), r'^camera_info_url: cannot read .* \(Is a directory\)'),
                          (f'file://{tmp_path}/absent.yaml',
                           r'^camera_info_url: cannot read .*absent.yaml \(No such file'),
                          ('file://cam-host/calib.yaml',
                           r"^camera_info_url: 'file://cam-host/calib.yaml' names a file on "
                           r"another host \('cam-host'\); accepted: a plain path or file:///")):
        with pytest.raises(ConfigError, match=expected):
            load_calibration(url)
    good = tmp_path / 'good.yaml'
    good.write_text(GOOD)
    assert load_calibration(f'file://localhost{good}').width == 640
    assert load_calibration(f'  {good}  ').width == 640
    bom = write_bytes(tmp_path, b'\xef\xbb\xbf' + GOOD.encode())  # UTF-8 with a BOM is fine
    assert load_calibration(str(bom)).height == 480
