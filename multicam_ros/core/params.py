"""Each node's parameters: the settings of the core's config dataclasses, composed. ROS-free.

Components declare their own settings (`CaptureOptions` in capture.py, `ModelConfig` in
models/base.py, `TrackerConfig` in tracking.py); the settings that belong to a node as a whole
are declared here. `CAMERA_PARAMS` and `DETECTOR_PARAMS` list them in the order the nodes
declare them; the nodes, the cams.yaml checks and the README tables all read these two lists.
"""
import dataclasses
import re
from dataclasses import dataclass
from typing import Any, List, Mapping, NamedTuple, Optional, Sequence, Tuple

from multicam_ros.core.capture import CaptureOptions
from multicam_ros.core.imaging import ENCODINGS
from multicam_ros.core.models.base import ModelConfig
from multicam_ros.core.process import parse_cpu_list
from multicam_ros.core.settings import ConfigError, Setting, build, setting, settings_of
from multicam_ros.core.tracking import TrackerConfig

RELIABILITIES = ('reliable', 'best_effort')
ANNOTATE_MODES = ('auto', 'always', 'never')
FRAME_PATHS = ('auto', 'subscription', 'shared_memory')
_ROS_NAME = re.compile(r'[A-Za-z_][A-Za-z0-9_]*')


def _cpu_affinity(process: str, advice: str):
    """The `cpu_affinity` setting of a node process (checked in its config's __post_init__)."""
    return setting('', f"CPUs this {process} process may run on, as a Linux CPU list ('0-3', "
                   f"'0,2,4-7'); empty: every CPU. {advice}")


@dataclass(frozen=True)
class CameraSettings:
    """camera_node's own settings (the capture ones are `CaptureOptions`)."""

    url: str = setting(
        '', 'Camera source: rtsp://, rtsps://, http(s):// URL, a video file path or /dev/videoN. '
        'A password may be given in the URL or through password_env.')
    password_env: str = setting(
        '', 'Name of an environment variable holding the camera password; it is put into the '
        'URL (which then names only the user), so that the password need not sit in a config '
        'file.')
    frame_id: str = setting(
        '', 'frame_id of published headers; empty: <namespace>_optical_frame '
        '(camera_optical_frame without a namespace).')
    fps: float = setting(
        0.0, 'Publish at most this many frames per second; 0 publishes every captured frame.',
        min_value=0.0, max_value=1000.0, read_only=False)
    width: int = setting(
        0, 'Resize to this width before publishing; 0 keeps the source width (or follows '
        'height, keeping the aspect ratio).', min_value=0, max_value=16384)
    height: int = setting(
        0, 'Resize to this height before publishing; 0 keeps the source height (or follows '
        'width, keeping the aspect ratio).', min_value=0, max_value=16384)
    encoding: str = setting('bgr8', 'Encoding of image_raw.', choices=ENCODINGS)
    camera_info_url: str = setting(
        '', 'Calibration YAML (camera_calibration format) as a path or file:// URL; empty '
        'publishes an uncalibrated CameraInfo of the image size.')
    no_signal_image: bool = setting(
        True, 'While the camera is away, publish a NO SIGNAL picture once per second at the '
        'last known size.', read_only=False)
    reliability: str = setting(
        'reliable', 'QoS reliability of image_raw and camera_info (KEEP_LAST depth 1, '
        'VOLATILE). reliable reaches reliable and best-effort subscribers alike.',
        choices=RELIABILITIES)
    diagnostics_period_s: float = setting(
        1.0, 'Period of /diagnostics messages.', min_value=0.1, max_value=60.0)
    shared_memory: bool = setting(
        True, "Also offer each frame to this package's detector on this host through shared "
        'memory (one copy instead of an image message). image_raw is then built only while '
        'it has subscribers. Off: topics only.')
    cpu_affinity: str = _cpu_affinity(
        'camera', "With many cameras on one host, keep them off the detector's CPUs (see its "
        'cpu_affinity).')

    def __post_init__(self) -> None:
        parse_cpu_list(self.cpu_affinity, 'cpu_affinity')


@dataclass(frozen=True)
class DetectorSettings:
    """detector_node's own settings (the model's are `ModelConfig`, tracking's
    `TrackerConfig`)."""

    cameras: Tuple[str, ...] = setting(
        [], 'Camera namespaces to serve, e.g. [/cam0, /cam1]; the node subscribes to '
        '<camera>/image_raw of each.')
    max_batch_size: int = setting(
        16, 'Most frames in one forward pass (one per camera).', min_value=1, max_value=256)
    reliability: str = setting(
        'reliable', 'QoS reliability of the image subscriptions (KEEP_LAST depth 1). reliable '
        'matches this package\'s cameras; best_effort matches every publisher, including '
        'sensor-data ones.', choices=RELIABILITIES)
    annotate: str = setting(
        'auto', 'image_annotated: auto (only while someone subscribes), always, or never.',
        choices=ANNOTATE_MODES, read_only=False)
    diagnostics_period_s: float = setting(
        1.0, 'Period of /diagnostics messages.', min_value=0.1, max_value=60.0)
    executor_threads: int = setting(
        1, 'Threads of the executor serving the image_raw subscriptions: 1 is a '
        'SingleThreadedExecutor, more a MultiThreadedExecutor. Each callback hands its frame '
        'to the model process; they share this process\'s GIL (about 10 ms per 720p message), '
        'the model does not.', min_value=1, max_value=64)
    frame_path: str = setting(
        'auto', 'How frames reach the detector: auto takes a camera from shared memory while a '
        'camera_node of this package on this host writes it, else from its image_raw '
        'subscription; subscription or shared_memory force one path for every camera.',
        choices=FRAME_PATHS)
    max_frame_pixels: int = setting(
        4096 * 4096, 'Largest frame accepted, in pixels (width x height); larger ones are '
        'refused before any copy and counted per camera (frames_too_large). The default takes '
        '4K UHD and refuses what no camera sends.', min_value=1, max_value=2**31 - 1)
    max_frame_bytes: int = setting(
        64 * 2**20, 'Largest frame accepted, in bytes of image data (step x height); larger '
        'ones are refused before any copy and counted per camera (frames_too_large).',
        min_value=1, max_value=2**31 - 1)
    tracking: bool = setting(
        True, 'Track objects per camera and put the track id in Detection2D.id.',
        name='tracking.enabled')
    cpu_affinity: str = _cpu_affinity(
        'detector', 'Its model process inherits them. With many cameras on one GPU host, giving '
        'the detector CPUs of its own (and the cameras the others) keeps the decoding cameras '
        'from slowing the inference thread.')

    def __post_init__(self) -> None:
        parse_cpu_list(self.cpu_affinity, 'cpu_affinity')


TRACKING_PREFIX = 'tracking.'

CAMERA_PARAMS: Tuple[Setting, ...] = settings_of(CameraSettings) + settings_of(CaptureOptions)
DETECTOR_PARAMS: Tuple[Setting, ...] = (settings_of(DetectorSettings) + settings_of(ModelConfig)
                                        + settings_of(TrackerConfig, TRACKING_PREFIX))


def camera_configs(values: Mapping[str, Any]) -> Tuple[CameraSettings, CaptureOptions]:
    """camera_node's configs from its parameter values, in one call; raises ConfigError."""
    return build(CameraSettings, values), build(CaptureOptions, values)


class DetectorConfigs(NamedTuple):
    """Everything detector_node is configured with."""

    settings: DetectorSettings
    model: ModelConfig  # its confidence_threshold already lowered for tracking (see below)
    tracker: Optional[TrackerConfig]  # None with tracking off
    publish_threshold: float  # the confidence_threshold parameter: what is published


def detector_configs(values: Mapping[str, Any]) -> DetectorConfigs:
    """detector_node's configs from its parameter values, in one call; raises ConfigError.
    With tracking on, the model also keeps the weak detections (down to
    tracking.low_score_threshold) that may continue a track; only those that do, and those
    from confidence_threshold up, are published."""
    settings = build(DetectorSettings, values)
    tracker = build(TrackerConfig, values, TRACKING_PREFIX) if settings.tracking else None
    model = build(ModelConfig, values)
    publish_threshold = model.confidence_threshold
    if tracker is not None and tracker.low_score_threshold < model.confidence_threshold:
        model = dataclasses.replace(model, confidence_threshold=tracker.low_score_threshold)
    return DetectorConfigs(settings, model, tracker, publish_threshold)


def normalise_cameras(cameras: Sequence[str]) -> List[str]:
    """The `cameras` parameter as absolute namespaces ('cam0' -> '/cam0'); ConfigError when it
    is empty, a name is not a ROS namespace, or one is listed twice."""
    accepted = ('camera namespaces such as /cam0 or /robot/front: letters, digits and _ in '
                '/-separated tokens, not starting with a digit')
    if not cameras:
        raise ConfigError.of('cameras', 'empty; list the camera namespaces to serve, e.g. '
                             "cameras:=['/cam0','/cam1']", accepted)
    result = []
    for camera in cameras:
        tokens = camera.strip().strip('/').split('/')
        namespace = '/' + '/'.join(tokens)
        if not all(is_ros_name(token) for token in tokens):
            raise ConfigError.of('cameras', f'{camera!r} is not a valid ROS namespace', accepted)
        if namespace in result:
            raise ConfigError.of('cameras', f'{namespace!r} is listed twice', accepted)
        result.append(namespace)
    return result


def is_ros_name(token: str) -> bool:
    """One ROS name token: letters, digits and _, not starting with a digit (and not empty)."""
    return _ROS_NAME.fullmatch(token) is not None
