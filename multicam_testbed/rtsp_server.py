#!/usr/bin/python3
"""Serve N live H.264 test streams over RTSP with GStreamer's RTSP server.

Run by Debian's own /usr/bin/python3, which owns the GObject bindings (python3-gi): this file
imports nothing from a virtual environment or from multicam_ros, so that a venv can start it as a
separate process (see multicam_testbed.RtspTestServer).

Mounts are rtsp://HOST:PORT/cam0 ... /camN-1. Each is either
- a test pattern: `videotestsrc is-live=true` with its own pattern, its camera name and running
  time burnt in (`--count N`), or
- real footage: a folder of JPEG files played in a loop at --fps (`--sequence PATTERN`, once
  per mount: a multifilesrc location such as /path/%05d.jpg; multicam_testbed/footage.py
  renders them from a video file, which this interpreter's GStreamer could not decode),
encoded by x264enc (zerolatency, ultrafast, one keyframe per second) and packed by rtph264pay.
Media are shared: one pipeline per mount, started for the first client and shared by every
further client, so the encoder cost does not grow with readers and all readers of a mount see
the same frames.

Prints exactly one line, `READY rtsp://HOST:PORT`, on stdout once the socket listens
(with the real port when --port 0 asks the kernel for a free one). Exits 0 on SIGTERM/SIGINT.
Exit codes: 0 clean stop, 2 bad arguments, 3 GStreamer or its bindings missing,
4 address or port cannot be bound.
"""
import argparse
import os
import signal
import sys
from typing import List, NoReturn, Optional

EXIT_MISSING_DEPS = 3
EXIT_BIND_FAILED = 4

DEBIAN_PACKAGES = ('python3-gi gir1.2-gst-rtsp-server-1.0 gstreamer1.0-rtsp gstreamer1.0-tools '
                   'gstreamer1.0-plugins-base gstreamer1.0-plugins-good '
                   'gstreamer1.0-plugins-ugly')

# Element -> Debian package that ships it. textoverlay/timeoverlay are optional.
REQUIRED_ELEMENTS = {
    'videotestsrc': 'gstreamer1.0-plugins-base',
    'videoconvert': 'gstreamer1.0-plugins-base',
    'x264enc': 'gstreamer1.0-plugins-ugly',
    'rtph264pay': 'gstreamer1.0-plugins-good',
}
OVERLAY_ELEMENTS = ('textoverlay', 'timeoverlay')
SEQUENCE_ELEMENTS = {
    'multifilesrc': 'gstreamer1.0-plugins-good',
    'jpegdec': 'gstreamer1.0-plugins-good',
}

# videotestsrc patterns that look clearly different from each other and are cheap to encode
# (no noise patterns); streams beyond this list reuse them, told apart by the burnt-in name.
PATTERNS = ('smpte', 'ball', 'pinwheel', 'colors', 'checkers-8', 'circular', 'spokes',
            'gradient', 'bar', 'smpte75', 'zone-plate', 'blink')


def fail(message: str, code: int) -> NoReturn:
    """Print an error for people on stderr and exit with `code`."""
    print('rtsp_server: error: ' + message, file=sys.stderr, flush=True)
    sys.exit(code)


def import_gstreamer(sequences: bool = False):
    """Import Gst, GstRtspServer and GLib, or exit naming the Debian packages to install
    (with `sequences`, also the elements that play JPEG sequences)."""
    try:
        import gi
        gi.require_version('Gst', '1.0')
        gi.require_version('GstRtspServer', '1.0')
        from gi.repository import GLib, Gst, GstRtspServer
    except (ImportError, ValueError) as exc:
        fail('cannot import GStreamer RTSP server bindings into %s (%s). Install the Debian '
             'packages: sudo apt-get install %s' % (sys.executable, exc, DEBIAN_PACKAGES),
             EXIT_MISSING_DEPS)
    Gst.init(None)
    required = {**REQUIRED_ELEMENTS, **(SEQUENCE_ELEMENTS if sequences else {})}
    absent = [elem for elem in required if Gst.ElementFactory.find(elem) is None]
    if absent:
        packages = sorted({required[elem] for elem in absent})
        fail('GStreamer elements missing: %s. Install the Debian packages: sudo apt-get install '
             '%s' % (', '.join(absent), ' '.join(packages)), EXIT_MISSING_DEPS)
    return GLib, Gst, GstRtspServer


def auto_bitrate_kbps(width: int, height: int, fps: int, bits_per_pixel: float = 0.1) -> int:
    """A bit rate that keeps the picture clean: `bits_per_pixel` of every pixel shown."""
    return max(300, int(width * height * fps * bits_per_pixel / 1000))


def encoder(fps: int, bitrate_kbps: int) -> List[str]:
    """The elements from raw video to RTP, shared by both kinds of mount."""
    return ['videoconvert', 'video/x-raw,format=I420',
            'x264enc tune=zerolatency speed-preset=ultrafast key-int-max=%d bitrate=%d '
            'threads=1' % (max(1, fps), bitrate_kbps),
            'video/x-h264,profile=constrained-baseline',
            'rtph264pay name=pay0 pt=96 config-interval=-1']


def launch_line(index: int, width: int, height: int, fps: int, overlay: bool,
                bitrate_kbps: int = 0) -> str:
    """Return the gst-launch description of test-pattern stream `index`."""
    name = 'cam%d' % index
    pattern = PATTERNS[index % len(PATTERNS)]
    font_px = max(12, height // 10)
    parts = ['videotestsrc is-live=true pattern=%s' % pattern,
             'video/x-raw,format=I420,width=%d,height=%d,framerate=%d/1' % (width, height, fps)]
    if overlay:
        parts.append('textoverlay text="%s" valignment=top halignment=left shaded-background=true '
                     'font-desc="Sans Bold %dpx"' % (name, font_px))
        parts.append('timeoverlay valignment=bottom halignment=right shaded-background=true '
                     'font-desc="Sans %dpx"' % max(10, font_px // 2))
    parts += encoder(fps, bitrate_kbps or auto_bitrate_kbps(width, height, fps))
    return '( ' + ' ! '.join(parts) + ' )'


def sequence_line(location: str, fps: int, bitrate_kbps: int) -> str:
    """Return the gst-launch description of a looping JPEG sequence at `fps` (a non-live
    source: the RTSP server's sinks play it at the rate its timestamps say)."""
    parts = ['multifilesrc location="%s" loop=true caps="image/jpeg,framerate=%d/1"'
             % (location, fps), 'jpegdec']
    return '( ' + ' ! '.join(parts + encoder(fps, bitrate_kbps)) + ' )'


def parse_args(argv: Optional[List[str]]) -> argparse.Namespace:
    """Parse the command line."""
    parser = argparse.ArgumentParser(description='Serve live H.264 test streams over RTSP.')
    parser.add_argument('--port', type=int, default=8554,
                        help='TCP port; 0 picks a free one (default 8554)')
    parser.add_argument('--count', type=int, default=None,
                        help='number of test-pattern streams (default 4)')
    parser.add_argument('--sequence', action='append', default=[], metavar='PATTERN',
                        help='serve a looping JPEG sequence (a multifilesrc location such as '
                             '/path/%%05d.jpg) instead of a test pattern; once per mount')
    parser.add_argument('--bitrate', type=int, default=0, metavar='KBPS',
                        help='H.264 bit rate in kbit/s (default: from size and rate)')
    parser.add_argument('--width', type=int, default=640, help='frame width in px')
    parser.add_argument('--height', type=int, default=480, help='frame height in px')
    parser.add_argument('--fps', type=int, default=30, help='frames per second')
    parser.add_argument('--bind', default='127.0.0.1', help='address to listen on')
    parser.add_argument('--exit-on-stdin-eof', action='store_true',
                        help='stop when stdin closes (lets a parent process own the server)')
    parser.add_argument('--check', action='store_true',
                        help='only check that GStreamer and its plugins are usable, then exit')
    args = parser.parse_args(argv)
    if not 0 <= args.port <= 65535:
        parser.error('--port must be 0..65535, got %d' % args.port)
    if args.sequence and args.count is not None:
        parser.error('--count and --sequence exclude each other: the sequences are the streams')
    if args.count is None:
        args.count = len(args.sequence) or 4
    if args.count < 1:
        parser.error('--count must be >= 1, got %d' % args.count)
    for location in args.sequence:
        if '"' in location or '%' not in location:
            parser.error('--sequence must be a file pattern such as /path/%%05d.jpg without '
                         'double quotes, got %r' % location)
    if not 0 <= args.bitrate <= 100000:
        parser.error('--bitrate must be 0..100000 kbit/s, got %d' % args.bitrate)
    if args.width < 16 or args.height < 16 or args.width % 2 or args.height % 2:
        parser.error('--width/--height must be even and >= 16, got %dx%d'
                     % (args.width, args.height))
    if not 1 <= args.fps <= 240:
        parser.error('--fps must be 1..240, got %d' % args.fps)
    return args


def main(argv: Optional[List[str]] = None) -> int:
    """Run the server until SIGTERM/SIGINT; return the exit code."""
    args = parse_args(argv)
    GLib, Gst, GstRtspServer = import_gstreamer(sequences=bool(args.sequence) or args.check)
    overlay = all(Gst.ElementFactory.find(e) is not None for e in OVERLAY_ELEMENTS)
    if not overlay and not args.sequence:
        print('rtsp_server: warning: textoverlay/timeoverlay missing (gstreamer1.0-plugins-base '
              'with pango); streams carry no burnt-in name', file=sys.stderr, flush=True)
    if args.check:
        return 0

    server = GstRtspServer.RTSPServer()
    server.set_address(args.bind)
    server.set_service(str(args.port))
    mounts = server.get_mount_points()
    for index in range(args.count):
        factory = GstRtspServer.RTSPMediaFactory()
        if args.sequence:
            bitrate_kbps = args.bitrate or auto_bitrate_kbps(args.width, args.height, args.fps)
            factory.set_launch(sequence_line(args.sequence[index], args.fps, bitrate_kbps))
        else:
            factory.set_launch(launch_line(index, args.width, args.height, args.fps, overlay,
                                           args.bitrate))
        factory.set_shared(True)
        mounts.add_factory('/cam%d' % index, factory)

    try:
        # create_source binds the socket (with SO_REUSEADDR) and raises if that fails.
        source = server.create_source(None)
    except GLib.Error as exc:
        fail('cannot listen on %s:%d: %s (is the port taken by another process?)'
             % (args.bind, args.port, exc.message), EXIT_BIND_FAILED)
    source.attach(None)

    loop = GLib.MainLoop()

    def quit_loop(*_unused) -> bool:
        loop.quit()
        return GLib.SOURCE_REMOVE

    GLib.unix_signal_add(GLib.PRIORITY_HIGH, signal.SIGTERM, quit_loop)
    GLib.unix_signal_add(GLib.PRIORITY_HIGH, signal.SIGINT, quit_loop)
    if args.exit_on_stdin_eof:
        stdin_fd = sys.stdin.fileno()

        def stdin_ready(*_unused) -> bool:
            try:
                data = os.read(stdin_fd, 4096)
            except OSError:
                data = b''
            if not data:  # end of file: the parent closed its end or died
                loop.quit()
                return GLib.SOURCE_REMOVE
            return GLib.SOURCE_CONTINUE

        GLib.unix_fd_add_full(GLib.PRIORITY_DEFAULT, stdin_fd,
                              GLib.IOCondition.IN | GLib.IOCondition.HUP | GLib.IOCondition.ERR,
                              stdin_ready)

    print('READY rtsp://%s:%d' % (args.bind, server.get_bound_port()), flush=True)
    loop.run()
    source.destroy()
    return 0


if __name__ == '__main__':
    sys.exit(main())
