"""Parameter specifications: the one place that defines each node's parameters, their defaults,
accepted values and descriptions.

ROS-free. The nodes declare their ROS parameters from these specs (node_main.declare_params), and
the launch configuration is validated against the same specs, so they cannot disagree.
"""
import math
from dataclasses import dataclass
from typing import Any, Dict, Iterable, Optional, Tuple


@dataclass(frozen=True)
class ParamSpec:
    """One parameter: its type is the type of `default`."""

    name: str
    default: Any
    description: str
    min_value: Optional[float] = None
    max_value: Optional[float] = None
    choices: Tuple[str, ...] = ()
    read_only: bool = False

    @property
    def accepted(self) -> str:
        """Human words for the accepted values, used in every error message."""
        if self.choices:
            return 'one of ' + ', '.join(repr(c) for c in self.choices)
        kind = _TYPE_WORDS[type(self.default)]
        if self.min_value is not None and self.max_value is not None:
            return f'{kind} from {self.min_value:g} to {self.max_value:g}'
        if self.min_value is not None:
            return f'{kind} >= {self.min_value:g}'
        return kind

    def check(self, value: Any, where: str = '') -> Any:
        """Return `value` coerced to this spec's type, or raise ValueError naming the parameter
        (prefixed by `where`, e.g. a config file location) and the accepted values."""
        label = f'{where}{self.name}'
        kind = type(self.default)
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if kind is list:
            ok = isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value)
            value = list(value) if ok else value
        else:
            ok = isinstance(value, kind) and not (kind is not bool and isinstance(value, bool))
        if not ok:
            raise ValueError(f'parameter {label}: {value!r} is not {self.accepted}')
        if self.choices and value not in self.choices:
            raise ValueError(f'parameter {label}: {value!r} is not {self.accepted}')
        if kind in (int, float):
            low = -math.inf if self.min_value is None else self.min_value
            high = math.inf if self.max_value is None else self.max_value
            if not low <= value <= high or (kind is float and math.isnan(value)):
                raise ValueError(f'parameter {label}: {value!r} is not {self.accepted}')
        return value


_TYPE_WORDS = {bool: 'true or false', int: 'an integer', float: 'a number', str: 'a string',
               list: 'a list of strings'}


def specs_by_name(specs: Iterable[ParamSpec]) -> Dict[str, ParamSpec]:
    return {spec.name: spec for spec in specs}


CAMERA_PARAMS: Tuple[ParamSpec, ...] = (
    ParamSpec('url', '', 'Camera source: rtsp://, rtsps://, http(s):// URL, a video file path '
              'or /dev/videoN. A password may be given in the URL or through password_env.',
              read_only=True),
    ParamSpec('password_env', '', 'Name of an environment variable holding the camera password; '
              'it is put into the URL (which then names only the user), so that the password '
              'need not sit in a config file.', read_only=True),
    ParamSpec('frame_id', '', 'frame_id of published headers; empty: <namespace>_optical_frame '
              '(camera_optical_frame without a namespace).', read_only=True),
    ParamSpec('fps', 0.0, 'Publish at most this many frames per second; 0 publishes every '
              'captured frame.', min_value=0.0, max_value=1000.0),
    ParamSpec('width', 0, 'Resize to this width before publishing; 0 keeps the source width '
              '(or follows height, keeping the aspect ratio).', min_value=0, max_value=16384,
              read_only=True),
    ParamSpec('height', 0, 'Resize to this height before publishing; 0 keeps the source height '
              '(or follows width, keeping the aspect ratio).', min_value=0, max_value=16384,
              read_only=True),
    ParamSpec('encoding', 'bgr8', 'Encoding of image_raw.', choices=('bgr8', 'rgb8', 'mono8'),
              read_only=True),
    ParamSpec('rtsp_transport', 'tcp', 'RTSP transport: tcp (robust) or udp (lower latency on a '
              'clean network, loses frames on a lossy one).', choices=('tcp', 'udp'),
              read_only=True),
    ParamSpec('open_timeout_s', 5.0, 'Give up opening the stream after this long.',
              min_value=0.1, max_value=600.0, read_only=True),
    ParamSpec('read_timeout_s', 3.0, 'Reconnect when no frame arrived for this long.',
              min_value=0.1, max_value=600.0, read_only=True),
    ParamSpec('reconnect_delay_min_s', 0.5, 'First delay before reconnecting; it doubles (with '
              'jitter) after each failed attempt.', min_value=0.01, max_value=600.0,
              read_only=True),
    ParamSpec('reconnect_delay_max_s', 10.0, 'Longest delay between reconnect attempts.',
              min_value=0.01, max_value=3600.0, read_only=True),
    ParamSpec('loop', True, 'Video files only: start again at the end instead of stopping.',
              read_only=True),
    ParamSpec('camera_info_url', '', 'Calibration YAML (camera_calibration format) as a path or '
              'file:// URL; empty publishes an uncalibrated CameraInfo of the image size.',
              read_only=True),
    ParamSpec('no_signal_image', True, 'While the camera is away, publish a NO SIGNAL picture '
              'once per second at the last known size.'),
    ParamSpec('reliability', 'reliable', 'QoS reliability of image_raw and camera_info '
              '(KEEP_LAST depth 1, VOLATILE). reliable reaches reliable and best-effort '
              'subscribers alike.', choices=('reliable', 'best_effort'), read_only=True),
    ParamSpec('diagnostics_period_s', 1.0, 'Period of /diagnostics messages.', min_value=0.1,
              max_value=60.0, read_only=True),
)


def camera_rule_problem(values: Dict[str, Any]) -> str:
    """What is wrong across several camera parameters (each already valid alone), or ''.
    `values` may leave parameters out: their defaults count."""
    defaults = specs_by_name(CAMERA_PARAMS)
    low, high = (values.get(name, defaults[name].default)
                 for name in ('reconnect_delay_min_s', 'reconnect_delay_max_s'))
    if low > high:
        return (f'reconnect_delay_min_s ({low:g}) must not exceed reconnect_delay_max_s '
                f'({high:g})')
    return ''


MODEL_BACKENDS = ('torchvision', 'torchscript', 'ultralytics')

DETECTOR_PARAMS: Tuple[ParamSpec, ...] = (
    ParamSpec('cameras', [], 'Camera namespaces to serve, e.g. [/cam0, /cam1]; the node '
              'subscribes to <camera>/image_raw of each.', read_only=True),
    ParamSpec('model.backend', 'torchvision', 'Model back-end.', choices=MODEL_BACKENDS,
              read_only=True),
    ParamSpec('model.name', 'fasterrcnn_mobilenet_v3_large_320_fpn', 'torchvision detection '
              'architecture (backend torchvision).', read_only=True),
    ParamSpec('model.weights', 'DEFAULT', 'torchvision weights: a local state-dict file, '
              'DEFAULT (published COCO weights, downloaded by torchvision where a network '
              'exists) or none (random initialisation: tests and benchmarks only).',
              read_only=True),
    ParamSpec('model.path', '', 'Model file for the torchscript and ultralytics back-ends.',
              read_only=True),
    ParamSpec('model.class_names', [], 'Class names by class id; overrides the model\'s own.',
              read_only=True),
    ParamSpec('model.labels_file', '', 'File of class names, one per line (or a YAML/JSON '
              'list).', read_only=True),
    ParamSpec('device', 'auto', 'auto (CUDA when present, else CPU), cpu, cuda or cuda:N.',
              read_only=True),
    ParamSpec('half', False, 'Run the model in fp16 (CUDA only).', read_only=True),
    ParamSpec('input_size', 640, 'Square network input of letterboxing back-ends, px.',
              min_value=32, max_value=4096, read_only=True),
    ParamSpec('confidence_threshold', 0.5, 'Drop detections scoring below this.',
              min_value=0.0, max_value=1.0, read_only=True),
    ParamSpec('iou_threshold', 0.45, 'Non-maximum suppression IoU threshold.', min_value=0.0,
              max_value=1.0, read_only=True),
    ParamSpec('max_detections', 100, 'Most detections kept per image.', min_value=1,
              max_value=10000, read_only=True),
    ParamSpec('classes', [], 'Keep only these class names; empty keeps all.', read_only=True),
    ParamSpec('max_batch_size', 16, 'Most frames in one forward pass (one per camera).',
              min_value=1, max_value=256, read_only=True),
    ParamSpec('reliability', 'reliable', 'QoS reliability of the image subscriptions (KEEP_LAST '
              'depth 1). reliable matches this package\'s cameras; best_effort matches every '
              'publisher, including sensor-data ones.', choices=('reliable', 'best_effort'),
              read_only=True),
    ParamSpec('annotate', 'auto', 'image_annotated: auto (only while someone subscribes), '
              'always, or never.', choices=('auto', 'always', 'never')),
    ParamSpec('diagnostics_period_s', 1.0, 'Period of /diagnostics messages.', min_value=0.1,
              max_value=60.0, read_only=True),
    ParamSpec('executor_threads', 1, 'Threads of the executor serving the subscriptions: 1 is '
              'a SingleThreadedExecutor, more a MultiThreadedExecutor. The callbacks only fill '
              'the newest-frame slots; on 2 cores, with 4 cameras, 4 threads left the inference '
              'thread 9.5-11 frames/s per camera where 1 thread left 13-21 (the GIL).',
              min_value=1, max_value=64, read_only=True),
    ParamSpec('tracking.enabled', True, 'Track objects per camera and put the track id in '
              'Detection2D.id.', read_only=True),
    ParamSpec('tracking.max_age_s', 1.0, 'A track not seen for this long (capture time) ends; '
              'its id is never reused.', min_value=0.01, max_value=600.0, read_only=True),
    ParamSpec('tracking.high_score_threshold', 0.5, 'Detections from this score are matched to '
              'tracks first.', min_value=0.0, max_value=1.0, read_only=True),
    ParamSpec('tracking.low_score_threshold', 0.1, 'Weaker detections, down to this score, can '
              'still continue a track (published when they do, even below '
              'confidence_threshold).', min_value=0.0, max_value=1.0, read_only=True),
    ParamSpec('tracking.new_track_score_threshold', 0.6, 'An unmatched detection from this '
              'score starts a new track.', min_value=0.0, max_value=1.0, read_only=True),
    ParamSpec('tracking.match_iou_threshold', 0.2, 'Least IoU between a track\'s predicted box '
              'and a detection for them to match.', min_value=0.0, max_value=1.0,
              read_only=True),
    ParamSpec('tracking.min_hits', 2, 'Matches before a track is confirmed and gets its id.',
              min_value=1, max_value=100, read_only=True),
    ParamSpec('tracking.class_aware', True, 'A detection continues only tracks of its own '
              'class.', read_only=True),
    ParamSpec('tracking.trail_length', 30, 'Centres drawn as a trail behind each track in '
              'image_annotated; 0 draws none.', min_value=0, max_value=1000, read_only=True),
)
