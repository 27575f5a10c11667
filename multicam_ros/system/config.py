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
- Hostile files are refused before they cost anything (a 400-byte YAML alias bomb once made a
  522 MB message): the file is read as UTF-8 of at most MAX_FILE_BYTES, and composed by a loader
  that counts as it goes (`_BoundedLoader`) and stops at MAX_NODES nodes, MAX_TEXT_CHARS of
  text or MAX_DEPTH levels, each alias counted as the copy of its anchor that it stands for. A
  value that is echoed is cut to a few hundred characters, and at most MAX_PROBLEMS problems
  are listed (then how many more there are).
- No message echoes a password: every echoed key, name and value is shown with URL credentials
  masked (core/sources.py `redact`, and here also the forms it leaves alone: a password with a
  '/' or a space, `user:password@host` without a scheme).
- A named Fast DDS profile must be one that Fast DDS uses (transport.check_fastdds_profile).
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
from multicam_ros.system.transport import PROFILE_NONE, PROFILE_PACKAGE, check_fastdds_profile

__all__ = ['CameraConfig', 'Config', 'ConfigError', 'load_config', 'parse_config']

TOP_LEVEL_KEYS = ('cameras', 'camera_defaults', 'detector', 'transport')
TRANSPORT_KEYS = ('fastdds_profile',)
MAX_NAME_LENGTH = 64
# Limits of a configuration file. The shipped, fully commented example has 4 KiB and about 60
# nodes; 256 cameras with half a dozen settings each fit in about 40 KiB and 4,000 nodes. The
# YAML parser is pure Python (about 70 us a node on the 2-core machine), so these keep even a
# refused file under about a second and a half.
MAX_FILE_BYTES = 64 * 1024
MAX_NODES = 20_000  # scalars, lists and mappings, aliases expanded
MAX_TEXT_CHARS = 1024 * 1024  # characters of all scalars, aliases expanded
MAX_DEPTH = 32  # levels of nested lists and mappings, aliases expanded; the schema uses 5
MAX_SCALAR_CHARS = 4096  # one scalar (PATH_MAX); bounds the cost of every check on a string
INT_BITS = 64  # ROS integer parameters are int64
# Limits of a message: at most MAX_PROBLEMS lines, each echoed key, value and problem cut.
MAX_PROBLEMS = 20
MAX_KEY_CHARS = 100
MAX_VALUE_CHARS = 100
MAX_PROBLEM_CHARS = 400
MAX_ACCEPTED_CHARS = 1000

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


class _Refused(Exception):
    """A limit of MAX_FILE_BYTES and the like, met while composing (see _BoundedLoader)."""

    def __init__(self, problem: str, accepted: str, mark: Optional[yaml.Mark]) -> None:
        super().__init__(problem)
        where = f' (at line {mark.line + 1}, column {mark.column + 1})' if mark else ''
        self.problem = problem + where
        self.accepted = accepted


_EXPANDED = 'counting each alias (*name) as a copy of its anchor (&name)'


class _BoundedLoader(yaml.SafeLoader):
    """SafeLoader that composes within the file limits and refuses a key given twice in one
    mapping (PyYAML keeps the last).

    PyYAML composes an alias as the very node of its anchor, so a small file can describe a
    huge document (nested aliases multiply); nothing grows until something walks it, and then
    everything does (a message that echoes it, a check that iterates it). This loader keeps,
    for each node it composes, its size with aliases expanded (nodes, characters, height: a
    few integers, computed from its children's), adds each node or alias to running totals and
    raises _Refused as soon as one exceeds its limit: after composing at most about MAX_NODES
    nodes, before building any object. An alias to an anchor still being composed (a
    recursive document) is refused too."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0  # levels above the node being composed
        self._nodes = 0
        self._chars = 0
        self._sizes: Dict[int, Tuple[int, int, int]] = {}  # id(node): nodes, chars, height

    def compose_node(self, parent: Optional[yaml.Node], index: Any) -> yaml.Node:
        event = self.peek_event()
        if self._depth >= MAX_DEPTH:
            raise _Refused(f'nested deeper than {MAX_DEPTH} levels',
                           f'lists and mappings nested at most {MAX_DEPTH} deep, {_EXPANDED}',
                           event.start_mark)
        self._depth += 1
        try:
            node = super().compose_node(parent, index)
        finally:
            self._depth -= 1
        if isinstance(event, yaml.AliasEvent):
            size = self._sizes.get(id(node))
            if size is None:
                raise _Refused(f'the alias *{_echo(event.anchor, MAX_KEY_CHARS)} is inside '
                               'its own anchor (a recursive document)',
                               'aliases of nodes that do not contain them', event.start_mark)
            if self._depth + size[2] > MAX_DEPTH:
                raise _Refused(f'nested deeper than {MAX_DEPTH} levels',
                               f'lists and mappings nested at most {MAX_DEPTH} deep, '
                               f'{_EXPANDED}', event.start_mark)
        else:
            size = self._size(node)
            self._sizes[id(node)] = size
            size = (1, size[1] if isinstance(node, yaml.ScalarNode) else 0, 1)  # new here
        self._nodes += size[0]
        self._chars += size[1]
        if self._nodes > MAX_NODES:
            raise _Refused(f'more than {MAX_NODES} nodes', f'a file of at most {MAX_NODES} '
                           f'nodes (scalars, lists and mappings), {_EXPANDED}',
                           event.start_mark)
        if self._chars > MAX_TEXT_CHARS:
            raise _Refused(f'more than {MAX_TEXT_CHARS} characters of text',
                           f'a file of at most {MAX_TEXT_CHARS} characters in its scalars, '
                           f'{_EXPANDED}', event.start_mark)
        return node

    def _size(self, node: yaml.Node) -> Tuple[int, int, int]:
        """(nodes, characters, height) of a node just composed, aliases expanded."""
        if isinstance(node, yaml.ScalarNode):
            if len(node.value) > MAX_SCALAR_CHARS:
                raise _Refused(f'a scalar of {len(node.value)} characters',
                               f'strings and numbers of at most {MAX_SCALAR_CHARS} characters',
                               node.start_mark)
            return 1, len(node.value), 1
        children = node.value if isinstance(node, yaml.SequenceNode) \
            else [child for pair in node.value for child in pair]
        sizes = [self._sizes[id(child)] for child in children]
        return (1 + sum(size[0] for size in sizes), sum(size[1] for size in sizes),
                1 + max((size[2] for size in sizes), default=0))


def _construct_unique_mapping(loader: _BoundedLoader, node: yaml.MappingNode,
                              deep: bool = False) -> Dict[Any, Any]:
    seen = set()
    for key_node, _ in node.value:
        if key_node.tag == 'tag:yaml.org,2002:merge':
            continue  # `<<: *defaults`, merged (and overridden) by construct_mapping
        key = loader.construct_object(key_node, deep=deep)
        if isinstance(key, (str, int, float, bool)) and key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f'key {_shown(key)} is given twice in one mapping',
                key_node.start_mark)
        seen.add(key)
    return loader.construct_mapping(node, deep=deep)


def _construct_int64(loader: _BoundedLoader, node: yaml.ScalarNode) -> int:
    """An integer, refused when no ROS parameter can hold it (which also keeps numbers that
    Python cannot turn into a float or print out of the checks)."""
    value = loader.construct_yaml_int(node)
    if not -2 ** (INT_BITS - 1) <= value < 2 ** (INT_BITS - 1):
        raise _Refused(f'the integer {_echo(node.value, MAX_VALUE_CHARS)} has '
                       f'{value.bit_length()} bits',
                       f'integers of at most {INT_BITS} bits, from -2**{INT_BITS - 1} to '
                       f'2**{INT_BITS - 1} - 1 (ROS integer parameters)', node.start_mark)
    return value


_BoundedLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG,
                               _construct_unique_mapping)
_BoundedLoader.add_constructor('tag:yaml.org,2002:int', _construct_int64)


def load_config(path: str, environ: Optional[Mapping[str, str]] = None) -> Config:
    """Read and validate a configuration file; raises ConfigError listing every problem.

    `environ` (default os.environ) is where `password_env` variables are looked up. The file
    must be UTF-8 within the limits of MAX_FILE_BYTES and the like (see the module docstring).
    """
    label = str(path)
    text = _read_text(path, label)
    try:
        data = yaml.load(text, Loader=_BoundedLoader)
    except _Refused as exc:
        raise ConfigError(problem_line(label, exc.problem, exc.accepted)) from None
    except yaml.YAMLError as exc:
        raise ConfigError(f'{label}: not valid YAML{_yaml_problem(exc)}') from None
    return parse_config(data, label, Path(path).resolve().parent, environ)


def _read_text(path: str, label: str) -> str:
    """The file's text: at most MAX_FILE_BYTES (never more is read), decoded as UTF-8."""
    try:
        with open(path, 'rb') as stream:
            data = stream.read(MAX_FILE_BYTES + 1)
    except OSError as exc:
        raise ConfigError(f'{label}: cannot read: {exc.strerror or exc}') from None
    if len(data) > MAX_FILE_BYTES:
        raise ConfigError(problem_line(
            label, f'larger than {MAX_FILE_BYTES} bytes',
            f'a configuration file of at most {MAX_FILE_BYTES} bytes ({MAX_FILE_BYTES // 1024} '
            'KiB)'))
    try:
        return data.decode('utf-8')
    except UnicodeDecodeError as exc:
        line = data.count(b'\n', 0, exc.start) + 1
        raise ConfigError(problem_line(
            label, f'not UTF-8: byte 0x{data[exc.start]:02x} at offset {exc.start} (line '
            f'{line}): {exc.reason}', 'a text file in UTF-8')) from None


def _yaml_problem(exc: yaml.YAMLError) -> str:
    """' at line 3, column 7: <what>' from a PyYAML error, without its file name (and without
    the snippet of the file it would quote), cut and with URL passwords masked."""
    mark = getattr(exc, 'problem_mark', None)
    words = '; '.join(str(part) for part in (getattr(exc, 'context', None),
                                             getattr(exc, 'problem', None)) if part)
    where = f' at line {mark.line + 1}, column {mark.column + 1}' if mark is not None else ''
    return f'{where}: {_echo(words or str(exc)[:MAX_PROBLEM_CHARS * 2], MAX_PROBLEM_CHARS)}'


def parse_config(data: Any, label: str = 'cams.yaml', base_dir: Optional[Path] = None,
                 environ: Optional[Mapping[str, str]] = None) -> Config:
    """Validate configuration data already read from YAML (see load_config).

    `label` names the file in messages; relative paths are resolved against `base_dir`
    (default: the current directory).
    """
    checker = _Checker(label, Path(base_dir or os.getcwd()),
                       os.environ if environ is None else environ)
    config = checker.check(data)
    if checker.count:
        raise ConfigError(*checker.lines())
    return config


def _unknown(key: Any, known: Sequence[str]) -> Tuple[str, str]:
    """(problem, accepted) of an unknown key, with the closest known key as a hint."""
    close = difflib.get_close_matches(str(key)[:MAX_KEY_CHARS], known, n=1)
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
        self.problems: List[str] = []  # the first MAX_PROBLEMS
        self.count = 0  # all of them

    def lines(self) -> List[str]:
        """The message: the problems shown, then how many more there are."""
        more = self.count - len(self.problems)
        return self.problems + ([problem_line(self.label, f'{more} more problems not shown',
                                              'a file without the problems above')]
                                if more else [])

    def _record(self, where: str, line: str) -> None:
        self.problems.append(': '.join(part for part in (self.label, where, line) if part))

    def problem(self, where: str, key: Any, problem: str, accepted: str = '') -> None:
        """Record `<file>: <where>: <key>: <problem>; accepted: <values>`. The key (any YAML
        key: shown as typed when it is printable text, else as its repr) and the problem are
        cut and URL passwords in them masked (a URL may be typed into any key or value);
        `accepted` is ours."""
        self.count += 1
        if len(self.problems) < MAX_PROBLEMS:
            shown = key if isinstance(key, str) and key.isprintable() else repr(key)
            self._record(where, problem_line(_echo(_hide_userinfo(shown), MAX_KEY_CHARS),
                                             _echo(problem, MAX_PROBLEM_CHARS), accepted))

    def error(self, where: str, exc: ConfigError) -> None:
        """Record the problems of a ConfigError raised by the core's checks. Each line,
        `<key>: <problem>; accepted: <values>`, may echo a value: the key and problem part are
        cut and URL passwords in it masked, and so is the accepted part unless it is a text
        known to be ours (sources' accepted forms look like a URL with a password)."""
        for line in exc.problems:
            self.count += 1
            if len(self.problems) >= MAX_PROBLEMS:
                continue
            head, sep, accepted = line.rpartition('; accepted: ')
            if not sep:
                head, accepted = line, ''
            if accepted not in _OWN_ACCEPTED:
                accepted = _echo(accepted, MAX_ACCEPTED_CHARS)
            head = _echo(head, MAX_KEY_CHARS + MAX_PROBLEM_CHARS)
            self._record(where, f'{head}; accepted: {accepted}' if accepted else head)

    def check(self, data: Any) -> Config:
        if data is None:
            data = {}
        if not isinstance(data, dict):
            self.problem('', '', f'{_kind(data)} is not a mapping',
                         'a mapping with keys ' + ', '.join(TOP_LEVEL_KEYS))
            return Config(self.label, (), {}, PROFILE_PACKAGE)
        for key in data:
            if key not in TOP_LEVEL_KEYS:
                self.problem('', key, *_unknown(key, TOP_LEVEL_KEYS))
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
                self.problem(where, key, *_unknown(key, _CAMERA_DEFAULT_KEYS))
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
        before = self.count
        params = dict(defaults)
        for key, value in entry.items():
            if key == 'name':
                continue
            if key not in _CAMERA_ENTRY_KEYS:
                self.problem(where, key, *_unknown(key, _CAMERA_ENTRY_KEYS))
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
        if self.count > before or not name_ok or source is None:
            return None
        params = {'url': params.pop('url'), **params}  # url first, for people reading
        return CameraConfig(name, _without_empty_lists(params), source)

    def _camera_name(self, name: Any, where: str, index: int, seen: Dict[str, int]) -> bool:
        if name is None:
            self.problem(where, 'name', 'missing (every camera needs one: its namespace)',
                         _NAME_WORDS)
            return False
        if not isinstance(name, str) or not is_ros_name(name) or len(name) > MAX_NAME_LENGTH:
            self.problem(where, 'name', f'{_shown(name)} is not a valid ROS name', _NAME_WORDS)
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
            self.error(where, exc)
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
            self.problem(where, key, 'given twice (nested under model: and as '
                         f'{_hide_userinfo(key)})',
                         'the key once')
        for key, value in flat.items():
            if key == 'cameras':
                self.problem(where, 'cameras', 'filled in from the cameras list; remove it here')
            elif key not in _DETECTOR_KEYS:
                self.problem(where, key, *_unknown(key, _DETECTOR_KEYS))
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
                self.problem(where, key, *_unknown(key, TRANSPORT_KEYS))
            elif not isinstance(value, str) or not value.strip():
                self.problem(where, key, f'{_shown(value)} is not a profile', _PROFILE_WORDS)
            elif value.strip() in (PROFILE_PACKAGE, PROFILE_NONE):
                profile = value.strip()
            else:
                profile = self._existing_path(value.strip(), where, key, _PROFILE_WORDS)
                if Path(profile).is_file():
                    try:  # the nodes would fall back to default transports without a word
                        check_fastdds_profile(profile, key)
                    except ConfigError as exc:
                        self.error(where, exc)
        return profile

    # -- values --------------------------------------------------------------------------------

    def _value(self, setting: Setting, value: Any, where: str) -> Any:
        """`value` checked and coerced by its node setting, or None after recording why."""
        try:
            return setting.check(value)
        except ConfigError as exc:  # it echoes repr(value): shown as _shown shows it instead
            typed = repr(value)
            self.error(where, ConfigError(*(line.replace(typed, _shown(value))
                                            for line in exc.problems)))
            return None

    def _path(self, text: str) -> Path:
        return self.base_dir / Path(text).expanduser()

    def _existing_path(self, text: str, where: str, key: str, accepted: str) -> str:
        path = Path(text[len('file://'):]) if text.startswith('file://') else self._path(text)
        if not path.is_file():
            self.problem(where, key, f'no such file: {_hide_userinfo(str(path))}', accepted)
        return str(path)


def _kind(value: Any) -> str:
    """A scalar's type and value (str 'abc'), a container's type only; URL passwords
    redacted."""
    if isinstance(value, (dict, list)):
        return type(value).__name__
    return f'{type(value).__name__} {_shown(value)}'


def _has_scheme(text: str) -> bool:
    return re.match(r'^[A-Za-z][A-Za-z0-9+.\-]*:', text) is not None


def _without_empty_lists(params: Dict[str, Any]) -> Dict[str, Any]:
    return {key: value for key, value in params.items() if value != []}


# -- echoes: bounded, one line, no passwords ---------------------------------------------------

_OWN_ACCEPTED = frozenset({ACCEPTED_FORMS})  # accepted words that look like a URL with a password
# scheme://<anything, spaces, slashes and '@' too>@: redact() stops at a '/' or a space in the
# password (it must, in text where a URL is followed by more text); an echo is short, so masking
# everything up to its last '@' over-masks at most a little.
_URL_USERINFO = re.compile(r'(?P<head>[A-Za-z][A-Za-z0-9+.\-]*://)(?P<userinfo>.*)@')
_BARE_USERINFO = re.compile(r"[^\s'\"/@:]+:(?P<password>[^\s'\"/]*)@")  # user:password@host
_REDACTED_USERINFO = re.compile(r'[^:@/\s]*:\*\*\*')  # what redact() leaves: user:***
_UNFINISHED_WORD = re.compile(r"[^\s'\"]*\Z")


def _mask(text: str) -> str:
    """`text` with URL credentials masked: redact()'s forms, then what it leaves alone."""
    text = redact(text)
    if '@' not in text:
        return text
    text = _URL_USERINFO.sub(
        lambda m: m.group(0) if ':' not in m.group('userinfo')
        or _REDACTED_USERINFO.fullmatch(m.group('userinfo')) else f'{m.group("head")}***@',
        text)
    return _BARE_USERINFO.sub(
        lambda m: m.group(0) if m.group('password') == '***' else '***@', text)


def _echo(text: str, limit: int) -> str:
    """`text` (a key, value or problem from the file) fit for a message: on one line, cut to
    `limit` characters (saying how many were left out), URL passwords masked. It is cut first,
    so that masking costs little whatever the input; and where a '@' was cut off, the URL or
    word it may belong to goes too, so that no part of a password survives the cut."""
    text = str(text)
    if len(text) > limit:
        head, tail = text[:limit], text[limit:]
        if '@' in tail:
            start = head.rfind('://')
            head = head[:start] if start >= 0 and '@' not in head[start:] \
                else _UNFINISHED_WORD.sub('', head)
        text = f'{head}... ({len(text) - len(head)} more characters)'
    return _mask(' '.join(text.splitlines()))


def _hide_userinfo(text: str) -> str:
    """A key or value that holds a '@' shown from its last '@' on only: whatever came before
    may be a user and password, in any form (as core/sources.py does for a malformed url).
    The opening brackets and quote of a repr are kept."""
    if '@' not in text:
        return text
    opening = len(text) - len(text.lstrip('[{(\'"'))
    return text[:opening] + '***@' + text.rpartition('@')[2]


def _shown(value: Any) -> str:
    """A value as messages echo it: its repr, cut to MAX_VALUE_CHARS, passwords masked."""
    return _echo(_hide_userinfo(repr(value)), MAX_VALUE_CHARS)
