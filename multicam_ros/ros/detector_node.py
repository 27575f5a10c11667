"""detector_node: ONE model for every camera, batched across cameras, vision_msgs out.

A thin ROS layer over the ROS-free core. Each camera's frames reach the batches (batching.py)
by one of two paths, chosen per camera (`frame_path`): from shared memory (shared_input.py),
while a camera_node of this package on this host writes it, or through the camera's newest-frame
slot from its image_raw subscription (any publisher, any host). An inference thread
(inference.py) takes the newest frame of every camera into one batch (on CUDA, shared-memory
frames are uploaded straight from shared memory) and runs it through the model back-end
(models/); the result stage's thread publishes `<camera>/detections` and
`<camera>/image_annotated`; a timer publishes diagnostics.
"""
import logging
import os
import sys
import threading
import time
from typing import Dict, NamedTuple, Optional

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from rclpy.serialization import deserialize_message
from sensor_msgs.msg import Image
from std_msgs.msg import Header
from vision_msgs.msg import Detection2DArray, LabelInfo, VisionClass

from multicam_ros.core.batching import BatchCollector
from multicam_ros.core.diagnostics import MODEL_SUFFIX, ModelReport, ServedCameraReport, \
    report_name, source_state, stamp_plausible
from multicam_ros.core.drawing import draw_detections
from multicam_ros.core.frames import InputFrame, host_pixels
from multicam_ros.core.imaging import NO_SIGNAL_FRAME_ID
from multicam_ros.core.inference import InferenceWorker, ResultStage
from multicam_ros.core.models import load_detector
from multicam_ros.core.models.base import Detections
from multicam_ros.core.params import DETECTOR_PARAMS, detector_configs, normalise_cameras
from multicam_ros.core.process import pin_to_cpus
from multicam_ros.core.shared_input import SharedFrameSource, channel_live
from multicam_ros.core.shm_frames import channel_for_topic, shm_available
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
    refused frames, arrival times) is written by the input paths, the output side (`tracker`,
    `processed`, `latency`) only by the result stage's thread; the meters lock themselves and
    `_lock` guards the plain counters that the diagnostics timer reads."""

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
        self._worker: Optional[InferenceWorker] = None  # destroy_node may run before it exists
        self._results: Optional[ResultStage] = None
        self._shared: Optional[SharedFrameSource] = None
        self._stopping = threading.Event()
        self.context.on_shutdown(self._stopping.set)
        s, model_config, tracking, self._confidence_threshold = detector_configs(
            declare_params(self, DETECTOR_PARAMS))
        self.executor_threads = s.executor_threads  # read by run_node
        pin_to_cpus(s.cpu_affinity, 'cpu_affinity')  # before the model's threads start
        cameras = normalise_cameras(s.cameras)
        self.get_logger().info(f'loading model ({model_config.backend}) for {len(cameras)} '
                               'cameras')
        started_s = time.monotonic()
        self._detector = load_detector(model_config)
        self.get_logger().info(
            f'model ready in {time.monotonic() - started_s:.1f} s: {self._detector.description}'
            f' on {self._detector.device}, {len(self._detector.class_names)} classes')
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
        on_param_change(self, DETECTOR_PARAMS,
                        {'annotate': lambda mode: setattr(self, '_annotate', mode)})

        self._cameras: Dict[str, _CameraState] = {}
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
        stage = None
        if s.frame_path != SUBSCRIPTION and shm_available():
            self._shared, stage = self._shared_input(cameras, s.max_frame_pixels,
                                                     s.max_frame_bytes)
        elif s.frame_path == SHARED_MEMORY:
            self.get_logger().warning('frame_path shared_memory: shared memory is not usable '
                                      'on this host; taking every camera from image_raw')
        sources = None if self._shared is None else {
            camera: self._shared.source(camera) for camera in cameras}
        self._collector = BatchCollector(cameras, sources=sources)
        self._choose_paths()
        if self._shared is not None and s.frame_path == 'auto':
            self.create_timer(PATH_CHECK_PERIOD_S, self._choose_paths)

        latched = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE,
                             durability=DurabilityPolicy.TRANSIENT_LOCAL)
        self._label_pub = self.create_publisher(LabelInfo, '~/label_info', latched)
        self._label_pub.publish(self._label_info())
        self._diag_pub = self.create_publisher(DiagnosticArray, '/diagnostics', 10)
        self.create_timer(s.diagnostics_period_s, self._publish_diagnostics)

        # Per-camera output work runs on the result stage's thread, never before the next batch.
        self._results = ResultStage(cameras, self._on_result,
                                    on_error=self._on_worker_error).start()
        self._worker = InferenceWorker(
            self._collector, self._detector, self._results.put, s.max_batch_size,
            on_error=self._on_worker_error, stage=stage).start()

    def _shared_input(self, cameras, max_pixels: int, max_bytes: int):
        """The shared-memory source of every camera and, where frames can go to the model's
        device straight from shared memory (CUDA, a back-end that takes device tensors), the
        inference thread's stage that uploads them."""
        from multicam_ros.core.models import preprocess  # torch: loaded with the model already
        device = self._detector.device
        in_place = device.startswith('cuda') and getattr(
            self._detector, 'takes_device_frames', False)
        domain_id = self.context.get_domain_id()
        source = SharedFrameSource(
            {camera: channel_for_topic(f'{camera}/image_raw', domain_id) for camera in cameras},
            accept=self._accept_shared, allocate=preprocess.host_buffer_allocator(device),
            page_lock=preprocess.cuda_page_lock if in_place else None,
            max_pixels=max_pixels, max_bytes=max_bytes)
        return source, preprocess.DeviceStager(device) if in_place else None

    def _on_worker_error(self, text: str) -> None:
        if not self._stopping.is_set():  # errors while shutting down are expected, not news
            self.get_logger().error(text)

    # -- input -----------------------------------------------------------------------------

    def _choose_paths(self) -> None:
        """Put every camera on its path: shared memory while its channel has a live writer
        (frame_path auto) or always (shared_memory), else its image_raw subscription. A camera
        is never on both, so no frame arrives twice; leaving the subscription also tells its
        camera_node that it need not build image_raw for this detector."""
        for camera, state in self._cameras.items():
            if self._shared is None:
                shared = False
            elif self._frame_path == SHARED_MEMORY:
                shared = True
            else:
                shared = channel_live(self._shared.channel(camera))
            path = SHARED_MEMORY if shared else SUBSCRIPTION
            if path == state.path and (shared or state.subscription is not None):
                continue
            if shared:
                self._shared.set_active(camera, True)
                if state.subscription is not None:
                    self.destroy_subscription(state.subscription)
                    state.subscription = None
            else:
                if self._shared is not None:
                    self._shared.set_active(camera, False)
                state.subscription = self.create_subscription(
                    Image, f'{camera}/image_raw',
                    lambda msg, camera=camera: self._on_image(camera, msg), self._input_qos,
                    # with executor_threads > 1: cameras in parallel, each camera's alone
                    callback_group=MutuallyExclusiveCallbackGroup(), raw=self._raw_images,
                    **self._size_filter)
            if path != state.path:
                self.get_logger().info(f'{camera}: frames from {path.replace("_", " ")}')
            state.path = path

    def _accept_shared(self, camera: str, frame: InputFrame, skipped: int) -> bool:
        """A frame from shared memory (inference thread), with the `skipped` frames the camera
        wrote since the last one taken. Our camera_nodes stamp strictly increasing, so a stamp
        not newer than the last frame taken is one that already came through the subscription
        just before the camera moved to shared memory."""
        state = self._cameras[camera]
        for _ in range(skipped + 1):
            state.frames_in.tick(frame.received_s)
        return state.received(frame.received_s, frame.stamp_ns, self._now_ns())

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
        self._collector.put(camera, InputFrame(image=image, stamp_ns=stamp_ns,
                                               received_s=now_s, frame_id=frame_id))

    # -- output (result stage thread) --------------------------------------------------------

    def _on_result(self, camera: str, frame: InputFrame, detections: Detections) -> None:
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
        if self._annotate == 'always' or (
                self._annotate == 'auto' and state.annotated_pub.get_subscription_count() > 0):
            ids = track_ids.tolist()
            labels = [f'#{t}' if t != NO_TRACK_ID else '' for t in ids]
            trails = state.tracker.trails() if state.tracker is not None else {}
            canvas = draw_detections(host_pixels(frame.image), detections,
                                     self._detector.class_names, labels,
                                     [trails.get(t) for t in ids])
            header = Header(stamp=stamp_from_ns(frame.stamp_ns), frame_id=frame.frame_id)
            state.annotated_pub.publish(image_from_array(canvas, 'bgr8', header))

    def _detections_out(self, frame: InputFrame, detections: Detections,
                        track_ids: np.ndarray):
        """The Detection2DArray of one frame, as serialized bytes where they were checked to
        read back right (detections_cdr.py: 10x less Python), else as a message object."""
        names = self._detector.class_names
        labels = [names[c] if c < len(names) else str(c) for c in detections.class_ids.tolist()]
        ids = [str(t) if t != NO_TRACK_ID else '' for t in track_ids.tolist()]
        build = detection_array_bytes if self._raw_detections else detection_array_message
        return build(frame.stamp_ns, frame.frame_id, detections.boxes_xyxy, detections.scores,
                     labels, ids)

    def _label_info(self) -> LabelInfo:
        info = LabelInfo(header=Header(stamp=self.get_clock().now().to_msg()),
                         threshold=float(self._confidence_threshold))
        info.class_map = [VisionClass(class_id=i, class_name=name)
                          for i, name in enumerate(self._detector.class_names)]
        return info

    # -- diagnostics -------------------------------------------------------------------------

    def _publish_diagnostics(self) -> None:
        now_s = time.monotonic()
        fqn = self.get_fully_qualified_name()
        statuses = []
        for camera, state in self._cameras.items():
            counts = self._collector.counts(camera)
            seen = state.input_counts()
            shared = self._shared.counts(camera) if self._shared is not None else None
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
        batches = self._worker.batch_summary()
        inference = self._worker.inference_time.percentiles_ms(50, 95)
        report = ModelReport(
            device=self._detector.device, model=self._detector.description,
            model_memory_mb=self._detector.memory_bytes() / 2**20,
            batches=batches['batches'], batch_size_mean=batches['mean'],
            batch_size_max=batches['max'],
            batch_sizes=' '.join(f'{k}:{v}' for k, v in batches['histogram'].items()),
            inference_p50_ms=inference[50], inference_p95_ms=inference[95],
            inference_errors=batches['errors'], **_cuda_memory(self._detector.device))
        level = DiagnosticStatus.WARN if batches['errors'] else DiagnosticStatus.OK
        statuses.append(diagnostic_status(level, report_name(fqn, MODEL_SUFFIX),
                                          self._detector.description, report))
        self._diag_pub.publish(DiagnosticArray(
            header=Header(stamp=self.get_clock().now().to_msg()), status=statuses))

    def destroy_node(self) -> None:
        self._stopping.set()
        stages = [stage for stage in (self._worker, self._results) if stage is not None]
        for stage in stages:
            stage.stop(timeout_s=0)  # both at once: neither waits behind the other
        for stage in stages:
            stage.stop(timeout_s=1.5)
        if self._shared is not None and (self._worker is None or self._worker.stopped):
            self._shared.close()  # the inference thread's readers and page-locks
        logging.getLogger(CORE_LOGGER).removeHandler(self._log_handler)
        super().destroy_node()

    def needs_hard_exit(self) -> bool:
        """Always: once the node is destroyed nothing is left to release, and unloading torch's
        native libraries at interpreter exit takes 1-3 s (measured with `import torch` alone),
        longer than the 2 s a node may take to stop."""
        return True


def _cuda_memory(device: str) -> Dict[str, float]:
    if not device.startswith('cuda'):
        return {}
    import torch
    return {'cuda_allocated_mb': torch.cuda.memory_allocated(device) / 2**20,
            'cuda_reserved_mb': torch.cuda.memory_reserved(device) / 2**20}


# On the CPU, torch's OpenMP threads spin while they wait; beside the node's other threads on
# a busy host that made a batch of four NanoDet-g frames take 0.9-2.1 s instead of 0.4-0.6 s
# (2 cores, measured). Waiting passively gives the cores back. Set only where the user has not.
OPENMP_WAIT = ('OMP_WAIT_POLICY', 'PASSIVE')


def main(args=None) -> int:
    os.environ.setdefault(*OPENMP_WAIT)  # before torch starts its threads (load_detector)
    use_large_frame_transport()  # it sends full-size annotated images
    return run_node(DetectorNode, 'detector_node', args)


if __name__ == '__main__':
    sys.exit(main())
