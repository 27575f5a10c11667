"""Fault suite, stream faults that already hold: the whole system under `multicam-ros launch`
(three cameras on real RTSP servers, one camera on a silent TCP port, one detector with a
scripted TorchScript model on the CPU), real DDS, real processes, faults injected from outside.

One system serves every test of this module, in file order (starting one costs 20-30 s on a
2-core machine): each test first waits until every camera delivers fresh detections, injects
its fault, and asserts recovery within its bound; the last one stops the system and asserts the
clean stop and that nothing is left. Throughout, the probe records every detection: per camera
the header stamps must strictly increase over the whole run (never a frame twice, never one out
of order). The bounds are generous for a busy 2-core CI machine; on an idle one recovery takes
about 2-5 s. They bound recovery (a liveness property), not speed.

Servers: `main` serves cam0 and cam1, `flap` serves cam2 alone, and `mute` points at a port
that accepts TCP connections and never answers (conftest.py).
"""
import os
import signal
import time

import pytest

from multicam_ros.core.shm_frames import channel_for_topic, channel_status
from ros_helpers import wait_for

pytestmark = pytest.mark.timeout(300)

START_BOUND_S = 120.0  # first detections of every camera after `multicam-ros launch`
SILENT_REPORT_BOUND_S = 20.0  # the silent camera says `reconnecting` (open_timeout_s is 5 s)
RESTART_BOUND_S = 20.0  # every camera back after its RTSP server was killed and restarted
STALL_S = 10.0  # SIGSTOP of the servers for this long ...
STALL_BOUND_S = 20.0  # ... then every camera back this soon after SIGCONT
FLAP_FOR_S = 45.0  # cam2's server stops and starts again for this long ...
FLAP_DOWN_S = 3.0  # ... down this long each time ...
FLAP_UP_S = 2.0  # ... and up this long after cam2 is back
FLAP_BOUND_S = 20.0  # cam2 back after each restart of its server
RESPAWN_BOUND_S = 30.0  # a SIGKILLed camera_node restarted, on shared memory, detections back
GAP_BOUND_S = 6.0  # the cameras a fault does not touch: never this long without a detection
STOP_BOUND_S = 40.0  # Ctrl-C: every process gone (the launcher's own grace period is 10 s)
CRASH_MARKS = ('Traceback', 'terminate called', 'Aborted', 'core dumped', 'Segmentation fault')


def test_silent_port_camera_reports_reconnecting_and_blocks_no_one(fault_bed):
    bed = fault_bed
    bed.wait_all_flowing(START_BOUND_S)
    mute = bed.silent_camera
    assert bed.wait(lambda: any(r.state == 'reconnecting'
                                for r in bed.probe.camera_reports(mute)),
                    SILENT_REPORT_BOUND_S, 0.2), bed.why('mute never reported reconnecting')
    assert bed.silent.accepted >= 1, 'the camera never connected: the port was not the fault'
    # It keeps trying (another open accepted and timed out) while the others stream on.
    start_s = time.monotonic()
    tries = bed.silent.accepted
    reconnects = bed.probe.camera_reports(mute)[-1].reconnects
    assert bed.wait(lambda: bed.silent.accepted > tries
                    and bed.probe.camera_reports(mute)[-1].reconnects > reconnects,
                    SILENT_REPORT_BOUND_S, 0.2), bed.why('mute stopped trying')
    end_s = time.monotonic()
    for cam in bed.cameras:
        gap_s = bed.probe.max_gap_s(cam, start_s, end_s)
        print(f'{cam}: longest time without a detection while mute hung: {gap_s:.2f} s')
        assert gap_s < GAP_BOUND_S, bed.why(f'{cam} went {gap_s:.1f} s without a detection '
                                            'while mute hung')
        assert {r.state for r in bed.probe.camera_reports(cam, start_s)} == {'streaming'}
    assert {r.state for r in bed.probe.camera_reports(mute)} <= {'connecting', 'reconnecting'}
    bed.assert_nothing_repeated()


def test_rtsp_servers_killed_and_restarted_every_camera_back(fault_bed):
    bed = fault_bed
    bed.wait_all_flowing()
    down_s = time.monotonic()
    for server in (bed.main, bed.flap):
        bed.kill_server(server)
    assert bed.wait(lambda: all(any(r.state == 'reconnecting'
                                    for r in bed.probe.camera_reports(cam, down_s))
                                for cam in bed.cameras), 15.0, 0.2), \
        bed.why('the cameras did not notice the servers were gone')
    since_ns, since_s = bed.now_ns(), time.monotonic()
    for server in (bed.main, bed.flap):
        server.start()  # same port, same URLs
    took = bed.wait_back(bed.cameras, since_ns, since_s, RESTART_BOUND_S)
    print(f'back after the server restart in {took}')
    bed.assert_nothing_repeated()


def test_sigstop_stall_of_the_servers_then_every_camera_back(fault_bed):
    bed = fault_bed
    bed.wait_all_flowing()
    stalled_s = time.monotonic()
    for server in (bed.main, bed.flap):
        bed.pause_server(server)
    try:
        # No frame for read_timeout_s (3 s): each camera must say it lost the stream.
        assert bed.wait(lambda: all(any(r.state == 'reconnecting'
                                        for r in bed.probe.camera_reports(cam, stalled_s))
                                    for cam in bed.cameras), STALL_S, 0.2), \
            bed.why(f'a camera did not notice a {STALL_S:g} s stall')
        time.sleep(max(0.0, stalled_s + STALL_S - time.monotonic()))
    finally:
        since_ns, since_s = bed.now_ns(), time.monotonic()
        for server in (bed.main, bed.flap):
            bed.resume_server(server)
    took = bed.wait_back(bed.cameras, since_ns, since_s, STALL_BOUND_S)
    print(f'back after a {STALL_S:g} s SIGSTOP stall in {took}')
    bed.assert_nothing_repeated()


def test_flapping_camera_keeps_coming_back_and_the_others_never_stop(fault_bed):
    bed = fault_bed
    bed.wait_all_flowing()
    others = [cam for cam in bed.cameras if cam != '/cam2']
    reconnects = {cam: bed.probe.camera_reports(cam)[-1].reconnects for cam in others}
    start_s = time.monotonic()
    took = []
    while time.monotonic() - start_s < FLAP_FOR_S:
        bed.flap.stop()  # SIGTERM: the server says goodbye (the kill test covers SIGKILL)
        time.sleep(FLAP_DOWN_S)
        since_ns, since_s = bed.now_ns(), time.monotonic()
        bed.flap.start()
        took.append(bed.wait_back(['/cam2'], since_ns, since_s, FLAP_BOUND_S)['/cam2'])
        time.sleep(FLAP_UP_S)
    end_s = time.monotonic()
    print(f'{len(took)} flaps in {end_s - start_s:.0f} s; cam2 back after ' +
          ', '.join(f'{t:.1f}' for t in took) + ' s')
    assert len(took) >= 4, bed.why(f'only {len(took)} flaps')
    for cam in others:
        gap_s = bed.probe.max_gap_s(cam, start_s, end_s)
        print(f'{cam}: longest time without a detection while cam2 flapped: {gap_s:.2f} s')
        assert gap_s < GAP_BOUND_S, bed.why(f'{cam} went {gap_s:.1f} s without a detection '
                                            'while cam2 flapped')
        assert {r.state for r in bed.probe.camera_reports(cam, start_s)} == {'streaming'}
        assert bed.probe.camera_reports(cam)[-1].reconnects == reconnects[cam]
    bed.assert_nothing_repeated()


def test_camera_sigkilled_mid_stream_stale_segment_removed_detector_consistent(fault_bed):
    bed = fault_bed
    bed.wait_all_flowing()
    assert bed.wait(lambda: all(bed.probe.input_path(cam) == 'shared_memory'
                                for cam in bed.cameras), 30.0, 0.2), \
        bed.why('not every camera reached the detector through shared memory')
    node = '/cam1/camera_node'
    channel = channel_for_topic('/cam1/image_raw', bed.domain_id)
    old_pid = bed.system.current_pid(node)
    before = channel_status(channel)
    assert before is not None and before.writer_alive and before.writer_pid == old_pid, before
    starts = len(bed.system.started()[node])
    killed_ns, killed_s = bed.now_ns(), time.monotonic()
    os.kill(old_pid, signal.SIGKILL)
    # Gone for good (reaped by the launcher: every thread has exited, its files are closed).
    assert wait_for(lambda: not os.path.exists(f'/proc/{old_pid}'), 10.0), \
        f'pid {old_pid} survived SIGKILL'
    # A killed writer cannot unlink its segment: it stays until the detector (which checks
    # its writer's liveness a few times a second) or the restarted camera removes it.
    stale = channel_status(channel)
    print('segment right after the kill:', 'stale (writer dead)' if stale and not
          stale.writer_alive else 'already removed' if stale is None else stale)
    assert bed.wait(lambda: len(bed.system.started().get(node, [])) > starts,
                    RESPAWN_BOUND_S, 0.2), bed.why(f'{node} was not started again')
    new_pid = bed.system.current_pid(node)
    assert new_pid != old_pid

    def restarted_on_shared_memory() -> bool:
        status = channel_status(channel)
        return (status is not None and status.writer_alive and status.writer_pid == new_pid
                and bed.probe.input_path('/cam1') == 'shared_memory'
                and bed.probe.count_after('/cam1', killed_ns) >= 5)
    assert bed.wait(restarted_on_shared_memory, RESPAWN_BOUND_S, 0.2), \
        bed.why('the restarted camera is not back on a fresh segment', channel_status(channel))
    print(f'/cam1 back on shared memory {time.monotonic() - killed_s:.1f} s after the kill')
    end_s = time.monotonic()
    for cam in ('/cam0', '/cam2'):  # the detector kept serving the others
        gap_s = bed.probe.max_gap_s(cam, killed_s, end_s)
        print(f'{cam}: longest time without a detection while cam1 was down: {gap_s:.2f} s')
        assert gap_s < GAP_BOUND_S, bed.why(f'{cam} went {gap_s:.1f} s without a detection '
                                            'while cam1 was killed')
    # Every segment of the run has a live writer: one per streaming camera, none left by a
    # dead one, no temporary of a half-made one.
    ours = {bed.segment_of(cam): cam for cam in [*bed.cameras, bed.silent_camera]}
    segments = bed.segments()
    assert set(segments) >= {bed.segment_of(cam) for cam in bed.cameras}, segments
    assert set(segments) <= set(ours), segments
    for name in segments:
        status = channel_status(channel_for_topic(f'{ours[name]}/image_raw', bed.domain_id))
        assert status is not None and status.writer_alive, (name, status)
    bed.assert_nothing_repeated()


def test_ctrl_c_stops_everything_cleanly_nothing_lost_nothing_left(fault_bed):
    bed = fault_bed
    bed.wait_all_flowing()  # every camera back at the end
    bed.assert_nothing_repeated()
    assert bed.probe.camera_state(bed.silent_camera) == 'reconnecting'  # still hanging
    pids = bed.system.all_started_pids()
    assert len(pids) >= 5
    # Stop while mute is inside an open that hangs (it has just connected to the silent port,
    # and its open lasts open_timeout_s): the hardest moment for a clean stop.
    tries = bed.silent.accepted
    assert bed.wait(lambda: bed.silent.accepted > tries, SILENT_REPORT_BOUND_S, 0.05)
    assert bed.system.stop(signal.SIGINT, timeout_s=STOP_BOUND_S) == 0, bed.why()
    output = bed.system.output()
    assert 'SIGINT: stopping every node' in output and 'every node stopped' in output, bed.why()
    # Every node ended on the forwarded signal, the hanging camera too: none had to be killed,
    # and the hanging one did not crash on its way out.
    assert 'did not stop' not in output, bed.why()
    stopping = output[output.index('SIGINT: stopping every node'):]
    mute_lines = [line for line in stopping.splitlines() if line.startswith('[mute]')]
    crashed = [line for line in mute_lines if any(mark in line for mark in CRASH_MARKS)]
    assert not crashed, bed.why('mute crashed while stopping:', *mute_lines)
    assert wait_for(lambda: bed.leftovers() == {'processes': [], 'tmp': [], 'segments': []},
                    10.0), bed.leftovers()
