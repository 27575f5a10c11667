"""Calibration files: parsing, every bad input, and scaling with a resize."""
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
