"""Camera calibration files (the camera_calibration / camera_info_manager YAML format).

ROS-free: the node turns a `Calibration` into sensor_msgs/CameraInfo. Every problem with the
file is a ConfigError of `camera_info_url`.
"""
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import List
from urllib.parse import unquote, urlparse

import yaml

from multicam_ros.core.settings import ConfigError

DISTORTION_MODELS = ('plumb_bob', 'rational_polynomial', 'equidistant')
_MATRICES = {'camera_matrix': (3, 3), 'rectification_matrix': (3, 3),
             'projection_matrix': (3, 4)}
_KEY = 'camera_info_url'
_FILE_WORDS = ('a camera_calibration YAML file (image_width, image_height, camera_matrix, '
               'distortion_model, distortion_coefficients, rectification_matrix, '
               'projection_matrix) as a path or file:// URL')


def _bad(problem: str, accepted: str = _FILE_WORDS) -> ConfigError:
    return ConfigError.of(_KEY, problem, accepted)


@dataclass(frozen=True)
class Calibration:
    """Intrinsics of one camera at `width` x `height` pixels; row-major matrices."""

    width: int
    height: int
    distortion_model: str = 'plumb_bob'
    d: List[float] = field(default_factory=list)
    k: List[float] = field(default_factory=lambda: [0.0] * 9)
    r: List[float] = field(default_factory=lambda: [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0])
    p: List[float] = field(default_factory=lambda: [0.0] * 12)
    camera_name: str = ''

    @property
    def calibrated(self) -> bool:
        return any(self.k)

    def scaled_to(self, width: int, height: int) -> 'Calibration':
        """The same camera after resizing its images to `width` x `height`.

        Focal lengths and principal point scale with the image; distortion and rectification do
        not change. Uncalibrated intrinsics stay all zero.
        """
        if (width, height) == (self.width, self.height):
            return self
        sx, sy = width / self.width, height / self.height
        k, p = list(self.k), list(self.p)
        for row, scale in ((0, sx), (1, sy)):
            for col in range(3):
                k[row * 3 + col] *= scale
            for col in range(4):
                p[row * 4 + col] *= scale
        return replace(self, width=width, height=height, k=k, p=p)


def uncalibrated(width: int, height: int) -> Calibration:
    """What a driver reports without a calibration file: the size, zero intrinsics."""
    return Calibration(width=width, height=height)


def _path_from_url(url: str) -> Path:
    parsed = urlparse(url)
    if parsed.scheme == 'file':
        return Path(unquote(parsed.netloc + parsed.path))
    if parsed.scheme == '':
        return Path(url).expanduser()
    raise _bad(f"unsupported scheme '{parsed.scheme}://' in {url!r}",
               'a plain path or file:///path/to/calibration.yaml')


def _numbers(values: list, path: Path, key: str) -> List[float]:
    try:
        return [float(v) for v in values]
    except (TypeError, ValueError):
        raise _bad(f'{path}: {key!r} holds a value that is not a number') from None


def load_calibration(url: str) -> Calibration:
    """Read a calibration YAML; every problem is a ConfigError of `camera_info_url` that says
    what is wrong with which file."""
    path = _path_from_url(url)
    try:
        with open(path) as stream:
            data = yaml.safe_load(stream)
    except OSError as exc:
        raise _bad(f'cannot read {path} ({exc.strerror})') from None
    except yaml.YAMLError as exc:
        raise _bad(f"{path} is not valid YAML ({' '.join(str(exc).split())})") from None
    if not isinstance(data, dict):
        raise _bad(f'{path} does not hold a mapping of calibration keys')

    def need(key: str, kind: type):
        if key not in data:
            raise _bad(f'{path} lacks the key {key!r}')
        value = data[key]
        if not isinstance(value, kind) or isinstance(value, bool):
            raise _bad(f'{path}: {key!r} is not {"an integer" if kind is int else "a mapping"}')
        return value

    width, height = need('image_width', int), need('image_height', int)
    if width <= 0 or height <= 0:
        raise _bad(f'{path}: image_width and image_height must be > 0, got {width} x {height}')
    matrices = {}
    for key, (rows, cols) in _MATRICES.items():
        entry = need(key, dict)
        values = entry.get('data')
        if (entry.get('rows') != rows or entry.get('cols') != cols
                or not isinstance(values, list) or len(values) != rows * cols):
            raise _bad(f'{path}: {key!r} must have rows: {rows}, cols: {cols} and '
                       f'{rows * cols} data values')
        matrices[key] = _numbers(values, path, key)
    model = data.get('distortion_model', 'plumb_bob')
    if model not in DISTORTION_MODELS:
        raise _bad(f'{path}: distortion_model {model!r} is not supported',
                   'distortion_model one of ' + ', '.join(repr(m) for m in DISTORTION_MODELS))
    distortion = need('distortion_coefficients', dict).get('data')
    if not isinstance(distortion, list):
        raise _bad(f"{path}: 'distortion_coefficients' needs a data list")
    return Calibration(width=width, height=height, distortion_model=model,
                       d=_numbers(distortion, path, 'distortion_coefficients'),
                       k=matrices['camera_matrix'], r=matrices['rectification_matrix'],
                       p=matrices['projection_matrix'],
                       camera_name=str(data.get('camera_name', '')))
