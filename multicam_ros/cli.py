"""The `multicam-ros` command: work outside `ros2` (test streams, launching without ROS, benches).

Each sub-command lives in the module that does its work; this file only wires argparse.
"""
import argparse
import sys
from typing import List, Optional


def _test_streams(args: argparse.Namespace) -> int:
    from multicam_ros.testbed import serve_forever
    return serve_forever(count=args.count, port=args.port, width=args.width,
                         height=args.height, fps=args.fps)


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
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == '__main__':
    sys.exit(main())
