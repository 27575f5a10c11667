"""Process entry and parameter plumbing shared by the nodes.

- `declare_params`: every setting of a node (core/params.py) becomes a ROS parameter with its
  descriptor (description, range, choices, read-only), and the checked values come back; an
  override that names no parameter of the node is warned about, with the closest name;
- `forward_core_logs`: the core's stdlib `logging` goes to the node's ROS logger (/rosout,
  `--log-level`);
- `run_node`: init, spin, clean exit on SIGINT/SIGTERM (exit 0, no traceback, at any moment);
  malformed ROS arguments and configuration errors exit 2 with their message; anything else is
  a bug: traceback and exit 1. A node started by a launcher ends when the launcher dies
  (core/process.py `exit_with_parent`).
"""
import atexit
import difflib
import logging
import os
import re
import sys
import traceback
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence

import rclpy
from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor, \
    SetParametersResult
from rclpy.exceptions import ParameterException
from rclpy.executors import Executor, ExternalShutdownException, MultiThreadedExecutor, \
    SingleThreadedExecutor
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from rclpy.signals import SignalHandlerOptions, install_signal_handlers

from multicam_ros.core.process import EXIT_CONFIG, PARENT_PID_ENV, StopRequested, StopSignals, \
    catch_stop_signals, exit_with_parent, flush_native_output
from multicam_ros.core.settings import ConfigError, Setting

EXIT_STOPPED = 0  # after SIGINT/SIGTERM, whenever it came (also while starting)
EXIT_BUG = 1
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
    values; an override of a parameter the node does not have is warned about first (it would
    be ignored silently otherwise), with the closest known name. Call it once, with every
    setting of the node: an override of a setting declared later would count as unknown."""
    warn_unknown_parameters(node, specs)
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


def unknown_parameter_message(name: str, known: Iterable[str]) -> str:
    """`unknown parameter 'max_batchsize' (ignored); did you mean 'max_batch_size'?`, or the
    known names when none is close."""
    known = sorted(set(known))
    close = difflib.get_close_matches(name, known, n=1)
    if close:
        return f'unknown parameter {name!r} (ignored); did you mean {close[0]!r}?'
    return f'unknown parameter {name!r} (ignored); known parameters: {", ".join(known)}'


def warn_unknown_parameters(node: Node, specs: Sequence[Setting]) -> List[str]:
    """Warn (node logger: stderr and /rosout) about each parameter override given to this node
    (`-p name:=value`, or a key of a --params-file entry for this node or for `/**`) that is
    neither one of `specs` nor declared by rclpy itself (use_sim_time, ...); return their
    names. rclpy keeps a node's overrides in `Node._parameter_overrides` (a dict by name) from
    Humble to Rolling; where it does not, nothing is warned about."""
    overrides = getattr(node, '_parameter_overrides', None)
    if not isinstance(overrides, dict):
        return []
    names = {spec.name for spec in specs}
    unknown = sorted(name for name in overrides
                     if name not in names and not node.has_parameter(name))
    if unknown:
        declared = getattr(node, '_parameters', None)
        known = names | (set(declared) if isinstance(declared, dict) else set())
        for name in unknown:
            node.get_logger().warning(unknown_parameter_message(name, known))
    return unknown


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


# -- malformed --ros-args -----------------------------------------------------------------------

ROS_ARGS_FLAG = '--ros-args'
_VALUE_FLAGS = {'-r': 'remap', '--remap': 'remap', '-p': 'param', '--param': 'param',
                '--params-file': 'file', '--log-config-file': 'file', '--log-level': 'level',
                '-e': 'text', '--enclave': 'text', '--log-file-name': 'text'}
_PLAIN_FLAGS = tuple(f'--{switch}-{what}-logs' for what in ('rosout', 'stdout', 'external-lib')
                     for switch in ('enable', 'disable'))
LOG_LEVELS = ('debug', 'info', 'warn', 'error', 'fatal', 'unset')
ACCEPTED_ROS_ARGS = (
    '-p NAME:=VALUE (e.g. -p url:=rtsp://cam/stream), -r FROM:=TO (e.g. -r __ns:=/cam0), '
    '--params-file FILE.yaml, --log-level [LOGGER:=]LEVEL (LEVEL one of '
    + ', '.join(LOG_LEVELS) + '), -e ENCLAVE, --log-config-file FILE, --log-file-name NAME, '
    + ', '.join(_PLAIN_FLAGS) + "; a '--' ends the ROS arguments")
_RCL_LOCATION = re.compile(r',? at [^,]*?\.(?:c|cpp|hpp|h):\d+')
_ARGUMENT_WORDS = re.compile(r'pars|argument|flag|rule|remap|param', re.IGNORECASE)


def _assignment_problem(flag: str, value: str, what: str, example: str) -> Optional[str]:
    name, assign, rest = value.partition(':=')
    if not assign or not name.strip():
        return f"'{flag} {value}': {flag} takes {what}, e.g. {flag} {example}"
    if not rest.strip():
        empty = (" (an empty string is written NAME:=\"''\")"
                 if flag in ('-p', '--param') else '')
        return (f"'{flag} {value}': nothing after ':='{empty}; {flag} takes {what}, e.g. "
                f"{flag} {example}")
    return None


def _value_problem(flag: str, kind: str, value: str) -> Optional[str]:
    """What is wrong with the value of one ROS flag, or None if it looks fine."""
    if kind == 'param':
        return _assignment_problem(flag, value, 'NAME:=VALUE', 'url:=rtsp://cam/stream')
    if kind == 'remap':
        return _assignment_problem(flag, value, 'FROM:=TO', '__ns:=/cam0')
    if kind == 'level':
        level = value.rpartition(':=')[2]
        if level.strip().lower() not in LOG_LEVELS:
            return (f"'{flag} {value}': {level!r} is not a log level; accepted: "
                    f"[LOGGER:=]LEVEL with LEVEL one of {', '.join(LOG_LEVELS)}")
        return None
    if kind == 'file':
        if not os.path.isfile(value):
            return f"'{flag} {value}': no such file"
        if not os.access(value, os.R_OK):
            return f"'{flag} {value}': the file cannot be read"
        return None
    if not value.strip():
        return f"'{flag}' needs a value"
    return None


def ros_args_problem(argv: Sequence[str]) -> Optional[str]:
    """The first malformed ROS argument of `argv` (the ones between `--ros-args` and `--`),
    described with what would be accepted; None when every one looks well formed."""
    inside = False
    index = 0
    while index < len(argv):
        arg = argv[index]
        index += 1
        if arg == ROS_ARGS_FLAG:
            inside = True
            continue
        if not inside or arg in _PLAIN_FLAGS:
            continue
        if arg == '--':
            inside = False
            continue
        kind = _VALUE_FLAGS.get(arg)
        if kind is None:
            close = difflib.get_close_matches(arg, [*_VALUE_FLAGS, *_PLAIN_FLAGS], n=1)
            hint = f' (did you mean {close[0]!r}?)' if close else ''
            return f'unknown ROS argument {arg!r}{hint}'
        if index >= len(argv) or argv[index] in ('--', ROS_ARGS_FLAG):
            return f"'{arg}' needs a value after it"
        problem = _value_problem(arg, kind, argv[index])
        if problem:
            return problem
        index += 1
    return None


def ros_args_error(name: str, argv: Sequence[str], exc: BaseException) -> str:
    """One paragraph for a failed rclpy.init: the malformed argument (found by
    `ros_args_problem`, else rcl's own words without its source locations) and the accepted
    forms; or, when no argument is at fault (e.g. ROS_DOMAIN_ID is not a number), rcl's words
    alone. Passwords in URLs are redacted."""
    from multicam_ros.core.sources import redact  # OpenCV: only when there is an error
    problem = ros_args_problem(argv)
    if problem is None:
        text = _RCL_LOCATION.sub('', ' '.join(str(exc).split())).strip() or type(exc).__name__
        if type(exc).__name__ == 'UnknownROSArgsError':  # rclpy's words: "['--foo']"
            problem = f'unknown ROS arguments {text}'
        elif _ARGUMENT_WORDS.search(text):
            problem = text
        else:
            return redact(f'[{name}] cannot start ROS 2: {text}')
    return redact(f'[{name}] invalid ROS arguments: {problem}. Accepted after --ros-args: '
                  f'{ACCEPTED_ROS_ARGS}.')


# -- stopping ------------------------------------------------------------------------------------

def _make_executor(node: Node) -> Executor:
    threads = getattr(node, 'executor_threads', 1)
    return (MultiThreadedExecutor(num_threads=threads) if threads > 1
            else SingleThreadedExecutor())


def _say(name: str, text: str) -> None:
    print(f'[{name}] {text}', file=sys.stderr, flush=True)


def run_node(make_node: Callable[[], Node], name: str, args: Optional[List[str]] = None) -> int:
    """Create the node, spin it until shutdown, and return the process's exit code.

    Signals (see StopSignals): SIGINT and SIGTERM at any moment end the process with exit 0
    and no traceback. While the node is being made, a signal interrupts its constructor at once
    and the half-made node is released; once it spins, rclpy's handlers shut the context down,
    which ends the spin, and the node releases its resources in `destroy_node`. rclpy's
    handlers are installed only once the executor exists: a context shut down by a signal any
    earlier would make rclpy fail half-way through creating the executor.

    Exit codes: 0 after a signal (or when the launcher in PARENT_PID_ENV is already gone), 2
    for malformed ROS arguments or a configuration error (its message, no traceback), 1 with a
    traceback for anything else. A node whose `needs_hard_exit()` is true leaves through
    os._exit once everything is released and the atexit handlers have run: a camera whose
    capture thread is still blocked inside OpenCV (tearing the interpreter down around it
    aborts the process, see core/capture.py), and the detector (torch's native teardown alone
    takes 1-3 s, which would break the 2 s stop).
    """
    argv = list(sys.argv if args is None else args)
    stop = catch_stop_signals()  # first: a launcher may stop this process at any moment
    if not exit_with_parent():
        _say(name, f'the launcher that started it (pid {os.environ.get(PARENT_PID_ENV)}) is '
             'gone: not starting')
        return EXIT_STOPPED
    try:
        rclpy.init(args=args, signal_handler_options=SignalHandlerOptions.NO)
    except Exception as exc:  # noqa: BLE001 - rcl's argument errors come in several types
        print(ros_args_error(name, argv, exc), file=sys.stderr, flush=True)
        return EXIT_CONFIG
    node, code, complete = _start(make_node, name, stop)
    executor: Optional[Executor] = None
    try:
        if complete and not stop.stopping:
            executor = _make_executor(node)
            executor.add_node(node)
            install_signal_handlers(SignalHandlerOptions.ALL)
            if not stop.stopping:  # one that came before rclpy's handlers did not stop rclpy
                code = _spin(executor, stop)
    except Exception:  # noqa: BLE001
        if rclpy.ok() and not stop.stopping:
            traceback.print_exc()
            code = EXIT_BUG
    code = _tear_down(name, node, executor, code, complete)
    if node is not None and _needs_hard_exit(node):
        atexit._run_exitfuncs()  # what a normal exit would run, and then not the rest
        sys.stdout.flush()
        sys.stderr.flush()
        flush_native_output()  # what OpenCV and FFmpeg printed: os._exit would drop it
        os._exit(code)
    return code


def _half_made_node(exc: BaseException) -> Optional[Node]:
    """The node whose constructor `exc` came out of (the `self` of the outermost frame that has
    a Node for `self`), so that what it already holds can be released."""
    tb = exc.__traceback__
    while tb is not None:
        candidate = tb.tb_frame.f_locals.get('self')
        if isinstance(candidate, Node):
            return candidate
        tb = tb.tb_next
    return None


def _start(make_node: Callable[[], Node], name: str, stop: StopSignals):
    """(node, exit code, complete): the node that `make_node` made (complete), or the half-made
    one (or None) with the code to exit with. Only in here may a signal raise StopRequested
    (at most once); every other moment only records it."""
    if stop.stopping:
        _say(name, 'stopped while starting')
        return None, EXIT_STOPPED, False
    node: Optional[Node] = None
    try:
        try:
            stop.interruptible = True
            node = make_node()
        finally:
            stop.interruptible = False
    except StopRequested as exc:
        _say(name, 'stopped while starting')
        if node is not None:  # it came just after the constructor returned
            return node, EXIT_STOPPED, True
        return _half_made_node(exc), EXIT_STOPPED, False
    except ConfigError as exc:
        _say(name, f'configuration error: {exc}')
        return _half_made_node(exc), EXIT_CONFIG, False
    except Exception as exc:  # noqa: BLE001
        if not stop.stopping:
            traceback.print_exc()
            return _half_made_node(exc), EXIT_BUG, False
        # A signal came while the constructor ran, and an rclpy call or a wait inside it failed.
        _say(name, 'stopped while starting')
        return _half_made_node(exc), EXIT_STOPPED, False
    return node, EXIT_STOPPED, True


def _spin(executor: Executor, stop: StopSignals) -> int:
    """Spin until the context is shut down; the exit code."""
    try:
        executor.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    except Exception:  # noqa: BLE001
        # The wait set (or a callback) raced the shutdown that a signal started: a clean stop.
        # With the context still valid it is a bug or an rclpy error: say what, exit non-zero.
        if executor.context.ok() and not stop.stopping:
            traceback.print_exc()
            return EXIT_BUG
    return EXIT_STOPPED


def _tear_down(name: str, node: Optional[Node], executor: Optional[Executor], code: int,
               complete: bool) -> int:
    """Release the executor, the node and the context, whatever state a signal left them in;
    the exit code (a complete node whose `destroy_node` fails has a bug; a half-made one is
    released as far as it goes)."""
    if executor is not None:
        try:
            executor.shutdown(timeout_sec=1.0)
        except Exception:  # noqa: BLE001 - rclpy's own clean-up after a shutdown race
            pass
    if node is not None:
        try:
            node.destroy_node()
        except Exception:  # noqa: BLE001
            if complete:
                _say(name, 'releasing the node failed:')
                traceback.print_exc()
                code = EXIT_BUG
    try:
        rclpy.try_shutdown()
    except Exception:  # noqa: BLE001 - already shut down by a signal
        pass
    return code


def _needs_hard_exit(node: Node) -> bool:
    try:
        return bool(getattr(node, 'needs_hard_exit', lambda: False)())
    except Exception:  # noqa: BLE001 - a half-made node: leave the hard way, to be safe
        return True
