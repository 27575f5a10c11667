"""The node plan: which processes start the system described by a cams.yaml. ROS-free.

`node_plan` turns a validated `Config` into a `Plan`: one camera_node per camera in namespace
/<name>, one detector_node named `detector` that serves them all, the environment every process
gets (system/transport.py) and, per camera, the variable that carries a password moved out of
its URL. `ros2 launch multicam_ros cams.launch.py` and `multicam-ros launch` both start exactly
this plan, so they cannot disagree; what each does when a process exits is `PlannedNode.on_exit`
(system/supervision.py), and what environment each process gets is `Plan.process_environment`:
a camera's password variable reaches that camera's process only. The launch arguments both
starters share (`detector`, `log_level`) are parsed here too.
"""
import os
from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional, Tuple
from urllib.parse import unquote, urlsplit, urlunsplit

from multicam_ros.core.settings import ConfigError
from multicam_ros.core.sources import redact
from multicam_ros.system.config import Config
from multicam_ros.system.executables import CAMERA_EXECUTABLE, DETECTOR_EXECUTABLE, PACKAGE
from multicam_ros.system.supervision import EXIT_RULES, ExitRule
from multicam_ros.system.transport import transport_environment

DETECTOR_NODE_NAME = 'detector'
CAMERA_NODE_NAME = 'camera_node'
LOG_LEVELS = ('debug', 'info', 'warn', 'error', 'fatal')
PASSWORD_VARIABLE_PREFIX = 'MULTICAM_ROS_PASSWORD_'


@dataclass(frozen=True)
class PlannedNode:
    """One process of the plan: which executable, under which ROS name, with what parameters."""

    label: str  # short name for people: the camera name, or 'detector'
    executable: str  # console script of the package: camera_node or detector_node
    name: str  # ROS node name
    namespace: str  # '/front', or '/' for the detector
    parameters: Dict[str, Any] = field(repr=False)  # may hold a camera password
    on_exit: ExitRule  # what its exits lead to (supervision.py)
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

    @property
    def password_variable(self) -> str:
        """The environment variable that holds this camera's password ('' if none)."""
        return str(self.parameters.get('password_env', '') or '') if self.is_camera else ''


@dataclass(frozen=True)
class Plan:
    """Every process to start, the environment variables each one gets on top of the
    starter's own environment (`environment`; `process_environment` composes the whole)."""

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

    def is_password_variable(self, name: str) -> bool:
        """True for a camera's password variable: one that a camera's password_env names, or
        any with the prefix of the variables a password is moved into."""
        return name.startswith(PASSWORD_VARIABLE_PREFIX) or name in {
            node.password_variable for node in self.cameras if node.password_variable}

    def process_environment(self, node: PlannedNode,
                            environ: Mapping[str, str]) -> Dict[str, str]:
        """The whole environment of `node`'s process, from the starter's `environ`: without
        any camera's password variable, plus the plan's variables, plus the node's own (a
        camera gets its own password variable back, from `environ` where its password_env
        names one the starter has, or moved out of its url)."""
        env = {key: value for key, value in environ.items()
               if not self.is_password_variable(key)}
        env.update(self.environment)
        own = node.password_variable
        if own and own in environ:
            env[own] = environ[own]
        env.update(node.environment)
        return env

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
    variable = PASSWORD_VARIABLE_PREFIX + name.upper()
    host = parts.netloc.rpartition('@')[2]
    parameters['url'] = urlunsplit(parts._replace(netloc=f'{parts.username}@{host}'))
    parameters['password_env'] = variable
    return parameters, {variable: unquote(parts.password)}


def node_plan(config: Config, detector: bool = True,
              environ: Optional[Mapping[str, str]] = None) -> Plan:
    """The processes that start the system described by `config`.

    One camera_node per camera in namespace /<name> with that camera's parameters (camera
    defaults merged with its overrides); unless `detector` is false, one detector_node named
    `detector` in / whose `cameras` lists every camera namespace, plus the detector section's
    parameters. `environ` (default os.environ) is the starter's environment, which decides the
    transport variables.
    """
    environ = os.environ if environ is None else environ
    nodes = []
    for camera in config.cameras:
        parameters, env = move_password_to_environment(camera.name, camera.parameters)
        nodes.append(PlannedNode(
            label=camera.name, executable=CAMERA_EXECUTABLE, name=CAMERA_NODE_NAME,
            namespace='/' + camera.name, parameters=parameters,
            on_exit=EXIT_RULES[CAMERA_EXECUTABLE], secrets=camera.source.secrets,
            environment=env))
    if detector:
        parameters = {'cameras': ['/' + camera.name for camera in config.cameras],
                      **config.detector}
        nodes.append(PlannedNode(label=DETECTOR_NODE_NAME, executable=DETECTOR_EXECUTABLE,
                                 name=DETECTOR_NODE_NAME, namespace='/', parameters=parameters,
                                 on_exit=EXIT_RULES[DETECTOR_EXECUTABLE]))
    return Plan(tuple(nodes), transport_environment(config.fastdds_profile, environ),
                config.path)


def parse_switch(text: str, argument: str) -> bool:
    """'true' / 'false' (any case) of a launch argument or flag; anything else is a
    ConfigError naming `argument`."""
    value = str(text).strip().lower()
    if value not in ('true', 'false'):
        raise ConfigError.of(argument, f'{text!r} is not a switch', "'true' or 'false'")
    return value == 'true'


def parse_log_level(text: str, argument: str = 'log_level') -> str:
    """One of LOG_LEVELS; anything else is a ConfigError naming `argument`."""
    if text not in LOG_LEVELS:
        raise ConfigError.of(argument, f'{text!r} is not a log level', ', '.join(LOG_LEVELS))
    return text
