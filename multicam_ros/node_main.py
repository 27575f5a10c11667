"""Process entry for the nodes: init, spin, clean exit on SIGINT/SIGTERM, non-zero exit when a
node cannot do its job at all (bad parameters)."""
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

from multicam_ros.params import ParamSpec


def use_large_frame_transport() -> None:
    """Load the package's Fast DDS large-frame profile unless whoever started this process chose
    a transport (config.transport_environment): the nodes that send images need it. Must run
    before rclpy.init: Fast DDS reads the variables when the participant is made."""
    from multicam_ros.config import PROFILE_PACKAGE, transport_environment
    os.environ.update(transport_environment(PROFILE_PACKAGE, os.environ))


def image_qos(reliability: str) -> QoSProfile:
    """Keep-latest: only the newest frame matters, so depth 1 and no history for late joiners."""
    return QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1,
                      durability=DurabilityPolicy.VOLATILE,
                      reliability=(ReliabilityPolicy.RELIABLE if reliability == 'reliable'
                                   else ReliabilityPolicy.BEST_EFFORT))


def _descriptor(spec: ParamSpec) -> ParameterDescriptor:
    descriptor = ParameterDescriptor(description=spec.description, read_only=spec.read_only)
    if spec.choices:
        descriptor.additional_constraints = 'one of: ' + ', '.join(spec.choices)
    if isinstance(spec.default, float) and spec.min_value is not None:
        descriptor.floating_point_range = [FloatingPointRange(
            from_value=float(spec.min_value), to_value=float(spec.max_value), step=0.0)]
    elif (isinstance(spec.default, int) and not isinstance(spec.default, bool)
          and spec.min_value is not None):
        descriptor.integer_range = [IntegerRange(
            from_value=int(spec.min_value), to_value=int(spec.max_value), step=0)]
    return descriptor


def declare_params(node: Node, specs: Sequence[ParamSpec]) -> Dict[str, Any]:
    """Declare every parameter of `specs` on `node` with its descriptor, and return the checked
    values. Any bad override raises ValueError naming the parameter and the accepted values."""
    values = {}
    for spec in specs:
        # An empty list does not tell rclpy its element type: declare the type instead.
        empty_list = isinstance(spec.default, list) and not spec.default
        default = Parameter.Type.STRING_ARRAY if empty_list else spec.default
        try:
            declared = node.declare_parameter(spec.name, default, _descriptor(spec))
        except (ParameterException, TypeError) as exc:  # a bad override, in rclpy's words
            hint = ' (write numbers with a decimal point, e.g. 10.0)' \
                if isinstance(spec.default, float) and 'INTEGER' in str(exc) else ''
            raise ValueError(f'parameter {spec.name}: {exc}; accepted: {spec.accepted}{hint}') \
                from None
        value = declared.value
        values[spec.name] = spec.check([] if empty_list and value is None else value)
    return values


def on_param_change(node: Node, specs: Sequence[ParamSpec],
                    apply: Dict[str, Callable[[Any], None]]) -> None:
    """Accept run-time changes of the parameters in `apply` (checked against their specs) and
    hand each new value to its function; rclpy itself refuses changes to read-only ones."""
    known = {spec.name: spec for spec in specs}

    def callback(params: List[Parameter]) -> SetParametersResult:
        try:
            checked = [(p.name, known[p.name].check(p.value)) for p in params if p.name in apply]
        except ValueError as exc:
            return SetParametersResult(successful=False, reason=str(exc))
        for name, value in checked:
            apply[name](value)
        return SetParametersResult(successful=True)

    node.add_on_set_parameters_callback(callback)


def run_node(make_node: Callable[[], Node], name: str, args: Optional[List[str]] = None,
             num_threads: int = 1) -> int:
    """Create the node, spin it until shutdown, and end the process.

    rclpy's default signal handlers turn SIGINT and SIGTERM into a context shutdown, which ends
    the spin; the node then releases its resources in `destroy_node`. A capture thread can still
    be blocked inside OpenCV (it ends only at OpenCV's own timeout); letting the interpreter
    tear down around it aborts the process, so a node that stopped cleanly leaves via os._exit.
    Returns only the exit code of a node that could not start.
    """
    rclpy.init(args=args)
    try:
        node = make_node()
    except ValueError as exc:  # bad parameters, from declare_params or the ROS-free core
        print(f'[{name}] error: {exc}', file=sys.stderr, flush=True)
        rclpy.try_shutdown()
        return 2
    except KeyboardInterrupt:  # Ctrl-C while starting (e.g. loading a model): no traceback
        print(f'[{name}] interrupted while starting', file=sys.stderr, flush=True)
        rclpy.try_shutdown()
        return 130
    except Exception:
        if rclpy.ok():
            raise
        # SIGTERM while starting shut the context down under the constructor.
        print(f'[{name}] stopped while starting', file=sys.stderr, flush=True)
        return 130
    threads = getattr(node, 'executor_threads', num_threads)  # a node may choose at run time
    executor = (MultiThreadedExecutor(num_threads=threads) if threads > 1
                else SingleThreadedExecutor())
    executor.add_node(node)
    code = 0
    try:
        executor.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    except Exception:  # a bug or an rclpy error: say what, and exit non-zero
        traceback.print_exc()
        code = 1
    finally:
        executor.shutdown(timeout_sec=1.0)
        node.destroy_node()
        rclpy.try_shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
