"""Process entry and parameter plumbing shared by the nodes.

- `declare_params`: every setting of a node (core/params.py) becomes a ROS parameter with its
  descriptor (description, range, choices, read-only), and the checked values come back;
- `forward_core_logs`: the core's stdlib `logging` goes to the node's ROS logger (/rosout,
  `--log-level`);
- `run_node`: init, spin, clean exit on SIGINT/SIGTERM; a configuration error exits 2 with its
  message, anything else is a bug: traceback and exit 1.
"""
import atexit
import logging
import os
import sys
import traceback
from typing import Any, Callable, Dict, List, Optional, Sequence

import rclpy
from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor, \
    SetParametersResult
from rclpy.exceptions import ParameterException
from rclpy.executors import ExternalShutdownException, MultiThreadedExecutor, \
    SingleThreadedExecutor
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy

from multicam_ros.core.settings import ConfigError, Setting

EXIT_CONFIG = 2
EXIT_BUG = 1
EXIT_INTERRUPTED = 130
CORE_LOGGER = 'multicam_ros'  # the parent of every core module's logging.getLogger(__name__)


def use_large_frame_transport() -> None:
    """Load the package's Fast DDS large-frame profile unless whoever started this process chose
    a transport (system/transport.py): the nodes that send images need it. Must run before
    rclpy.init: Fast DDS reads the variables when the participant is made."""
    from multicam_ros.system.transport import PROFILE_PACKAGE, transport_environment
    os.environ.update(transport_environment(PROFILE_PACKAGE, os.environ))


def image_qos(reliability: str) -> QoSProfile:
    """Keep-latest: only the newest frame matters, so depth 1 and no history for late joiners."""
    return QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1,
                      durability=DurabilityPolicy.VOLATILE,
                      reliability=(ReliabilityPolicy.RELIABLE if reliability == 'reliable'
                                   else ReliabilityPolicy.BEST_EFFORT))


def descriptor(spec: Setting) -> ParameterDescriptor:
    """The ROS descriptor of a setting: what `ros2 param describe` shows."""
    result = ParameterDescriptor(description=spec.description, read_only=spec.read_only)
    if spec.choices:
        result.additional_constraints = 'one of: ' + ', '.join(spec.choices)
    if isinstance(spec.default, float) and spec.min_value is not None:
        result.floating_point_range = [FloatingPointRange(
            from_value=float(spec.min_value), to_value=float(spec.max_value), step=0.0)]
    elif (isinstance(spec.default, int) and not isinstance(spec.default, bool)
          and spec.min_value is not None):
        result.integer_range = [IntegerRange(
            from_value=int(spec.min_value), to_value=int(spec.max_value), step=0)]
    return result


def declare_params(node: Node, specs: Sequence[Setting]) -> Dict[str, Any]:
    """Declare every setting of `specs` on `node` with its descriptor, and return the checked
    values by name. A bad override raises ConfigError naming the parameter and the accepted
    values."""
    values = {}
    for spec in specs:
        # An empty list does not tell rclpy its element type: declare the type instead.
        empty_list = isinstance(spec.default, list) and not spec.default
        default = Parameter.Type.STRING_ARRAY if empty_list else spec.default
        try:
            declared = node.declare_parameter(spec.name, default, descriptor(spec))
        except (ParameterException, TypeError) as exc:  # a bad override, in rclpy's words
            hint = ' (write numbers with a decimal point, e.g. 10.0)' \
                if isinstance(spec.default, float) and 'INTEGER' in str(exc) else ''
            raise spec.error(f'{exc}{hint}') from None
        value = declared.value
        values[spec.name] = spec.check([] if empty_list and value is None else value)
    return values


def on_param_change(node: Node, specs: Sequence[Setting],
                    apply: Dict[str, Callable[[Any], None]]) -> None:
    """Accept run-time changes of the parameters in `apply` (checked against their settings)
    and hand each new value to its function; rclpy itself refuses changes to read-only ones."""
    known = {spec.name: spec for spec in specs}

    def callback(params: List[Parameter]) -> SetParametersResult:
        try:
            checked = [(p.name, known[p.name].check(p.value)) for p in params if p.name in apply]
        except ConfigError as exc:
            return SetParametersResult(successful=False, reason=str(exc))
        for name, value in checked:
            apply[name](value)
        return SetParametersResult(successful=True)

    node.add_on_set_parameters_callback(callback)


class _RosLogHandler(logging.Handler):
    """Hands stdlib log records to a node's ROS logger, at the matching severity."""

    def __init__(self, node: Node) -> None:
        super().__init__()
        self._logger = node.get_logger()

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = self.format(record)
            if record.levelno >= logging.CRITICAL:
                self._logger.fatal(text)
            elif record.levelno >= logging.ERROR:
                self._logger.error(text)
            elif record.levelno >= logging.WARNING:
                self._logger.warning(text)
            elif record.levelno >= logging.INFO:
                self._logger.info(text)
            else:
                self._logger.debug(text)
        except Exception:  # noqa: BLE001 - logging must never take the node down
            self.handleError(record)


def forward_core_logs(node: Node) -> logging.Handler:
    """Send the core's `logging` output (the `multicam_ros.*` loggers) to `node`'s ROS logger,
    at the node's `--log-level` (rcutils severities use the stdlib's numbers). Call it first in
    the node's constructor, so that messages while loading a model are forwarded too."""
    handler = _RosLogHandler(node)
    handler.setFormatter(logging.Formatter('%(message)s'))
    core = logging.getLogger(CORE_LOGGER)
    for old in [h for h in core.handlers if isinstance(h, _RosLogHandler)]:
        core.removeHandler(old)
    core.addHandler(handler)
    core.setLevel(int(node.get_logger().get_effective_level()))
    core.propagate = False
    return handler


def run_node(make_node: Callable[[], Node], name: str, args: Optional[List[str]] = None) -> int:
    """Create the node, spin it until shutdown, and return the process's exit code.

    rclpy's default signal handlers turn SIGINT and SIGTERM into a context shutdown, which ends
    the spin; the node then releases its resources in `destroy_node`. Exit codes: 0 after a
    signal, 2 for a configuration error (its message, no traceback), 130 when interrupted while
    starting, 1 with a traceback for anything else. A node whose `needs_hard_exit()` is true
    leaves through os._exit once everything is released and the atexit handlers have run: a
    camera whose capture thread is still blocked inside OpenCV (tearing the interpreter down
    around it aborts the process, see core/capture.py), and the detector (torch's native
    teardown alone takes 1-3 s, which would break the 2 s stop).
    """
    rclpy.init(args=args)
    try:
        node = make_node()
    except ConfigError as exc:
        print(f'[{name}] configuration error: {exc}', file=sys.stderr, flush=True)
        rclpy.try_shutdown()
        return EXIT_CONFIG
    except KeyboardInterrupt:  # Ctrl-C while starting (e.g. loading a model): no traceback
        print(f'[{name}] interrupted while starting', file=sys.stderr, flush=True)
        rclpy.try_shutdown()
        return EXIT_INTERRUPTED
    except Exception:
        if rclpy.ok():
            traceback.print_exc()
            rclpy.try_shutdown()
            return EXIT_BUG
        # SIGTERM while starting shut the context down under the constructor.
        print(f'[{name}] stopped while starting', file=sys.stderr, flush=True)
        return EXIT_INTERRUPTED
    threads = getattr(node, 'executor_threads', 1)
    executor = (MultiThreadedExecutor(num_threads=threads) if threads > 1
                else SingleThreadedExecutor())
    executor.add_node(node)
    code = 0
    try:
        executor.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    except Exception:  # noqa: BLE001
        if rclpy.ok():  # a bug or an rclpy error: say what, and exit non-zero
            traceback.print_exc()
            code = EXIT_BUG
        # else: the wait set raced the shutdown that a signal started; that is a clean stop
    executor.shutdown(timeout_sec=1.0)
    node.destroy_node()
    rclpy.try_shutdown()
    if getattr(node, 'needs_hard_exit', lambda: False)():
        atexit._run_exitfuncs()  # what a normal exit would run, and then not the rest
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    return code
