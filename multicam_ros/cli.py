"""The `multicam-ros` command: work outside `ros2` (test streams, launching without ROS, benches).

Each sub-command lives in the module that does its work; this file only wires argparse, and
wires the ROS side into the ROS-free bring-up: `launch` and `demo` get the /diagnostics listener
(ros/diagnostics_listener.py) that feeds their status table.
"""
import argparse
import sys
from typing import TYPE_CHECKING, Callable, Dict, List, Optional

from multicam_ros.system.demo import WEIGHT_CHOICES
from multicam_ros.system.plan import LOG_LEVELS

if TYPE_CHECKING:
    from multicam_ros.system.supervisor import Listener


def _diagnostics_listener(on_status: Callable[[str, Dict[str, str]], None]) -> 'Listener':
    """The `listen` of system/supervisor.py: a /diagnostics listener, imported only when the
    system starts (it needs rclpy; a dry run or a bad file does not)."""
    from multicam_ros.ros.diagnostics_listener import DiagnosticsListener
    return DiagnosticsListener(on_status)


def _test_streams(args: argparse.Namespace) -> int:
    from multicam_testbed import serve_forever
    return serve_forever(count=args.count, port=args.port, width=args.width,
                         height=args.height, fps=args.fps)


def _launch(args: argparse.Namespace) -> int:
    from multicam_ros.system.supervisor import launch_main
    return launch_main(args.config, detector=args.detector, log_level=args.log_level,
                       status_period_s=args.status_period, stop_timeout_s=args.stop_timeout,
                       dry_run=args.dry_run, listen=_diagnostics_listener)


def _demo(args: argparse.Namespace) -> int:
    from multicam_ros.system.demo import demo_main
    return demo_main(port=args.port, weights=args.weights, listen=_diagnostics_listener)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog='multicam-ros',
        description='multicam_ros tools that work with or without a ROS install.')
    sub = parser.add_subparsers(dest='command', metavar='COMMAND', required=True)

    streams = sub.add_parser(
        'test-streams', help='serve N live H.264 test streams over RTSP on loopback',
        description='Serve rtsp://127.0.0.1:PORT/cam0 ... /camN-1, each visually distinct, '
                    'until Ctrl-C. Needs Debian\'s GStreamer RTSP server packages.')
    streams.add_argument('--count', type=int, default=4, help='number of streams (default 4)')
    streams.add_argument('--port', type=int, default=8554, help='RTSP port (default 8554)')
    streams.add_argument('--width', type=int, default=640, help='frame width in px')
    streams.add_argument('--height', type=int, default=480, help='frame height in px')
    streams.add_argument('--fps', type=int, default=30, help='frames per second')
    streams.set_defaults(func=_test_streams)

    launch = sub.add_parser(
        'launch', help='start every node of a camera configuration, without a ROS install',
        description='Start one camera_node per camera and one detector_node, exactly as '
                    '`ros2 launch multicam_ros cams.launch.py config:=CONFIG` does; restart '
                    'cameras that die, print a status table, stop everything on Ctrl-C. '
                    'Node output is printed with the node\'s name in front.')
    launch.add_argument('config', metavar='CONFIG', help='camera configuration YAML '
                        '(see config/cams.yaml)')
    launch.add_argument('--no-detector', dest='detector', action='store_false',
                        help='start the cameras only (like detector:=false)')
    launch.add_argument('--log-level', choices=LOG_LEVELS, default='info',
                        help='ROS log level of every node (default info)')
    launch.add_argument('--status-period', type=float, default=5.0, metavar='S',
                        help='print the status table every S seconds; 0: never (default 5)')
    launch.add_argument('--stop-timeout', type=float, default=10.0, metavar='S',
                        help='on Ctrl-C, kill nodes that have not stopped after S seconds '
                             '(default 10)')
    launch.add_argument('--dry-run', action='store_true',
                        help='check the file and print the plan (passwords hidden), start '
                             'nothing')
    launch.set_defaults(func=_launch)

    demo = sub.add_parser(
        'demo', help='the whole system on four live test streams (make demo)',
        description='Serve four RTSP test streams and run config/demo.yaml on them: four '
                    'camera nodes and one detector, with the status table, until Ctrl-C.')
    demo.add_argument('--port', type=int, default=8554, help='RTSP port (default 8554)')
    demo.add_argument('--weights', choices=WEIGHT_CHOICES, default='auto',
                      help='auto: the published COCO weights if cached, else random ones '
                           '(said loudly); default: let torchvision download them; none: '
                           'random weights')
    demo.set_defaults(func=_demo)
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == '__main__':
    sys.exit(main())
