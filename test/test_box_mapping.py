"""Exact box mapping: letterboxing, the inverse mapping and the YOLO-style post-processing,
through the torchscript back-end with small scripted modules whose outputs are known.

The modules are test doubles for the model only: everything around them (letterboxing on the
device, loading, NMS, mapping) is the real code.
"""
import json
import math
import warnings
from typing import List, Sequence, Tuple

import numpy as np
import pytest
import torch

from multicam_ros.core.models import ModelConfig, load_detector
from multicam_ros.core.models.preprocess import PAD_VALUE, Letterbox, letterbox_batch
from multicam_ros.core.settings import ConfigError

SIZES = [(640, 480), (1920, 1080), (480, 640), (100, 1000), (1000, 100), (333, 777), (1, 1)]
NAMES = ('a', 'b', 'c')


class FixedPredictions(torch.nn.Module):
    """Returns the same rows (cx, cy, w, h, one score per class) for every image of the batch:
    boxes at known network-input pixels. Counts its calls."""

    def __init__(self, rows: torch.Tensor, transposed: bool = False) -> None:
        super().__init__()
        self.register_buffer('rows', rows.to(torch.float32))
        self.register_buffer('calls', torch.zeros((), dtype=torch.int64))
        self.transposed = transposed

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        out = self.rows.to(images.dtype).unsqueeze(0).expand(images.shape[0], -1, -1)
        if self.transposed:
            out = out.transpose(1, 2)
        return out.contiguous()


class ExtentOf(torch.nn.Module):
    """One box per image around the network pixels that differ from the padding value by
    more than `level`, with score 1 for class 0."""

    def __init__(self, level: float) -> None:
        super().__init__()
        self.level = level

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        size = images.shape[3]
        mask = (images - 114.0 / 255.0).abs().amax(dim=1) > self.level  # B x S x S
        columns = mask.any(dim=1).to(torch.float32)
        rows = mask.any(dim=2).to(torch.float32)
        x1 = columns.argmax(dim=1).to(torch.float32)
        x2 = size - columns.flip([1]).argmax(dim=1).to(torch.float32)
        y1 = rows.argmax(dim=1).to(torch.float32)
        y2 = size - rows.flip([1]).argmax(dim=1).to(torch.float32)
        ones = torch.ones_like(x1)
        boxes = torch.stack([(x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1, ones], dim=1)
        return boxes.unsqueeze(1)


def _script(module: torch.nn.Module, path) -> str:
    with warnings.catch_warnings():
        warnings.simplefilter('ignore', FutureWarning)
        torch.jit.script(module).save(str(path))
    return str(path)


def _rows(size: int) -> torch.Tensor:
    """Four boxes in network pixels for an input of `size`, classes a, b, c, a."""
    unit = size / 640.0
    table = [  # cx, cy, w, h, score a, b, c
        (320, 320, 200, 100, 0.9, 0.1, 0.0),
        (100, 500, 60, 80, 0.1, 0.8, 0.0),
        (600, 40, 50, 50, 0.0, 0.0, 0.7),
        (10, 630, 30, 30, 0.6, 0.0, 0.0),
    ]
    return torch.tensor([[v * unit for v in row[:4]] + list(row[4:]) for row in table])


def _expected(rows: torch.Tensor, width: int, height: int, size: int) -> Tuple[np.ndarray, ...]:
    """The analytic result: each row's box mapped to source pixels, clipped, boxes without
    area dropped; sorted by score."""
    scale = min(size / width, size / height)
    pad_x, pad_y = (size - width * scale) / 2, (size - height * scale) / 2
    boxes, scores, ids = [], [], []
    for cx, cy, w, h, *class_scores in rows.tolist():
        x1 = min(max((cx - w / 2 - pad_x) / scale, 0.0), width)
        x2 = min(max((cx + w / 2 - pad_x) / scale, 0.0), width)
        y1 = min(max((cy - h / 2 - pad_y) / scale, 0.0), height)
        y2 = min(max((cy + h / 2 - pad_y) / scale, 0.0), height)
        if x2 > x1 and y2 > y1:
            boxes.append((x1, y1, x2, y2))
            scores.append(max(class_scores))
            ids.append(int(np.argmax(class_scores)))
    order = np.argsort(-np.asarray(scores), kind='stable')
    return (np.asarray(boxes, np.float64).reshape(-1, 4)[order],
            np.asarray(scores)[order], np.asarray(ids, np.int64)[order])


def _frames(sizes: Sequence[Tuple[int, int]], seed: int = 0) -> List[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for w, h in sizes]


def _detector(path: str, size: int = 640, **overrides):
    settings = dict(backend='torchscript', path=path, class_names=NAMES, device='cpu',
                    input_size=size, confidence_threshold=0.5, iou_threshold=0.45)
    settings.update(overrides)
    return load_detector(ModelConfig(**settings))


@pytest.mark.parametrize('size', [640, 416])
@pytest.mark.parametrize('width,height', SIZES)
def test_boxes_come_back_exactly_in_source_pixels(tmp_path, width, height, size):
    rows = _rows(size)
    detector = _detector(_script(FixedPredictions(rows), tmp_path / 'm.pt'), size)
    [result] = detector.infer(_frames([(width, height)]))
    boxes, scores, ids = _expected(rows, width, height, size)
    assert result.boxes_xyxy.dtype == np.float32 and result.class_ids.dtype == np.int64
    np.testing.assert_allclose(result.boxes_xyxy, boxes, atol=1e-3, rtol=0)
    np.testing.assert_allclose(result.scores, scores, atol=1e-6)
    np.testing.assert_array_equal(result.class_ids, ids)
    assert np.all(result.boxes_xyxy[:, [0, 2]] <= width)
    assert np.all(result.boxes_xyxy[:, [1, 3]] <= height)


@pytest.mark.parametrize('transposed', [False, True])
def test_mixed_batch_maps_each_frame_with_its_own_letterbox(tmp_path, transposed):
    rows = _rows(640)
    model = FixedPredictions(rows, transposed)
    detector = _detector(_script(model, tmp_path / 'm.pt'))
    sizes = SIZES + [(640, 480), (100, 1000)]  # repeated sizes share one upload
    results = detector.infer(_frames(sizes))
    assert len(results) == len(sizes)
    for (width, height), result in zip(sizes, results):
        boxes, scores, ids = _expected(rows, width, height, 640)
        np.testing.assert_allclose(result.boxes_xyxy, boxes, atol=1e-3, rtol=0)
        np.testing.assert_array_equal(result.class_ids, ids)
    assert int(detector.model.calls) == 2  # the dummy batch at load, then ONE for the batch


@pytest.mark.parametrize('size', [640, 320])
def test_letterbox_places_each_frame_where_its_parameters_say(size):
    sizes = SIZES
    frames = [np.empty((h, w, 3), np.uint8) for w, h in sizes]
    for frame in frames:
        frame[:] = (10, 20, 200)  # BGR
    batch, letterboxes = letterbox_batch(frames, size, 'cpu')
    assert batch.shape == (len(sizes), 3, size, size) and batch.dtype == torch.float32
    for image, box, (width, height) in zip(batch, letterboxes, sizes):
        assert box == Letterbox.fit(width, height, size)
        assert math.isclose(box.scale, min(size / width, size / height))
        # Network pixels whose centres lie inside [pad, pad + extent) hold the frame.
        first_x = math.ceil(box.pad_x - 0.5)
        last_x = math.ceil(box.pad_x + width * box.scale - 0.5) - 1
        first_y = math.ceil(box.pad_y - 0.5)
        last_y = math.ceil(box.pad_y + height * box.scale - 0.5) - 1
        content = torch.zeros((size, size), dtype=torch.bool)
        content[first_y:last_y + 1, first_x:last_x + 1] = True
        expected_rgb = torch.tensor([200, 20, 10]) / 255.0
        assert torch.allclose(image[:, content], expected_rgb[:, None].expand(3, -1), atol=1e-6)
        assert torch.all(image[:, ~content] == PAD_VALUE)


@pytest.mark.parametrize('width,height', SIZES)
def test_frame_extent_round_trips_through_the_model(tmp_path, width, height):
    """A model that boxes the non-padding pixels gets back the whole frame, to within half a
    network pixel (the sampling grid), in source pixels."""
    path = _script(ExtentOf(0.25), tmp_path / 'extent.pt')
    detector = _detector(path, class_names=('frame',))
    frame = np.zeros((height, width, 3), np.uint8)
    [result] = detector.infer([frame])
    scale = min(640 / width, 640 / height)
    np.testing.assert_allclose(result.boxes_xyxy[0], [0, 0, width, height],
                               atol=0.5 / scale + 1e-3, rtol=0)


def test_marker_inside_the_frame_round_trips(tmp_path):
    path = _script(ExtentOf(0.25), tmp_path / 'extent.pt')
    detector = _detector(path, class_names=('marker',))
    cases = [((1920, 1080), (700, 300, 1100, 500)), ((480, 640), (40, 500, 200, 620)),
             ((100, 1000), (10, 100, 90, 400)), ((200, 300), (50, 60, 51, 61))]
    frames = []
    for (width, height), (x1, y1, x2, y2) in cases:
        frame = np.full((height, width, 3), 114, np.uint8)
        frame[y1:y2, x1:x2] = 255
        frames.append(frame)
    for ((width, height), marker), result in zip(cases, detector.infer(frames)):
        scale = min(640 / width, 640 / height)
        np.testing.assert_allclose(result.boxes_xyxy[0], marker, atol=1.0 / scale + 1e-3)


def test_threshold_keeps_scores_at_or_above_it(tmp_path):
    path = _script(FixedPredictions(_rows(640)), tmp_path / 'm.pt')
    for threshold, expected in ((0.5, [0.9, 0.8, 0.7, 0.6]), (0.8, [0.9, 0.8]), (0.95, [])):
        [result] = _detector(path, confidence_threshold=threshold).infer(_frames([(640, 640)]))
        np.testing.assert_allclose(result.scores, expected, atol=1e-6)


def test_classes_filter_keeps_only_named_classes(tmp_path):
    path = _script(FixedPredictions(_rows(640)), tmp_path / 'm.pt')
    detector = _detector(path, classes=('a', 'c'))
    for result in detector.infer(_frames([(640, 640), (800, 600)])):
        assert set(result.class_ids.tolist()) <= {0, 2} and len(result) > 0
    with pytest.raises(ConfigError, match=r"^classes: unknown class name\(s\) 'dog'; "
                                          r"accepted: this model's classes: 'a', 'b', 'c'$"):
        _detector(path, classes=('a', 'dog'))


def test_max_detections_keeps_the_best_per_image(tmp_path):
    rng = np.random.default_rng(1)
    count = 50
    centres = np.stack(np.meshgrid(np.arange(10) * 60 + 40, np.arange(5) * 60 + 200), -1)
    scores = rng.permutation(count) / count * 0.5 + 0.5
    rows = np.zeros((count, 7), np.float32)
    rows[:, :2] = centres.reshape(-1, 2)
    rows[:, 2:4] = 40  # no overlaps: NMS keeps all
    rows[:, 4] = scores
    path = _script(FixedPredictions(torch.from_numpy(rows)), tmp_path / 'm.pt')
    detector = _detector(path, max_detections=7)
    results = detector.infer(_frames([(640, 640), (1280, 1280), (640, 480)]))
    best = np.sort(scores)[::-1][:7]
    for result in results:
        np.testing.assert_allclose(result.scores, best, atol=1e-6)
    assert len(_detector(path, max_detections=100).infer(_frames([(640, 640)]))[0]) == count


def test_nms_is_class_aware_and_per_image(tmp_path):
    rows = torch.tensor([
        [100, 100, 80, 80, 0.9, 0, 0],
        [104, 102, 80, 80, 0.8, 0, 0],  # same class, IoU ~0.86: suppressed
        [102, 100, 80, 80, 0, 0.7, 0],  # other class: kept
        [300, 300, 80, 80, 0.6, 0, 0],  # far away: kept
        [340, 300, 80, 80, 0.55, 0, 0],  # IoU 1/3 with the one above: kept at 0.45
    ])
    path = _script(FixedPredictions(rows), tmp_path / 'm.pt')
    results = _detector(path).infer(_frames([(640, 640), (640, 640)]))
    for result in results:  # identical boxes in two images never suppress each other
        np.testing.assert_allclose(result.scores, [0.9, 0.7, 0.6, 0.55], atol=1e-6)
        np.testing.assert_array_equal(result.class_ids, [0, 1, 0, 0])
    [strict] = _detector(path, iou_threshold=0.3).infer(_frames([(640, 640)]))
    np.testing.assert_allclose(strict.scores, [0.9, 0.7, 0.6], atol=1e-6)


def test_no_detections_gives_empty_arrays(tmp_path):
    path = _script(FixedPredictions(_rows(640)), tmp_path / 'm.pt')
    results = _detector(path, confidence_threshold=1.0).infer(_frames([(64, 48), (48, 64)]))
    for result in results:
        assert len(result) == 0 and result.boxes_xyxy.shape == (0, 4)
    assert _detector(path).infer([]) == []


def test_class_names_sources(tmp_path):
    rows = torch.cat([_rows(640), torch.zeros(8, 7)])  # 12 boxes: more boxes than channels
    path = _script(FixedPredictions(rows), tmp_path / 'm.torchscript')
    config = dict(backend='torchscript', path=path, device='cpu')
    # No names at all: generic ones, with the class count read from the output (the smaller
    # of its two last dimensions).
    assert load_detector(ModelConfig(**config)).class_names == ['class_0', 'class_1', 'class_2']
    (tmp_path / 'm.names').write_text('person\ncar\n\nbus\n')
    assert load_detector(ModelConfig(**config)).class_names == ['person', 'car', 'bus']
    labels = tmp_path / 'labels.yaml'
    labels.write_text('names:\n  0: x\n  1: y\n  2: z\n')
    named = load_detector(ModelConfig(labels_file=str(labels), **config))
    assert named.class_names == ['x', 'y', 'z']
    labels_json = tmp_path / 'labels.json'
    labels_json.write_text(json.dumps(['p', 'q', 'r']))
    assert load_detector(ModelConfig(labels_file=str(labels_json), **config)).class_names == [
        'p', 'q', 'r']
    assert load_detector(ModelConfig(class_names=('u', 'v', 'w'), labels_file=str(labels),
                                     **config)).class_names == ['u', 'v', 'w']
    with pytest.raises(ConfigError, match=r'^model.path: .*4 \+ 2 = 6.*from model.class_names; '
                                          r'accepted: class names that match the model'):
        load_detector(ModelConfig(class_names=('u', 'v'), **config))
    with pytest.raises(ConfigError, match=r"^model.labels_file: cannot read '.*absent.txt' "
                                          r'\(No such file or directory\); accepted: a file '
                                          r'of class names'):
        load_detector(ModelConfig(labels_file=str(tmp_path / 'absent.txt'), **config))
    gappy = tmp_path / 'gappy.yaml'
    gappy.write_text('names:\n  0: x\n  2: z\n')
    with pytest.raises(ConfigError, match=r"^model.labels_file: '.*gappy.yaml': a mapping of "
                                          r'class names needs the ids 0 to n-1 as keys; '
                                          r'accepted: '):
        load_detector(ModelConfig(labels_file=str(gappy), **config))
    (tmp_path / 'm.names').write_text('\n\n')
    with pytest.raises(ConfigError, match=r"^model.path: its class names file '.*m.names' holds "
                                          r'no class names; accepted: '):
        load_detector(ModelConfig(**config))


def test_names_stored_in_the_model_file(tmp_path):
    """ultralytics' TorchScript exports keep their metadata in the file's config.txt."""
    path = str(tmp_path / 'yolo.torchscript')
    metadata = {'names': {'0': 'person', '1': 'bicycle', '2': 'car'}, 'imgsz': [640, 640]}
    with warnings.catch_warnings():
        warnings.simplefilter('ignore', FutureWarning)
        torch.jit.script(FixedPredictions(_rows(640), transposed=True)).save(
            path, _extra_files={'config.txt': json.dumps(metadata)})
    detector = load_detector(ModelConfig(backend='torchscript', path=path, device='cpu'))
    assert detector.class_names == ['person', 'bicycle', 'car']
    [result] = detector.infer(_frames([(1280, 720)]))
    np.testing.assert_allclose(result.boxes_xyxy, _expected(_rows(640), 1280, 720, 640)[0],
                               atol=1e-3)


def test_torch_export_program(tmp_path):
    """A .pt2 file from torch.export with a dynamic batch dimension works the same way."""
    rows = _rows(640)
    batch = torch.export.Dim('batch', min=1, max=64)
    program = torch.export.export(FixedPredictions(rows, transposed=True),
                                  (torch.zeros(2, 3, 640, 640),),
                                  dynamic_shapes={'images': {0: batch}})
    path = str(tmp_path / 'model.pt2')
    torch.export.save(program, path)
    detector = _detector(path)
    for (width, height), result in zip(SIZES, detector.infer(_frames(SIZES))):
        np.testing.assert_allclose(result.boxes_xyxy, _expected(rows, width, height, 640)[0],
                                   atol=1e-3)


def test_model_that_rejects_the_dummy_batch_is_an_error_at_load(tmp_path):
    path = _script(FixedPredictions(_rows(640)), tmp_path / 'm.pt')
    with pytest.raises(ConfigError, match=r'^model.path: .*4 \+ 4 = 8.*model.class_names'):
        _detector(path, class_names=('a', 'b', 'c', 'd'))

    class BatchOfOne(torch.nn.Module):
        def forward(self, images: torch.Tensor) -> torch.Tensor:
            flat = images.view(1, 3, 640, 640).reshape(1, 3, -1)  # batch of exactly 1
            return flat[:, :, :7].transpose(1, 2)

    bad = _script(BatchOfOne(), tmp_path / 'one.pt')
    with pytest.raises(ConfigError, match=r'^model.path: .*dummy batch.*input_size 640.*; '
                                          r'accepted: a model that takes any batch size'):
        _detector(bad)


def test_bad_frames_are_rejected(tmp_path):
    detector = _detector(_script(FixedPredictions(_rows(640)), tmp_path / 'm.pt'))
    for frame in (np.zeros((48, 64), np.uint8), np.zeros((48, 64, 3), np.float32)):
        with pytest.raises(ValueError, match='H x W x 3 uint8') as info:
            detector.infer([frame])
        assert not isinstance(info.value, ConfigError)  # bad input at run time, not settings


@pytest.mark.gpu
@pytest.mark.parametrize('half', [False, True])
def test_cuda_letterbox_and_mapping(tmp_path, half):
    """On the GPU (fp32 and fp16) the boxes come back exactly as on the CPU."""
    rows = _rows(640)  # whole-pixel boxes: exact in fp16 too
    detector = _detector(_script(FixedPredictions(rows), tmp_path / 'm.pt'), device='cuda',
                         half=half)
    assert detector.device == 'cuda:0' and detector.half == half
    frames = _frames(SIZES + [(1920, 1080)])
    for image, result in zip(frames, detector.infer(frames)):
        height, width = image.shape[:2]
        boxes, scores, ids = _expected(rows, width, height, 640)
        np.testing.assert_allclose(result.boxes_xyxy, boxes, atol=1e-3, rtol=0)
        np.testing.assert_allclose(result.scores, scores, atol=1e-3)
        np.testing.assert_array_equal(result.class_ids, ids)
    on_gpu, _ = letterbox_batch(frames, 640, 'cuda:0', torch.float16 if half else torch.float32)
    on_cpu, _ = letterbox_batch(frames, 640, 'cpu')
    assert on_gpu.device.type == 'cuda'
    torch.testing.assert_close(on_gpu.float().cpu(), on_cpu, atol=2e-3 if half else 1e-4,
                               rtol=0)
