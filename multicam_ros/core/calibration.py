"""Camera calibration files (the camera_calibration / camera_info_manager YAML format).

ROS-free: the node turns a `Calibration` into sensor_msgs/CameraInfo.
"""
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import List
from urllib.parse import unquote, urlparse

import yaml

DISTORTION_MODELS = ('plumb_bob', 'rational_polynomial', 'equidistant')
_MATRICES = {'camera_matrix': (3, 3), 'rectification_matrix': (3, 3),
             'projection_matrix': (3, 4)}


@dataclass(frozen=True)
class Calibration:
    """Intrinsics of one camera at `width` x `height` pixels; row-major matrices."""

    width: int
    height: int
    distortion_model: str = 'plumb_bob'
    d: List[float] = field(default_factory=list)
    k: List[float] = field(default_factory=lambda: [0.0] * 9)
    r: List[float] = field(default_factory=lambda: [1.0, 0, 0, 0, 1.0, 0, 0, 0, 1.0])
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
    raise ValueError(f"camera_info_url: unsupported scheme '{parsed.scheme}://' in {url!r}; "
                     'use file:///path/to/calibration.yaml or a plain path')


def load_calibration(url: str) -> Calibration:
    """Read a calibration YAML; every error names `camera_info_url` and what is wrong."""
    path = _path_from_url(url)
    try:
        with open(path) as stream:
            data = yaml.safe_load(stream)
    except OSError as exc:
        raise ValueError(f'camera_info_url: cannot read {path}: {exc.strerror}') from None
    except yaml.YAMLError as exc:
        raise ValueError(f'camera_info_url: {path} is not valid YAML: {exc}') from None
    if not isinstance(data, dict):
        raise ValueError(f'camera_info_url: {path} must hold a mapping of calibration keys')

    def need(key: str, kind: type):
        if key not in data:
            raise ValueError(f'camera_info_url: {path} lacks the key {key!r}')
        value = data[key]
        if not isinstance(value, kind) or isinstance(value, bool):
            raise ValueError(f'camera_info_url: {path}: {key!r} must be {kind.__name__}')
        return value

    width, height = need('image_width', int), need('image_height', int)
    if width <= 0 or height <= 0:
        raise ValueError(f'camera_info_url: {path}: image_width and image_height must be > 0')
    matrices = {}
    for key, (rows, cols) in _MATRICES.items():
        entry = need(key, dict)
        values = entry.get('data')
        if (entry.get('rows') != rows or entry.get('cols') != cols
                or not isinstance(values, list) or len(values) != rows * cols):
            raise ValueError(f'camera_info_url: {path}: {key!r} must have rows: {rows}, '
                             f'cols: {cols} and {rows * cols} data values')
        matrices[key] = [float(v) for v in values]
    model = data.get('distortion_model', 'plumb_bob')
    if model not in DISTORTION_MODELS:
        raise ValueError(f'camera_info_url: {path}: distortion_model {model!r} is not one of '
                         + ', '.join(DISTORTION_MODELS))
    distortion = need('distortion_coefficients', dict).get('data')
    if not isinstance(distortion, list):
        raise ValueError(f"camera_info_url: {path}: 'distortion_coefficients' needs a data list")
    return Calibration(width=width, height=height, distortion_model=model,
                       d=[float(v) for v in distortion], k=matrices['camera_matrix'],
                       r=matrices['rectification_matrix'], p=matrices['projection_matrix'],
                       camera_name=str(data.get('camera_name', '')))
