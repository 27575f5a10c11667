"""What every model back-end provides to the detector. ROS-free.

A back-end holds ONE model on one device and turns a batch of camera frames (any sizes, mixed
in one batch) into detections in each frame's own source pixels.
"""
from dataclasses import dataclass, field
from typing import List, Protocol, Sequence, Tuple

import numpy as np

from multicam_ros.core.settings import check_fields, setting


BACKENDS = ('nanodet', 'torchvision', 'torchscript', 'ultralytics')


@dataclass(frozen=True)
class ModelConfig:
    """The detector's model settings (`model.*` plus the common ones), checked on creation."""

    backend: str = setting('nanodet', 'Model back-end: nanodet is NanoDet-g (COCO, 80 classes), '
                           'converted into the cache by `multicam-ros models fetch`.',
                           choices=BACKENDS, name='model.backend')
    name: str = setting('fasterrcnn_mobilenet_v3_large_320_fpn', 'torchvision detection '
                        'architecture (backend torchvision).', name='model.name')
    weights: str = setting(
        'DEFAULT', 'torchvision weights: a local state-dict file, DEFAULT (published COCO '
        'weights, downloaded by torchvision where a network exists) or none (random '
        'initialisation: tests and benchmarks only).', name='model.weights')
    path: str = setting('', 'Model file for the torchscript and ultralytics back-ends; for '
                        'nanodet the converted model (empty: where `multicam-ros models '
                        'fetch` puts it).', name='model.path')
    class_names: Tuple[str, ...] = setting(
        [], "Class names by class id; overrides the model's own.", name='model.class_names')
    labels_file: str = setting('', 'File of class names, one per line (or a YAML/JSON list).',
                               name='model.labels_file')
    device: str = setting('auto', 'auto (CUDA when present, else CPU), cpu, cuda or cuda:N.')
    half: bool = setting(False, 'Run the model in fp16 (CUDA only).')
    cuda_graphs: bool = setting(
        False, 'Replay the forward pass as CUDA graphs (CUDA, nanodet and torchscript '
        'back-ends): less CPU per batch, about twice the throughput for batches of 1-8 frames '
        'and the same at 32; each batch-size bucket (1, 2, 4, ... frames) is captured on its '
        'first batch (0.4-0.8 s) and holds GPU memory of its own.')
    input_size: int = setting(640, 'Square network input of letterboxing back-ends, px.',
                              min_value=32, max_value=4096)
    confidence_threshold: float = setting(0.5, 'Drop detections scoring below this.',
                                          min_value=0.0, max_value=1.0)
    iou_threshold: float = setting(0.45, 'Non-maximum suppression IoU threshold.',
                                   min_value=0.0, max_value=1.0)
    max_detections: int = setting(100, 'Most detections kept per image.', min_value=1,
                                  max_value=10000)
    classes: Tuple[str, ...] = setting([], 'Keep only these class names; empty keeps all.')

    def __post_init__(self) -> None:
        check_fields(self)


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
    # Optional, False when absent: `infer` also takes frames that are H x W x 3 uint8 torch
    # tensors on `device` (uploaded straight from shared memory by preprocess.DeviceStager).
    takes_device_frames: bool

    def infer(self, images_bgr: Sequence[np.ndarray]) -> List[Detections]:
        """One batch of H x W x 3 uint8 BGR frames (sizes may differ) -> one result each."""
        ...

    def memory_bytes(self) -> int:
        """Bytes held by the model's parameters and buffers on its device."""
        ...
