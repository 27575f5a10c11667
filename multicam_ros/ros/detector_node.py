"""detector_node: ONE model for every camera, batched across cameras, vision_msgs out.

A thin ROS layer over the ROS-free core. The model runs in a process of its own
(model_process.py: there its inference thread has a GIL to itself), which takes the newest
frame of every camera into one batch (inference.py; on CUDA, shared-memory frames are uploaded
straight from shared memory) and runs it through the model back-end (models/). Each camera's
frames reach it by one of two paths, chosen per camera (`frame_path`): from shared memory
(shared_input.py), while a camera_node of this package on this host writes it, or from the
camera's image_raw subscription here (any publisher, any host), whose frames this node writes
into a shared-memory channel of its own for the model (over the model's pipe where shared
memory cannot be used). The results come back to this process, whose result stage thread
tracks them and publishes `<camera>/detections` and `<camera>/image_annotated`; a timer
publishes diagnostics.
"""
import logging
import os
import sys
import threading
import time
from typing import Dict, FrozenSet, NamedTuple, Optional

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from rclpy.serialization import deserialize_message
from sensor_msgs.msg import Image
from std_msgs.msg import Header
from vision_msgs.msg import Detection2DArray, LabelInfo, VisionClass

from multicam_ros.core.batching import CameraCounts
from multicam_ros.core.diagnostics import MODEL_SUFFIX, ModelReport, ServedCameraReport, \
    report_name, source_state, stamp_plausible
from multicam_ros.core.drawing import draw_detections
from multicam_ros.core.frames import InputFrame
from multicam_ros.core.imaging import NO_SIGNAL_FRAME_ID
from multicam_ros.core.inference import ResultStage
from multicam_ros.core.model_process import CAMERA_CHANNEL, FORWARD_CHANNEL, FrameResult, \
    ModelProcess
from multicam_ros.core.models.base import Detections
from multicam_ros.core.params import DETECTOR_PARAMS, detector_configs, normalise_cameras
from multicam_ros.core.process import pin_to_cpus
from multicam_ros.core.shared_input import SharedCounts, channel_live
from multicam_ros.core.shm_frames import FRAME_ID_MAX_BYTES, FrameReader, FrameWriter, \
    channel_for_topic, remove_stale_segments, shm_available
from multicam_ros.core.stats import LatencyWindow, RateMeter
from multicam_ros.core.tracking import NO_TRACK_ID, Tracker
from multicam_ros.ros.convert import bgr_from_image, diagnostic_status, image_from_array, \
    ns_from_stamp, stamp_from_ns
from multicam_ros.ros.detections_cdr import detection_array_bytes, detection_array_message, \
    serialization_matches
from multicam_ros.ros.image_cdr import read_image, reading_matches, size_filter
from multicam_ros.ros.node_main import CORE_LOGGER, declare_params, forward_core_logs, \
    image_qos, on_param_change, run_node, use_large_frame_transport

PATH_CHECK_PERIOD_S = 0.5  # how often frame_path auto looks for cameras' shared memory
NO_COUNTS = CameraCounts(0, 0, 0)
NO_SHARED = SharedCounts(0, 0)
RECENT_FRAMES = 3  # image_raw frames kept per camera for drawing on once their results come
SHARED_MEMORY = 'shared_memory'
SUBSCRIPTION = 'subscription'


def size_filter_option(max_pixels: int, max_bytes: int) -> dict:
    """The image subscriptions' content filter (image_cdr.size_filter) as keyword arguments
    of create_subscription, or none where rclpy has no content filters. A middleware without
    them ignores the filter; the check on each frame's header stays either way."""
    try:
        from rclpy.subscription_content_filter_options import ContentFilterOptions
    except ImportError:
        return {}
    return {'content_filter_options': ContentFilterOptions(
        size_filter(max_pixels, max_bytes), [])}


def keep_published(detections: Detections, track_ids: np.ndarray,
                   threshold: float) -> np.ndarray:
    """Which detections to publish: those scoring at least `threshold`, and weaker ones that
    continue a track (the tracker's second association)."""
    return (detections.scores >= threshold) | (track_ids != NO_TRACK_ID)


class _InputCounts(NamedTuple):
    invalid: int
    too_large: int
    stamps_invalid: int
    last_frame_s: Optional[float]  # time.monotonic() of the last good frame
    last_no_signal_s: Optional[float]  # ... of the last NO SIGNAL picture
    usual_interval_s: float  # smoothed time between frames


class _CameraState:
    """Per-camera publishers, meters and tracker. The input side (`frames_in`, the counts of
    refused frames, arrival times) is written by the input paths (the image_raw callback, the
    thread receiving the model's results for frames from shared memory), the output side
    (`tracker`, `processed`, `latency`) only by the result stage's thread; the meters lock
    themselves and `_lock` guards the plain counters that the diagnostics timer reads."""

    def __init__(self, tracker: Optional[Tracker]) -> None:
        self.tracker = tracker
        self.frames_in = RateMeter()
        self.processed = RateMeter()
        self.latency = LatencyWindow()
        self._lock = threading.Lock()
        self._invalid_frames = 0
        self._too_large = 0
        self._stamps_invalid = 0
        self._last_frame_s: Optional[float] = None
        self._last_no_signal_s: Optional[float] = None
        self._interval_s = 0.0
        self._last_stamp_ns = -1
        self.detections_pub = None
        self.annotated_pub = None
        self.subscription = None  # the image_raw subscription while on that path
        self.forward: Optional[FrameWriter] = None  # its image_raw frames for the model
        self.forward_lock = threading.Lock()  # `forward` is written and replaced under it
        self.recent: tuple = ()  # (stamp_ns, image) of the last frames handed over
        self.pixel_reader: Optional[FrameReader] = None  # the model's frames, for drawing
        self.path = SUBSCRIPTION  # where its frames come from now (only that path is taken)

    def received(self, now_s: float, stamp_ns: int, now_ns: int) -> bool:
        """Record a frame that arrived at `now_s` (monotonic) with header stamp `stamp_ns`
        (ROS time now: `now_ns`); False when its stamp is not newer than every stamp taken
        before."""
        with self._lock:
            if self._last_frame_s is not None:
                self._interval_s += 0.1 * (now_s - self._last_frame_s - self._interval_s)
            self._last_frame_s = now_s
            if not stamp_plausible(stamp_ns, now_ns):
                self._stamps_invalid += 1
            if stamp_ns <= self._last_stamp_ns:
                return False
            self._last_stamp_ns = stamp_ns
            return True

    def invalid(self) -> bool:
        """Count an invalid frame; True for the first (warn once)."""
        with self._lock:
            self._invalid_frames += 1
            return self._invalid_frames == 1

    def too_large(self) -> bool:
        """Count a frame refused for its size; True for the first (warn once)."""
        with self._lock:
            self._too_large += 1
            return self._too_large == 1

    def no_signal(self, now_s: float) -> None:
        """The camera sent its NO SIGNAL picture: it is down, and that is no frame."""
        with self._lock:
            self._last_no_signal_s = now_s

    def input_counts(self) -> _InputCounts:
        with self._lock:
            return _InputCounts(self._invalid_frames, self._too_large, self._stamps_invalid,
                                self._last_frame_s, self._last_no_signal_s, self._interval_s)


class DetectorNode(Node):
    """See the module docstring."""

    def __init__(self, **node_kwargs) -> None:
        super().__init__('detector', **node_kwargs)
        self._log_handler = forward_core_logs(self)
        self._model: Optional[ModelProcess] = None  # destroy_node may run before it exists
        self._cameras: Dict[str, _CameraState] = {}
        self._pixel_channels: Dict[str, str] = {}  # camera -> the model's frames for drawing
        self._drawn: FrozenSet[str] = frozenset()  # cameras whose image_annotated is drawn now
        self._results: Optional[ResultStage] = None
        self._fatal: Optional[str] = None  # why the node must end (the model process died)
        self._stopping = threading.Event()
        self.context.on_shutdown(self._stopping.set)
        s, model_config, tracking, self._confidence_threshold = detector_configs(
            declare_params(self, DETECTOR_PARAMS))
        self.executor_threads = s.executor_threads  # read by run_node
        pin_to_cpus(s.cpu_affinity, 'cpu_affinity')  # the model process inherits it
        cameras = normalise_cameras(s.cameras)
        self._annotate = s.annotate
        self._max_pixels, self._max_bytes = s.max_frame_pixels, s.max_frame_bytes
        self._raw_detections = serialization_matches()
        if not self._raw_detections:
            self.get_logger().info('detections are built as message objects: this middleware '
                                   'serializes them differently from detections_cdr.py')
        self._raw_images = reading_matches()
        self._size_filter = size_filter_option(s.max_frame_pixels, s.max_frame_bytes)
        if not self._raw_images:
            self.get_logger().warning(
                'image_raw is received as message objects: this middleware serializes Image '
                'differently from image_cdr.py, so frame sizes are checked only after rclpy '
                'has copied them')
        on_param_change(self, DETECTOR_PARAMS, {'annotate': self._set_annotate})

        self._input_qos = image_qos(s.reliability)
        output_qos = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE)
        for camera in cameras:
            state = _CameraState(Tracker(tracking) if tracking else None)
            state.detections_pub = self.create_publisher(
                Detection2DArray, f'{camera}/detections', 10)
            state.annotated_pub = self.create_publisher(
                Image, f'{camera}/image_annotated', output_qos)
            self._cameras[camera] = state
        self._frame_path = s.frame_path
        self._channels: Dict[str, str] = {}  # camera -> its camera_node's channel
        # This node's channels per camera, between it and its model process: the frames it
        # receives on image_raw (one copy with the GIL released, where the model's pipe would
        # cost ~8 ms of CPU a 720p frame), and the frames the model ran, for drawing on.
        forward_channels: Dict[str, str] = {}
        domain_id = self.context.get_domain_id()
        if shm_available():
            fqn = self.get_fully_qualified_name().rstrip('/')
            for camera in cameras:
                forward_channels[camera] = channel_for_topic(f'{fqn}{camera}/input_frames',
                                                             domain_id)
                self._pixel_channels[camera] = channel_for_topic(
                    f'{fqn}{camera}/drawn_frames', domain_id)
            for channel in [*forward_channels.values(), *self._pixel_channels.values()]:
                remove_stale_segments(channel)  # what a killed run of this node left
            for camera, channel in forward_channels.items():
                self._cameras[camera].forward = FrameWriter(channel)  # its segment: on use
            if s.frame_path != SUBSCRIPTION:
                self._channels = {camera: channel_for_topic(f'{camera}/image_raw', domain_id)
                                  for camera in cameras}
        elif s.frame_path == SHARED_MEMORY:
            self.get_logger().warning('frame_path shared_memory: shared memory is not usable '
                                      'on this host; taking every camera from image_raw')

        # Per-camera output work runs on the result stage's thread, never in the way of the
        # thread that receives the model's results.
        self._results = ResultStage(cameras, self._on_result,
                                    on_error=self._on_worker_error).start()
        self.get_logger().info(f'loading model ({model_config.backend}) for {len(cameras)} '
                               'cameras in a process of its own')
        started_s = time.monotonic()
        self._model = ModelProcess(
            model_config, cameras, s.max_batch_size, self._on_results, self._on_model_exit,
            channels=self._channels, forward_channels=forward_channels,
            pixel_channels=self._pixel_channels, max_pixels=s.max_frame_pixels,
            max_bytes=s.max_frame_bytes)
        self._model_info = self._model.start()
        self._class_names = list(self._model_info.class_names)
        self.get_logger().info(
            f'model ready in {time.monotonic() - started_s:.1f} s: '
            f'{self._model_info.description} on {self._model_info.device}, '
            f'{len(self._class_names)} classes (pid {self._model_info.pid})')
        self._choose_paths()
        if self._channels and s.frame_path == 'auto':
            self.create_timer(PATH_CHECK_PERIOD_S, self._choose_paths)
        self._refresh_drawn()
        self.create_timer(PATH_CHECK_PERIOD_S, self._refresh_drawn)

        latched = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE,
                             durability=DurabilityPolicy.TRANSIENT_LOCAL)
        self._label_pub = self.create_publisher(LabelInfo, '~/label_info', latched)
        self._label_pub.publish(self._label_info())
        self._diag_pub = self.create_publisher(DiagnosticArray, '/diagnostics', 10)
        self.create_timer(s.diagnostics_period_s, self._publish_diagnostics)

    def _on_worker_error(self, text: str) -> None:
        if not self._stopping.is_set():  # errors while shutting down are expected, not news
            self.get_logger().error(text)

    def _on_model_exit(self, text: str) -> None:
        """The model process died (a crash, the kernel's OOM killer): the node ends with an
        error at its next diagnostics tick, and the launcher restarts it."""
        self._fatal = text
        self._on_worker_error(f'{text}: stopping the node')

    def _set_annotate(self, mode: str) -> None:
        self._annotate = mode
        if self._model is not None:
            self._refresh_drawn()

    def _refresh_drawn(self) -> None:
        """Which cameras' image_annotated is drawn now (`annotate`, and subscribers under
        auto), looked up here every PATH_CHECK_PERIOD_S rather than per result, and told to
        the model process, which writes those cameras' frames for drawing."""
        self._drawn = frozenset(
            camera for camera, state in self._cameras.items() if self._annotate == 'always' or (
                self._annotate == 'auto' and state.annotated_pub.get_subscription_count() > 0))
        if self._pixel_channels:
            self._model.write_pixels_of(self._drawn)

    # -- input -----------------------------------------------------------------------------

    def _choose_paths(self) -> None:
        """Put every camera on its path: shared memory while its channel has a live writer
        (frame_path auto) or always (shared_memory), else its image_raw subscription. A camera
        is never on both, so no frame arrives twice; leaving the subscription also tells its
        camera_node that it need not build image_raw for this detector."""
        for camera, state in self._cameras.items():
            if not self._channels:
                shared = False
            elif self._frame_path == SHARED_MEMORY:
                shared = True
            else:
                shared = channel_live(self._channels[camera])
            path = SHARED_MEMORY if shared else SUBSCRIPTION
            if path == state.path and (shared or state.subscription is not None):
                continue
            if shared:
                self._model.use_channel(camera, CAMERA_CHANNEL)
                if state.subscription is not None:
                    self.destroy_subscription(state.subscription)
                    state.subscription = None
                with state.forward_lock:  # its segment is freed until it is needed again
                    if state.forward is not None and state.forward.seq:
                        state.forward.close()
                        state.forward = FrameWriter(state.forward.channel)
            else:
                self._model.use_channel(camera, None if state.forward is None
                                        else FORWARD_CHANNEL)
                state.subscription = self.create_subscription(
                    Image, f'{camera}/image_raw',
                    lambda msg, camera=camera: self._on_image(camera, msg), self._input_qos,
                    # with executor_threads > 1: cameras in parallel, each camera's alone
                    callback_group=MutuallyExclusiveCallbackGroup(), raw=self._raw_images,
                    **self._size_filter)
            if path != state.path:
                self.get_logger().info(f'{camera}: frames from {path.replace("_", " ")}')
            state.path = path

    def _on_results(self, batch) -> None:
        """A batch's results from the model process (its receiving thread): the frames taken
        from shared memory are counted in here (with the `skipped` ones the camera wrote since
        the last one taken), then every result goes to the result stage."""
        now_ns = self._now_ns()  # the whole batch arrived now
        for camera, result in batch:
            state = self._cameras[camera]
            if result.shared:
                for _ in range(result.skipped + 1):
                    state.frames_in.tick(result.received_s)
                state.received(result.received_s, result.stamp_ns, now_ns)
            self._results.put(camera, result, result.detections)

    def _now_ns(self) -> int:
        return self.get_clock().now().nanoseconds

    def _on_image(self, camera: str, msg) -> None:
        """A frame from image_raw: serialized bytes (read by image_cdr before any copy of the
        pixels) or, where that reader does not match the middleware, an Image."""
        state = self._cameras[camera]
        if state.path != SUBSCRIPTION:
            return  # a message still in flight when the camera moved to shared memory
        now_s = time.monotonic()
        image_msg = read_image(msg) if self._raw_images else msg
        if image_msg is None:  # another encapsulation (big endian, XCDR2), or not an Image
            try:
                image_msg = deserialize_message(msg, Image)
            except Exception:  # noqa: BLE001 - rclpy raises its own types for bad bytes
                if state.invalid():
                    self.get_logger().warning(f'{camera}: skipping image_raw samples that are '
                                              'not a well-formed sensor_msgs/Image')
                return
        if isinstance(image_msg, Image):
            stamp_ns, frame_id = ns_from_stamp(image_msg.header.stamp), image_msg.header.frame_id
        else:
            stamp_ns, frame_id = image_msg.stamp_ns, image_msg.frame_id
        if frame_id == NO_SIGNAL_FRAME_ID:
            state.no_signal(now_s)  # the camera is down; its picture is not a frame
            return
        if (image_msg.width * image_msg.height > self._max_pixels
                or max(image_msg.step * image_msg.height, len(image_msg.data)) > self._max_bytes):
            if state.too_large():  # once per camera; the count goes on in diagnostics
                self.get_logger().warning(
                    f'{camera}: refusing {image_msg.width}x{image_msg.height} frames of '
                    f'{len(image_msg.data)} bytes: over max_frame_pixels {self._max_pixels} or '
                    f'max_frame_bytes {self._max_bytes}')
            return
        image = bgr_from_image(image_msg)
        if image is None:
            if state.invalid():  # once per camera; the count goes on in diagnostics
                self.get_logger().warning(
                    f'{camera}: skipping frames with encoding {image_msg.encoding!r}, '
                    f'{image_msg.width}x{image_msg.height}, step {image_msg.step}, '
                    f'{len(image_msg.data)} bytes: accepted encodings are bgr8, rgb8, mono8, '
                    'bgra8, rgba8 with len(data) == step * height')
            return
        state.frames_in.tick()
        # any publisher's frames are taken, in any order
        state.received(now_s, stamp_ns, self._now_ns())
        self._hand_over(camera, state, InputFrame(image=image, stamp_ns=stamp_ns,
                                                  received_s=now_s, frame_id=frame_id))

    def _hand_over(self, camera: str, state: _CameraState, frame: InputFrame) -> None:
        """An image_raw frame to the model process: into the camera's forward channel, or over
        the pipe where there is none (or the frame_id is too long for shared memory). The last
        few stay here for drawing (`_pixels_of`)."""
        if not self._pixel_channels:
            state.recent = state.recent[-(RECENT_FRAMES - 1):] + ((frame.stamp_ns,
                                                                   frame.image),)
        with state.forward_lock:
            if state.forward is not None and len(frame.frame_id.encode()) <= FRAME_ID_MAX_BYTES:
                try:
                    state.forward.write(frame.image, frame.stamp_ns, frame.frame_id)
                    return
                except (OSError, RuntimeError) as exc:  # /dev/shm full; a live writer of it
                    self.get_logger().warning(
                        f'{camera}: handing its frames to the model through shared memory '
                        f'failed ({type(exc).__name__}: {exc}); sending them over the pipe')
                    state.forward.close()
                    state.forward = None
                    self._model.use_channel(camera, None)
        self._model.put(camera, frame)

    # -- output (result stage thread) --------------------------------------------------------

    def _on_result(self, camera: str, frame: FrameResult, detections: Detections) -> None:
        if self._stopping.is_set():
            return
        state = self._cameras[camera]
        track_ids = np.full(len(detections), NO_TRACK_ID, dtype=np.int64)
        if state.tracker is not None:
            track_ids = state.tracker.update(detections, frame.stamp_ns / 1e9).track_ids
        keep = keep_published(detections, track_ids, self._confidence_threshold)
        detections = Detections(detections.boxes_xyxy[keep], detections.scores[keep],
                                detections.class_ids[keep])
        track_ids = track_ids[keep]
        state.detections_pub.publish(self._detections_out(frame, detections, track_ids))
        now_ns = self._now_ns()
        if stamp_plausible(frame.stamp_ns, now_ns):  # stamp 0 or ahead: no latency to speak of
            state.latency.add((now_ns - frame.stamp_ns) / 1e9)
        state.processed.tick()
        pixels = self._pixels_of(camera, state, frame) if camera in self._drawn else None
        if pixels is not None:
            ids = track_ids.tolist()
            labels = [f'#{t}' if t != NO_TRACK_ID else '' for t in ids]
            trails = state.tracker.trails() if state.tracker is not None else {}
            canvas = draw_detections(pixels, detections, self._class_names, labels,
                                     [trails.get(t) for t in ids])
            header = Header(stamp=stamp_from_ns(frame.stamp_ns), frame_id=frame.frame_id)
            state.annotated_pub.publish(image_from_array(canvas, 'bgr8', header))

    def _pixels_of(self, camera: str, state: _CameraState,
                   frame: FrameResult) -> Optional[np.ndarray]:
        """The BGR pixels of a result's frame, to draw on: from the frames the model process
        wrote for drawing (from the moment it heard that this camera is drawn), or where shared
        memory cannot be used, from the image_raw frames this node handed over lately."""
        if not self._pixel_channels:
            return next((image for stamp, image in state.recent if stamp == frame.stamp_ns),
                        None)
        if state.pixel_reader is None:
            state.pixel_reader = FrameReader(self._pixel_channels[camera])
        got = state.pixel_reader.copy_by_stamp(frame.stamp_ns)
        return None if got is None else got[1]

    def _detections_out(self, frame: FrameResult, detections: Detections,
                        track_ids: np.ndarray):
        """The Detection2DArray of one frame, as serialized bytes where they were checked to
        read back right (detections_cdr.py: 10x less Python), else as a message object."""
        names = self._class_names
        labels = [names[c] if c < len(names) else str(c) for c in detections.class_ids.tolist()]
        ids = [str(t) if t != NO_TRACK_ID else '' for t in track_ids.tolist()]
        build = detection_array_bytes if self._raw_detections else detection_array_message
        return build(frame.stamp_ns, frame.frame_id, detections.boxes_xyxy, detections.scores,
                     labels, ids)

    def _label_info(self) -> LabelInfo:
        info = LabelInfo(header=Header(stamp=self.get_clock().now().to_msg()),
                         threshold=float(self._confidence_threshold))
        info.class_map = [VisionClass(class_id=i, class_name=name)
                          for i, name in enumerate(self._class_names)]
        return info

    # -- diagnostics -------------------------------------------------------------------------

    def _publish_diagnostics(self) -> None:
        if self._fatal is not None:
            raise RuntimeError(self._fatal)  # ends the spin: exit code 1, the launcher restarts
        now_s = time.monotonic()
        fqn = self.get_fully_qualified_name()
        stats = self._model.stats()
        statuses = []
        for camera, state in self._cameras.items():
            counts = stats.counts.get(camera, NO_COUNTS)
            seen = state.input_counts()
            shared = stats.shared.get(camera, NO_SHARED) if self._channels else None
            latency = state.latency.percentiles_ms(50, 95)
            source = source_state(now_s, seen.last_frame_s, seen.last_no_signal_s,
                                  seen.usual_interval_s)
            if source == 'live':
                level, message = DiagnosticStatus.OK, 'detecting'
            elif source == 'waiting':
                level, message = DiagnosticStatus.WARN, 'no frame received yet'
            elif source == 'no_signal':
                level, message = DiagnosticStatus.WARN, 'camera down: it sends NO SIGNAL'
            else:
                level = DiagnosticStatus.WARN
                message = f'camera down: no frame for {now_s - seen.last_frame_s:.0f} s'
            if source in ('waiting', 'silent') and state.subscription is not None \
                    and self._size_filter and self.count_publishers(f'{camera}/image_raw'):
                message += (' although image_raw has a publisher: frames over twice '
                            'max_frame_pixels or max_frame_bytes are refused by the '
                            'middleware, uncounted')
            report = ServedCameraReport(
                frames_in_hz=state.frames_in.rate_hz(now_s),
                frames_processed_hz=state.processed.rate_hz(now_s),
                frames_received=counts.received, frames_processed=counts.processed,
                frames_dropped=counts.dropped, frames_invalid=seen.invalid,
                latency_p50_ms=latency[50], latency_p95_ms=latency[95],
                tracks=len(state.tracker) if state.tracker is not None else None,
                results_dropped=self._results.dropped(camera), input_path=state.path,
                shared_memory_torn=shared.torn if shared is not None else 0, source=source,
                shared_memory_in_place=shared.in_place if shared is not None else 0,
                frames_too_large=seen.too_large + (shared.too_large if shared else 0),
                stamps_invalid=seen.stamps_invalid)
            statuses.append(diagnostic_status(level, report_name(fqn, camera), message, report))
        batches, inference, handover = stats.batches, stats.inference_ms, stats.handover_ms
        info = self._model_info
        report = ModelReport(
            device=info.device, model=info.description,
            model_memory_mb=stats.memory_bytes / 2**20,
            batches=batches['batches'], batch_size_mean=batches['mean'],
            batch_size_max=batches['max'],
            batch_sizes=' '.join(f'{k}:{v}' for k, v in batches['histogram'].items()),
            inference_p50_ms=inference[50], inference_p95_ms=inference[95],
            inference_errors=batches['errors'], inference_max_ms=inference[100],
            results_handover_p95_ms=handover[95], results_handover_max_ms=handover[100],
            model_pid=info.pid, **stats.cuda_memory_mb)
        level = DiagnosticStatus.WARN if batches['errors'] else DiagnosticStatus.OK
        statuses.append(diagnostic_status(level, report_name(fqn, MODEL_SUFFIX),
                                          info.description, report))
        self._diag_pub.publish(DiagnosticArray(
            header=Header(stamp=self.get_clock().now().to_msg()), status=statuses))

    def destroy_node(self) -> None:
        self._stopping.set()
        if self._results is not None:
            self._results.stop(timeout_s=0)  # at once: it does not wait behind the model
        if self._model is not None:
            self._model.stop()
        for state in self._cameras.values():
            with state.forward_lock:
                if state.forward is not None:
                    state.forward.close()  # unlinks its segment
            if state.pixel_reader is not None:
                state.pixel_reader.close()
        for channel in self._pixel_channels.values():
            remove_stale_segments(channel)  # their writer, the model process, has ended
        if self._results is not None:
            self._results.stop(timeout_s=1.0)
        logging.getLogger(CORE_LOGGER).removeHandler(self._log_handler)
        super().destroy_node()

    def needs_hard_exit(self) -> bool:
        """Always: once the node is destroyed (its model process stopped) nothing is left to
        release, and the interpreter's teardown would only spend time of the 2 s a node may
        take to stop."""
        return True


# On the CPU, torch's OpenMP threads spin while they wait; beside the node's other threads on
# a busy host that made a batch of four NanoDet-g frames take 0.9-2.1 s instead of 0.4-0.6 s
# (2 cores, measured). Waiting passively gives the cores back. Set only where the user has not.
OPENMP_WAIT = ('OMP_WAIT_POLICY', 'PASSIVE')


def main(args=None) -> int:
    os.environ.setdefault(*OPENMP_WAIT)  # before the model process (it inherits it) starts
    use_large_frame_transport()  # it sends full-size annotated images
    return run_node(DetectorNode, 'detector_node', args)


if __name__ == '__main__':
    sys.exit(main())
