"""torchvision detection models (`model.backend: torchvision`). ROS-free.

`model.name` is any builder of torchvision.models.detection (fasterrcnn_mobilenet_v3_large_320_fpn,
ssdlite320_mobilenet_v3_large, retinanet_resnet50_fpn_v2, fcos_resnet50_fpn, ...).
`model.weights` is one of:
- `DEFAULT`: torchvision's published COCO weights, downloaded into the torch hub cache
  ($TORCH_HOME) on first use; where that fails, an error suggests a local file;
- `none`: random initialisation (backbone too), for tests and benchmarks only: detections are
  meaningless and a loud warning says so;
- a local file holding a state dict, `torch.save(model.state_dict(), path)` (a checkpoint dict
  with the state dict under `model` or `state_dict` also works). Only tensors are unpickled
  (weights_only), so a full pickled model is refused: unpickling it could run arbitrary code.

Class ids are the model's label ids; torchvision's detectors keep id 0 for `__background__`.
Class names are the COCO categories of the architecture's published weights (read from
torchvision's metadata, no download), or `model.class_names` / `model.labels_file`, which for a
local file or `none` also set the number of classes the model is built with (background
included).

The models resize and normalise each image themselves and return boxes in each input image's
own pixels, so a batch is a list of the frames as RGB 0-1 tensors on the device, run in ONE
call. `input_size` does not apply. The models' own score threshold, NMS IoU threshold and
detections-per-image limit are set from `confidence_threshold`, `iou_threshold` and
`max_detections`; the `classes` filter and the final limit are applied afterwards, batched.
fp16 (`half` on CUDA) runs under autocast, which keeps the precision-sensitive parts in fp32.
Where torchvision loops over the images in Python (its transform; the R-CNNs' proposal and
detection filters), batched versions with the same results run instead (`torchvision_batched`).
"""
import contextlib
import logging
import os
import pickle
from collections.abc import Mapping
from typing import Dict, List, Optional, Sequence

import numpy as np
import torch
from torchvision.models import detection, get_model_builder, get_model_weights, list_models

from multicam_ros.core.models import (check_classes, first_line, names_origin, torchvision_batched,
                                      resolve_class_names, use_half)
from multicam_ros.core.models.base import Detections, ModelConfig
from multicam_ros.core.models.preprocess import (Uploader, clip_boxes, image_of_each,
                                                 split_by_image, top_per_image, upload_rgb)
from multicam_ros.core.settings import ConfigError, by_name, settings_of

_LOG = logging.getLogger(__name__)
_WEIGHTS_WORDS = "a local state-dict file, 'DEFAULT' or 'none'"
# The model's own cap while a `classes` filter follows it: as many as max_detections allows.
_UNLIMITED_DETECTIONS = int(by_name(settings_of(ModelConfig))['max_detections'].max_value)


def supported_names() -> List[str]:
    """The detection architectures torchvision provides, by builder name."""
    return sorted(list_models(module=detection))


class TorchvisionDetector:
    """One torchvision detection model on one device; `infer` is one forward pass a batch."""

    takes_device_frames = True  # preprocess.Uploader takes frames already on the device

    def __init__(self, config: ModelConfig, device: str) -> None:
        if config.name not in supported_names():
            raise ConfigError.of('model.name', f'{config.name!r} is not a torchvision '
                                 'detection model', 'one of ' + ', '.join(
                                     repr(name) for name in supported_names()))
        self.device = device
        self._uploader = Uploader(device)
        self.half = use_half(config, device)
        self._config = config
        published = get_model_weights(config.name).DEFAULT
        coco = list(published.meta['categories'])
        names, source = resolve_class_names(config, coco, 'torchvision COCO categories')
        self.class_names: List[str] = list(names or coco)
        # Names from the parameters also set the class count of a model built here.
        num_classes = len(self.class_names) if names is not None and names != coco else None
        allowed = check_classes(self.class_names, config.classes)  # before the slow part
        mode = config.weights.strip()
        if mode.lower() == 'default':
            if len(self.class_names) != len(coco):
                key, where = names_origin(config)
                raise ConfigError.of(
                    key, f'{len(self.class_names)} names{where}, but the DEFAULT weights of '
                    f'{config.name} have {len(coco)} classes', f'{len(coco)} names, or '
                    f'model.weights set to a state-dict file with {len(self.class_names)} '
                    'classes')
            self.model = self._download(config.name, published)
            weights_text = 'DEFAULT'
        elif mode.lower() == 'none':
            self.model = self._build(config.name, num_classes)
            _LOG.warning('model.weights is none: %s has RANDOM weights, its detections are '
                         'MEANINGLESS. Use this for tests and benchmarks only.', config.name)
            weights_text = 'none'
        elif mode:
            self.model = self._build(config.name, num_classes)
            self._load_state(mode, source)
            weights_text = mode
        else:
            raise ConfigError.of('model.weights', 'empty', _WEIGHTS_WORDS)
        self._configure_heads(config)
        torchvision_batched.install(self.model)  # its per-image loops, batched
        self.model.eval().to(device)
        self._allowed: Optional[torch.Tensor] = None
        if allowed is not None:
            self._allowed = torch.zeros(len(self.class_names), dtype=torch.bool, device=device)
            self._allowed[allowed] = True
        precision = ', fp16' if self.half else ''
        self.description = f'torchvision {config.name} (weights: {weights_text}{precision})'

    def infer(self, images_bgr: Sequence[np.ndarray]) -> List[Detections]:
        """One batch of BGR frames (sizes may differ) -> Detections in each frame's pixels."""
        if len(images_bgr) == 0:
            return []
        autocast = (torch.autocast('cuda', dtype=torch.float16) if self.half
                    else contextlib.nullcontext())
        with torch.inference_mode():
            tensors = upload_rgb(images_bgr, self._uploader)
            with autocast:
                outputs = self.model(tensors)  # ONE forward pass for the whole batch
            return self._select(outputs, images_bgr)

    def memory_bytes(self) -> int:
        """Bytes of the model's parameters and buffers."""
        tensors = list(self.model.parameters()) + list(self.model.buffers())
        return sum(tensor.numel() * tensor.element_size() for tensor in tensors)

    def _select(self, outputs: List[Dict[str, torch.Tensor]],
                images_bgr: Sequence[np.ndarray]) -> List[Detections]:
        """Threshold, `classes` filter and max_detections over the whole batch at once."""
        batch_size = len(outputs)
        counts = [len(output['scores']) for output in outputs]
        boxes = torch.cat([output['boxes'] for output in outputs]).to(torch.float32)
        scores = torch.cat([output['scores'] for output in outputs])
        labels = torch.cat([output['labels'] for output in outputs])
        image_index = image_of_each(counts, self.device)
        keep = scores >= self._config.confidence_threshold
        if self._allowed is not None:
            keep &= self._allowed[labels]
        kept = keep.nonzero().squeeze(1)
        kept = kept[top_per_image(scores[kept], image_index[kept], batch_size,
                                  self._config.max_detections)]
        sizes = torch.tensor([[image.shape[1], image.shape[0]] * 2 for image in images_bgr],
                             dtype=torch.float32, device=self.device)
        image_index = image_index[kept]
        boxes = clip_boxes(boxes[kept], sizes[image_index])
        return split_by_image(boxes, scores[kept], labels[kept], image_index, batch_size)

    def _configure_heads(self, config: ModelConfig) -> None:
        """Hand the thresholds to the model's own post-processing (it does NMS itself)."""
        heads = getattr(self.model, 'roi_heads', self.model)  # R-CNNs keep them in roi_heads
        limit = config.max_detections if not config.classes else _UNLIMITED_DETECTIONS
        # A hair below the threshold: the models drop scores <= theirs, this back-end keeps
        # scores >= confidence_threshold, and applies the exact threshold itself.
        pre_threshold = max(0.0, config.confidence_threshold - 1e-6)
        for attribute, value in (('score_thresh', pre_threshold),
                                 ('nms_thresh', config.iou_threshold),
                                 ('detections_per_img', limit)):
            if hasattr(heads, attribute):
                setattr(heads, attribute, value)

    @staticmethod
    def _build(name: str, num_classes: Optional[int]) -> torch.nn.Module:
        """The architecture with random weights (backbone included: nothing is fetched)."""
        extra = {} if num_classes is None else {'num_classes': num_classes}
        return get_model_builder(name)(weights=None, weights_backbone=None, **extra)

    @staticmethod
    def _download(name: str, published: object) -> torch.nn.Module:
        """The published weights, from the torch hub cache or downloaded into it."""
        try:
            return get_model_builder(name)(weights='DEFAULT')
        except Exception as exc:  # noqa: BLE001 - network, HTTP, disk and hash errors alike
            url = getattr(published, 'url', '?')
            raise ConfigError.of(
                'model.weights', f'DEFAULT: could not fetch the published weights of {name} '
                f'({type(exc).__name__}: {first_line(exc)})', f'a local state-dict file: '
                f'without a network, fetch {url} elsewhere and set model.weights to that local '
                f"file (or place it in {os.path.join(torch.hub.get_dir(), 'checkpoints')})"
            ) from None

    def _load_state(self, path: str, names_source: str) -> None:
        """Load a state-dict file into the built model; any problem is a ConfigError of
        model.weights."""
        if not os.path.isfile(path):
            raise ConfigError.of('model.weights', f'{path!r} is not a file', _WEIGHTS_WORDS)
        try:
            state = torch.load(path, map_location='cpu', weights_only=True)
        except pickle.UnpicklingError as exc:
            if 'unsupported global' in str(exc).lower():  # pickled objects, not just tensors
                raise ConfigError.of(
                    'model.weights', f'{path!r} holds more than tensors (a full pickled '
                    'model?)', 'a state dict, saved with torch.save(model.state_dict(), path)'
                ) from None
            raise ConfigError.of('model.weights', f'{path!r} is not a PyTorch weights file '
                                 f'({first_line(exc)})', _WEIGHTS_WORDS) from None
        except Exception as exc:  # noqa: BLE001 - corrupt zip, truncated file, ...
            raise ConfigError.of('model.weights', f'{path!r} is not a PyTorch weights file '
                                 f'({type(exc).__name__}: {first_line(exc)})',
                                 _WEIGHTS_WORDS) from None
        if isinstance(state, Mapping):
            for key in ('model', 'state_dict'):
                if isinstance(state.get(key), Mapping):
                    state = state[key]
                    break
        if not isinstance(state, Mapping) or not all(
                isinstance(value, torch.Tensor) for value in state.values()):
            raise ConfigError.of('model.weights', f'{path!r} does not hold a state dict',
                                 'a state dict: a mapping of parameter names to tensors')
        try:
            self.model.load_state_dict(state, strict=True)
        except RuntimeError as exc:
            details = ' '.join(str(exc).split())[:400]
            raise ConfigError.of(
                'model.weights', f'{path!r} does not fit model.name {self._config.name} with '
                f'{len(self.class_names)} classes ({names_source}): {details}',
                f'a state dict of {self._config.name} with {len(self.class_names)} classes '
                '(for another number of classes set model.class_names or model.labels_file, '
                'background included)') from None
