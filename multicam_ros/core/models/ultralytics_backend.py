"""YOLO models through the optional `ultralytics` package (`model.backend: ultralytics`). ROS-free.

`model.path` is a YOLO file that ultralytics loads (a `.pt` checkpoint, or any format its YOLO
class reads). A `.pt` checkpoint is a pickle: load only files you trust. ultralytics does its
own letterboxing, NMS and mapping back to source pixels; the whole batch of BGR frames goes to
its `predict` in one call. Class names are the model's own unless `model.class_names` /
`model.labels_file` rename them (same count).

ultralytics is not a dependency of this package (`pip install ultralytics` to use it), and its
absence is an error naming `model.backend` only when this back-end is asked for.
"""
import os
from typing import List, Sequence

import numpy as np
import torch

from multicam_ros.core.models import (check_classes, first_line, names_from_data, names_origin,
                                      resolve_class_names, use_half)
from multicam_ros.core.models.base import Detections, ModelConfig
from multicam_ros.core.models.preprocess import check_frames
from multicam_ros.core.settings import ConfigError

_FILE_WORDS = 'a YOLO model file that ultralytics loads, such as yolov8n.pt'


class UltralyticsDetector:
    """One ultralytics YOLO model on one device; `infer` is one `predict` call a batch."""

    def __init__(self, config: ModelConfig, device: str) -> None:
        try:
            from ultralytics import YOLO
        except ImportError as exc:
            raise ConfigError.of(
                'model.backend', "'ultralytics' needs the ultralytics package, which cannot be "
                f'imported ({first_line(exc)})', "'ultralytics' once installed with 'pip "
                "install ultralytics', or 'torchscript' with an exported model") from None
        path = config.path.strip()
        if not os.path.isfile(path):  # never let ultralytics try to download a bare name
            raise ConfigError.of('model.path', f'{path!r} is not a file', _FILE_WORDS)
        try:
            self._yolo = YOLO(path)
            own = names_from_data(dict(self._yolo.names))
        except Exception as exc:  # noqa: BLE001 - whatever ultralytics raises on a bad file
            raise ConfigError.of('model.path', f'ultralytics cannot load {path!r} '
                                 f'({type(exc).__name__}: {first_line(exc)})',
                                 _FILE_WORDS) from None
        names, _ = resolve_class_names(config, own, 'the model')
        if len(names) != len(own):
            key, where = names_origin(config)
            raise ConfigError.of(key, f'{len(names)} names{where}, but {path} has {len(own)} '
                                 'classes', f'{len(own)} names, one for each class of the model')
        self.class_names: List[str] = list(names)
        self.device = device
        self.half = use_half(config, device)
        self._config = config
        self._classes = check_classes(self.class_names, config.classes)
        self._device_arg = 'cpu' if device == 'cpu' else device.split(':')[1]
        precision = ', fp16' if self.half else ''
        self.description = (f'ultralytics {os.path.basename(path)} ({len(own)} classes, '
                            f'input {config.input_size}px{precision})')

    def infer(self, images_bgr: Sequence[np.ndarray]) -> List[Detections]:
        """One batch of BGR frames (sizes may differ) -> Detections in each frame's pixels."""
        if len(images_bgr) == 0:
            return []
        check_frames(images_bgr)
        config = self._config
        results = self._yolo.predict(
            list(images_bgr), imgsz=config.input_size, conf=config.confidence_threshold,
            iou=config.iou_threshold, max_det=config.max_detections, classes=self._classes,
            half=self.half, device=self._device_arg, verbose=False)
        detections = []
        for result in results:
            boxes = result.boxes
            detections.append(Detections(
                boxes_xyxy=boxes.xyxy.to(torch.float32).cpu().numpy().reshape(-1, 4),
                scores=boxes.conf.to(torch.float32).cpu().numpy().reshape(-1),
                class_ids=boxes.cls.cpu().numpy().astype(np.int64).reshape(-1)))
        return detections

    def memory_bytes(self) -> int:
        """Bytes of the model's parameters and buffers."""
        module = self._yolo.model
        tensors = list(module.parameters()) + list(module.buffers())
        return sum(tensor.numel() * tensor.element_size() for tensor in tensors)
