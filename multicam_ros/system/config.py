"""The system configuration file (config/cams.yaml): its schema and its checks. ROS-free.

`load_config` reads and validates the YAML file into a `Config`; system/plan.py turns that into
the processes to start. Every problem is one line naming the file, the entry and the key, in
the package's one form (`cams.yaml: cameras[0] (name 'a'): fps: -1.0 is out of range;
accepted: a number from 0 to 1000`), and all problems are raised together as one
`ConfigError` (multicam_ros.core.settings, re-exported here).

File layout (see config/cams.yaml for a commented example):

    cameras:                 # required, non-empty
      - name: front          # a ROS name: the camera's namespace /front
        url: rtsp://...      # required; any camera_node parameter may follow as an override
        fps: 10.0
    camera_defaults: {...}   # optional: camera_node parameters for every camera (not url)
    detector:                # optional: detector_node parameters, `model:` nested
      model: {backend: torchscript, path: model.pt}
      device: cuda
    transport:               # optional
      fastdds_profile: package   # package | none | path/to/profile.xml

Decisions worth knowing:
- Values are checked by the nodes' own settings (core/params.py) and the rules of the core
  configs the nodes build from them (`camera_configs`, `detector_configs`), so a file that
  passes here does not fail on a parameter when the nodes start.
- Relative paths (a video file `url`, `camera_info_url`, `model.path`, `model.labels_file`,
  `model.weights` when it is a file, `transport.fastdds_profile`) are relative to the
  configuration file, and the config carries them absolute.
- Files that a camera needs (a video file `url`, `camera_info_url`) and the Fast DDS profile
  must exist now: a camera that cannot open them would only exit and be restarted forever.
  Model files are left to the detector, which names the exact problem and stops the system.
- Empty lists are left out: every list parameter defaults to empty, and ROS cannot tell the
  element type of an empty list.
"""
import difflib
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import yaml

from multicam_ros.core.params import CAMERA_PARAMS, DETECTOR_PARAMS, camera_configs, \
    detector_configs, is_ros_name
from multicam_ros.core.settings import ConfigError, Setting, by_name, problem_line
from multicam_ros.core.sources import ACCEPTED_FORMS, Source, redact, validate_source
from multicam_ros.system.transport import PROFILE_NONE, PROFILE_PACKAGE

__all__ = ['CameraConfig', 'Config', 'ConfigError', 'load_config', 'parse_config']

TOP_LEVEL_KEYS = ('cameras', 'camera_defaults', 'detector', 'transport')
TRANSPORT_KEYS = ('fastdds_profile',)
MAX_NAME_LENGTH = 64

_CAMERA_SETTINGS = by_name(CAMERA_PARAMS)
_DETECTOR_SETTINGS = by_name(DETECTOR_PARAMS)
_CAMERA_ENTRY_KEYS = ('name',) + tuple(_CAMERA_SETTINGS)
_CAMERA_DEFAULT_KEYS = tuple(name for name in _CAMERA_SETTINGS if name != 'url')
_DETECTOR_KEYS = tuple(name for name in _DETECTOR_SETTINGS if name != 'cameras')
_DETECTOR_PATH_KEYS = ('model.path', 'model.labels_file', 'model.weights')
_WEIGHT_WORDS = ('default', 'none')
_CAMERAS_WORDS = 'a list of cameras, each a mapping with a name and a url'
_NAME_WORDS = (f'letters, digits and _, not starting with a digit, at most {MAX_NAME_LENGTH} '
               'characters (it becomes the namespace /<name>)')
_PROFILE_WORDS = (f"'{PROFILE_PACKAGE}', '{PROFILE_NONE}' or the path of a Fast DDS XML "
                  'profile')


@dataclass(frozen=True)
class CameraConfig:
    """One validated camera: its name and its camera_node parameters (checked, coerced)."""

    name: str
    parameters: Dict[str, Any] = field(repr=False)  # the url may hold a password
    source: Source  # safe_url and secrets of the url


@dataclass(frozen=True)
class Config:
    """A validated configuration file."""

    path: str
    cameras: Tuple[CameraConfig, ...]
    detector: Dict[str, Any]  # flat detector_node parameters, without `cameras`
    fastdds_profile: str  # 'package', 'none' or an absolute path


# -- loading ------------------------------------------------------------------------------------


class _UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader that refuses a key given twice in one mapping (PyYAML keeps the last)."""


def _construct_unique_mapping(loader: _UniqueKeyLoader, node: yaml.MappingNode,
                              deep: bool = False) -> Dict[Any, Any]:
    seen = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if isinstance(key, (str, int, float, bool)) and key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f'key {key!r} is given twice in one mapping', key_node.start_mark)
        seen.add(key)
    return loader.construct_mapping(node, deep=deep)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG,
                                 _construct_unique_mapping)


def load_config(path: str, environ: Optional[Mapping[str, str]] = None) -> Config:
    """Read and validate a configuration file; raises ConfigError listing every problem.

    `environ` (default os.environ) is where `password_env` variables are looked up.
    """
    label = str(path)
    try:
        with open(path, encoding='utf-8') as stream:
            data = yaml.load(stream, Loader=_UniqueKeyLoader)
    except OSError as exc:
        raise ConfigError(f'{label}: cannot read: {exc.strerror}') from None
    except yaml.YAMLError as exc:
        raise ConfigError(f'{label}: not valid YAML{_yaml_problem(exc)}') from None
    return parse_config(data, label, Path(path).resolve().parent, environ)


def _yaml_problem(exc: yaml.YAMLError) -> str:
    """' at line 3, column 7: <what>' from a PyYAML error, without its file name."""
    mark = getattr(exc, 'problem_mark', None)
    words = '; '.join(str(part) for part in (getattr(exc, 'context', None),
                                             getattr(exc, 'problem', None)) if part)
    where = f' at line {mark.line + 1}, column {mark.column + 1}' if mark is not None else ''
    return f'{where}: {words or " ".join(str(exc).split())}'


def parse_config(data: Any, label: str = 'cams.yaml', base_dir: Optional[Path] = None,
                 environ: Optional[Mapping[str, str]] = None) -> Config:
    """Validate configuration data already read from YAML (see load_config).

    `label` names the file in messages; relative paths are resolved against `base_dir`
    (default: the current directory).
    """
    checker = _Checker(label, Path(base_dir or os.getcwd()),
                       os.environ if environ is None else environ)
    config = checker.check(data)
    if checker.problems:
        raise ConfigError(*checker.problems)
    return config


def _unknown(key: Any, known: Sequence[str]) -> Tuple[str, str]:
    """(problem, accepted) of an unknown key, with the closest known key as a hint."""
    close = difflib.get_close_matches(str(key), known, n=1)
    hint = f" (did you mean '{close[0]}'?)" if close else ''
    return f'unknown key{hint}', ', '.join(known)


def _flatten(section: Mapping[str, Any], prefix: str = '',
             twice: Optional[List[str]] = None) -> Dict[str, Any]:
    """{'model': {'backend': 'x'}, 'device': 'cpu'} -> {'model.backend': 'x', 'device': 'cpu'}.

    A name given both nested and dotted is appended to `twice` (the last value is kept)."""
    flat: Dict[str, Any] = {}
    for key, value in section.items():
        name = f'{prefix}{key}'
        items = _flatten(value, name + '.', twice).items() if isinstance(value, dict) \
            else [(name, value)]
        for flat_name, flat_value in items:
            if flat_name in flat and twice is not None:
                twice.append(flat_name)
            flat[flat_name] = flat_value
    return flat


class _Checker:
    """Collects every problem of one configuration, each naming where it is."""

    def __init__(self, label: str, base_dir: Path, environ: Mapping[str, str]) -> None:
        self.label = label
        self.base_dir = base_dir
        self.environ = environ
        self.problems: List[str] = []

    def problem(self, where: str, key: str, problem: str, accepted: str = '') -> None:
        """Record `<file>: <where>: <key>: <problem>; accepted: <values>`. URL passwords in the
        key and problem are redacted (a URL may be typed into any key); `accepted` is ours."""
        line = problem_line(redact(key), redact(problem), accepted)
        self.problems.append(': '.join(part for part in (self.label, where, line) if part))

    def error(self, where: str, exc: ConfigError, safe: bool = False) -> None:
        """Record the problems of a ConfigError raised by the core's checks. They may echo a
        value, so URL passwords are redacted unless the raiser keeps them out (`safe`: sources
        does, and its accepted forms look like a URL with a password)."""
        for line in exc.problems:
            self.problems.append(f'{self.label}: {where}: {line if safe else redact(line)}')

    def check(self, data: Any) -> Config:
        if data is None:
            data = {}
        if not isinstance(data, dict):
            self.problem('', '', f'{_kind(data)} is not a mapping',
                         'a mapping with keys ' + ', '.join(TOP_LEVEL_KEYS))
            return Config(self.label, (), {}, PROFILE_PACKAGE)
        for key in data:
            if key not in TOP_LEVEL_KEYS:
                self.problem('', str(key), *_unknown(key, TOP_LEVEL_KEYS))
        defaults = self._camera_defaults(data.get('camera_defaults'))
        cameras = self._cameras(data.get('cameras'), defaults)
        detector = self._detector(data.get('detector'))
        profile = self._transport(data.get('transport'))
        return Config(self.label, tuple(cameras), detector, profile)

    # -- sections ------------------------------------------------------------------------------

    def _mapping(self, value: Any, where: str, key: str, accepted: str) -> Dict[str, Any]:
        if value is None:
            return {}
        if not isinstance(value, dict):
            self.problem(where, key, f'{_kind(value)} is not a mapping', accepted)
            return {}
        return value

    def _camera_defaults(self, section: Any) -> Dict[str, Any]:
        where = 'camera_defaults'
        values = {}
        section = self._mapping(section, '', where, 'a mapping of camera_node parameters')
        for key, value in section.items():
            if key == 'url':
                self.problem(where, 'url', 'set per camera, not in camera_defaults')
            elif key not in _CAMERA_DEFAULT_KEYS:
                self.problem(where, str(key), *_unknown(key, _CAMERA_DEFAULT_KEYS))
            else:
                checked = self._value(_CAMERA_SETTINGS[key], value, where)
                if checked is not None:
                    values[key] = checked
        return values

    def _cameras(self, section: Any, defaults: Dict[str, Any]) -> List[CameraConfig]:
        if section is None:
            self.problem('', 'cameras', 'missing', _CAMERAS_WORDS)
            return []
        if not isinstance(section, list):
            self.problem('', 'cameras', f'{_kind(section)} is not a list', _CAMERAS_WORDS)
            return []
        if not section:
            self.problem('', 'cameras', 'empty', 'a list of at least one camera, each a '
                         'mapping with a name and a url')
            return []
        cameras = []
        seen: Dict[str, int] = {}
        for index, entry in enumerate(section):
            camera = self._camera(index, entry, defaults, seen)
            if camera is not None:
                cameras.append(camera)
        return cameras

    def _camera(self, index: int, entry: Any, defaults: Dict[str, Any],
                seen: Dict[str, int]) -> Optional[CameraConfig]:
        where = f'cameras[{index}]'
        if not isinstance(entry, dict):
            self.problem(where, '', f'{_kind(entry)} is not a mapping',
                         'a mapping with a name and a url')
            return None
        name = entry.get('name')
        name_ok = self._camera_name(name, where, index, seen)
        if name_ok:
            where = f'{where} (name {name!r})'
        before = len(self.problems)
        params = dict(defaults)
        for key, value in entry.items():
            if key == 'name':
                continue
            if key not in _CAMERA_ENTRY_KEYS:
                self.problem(where, str(key), *_unknown(key, _CAMERA_ENTRY_KEYS))
                continue
            if key == 'url' and isinstance(value, int) and not isinstance(value, bool):
                value = str(value)  # a device index
            checked = self._value(_CAMERA_SETTINGS[key], value, where)
            if checked is not None:
                params[key] = checked
        source = None
        if 'url' not in entry:
            self.problem(where, 'url', 'missing', ACCEPTED_FORMS)
        elif 'url' in params:
            source = self._source(params, where)
        if source is not None and source.is_file:
            params['url'] = source.safe_url  # absolute: nodes need not share our cwd
        try:  # the rules across settings, exactly as camera_node applies them
            camera_configs(params)
        except ConfigError as exc:
            self.error(where, exc)
        if params.get('camera_info_url'):
            params['camera_info_url'] = self._existing_path(
                params['camera_info_url'], where, 'camera_info_url',
                'a path or file:// URL of a calibration YAML')
        if len(self.problems) > before or not name_ok or source is None:
            return None
        params = {'url': params.pop('url'), **params}  # url first, for people reading
        return CameraConfig(name, _without_empty_lists(params), source)

    def _camera_name(self, name: Any, where: str, index: int, seen: Dict[str, int]) -> bool:
        if name is None:
            self.problem(where, 'name', 'missing (every camera needs one: its namespace)',
                         _NAME_WORDS)
            return False
        if not isinstance(name, str) or not is_ros_name(name) or len(name) > MAX_NAME_LENGTH:
            self.problem(where, 'name', f'{name!r} is not a valid ROS name', _NAME_WORDS)
            return False
        if name in seen:
            self.problem(where, 'name', f'{name!r} is already the name of cameras[{seen[name]}]',
                         'a name no other camera has')
            return False
        seen[name] = index
        return True

    def _source(self, params: Dict[str, Any], where: str) -> Optional[Source]:
        url = params['url']
        password_env = params.get('password_env', '')
        if url and not _has_scheme(url) and not url.isdigit() \
                and not url.startswith('/dev/video'):
            url = str(self._path(url))
        try:
            return validate_source(url, password_env, self.environ)
        except ConfigError as exc:
            self.error(where, exc, safe=True)
            return None

    def _detector(self, section: Any) -> Dict[str, Any]:
        where = 'detector'
        values: Dict[str, Any] = {}
        section = self._mapping(section, '', where, 'a mapping of detector_node parameters')
        if any(key == 'model' and not isinstance(value, dict) for key, value in section.items()):
            self.problem(where, 'model', f'{_kind(section["model"])} is not a mapping',
                         'a mapping of model settings, e.g. '
                         'model: {backend: torchscript, path: model.pt}')
            section = {k: v for k, v in section.items() if k != 'model'}
        twice: List[str] = []
        flat = _flatten(section, twice=twice)
        for key in twice:
            self.problem(where, key, f'given twice (nested under model: and as {key})',
                         'the key once')
        for key, value in flat.items():
            if key == 'cameras':
                self.problem(where, 'cameras', 'filled in from the cameras list; remove it here')
            elif key not in _DETECTOR_KEYS:
                self.problem(where, str(key), *_unknown(key, _DETECTOR_KEYS))
            else:
                checked = self._value(_DETECTOR_SETTINGS[key], value, where)
                if checked is not None:
                    values[key] = checked
        try:  # the rules across settings, exactly as detector_node applies them
            detector_configs(values)
        except ConfigError as exc:
            self.error(where, exc)
        for key in _DETECTOR_PATH_KEYS:
            value = values.get(key, '')
            if value and not (key == 'model.weights' and value.lower() in _WEIGHT_WORDS):
                values[key] = str(self._path(value))
        return _without_empty_lists(values)

    def _transport(self, section: Any) -> str:
        where = 'transport'
        profile = PROFILE_PACKAGE
        for key, value in self._mapping(section, '', where, 'a mapping with the key '
                                        + ', '.join(TRANSPORT_KEYS)).items():
            if key not in TRANSPORT_KEYS:
                self.problem(where, str(key), *_unknown(key, TRANSPORT_KEYS))
            elif not isinstance(value, str) or not value.strip():
                self.problem(where, key, f'{value!r} is not a profile', _PROFILE_WORDS)
            elif value.strip() in (PROFILE_PACKAGE, PROFILE_NONE):
                profile = value.strip()
            else:
                profile = self._existing_path(value.strip(), where, key, _PROFILE_WORDS)
        return profile

    # -- values --------------------------------------------------------------------------------

    def _value(self, setting: Setting, value: Any, where: str) -> Any:
        """`value` checked and coerced by its node setting, or None after recording why."""
        try:
            return setting.check(value)
        except ConfigError as exc:
            self.error(where, exc)
            return None

    def _path(self, text: str) -> Path:
        return self.base_dir / Path(text).expanduser()

    def _existing_path(self, text: str, where: str, key: str, accepted: str) -> str:
        path = Path(text[len('file://'):]) if text.startswith('file://') else self._path(text)
        if not path.is_file():
            self.problem(where, key, f'no such file: {path}', accepted)
        return str(path)


def _kind(value: Any) -> str:
    """A scalar's type and value (str 'abc'), a container's type only; URL passwords
    redacted."""
    if isinstance(value, (dict, list)):
        return type(value).__name__
    return redact(f'{type(value).__name__} {value!r}')


def _has_scheme(text: str) -> bool:
    return re.match(r'^[A-Za-z][A-Za-z0-9+.\-]*:', text) is not None


def _without_empty_lists(params: Dict[str, Any]) -> Dict[str, Any]:
    return {key: value for key, value in params.items() if value != []}
