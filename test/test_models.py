"""Model back-ends with real torch models on the CPU: torchvision architectures with random
weights, device resolution, and the errors that name the parameter at fault (ConfigError,
`<key>: <problem>; accepted: <values>`)."""
import importlib.util
import logging
import warnings

import numpy as np
import pytest
import torch

from multicam_ros.core.models import ModelConfig, load_detector, resolve_device
from multicam_ros.core.models.torchvision_backend import supported_names
from multicam_ros.core.settings import ConfigError

ARCHITECTURES = ['fasterrcnn_mobilenet_v3_large_320_fpn', 'fasterrcnn_mobilenet_v3_large_fpn',
                 'ssdlite320_mobilenet_v3_large', 'retinanet_resnet50_fpn_v2',
                 'fcos_resnet50_fpn']
SLOW = {'fasterrcnn_mobilenet_v3_large_fpn', 'retinanet_resnet50_fpn_v2', 'fcos_resnet50_fpn'}


@pytest.fixture
def no_cuda():
    """These tests check the behaviour without a GPU; `make test` hides GPUs for the suite."""
    if torch.cuda.is_available():
        pytest.fail('this test needs a machine without CUDA: run it with CUDA_VISIBLE_DEVICES= '
                    '(as `make test` does)')


def _frames(*sizes, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for w, h in sizes]


def _config(**overrides) -> ModelConfig:
    settings = dict(backend='torchvision', name='ssdlite320_mobilenet_v3_large',
                    weights='none', device='cpu', confidence_threshold=0.0)
    settings.update(overrides)
    return ModelConfig(**settings)


@pytest.mark.parametrize('name', ARCHITECTURES)
def test_torchvision_architecture_runs_a_mixed_batch_in_one_forward(name, caplog):
    torch.manual_seed(0)
    with caplog.at_level(logging.WARNING):
        detector = load_detector(_config(name=name, max_detections=20))
    assert 'RANDOM weights' in caplog.text and 'MEANINGLESS' in caplog.text
    assert detector.device == 'cpu' and name in detector.description
    assert len(detector.class_names) == 91 and detector.class_names[1] == 'person'
    assert detector.memory_bytes() > 1_000_000
    if name in SLOW:  # the R-CNN-style resize scales inputs to 800 px: keep the test quick
        detector.model.transform.min_size = (96,)
        detector.model.transform.max_size = 160
        sizes = [(64, 48), (40, 60)]
    else:
        sizes = [(320, 240), (200, 300), (320, 240)]
    calls = []
    detector.model.register_forward_hook(lambda *args: calls.append(1))
    results = detector.infer(_frames(*sizes))
    assert len(calls) == 1
    assert len(results) == len(sizes)
    assert sum(len(result) for result in results) > 0
    for (width, height), result in zip(sizes, results):
        assert len(result) <= 20
        assert result.boxes_xyxy.shape == (len(result), 4)
        assert result.boxes_xyxy.dtype == np.float32 and result.class_ids.dtype == np.int64
        assert np.all(result.boxes_xyxy >= 0)
        assert np.all(result.boxes_xyxy[:, [0, 2]] <= width)
        assert np.all(result.boxes_xyxy[:, [1, 3]] <= height)
        assert np.all(np.diff(result.scores) <= 0)  # best first
        assert np.all((result.class_ids >= 0) & (result.class_ids < 91))


def test_threshold_and_classes_filter_apply_to_torchvision_output():
    torch.manual_seed(0)
    frames = _frames((320, 240), (240, 320))
    everything = load_detector(_config()).infer(frames)
    torch.manual_seed(0)
    people = load_detector(_config(classes=('person', 'car'))).infer(frames)
    for result in people:
        assert len(result) > 0 and set(result.class_ids.tolist()) <= {1, 3}
    # Random SSDlite scores every box alike (1/91): at that threshold all stay, above none.
    score = float(everything[0].scores.min())
    for threshold, kept in ((score, len(everything[0])), (score + 1e-4, 0)):
        torch.manual_seed(0)
        [result, _] = load_detector(_config(confidence_threshold=threshold)).infer(frames)
        assert len(result) == kept and np.all(result.scores >= threshold)
    with pytest.raises(ConfigError, match=r"^classes: unknown .*'unicorn'; accepted: "
                                          r"this model's classes: .*'person'"):
        load_detector(_config(classes=('unicorn',)))


def test_weights_file_round_trip_gives_identical_outputs(tmp_path):
    torch.manual_seed(1)
    original = load_detector(_config())
    path = tmp_path / 'ssdlite.pth'
    torch.save(original.model.state_dict(), path)
    checkpoint = tmp_path / 'checkpoint.pth'
    torch.save({'model': original.model.state_dict(), 'epoch': 3}, checkpoint)
    frames = _frames((320, 240), (200, 300))
    expected = original.infer(frames)
    for weights in (path, checkpoint):
        torch.manual_seed(2)  # a different random start: the file must overwrite it
        loaded = load_detector(_config(weights=str(weights)))
        assert str(weights) in loaded.description
        for want, got in zip(expected, loaded.infer(frames)):
            np.testing.assert_array_equal(got.boxes_xyxy, want.boxes_xyxy)
            np.testing.assert_array_equal(got.scores, want.scores)
            np.testing.assert_array_equal(got.class_ids, want.class_ids)


def test_own_class_names_set_the_class_count(tmp_path):
    labels = tmp_path / 'labels.txt'
    labels.write_text('__background__\ncat\ndog\n')
    detector = load_detector(_config(labels_file=str(labels), classes=('dog',)))
    assert detector.class_names == ['__background__', 'cat', 'dog']
    for result in detector.infer(_frames((160, 120))):
        assert set(result.class_ids.tolist()) <= {2}
    path = tmp_path / 'three.pth'
    torch.save(detector.model.state_dict(), path)
    with pytest.raises(ConfigError, match=r'^model.weights: .*does not fit.*91 classes.*; '
                                          r'accepted: .*set model.class_names'):
        load_detector(_config(weights=str(path)))  # COCO's 91 classes: the file has 3
    assert len(load_detector(_config(weights=str(path), labels_file=str(labels))).class_names) == 3
    with pytest.raises(ConfigError, match=r'^model.class_names: 3 names.*DEFAULT.*91 classes; '
                                          r'accepted: 91 names'):
        load_detector(_config(weights='DEFAULT', class_names=('a', 'b', 'c')))


def test_bad_weights_files_name_model_weights(tmp_path):
    garbage = tmp_path / 'garbage.pth'
    garbage.write_bytes(np.random.default_rng(0).bytes(4096))
    pickled_model = tmp_path / 'pickled.pth'
    torch.save(torch.nn.Linear(2, 2), pickled_model)
    other = tmp_path / 'other.pth'
    torch.save(torch.nn.Linear(2, 2).state_dict(), other)
    cases = [(tmp_path / 'absent.pth', "is not a file; accepted: a local state-dict file, "
                                       "'DEFAULT' or 'none'"),
             (garbage, 'is not a PyTorch weights file'),
             (pickled_model, r'full pickled model\?\); accepted: .*state_dict\(\)'),
             (other, 'does not fit model.name ssdlite320_mobilenet_v3_large'),
             ('', 'empty; accepted: ')]
    for path, words in cases:
        with pytest.raises(ConfigError, match=f'^model.weights: .*{words}'):
            load_detector(_config(weights=str(path)))


def test_default_weights_without_network_say_so(tmp_path, monkeypatch):
    """DEFAULT downloads into the torch hub cache; an empty cache and an unreachable proxy
    stand for a machine without network."""
    monkeypatch.setenv('TORCH_HOME', str(tmp_path))
    for variable in ('https_proxy', 'HTTPS_PROXY', 'http_proxy', 'HTTP_PROXY'):
        monkeypatch.setenv(variable, 'http://127.0.0.1:9')
    monkeypatch.delenv('no_proxy', raising=False)
    monkeypatch.delenv('NO_PROXY', raising=False)
    with pytest.raises(ConfigError, match=r'^model.weights: DEFAULT: could not fetch.*; '
                                          r'accepted: .*download.pytorch.org.*local file'):
        load_detector(_config(weights='DEFAULT'))


def test_unknown_backend_and_model_name():
    with pytest.raises(ConfigError, match=r"^model.backend: 'onnx' is not a choice; "
                                          r"accepted: one of 'nanodet', 'torchvision'"):
        load_detector(_config(backend='onnx'))
    with pytest.raises(ConfigError, match=r"^model.name: 'yolo9000' is not a torchvision "
                                          r"detection model; accepted: .*'fcos_resnet50_fpn'"):
        load_detector(_config(name='yolo9000'))
    assert set(ARCHITECTURES) <= set(supported_names())
    with pytest.raises(ConfigError, match=r'^input_size: 8 is out of range; accepted: '):
        load_detector(_config(input_size=8))


def test_device_resolution_without_cuda(no_cuda, caplog):
    with caplog.at_level(logging.WARNING):
        assert resolve_device('auto') == 'cpu'
    assert 'device auto' in caplog.text and 'CPU' in caplog.text
    assert resolve_device('cpu') == 'cpu'
    for requested in ('cuda', 'cuda:0', 'cuda:1'):
        with pytest.raises(ConfigError, match=f"^device: '{requested}' asked for, but CUDA is "
                                              "not available .*; accepted: 'auto', 'cpu'"):
            resolve_device(requested)
    for requested in ('gpu', 'cuda:x', 'cuda:-1', ''):
        with pytest.raises(ConfigError, match=r"^device: .* is not a device name; "
                                              r"accepted: 'auto', 'cpu', 'cuda' or 'cuda:N'"):
            resolve_device(requested)
    with pytest.raises(ConfigError, match='^device: '):
        load_detector(_config(device='cuda'))


def test_half_on_cpu_is_ignored_with_a_warning(no_cuda, caplog):
    with caplog.at_level(logging.WARNING):
        detector = load_detector(_config(half=True))
    assert 'half' in caplog.text and not detector.half
    assert next(detector.model.parameters()).dtype == torch.float32
    assert len(detector.infer(_frames((96, 64)))) == 1


def test_bad_model_path_names_model_path(tmp_path):
    garbage = tmp_path / 'garbage.pt'
    garbage.write_bytes(np.random.default_rng(0).bytes(4096))
    state_dict = tmp_path / 'weights.pt'
    torch.save(torch.nn.Linear(2, 2).state_dict(), state_dict)
    cases = [('', 'empty'), (tmp_path / 'absent.pt', 'is not a file'),
             (tmp_path, 'is not a file'), (garbage, 'cannot load'),
             (state_dict, 'cannot load.*not an exported model')]
    for path, words in cases:
        with pytest.raises(ConfigError, match=f'^model.path: .*{words}.*; accepted: a '
                                              'TorchScript file'):
            load_detector(_config(backend='torchscript', path=str(path)))


def test_torchscript_backend_warns_nothing_about_deprecation(tmp_path):
    class Tiny(torch.nn.Module):
        def forward(self, images: torch.Tensor) -> torch.Tensor:
            return images.mean(1).reshape(images.shape[0], -1, 8)[:, :32, :6] * 0 + 0.9

    path = str(tmp_path / 'tiny.pt')
    with warnings.catch_warnings():
        warnings.simplefilter('ignore', FutureWarning)
        torch.jit.script(Tiny()).save(path)
    with warnings.catch_warnings():
        warnings.simplefilter('error', FutureWarning)
        warnings.simplefilter('error', DeprecationWarning)
        detector = load_detector(_config(backend='torchscript', path=path, input_size=64))
    assert detector.class_names == ['class_0', 'class_1'] and detector.memory_bytes() == 0


def test_ultralytics_is_an_optional_extra_with_a_clear_error(tmp_path):
    missing = str(tmp_path / 'yolov8n.pt')
    if importlib.util.find_spec('ultralytics') is None:  # as installed by `make setup`
        expected = r"^model.backend: 'ultralytics' needs .*; accepted: .*pip install ultralytics"
    else:
        expected = '^model.path: .* is not a file; accepted: a YOLO model file'
    with pytest.raises(ConfigError, match=expected):
        load_detector(_config(backend='ultralytics', path=missing))


@pytest.mark.gpu
@pytest.mark.parametrize('half', [False, True])
def test_torchvision_on_cuda(half):
    assert resolve_device('auto') == 'cuda:0' and resolve_device('cuda') == 'cuda:0'
    count = torch.cuda.device_count()
    plural = '' if count == 1 else 's'
    with pytest.raises(ConfigError, match=rf"^device: 'cuda:99' asked for, but this machine has "
                                          rf"{count} CUDA device{plural}; accepted: 'auto', "
                                          rf"'cpu', 'cuda', 'cuda:0'"):
        resolve_device('cuda:99')
    torch.manual_seed(0)
    detector = load_detector(_config(name='fasterrcnn_mobilenet_v3_large_320_fpn',
                                     device='cuda', half=half))
    assert detector.device == 'cuda:0' and detector.half == half
    assert next(detector.model.parameters()).device.type == 'cuda'
    sizes = [(1920, 1080), (640, 480), (480, 640)]
    results = detector.infer(_frames(*sizes))
    assert len(results) == 3 and sum(len(result) for result in results) > 0
    for (width, height), result in zip(sizes, results):
        assert result.boxes_xyxy.dtype == np.float32
        assert np.all(result.boxes_xyxy >= 0)
        assert np.all(result.boxes_xyxy[:, [0, 2]] <= width)
        assert np.all(result.boxes_xyxy[:, [1, 3]] <= height)


@pytest.mark.gpu
def test_frames_already_on_the_device_give_the_same_results_as_host_frames():
    """What DeviceStager hands the back-ends (frames uploaded straight from shared memory):
    H x W x 3 uint8 tensors on the device, mixed in one batch with host frames of the same
    and other sizes, give exactly the results of the same frames from the host."""
    torch.manual_seed(0)
    detector = load_detector(_config(name='fasterrcnn_mobilenet_v3_large_320_fpn',
                                     device='cuda'))
    assert detector.takes_device_frames
    frames = _frames((1280, 720), (1280, 720), (640, 480))
    mixed = [torch.from_numpy(frames[0]).cuda(), frames[1], torch.from_numpy(frames[2]).cuda()]
    expected, got = detector.infer(frames), detector.infer(mixed)
    assert sum(len(result) for result in expected) > 0
    for want, have in zip(expected, got):
        np.testing.assert_allclose(have.boxes_xyxy, want.boxes_xyxy, atol=1e-3)
        np.testing.assert_array_equal(have.class_ids, want.class_ids)


class PixelBoxModel(torch.nn.Module):
    """A box per image whose place and score follow the image's own pixels (so replaying the
    wrong input shows), in the torchscript back-end's B x N x (4 + 2) layout."""

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        pooled = torch.nn.functional.avg_pool2d(images, 8)  # a real kernel or two
        mean = pooled.mean(dim=(1, 2, 3))
        size = float(images.shape[3])
        box = torch.stack([size * (0.25 + 0.5 * mean), size * (0.75 - 0.5 * mean),
                           size * 0.2 + mean, size * 0.3 + mean,
                           0.5 + 0.5 * mean, 0.5 - 0.5 * mean], dim=1)
        return box[:, None, :]


class SyncingModel(torch.nn.Module):
    """PixelBoxModel behind a question to the host mid-forward, which no CUDA graph can hold."""

    def __init__(self) -> None:
        super().__init__()
        self.boxes = PixelBoxModel()

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if float(images.sum()) < 0:
            return images[:, :1, :1, :6].reshape(images.shape[0], 1, 6)
        return self.boxes(images)


def _scripted(model: torch.nn.Module, path) -> str:
    with warnings.catch_warnings():
        warnings.simplefilter('ignore', FutureWarning)
        torch.jit.script(model).save(str(path))
    return str(path)


def _graph_config(path: str, device: str = 'cuda', **overrides) -> ModelConfig:
    return _config(backend='torchscript', path=path, input_size=64, class_names=['a', 'b'],
                   device=device, **overrides)


def test_cuda_graphs_on_the_cpu_are_ignored_with_a_warning(tmp_path, no_cuda, caplog):
    path = _scripted(PixelBoxModel(), tmp_path / 'pixel.pt')
    with caplog.at_level(logging.WARNING):
        detector = load_detector(_graph_config(path, device='cpu', cuda_graphs=True))
    assert 'cuda_graphs: CUDA graphs need a CUDA device' in caplog.text
    assert len(detector.infer(_frames((64, 48)))[0]) == 1


def test_batch_buckets():
    from multicam_ros.core.models.graphs import bucket
    assert [bucket(n) for n in (1, 2, 3, 4, 5, 8, 9, 31, 32, 33)] == \
        [1, 2, 4, 4, 8, 8, 16, 32, 32, 64]


@pytest.mark.gpu
def test_cuda_graphs_give_the_detections_of_the_plain_forward(tmp_path, caplog):
    """Batches of 1, 3, 5, 3 and 2 frames through graphs of buckets 1, 4, 8 and 2 (4 replayed
    with another batch's leftovers in its spare rows) give exactly the plain model's
    detections; a model that syncs mid-forward is said once and runs without graphs."""
    path = _scripted(PixelBoxModel(), tmp_path / 'pixel.pt')
    plain = load_detector(_graph_config(path))
    graphs = load_detector(_graph_config(path, cuda_graphs=True))
    for seed, count in enumerate((1, 3, 5, 3, 2)):
        frames = _frames(*[(64 + 8 * i, 48) for i in range(count)], seed=seed)
        for want, have in zip(plain.infer(frames), graphs.infer(frames)):
            # the same kernels, but TorchScript may fuse them differently once warmed up
            np.testing.assert_allclose(have.boxes_xyxy, want.boxes_xyxy, rtol=1e-5, atol=1e-3)
            np.testing.assert_allclose(have.scores, want.scores, rtol=1e-5, atol=1e-5)
    assert graphs._forward.buckets == (1, 2, 4, 8)

    syncing = load_detector(_graph_config(_scripted(SyncingModel(), tmp_path / 'sync.pt'),
                                          cuda_graphs=True))
    with caplog.at_level(logging.WARNING):
        for count in (2, 3):
            frames = _frames(*[(64, 48)] * count)
            assert [len(result) for result in syncing.infer(frames)] == [1] * count
    assert caplog.text.count('cannot be captured as a CUDA graph') == 1
