"""`multicam-ros view`: every camera's annotated picture on one local web page, live. ROS-free.

The ROS side (ros/viewer_node.py) hands each received image to its camera's `CameraFeed`; this
module keeps the newest picture of each camera and serves them over HTTP:

- `/`                the page: one tile per camera in a grid, with its name, fps and latency,
                     and NO SIGNAL when the camera is down (viewer_page.py);
- `/live`            what the page reads: ONE connection carrying every camera's pictures and
                     a status report each second (browsers open at most six connections to a
                     host, so one stream per camera would stall past six cameras). Framing:
                     4-byte big-endian header length, a JSON header, then `length` body bytes
                     (`{"kind": "jpeg", "camera": i, "length": n}` + the JPEG, or
                     `{"kind": "status", "length": 0, "cameras": [...]}`);
- `/stream/<i>`      camera i as plain MJPEG (multipart/x-mixed-replace), for other clients;
- `/snapshot/<i>`    camera i's newest picture as one JPEG;
- `/api/status`      the status report as JSON.

No work without a watcher: a camera counts as watched while a connection streams it, the ROS
side subscribes to a camera's images only while it is watched (which is also what makes the
detector draw them, annotate: auto), and a picture is JPEG-encoded only when a watcher asks for
it, once however many watchers there are. Pictures are never queued: a slow browser skips to
the newest one.

Camera states: `live` (pictures arrive), `waiting` (watched, nothing yet), `no signal` (the
camera's own diagnostics say it is not streaming, or no picture for NO_SIGNAL_AFTER_S, longer
when the camera is slow), `idle` (nobody watches).
"""
import json
import re
import socket
import struct
import threading
import time
from collections import deque
from dataclasses import asdict, dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable, Deque, Dict, Iterator, List, Optional, Sequence, Tuple

import cv2
import numpy as np

from multicam_ros.core.imaging import make_no_signal_frame
from multicam_ros.system.viewer_page import page_html

DEFAULT_HOST = '127.0.0.1'
DEFAULT_PORT = 8080
NO_SIGNAL_AFTER_S = 3.0
SLOW_CAMERA_FACTOR = 4.0  # no picture for this many of its usual intervals: NO SIGNAL
CAMERA_STATE_FRESH_S = 5.0  # a camera's diagnostics older than this say nothing
RATE_WINDOW_S = 3.0
STATUS_PERIOD_S = 1.0
WAIT_SLICE_S = 0.5  # how often a streaming connection looks up from waiting
JPEG_QUALITY = 80
MAX_WIDTH_PX = 960  # pictures wider than this are scaled down for the browser
BOUNDARY = 'multicam-ros-frame'
STREAMING = 'streaming'  # the camera_node state that means pictures (core/capture.py)


@dataclass(frozen=True)
class TileStatus:
    """What one tile shows."""

    camera: str  # the namespace, e.g. /cam0
    label: str  # what people read, e.g. cam0
    state: str  # live, waiting, no signal, idle
    detail: str  # why, for people (e.g. 'reconnecting', 'no picture for 4 s')
    fps: float  # pictures received per second over the last RATE_WINDOW_S
    latency_ms: Optional[float]  # capture -> received here, median of the window
    width: int
    height: int
    watchers: int


def camera_label(namespace: str) -> str:
    """/robot/front -> robot/front: what a tile calls a camera."""
    return namespace.strip('/') or namespace


class CameraFeed:
    """The newest picture of one camera, its meters and its watchers. Thread-safe: `put` comes
    from the ROS side, everything else from the HTTP threads."""

    def __init__(self, camera: str, on_news: Callable[[], None] = lambda: None,
                 clock: Callable[[], float] = time.monotonic, quality: int = JPEG_QUALITY,
                 max_width_px: int = MAX_WIDTH_PX) -> None:
        self.camera = camera
        self.label = camera_label(camera)
        self._on_news = on_news  # tells the hub: "some camera has a new picture"
        self._clock = clock
        self._quality = quality
        self._max_width_px = max_width_px
        self._lock = threading.Lock()
        self._encode_lock = threading.Lock()
        self._image: Optional[np.ndarray] = None
        self._seq = 0
        self._jpeg: Tuple[int, bytes] = (0, b'')
        self._arrivals_s: Deque[float] = deque()
        self._intervals_s: Deque[float] = deque(maxlen=10)  # between the last pictures
        self._latencies_s: Deque[Tuple[float, float]] = deque()
        self._last_s: Optional[float] = None
        self._watchers = 0
        self._watch_started_s = 0.0
        self._camera_state: Optional[Tuple[str, float]] = None
        self._size = (0, 0)
        self.encoded = 0  # JPEGs made: work done for watchers, nothing without them

    # -- the ROS side --------------------------------------------------------------------------

    def put(self, image_bgr: np.ndarray, latency_s: Optional[float]) -> None:
        """The newest picture (H x W x 3 BGR, kept by reference: do not change it later)."""
        now_s = self._clock()
        with self._lock:
            self._image = image_bgr
            self._seq += 1
            if self._last_s is not None:
                self._intervals_s.append(now_s - self._last_s)
            self._last_s = now_s
            self._size = (image_bgr.shape[1], image_bgr.shape[0])
            self._arrivals_s.append(now_s)
            if latency_s is not None:
                self._latencies_s.append((now_s, latency_s))
            self._trim(now_s)
        self._on_news()

    def note_camera_state(self, state: str) -> None:
        """The camera's own state from its diagnostics (a camera_node's `state`)."""
        with self._lock:
            self._camera_state = (state, self._clock())

    @property
    def watchers(self) -> int:
        with self._lock:
            return self._watchers

    def watch(self) -> None:
        """A connection starts streaming this camera. The first one starts a fresh watch: a
        picture from an earlier one says nothing about the camera now."""
        with self._lock:
            if self._watchers == 0:
                self._image, self._last_s = None, None
                self._arrivals_s.clear()
                self._intervals_s.clear()
                self._latencies_s.clear()
                self._watch_started_s = self._clock()
            self._watchers += 1

    def unwatch(self) -> None:
        with self._lock:
            self._watchers = max(0, self._watchers - 1)

    # -- the HTTP side -------------------------------------------------------------------------

    def _trim(self, now_s: float) -> None:
        while self._arrivals_s and self._arrivals_s[0] < now_s - RATE_WINDOW_S:
            self._arrivals_s.popleft()
        while self._latencies_s and self._latencies_s[0][0] < now_s - RATE_WINDOW_S:
            self._latencies_s.popleft()

    @property
    def seq(self) -> int:
        """Number of the newest picture (0: none yet)."""
        with self._lock:
            return self._seq if self._image is not None else 0

    def jpeg(self) -> Tuple[int, bytes]:
        """(seq, JPEG) of the newest picture, encoded at most once per picture; (0, b'')
        when there is none."""
        with self._encode_lock:
            with self._lock:
                seq, image = self._seq, self._image
            if image is None:
                return 0, b''
            if self._jpeg[0] != seq:
                self._jpeg = (seq, encode_jpeg(image, self._quality, self._max_width_px))
                self.encoded += 1
            return self._jpeg

    def status(self) -> TileStatus:
        """The tile's state and figures now (see the module docstring)."""
        now_s = self._clock()
        with self._lock:
            self._trim(now_s)
            arrivals = list(self._arrivals_s)
            latencies = [latency for _, latency in self._latencies_s]
            last_s, watchers, camera_state = self._last_s, self._watchers, self._camera_state
            usual_interval_s = float(np.median(self._intervals_s)) if self._intervals_s else 0.0
            watch_started_s, (width, height) = self._watch_started_s, self._size
        fps = 0.0
        if len(arrivals) >= 3:
            fps = (len(arrivals) - 1) / max(arrivals[-1] - arrivals[0], 1e-6)
        elif usual_interval_s > 0:  # a slow camera: fewer pictures than the window needs
            fps = 1.0 / usual_interval_s
        latency_ms = float(np.median(latencies)) * 1000.0 if latencies else None
        timeout_s = max(NO_SIGNAL_AFTER_S, SLOW_CAMERA_FACTOR * usual_interval_s)
        down = camera_state is not None and camera_state[0] != STREAMING \
            and now_s - camera_state[1] <= CAMERA_STATE_FRESH_S
        if watchers == 0:
            state, detail = 'idle', 'nobody watches'
        elif down:
            state, detail = 'no signal', f'camera {camera_state[0]}'
        elif last_s is not None and now_s - last_s <= timeout_s:
            state, detail = 'live', ''
        elif last_s is not None:
            state, detail = 'no signal', f'no picture for {now_s - last_s:.0f} s'
        elif now_s - watch_started_s > timeout_s:
            state, detail = 'no signal', f'no picture in {now_s - watch_started_s:.0f} s'
        else:
            state, detail = 'waiting', 'waiting for pictures'
        if state != 'live':
            fps, latency_ms = 0.0, None
        return TileStatus(self.camera, self.label, state, detail, round(fps, 1),
                          None if latency_ms is None else round(latency_ms, 1), width, height,
                          watchers)


def encode_jpeg(image_bgr: np.ndarray, quality: int = JPEG_QUALITY,
                max_width_px: int = MAX_WIDTH_PX) -> bytes:
    """A JPEG of the picture, scaled down to `max_width_px` when wider."""
    height, width = image_bgr.shape[:2]
    if max_width_px and width > max_width_px:
        size = (max_width_px, max(1, round(height * max_width_px / width)))
        image_bgr = cv2.resize(image_bgr, size, interpolation=cv2.INTER_AREA)
    ok, data = cv2.imencode('.jpg', image_bgr, [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        raise ValueError('JPEG encoding failed')
    return data.tobytes()


class ViewerHub:
    """Every camera's feed, in the order of the page's tiles."""

    def __init__(self, cameras: Sequence[str], clock: Callable[[], float] = time.monotonic,
                 quality: int = JPEG_QUALITY, max_width_px: int = MAX_WIDTH_PX) -> None:
        if not cameras:
            raise ValueError('the viewer needs at least one camera')
        self._changed = threading.Condition()
        self._version = 0  # counts new pictures of any camera
        self.feeds = [CameraFeed(camera, self._news, clock, quality, max_width_px)
                      for camera in cameras]
        self._by_camera = {feed.camera: feed for feed in self.feeds}
        self.stopping = threading.Event()

    def _news(self) -> None:
        with self._changed:
            self._version += 1
            self._changed.notify_all()

    @property
    def version(self) -> int:
        """Changes with every new picture: read it before looking, then `wait(since=...)`."""
        with self._changed:
            return self._version

    @property
    def cameras(self) -> List[str]:
        return [feed.camera for feed in self.feeds]

    def feed(self, camera: str) -> CameraFeed:
        return self._by_camera[camera]

    def watched(self) -> List[str]:
        """The cameras that some connection streams now."""
        return [feed.camera for feed in self.feeds if feed.watchers > 0]

    def status(self) -> List[TileStatus]:
        return [feed.status() for feed in self.feeds]

    def wait(self, since: int, timeout_s: float) -> None:
        """Sleep until `version` is no longer `since` (a new picture came), the hub stops, or
        `timeout_s` passed."""
        with self._changed:
            self._changed.wait_for(lambda: self._version != since or self.stopping.is_set(),
                                   timeout_s)

    def stop(self) -> None:
        """Wake and end every streaming connection."""
        self.stopping.set()
        with self._changed:
            self._changed.notify_all()


def placeholder_jpeg(label: str, text: str, width: int = 640, height: int = 480) -> bytes:
    """A picture that says `text` (NO SIGNAL, waiting ...) for clients that only see pictures."""
    return encode_jpeg(make_no_signal_frame(width, height, text=text, detail=label))


class _Handler(BaseHTTPRequestHandler):
    """Routes of the module docstring. `server` is a _Server."""

    server: '_Server'
    protocol_version = 'HTTP/1.1'

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - stdlib's name
        pass  # a request log line per picture would drown everything else

    def do_GET(self) -> None:  # noqa: N802 - stdlib's name
        path = self.path.split('?', 1)[0]
        hub = self.server.hub
        try:
            if path in ('/', '/index.html'):
                self._send(200, 'text/html; charset=utf-8', self.server.page)
            elif path == '/api/status':
                self._send(200, 'application/json', json.dumps(_status_report(hub)).encode())
            elif path == '/live':
                self._live()
            elif path == '/favicon.ico':
                self._send(204, 'image/x-icon', b'')
            else:
                match = re.fullmatch(r'/(stream|snapshot)/(\d+)(?:\.jpe?g|\.mjpe?g)?', path)
                if match is None or int(match.group(2)) >= len(hub.feeds):
                    self._send(404, 'text/plain', b'not found\n')
                elif match.group(1) == 'stream':
                    self._mjpeg(hub.feeds[int(match.group(2))])
                else:
                    self._snapshot(hub.feeds[int(match.group(2))])
        except (BrokenPipeError, ConnectionResetError, socket.timeout):
            pass  # the browser went away

    def _send(self, code: int, content_type: str, body: bytes) -> None:
        self.send_response(code)
        self.send_header('Content-Type', content_type)
        self.send_header('Content-Length', str(len(body)))
        self.send_header('Cache-Control', 'no-store')
        self.end_headers()
        self.wfile.write(body)

    def _stream_headers(self, content_type: str) -> None:
        self.close_connection = True
        self.send_response(200)
        self.send_header('Content-Type', content_type)
        self.send_header('Cache-Control', 'no-store')
        self.send_header('Connection', 'close')
        self.end_headers()

    def _live(self) -> None:
        hub = self.server.hub
        for feed in hub.feeds:
            feed.watch()
        try:
            self._stream_headers('application/octet-stream')
            sent = [0] * len(hub.feeds)
            next_status_s = 0.0
            while not hub.stopping.is_set():
                version = hub.version
                now_s = time.monotonic()
                if now_s >= next_status_s:
                    next_status_s = now_s + STATUS_PERIOD_S
                    self._message({'kind': 'status', **_status_report(hub)})
                for index, feed in enumerate(hub.feeds):
                    if feed.seq > sent[index]:
                        sent[index], data = feed.jpeg()
                        if data:
                            self._message({'kind': 'jpeg', 'camera': index}, data)
                self.wfile.flush()
                hub.wait(version, min(WAIT_SLICE_S, max(0.0, next_status_s - time.monotonic())))
        finally:
            for feed in hub.feeds:
                feed.unwatch()

    def _message(self, header: dict, body: bytes = b'') -> None:
        encoded = json.dumps({**header, 'length': len(body)}).encode()
        self.wfile.write(struct.pack('>I', len(encoded)) + encoded + body)

    def _mjpeg(self, feed: CameraFeed) -> None:
        hub = self.server.hub
        feed.watch()
        try:
            self._stream_headers(f'multipart/x-mixed-replace; boundary={BOUNDARY}')
            sent, placeholder_s = 0, 0.0
            while not hub.stopping.is_set():
                version = hub.version
                if feed.seq > sent:
                    sent, data = feed.jpeg()
                    if data:
                        self._part(data)
                elif time.monotonic() - placeholder_s >= 1.0:
                    status = feed.status()
                    if status.state != 'live':  # keep the connection and the picture honest
                        placeholder_s = time.monotonic()
                        text = 'NO SIGNAL' if status.state == 'no signal' else 'waiting'
                        self._part(self.server.placeholder(feed.label, text))
                hub.wait(version, WAIT_SLICE_S)
        finally:
            feed.unwatch()

    def _part(self, jpeg: bytes) -> None:
        self.wfile.write(f'--{BOUNDARY}\r\nContent-Type: image/jpeg\r\n'
                         f'Content-Length: {len(jpeg)}\r\n\r\n'.encode() + jpeg + b'\r\n')
        self.wfile.flush()

    def _snapshot(self, feed: CameraFeed, timeout_s: float = 5.0) -> None:
        feed.watch()
        try:
            deadline_s = time.monotonic() + timeout_s
            while feed.seq == 0 and time.monotonic() < deadline_s:
                self.server.hub.wait(self.server.hub.version, WAIT_SLICE_S)
            _, data = feed.jpeg()
        finally:
            feed.unwatch()
        if data:
            self._send(200, 'image/jpeg', data)
        else:
            self._send(503, 'text/plain', f'no picture from {feed.camera}\n'.encode())


def _status_report(hub: ViewerHub) -> dict:
    return {'cameras': [asdict(status) for status in hub.status()]}


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: Tuple[str, int], hub: ViewerHub, page: bytes) -> None:
        family = socket.AF_INET6 if ':' in address[0] else socket.AF_INET
        self.address_family = family
        super().__init__(address, _Handler)
        self.hub = hub
        self.page = page
        self._placeholders: Dict[Tuple[str, str], bytes] = {}
        self._lock = threading.Lock()

    def placeholder(self, label: str, text: str) -> bytes:
        with self._lock:
            key = (label, text)
            if key not in self._placeholders:
                self._placeholders[key] = placeholder_jpeg(label, text)
            return self._placeholders[key]


class ViewerServer:
    """The HTTP side of the viewer on (host, port): start(), url, close()."""

    def __init__(self, hub: ViewerHub, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT,
                 title: str = 'multicam_ros live view') -> None:
        self.hub = hub
        self.host = host
        self.requested_port = port
        self.title = title
        self._server: Optional[_Server] = None
        self._thread: Optional[threading.Thread] = None

    def start(self) -> 'ViewerServer':
        """Bind and serve in a thread; OSError (e.g. the port is taken) when it cannot bind."""
        page = page_html(self.title, [feed.label for feed in self.hub.feeds]).encode()
        self._server = _Server((self.host, self.requested_port), self.hub, page)
        self._thread = threading.Thread(target=self._server.serve_forever,
                                        kwargs={'poll_interval': 0.2}, daemon=True,
                                        name='viewer-http')
        self._thread.start()
        return self

    @property
    def port(self) -> int:
        """The bound port (the kernel's pick when asked for 0)."""
        if self._server is None:
            return self.requested_port
        return self._server.server_address[1]

    @property
    def url(self) -> str:
        host = f'[{self.host}]' if ':' in self.host else self.host
        return f'http://{host}:{self.port}/'

    def close(self) -> None:
        """End every connection and stop serving."""
        self.hub.stop()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=2.0)


def is_loopback(host: str) -> bool:
    """True for addresses that only this machine reaches (127.0.0.0/8, ::1, localhost)."""
    return host in ('localhost', '::1') or host.startswith('127.')


def loopback_warning(host: str) -> str:
    """What to say when the page is served beyond this machine ('' on loopback)."""
    if is_loopback(host):
        return ''
    return (f'warning: serving the live view on {host}: anyone who can reach this address sees '
            'every camera (there is no login)')


def read_live(stream, limit: int = 0) -> Iterator[Tuple[dict, bytes]]:
    """The messages of a `/live` response (a file-like object of bytes), for tests and tools:
    (header, body) pairs, at most `limit` of them (0: until the stream ends)."""
    count = 0
    while not limit or count < limit:
        size = stream.read(4)
        if len(size) < 4:
            return
        header = json.loads(stream.read(struct.unpack('>I', size)[0]))
        body = stream.read(header['length']) if header['length'] else b''
        yield header, body
        count += 1
