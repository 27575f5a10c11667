"""Settings declared once: as field metadata of the core's config dataclasses. ROS-free.

A config dataclass (`CaptureOptions`, `ModelConfig`, `TrackerConfig`, ...) declares each of its
user-facing fields with `setting(...)`: default, description, range or choices, and whether a
change needs a restart. Everything else is derived from that one declaration:
- the nodes' ROS parameters and their descriptors (`settings_of`, ros/node_main.py),
- the cams.yaml checks (system/config.py),
- the README's parameter tables (tools/param_tables.py),
- and the config objects themselves (`build`), so a node builds its configs in one call.

Every bad value raises `ConfigError`, whose lines all read `<key>: <problem>; accepted: <values>`.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Dict, Iterable, Mapping, Optional, Sequence, Tuple, Type, TypeVar

C = TypeVar('C')
_META_KEY = 'multicam_ros.setting'


def problem_line(key: str, problem: str, accepted: str = '') -> str:
    """The one message form: `<key>: <problem>; accepted: <values>` (no `accepted` part when
    there is nothing useful to list)."""
    text = f'{key}: {problem}' if key else problem
    return f'{text}; accepted: {accepted}' if accepted else text


class ConfigError(ValueError):
    """A configuration that cannot work: a bad parameter, config key or file. One line per
    problem, each `<key>: <problem>; accepted: <values>`. A node exits 2 on it (no traceback);
    any other exception is a bug and keeps its traceback."""

    def __init__(self, *problems: str) -> None:
        self.problems = [str(problem) for problem in problems]
        super().__init__('\n'.join(self.problems))

    @classmethod
    def of(cls, key: str, problem: str, accepted: str = '') -> 'ConfigError':
        return cls(problem_line(key, problem, accepted))


_TYPE_WORDS = {bool: 'true or false', int: 'an integer', float: 'a number', str: 'a string',
               list: 'a list of strings'}


@dataclass(frozen=True)
class Setting:
    """One user-facing setting; its type is the type of `default`. `name` is the ROS parameter
    and config key (e.g. `tracking.max_age_s`); `field` the dataclass field it fills."""

    name: str
    default: Any
    description: str
    min_value: Optional[float] = None
    max_value: Optional[float] = None
    choices: Tuple[str, ...] = ()
    read_only: bool = True
    field: str = ''

    @property
    def accepted(self) -> str:
        """Human words for the accepted values, used in every error message."""
        if self.choices:
            return 'one of ' + ', '.join(repr(c) for c in self.choices)
        kind = _TYPE_WORDS[type(self.default)]
        low, high = _number(self.min_value), _number(self.max_value)
        if self.min_value is not None and self.max_value is not None:
            return f'{kind} from {low} to {high}'
        if self.min_value is not None:
            return f'{kind} >= {low}'
        return kind

    def error(self, problem: str) -> ConfigError:
        return ConfigError.of(self.name, problem, self.accepted)

    def check(self, value: Any) -> Any:
        """`value` coerced to this setting's type (an int for a float, a tuple for a list), or
        ConfigError naming the setting and the accepted values."""
        kind = type(self.default)
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if kind is list:
            ok = isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value)
            value = list(value) if ok else value
        else:
            ok = isinstance(value, kind) and not (kind is not bool and isinstance(value, bool))
        if not ok:
            raise self.error(f'{value!r} has the wrong type')
        if self.choices and value not in self.choices:
            raise self.error(f'{value!r} is not a choice')
        if kind in (int, float):
            low = -math.inf if self.min_value is None else self.min_value
            high = math.inf if self.max_value is None else self.max_value
            if (kind is float and math.isnan(value)) or not low <= value <= high:
                raise self.error(f'{value!r} is out of range')
        return value


def setting(default: Any, description: str, *, min_value: Optional[float] = None,
            max_value: Optional[float] = None, choices: Sequence[str] = (),
            read_only: bool = True, name: str = '') -> Any:
    """A dataclass field that is also a user-facing setting (see the module docstring).

    `name` is the parameter name where it differs from `<prefix><field name>`. A list default
    becomes an empty-tuple-safe factory; its field holds a tuple once built."""
    meta = {_META_KEY: dict(default=default, description=description, min_value=min_value,
                            max_value=max_value, choices=tuple(choices), read_only=read_only,
                            name=name)}
    if isinstance(default, list):
        return dataclasses.field(default=tuple(default), metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def settings_of(cls: type, prefix: str = '') -> Tuple[Setting, ...]:
    """The settings a config dataclass declares, in field order, named `<prefix><field>`
    unless the field gives its own name."""
    result = []
    for f in dataclasses.fields(cls):
        meta = f.metadata.get(_META_KEY)
        if meta is None:
            continue
        result.append(Setting(name=meta['name'] or f'{prefix}{f.name}', default=meta['default'],
                              description=meta['description'], min_value=meta['min_value'],
                              max_value=meta['max_value'], choices=meta['choices'],
                              read_only=meta['read_only'], field=f.name))
    return tuple(result)


def by_name(settings: Iterable[Setting]) -> Dict[str, Setting]:
    return {s.name: s for s in settings}


def build(cls: Type[C], values: Mapping[str, Any], prefix: str = '', **extra: Any) -> C:
    """A `cls` from parameter values keyed by setting name (missing ones keep their default),
    each checked; `extra` sets fields that are not settings. Raises ConfigError."""
    kwargs = dict(extra)
    for s in settings_of(cls, prefix):
        if s.name in values:
            value = s.check(values[s.name])
            kwargs[s.field] = tuple(value) if isinstance(value, list) else value
    return cls(**kwargs)


def check_fields(config: Any, prefix: str = '') -> None:
    """Check every setting field of a config dataclass instance (its `__post_init__` calls
    this), so a config made in code is held to the same rules as a parameter."""
    for s in settings_of(type(config), prefix):
        value = getattr(config, s.field)
        s.check(list(value) if isinstance(value, tuple) else value)


def _number(value) -> str:
    """An integer in full (2147483647, not 2.14748e+09), a float as %g."""
    return str(value) if isinstance(value, int) or value is None else f'{value:g}'
