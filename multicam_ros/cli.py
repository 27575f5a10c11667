"""The `multicam-ros` command: work outside `ros2` (test streams, launching without ROS, the
browser view, fetching models).

Each sub-command lives in the module that does its work; this file only wires argparse, and
wires the ROS side into the ROS-free bring-up: `launch` and `demo` get the /diagnostics listener
(ros/diagnostics_listener.py) that feeds their status table, `launch` the look at the ROS graph
that refuses a second start of the same nodes (ros/graph.py), and `demo` the live view
(ros/viewer_node.py).
"""
import argparse
import sys
from typing import TYPE_CHECKING, Callable, Dict, List, Optional, Sequence

from multicam_ros.system.plan import LOG_LEVELS
from multicam_ros.system.viewer import DEFAULT_HOST, DEFAULT_PORT

if TYPE_CHECKING:
    from multicam_ros.ros.viewer_node import Viewer
    from multicam_ros.system.supervisor import Listener


def _diagnostics_listener(on_status: Callable[[str, Dict[str, str]], None]) -> 'Listener':
    """The `listen` of system/supervisor.py: a /diagnostics listener, imported only when the
    system starts (it needs rclpy; a dry run or a bad file does not)."""
    from multicam_ros.ros.diagnostics_listener import DiagnosticsListener
    return DiagnosticsListener(on_status)


def _running_nodes(fqns: Sequence[str]) -> List[str]:
    """The `find_running` of system/supervisor.py: which of these nodes are alive on the ROS
    graph (it needs rclpy, imported only when the system starts)."""
    from multicam_ros.ros.graph import running_nodes
    return running_nodes(fqns)


def _viewer(cameras: Sequence[str], host: str, port: int) -> 'Viewer':
    """The `view` of system/demo.py: the live view in this process (it needs rclpy)."""
    from multicam_ros.ros.viewer_node import Viewer
    return Viewer(cameras, host, port)


def _test_streams(args: argparse.Namespace) -> int:
    from multicam_testbed import serve_forever
    return serve_forever(count=args.count, port=args.port, width=args.width,
                         height=args.height, fps=args.fps, footage=args.footage)


def _launch(args: argparse.Namespace) -> int:
    from multicam_ros.system.supervisor import launch_main
    return launch_main(args.config, detector=args.detector, log_level=args.log_level,
                       status_period_s=args.status_period, stop_timeout_s=args.stop_timeout,
                       dry_run=args.dry_run, listen=_diagnostics_listener,
                       find_running=_running_nodes)


def _demo(args: argparse.Namespace) -> int:
    from multicam_ros.system.demo import demo_main
    return demo_main(port=args.port, listen=_diagnostics_listener,
                     view=None if args.no_view else _viewer, view_host=args.view_host,
                     view_port=args.view_port)


def view_cameras(config: Optional[str], cameras: Sequence[str]) -> List[str]:
    """The camera namespaces to show: those of CONFIG (a cams.yaml), then `--cameras`
    (comma-separated lists, each name with or without its leading /), each once. Raises
    ConfigError (an invalid file, a name that is no namespace, or no camera at all)."""
    from multicam_ros.core.params import normalise_cameras
    from multicam_ros.core.settings import ConfigError
    from multicam_ros.system.config import load_config

    found: List[str] = []
    if config:
        found += ['/' + camera.name for camera in load_config(config).cameras]
    found += [name for text in cameras for name in text.split(',') if name.strip()]
    if not found:
        raise ConfigError.of('cameras', 'none given', 'a cams.yaml (multicam-ros view CONFIG) '
                             'and/or --cameras /cam0,/cam1')
    normalised = ['/' + name.strip().strip('/') for name in found]
    return normalise_cameras(list(dict.fromkeys(normalised)))


def _view(args: argparse.Namespace) -> int:
    from multicam_ros.core.settings import ConfigError
    try:
        cameras = view_cameras(args.config, args.cameras)
    except ConfigError as exc:
        print(f'multicam-ros view: nothing to show:\n{exc}', file=sys.stderr, flush=True)
        return 2
    from multicam_ros.ros.viewer_node import view_main
    return view_main(cameras, host=args.host, port=args.port, topic=args.topic,
                     reliability=args.reliability)


def _models(args: argparse.Namespace) -> int:
    from multicam_ros.system.model_store import main
    return main(args.words)


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
    streams.add_argument('--footage', action='store_true',
                         help='serve the four demo cameras cut from vtest.avi (real street '
                              'footage at 10 fps, each frame marked with its source index) '
                              'instead of --count test patterns')
    streams.set_defaults(func=_test_streams)

    launch = sub.add_parser(
        'launch', help='start every node of a camera configuration, without a ROS install',
        description='Start one camera_node per camera and one detector_node, exactly as '
                    '`ros2 launch multicam_ros cams.launch.py config:=CONFIG` does; restart '
                    'nodes that die (with a growing delay; a camera with a configuration '
                    'error is not restarted, a detector that keeps failing stops everything), '
                    'print a status table, stop everything on Ctrl-C. Node output is printed '
                    'with the node\'s name in front. Refuses to start nodes that already run '
                    'in this ROS_DOMAIN_ID. Exit codes: 0 after Ctrl-C or SIGTERM, 1 the '
                    'detector kept failing, 2 a configuration error (in the file, of the '
                    'detector, or of every camera), 3 already running.')
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
        'demo', help='the whole system on four cameras of real footage (make demo)',
        description='Serve four live RTSP cameras cut from real street footage (vtest.avi) '
                    'and run config/demo.yaml on them: four camera nodes and one detector '
                    'with the default model (NanoDet-g) and tracking, the live view in the '
                    'browser and the status table, until Ctrl-C.')
    demo.add_argument('--port', type=int, default=8554, help='RTSP port (default 8554)')
    demo.add_argument('--view-port', type=int, default=DEFAULT_PORT,
                      help=f'port of the live view (default {DEFAULT_PORT})')
    demo.add_argument('--view-host', default=DEFAULT_HOST, metavar='ADDRESS',
                      help=f'address of the live view (default {DEFAULT_HOST}: this machine '
                           'only; anything else lets others watch, with no login)')
    demo.add_argument('--no-view', action='store_true', help='no live view in the browser')
    demo.set_defaults(func=_demo)

    view = sub.add_parser(
        'view', help='every camera live in one browser page',
        description='Serve one local web page that shows every camera\'s annotated picture '
                    '(<camera>/image_annotated) in a grid, live, with its fps and latency, and '
                    'NO SIGNAL when the camera is down. A camera\'s images are received (and '
                    'drawn by the detector) only while a browser watches it.')
    view.add_argument('config', metavar='CONFIG', nargs='?',
                      help='camera configuration YAML: its cameras are shown')
    view.add_argument('--cameras', action='append', default=[], metavar='NS[,NS...]',
                      help='camera namespaces to show, e.g. /cam0,/cam1 (after those of '
                           'CONFIG; may be repeated)')
    view.add_argument('--host', default=DEFAULT_HOST, metavar='ADDRESS',
                      help=f'address to serve on (default {DEFAULT_HOST}: this machine only; '
                           'e.g. 0.0.0.0 lets every host that reaches this one watch, with no '
                           'login)')
    view.add_argument('--port', type=int, default=DEFAULT_PORT,
                      help=f'port to serve on (default {DEFAULT_PORT}; 0: any free one)')
    view.add_argument('--topic', default='image_annotated',
                      help='image topic under each camera namespace (default image_annotated; '
                           'image_raw shows the cameras without the detector)')
    view.add_argument('--reliability', choices=('reliable', 'best_effort'), default='reliable',
                      help='QoS of the image subscriptions (default reliable, as this package '
                           'publishes; best_effort also takes best-effort publishers)')
    view.set_defaults(func=_view)

    models = sub.add_parser(
        'models', add_help=False, help='fetch the default model (NanoDet-g) and the footage',
        description='multicam-ros models fetch|footage|path|check (--help for more)')
    models.add_argument('words', nargs=argparse.REMAINDER, metavar='ACTION ...',
                        help='fetch, footage, path or check, then their options')
    models.set_defaults(func=_models)
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    words = sys.argv[1:] if argv is None else list(argv)
    if words[:1] == ['models']:  # its own parser (system/model_store.py) reads the rest,
        return _models(argparse.Namespace(words=words[1:]))  # --help included
    args = build_parser().parse_args(words)
    return args.func(args)


if __name__ == '__main__':
    sys.exit(main())
