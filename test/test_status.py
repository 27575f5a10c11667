"""The status table of `multicam-ros launch` reads /diagnostics only through the typed contract
(core/diagnostics.py): what a writer publishes with `values(report)` is what the table shows."""
from pathlib import Path

from multicam_ros.core.diagnostics import CAMERA_SUFFIX, MODEL_SUFFIX, CameraReport, \
    ModelReport, ServedCameraReport, report_name, values
from multicam_ros.system.config import load_config
from multicam_ros.system.plan import node_plan
from multicam_ros.system.status import DiagnosticsBoard, ProcessStatus, detector_ready, \
    status_table

CAMERA = CameraReport(
    state='streaming', url='rtsp://h/x', capture_fps=14.96, publish_fps=14.9,
    frames_captured=300, frames_published=290, stale_frames_dropped=7, rate_capped_frames=0,
    corrupt_frames_skipped=0, reconnects=1, reconnects_succeeded=1, last_frame_age_s=0.05,
    source_size='320x240', source_fps=15.0, capture_to_publish_p50_ms=2.5,
    capture_to_publish_p99_ms=9.0,
    no_signal_frames=0, reliability='reliable')
SERVED = ServedCameraReport(
    frames_in_hz=15.0, frames_processed_hz=12.34, frames_received=280, frames_processed=250,
    frames_dropped=5, frames_invalid=0, latency_p50_ms=41.2, latency_p95_ms=80.0, tracks=2)
MODEL = ModelReport(
    device='cpu', model='torchscript m.pt', model_memory_mb=12.5, batches=100,
    batch_size_mean=1.96, batch_size_max=2, batch_sizes='1:4 2:96', inference_p50_ms=30.4,
    inference_p95_ms=44.0, inference_errors=0)


def _plan(tmp_path: Path):
    config = tmp_path / 'cams.yaml'
    config.write_text('cameras: [{name: a, url: "rtsp://h/x"}, {name: b, url: "rtsp://h/y"}]\n'
                      'detector: {device: cpu}\n')
    return node_plan(load_config(str(config)), environ={})


def _rows(lines):
    return {line.split()[0]: line.split() for line in lines[1:]}


def test_table_shows_what_the_writers_report(tmp_path: Path):
    plan = _plan(tmp_path)
    board = DiagnosticsBoard()
    board.update(report_name('/a/camera_node', CAMERA_SUFFIX), values(CAMERA))
    board.update(report_name('/detector', '/a'), values(SERVED))
    board.update(report_name('/detector', MODEL_SUFFIX), values(MODEL))
    running = ProcessStatus(running=True, restarting=False, started_s=0.0, restarts=0)
    processes = {'/a/camera_node': ProcessStatus(True, False, 0.0, 1),
                 '/b/camera_node': ProcessStatus(False, True, 0.0, 3), '/detector': running}
    rows = _rows(status_table(plan, board, processes, uptime_s=12.0))
    assert rows['a'] == ['a', 'streaming', '15.0', '12.3', '41.2', '12', '1']
    assert rows['b'] == ['b', 'restarting', '-', '-', '-', '-', '3']
    assert rows['detector'] == ['detector', 'running', '2.0', '2', 'cpu', '12.5', '-', '30.4']
    assert detector_ready(board, '/detector', since_s=0.0)


def test_reports_of_a_previous_run_or_another_version_are_not_shown(tmp_path: Path):
    plan = _plan(tmp_path)
    board = DiagnosticsBoard()
    board.update(report_name('/a/camera_node', CAMERA_SUFFIX), values(CAMERA))
    # Not one of our reports (a key is missing): the table does not guess.
    board.update(report_name('/detector', MODEL_SUFFIX), {'device': 'cpu'})
    later = ProcessStatus(running=True, restarting=False, started_s=1e12, restarts=1)
    processes = {'/a/camera_node': later, '/b/camera_node': later, '/detector': later}
    rows = _rows(status_table(plan, board, processes, uptime_s=1.0))
    assert rows['a'][:3] == ['a', 'starting', '-']  # its report is from before the restart
    assert rows['detector'][:3] == ['detector', 'starting', '-']
    assert not detector_ready(board, '/detector', since_s=0.0)
