"""The people's view of a running system: the newest /diagnostics reports and the status table
that `multicam-ros launch` prints. ROS-free.

`DiagnosticsBoard` keeps the newest KeyValue pairs of each status name, fed by whatever
listens to /diagnostics (ros/diagnostics_listener.py in `multicam-ros launch`), and hands them
out only as the typed reports of core/diagnostics.py, the one place that knows the status names
and keys. `status_table` renders those reports together with what the supervisor knows of each
process (`ProcessStatus`: running, restarting and when, failed and why). Cells are separated by
two spaces or more and hold at most single spaces (`down (no signal)`), so a reader can split
rows with `re.split(r'\\s{2,}', ...)`.
"""
import threading
import time
from dataclasses import dataclass
from typing import Dict, List, Mapping, Optional, Sequence, Tuple, Type, TypeVar

from multicam_ros.core.diagnostics import CAMERA_SUFFIX, MODEL_SUFFIX, SOURCE_STATES, \
    CameraReport, ModelReport, ServedCameraReport, parse, report_name
from multicam_ros.system.plan import Plan

R = TypeVar('R')
EMPTY = '-'  # a cell with no value (yet)


class DiagnosticsBoard:
    """The newest /diagnostics status of each name, with when it arrived. Thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._statuses: Dict[str, Tuple[float, Dict[str, str]]] = {}

    def update(self, name: str, values: Mapping[str, str]) -> None:
        """Keep the KeyValue pairs of one received status (the listener calls this)."""
        with self._lock:
            self._statuses[name] = (time.monotonic(), dict(values))

    def report(self, cls: Type[R], name: str, since_s: float = 0.0) -> Optional[R]:
        """The newest status `name` as a `cls` report (core/diagnostics.py), if one arrived
        at or after `since_s` (time.monotonic) and parses; else None."""
        with self._lock:
            entry = self._statuses.get(name)
        if entry is None or entry[0] < since_s:
            return None
        return parse(cls, entry[1])


@dataclass(frozen=True)
class ProcessStatus:
    """What the supervisor knows of one node's process, for the table."""

    running: bool
    restarting: bool  # exited and waiting for its restart
    started_s: float  # time.monotonic of its latest start: older reports are a previous run's
    restarts: int
    restart_in_s: Optional[float] = None  # restarting: seconds left before the next start
    failed: bool = False  # exited with a configuration error: never started again
    last_exit: str = ''  # the latest exit, e.g. 'killed by SIGKILL after 2.1 s'
    message: str = ''  # failed: its last output lines that say why


# ServedCameraReport.source 'live' is "up"; every other state is "down", and the table says
# which (`down (no signal)`).
LIVE = SOURCE_STATES[0]


def _state(process: ProcessStatus, running_state: str) -> str:
    """The state cell of a node: `running_state` while its process runs."""
    if process.running:
        return running_state
    if process.failed:
        return 'failed'
    return 'restarting' if process.restarting else 'exited'


def _note(label: str, process: ProcessStatus) -> Optional[str]:
    """The line under the tables for a node that is not running, saying why."""
    if process.running:
        return None
    if process.failed:
        return f'  {label}: failed, not restarted ({process.last_exit}): {process.message}'
    if process.restarting:
        left = f' in {process.restart_in_s:.1f} s' if process.restart_in_s is not None else ''
        return f'  {label}: restarting{left}, last exit: {process.last_exit}'
    return None


def _served_cells(served: Optional[ServedCameraReport]) -> List[str]:
    """fps done and latency, or 'down (no signal)' and '-' while the detector hears no live
    pictures from the camera (its NO SIGNAL picture, none yet, or silence)."""
    if served is None:
        return [EMPTY, EMPTY]
    if served.source != LIVE:
        return [f'down ({served.source.replace("_", " ")})', EMPTY]
    return [_cell(served.frames_processed_hz), _cell(served.latency_p50_ms)]


def _cell(value: object) -> str:
    """A number as people read it in the table; None (no value yet) as '-'."""
    if value is None:
        return EMPTY
    if isinstance(value, float):
        return f'{value:.1f}'
    return str(value)


def _table(header: Sequence[str], rows: Sequence[Sequence[str]], left: int) -> List[str]:
    """Columns padded to their widest cell; the first `left` columns left-aligned."""
    widths = [max(len(str(row[i])) for row in [header, *rows]) for i in range(len(header))]
    lines = []
    for row in [header, *rows]:
        cells = [str(cell).ljust(width) if i < left else str(cell).rjust(width)
                 for i, (cell, width) in enumerate(zip(row, widths))]
        lines.append('  ' + '  '.join(cells).rstrip())
    return lines


def status_table(plan: Plan, board: DiagnosticsBoard, processes: Mapping[str, ProcessStatus],
                 uptime_s: float) -> List[str]:
    """The people's view of the system: one row per camera, one for the detector, then a line
    for each node that is restarting (the delay left, its last exit) or failed (why).

    `processes` maps each planned node's fqn to its process. Camera: state and capture fps
    (`fps in`) from its camera_node; frames processed per second (or `down (why)` while the
    detector gets no live pictures from it), capture-to-detections latency p50, drops and
    refused frames from the detector; dropped = frames the camera replaced before publishing +
    frames the detector replaced before inference; invalid, too large and bad stamps are the
    detector's counts of frames it refused (malformed, over its size limit) and of stamps
    (zero, in the future) it kept out of the latency. Detector: mean and largest batch,
    device, model size, GPU memory reserved (CUDA only), inference p50, restarts.
    """
    detector = plan.detector
    detector_process = processes[detector.fqn] if detector else None
    rows = []
    notes = []
    for node in plan.cameras:
        process = processes[node.fqn]
        camera = board.report(CameraReport, report_name(node.fqn, CAMERA_SUFFIX),
                              process.started_s)
        # Only the running detector's reports: a killed one's last words are stale.
        served = board.report(ServedCameraReport, report_name(detector.fqn, node.namespace),
                              detector_process.started_s) \
            if detector and detector_process.running else None
        state = _state(process, camera.state if camera else 'starting')
        dropped = EMPTY
        if camera or served:
            dropped = str((camera.stale_frames_dropped if camera else 0)
                          + (served.frames_dropped if served else 0))
        refused = [EMPTY] * 3 if served is None else [
            str(served.frames_invalid), str(served.frames_too_large), str(served.stamps_invalid)]
        rows.append([node.label, state, _cell(camera.capture_fps if camera else None),
                     *_served_cells(served), dropped, *refused, str(process.restarts)])
        notes.append(_note(node.label, process))
    lines = [f'[launch] status after {uptime_s:.0f} s']
    lines += _table(['camera', 'state', 'fps in', 'fps done', 'latency ms', 'dropped',
                     'invalid', 'too large', 'bad stamps', 'restarts'], rows, left=2)
    if detector:
        process = detector_process
        model = board.report(ModelReport, report_name(detector.fqn, MODEL_SUFFIX),
                             process.started_s)
        state = _state(process, 'running' if model else 'starting')
        cells = [EMPTY] * 6 if model is None or not process.running else [
            _cell(model.batch_size_mean), _cell(model.batch_size_max), model.device,
            _cell(model.model_memory_mb), _cell(model.cuda_reserved_mb),
            _cell(model.inference_p50_ms)]
        lines += _table(['detector', 'state', 'batch', 'max', 'device', 'model MB', 'GPU MB',
                         'inference ms', 'restarts'],
                        [[detector.label, state, *cells, str(process.restarts)]], left=2)
        notes.append(_note(detector.label, process))
    return lines + [note for note in notes if note]


def detector_ready(board: DiagnosticsBoard, fqn: str, since_s: float) -> bool:
    """True once the detector `fqn` reported its model (it loaded and runs) since `since_s`."""
    return board.report(ModelReport, report_name(fqn, MODEL_SUFFIX), since_s) is not None
