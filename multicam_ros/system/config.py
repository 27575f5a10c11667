"""The system configuration (config/cams.yaml) and the node plan made from it. ROS-free.

`load_config` reads and validates the YAML file; every problem is one line naming the file, the
entry and the key, and all problems are reported together (`ConfigError`). `node_plan` turns a
valid configuration into the processes to start: one camera_node per camera in namespace
/<name>, one detector_node named `detector` that serves them all, and the environment every
process gets. `ros2 launch multicam_ros cams.launch.py` and `multicam-ros launch` both start
exactly this plan, so they cannot disagree.

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
- Relative paths (a video file `url`, `camera_info_url`, `model.path`, `model.labels_file`,
  `model.weights` when it is a file, `transport.fastdds_profile`) are relative to the
  configuration file, and the plan carries them absolute.
- Files that a camera needs (a video file `url`, `camera_info_url`) and the Fast DDS profile
  must exist now: a camera that cannot open them would only exit and be restarted forever.
  Model files are left to the detector, which names the exact problem and stops the system.
- Empty lists are left out of the plan: every list parameter defaults to empty, and ROS
  cannot tell the element type of an empty list.
"""
import difflib
import os
import re
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple
from urllib.parse import unquote, urlsplit, urlunsplit

import yaml

from multicam_ros.core.params import CAMERA_PARAMS, DETECTOR_PARAMS, ParamSpec, \
    camera_rule_problem, specs_by_name
from multicam_ros.core.sources import ACCEPTED_FORMS, Source, redact, validate_source

PACKAGE = 'multicam_ros'
TOP_LEVEL_KEYS = ('cameras', 'camera_defaults', 'detector', 'transport')
TRANSPORT_KEYS = ('fastdds_profile',)
DETECTOR_NODE_NAME = 'detector'
CAMERA_NODE_NAME = 'camera_node'
CAMERA_EXECUTABLE = 'camera_node'
DETECTOR_EXECUTABLE = 'detector_node'
LOG_LEVELS = ('debug', 'info', 'warn', 'error', 'fatal')
MAX_NAME_LENGTH = 64
# A camera process that dies is started again after RESTART_DELAY_MIN_S, doubling up to
# RESTART_DELAY_MAX_S while it keeps dying; a run of STABLE_RUN_S resets the delay.
RESTART_DELAY_MIN_S = 1.0
RESTART_DELAY_MAX_S = 30.0
STABLE_RUN_S = 30.0

FASTDDS_PROFILE_ENV = 'FASTDDS_DEFAULT_PROFILES_FILE'
FASTDDS_BUILTIN_TRANSPORTS_ENV = 'FASTDDS_BUILTIN_TRANSPORTS'
PROFILE_PACKAGE = 'package'
PROFILE_NONE = 'none'

_PARAMETER_WORD = re.compile(r"\bparameter '?([A-Za-z_.]+)'?")
_ROS_NAME = re.compile(r'^[A-Za-z_][A-Za-z0-9_]*$')
_CAMERA_SPECS = specs_by_name(CAMERA_PARAMS)
_DETECTOR_SPECS = specs_by_name(DETECTOR_PARAMS)
_CAMERA_ENTRY_KEYS = ('name',) + tuple(_CAMERA_SPECS)
_CAMERA_DEFAULT_KEYS = tuple(name for name in _CAMERA_SPECS if name != 'url')
_DETECTOR_KEYS = tuple(name for name in _DETECTOR_SPECS if name != 'cameras')
_DETECTOR_PATH_KEYS = ('model.path', 'model.labels_file', 'model.weights')
_WEIGHT_WORDS = ('default', 'none')


class ConfigError(ValueError):
    """An invalid configuration; `problems` holds one line per problem."""

    def __init__(self, problems: Sequence[str]) -> None:
        self.problems = list(problems)
        super().__init__('\n'.join(self.problems))


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


@dataclass(frozen=True)
class PlannedNode:
    """One process of the plan: which executable, under which ROS name, with what parameters."""

    label: str  # short name for people: the camera name, or 'detector'
    executable: str  # console script of the package: camera_node or detector_node
    name: str  # ROS node name
    namespace: str  # '/front', or '/' for the detector
    parameters: Dict[str, Any] = field(repr=False)  # may hold a camera password
    respawn: bool  # start it again when it dies (cameras)
    required: bool  # the system stops when it exits (the detector)
    package: str = PACKAGE
    secrets: Tuple[str, ...] = field(default=(), repr=False)
    # Variables for this process only, on top of the plan's: a password moved out of its URL.
    environment: Dict[str, str] = field(default_factory=dict, repr=False)

    @property
    def fqn(self) -> str:
        """Fully qualified node name, e.g. /front/camera_node."""
        return self.namespace.rstrip('/') + '/' + self.name

    @property
    def is_camera(self) -> bool:
        return self.executable == CAMERA_EXECUTABLE


@dataclass(frozen=True)
class Plan:
    """Every process to start and the environment variables each one gets on top of the
    starter's own environment."""

    nodes: Tuple[PlannedNode, ...]
    environment: Dict[str, str]
    config_path: str = ''

    @property
    def cameras(self) -> Tuple[PlannedNode, ...]:
        return tuple(node for node in self.nodes if node.is_camera)

    @property
    def detector(self) -> Optional[PlannedNode]:
        return next((node for node in self.nodes if not node.is_camera), None)

    @property
    def secrets(self) -> Tuple[str, ...]:
        """Every password the plan knows of, for redacting output."""
        return tuple(secret for node in self.nodes for secret in node.secrets)

    def describe(self) -> List[str]:
        """The plan in lines for people, with passwords replaced by ***."""
        count = len(self.cameras)
        detector = 'one detector' if self.detector else 'no detector'
        lines = [f'{self.config_path}: {count} camera{"s" * (count != 1)}, {detector}']
        for node in self.nodes:
            params = ', '.join(f'{key}={_show(value)}' for key, value in node.parameters.items())
            lines.append(f'  {node.fqn} ({node.executable}): {params}')
        for key, value in sorted(self.environment.items()):
            lines.append(f'  environment {key}={value}')
        return [redact(line, self.secrets) for line in lines]


def _show(value: Any) -> str:
    if isinstance(value, list):
        return '[' + ','.join(str(v) for v in value) + ']'
    return str(value)


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
        raise ConfigError([f'{label}: cannot read: {exc.strerror}']) from None
    except yaml.YAMLError as exc:
        raise ConfigError([f'{label}: not valid YAML{_yaml_problem(exc)}']) from None
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
        raise ConfigError(checker.problems)
    return config


def _unknown(key: Any, known: Sequence[str]) -> str:
    close = difflib.get_close_matches(str(key), known, n=1)
    hint = f" (did you mean '{close[0]}'?)" if close else ''
    return f'unknown key {key!r}{hint}; known: ' + ', '.join(known)


def flatten(section: Mapping[str, Any], prefix: str = '',
            twice: Optional[List[str]] = None) -> Dict[str, Any]:
    """{'model': {'backend': 'x'}, 'device': 'cpu'} -> {'model.backend': 'x', 'device': 'cpu'}.

    A name given both nested and dotted is appended to `twice` (the last value is kept)."""
    flat: Dict[str, Any] = {}
    for key, value in section.items():
        name = f'{prefix}{key}'
        items = flatten(value, name + '.', twice).items() if isinstance(value, dict) \
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

    def problem(self, where: str, text: str) -> None:
        """Record one problem; 'parameter x: ...' of the specs reads 'x: ...' here."""
        text = _PARAMETER_WORD.sub(r'\1', text)
        self.problems.append(f'{self.label}: {where}{": " if where else ""}{text}')

    def check(self, data: Any) -> Config:
        if data is None:
            data = {}
        if not isinstance(data, dict):
            self.problem('', f'expected a mapping with keys {", ".join(TOP_LEVEL_KEYS)}; '
                         f'got {type(data).__name__}')
            return Config(self.label, (), {}, PROFILE_PACKAGE)
        for key in data:
            if key not in TOP_LEVEL_KEYS:
                self.problem('', _unknown(key, TOP_LEVEL_KEYS))
        defaults = self._camera_defaults(data.get('camera_defaults'))
        cameras = self._cameras(data.get('cameras'), defaults)
        detector = self._detector(data.get('detector'))
        profile = self._transport(data.get('transport'))
        return Config(self.label, tuple(cameras), detector, profile)

    # -- sections ------------------------------------------------------------------------------

    def _mapping(self, value: Any, where: str) -> Dict[str, Any]:
        if value is None:
            return {}
        if not isinstance(value, dict):
            self.problem(where, f'expected a mapping of keys; got {_kind(value)}')
            return {}
        return value

    def _camera_defaults(self, section: Any) -> Dict[str, Any]:
        where = 'camera_defaults'
        values = {}
        for key, value in self._mapping(section, where).items():
            if key == 'url':
                self.problem(where, "url is set per camera, not in camera_defaults")
            elif key not in _CAMERA_DEFAULT_KEYS:
                self.problem(where, _unknown(key, _CAMERA_DEFAULT_KEYS))
            else:
                checked = self._param(_CAMERA_SPECS[key], value, where)
                if checked is not None:
                    values[key] = checked
        return values

    def _cameras(self, section: Any, defaults: Dict[str, Any]) -> List[CameraConfig]:
        if section is None:
            self.problem('cameras', 'missing; list the cameras, each with a name and a url')
            return []
        if not isinstance(section, list):
            self.problem('cameras', f'expected a list of cameras; got {_kind(section)}')
            return []
        if not section:
            self.problem('cameras', 'empty; list at least one camera with a name and a url')
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
            self.problem(where, f'expected a mapping with name and url; got {_kind(entry)}')
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
                self.problem(where, _unknown(key, _CAMERA_ENTRY_KEYS))
                continue
            if key == 'url' and isinstance(value, int) and not isinstance(value, bool):
                value = str(value)  # a device index
            checked = self._param(_CAMERA_SPECS[key], value, where)
            if checked is not None:
                params[key] = checked
        source = None
        if 'url' not in entry:
            self.problem(where, 'url: missing; ' + _url_words())
        elif 'url' in params:
            source = self._source(params, where)
        if source is not None and source.is_file:
            params['url'] = source.safe_url  # absolute: nodes need not share our cwd
        crossed = camera_rule_problem(params)
        if crossed:
            self.problem(where, crossed)
        if params.get('camera_info_url'):
            params['camera_info_url'] = self._existing_path(
                params['camera_info_url'], f'{where}: camera_info_url')
        if len(self.problems) > before or not name_ok or source is None:
            return None
        params = {'url': params.pop('url'), **params}  # url first, for people reading
        return CameraConfig(name, _without_empty_lists(params), source)

    def _camera_name(self, name: Any, where: str, index: int, seen: Dict[str, int]) -> bool:
        if name is None:
            self.problem(where, 'name: missing; every camera needs a name (its namespace)')
            return False
        if not isinstance(name, str) or not _ROS_NAME.match(name) \
                or len(name) > MAX_NAME_LENGTH:
            self.problem(where, f'name: {name!r} is not a valid ROS name: use letters, digits '
                         f'and _, not starting with a digit, at most {MAX_NAME_LENGTH} '
                         'characters (it becomes the namespace /<name>)')
            return False
        if name in seen:
            self.problem(where, f'name: {name!r} is already the name of cameras[{seen[name]}]; '
                         'camera names must be unique')
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
        except ValueError as exc:
            self.problem(where, str(exc))
            return None

    def _detector(self, section: Any) -> Dict[str, Any]:
        where = 'detector'
        values: Dict[str, Any] = {}
        section = self._mapping(section, where)
        if any(key == 'model' and not isinstance(value, dict) for key, value in section.items()):
            self.problem(where, 'model: expected a mapping of model settings, e.g. '
                         'model: {backend: torchscript, path: model.pt}')
            section = {k: v for k, v in section.items() if k != 'model'}
        twice: List[str] = []
        flat = flatten(section, twice=twice)
        for key in twice:
            self.problem(where, f'{key}: given twice (nested under model: and as {key}); '
                         'give it once')
        for key, value in flat.items():
            if key == 'cameras':
                self.problem(where, 'cameras: filled in from the cameras list; remove it here')
            elif key not in _DETECTOR_KEYS:
                self.problem(where, _unknown(key, _DETECTOR_KEYS))
            else:
                checked = self._param(_DETECTOR_SPECS[key], value, where)
                if checked is not None:
                    values[key] = checked
        for key in _DETECTOR_PATH_KEYS:
            value = values.get(key, '')
            if value and not (key == 'model.weights' and value.lower() in _WEIGHT_WORDS):
                values[key] = str(self._path(value))
        return _without_empty_lists(values)

    def _transport(self, section: Any) -> str:
        where = 'transport'
        profile = PROFILE_PACKAGE
        for key, value in self._mapping(section, where).items():
            if key not in TRANSPORT_KEYS:
                self.problem(where, _unknown(key, TRANSPORT_KEYS))
            elif not isinstance(value, str) or not value.strip():
                self.problem(where, f"fastdds_profile: {value!r} is not '{PROFILE_PACKAGE}', "
                             f"'{PROFILE_NONE}' or the path of a Fast DDS XML profile")
            elif value.strip() in (PROFILE_PACKAGE, PROFILE_NONE):
                profile = value.strip()
            else:
                profile = self._existing_path(value.strip(), f'{where}: fastdds_profile')
        return profile

    # -- values --------------------------------------------------------------------------------

    def _param(self, spec: ParamSpec, value: Any, where: str) -> Any:
        try:
            return spec.check(value)
        except ValueError as exc:  # it shows the value: redact a URL typed into a wrong key
            self.problem(where, redact(str(exc)))
            return None

    def _path(self, text: str) -> Path:
        return self.base_dir / Path(text).expanduser()

    def _existing_path(self, text: str, where: str) -> str:
        path = Path(text[len('file://'):]) if text.startswith('file://') else self._path(text)
        if not path.is_file():
            self.problem(where, f'no such file: {path}')
        return str(path)


def _kind(value: Any) -> str:
    """'str 'abc'' for a scalar, 'list' or 'dict' for a container; URL passwords redacted."""
    if isinstance(value, (dict, list)):
        return type(value).__name__
    return redact(f'{type(value).__name__} {value!r}')


def _has_scheme(text: str) -> bool:
    return re.match(r'^[A-Za-z][A-Za-z0-9+.\-]*:', text) is not None


def _url_words() -> str:
    return f'accepted: {ACCEPTED_FORMS}'


def _without_empty_lists(params: Dict[str, Any]) -> Dict[str, Any]:
    return {key: value for key, value in params.items() if value != []}


# -- the plan -------------------------------------------------------------------------------------


def packaged_fastdds_profile() -> str:
    """Path of the package's large-frame Fast DDS profile."""
    return str(resources.files(PACKAGE) / 'resources' / 'fastdds_large_frames.xml')


def transport_environment(profile: str, environ: Mapping[str, str]) -> Dict[str, str]:
    """The Fast DDS variables for every process of the plan.

    Whoever starts the system has the last word: when FASTDDS_DEFAULT_PROFILES_FILE or
    FASTDDS_BUILTIN_TRANSPORTS is already set (or the RMW is not Fast DDS), the processes
    inherit that unchanged and nothing is added. Otherwise `profile` decides: 'package' loads
    the packaged large-frame profile (shared memory with 32 MiB segments plus UDPv4, which
    default subscribers such as rqt_image_view receive from), a path loads that profile, and
    'none' keeps Fast DDS's defaults (FASTDDS_BUILTIN_TRANSPORTS=DEFAULT, which also keeps
    camera_node from loading the packaged profile itself).
    """
    if environ.get(FASTDDS_PROFILE_ENV) or environ.get(FASTDDS_BUILTIN_TRANSPORTS_ENV):
        return {}
    if not environ.get('RMW_IMPLEMENTATION', 'rmw_fastrtps_cpp').startswith('rmw_fastrtps'):
        return {}
    if profile == PROFILE_NONE:
        return {FASTDDS_BUILTIN_TRANSPORTS_ENV: 'DEFAULT'}
    if profile == PROFILE_PACKAGE:
        return {FASTDDS_PROFILE_ENV: packaged_fastdds_profile()}
    return {FASTDDS_PROFILE_ENV: profile}


def move_password_to_environment(name: str, parameters: Dict[str, Any]
                                 ) -> Tuple[Dict[str, Any], Dict[str, str]]:
    """A password written in a camera's url would be a ROS parameter, which every node can read
    (/parameter_events, `ros2 param get`). Move it into a variable of that camera's process
    and pass the url without it, plus `password_env` naming the variable."""
    parameters = dict(parameters)
    url = str(parameters.get('url', ''))
    parts = urlsplit(url)
    if '://' not in url or parts.password is None or parameters.get('password_env'):
        return parameters, {}
    variable = 'MULTICAM_ROS_PASSWORD_' + name.upper()
    host = parts.netloc.rpartition('@')[2]
    parameters['url'] = urlunsplit(parts._replace(netloc=f'{parts.username}@{host}'))
    parameters['password_env'] = variable
    return parameters, {variable: unquote(parts.password)}


def node_plan(config: Config, detector: bool = True,
              environ: Optional[Mapping[str, str]] = None) -> Plan:
    """The processes that start the system described by `config`.

    One camera_node per camera in namespace /<name> with that camera's parameters (camera
    defaults merged with its overrides), restarted when it dies; unless `detector` is false,
    one detector_node named `detector` in / whose `cameras` lists every camera namespace, plus
    the detector section's parameters, and whose exit stops the system. `environ` (default
    os.environ) is the starter's environment, which decides the transport variables.
    """
    environ = os.environ if environ is None else environ
    nodes = []
    for camera in config.cameras:
        parameters, env = move_password_to_environment(camera.name, camera.parameters)
        nodes.append(PlannedNode(
            label=camera.name, executable=CAMERA_EXECUTABLE, name=CAMERA_NODE_NAME,
            namespace='/' + camera.name, parameters=parameters, respawn=True, required=False,
            secrets=camera.source.secrets, environment=env))
    if detector:
        parameters = {'cameras': ['/' + camera.name for camera in config.cameras],
                      **config.detector}
        nodes.append(PlannedNode(label=DETECTOR_NODE_NAME, executable=DETECTOR_EXECUTABLE,
                                 name=DETECTOR_NODE_NAME, namespace='/', parameters=parameters,
                                 respawn=False, required=True))
    return Plan(tuple(nodes), transport_environment(config.fastdds_profile, environ),
                config.path)


def parse_switch(text: str, argument: str) -> bool:
    """'true' / 'false' (any case) of a launch argument or flag; anything else is an error."""
    value = str(text).strip().lower()
    if value not in ('true', 'false'):
        raise ValueError(f"{argument}: {text!r} is not 'true' or 'false'")
    return value == 'true'
