"""RTSP test bed: live H.264 test streams on loopback, and H.264 test clips on disk.

The streams come from GStreamer's RTSP server, whose Python bindings belong to Debian's own
/usr/bin/python3 and not to a virtual environment. `RtspTestServer` therefore runs the standalone
script rtsp_server.py (next to this file) with that interpreter as a child process. A stream is
either a synthetic test pattern or real footage: a cut of vtest.avi that footage.py renders
(`footage_server`), each frame marked with its source frame index (frame_code.py).
"""
import os
import selectors
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import IO, TYPE_CHECKING, List, Optional, Sequence, Union

if TYPE_CHECKING:
    from multicam_testbed.footage import Cut, RenderedCut

SERVER_SCRIPT = Path(__file__).with_name('rtsp_server.py')
DEFAULT_SYSTEM_PYTHON = '/usr/bin/python3'
SYSTEM_PYTHON_ENV = 'MULTICAM_GST_PYTHON'
DEBIAN_PACKAGES = ('python3-gi gir1.2-gst-rtsp-server-1.0 gstreamer1.0-rtsp gstreamer1.0-tools '
                   'gstreamer1.0-plugins-base gstreamer1.0-plugins-good '
                   'gstreamer1.0-plugins-ugly')
# Exit codes of rtsp_server.py.
EXIT_MISSING_DEPS = 3
EXIT_BIND_FAILED = 4

# ffmpeg lavfi sources usable as `pattern` in make_test_clip.
CLIP_PATTERNS = ('testsrc', 'testsrc2', 'smptebars', 'smptehdbars', 'rgbtestsrc', 'yuvtestsrc',
                 'pal75bars', 'pal100bars', 'colorspectrum')


class RtspServerError(RuntimeError):
    """The RTSP test server could not start or stopped unexpectedly."""


class ClipError(RuntimeError):
    """ffmpeg is missing or could not write a test clip."""


def system_python() -> str:
    """Return the interpreter that owns the GStreamer bindings ($MULTICAM_GST_PYTHON overrides)."""
    return os.environ.get(SYSTEM_PYTHON_ENV) or DEFAULT_SYSTEM_PYTHON


def _child_env() -> dict:
    """Environment for the system interpreter, without this venv's Python and library paths."""
    env = dict(os.environ)
    for name in ('PYTHONPATH', 'PYTHONHOME', 'VIRTUAL_ENV', 'PYTHONSTARTUP'):
        env.pop(name, None)
    prefix = os.path.realpath(sys.prefix)
    if sys.prefix != sys.base_prefix and env.get('LD_LIBRARY_PATH'):
        kept = [p for p in env['LD_LIBRARY_PATH'].split(os.pathsep)
                if p and not os.path.realpath(p).startswith(prefix + os.sep)]
        if kept:
            env['LD_LIBRARY_PATH'] = os.pathsep.join(kept)
        else:
            del env['LD_LIBRARY_PATH']
    return env


def gstreamer_problem(timeout_s: float = 30.0) -> Optional[str]:
    """Return why the RTSP server cannot run here (missing bindings or plugins), or None."""
    python = system_python()
    if not os.path.exists(python):
        return ('%s not found: the RTSP test bed needs Debian\'s Python with GStreamer. '
                'Install: sudo apt-get install %s' % (python, DEBIAN_PACKAGES))
    try:
        done = subprocess.run([python, '-I', str(SERVER_SCRIPT), '--check'], env=_child_env(),
                              stdin=subprocess.DEVNULL, capture_output=True, text=True,
                              timeout=timeout_s)
    except subprocess.TimeoutExpired:
        return '%s %s --check did not finish in %.0f s' % (python, SERVER_SCRIPT, timeout_s)
    if done.returncode != 0:
        return (done.stderr.strip() or 'exit code %d' % done.returncode) + (
            '' if 'apt-get' in done.stderr else ' (Debian packages: %s)' % DEBIAN_PACKAGES)
    return None


class RtspTestServer:
    """N live H.264 RTSP streams rtsp://HOST:PORT/cam0 ... /camN-1 served by a child process.

    Test patterns of width x height, or, with `sequences` (multifilesrc locations of JPEG
    files, one per stream: footage.RenderedCut.location), those sequences looped at `fps`;
    `width` and `height` then only size the automatic bit rate (`bitrate_kbps` 0).
    Use as a context manager, or call start() and stop(). port=0 lets the kernel pick a free
    port at the first start; restart() keeps that port so readers can reconnect to the same URL.
    """

    def __init__(self, count: int = 4, port: int = 0, width: int = 640, height: int = 480,
                 fps: int = 30, host: str = '127.0.0.1', start_timeout_s: float = 15.0,
                 sequences: Sequence[str] = (), bitrate_kbps: int = 0) -> None:
        self.sequences = [str(location) for location in sequences]
        if self.sequences:
            count = len(self.sequences)
        if count < 1:
            raise ValueError('count must be >= 1, got %r' % count)
        if not 0 <= port <= 65535:
            raise ValueError('port must be 0..65535 (0 = pick a free one), got %r' % port)
        self.bitrate_kbps = bitrate_kbps
        self.count = count
        self.width = width
        self.height = height
        self.fps = fps
        self.host = host
        self.start_timeout_s = start_timeout_s
        self._requested_port = port
        self._port: Optional[int] = None
        self._proc: Optional[subprocess.Popen] = None
        self._stderr: Optional[IO[bytes]] = None
        self._lock = threading.Lock()

    # -- life cycle -------------------------------------------------------------------------
    def start(self) -> 'RtspTestServer':
        """Spawn the server and wait until it listens; raise RtspServerError if it cannot."""
        with self._lock:
            if self.running:
                return self
            restarting = self._port is not None
            port = self._port if restarting else self._requested_port
            # Binding the same port right after a stop normally works at once (the server
            # sets SO_REUSEADDR, so TIME_WAIT does not matter); on a restart retry briefly
            # anyway in case the old socket is still closing. A taken port fails at once.
            deadline = time.monotonic() + (2.0 if restarting else 0.0)
            while True:
                try:
                    self._port = self._spawn(port)
                    return self
                except _BindFailed as exc:
                    if time.monotonic() >= deadline:
                        raise RtspServerError(str(exc)) from None
                    time.sleep(0.2)

    def stop(self, timeout_s: float = 5.0) -> None:
        """Stop the server: SIGTERM, wait, SIGKILL if it does not exit. Safe to call twice."""
        with self._lock:
            proc, self._proc = self._proc, None
            if proc is None:
                return
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout_s)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(timeout_s)
            for stream in (proc.stdin, proc.stdout):
                if stream is not None:
                    stream.close()
            if self._stderr is not None:
                self._stderr.close()
                self._stderr = None

    def restart(self) -> 'RtspTestServer':
        """Stop, then start again on the same port (every reader loses its connection)."""
        self.stop()
        return self.start()

    def __enter__(self) -> 'RtspTestServer':
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def __del__(self) -> None:
        proc = getattr(self, '_proc', None)
        if proc is not None and proc.poll() is None:
            proc.kill()

    # -- addresses ----------------------------------------------------------------------------
    @property
    def running(self) -> bool:
        """True while the server process is alive."""
        return self._proc is not None and self._proc.poll() is None

    @property
    def port(self) -> int:
        """The TCP port; known once the server has started (or when given explicitly)."""
        if self._port is not None:
            return self._port
        if self._requested_port:
            return self._requested_port
        raise RtspServerError('port not known yet: start() the server first (port=0 asks the '
                              'kernel for a free one at start)')

    def url(self, index: int) -> str:
        """Return the URL of stream `index` (0 .. count-1)."""
        if not 0 <= index < self.count:
            raise IndexError('stream index %d out of range 0..%d' % (index, self.count - 1))
        return 'rtsp://%s:%d/cam%d' % (self.host, self.port, index)

    @property
    def urls(self) -> List[str]:
        """URLs of all streams, in order."""
        return [self.url(i) for i in range(self.count)]

    def stderr_text(self) -> str:
        """What the server has written to stderr so far (GStreamer warnings, errors)."""
        if self._stderr is None:
            return ''
        self._stderr.flush()
        self._stderr.seek(0)
        return self._stderr.read().decode('utf-8', 'replace')

    # -- internals -----------------------------------------------------------------------------
    def _spawn(self, port: int) -> int:
        """Start one server process on `port`; return the port it listens on."""
        streams = ([arg for location in self.sequences for arg in ('--sequence', location)]
                   or ['--count', str(self.count)])
        command = [system_python(), '-I', str(SERVER_SCRIPT), '--port', str(port), *streams,
                   '--width', str(self.width), '--height', str(self.height),
                   '--fps', str(self.fps), '--bitrate', str(self.bitrate_kbps),
                   '--bind', self.host, '--exit-on-stdin-eof']
        stderr = tempfile.TemporaryFile()  # a file, so a chatty server never blocks on a pipe
        try:
            proc = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                    stderr=stderr, env=_child_env(), start_new_session=True)
        except OSError as exc:
            stderr.close()
            raise RtspServerError('cannot run %s: %s. The RTSP test bed needs Debian\'s Python '
                                  'with GStreamer: sudo apt-get install %s'
                                  % (command[0], exc, DEBIAN_PACKAGES)) from None
        line = _read_line(proc, self.start_timeout_s)
        if line.startswith('READY rtsp://'):
            self._proc, self._stderr = proc, stderr
            return int(line.rsplit(':', 1)[1])

        if proc.poll() is None:
            proc.kill()
        code = proc.wait()
        stderr.seek(0)
        err = stderr.read().decode('utf-8', 'replace').strip()
        stderr.close()
        for stream in (proc.stdin, proc.stdout):
            stream.close()
        if code == EXIT_BIND_FAILED:
            raise _BindFailed(err)
        reason = ('did not report READY within %.0f s' % self.start_timeout_s if code < 0
                  else 'exited with code %d' % code)
        raise RtspServerError('RTSP test server %s.\ncommand: %s\nstdout: %r\nstderr:\n%s'
                              % (reason, ' '.join(command), line, err or '(empty)'))


class _BindFailed(Exception):
    """The server could not bind its port (exit code EXIT_BIND_FAILED)."""


def _read_line(proc: subprocess.Popen, timeout_s: float) -> str:
    """Read the first stdout line of `proc` within `timeout_s`; '' on timeout or exit."""
    fd = proc.stdout.fileno()
    data = b''
    deadline = time.monotonic() + timeout_s
    with selectors.DefaultSelector() as selector:
        selector.register(fd, selectors.EVENT_READ)
        while b'\n' not in data:
            left = deadline - time.monotonic()
            if left <= 0 or not selector.select(left):
                return ''
            chunk = os.read(fd, 4096)
            if not chunk:
                break
            data += chunk
    return data.split(b'\n', 1)[0].decode('utf-8', 'replace').strip()


# Real footage plays at this many bits per pixel: x264 ultrafast at the test-pattern rate smears
# fine detail (people 30 px wide), which real detectors then miss.
FOOTAGE_BITS_PER_PIXEL = 0.4


def footage_server(cuts: Optional[Sequence['Cut']] = None, port: int = 0,
                   host: str = '127.0.0.1', say=print) -> 'RtspTestServer':
    """A server (not started) of real-footage streams, one per cut (default footage.DEMO_CUTS),
    rendered into the cache first where needed. Raises footage.FootageError when the footage
    is missing (the message names the command that fetches it)."""
    from multicam_testbed import footage

    rendered = footage.prepare(footage.DEMO_CUTS if cuts is None else cuts, say=say)
    return _footage_server(rendered, port, host)


def _footage_server(rendered: Sequence['RenderedCut'], port: int, host: str) -> 'RtspTestServer':
    width = max(cut.width for cut in rendered)
    height = max(cut.height for cut in rendered)
    fps = rendered[0].fps
    bitrate = int(width * height * fps * FOOTAGE_BITS_PER_PIXEL / 1000)
    return RtspTestServer(port=port, width=width, height=height, fps=fps, host=host,
                          sequences=[cut.location for cut in rendered], bitrate_kbps=bitrate)


def serve_forever(count: int = 4, port: int = 8554, width: int = 640, height: int = 480,
                  fps: int = 30, footage: bool = False) -> int:
    """Serve test streams until Ctrl-C or SIGTERM; return the process exit code. `footage`:
    the four demo cameras cut from vtest.avi instead of `count` test patterns."""
    try:
        if footage:
            server = footage_server(port=port)
            width, height, fps, count = server.width, server.height, server.fps, server.count
        else:
            server = RtspTestServer(count=count, port=port, width=width, height=height, fps=fps)
        server.start()
    except (RtspServerError, ValueError, RuntimeError) as exc:
        print('multicam-ros test-streams: %s' % exc, file=sys.stderr, flush=True)
        return 1

    def on_signal(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    # Set both explicitly: a shell starting us in the background may have ignored SIGINT.
    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    code = 0
    try:
        what = 'cut from vtest.avi, up to' if footage else ''
        print('Serving %d live H.264 test streams (%s%dx%d at %d fps):'
              % (count, what and what + ' ', width, height, fps), flush=True)
        for url in server.urls:
            print('  ' + url, flush=True)
        print('View one with: ffplay -rtsp_transport tcp %s' % server.url(0), flush=True)
        print('Press Ctrl-C to stop.', flush=True)
        while server.running:
            time.sleep(0.2)
        print('multicam-ros test-streams: the server stopped unexpectedly:\n%s'
              % server.stderr_text(), file=sys.stderr, flush=True)
        code = 1
    except KeyboardInterrupt:
        print('Stopping.', flush=True)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        server.stop()
    return code


def make_test_clip(path: Union[str, os.PathLike], seconds: float = 5.0, width: int = 640,
                   height: int = 480, fps: int = 30, pattern: str = 'testsrc2',
                   ffmpeg: Optional[str] = None) -> Path:
    """Write an H.264 test clip with ffmpeg (container from the suffix, e.g. .mp4 or .mkv).

    `pattern` is an ffmpeg lavfi source (see CLIP_PATTERNS); testsrc/testsrc2 show a running
    frame counter, so consecutive frames differ. One keyframe per second, no B-frames, yuv420p.
    """
    if pattern not in CLIP_PATTERNS:
        raise ValueError('pattern must be one of %s, got %r' % (', '.join(CLIP_PATTERNS), pattern))
    if seconds <= 0 or width < 16 or height < 16 or width % 2 or height % 2 or fps < 1:
        raise ValueError('need seconds > 0, even width/height >= 16 and fps >= 1; got '
                         'seconds=%r width=%r height=%r fps=%r' % (seconds, width, height, fps))
    exe = ffmpeg or shutil.which('ffmpeg')
    if exe is None:
        raise ClipError('ffmpeg not found on PATH (Debian: sudo apt-get install ffmpeg)')
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    source = '%s=size=%dx%d:rate=%d:duration=%s' % (pattern, width, height, fps, seconds)
    command = [exe, '-hide_banner', '-loglevel', 'error', '-nostdin', '-y',
               '-f', 'lavfi', '-i', source,
               '-c:v', 'libx264', '-preset', 'ultrafast', '-tune', 'zerolatency',
               '-pix_fmt', 'yuv420p', '-g', str(fps), '-bf', '0', str(out)]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0 or not out.exists():
        raise ClipError('ffmpeg failed (exit %d): %s\ncommand: %s'
                        % (done.returncode, done.stderr.strip(), ' '.join(command)))
    return out
