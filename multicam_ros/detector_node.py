"""detector_node: ONE model for every camera, batched across cameras, vision_msgs out.

A thin ROS layer over the ROS-free core: each camera's image subscription puts its frame into
that camera's newest-frame slot (batching.py); an inference thread (inference.py) takes the
newest frame of every camera into one batch, runs it through the model back-end (models/), and
this node publishes `<camera>/detections`, `<camera>/image_annotated` and diagnostics.
"""
import re
import sys
import threading
import time
from typing import Dict, List, Optional

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import Image
from std_msgs.msg import Header
from vision_msgs.msg import (BoundingBox2D, Detection2D, Detection2DArray, LabelInfo,
                             ObjectHypothesisWithPose, VisionClass)

from multicam_ros.batching import BatchCollector, InputFrame
from multicam_ros.drawing import draw_detections
from multicam_ros.inference import InferenceWorker
from multicam_ros.models import load_detector
from multicam_ros.models.base import Detections, ModelConfig
from multicam_ros.node_main import declare_params, image_qos, on_param_change, run_node, \
    use_large_frame_transport
from multicam_ros.params import DETECTOR_PARAMS
from multicam_ros.ros_convert import bgr_from_image, image_from_array, ns_from_stamp
from multicam_ros.stats import LatencyWindow, RateMeter
from multicam_ros.tracking import NO_TRACK_ID, Tracker, TrackerConfig

_NAMESPACE = re.compile(r'^(/[A-Za-z_][A-Za-z0-9_]*)+$')
STALE_CAMERA_S = 5.0  # a camera with no frame for this long is reported as WARN


def normalise_cameras(cameras: List[str]) -> List[str]:
    """['cam0', '/cam1/'] -> ['/cam0', '/cam1']; errors name the parameter `cameras`."""
    if not cameras:
        raise ValueError("parameter cameras: empty; list the camera namespaces to serve, "
                         "e.g. cameras:=['/cam0','/cam1']")
    result = []
    for camera in cameras:
        namespace = '/' + camera.strip().strip('/')
        if not _NAMESPACE.match(namespace):
            raise ValueError(f'parameter cameras: {camera!r} is not a valid ROS namespace '
                             '(letters, digits and _ in /-separated tokens, not starting with '
                             'a digit)')
        if namespace in result:
            raise ValueError(f'parameter cameras: {namespace!r} is listed twice')
        result.append(namespace)
    return result


def model_config(p: Dict) -> ModelConfig:
    """The back-end's settings. With tracking on, the model also keeps the weak detections
    (down to tracking.low_score_threshold) that may continue a track."""
    threshold = p['confidence_threshold']
    if p['tracking.enabled']:
        threshold = min(threshold, p['tracking.low_score_threshold'])
    return ModelConfig(
        backend=p['model.backend'], name=p['model.name'], weights=p['model.weights'],
        path=p['model.path'], class_names=tuple(p['model.class_names']),
        labels_file=p['model.labels_file'], device=p['device'], half=p['half'],
        input_size=p['input_size'], confidence_threshold=threshold,
        iou_threshold=p['iou_threshold'], max_detections=p['max_detections'],
        classes=tuple(p['classes']))


def tracker_config(p: Dict) -> TrackerConfig:
    return TrackerConfig(
        high_score_threshold=p['tracking.high_score_threshold'],
        low_score_threshold=p['tracking.low_score_threshold'],
        new_track_score_threshold=p['tracking.new_track_score_threshold'],
        match_iou_first=p['tracking.match_iou_threshold'], max_age_s=p['tracking.max_age_s'],
        min_hits=p['tracking.min_hits'], class_aware=p['tracking.class_aware'],
        trail_length=p['tracking.trail_length'])


def keep_published(detections: Detections, track_ids: np.ndarray,
                   threshold: float) -> np.ndarray:
    """Which detections to publish: those scoring at least `threshold`, and weaker ones that
    continue a track (the tracker's second association)."""
    return (detections.scores >= threshold) | (track_ids != NO_TRACK_ID)


class _CameraState:
    """Per-camera publishers, meters and tracker."""

    def __init__(self, tracker: Optional[Tracker]) -> None:
        self.tracker = tracker
        self.reconnects_seen: Optional[str] = None  # the camera_node's reconnect count
        self.reset_pending = False
        self.tracker_resets = 0
        self.frames_in = RateMeter()
        self.processed = RateMeter()
        self.latency = LatencyWindow()
        self.invalid_frames = 0
        self.warned_invalid = False
        self.last_frame_s: Optional[float] = None
        self.detections_pub = None
        self.annotated_pub = None


class DetectorNode(Node):
    """See the module docstring."""

    def __init__(self, **node_kwargs) -> None:
        super().__init__('detector', **node_kwargs)
        self._worker: Optional[InferenceWorker] = None  # destroy_node may run before it exists
        self._stopping = threading.Event()
        self.context.on_shutdown(self._stopping.set)
        p = declare_params(self, DETECTOR_PARAMS)
        self._p = p
        self.executor_threads = p['executor_threads']  # read by run_node
        cameras = normalise_cameras(p['cameras'])
        tracking = tracker_config(p) if p['tracking.enabled'] else None  # check before loading
        config = model_config(p)
        self.get_logger().info(f'loading model ({config.backend}) for {len(cameras)} cameras')
        started_s = time.monotonic()
        self._detector = load_detector(config)
        self.get_logger().info(
            f'model ready in {time.monotonic() - started_s:.1f} s: {self._detector.description}'
            f' on {self._detector.device}, {len(self._detector.class_names)} classes')
        self._annotate = p['annotate']
        on_param_change(self, DETECTOR_PARAMS,
                        {'annotate': lambda mode: setattr(self, '_annotate', mode)})

        self._collector = BatchCollector(cameras)
        self._cameras: Dict[str, _CameraState] = {}
        input_qos = image_qos(p['reliability'])
        output_qos = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE)
        for camera in cameras:
            state = _CameraState(Tracker(tracking) if tracking else None)
            state.detections_pub = self.create_publisher(
                Detection2DArray, f'{camera}/detections', 10)
            state.annotated_pub = self.create_publisher(
                Image, f'{camera}/image_annotated', output_qos)
            self._cameras[camera] = state
            self.create_subscription(
                Image, f'{camera}/image_raw',
                lambda msg, camera=camera: self._on_image(camera, msg), input_qos,
                # with executor_threads > 1: cameras in parallel, each camera's callback alone
                callback_group=MutuallyExclusiveCallbackGroup())

        latched = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE,
                             durability=DurabilityPolicy.TRANSIENT_LOCAL)
        self._label_pub = self.create_publisher(LabelInfo, '~/label_info', latched)
        self._label_pub.publish(self._label_info())
        self._diag_pub = self.create_publisher(DiagnosticArray, '/diagnostics', 10)
        if tracking:
            self.create_subscription(DiagnosticArray, '/diagnostics', self._on_diagnostics, 50)
        self.create_timer(p['diagnostics_period_s'], self._publish_diagnostics)

        self._worker = InferenceWorker(
            self._collector, self._detector, self._on_result, p['max_batch_size'],
            on_error=self._on_worker_error).start()

    def _on_worker_error(self, text: str) -> None:
        if not self._stopping.is_set():  # errors while shutting down are expected, not news
            self.get_logger().error(text)

    # -- input -----------------------------------------------------------------------------

    def _on_image(self, camera: str, msg: Image) -> None:
        state = self._cameras[camera]
        state.frames_in.tick()
        image = bgr_from_image(msg)
        if image is None:
            state.invalid_frames += 1
            if not state.warned_invalid:  # once per camera; the count goes on in diagnostics
                state.warned_invalid = True
                self.get_logger().warning(
                    f'{camera}: skipping frames with encoding {msg.encoding!r}, '
                    f'{msg.width}x{msg.height}, step {msg.step}, {len(msg.data)} bytes: '
                    'accepted encodings are bgr8, rgb8, mono8, bgra8, rgba8 with '
                    'len(data) == step * height')
            return
        state.last_frame_s = time.monotonic()
        self._collector.put(camera, InputFrame(image=image, stamp_ns=ns_from_stamp(
            msg.header.stamp), received_s=state.last_frame_s, meta=msg.header))

    def _on_diagnostics(self, msg: DiagnosticArray) -> None:
        """A camera_node of this package that reconnected ('<camera>/...: camera' reports a
        new reconnects_succeeded count): the scene may have changed, so that camera's tracks
        start afresh. Other image sources' tracks simply age out after tracking.max_age_s."""
        for status in msg.status:
            if not status.name.endswith(': camera'):
                continue
            camera = status.name.rsplit('/', 1)[0]
            state = self._cameras.get(camera)
            count = next((kv.value for kv in status.values
                          if kv.key == 'reconnects_succeeded'), None)
            if state is None or count is None:
                continue
            if state.reconnects_seen is not None and count != state.reconnects_seen:
                state.reset_pending = True  # done by the inference thread, which owns the tracker
                self.get_logger().info(f'{camera}: camera reconnected, its tracks start afresh')
            state.reconnects_seen = count

    # -- output (inference thread) -----------------------------------------------------------

    def _on_result(self, camera: str, frame: InputFrame, detections: Detections) -> None:
        if self._stopping.is_set():
            return
        state = self._cameras[camera]
        header: Header = frame.meta
        track_ids = np.full(len(detections), NO_TRACK_ID, dtype=np.int64)
        if state.tracker is not None:
            if state.reset_pending:
                state.reset_pending = False
                state.tracker.reset()
                state.tracker_resets += 1
            track_ids = state.tracker.update(detections, frame.stamp_ns / 1e9).track_ids
        keep = keep_published(detections, track_ids, self._p['confidence_threshold'])
        detections = Detections(detections.boxes_xyxy[keep], detections.scores[keep],
                                detections.class_ids[keep])
        track_ids = track_ids[keep]
        state.detections_pub.publish(self._detections_msg(header, detections, track_ids))
        state.latency.add((self.get_clock().now().nanoseconds - frame.stamp_ns) / 1e9)
        state.processed.tick()
        if self._annotate == 'always' or (
                self._annotate == 'auto' and state.annotated_pub.get_subscription_count() > 0):
            labels = [f'#{t}' if t != NO_TRACK_ID else '' for t in track_ids.tolist()]
            trails = state.tracker.trails() if state.tracker is not None else {}
            canvas = draw_detections(frame.image, detections, self._detector.class_names,
                                     labels, [trails.get(t) for t in track_ids.tolist()])
            state.annotated_pub.publish(image_from_array(canvas, 'bgr8', header))

    def _detections_msg(self, header: Header, detections: Detections,
                        track_ids: np.ndarray) -> Detection2DArray:
        names = self._detector.class_names
        result = Detection2DArray(header=header)
        for (x1, y1, x2, y2), score, class_id, track_id in zip(
                detections.boxes_xyxy.tolist(), detections.scores.tolist(),
                detections.class_ids.tolist(), track_ids.tolist()):
            detection = Detection2D(header=header)
            detection.id = str(track_id) if track_id != NO_TRACK_ID else ''
            detection.bbox = BoundingBox2D()
            detection.bbox.center.position.x = (x1 + x2) / 2.0
            detection.bbox.center.position.y = (y1 + y2) / 2.0
            detection.bbox.size_x = x2 - x1
            detection.bbox.size_y = y2 - y1
            hypothesis = ObjectHypothesisWithPose()
            hypothesis.hypothesis.class_id = names[class_id] if class_id < len(names) \
                else str(class_id)
            hypothesis.hypothesis.score = score
            detection.results = [hypothesis]
            result.detections.append(detection)
        return result

    def _label_info(self) -> LabelInfo:
        info = LabelInfo(header=Header(stamp=self.get_clock().now().to_msg()),
                         threshold=float(self._p['confidence_threshold']))
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
            latency = state.latency.percentiles_ms(50, 95)
            age_s = None if state.last_frame_s is None else now_s - state.last_frame_s
            if age_s is None:
                level, message = DiagnosticStatus.WARN, 'no frame received yet'
            elif age_s > STALE_CAMERA_S:
                level, message = DiagnosticStatus.WARN, f'no frame for {age_s:.0f} s'
            else:
                level, message = DiagnosticStatus.OK, 'detecting'
            statuses.append(_status(level, f'{fqn}: {camera}', message, {
                'frames_in_hz': f'{state.frames_in.rate_hz(now_s):.1f}',
                'frames_processed_hz': f'{state.processed.rate_hz(now_s):.1f}',
                'frames_received': counts.received,
                'frames_processed': counts.processed,
                'frames_dropped': counts.dropped,
                'frames_invalid': state.invalid_frames,
                'latency_p50_ms': f'{latency[50]:.1f}',
                'latency_p95_ms': f'{latency[95]:.1f}',
                **({'tracks': len(state.tracker), 'tracker_resets': state.tracker_resets}
                   if state.tracker is not None else {}),
            }))
        batches = self._worker.batch_summary()
        inference = self._worker.inference_time.percentiles_ms(50, 95)
        values = {
            'device': self._detector.device,
            'model': self._detector.description,
            'model_memory_mb': f'{self._detector.memory_bytes() / 2**20:.1f}',
            'batches': batches['batches'],
            'batch_size_mean': f'{batches["mean"]:.2f}',
            'batch_size_max': batches['max'],
            'batch_sizes': ' '.join(f'{k}:{v}' for k, v in batches['histogram'].items()),
            'inference_p50_ms': f'{inference[50]:.1f}',
            'inference_p95_ms': f'{inference[95]:.1f}',
            'inference_errors': batches['errors'],
        }
        values.update(_cuda_memory(self._detector.device))
        level = DiagnosticStatus.WARN if batches['errors'] else DiagnosticStatus.OK
        statuses.append(_status(level, f'{fqn}: model', self._detector.description, values))
        self._diag_pub.publish(DiagnosticArray(
            header=Header(stamp=self.get_clock().now().to_msg()), status=statuses))

    def destroy_node(self) -> None:
        self._stopping.set()
        if self._worker is not None:
            self._worker.stop()
        super().destroy_node()


def _status(level: bytes, name: str, message: str, values: Dict) -> DiagnosticStatus:
    return DiagnosticStatus(level=level, name=name, message=message,
                            values=[KeyValue(key=k, value=str(v)) for k, v in values.items()])


def _cuda_memory(device: str) -> Dict[str, str]:
    if not device.startswith('cuda'):
        return {}
    import torch
    return {'cuda_allocated_mb': f'{torch.cuda.memory_allocated(device) / 2**20:.1f}',
            'cuda_reserved_mb': f'{torch.cuda.memory_reserved(device) / 2**20:.1f}'}


def main(args=None) -> int:
    use_large_frame_transport()  # it sends full-size annotated images
    return run_node(DetectorNode, 'detector_node', args)


if __name__ == '__main__':
    sys.exit(main())
