"""detector_node: one model for all cameras, as a user runs it, and in-process node tests."""
import signal
import time
from pathlib import Path

import numpy as np
import pytest
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import Image
from std_msgs.msg import Header
from vision_msgs.msg import Detection2DArray, LabelInfo

from multicam_ros.ros.detector_node import DetectorNode
from multicam_ros.ros.convert import image_from_array, stamp_from_ns
from ros_helpers import ExecutorThread, TopicRecorder, stamp_ns, wait_for

pytestmark = pytest.mark.timeout(180)

RELIABLE_1 = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE)
DEEP = QoSProfile(depth=50, reliability=ReliabilityPolicy.RELIABLE)
LATCHED = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE,
                     durability=DurabilityPolicy.TRANSIENT_LOCAL)
CLASS_NAMES = ['thing', 'other']


def scripted_params(model_path: Path) -> dict:
    return {'model.backend': 'torchscript', 'model.path': str(model_path),
            'model.class_names': CLASS_NAMES, 'input_size': 640, 'device': 'cpu'}


def ros_args(params: dict) -> list:
    args = []
    for name, value in params.items():
        if isinstance(value, list):
            value = '[' + ','.join(f"'{v}'" for v in value) + ']'
        args += ['-p', f'{name}:={value}']
    return args


def diagnostics_values(recorder: TopicRecorder, suffix: str) -> dict:
    for msg in reversed(recorder.messages):
        for status in msg.status:
            if status.name.endswith(suffix):
                return {kv.key: kv.value for kv in status.values}
    return {}


def child_pids(pid: int) -> list:
    return [int(child) for task in Path(f'/proc/{pid}/task').iterdir()
            for child in (task / 'children').read_text().split()]


def process_maps_libtorch(pid: int) -> bool:
    return 'libtorch_cpu' in Path(f'/proc/{pid}/maps').read_text()


def test_four_cameras_one_model_in_processes(rtsp_server_factory, node_launcher, ros_context,
                                             center_box_model):
    server = rtsp_server_factory(count=4, width=320, height=240, fps=15)
    cameras = [f'/cam{i}' for i in range(4)]
    camera_procs = [node_launcher.start(
        ['camera_node', '--ros-args', '-r', f'__ns:={cam}', '-p', f'url:={server.url(i)}'],
        name=f'camera{i}') for i, cam in enumerate(cameras)]
    # The multi-threaded executor path (the launcher's tests run the default, single thread).
    params = dict(scripted_params(center_box_model), cameras=cameras, executor_threads=4)
    detector = node_launcher.start(['detector_node', '--ros-args', *ros_args(params)],
                                   name='detector')

    probe = Node('probe', context=ros_context)
    images = {cam: TopicRecorder(probe, Image, f'{cam}/image_raw', DEEP) for cam in cameras}
    detections = {cam: TopicRecorder(probe, Detection2DArray, f'{cam}/detections', DEEP)
                  for cam in cameras}
    diagnostics = TopicRecorder(probe, DiagnosticArray, '/diagnostics', 50)
    with ExecutorThread(ros_context, [probe]):
        assert wait_for(lambda: all(d.count() >= 10 for d in detections.values()), 90.0), \
            {c: d.count() for c, d in detections.items()}

        for cam in cameras:
            published = {(stamp_ns(m.header), m.header.frame_id) for m in images[cam].messages}
            results = detections[cam].messages
            matched = [(stamp_ns(m.header), m.header.frame_id) in published for m in results]
            # The probe may miss a frame the detector got (depth 1 at the camera), never the
            # other way round: a detection header must be one of that camera's frames.
            assert sum(matched) >= 0.9 * len(matched), f'{cam}: {sum(matched)}/{len(matched)}'
            assert {m.header.frame_id for m in results} == {f'cam{cam[-1]}_optical_frame'}
            box = results[-1].detections[0]
            assert (box.bbox.center.position.x, box.bbox.center.position.y) == (160.0, 120.0)
            assert (box.bbox.size_x, box.bbox.size_y) == (80.0, 80.0)
            assert box.results[0].hypothesis.class_id == 'thing'
            assert box.id == '1'  # one static object: track 1 of that camera's own tracker
            assert box.results[0].hypothesis.score == pytest.approx(0.9)
            assert box.header == results[-1].header

        assert wait_for(lambda: diagnostics_values(diagnostics, ': model'), 10.0), \
            [s.name for m in diagnostics.messages for s in m.status]
        model = diagnostics_values(diagnostics, ': model')
        assert int(model['batch_size_max']) > 1, model
        model_statuses = {s.name for m in diagnostics.messages for s in m.status
                          if s.name.endswith(': model')}
        assert model_statuses == {'/detector: model'}
        # One model instance: the detector's model process is the only one that loaded torch.
        [model_pid] = child_pids(detector.proc.pid)
        assert process_maps_libtorch(model_pid) and int(model['model_pid']) == model_pid
        assert not any(process_maps_libtorch(p) for p in [detector.proc.pid] + [
            p.proc.pid for p in camera_procs])

        camera_procs[3].stop(signal.SIGINT)
        time.sleep(1.0)
        before = {cam: detections[cam].count() for cam in cameras}
        time.sleep(4.0)
        after = {cam: detections[cam].count() for cam in cameras}
        for cam in cameras[:3]:
            assert after[cam] - before[cam] >= 10, (before, after)
        assert after['/cam3'] == before['/cam3']
        assert detector.running
        assert wait_for(lambda: 'no frame for' in str(
            [s.message for m in diagnostics.messages[-2:] for s in m.status]), 10.0)
    probe.destroy_node()


@pytest.fixture
def detector_in_process(ros_context, center_box_model):
    """The detector node in this process (the node tier), with the scripted model."""
    from rclpy.parameter import Parameter
    params = dict(scripted_params(center_box_model), cameras=['/good', '/bad', '/silent'],
                  annotate='auto')
    overrides = [Parameter(name, value=value) for name, value in params.items()]
    node = DetectorNode(context=ros_context, parameter_overrides=overrides)
    yield node
    node.destroy_node()


def test_bad_frames_skipped_with_one_warning_others_go_on(ros_context, detector_in_process):
    test_node = Node('feeder', context=ros_context)
    good_pub = test_node.create_publisher(Image, '/good/image_raw', RELIABLE_1)
    bad_pub = test_node.create_publisher(Image, '/bad/image_raw', RELIABLE_1)
    good = TopicRecorder(test_node, Detection2DArray, '/good/detections', DEEP)
    bad = TopicRecorder(test_node, Detection2DArray, '/bad/detections', DEEP)
    annotated = TopicRecorder(test_node, Image, '/good/image_annotated', DEEP)
    labels = TopicRecorder(test_node, LabelInfo, '/detector/label_info', LATCHED)
    diagnostics = TopicRecorder(test_node, DiagnosticArray, '/diagnostics', 50)
    frame = np.full((90, 160, 3), 80, np.uint8)
    sent = []
    with ExecutorThread(ros_context, [detector_in_process, test_node]):
        for i in range(40):
            header = Header(stamp=stamp_from_ns(1_000_000_000 + i), frame_id='good')
            good_pub.publish(image_from_array(frame, 'bgr8', header))
            sent.append(stamp_ns(header))
            wrong = image_from_array(frame, 'bgr8', header)
            wrong.encoding = 'yuv422' if i % 2 else 'bgr8'
            if not i % 2:
                wrong.step += 1  # len(data) != step * height
            bad_pub.publish(wrong)
            time.sleep(0.03)
        assert wait_for(lambda: good.count() >= 10 and annotated.count() >= 5, 20.0)
        assert wait_for(lambda: diagnostics_values(diagnostics, ': /bad').get(
            'frames_invalid', '0') != '0', 10.0)
    assert bad.count() == 0
    assert all(stamp_ns(m.header) in sent for m in good.messages)
    box = good.messages[-1].detections[0].bbox
    assert (box.center.position.x, box.center.position.y) == (80.0, 45.0)
    image = annotated.messages[-1]
    assert (image.width, image.height, image.header.frame_id) == (160, 90, 'good')
    assert labels.count() == 1
    assert [c.class_name for c in labels.messages[0].class_map] == CLASS_NAMES
    assert labels.messages[0].threshold == pytest.approx(0.5)
    silent = diagnostics_values(diagnostics, ': /silent')
    assert silent['frames_received'] == '0'
    test_node.destroy_node()


@pytest.mark.parametrize('params,words', [
    ({'model.backend': 'onnx'}, 'model.backend'),
    ({'model.backend': 'torchscript', 'model.path': '/nonexistent/model.pt'}, 'model.path'),
    ({'model.backend': 'torchvision', 'model.weights': '/nonexistent/weights.pth'},
     'model.weights'),
    ({'model.backend': 'torchvision', 'model.name': 'no_such_net', 'model.weights': 'none'},
     'model.name'),
    ({'model.backend': 'torchvision', 'device': 'cuda', 'model.weights': 'none'}, 'device'),
    ({'model.backend': 'torchvision', 'device': 'tpu', 'model.weights': 'none'}, 'device'),
    ({'model.backend': 'torchvision', 'cameras': []}, 'cameras'),
    ({'model.backend': 'torchvision', 'max_batch_size': 0}, 'max_batch_size'),
    ({'model.backend': 'torchvision', 'tracking.low_score_threshold': 0.9,
      'model.weights': 'none'}, 'tracking.low_score'),
])
def test_unusable_configuration_exits_non_zero(node_launcher, params, words):
    params = {'cameras': ['/cam0'], **params}
    if not params['cameras']:
        del params['cameras']
    proc = node_launcher.start(['detector_node', '--ros-args', *ros_args(params)])
    assert proc.wait(timeout_s=60.0) == 2  # a configuration error: its message, no traceback
    output = proc.output()
    assert f'configuration error: {words}' in output, output
    assert 'Traceback' not in output, output


def test_overload_drops_frames_and_latency_stays_bounded(node_launcher, ros_context):
    """Six cameras at 15 fps into a real torchvision model on this CPU: far more than it can
    serve. Results must stay fresh (dropped, not queued) and drops must be counted."""
    cameras = [f'/load{i}' for i in range(6)]
    params = {'cameras': cameras, 'model.backend': 'torchvision',
              'model.name': 'ssdlite320_mobilenet_v3_large',
              'model.weights': 'none', 'device': 'cpu', 'confidence_threshold': 0.0,
              'max_batch_size': 6}
    node_launcher.start(['detector_node', '--ros-args', *ros_args(params)], name='detector')
    feeder = Node('feeder', context=ros_context)
    publishers = [feeder.create_publisher(Image, f'{cam}/image_raw', RELIABLE_1)
                  for cam in cameras]
    results = [TopicRecorder(feeder, Detection2DArray, f'{cam}/detections', DEEP)
               for cam in cameras]
    diagnostics = TopicRecorder(feeder, DiagnosticArray, '/diagnostics', 50)
    frame = np.random.default_rng(1).integers(0, 255, (240, 320, 3), dtype=np.uint8)

    def publish_all():
        header = Header(stamp=feeder.get_clock().now().to_msg(), frame_id='load')
        for pub in publishers:
            pub.publish(image_from_array(frame, 'bgr8', header))

    feeder.create_timer(1 / 15, publish_all)
    with ExecutorThread(ros_context, [feeder]):
        assert wait_for(lambda: all(r.count() >= 3 for r in results), 120.0)
        for r in results:
            r.clear()
        time.sleep(8.0)
        model = diagnostics_values(diagnostics, ': model')
        camera = diagnostics_values(diagnostics, ': /load0')
    latencies_s = [(received - stamp_ns(m.header)) / 1e9 for r in results
                   for received, m in r.items]
    inference_p95_s = float(model['inference_p95_ms']) / 1000
    assert float(model['inference_max_ms']) / 1000 >= inference_p95_s, model
    assert 0 <= float(model['results_handover_p95_ms']) <= float(
        model['results_handover_max_ms']), model
    assert int(camera['frames_dropped']) > 0, camera
    # About one batch of latency, whatever the load: waiting for the batch in flight, then
    # its own batch, plus transport; a growing queue would grow without bound instead.
    assert np.percentile(latencies_s, 95) < 3 * inference_p95_s + 0.5, \
        (np.percentile(latencies_s, 95), model)
    assert all(np.isfinite(latencies_s))
    feeder.destroy_node()


def test_reconnecting_camera_gets_fresh_tracks_from_stamps_alone(
        rtsp_server_factory, node_launcher, ros_context, center_box_model):
    """No reset signal is needed after a reconnect: the tracker ages tracks by capture time,
    and a reconnect leaves a gap of at least read_timeout_s + a reconnect delay (1.5 s here)
    without frames, longer than tracking.max_age_s (1 s), so the old tracks have ended. The
    other camera's tracker never notices."""
    servers = [rtsp_server_factory(count=1, width=320, height=240, fps=15) for _ in range(2)]
    cameras = ['/cam0', '/cam1']
    for camera, server in zip(cameras, servers):
        node_launcher.start(['camera_node', '--ros-args', '-r', f'__ns:={camera}',
                             '-p', f'url:={server.url(0)}', '-p', 'read_timeout_s:=1.0',
                             '-p', 'reconnect_delay_max_s:=1.0'], name=camera[1:])
    params = dict(scripted_params(center_box_model), cameras=cameras)
    params['tracking.max_age_s'] = 1.0
    node_launcher.start(['detector_node', '--ros-args', *ros_args(params)], name='detector')
    probe = Node('probe', context=ros_context)
    detections = {cam: TopicRecorder(probe, Detection2DArray, f'{cam}/detections', DEEP)
                  for cam in cameras}

    def last_id(camera):
        messages = detections[camera].messages
        return messages[-1].detections[0].id if messages and messages[-1].detections else None

    with ExecutorThread(ros_context, [probe]):
        assert wait_for(lambda: last_id('/cam0') == '1' and last_id('/cam1') == '1', 90.0), \
            node_launcher.logs()
        servers[0].restart()  # cam0 loses its stream and reconnects; cam1 never notices
        assert wait_for(lambda: last_id('/cam0') not in (None, '', '1'), 40.0), \
            [m.detections[0].id for m in detections['/cam0'].messages[-5:] if m.detections]
        assert int(last_id('/cam0')) > 1  # a fresh track with a new id, never a reused one
        assert last_id('/cam1') == '1'
        ids = [m.detections[0].id for m in detections['/cam1'].messages if m.detections]
        assert set(ids) <= {'', '1'}, ids  # cam1's one object kept its one id throughout
    probe.destroy_node()
