"""Camera calibration files (the camera_calibration / camera_info_manager YAML format).

ROS-free: the node turns a `Calibration` into sensor_msgs/CameraInfo. Every problem with the
file is a ConfigError of `camera_info_url` (`camera_info_url: <problem>; accepted: <what>`):
an unreadable, oversized or non-UTF-8 file, YAML that does not parse or uses aliases (which a
calibration never needs, and which can blow a few hundred bytes up into gigabytes), a missing
key, a value of the wrong type, a matrix of the wrong size, a number that is not finite.
"""
import math
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
MAX_FILE_BYTES = 1 << 20  # a calibration file is well under 1 KiB
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
    url = url.strip()
    parsed = urlparse(url)
    if parsed.scheme == 'file':
        if parsed.netloc not in ('', 'localhost'):
            raise _bad(f'{url!r} names a file on another host ({parsed.netloc!r})',
                       'a plain path or file:///path/to/calibration.yaml')
        return Path(unquote(parsed.path))
    if parsed.scheme == '':
        return Path(url).expanduser()
    raise _bad(f"unsupported scheme '{parsed.scheme}://' in {url!r}",
               'a plain path or file:///path/to/calibration.yaml')


def _numbers(values: list, path: Path, key: str) -> List[float]:
    numbers = []
    for value in values:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise _bad(f'{path}: {key!r} holds a value that is not a number ({value!r})')
        if not math.isfinite(value):
            raise _bad(f'{path}: {key!r} holds a value that is not a finite number ({value!r})')
        numbers.append(float(value))
    return numbers


class _AliasFound(Exception):
    """A YAML alias in a calibration file (see _NoAliasLoader)."""


class _NoAliasLoader(yaml.SafeLoader):
    """yaml.SafeLoader without aliases: a calibration file has no use for them, and expanding
    nested ones is how a few hundred bytes of YAML become gigabytes."""

    def compose_node(self, parent, index):
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise _AliasFound(f'*{event.anchor} (line {event.start_mark.line + 1})')
        return super().compose_node(parent, index)


def _read_yaml(path: Path):
    """The parsed document of `path`, or ConfigError of camera_info_url saying why not."""
    try:
        with open(path, 'rb') as stream:
            raw = stream.read(MAX_FILE_BYTES + 1)
    except OSError as exc:
        raise _bad(f'cannot read {path} ({exc.strerror or exc})') from None
    if len(raw) > MAX_FILE_BYTES:
        raise _bad(f'{path} is larger than {MAX_FILE_BYTES} bytes: not a calibration file')
    try:
        text = raw.decode('utf-8-sig')
    except UnicodeDecodeError as exc:
        raise _bad(f'{path} is not UTF-8 text (byte 0x{raw[exc.start]:02x} at offset '
                   f'{exc.start})', _FILE_WORDS + ', in UTF-8') from None
    try:
        return yaml.load(text, Loader=_NoAliasLoader)  # noqa: S506 - a SafeLoader
    except _AliasFound as exc:
        raise _bad(f'{path} uses a YAML alias ({exc}); calibration files have none',
                   _FILE_WORDS + ', without anchors (&name) and aliases (*name)') from None
    except yaml.YAMLError as exc:
        raise _bad(f"{path} is not valid YAML ({' '.join(str(exc).split())})") from None
    except RecursionError:
        raise _bad(f'{path} is nested too deeply to be a calibration file') from None


def _matrix(data: dict, path: Path, key: str, rows: int, cols: int) -> List[float]:
    entry = data[key]
    values = entry.get('data')
    if (entry.get('rows') != rows or entry.get('cols') != cols
            or not isinstance(values, list) or len(values) != rows * cols):
        shape = f"rows: {entry.get('rows')!r}, cols: {entry.get('cols')!r}, " + (
            f'{len(values)} data values' if isinstance(values, list) else 'no data list')
        raise _bad(f'{path}: {key!r} must have rows: {rows}, cols: {cols} and '
                   f'{rows * cols} data values, got {shape}')
    return _numbers(values, path, key)


def load_calibration(url: str) -> Calibration:
    """Read a calibration YAML; every problem is a ConfigError of `camera_info_url` that says
    what is wrong with which file and what is accepted."""
    path = _path_from_url(url)
    data = _read_yaml(path)
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
        need(key, dict)
        matrices[key] = _matrix(data, path, key, rows, cols)
    model = data.get('distortion_model', 'plumb_bob')
    if model not in DISTORTION_MODELS:
        raise _bad(f'{path}: distortion_model {model!r} is not supported',
                   'distortion_model one of ' + ', '.join(repr(m) for m in DISTORTION_MODELS))
    entry = need('distortion_coefficients', dict)
    distortion = entry.get('data')
    if not isinstance(distortion, list):
        raise _bad(f"{path}: 'distortion_coefficients' needs a data list")
    rows, cols = entry.get('rows'), entry.get('cols')
    if isinstance(rows, int) and isinstance(cols, int) and rows * cols != len(distortion):
        raise _bad(f"{path}: 'distortion_coefficients' has rows: {rows}, cols: {cols} but "
                   f'{len(distortion)} data values')
    return Calibration(width=width, height=height, distortion_model=model,
                       d=_numbers(distortion, path, 'distortion_coefficients'),
                       k=matrices['camera_matrix'], r=matrices['rectification_matrix'],
                       p=matrices['projection_matrix'],
                       camera_name=str(data.get('camera_name', '')))
