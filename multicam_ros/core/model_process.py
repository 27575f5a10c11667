"""The model in a process of its own. ROS-free.

The detector node starts one child process that holds the model and the inference thread: it
takes each camera's newest frame from shared memory, from the camera_node's own channel or from
a channel the node writes with the frames it receives on image_raw (`forward_channels`; over the
pipe where shared memory cannot be used), runs the batches, and sends back each frame's
detections. For the cameras whose image_annotated the node draws, it also writes each frame it
ran into a channel of the node's choosing (`pixel_channels`), where the node finds it by its
stamp: a camera's own slots may be rewritten long before a slow model's result comes. The node
keeps everything ROS: subscriptions, tracking, messages, drawing, diagnostics.

Why (bench/NOTES.md, "the GIL convoy"): in one process, every torch call of the inference thread
gives the GIL up for a few microseconds, and a thread of the node with work to do (tracking and
publishing results, receiving image_raw) takes it then and keeps it until it blocks or the
switch interval ends; the model's batch took twice as long as alone. In its own process the
model has a GIL to itself.

The pipe carries pickled tuples:
- node -> model: ('path', camera, CAMERA_CHANNEL | FORWARD_CHANNEL | None): which channel to
  take `camera` from, if any; ('frame', camera, InputFrame): a frame from image_raw where it has
  no forward channel; ('pixels', cameras): write the frames of these cameras to their pixel
  channels; ('stop',).
- model -> node: ('ready', ModelInfo) or ('failed', kind, text), once; then ('results',
  [FrameResult, ...]) per batch, ('stats', ModelStats) every STATS_PERIOD_S, ('log', level,
  logger name, text) for the model side's log records.

Lifetime: the child ignores SIGINT and SIGTERM (a Ctrl-C in a terminal reaches the whole process
group; the node stops its child itself) and ends when its pipe closes, that is when the node's
process ends however it ends (the kernel closes the node's end; no other process holds it).
Not the kernel's parent-death signal: that fires when the *thread* that started the child ends,
which need not be the node's end.
"""
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Callable, Dict, FrozenSet, List, Optional, Sequence, Tuple

from multicam_ros.core.batching import BatchCollector, CameraCounts
from multicam_ros.core.frames import InputFrame, host_pixels
from multicam_ros.core.models.base import Detections, ModelConfig
from multicam_ros.core.settings import ConfigError
from multicam_ros.core.shm_frames import FrameWriter

_LOG = logging.getLogger(__name__)
_CORE_LOGGER = 'multicam_ros'  # every core module's logger is under it
STATS_PERIOD_S = 0.5
INFERENCE_PERCENTS = (50, 95, 100)  # of the last batches' times, in ModelStats (100: the longest)
HANDOVER_PERCENTS = (95, 100)
START_TIMEOUT_S = 600.0  # loading a model: first CUDA start, torchvision weights from disk
STOP_TIMEOUT_S = 1.5
CAMERA_CHANNEL = 'camera'  # the camera_node's own channel
FORWARD_CHANNEL = 'forward'  # the node's channel of the camera's image_raw frames


@dataclass(frozen=True)
class ModelInfo:
    """What the node needs to know about the loaded model."""

    description: str
    device: str
    class_names: Tuple[str, ...]
    pid: int


@dataclass(frozen=True)
class FrameResult:
    """One frame's detections, with what the node needs of the frame."""

    stamp_ns: int
    frame_id: str
    received_s: float  # time.monotonic() when the frame was taken (one clock for all processes)
    detections: Detections
    shared: bool  # taken from shared memory (else handed over by the node)
    skipped: int = 0  # frames the camera wrote to shared memory since the last one taken


@dataclass(frozen=True)
class ModelStats:
    """The model side's counters, sent every STATS_PERIOD_S."""

    batches: dict  # InferenceWorker.batch_summary()
    inference_ms: Dict[int, float]  # percentile (50, 95, 100) -> ms, of a batch's inference
    handover_ms: Dict[int, float]  # percentile (95, 100) -> ms, of handing its results over
    memory_bytes: int
    cuda_memory_mb: Dict[str, float]  # cuda_allocated_mb, cuda_reserved_mb (CUDA only)
    counts: Dict[str, CameraCounts]  # per camera, BatchCollector.counts
    shared: Dict[str, object] = field(default_factory=dict)  # per camera, SharedCounts


# Before the model side's first counters: nothing yet.
NO_STATS = ModelStats(batches={'batches': 0, 'mean': 0.0, 'max': 0, 'histogram': {}, 'errors': 0},
                      inference_ms=dict.fromkeys(INFERENCE_PERCENTS, float('nan')),
                      handover_ms=dict.fromkeys(HANDOVER_PERCENTS, float('nan')),
                      memory_bytes=0, cuda_memory_mb={}, counts={})


@dataclass(frozen=True)
class _Spec:
    """Everything the child needs, sent to it once."""

    model: ModelConfig
    cameras: Tuple[str, ...]
    channels: Dict[str, str]  # camera -> its camera_node's channel; empty: none
    forward_channels: Dict[str, str]  # camera -> the node's channel of its image_raw frames
    pixel_channels: Dict[str, str]  # camera -> where to write its frames for drawing
    max_batch_size: int
    max_pixels: int
    max_bytes: int
    log_level: int


class ModelProcess:
    """The node's side: start the child, hand it frames and choices, receive its results.

    `on_results(camera_results)` gets each batch's [(camera, FrameResult)] on the receiving
    thread (keep it short: hand the results on); `on_exit(text)` is called once if the child
    ends while nobody asked it to stop.
    """

    def __init__(self, model: ModelConfig, cameras: Sequence[str], max_batch_size: int,
                 on_results: Callable[[List[Tuple[str, FrameResult]]], None],
                 on_exit: Callable[[str], None], channels: Optional[Dict[str, str]] = None,
                 forward_channels: Optional[Dict[str, str]] = None,
                 pixel_channels: Optional[Dict[str, str]] = None,
                 max_pixels: int = 2**31 - 1, max_bytes: int = 2**31 - 1) -> None:
        self._spec = _Spec(model, tuple(cameras), dict(channels or {}),
                           dict(forward_channels or {}), dict(pixel_channels or {}),
                           max_batch_size, max_pixels, max_bytes,
                           logging.getLogger(_CORE_LOGGER).getEffectiveLevel())
        self._on_results = on_results
        self._on_exit = on_exit
        self._process = None
        self._link: Optional[_Link] = None
        self._stats = NO_STATS
        self._stopping = False
        self._pixels: FrozenSet[str] = frozenset()
        self._receiver: Optional[threading.Thread] = None

    def start(self, timeout_s: float = START_TIMEOUT_S) -> ModelInfo:
        """Start the child and wait until its model is loaded. ConfigError (the child's message,
        naming the setting) when the model settings cannot work, RuntimeError for any other
        failure. Waits in short steps, so that a stop signal interrupts it."""
        # A new interpreter, not a fork of this process and its DDS threads; its end of the
        # socket pair is its only inherited descriptor besides stdin, stdout and stderr.
        mine, theirs = socket.socketpair()
        env = dict(os.environ)  # and this very copy of the package first
        package_root = os.path.dirname(os.path.dirname(os.path.dirname(__file__)))
        env['PYTHONPATH'] = os.pathsep.join(
            [package_root] + ([env['PYTHONPATH']] if env.get('PYTHONPATH') else []))
        with mine, theirs:
            self._process = subprocess.Popen(
                [sys.executable, '-m', __name__, str(theirs.fileno())],
                pass_fds=[theirs.fileno()], env=env, stdin=subprocess.DEVNULL)
            self._link = _Link(Connection(os.dup(mine.fileno())))
        conn = self._link.conn
        conn.send(self._spec)
        deadline = time.monotonic() + timeout_s
        message = ('log',)
        while message[0] == 'log':  # the model side's log lines while it loads, then its word
            while not conn.poll(0.1):
                if self._process.poll() is not None:
                    raise RuntimeError(f'the model process ended while starting (exit code '
                                       f'{self._process.returncode})')
                if time.monotonic() > deadline:
                    raise RuntimeError('the model process did not load the model in '
                                       f'{timeout_s:g} s')
            try:
                message = conn.recv()
            except EOFError:
                raise RuntimeError('the model process ended while starting (exit code '
                                   f'{self._process.wait()})') from None
            if message[0] == 'log':
                _emit(message)
        if message[0] == 'failed':
            _, kind, text = message
            raise ConfigError(text) if kind == 'config' else RuntimeError(text)
        info = message[1]
        self._receiver = threading.Thread(target=self._receive, name='model results',
                                          daemon=True)
        self._receiver.start()
        return info

    def use_channel(self, camera: str, which: Optional[str]) -> None:
        """Take `camera` from its CAMERA_CHANNEL, its FORWARD_CHANNEL, or (None) only from
        `put`."""
        self._send(('path', camera, which))

    def put(self, camera: str, frame: InputFrame) -> None:
        """A frame for the model over the pipe (image_raw where it has no forward channel;
        pickled, about 8 ms of the caller's CPU for a 720p frame); a numpy image."""
        self._send(('frame', camera, frame))

    def write_pixels_of(self, cameras: FrozenSet[str]) -> None:
        """Have the frames of `cameras` written to their pixel channels (sent on change)."""
        if cameras != self._pixels:
            self._pixels = cameras
            self._send(('pixels', cameras))

    def stats(self) -> ModelStats:
        """The latest counters from the model side (NO_STATS before the first)."""
        return self._stats

    @property
    def pid(self) -> Optional[int]:
        return None if self._process is None else self._process.pid

    def stop(self, timeout_s: float = STOP_TIMEOUT_S) -> None:
        """Stop the child (it exits on its own within `timeout_s`, else it is killed)."""
        self._stopping = True
        if self._process is None:
            return
        self._send(('stop',))
        try:
            self._process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait(1.0)
        if self._receiver is not None:
            self._receiver.join(1.0)
        self._link.conn.close()

    def _send(self, message: tuple) -> None:
        if self._link is not None:
            self._link.send(message)  # False: gone (the receiving thread says so) or stopped

    def _receive(self) -> None:
        while True:
            try:
                message = self._link.conn.recv()
            except (EOFError, OSError):
                break
            kind = message[0]
            if kind == 'results':
                try:
                    self._on_results(message[1])
                except Exception:  # noqa: BLE001 - the next batch's results still come
                    _LOG.exception('handling the model\'s results failed')
            elif kind == 'stats':
                self._stats = message[1]
            elif kind == 'log':
                _emit(message)
        if not self._stopping:
            try:
                code = self._process.wait(1.0)
            except subprocess.TimeoutExpired:
                code = None
            self._on_exit(f'the model process (pid {self._process.pid}) ended unexpectedly '
                          f'(exit code {code})')


def _emit(message: tuple) -> None:
    _, level, name, text = message
    logging.getLogger(name).log(level, '%s', text)


# -- the child ---------------------------------------------------------------------------------

class _Link:
    """One end of the pipe, sent on by several threads."""

    def __init__(self, conn) -> None:
        self.conn = conn
        self._lock = threading.Lock()

    def send(self, message: tuple) -> bool:
        with self._lock:
            try:
                self.conn.send(message)
                return True
            except OSError:  # the other end is gone, or this one was closed
                return False


class _LogToParent(logging.Handler):
    def __init__(self, link: _Link) -> None:
        super().__init__()
        self._link = link

    def emit(self, record: logging.LogRecord) -> None:
        self._link.send(('log', record.levelno, record.name, record.getMessage()))


def serve(conn: Connection, spec: _Spec) -> None:
    """The child's main: load the model, then serve batches until told to stop or until the
    pipe closes. Leaves through os._exit: torch's teardown takes seconds, for nothing."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    link = _Link(conn)
    core = logging.getLogger(_CORE_LOGGER)
    core.handlers[:] = [_LogToParent(link)]
    core.setLevel(spec.log_level)
    core.propagate = False
    try:
        server = _Server(spec, link)
    except ConfigError as exc:
        link.send(('failed', 'config', str(exc)))
        os._exit(0)
    except Exception as exc:  # noqa: BLE001 - said to the node, which fails with it
        link.send(('failed', 'error', f'loading the model failed: {type(exc).__name__}: {exc}'))
        os._exit(0)
    server.run(conn)
    os._exit(0)


class _Server:
    """The child's model, frame sources, inference thread and counters."""

    def __init__(self, spec: _Spec, link: _Link) -> None:
        from multicam_ros.core.inference import InferenceWorker
        from multicam_ros.core.models import load_detector
        self._spec = spec
        self._link = link
        self._detector = load_detector(spec.model)
        self._shared, self._forward, stage = self._shared_input()
        sources = {camera: self._source(camera) for camera in spec.cameras}
        self._collector = BatchCollector(
            spec.cameras, sources=sources if self._shared or self._forward else None)
        self._last_stamp: Dict[str, int] = {}
        self._taken: Dict[str, Tuple[int, int]] = {}  # from shared memory: (stamp, skipped)
        self._batch: List[Tuple[str, FrameResult]] = []
        self._pixels: FrozenSet[str] = frozenset()
        self._pixel_writers: Dict[str, object] = {}  # camera -> FrameWriter, made on use
        self._worker = InferenceWorker(
            self._collector, self._detector, self._on_result, spec.max_batch_size,
            on_error=lambda text: _LOG.error('%s', text), stage=stage,
            on_batch_done=self._send_batch)
        link.send(('ready', ModelInfo(self._detector.description, self._detector.device,
                                      tuple(self._detector.class_names), os.getpid())))

    def _shared_input(self):
        """The shared-memory sources of the camera_nodes' channels and of the forward
        channels (None where there are none) and, where frames can go to the model's device
        straight from shared memory (CUDA, a back-end that takes device tensors), the
        inference thread's stage that uploads them."""
        spec = self._spec
        if not spec.channels and not spec.forward_channels:
            return None, None, None
        from multicam_ros.core.models import preprocess
        from multicam_ros.core.shared_input import SharedFrameSource
        device = self._detector.device
        in_place = device.startswith('cuda') and getattr(
            self._detector, 'takes_device_frames', False)

        def source(channels, accept):
            return SharedFrameSource(
                channels, accept=accept, allocate=preprocess.host_buffer_allocator(device),
                page_lock=preprocess.cuda_page_lock if in_place else None,
                max_pixels=spec.max_pixels, max_bytes=spec.max_bytes) if channels else None

        return (source(spec.channels, self._accept_shared),
                source(spec.forward_channels, self._accept_forwarded),
                preprocess.DeviceStager(device) if in_place else None)

    def _source(self, camera: str):
        """`camera`'s source for the collector: whichever of its channels is in use (the
        node makes at most one active)."""
        takes = [source.source(camera) for source in (self._shared, self._forward)
                 if source is not None]

        def take():
            for one in takes:
                got = one()
                if got is not None:
                    return got
            return None
        return take

    def run(self, conn: Connection) -> None:
        """Serve until told to stop or until the node's process is gone; then the caller
        leaves at once: nothing here needs releasing (page-locks and the GPU context end with
        the process; the pixel channels' segments, whose writer is then dead, are the node's
        to remove)."""
        self._worker.start()
        threading.Thread(target=self._report, name='model stats', daemon=True).start()
        while True:
            try:
                message = conn.recv()
            except (EOFError, OSError):
                return  # the node's process is gone
            kind = message[0]
            if kind == 'stop':
                return
            if kind == 'frame':
                _, camera, frame = message
                self._last_stamp[camera] = max(frame.stamp_ns,
                                               self._last_stamp.get(camera, -1))
                self._collector.put(camera, frame)
            elif kind == 'pixels':
                self._pixels = message[1]
            elif kind == 'path':
                _, camera, which = message
                for source, name in ((self._shared, CAMERA_CHANNEL),
                                     (self._forward, FORWARD_CHANNEL)):
                    if source is not None:
                        source.set_active(camera, which == name)

    def _accept_shared(self, camera: str, frame: InputFrame, skipped: int) -> bool:
        """Our camera_nodes stamp strictly increasing, so a stamp not newer than the last frame
        taken is one that came over the pipe just before the camera moved to shared memory."""
        if frame.stamp_ns <= self._last_stamp.get(camera, -1):
            return False
        self._last_stamp[camera] = frame.stamp_ns
        self._taken[camera] = (frame.stamp_ns, skipped)
        return True

    def _accept_forwarded(self, camera: str, frame: InputFrame, skipped: int) -> bool:
        """Frames from image_raw are taken in any order (any publisher's stamps); the newest
        stamp seen still guards the camera's move to shared memory."""
        self._last_stamp[camera] = max(frame.stamp_ns, self._last_stamp.get(camera, -1))
        return True

    def _on_result(self, camera: str, frame: InputFrame, detections: Detections) -> None:
        if camera in self._pixels:
            self._write_pixels(camera, frame)
        taken = self._taken.get(camera)
        shared = taken is not None and taken[0] == frame.stamp_ns
        self._batch.append((camera, FrameResult(
            frame.stamp_ns, frame.frame_id, frame.received_s, detections, shared,
            taken[1] if shared else 0)))

    def _write_pixels(self, camera: str, frame: InputFrame) -> None:
        """The frame, as the model got it, into the camera's pixel channel (one copy; from the
        device where it was uploaded straight from shared memory)."""
        channel = self._spec.pixel_channels.get(camera)
        if channel is None:
            return
        try:
            writer = self._pixel_writers.get(camera)
            if writer is None:
                writer = self._pixel_writers[camera] = FrameWriter(channel)
            writer.write(host_pixels(frame.image), frame.stamp_ns, '')
        except (OSError, RuntimeError, ValueError) as exc:  # /dev/shm full, a live writer
            _LOG.warning('%s: writing its frames for drawing failed (%s: %s): image_annotated '
                         'stops', camera, type(exc).__name__, exc)
            self._spec.pixel_channels.pop(camera)

    def _send_batch(self) -> None:
        batch, self._batch = self._batch, []
        if batch:
            self._link.send(('results', batch))

    def _report(self) -> None:
        while True:
            time.sleep(STATS_PERIOD_S)
            self._link.send(('stats', self._stats()))

    def _stats(self) -> ModelStats:
        cameras = self._spec.cameras
        cuda = {}
        device = self._detector.device
        if device.startswith('cuda'):
            import torch
            cuda = {'cuda_allocated_mb': torch.cuda.memory_allocated(device) / 2**20,
                    'cuda_reserved_mb': torch.cuda.memory_reserved(device) / 2**20}
        return ModelStats(
            batches=self._worker.batch_summary(),
            inference_ms=self._worker.inference_time.percentiles_ms(*INFERENCE_PERCENTS),
            handover_ms=self._worker.handover_time.percentiles_ms(*HANDOVER_PERCENTS),
            memory_bytes=self._detector.memory_bytes(), cuda_memory_mb=cuda,
            counts={camera: self._collector.counts(camera) for camera in cameras},
            shared={} if self._shared is None else {
                camera: self._shared.counts(camera) for camera in cameras})


def _child_main(fd: int) -> None:
    conn = Connection(fd)
    serve(conn, conn.recv())


if __name__ == '__main__':  # the child: python -m multicam_ros.core.model_process <fd>
    # Through the module's own name, so that what it pickles names that module, not __main__.
    from multicam_ros.core.model_process import _child_main as main
    main(int(sys.argv[1]))
