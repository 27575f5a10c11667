"""The model in a process of its own (core/model_process.py): a real child interpreter with a
real TorchScript model, frames over its pipe and from real shared memory. ROS-free."""
import contextlib
import dataclasses
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
import uuid

import numpy as np
import pytest

from multicam_ros.core import shm_frames
from multicam_ros.core.frames import InputFrame
from multicam_ros.core.model_process import CAMERA_CHANNEL, FORWARD_CHANNEL, NO_STATS, \
    ModelProcess
from multicam_ros.core.models.base import ModelConfig
from multicam_ros.core.settings import ConfigError

pytestmark = pytest.mark.timeout(120)
needs_shm = pytest.mark.skipif(not shm_frames.shm_available(), reason='needs /dev/shm, x86-64')


def scripted(model_path) -> ModelConfig:
    return ModelConfig(backend='torchscript', path=str(model_path),
                       class_names=('thing', 'other'), input_size=320, device='cpu')


class Results:
    """Collects what the model process sends back."""

    def __init__(self) -> None:
        self.items = []
        self.exits = []
        self._lock = threading.Lock()

    def on_results(self, batch) -> None:
        with self._lock:
            self.items.extend(batch)

    def on_exit(self, text: str) -> None:
        self.exits.append(text)

    def of(self, camera: str):
        with self._lock:
            return [result for cam, result in self.items if cam == camera]


def wait_for(predicate, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return predicate()


def gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    with open(f'/proc/{pid}/stat') as stat:  # a zombie nobody reaped yet is gone too
        return stat.read().rsplit(')', 1)[1].split()[0] == 'Z'


@contextlib.contextmanager
def serving(model_path, kind: str, channel: str):
    """A model process for camera '/a' with `channel` as its `kind` ('channels': the
    camera_node's, 'forward_channels': the node's), the writer of that channel, and what
    comes back."""
    got = Results()
    model = ModelProcess(scripted(model_path), ['/a'], 4, got.on_results, got.on_exit,
                         **{kind: {'/a': channel}})
    model.start()
    try:
        with shm_frames.FrameWriter(channel) as writer:
            yield model, got, writer
    finally:
        model.stop()


def frame(stamp_ns: int, value: int = 80) -> InputFrame:
    return InputFrame(image=np.full((240, 320, 3), value, np.uint8), stamp_ns=stamp_ns,
                      received_s=time.monotonic(), frame_id='cam_a')


def test_frames_over_the_pipe_come_back_with_their_detections(center_box_model):
    got = Results()
    model = ModelProcess(scripted(center_box_model), ['/a', '/b'], 4, got.on_results,
                         got.on_exit)
    info = model.start()
    try:
        assert info.class_names == ('thing', 'other') and info.device == 'cpu'
        assert info.pid != os.getpid() and not gone(info.pid)
        model.put('/a', frame(1000))
        assert wait_for(lambda: got.of('/a'), 20.0)
        [result] = got.of('/a')
        assert (result.stamp_ns, result.frame_id, result.shared) == (1000, 'cam_a', False)
        boxes = result.detections.boxes_xyxy
        np.testing.assert_allclose(boxes, [[120.0, 80.0, 200.0, 160.0]])  # CenterBoxModel
        assert result.detections.scores[0] == pytest.approx(0.9)
        model.put('/a', frame(2000))
        model.put('/b', frame(2000))
        assert wait_for(lambda: len(got.of('/a')) == 2 and got.of('/b'), 20.0)
        assert wait_for(lambda: model.stats() is not NO_STATS
                        and model.stats().counts['/a'].processed == 2, 5.0)
        stats = model.stats()
        assert stats.batches['batches'] >= 2 and 0 < stats.inference_ms[50] <= \
            stats.inference_ms[100]
        assert 0 <= stats.handover_ms[95] <= stats.handover_ms[100]
        assert stats.counts['/b'].received == 1 and stats.shared == {}
    finally:
        model.stop()
    assert gone(info.pid) and got.exits == []


@needs_shm
def test_frames_from_shared_memory_only_while_active_and_never_older(center_box_model):
    channel = f'test_model_process/{uuid.uuid4().hex[:12]}'
    with serving(center_box_model, 'channels', channel) as (model, got, writer):
        image = np.full((240, 320, 3), 50, np.uint8)
        writer.write(image, 1000, 'cam_shm')
        time.sleep(0.5)
        assert got.of('/a') == []  # not active yet: the frame waits in shared memory
        model.use_channel('/a', CAMERA_CHANNEL)
        assert wait_for(lambda: got.of('/a'), 20.0)
        [first] = got.of('/a')
        assert (first.stamp_ns, first.frame_id, first.shared) == (1000, 'cam_shm', True)
        # Over the pipe a newer frame came (image_raw, before a switch): a shared-memory
        # frame not newer than it is one the model already had, so it is not taken.
        model.put('/a', frame(5000))
        assert wait_for(lambda: len(got.of('/a')) == 2, 20.0)
        writer.write(image, 4000, 'cam_shm')
        time.sleep(0.5)
        assert [r.stamp_ns for r in got.of('/a')] == [1000, 5000]
        for stamp in (6000, 7000, 8000):  # written faster than taken: skipped counted
            writer.write(image, stamp, 'cam_shm')
        assert wait_for(lambda: got.of('/a')[-1].stamp_ns == 8000, 20.0)
        last = got.of('/a')[-1]
        assert last.shared and last.skipped == 2
        assert wait_for(lambda: model.stats() is not NO_STATS
                        and model.stats().shared['/a'].frames == 2, 5.0)


@needs_shm
@pytest.mark.parametrize('device', ['cpu', pytest.param('cuda', marks=pytest.mark.gpu)])
def test_720p_shared_memory_frames_give_the_same_boxes_on_each_device(center_box_model, device):
    """On CUDA the child page-locks the camera's slots and uploads each frame straight from
    them (counted as in place); on the CPU it copies. Either way the boxes are the model's,
    mapped back to the 720p frame, and a pipe frame beside them gets the same."""
    channel = f'test_model_process/{uuid.uuid4().hex[:12]}'
    got = Results()
    config = dataclasses.replace(scripted(center_box_model), device=device)
    model = ModelProcess(config, ['/a'], 4, got.on_results, got.on_exit,
                         channels={'/a': channel})
    info = model.start()
    try:
        assert info.device.startswith(device)
        image = np.full((720, 1280, 3), 50, np.uint8)
        with shm_frames.FrameWriter(channel) as writer:
            model.use_channel('/a', CAMERA_CHANNEL)
            writer.write(image, 1000, 'cam_720p')
            assert wait_for(lambda: got.of('/a'), 60.0)
            model.put('/a', InputFrame(image=image, stamp_ns=2000, received_s=time.monotonic(),
                                       frame_id='cam_720p'))
            assert wait_for(lambda: len(got.of('/a')) == 2, 20.0)
        shared, piped = got.of('/a')
        assert (shared.stamp_ns, shared.shared, piped.stamp_ns, piped.shared) == (
            1000, True, 2000, False)
        for result in (shared, piped):  # 80 px of the 320 px input, 4x: centred in 1280x720
            np.testing.assert_allclose(result.detections.boxes_xyxy, [[480, 200, 800, 520]])
        assert wait_for(lambda: model.stats() is not NO_STATS
                        and model.stats().shared['/a'].frames == 1, 5.0)
        assert model.stats().shared['/a'].in_place == (1 if device == 'cuda' else 0)
    finally:
        model.stop()
    assert got.exits == []


def test_a_bad_model_setting_fails_the_start_naming_it(tmp_path):
    got = Results()
    model = ModelProcess(scripted(tmp_path / 'missing.torchscript'), ['/a'], 4,
                         got.on_results, got.on_exit)
    with pytest.raises(ConfigError, match='model.path'):
        model.start()
    model.stop()
    assert model.pid is not None and gone(model.pid) and got.exits == []


def test_a_model_process_that_dies_is_reported(center_box_model):
    got = Results()
    model = ModelProcess(scripted(center_box_model), ['/a'], 4, got.on_results, got.on_exit)
    info = model.start()
    os.kill(info.pid, signal.SIGKILL)
    assert wait_for(lambda: got.exits, 10.0)
    assert 'ended unexpectedly' in got.exits[0] and str(info.pid) in got.exits[0]
    model.stop()
    assert len(got.exits) == 1


def test_the_model_process_ignores_stop_signals_and_ends_with_its_parent(center_box_model):
    """SIGINT and SIGTERM are the node's to handle (a Ctrl-C reaches the whole process group);
    when the node's process dies, however it dies, its model process ends too."""
    parent = subprocess.Popen([sys.executable, '-c', textwrap.dedent(f"""\
        import sys, time
        from multicam_ros.core.model_process import ModelProcess
        from multicam_ros.core.models.base import ModelConfig
        config = ModelConfig(backend='torchscript', path={str(center_box_model)!r},
                             class_names=('thing', 'other'), input_size=320, device='cpu')
        model = ModelProcess(config, ['/a'], 4, lambda batch: None, lambda text: None)
        print(model.start().pid, flush=True)
        time.sleep(60)
        """)], stdout=subprocess.PIPE, text=True)
    try:
        pid = int(parent.stdout.readline())
        for sig in (signal.SIGINT, signal.SIGTERM):
            os.kill(pid, sig)
        time.sleep(0.5)
        assert not gone(pid)
        parent.kill()
        parent.wait(5)
        assert wait_for(lambda: gone(pid), 5.0)
    finally:
        parent.kill()


@needs_shm
def test_forwarded_frames_are_taken_in_any_order(center_box_model):
    """The node's channel of a camera's image_raw frames: any publisher's stamps, in any
    order, are taken (and counted as not from the camera's own shared memory)."""
    channel = f'test_model_process/{uuid.uuid4().hex[:12]}'
    with serving(center_box_model, 'forward_channels', channel) as (model, got, writer):
        model.use_channel('/a', FORWARD_CHANNEL)
        image = np.full((240, 320, 3), 50, np.uint8)
        for stamp in (3000, 1000, 0):
            writer.write(image, stamp, 'cam_fwd')
            assert wait_for(lambda: got.of('/a') and got.of('/a')[-1].stamp_ns == stamp,
                            20.0), stamp
        assert [(r.stamp_ns, r.shared) for r in got.of('/a')] == [
            (3000, False), (1000, False), (0, False)]
        model.use_channel('/a', None)
        writer.write(image, 4000, 'cam_fwd')
        time.sleep(0.5)
        assert len(got.of('/a')) == 3


@needs_shm
def test_frames_of_drawn_cameras_are_written_for_drawing(center_box_model):
    """For the cameras the node draws, the frames the model ran go to their pixel channel,
    where the node finds each by its stamp however late its result comes."""
    channel = f'test_model_process/{uuid.uuid4().hex[:12]}'
    with serving(center_box_model, 'pixel_channels', channel) as (model, got, writer):
        writer.close()  # the model process writes this channel
        reader = shm_frames.FrameReader(channel)
        model.put('/a', frame(1000, value=7))
        assert wait_for(lambda: got.of('/a'), 20.0)
        time.sleep(0.3)
        assert reader.copy_by_stamp(1000) is None  # nobody draws /a yet
        model.write_pixels_of(frozenset({'/a'}))
        model.put('/a', frame(2000, value=9))
        assert wait_for(lambda: len(got.of('/a')) == 2, 20.0)
        assert wait_for(lambda: reader.copy_by_stamp(2000) is not None, 5.0)
        info, pixels = reader.copy_by_stamp(2000)
        assert pixels.shape == (240, 320, 3) and (pixels == 9).all()
        reader.close()
