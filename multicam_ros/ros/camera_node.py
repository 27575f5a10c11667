"""camera_node: one camera in, the newest frame out as sensor_msgs/Image.

A thin ROS layer over the ROS-free core: `CaptureWorker` (capture.py) decodes; on its thread
each frame is rate-capped, resized and converted, stamped, and written to the shared-memory
channel (every frame, so that a detector on this host sees each one even when the publishing
thread falls behind on a loaded host), then kept as the newest. A frame published as decoded
(no resize, bgr8) is converted by the decoder straight into its shared-memory slot, which saves
a copy of every frame. A publishing thread here takes the newest and publishes `image_raw` and
`camera_info` with the same stamp, each only while it has subscribers. While the camera is away
it publishes a NO SIGNAL picture once per second. `/diagnostics` carries state, rates, drops
and latency.
"""
import functools
import logging
import sys
import threading
import time
from typing import Optional

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from rclpy.node import Node
from sensor_msgs.msg import CameraInfo, Image
from std_msgs.msg import Header

from multicam_ros.core.calibration import Calibration, load_calibration, uncalibrated
from multicam_ros.core.capture import CaptureState, CaptureWorker
from multicam_ros.core.diagnostics import CAMERA_SUFFIX, CameraReport, report_name
from multicam_ros.core.frames import Frame
from multicam_ros.core.imaging import NO_SIGNAL_FRAME_ID, make_no_signal_frame, output_size, \
    prepare_frame
from multicam_ros.core.params import CAMERA_PARAMS, camera_configs
from multicam_ros.core.process import pin_to_cpus
from multicam_ros.core.shm_frames import ChannelBusyError, FrameWriter, channel_for_topic, \
    shm_available
from multicam_ros.core.sources import native_log_warning, redact_process_output, \
    validate_source
from multicam_ros.core.stats import LatencyWindow, RateLimiter, RateMeter
from multicam_ros.ros.convert import camera_info_from_calibration, diagnostic_status, \
    image_from_array, stamp_from_ns
from multicam_ros.ros.node_main import CORE_LOGGER, declare_params, forward_core_logs, \
    image_qos, on_param_change, run_node, use_large_frame_transport

NO_SIGNAL_PERIOD_S = 1.0
FALLBACK_SIZE = (640, 480)  # NO SIGNAL size before any frame, when nothing else says a size

_LEVELS = {
    CaptureState.STREAMING: DiagnosticStatus.OK,
    CaptureState.CONNECTING: DiagnosticStatus.WARN,
    CaptureState.ENDED: DiagnosticStatus.WARN,
    CaptureState.RECONNECTING: DiagnosticStatus.ERROR,
    CaptureState.STOPPED: DiagnosticStatus.ERROR,
}


def default_frame_id(namespace: str) -> str:
    """`/cam0` -> `cam0_optical_frame`; no namespace -> `camera_optical_frame`."""
    name = namespace.strip('/').replace('/', '_')
    return f'{name or "camera"}_optical_frame'


class CameraNode(Node):
    """Publishes one camera's newest frames; see the module docstring."""

    def __init__(self, **node_kwargs) -> None:
        super().__init__('camera_node', **node_kwargs)
        self._log_handler = forward_core_logs(self)
        self._stopping = threading.Event()
        self._worker: Optional[CaptureWorker] = None  # destroy_node may run before it exists
        self._capture_stuck = False
        self._shared: Optional[FrameWriter] = None
        s, capture_options = camera_configs(declare_params(self, CAMERA_PARAMS))
        self._settings = s
        pin_to_cpus(s.cpu_affinity, 'cpu_affinity')  # before the capture thread starts
        self._source = validate_source(s.url, s.password_env)
        redact_process_output(self._source)  # before OpenCV can print the URL (sources.py)
        leak_warning = native_log_warning(self._source)
        if leak_warning:
            self.get_logger().warning(leak_warning)
        if self._source.secrets and not s.password_env:
            self.get_logger().warning(
                'the password in parameter url can be read by any node (ros2 param get, '
                '/parameter_events); give the url without it and name an environment variable '
                'holding it in password_env (multicam-ros launch and cams.launch.py do this)')
        self._calibration: Optional[Calibration] = (
            load_calibration(s.camera_info_url) if s.camera_info_url else None)
        self._frame_id = s.frame_id or default_frame_id(self.get_namespace())
        self._size = (s.width, s.height)
        self._encoding = s.encoding
        self._no_signal_enabled = s.no_signal_image
        self._limiter = RateLimiter(s.fps)

        qos = image_qos(s.reliability)
        self._image_pub = self.create_publisher(Image, 'image_raw', qos)
        self._info_pub = self.create_publisher(CameraInfo, 'camera_info', qos)
        self._diag_pub = self.create_publisher(DiagnosticArray, '/diagnostics', 10)

        self._shared_state = ''
        self._shared = self._open_shared()
        self._image_messages = 0
        self._image_messages_torn = 0
        self._loan = None  # the shared-memory slot the capture thread converts a frame into
        self._publish_rate = RateMeter()
        self._latency = LatencyWindow()
        self._rate_skipped = 0
        self._no_signal_published = 0
        self._last_stamp_ns = 0
        self._stamp_lock = threading.Lock()  # capture thread (frames), publisher (NO SIGNAL)
        self._last_out_size: Optional[tuple] = None
        self._info_cache: Optional[tuple] = None  # (size, CameraInfo) for the last size
        on_param_change(self, CAMERA_PARAMS, {
            'fps': lambda fps: setattr(self, '_limiter', RateLimiter(fps)),
            'no_signal_image': lambda on: setattr(self, '_no_signal_enabled', on)})
        self.context.on_shutdown(self._stopping.set)  # SIGINT/SIGTERM: stop publishing at once

        self._worker = CaptureWorker(
            self._source, clock=lambda: self.get_clock().now().nanoseconds,
            options=capture_options, on_state_change=self._on_state_change,
            name=self.get_fully_qualified_name(), on_frame=self._on_frame,
            retrieve_into=self._retrieve_into)
        self._publish_thread = threading.Thread(target=self._publish_loop, daemon=True,
                                                name='camera_publish')
        self.create_timer(s.diagnostics_period_s, self._publish_diagnostics)
        self.get_logger().info(
            f'camera {self._source.safe_url} -> {self.resolve_topic_name("image_raw")} '
            f'({s.encoding}, {s.reliability}, frame_id {self._frame_id})')
        self._worker.start()
        self._publish_thread.start()

    # -- capture thread callbacks ----------------------------------------------------------

    def _on_state_change(self, old: CaptureState, new: CaptureState, detail: str) -> None:
        if new is CaptureState.STOPPED:
            return  # only at shutdown, when the log may already be gone
        text = f'{old.value} -> {new.value}' + (f': {detail}' if detail else '')
        if _LEVELS[new] == DiagnosticStatus.ERROR:
            self.get_logger().warning(text)
        else:
            self.get_logger().info(text)

    # -- publishing ------------------------------------------------------------------------

    def _retrieve_into(self, width: int, height: int):
        """On the capture thread, before the decoder converts a frame of (probably) this size:
        the next shared-memory slot when the frame goes out as decoded, else None."""
        self._loan = None
        if self._shared is None or self._encoding != 'bgr8' \
                or output_size(width, height, *self._size) != (width, height):
            return None
        try:
            self._loan = self._shared.loan(width, height, 'bgr8')
        except (ChannelBusyError, OSError) as exc:  # a larger segment could not be made
            self._shared_failed(exc)
        return self._loan

    def _on_frame(self, frame: Frame) -> Optional[Frame]:
        """On the capture thread, every decoded frame: the rate cap, the output size and
        encoding, the stamp, and the shared-memory channel; returns the frame to publish."""
        loan, self._loan = self._loan, None
        if not self._limiter.allow(frame.monotonic_s):
            self._rate_skipped += 1
            return None  # a loaned slot stays unpublished; the next frame reuses it
        try:
            stamp_ns = self._next_stamp_ns(frame.stamp_ns)
            if loan is not None and frame.image is loan:  # decoded into the slot
                writer = self._shared
                seq = self._to_shared(stamp_ns)
                intact = None if seq is None else functools.partial(writer.is_intact, seq)
                return Frame(frame.image, stamp_ns, frame.seq, frame.monotonic_s, intact)
            pixels = prepare_frame(frame.image, *self._size, encoding=self._encoding)
            self._to_shared(stamp_ns, pixels)
        except Exception as exc:  # noqa: BLE001 - never stop capturing; say it, skip the frame
            if not self._stopping.is_set():
                self.get_logger().error(self._source.redact(f'preparing a frame failed: {exc}'))
            return None
        return Frame(pixels, stamp_ns, frame.seq, frame.monotonic_s)

    def _publish_loop(self) -> None:
        last_publish_s = time.monotonic()
        while not self._stopping.is_set():
            frame = self._worker.slot.take(timeout_s=0.1)
            now_s = time.monotonic()
            try:
                if frame is not None:
                    self._publish_frame(frame)
                    last_publish_s = now_s
                elif (self._no_signal_enabled and self._camera_down()
                      and now_s - last_publish_s >= NO_SIGNAL_PERIOD_S):
                    self._publish_no_signal()
                    last_publish_s = now_s
            except Exception as exc:  # noqa: BLE001 - the context may be going away
                if self._stopping.is_set() or not self.context.ok():
                    return
                self.get_logger().error(self._source.redact(f'publishing failed: {exc}'))

    def _camera_down(self) -> bool:
        return self._worker.state in (CaptureState.CONNECTING, CaptureState.RECONNECTING)

    def _next_stamp_ns(self, stamp_ns: int) -> int:
        """Stamps strictly increase even if the clock steps back."""
        with self._stamp_lock:
            stamp_ns = max(stamp_ns, self._last_stamp_ns + 1)
            self._last_stamp_ns = stamp_ns
        return stamp_ns

    def _publish_frame(self, frame: Frame) -> None:
        """A frame `_on_frame` prepared (and wrote to shared memory): image_raw and camera_info,
        each only while someone subscribes (a 720p message costs about 2.6 ms of CPU to build,
        camera_info about 0.5 ms with its publishing: for nobody when no one listens), both
        with the shared-memory frame's stamp. A frame read back from its shared-memory slot
        after the capture thread began to overwrite it is not published (counted)."""
        pixels = frame.image
        header = Header(stamp=stamp_from_ns(frame.stamp_ns), frame_id=self._frame_id)
        height, width = pixels.shape[:2]
        self._last_out_size = (width, height)
        if self._image_pub.get_subscription_count() > 0:
            message = image_from_array(pixels, self._encoding, header)
            if frame.intact is None or frame.intact():
                self._image_pub.publish(message)
                self._image_messages += 1
            else:
                self._image_messages_torn += 1
        if self._info_pub.get_subscription_count() > 0:
            info = self._info_for(width, height)
            info.header = header
            self._info_pub.publish(info)
        self._latency.add(time.monotonic() - frame.monotonic_s)
        self._publish_rate.tick()

    def _open_shared(self) -> Optional[FrameWriter]:
        """The shared-memory channel of image_raw, or None (with the reason in diagnostics)."""
        if not self._settings.shared_memory:
            self._shared_state = 'off (parameter shared_memory)'
            return None
        if not shm_available():
            self._shared_state = 'unavailable on this host'
            return None
        channel = channel_for_topic(self.resolve_topic_name('image_raw'),
                                    self.context.get_domain_id())
        try:
            writer = FrameWriter(channel)
        except (ChannelBusyError, OSError) as exc:
            self._shared_state = f'off: {exc}'
            self.get_logger().warning(f'no shared memory for image_raw ({exc}); frames reach '
                                      'the detector as image messages')
            return None
        self._shared_state = writer.segment_name
        return writer

    def _to_shared(self, stamp_ns: int, pixels=None) -> Optional[int]:
        """Write `pixels` to shared memory, or publish the loaned slot they were decoded into
        (None); return the frame's sequence number there, None if it did not go there."""
        if self._shared is None:
            return None
        try:
            if pixels is None:
                return self._shared.commit(stamp_ns, self._frame_id)
            return self._shared.write(pixels, stamp_ns, self._frame_id, self._encoding)
        except (ChannelBusyError, OSError) as exc:  # /dev/shm full, or another live writer
            self._shared_failed(exc)
            return None

    def _shared_failed(self, exc: Exception) -> None:
        self._shared_state = f'off: {exc}'
        self.get_logger().warning(f'shared memory for image_raw failed ({exc}); frames '
                                  'reach the detector as image messages from now on')
        self._shared.close()
        self._shared = None

    def _info_for(self, width: int, height: int) -> CameraInfo:
        """The CameraInfo of this output size, built once per size (its header is set by the
        caller)."""
        if self._info_cache is None or self._info_cache[0] != (width, height):
            base = self._calibration or uncalibrated(width, height)
            info = camera_info_from_calibration(base.scaled_to(width, height), Header())
            self._info_cache = ((width, height), info)
        return self._info_cache[1]

    def _no_signal_size(self) -> tuple:
        if self._last_out_size is not None:
            return self._last_out_size
        if self._calibration is not None:
            return output_size(self._calibration.width, self._calibration.height, *self._size)
        return output_size(*FALLBACK_SIZE, *self._size)

    def _publish_no_signal(self) -> None:
        """A clearly marked picture, without camera_info: it is not an image of the scene.
        Its header says so (frame_id NO_SIGNAL_FRAME_ID); it never goes to shared memory, so
        the detector never runs the model on it."""
        width, height = self._no_signal_size()
        stats = self._worker.snapshot()
        detail = f'{self.get_namespace().strip("/") or "camera"}: {stats.state.value}'
        pixels = prepare_frame(make_no_signal_frame(width, height, detail=detail),
                               encoding=self._encoding)
        stamp_ns = self._next_stamp_ns(self.get_clock().now().nanoseconds)
        header = Header(stamp=stamp_from_ns(stamp_ns), frame_id=NO_SIGNAL_FRAME_ID)
        self._image_pub.publish(image_from_array(pixels, self._encoding, header))
        self._no_signal_published += 1

    # -- diagnostics -----------------------------------------------------------------------

    def _publish_diagnostics(self) -> None:
        stats = self._worker.snapshot()
        latency = self._latency.percentiles_ms(50, 99)
        if stats.state is CaptureState.STREAMING:
            message = f'streaming {stats.frame_width}x{stats.frame_height}'
        else:
            message = stats.state.value + (f': {stats.last_error}' if stats.last_error else '')
        report = CameraReport(
            state=stats.state.value, url=self._source.safe_url, capture_fps=stats.capture_fps,
            publish_fps=self._publish_rate.rate_hz(), frames_captured=stats.frames_captured,
            frames_published=self._publish_rate.count,
            stale_frames_dropped=stats.frames_dropped, rate_capped_frames=self._rate_skipped,
            corrupt_frames_skipped=stats.frames_corrupt, reconnects=stats.reconnect_attempts,
            reconnects_succeeded=stats.reconnects_succeeded,
            last_frame_age_s=stats.last_frame_age_s,
            source_size=f'{stats.frame_width}x{stats.frame_height}',
            source_fps=stats.source_fps,
            capture_to_publish_p50_ms=latency[50], capture_to_publish_p99_ms=latency[99],
            no_signal_frames=self._no_signal_published, reliability=self._settings.reliability,
            image_messages=self._image_messages, image_messages_torn=self._image_messages_torn,
            shared_memory=self._shared_state)
        status = diagnostic_status(
            _LEVELS[stats.state], report_name(self.get_fully_qualified_name(), CAMERA_SUFFIX),
            message, report, hardware_id=self._source.safe_url, redact=self._source.redact)
        self._diag_pub.publish(DiagnosticArray(
            header=Header(stamp=self.get_clock().now().to_msg()), status=[status]))

    def destroy_node(self) -> None:
        """Stop capture and publishing first, so nothing publishes on a destroyed node."""
        self._stopping.set()
        if self._worker is not None:
            self._capture_stuck = not self._worker.stop(timeout_s=1.0)
            self._publish_thread.join(timeout=1.0)
            if self._shared is not None:  # a capture thread still stuck in OpenCV can only
                self._shared.close()  # fail to write after this; unlinks it (see shm_frames)
        logging.getLogger(CORE_LOGGER).removeHandler(self._log_handler)
        super().destroy_node()

    def needs_hard_exit(self) -> bool:
        """True when the capture thread is still blocked inside OpenCV (core/capture.py)."""
        return self._capture_stuck


def main(args=None) -> int:
    use_large_frame_transport()
    return run_node(CameraNode, 'camera_node', args)


if __name__ == '__main__':
    sys.exit(main())
