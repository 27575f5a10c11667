"""The status table of `multicam-ros launch` reads /diagnostics only through the typed contract
(core/diagnostics.py): what a writer publishes with `values(report)` is what the table shows."""
import re
from dataclasses import replace
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
    """Table rows by their first cell; cells are split where two spaces or more separate
    them (a cell such as `down (no signal)` holds single spaces)."""
    rows = [re.split(r'\s{2,}', line.strip()) for line in lines[1:] if line.startswith('  ')
            and not line.startswith('   ')]
    return {row[0]: row for row in rows}


def _notes(lines):
    """The lines under the tables: `  name: ...`."""
    return [line.strip() for line in lines if re.match(r'^  \w+: ', line)]


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
    assert rows['a'] == ['a', 'streaming', '15.0', '12.3', '41.2', '12', '0', '0', '0', '1']
    assert rows['b'] == ['b', 'restarting', '-', '-', '-', '-', '-', '-', '-', '3']
    assert rows['detector'] == ['detector', 'running', '2.0', '2', 'cpu', '12.5', '-', '30.4',
                                '0']
    assert detector_ready(board, '/detector', since_s=0.0)


def test_table_shows_cameras_that_are_down_and_what_the_detector_refused(tmp_path: Path):
    plan = _plan(tmp_path)
    board = DiagnosticsBoard()
    board.update(report_name('/a/camera_node', CAMERA_SUFFIX), values(CAMERA))
    board.update(report_name('/detector', '/a'), values(replace(
        SERVED, source='no_signal', frames_invalid=3, frames_too_large=4, stamps_invalid=5)))
    board.update(report_name('/detector', '/b'), values(replace(SERVED, source='waiting')))
    running = ProcessStatus(running=True, restarting=False, started_s=0.0, restarts=0)
    processes = {'/a/camera_node': running, '/b/camera_node': running, '/detector': running}
    rows = _rows(status_table(plan, board, processes, uptime_s=3.0))
    # Down, instead of the fps of frames done (NO SIGNAL pictures are no detection frames).
    assert rows['a'] == ['a', 'streaming', '15.0', 'down (no signal)', '-', '12', '3', '4',
                         '5', '0']
    assert rows['b'][:5] == ['b', 'starting', '-', 'down (waiting)', '-']
    assert rows['camera'][6:9] == ['invalid', 'too large', 'bad stamps']


def test_table_shows_a_restarting_detector_and_a_failed_camera(tmp_path: Path):
    plan = _plan(tmp_path)
    board = DiagnosticsBoard()
    board.update(report_name('/detector', '/a'), values(SERVED))  # the killed detector's
    board.update(report_name('/detector', MODEL_SUFFIX), values(MODEL))
    processes = {
        '/a/camera_node': ProcessStatus(running=True, restarting=False, started_s=0.0,
                                        restarts=0),
        '/b/camera_node': ProcessStatus(
            running=False, restarting=False, started_s=0.0, restarts=0, failed=True,
            last_exit='configuration error (exit code 2 after 1.5 s)',
            message='[b] configuration error: camera_info_url: /x.yaml lacks the key'),
        '/detector': ProcessStatus(running=False, restarting=True, started_s=0.0, restarts=1,
                                   restart_in_s=1.5, last_exit='killed by SIGKILL after 9.0 s')}
    lines = status_table(plan, board, processes, uptime_s=20.0)
    rows = _rows(lines)
    assert rows['a'][:5] == ['a', 'starting', '-', '-', '-']  # nothing from a dead detector
    assert rows['b'][:2] == ['b', 'failed']
    assert rows['detector'] == ['detector', 'restarting', '-', '-', '-', '-', '-', '-', '1']
    assert _notes(lines) == [
        'b: failed, not restarted (configuration error (exit code 2 after 1.5 s)): '
        '[b] configuration error: camera_info_url: /x.yaml lacks the key',
        'detector: restarting in 1.5 s, last exit: killed by SIGKILL after 9.0 s']


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
