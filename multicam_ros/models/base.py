"""What every model back-end provides to the detector. ROS-free.

A back-end holds ONE model on one device and turns a batch of camera frames (any sizes, mixed
in one batch) into detections in each frame's own source pixels.
"""
from dataclasses import dataclass, field
from typing import List, Protocol, Sequence, Tuple

import numpy as np


@dataclass(frozen=True)
class ModelConfig:
    """The detector's model parameters (`model.*` plus the common ones), already checked."""

    backend: str = 'torchvision'  # torchvision | torchscript | ultralytics
    name: str = 'fasterrcnn_mobilenet_v3_large_320_fpn'  # torchvision architecture
    weights: str = 'DEFAULT'  # torchvision: a local file, DEFAULT, or none
    path: str = ''  # torchscript / ultralytics model file
    class_names: Tuple[str, ...] = ()  # overrides the model's own names
    labels_file: str = ''  # one class name per line (or a .yaml/.json list)
    device: str = 'auto'  # auto | cpu | cuda | cuda:N
    half: bool = False  # fp16 on CUDA
    input_size: int = 640  # square network input for letterboxing back-ends, px
    confidence_threshold: float = 0.5
    iou_threshold: float = 0.45
    max_detections: int = 100
    classes: Tuple[str, ...] = ()  # keep only these class names; empty keeps all


@dataclass(frozen=True)
class Detections:
    """Detections of one frame: boxes are x1, y1, x2, y2 in that frame's source pixels."""

    boxes_xyxy: np.ndarray = field(default_factory=lambda: np.zeros((0, 4), np.float32))
    scores: np.ndarray = field(default_factory=lambda: np.zeros((0,), np.float32))
    class_ids: np.ndarray = field(default_factory=lambda: np.zeros((0,), np.int64))

    def __len__(self) -> int:
        return len(self.scores)


class Detector(Protocol):
    """A loaded model. `infer` runs ONE forward pass for the whole batch."""

    class_names: List[str]  # index = class id
    device: str  # the torch device actually used, e.g. 'cpu' or 'cuda:0'
    description: str  # e.g. 'torchvision fasterrcnn_mobilenet_v3_large_320_fpn (weights: none)'

    def infer(self, images_bgr: Sequence[np.ndarray]) -> List[Detections]:
        """One batch of H x W x 3 uint8 BGR frames (sizes may differ) -> one result each."""
        ...

    def memory_bytes(self) -> int:
        """Bytes held by the model's parameters and buffers on its device."""
        ...
