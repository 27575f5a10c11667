"""The /diagnostics contract between this package's processes: status names and keys. ROS-free.

Writers (camera_node, detector_node) fill one of the report dataclasses below and publish
`report.values()` as the KeyValue list of a DiagnosticStatus named `report_name(...)`; readers
(the status table of `multicam-ros launch`, tests, anyone) parse them back with `parse(...)`.
The field names are the keys, so a key is written in exactly one place. Monitoring only: no
control logic of this package depends on another process's diagnostics.

Status names:
- `<camera_node fqn>: camera`   one CameraReport per camera_node, e.g. `/front/camera_node: camera`
- `<detector fqn>: <camera ns>` one ServedCameraReport per camera the detector serves
- `<detector fqn>: model`       one ModelReport for the shared model
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Dict, Mapping, Optional, Type, TypeVar

R = TypeVar('R')

CAMERA_SUFFIX = 'camera'
MODEL_SUFFIX = 'model'
NEVER = 'never'  # last_frame_age_s before the first frame


def report_name(node_fqn: str, suffix: str) -> str:
    """`/front/camera_node` + `camera` -> `/front/camera_node: camera`."""
    return f'{node_fqn}: {suffix}'


@dataclass(frozen=True)
class CameraReport:
    """What one camera_node reports: state, rates, drops, reconnects, latency."""

    state: str  # a CaptureState value: connecting, streaming, reconnecting, ended, stopped
    url: str  # redacted
    capture_fps: float
    publish_fps: float
    frames_captured: int
    frames_published: int
    stale_frames_dropped: int  # replaced before the ROS messages went out (never shared memory's)
    rate_capped_frames: int  # skipped by the fps cap
    corrupt_frames_skipped: int
    reconnects: int  # opens tried after the stream was lost or never came
    reconnects_succeeded: int
    last_frame_age_s: Optional[float]  # None: never had a frame
    source_size: str  # WxH of the decoded frames
    source_fps: float  # as the stream or file reports it, 0 if unknown
    capture_to_publish_p50_ms: float
    capture_to_publish_p99_ms: float
    no_signal_frames: int
    reliability: str
    image_messages: int = 0  # image_raw messages sent (only while it has subscribers)
    # image_raw messages not sent: the frame's shared-memory slot was rewritten while the
    # publishing thread copied it (a publishing thread three frames behind)
    image_messages_torn: int = 0
    shared_memory: str = ''  # the frames' shared-memory segment, or why there is none


# ServedCameraReport.source: live (frames arrive), waiting (none yet), no_signal (the camera
# publishes its NO SIGNAL picture), silent (nothing for a while). Only live is "up".
SOURCE_STATES = ('live', 'waiting', 'no_signal', 'silent')


@dataclass(frozen=True)
class ServedCameraReport:
    """What the detector reports for each camera it serves."""

    frames_in_hz: float
    frames_processed_hz: float
    frames_received: int
    frames_processed: int
    frames_dropped: int  # replaced in the detector's newest-frame slot before inference
    frames_invalid: int
    latency_p50_ms: float  # capture stamp -> detections published
    latency_p95_ms: float
    tracks: Optional[int] = None  # None: tracking off
    results_dropped: int = 0  # results replaced before the output stage took them
    input_path: str = 'subscription'  # where its frames come from: subscription, shared_memory
    shared_memory_torn: int = 0  # shared-memory frames discarded: overwritten mid-copy/upload
    shared_memory_in_place: int = 0  # shared-memory frames uploaded straight from it (CUDA)
    source: str = 'live'  # one of SOURCE_STATES: is the camera itself delivering pictures?
    frames_too_large: int = 0  # refused before any copy: over max_frame_pixels/max_frame_bytes
    stamps_invalid: int = 0  # header stamp zero or in the future: kept out of the latency


@dataclass(frozen=True)
class ModelReport:
    """What the detector reports about its one shared model."""

    device: str
    model: str
    model_memory_mb: float
    batches: int
    batch_size_mean: float
    batch_size_max: int
    batch_sizes: str  # histogram 'size:count size:count ...'
    inference_p50_ms: float
    inference_p95_ms: float
    inference_errors: int
    inference_max_ms: Optional[float] = None  # the longest of the last batches
    # handing a batch's results over to the node (the whole loop is collect, inference, this)
    results_handover_p95_ms: Optional[float] = None
    results_handover_max_ms: Optional[float] = None
    model_pid: Optional[int] = None  # the model's own process (for top, py-spy, nvidia-smi)
    cuda_allocated_mb: Optional[float] = None  # None off CUDA
    cuda_reserved_mb: Optional[float] = None


def _text(value: object) -> str:
    if isinstance(value, float):
        return f'{value:.2f}' if abs(value) < 10 else f'{value:.1f}'
    return str(value)


def values(report: object) -> Dict[str, str]:
    """The KeyValue pairs of a report, in field order; None fields are left out (last frame
    age: 'never')."""
    out = {}
    for f in dataclasses.fields(report):
        value = getattr(report, f.name)
        if value is None:
            if f.name == 'last_frame_age_s':
                out[f.name] = NEVER
            continue
        out[f.name] = _text(value)
    return out


def parse(cls: Type[R], pairs: Mapping[str, str]) -> Optional[R]:
    """A report from received KeyValue pairs, or None when a required key is missing or a value
    does not parse (another version of this package, or not one of our statuses)."""
    kwargs = {}
    for f in dataclasses.fields(cls):
        text = pairs.get(f.name)
        if text is None or (f.name == 'last_frame_age_s' and text == NEVER):
            if f.default is dataclasses.MISSING and f.name != 'last_frame_age_s':
                return None
            kwargs[f.name] = f.default if f.default is not dataclasses.MISSING else None
            continue
        kind = f.type.replace('Optional[', '').rstrip(']') if isinstance(f.type, str) \
            else f.type.__name__
        try:
            kwargs[f.name] = {'int': int, 'float': float}.get(kind, str)(text)
        except ValueError:
            return None
    return cls(**kwargs)


SILENT_AFTER_S = 3.0  # as long as a camera_node waits before it reconnects (read_timeout_s)
SILENT_AFTER_INTERVALS = 3.0  # ... or this many of the camera's usual frame intervals
FUTURE_STAMP_TOLERANCE_NS = 1_000_000_000  # clocks of two hosts may differ a little


def source_state(now_s: float, last_frame_s: Optional[float],
                 last_no_signal_s: Optional[float], usual_interval_s: float = 0.0) -> str:
    """ServedCameraReport.source from what the detector saw of one camera (monotonic times):
    no_signal while the newest thing it sent was a NO SIGNAL picture, silent when nothing came
    for SILENT_AFTER_S (or SILENT_AFTER_INTERVALS of a slow camera's usual interval)."""
    if last_no_signal_s is not None and (last_frame_s is None or last_no_signal_s > last_frame_s):
        return 'no_signal'
    if last_frame_s is None:
        return 'waiting'
    if now_s - last_frame_s > max(SILENT_AFTER_S, SILENT_AFTER_INTERVALS * usual_interval_s):
        return 'silent'
    return 'live'


def stamp_plausible(stamp_ns: int, now_ns: int) -> bool:
    """False for a header stamp of zero or in the future: such frames are counted
    (stamps_invalid) and kept out of the latency figures."""
    return 0 < stamp_ns <= now_ns + FUTURE_STAMP_TOLERANCE_NS
