"""Exported models with a YOLO-style output (`model.backend: torchscript`). ROS-free.

`model.path` is a TorchScript file (torch.jit.save: .pt, .torchscript, e.g. an ultralytics
`format=torchscript` export), or a torch.export program (torch.export.save, name ending .pt2).
It is loaded onto the device once; fp16 (`half`) converts it on CUDA.

Input convention: one float tensor B x 3 x S x S, RGB, values 0-1, where S = `input_size`: each
frame letterboxed (aspect kept, centred, padding 114/255; see preprocess.py). The model must
accept any batch size B (export with a dynamic batch dimension).

Output convention: a tensor B x N x (4 + C), or a tuple/list whose first element is one:
N candidate boxes, each `cx, cy, w, h` (box centre and size in network-input pixels, 0..S)
followed by C per-class scores in 0..1 (no separate objectness column; each box takes its best
class). The transposed layout B x (4 + C) x N, which YOLOv8-and-later exports produce, is
recognised by shape: the dimension equal to 4 + C (number of class names) is the channel one;
without class names, the smaller of the two. The back-end does the rest: confidence threshold,
`classes` filter, class-aware NMS, `max_detections` and the exact mapping back to each frame's
source pixels.

Class names (index = class id), first match wins:
1. `model.class_names`;
2. `model.labels_file` (one name per line, or a YAML/JSON list or id -> name mapping);
3. a sidecar file next to the model: the same path with the extension `.names`, one name per
   line (`yolov8n.torchscript` -> `yolov8n.names`);
4. names stored in the model file itself: the `config.txt` extra file (JSON with `names`) that
   ultralytics writes into its TorchScript exports;
5. otherwise `class_0`, `class_1`, ... with a warning.
At load, one dummy batch of 2 runs through the model (which also warms it up); an output that
does not fit the convention, or a class count that differs from the names, is an error there.
"""
import json
import logging
import os
import warnings
from typing import List, Optional, Sequence, Tuple

import numpy as np
import torch

from multicam_ros.core.models import (check_classes, first_line, graphed, names_from_data,
                                      read_labels_file, resolve_class_names, use_half)
from multicam_ros.core.models.base import Detections, ModelConfig
from multicam_ros.core.models.preprocess import PAD_VALUE, Uploader, letterbox_batch, \
    postprocess_dense
from multicam_ros.core.settings import ConfigError

_LOG = logging.getLogger(__name__)
_FILE_WORDS = 'a TorchScript file (torch.jit.save) or a torch.export program (.pt2)'
_OUTPUT_WORDS = 'a model whose output is B x N x (4 + classes) or B x (4 + classes) x N'
_METADATA_FILE = 'config.txt'  # where ultralytics' TorchScript export keeps its metadata


class TorchscriptDetector:
    """One exported model on one device; `infer` is one forward pass a batch."""

    takes_device_frames = True  # preprocess.Uploader takes frames already on the device

    def __init__(self, config: ModelConfig, device: str) -> None:
        self.device = device
        self._uploader = Uploader(device)
        self.half = use_half(config, device)
        self.input_size = config.input_size
        self._config = config
        path = config.path.strip()
        if not path:
            raise ConfigError.of('model.path', 'empty, but the torchscript back-end needs a '
                                 'model file', _FILE_WORDS)
        if not os.path.isfile(path):
            raise ConfigError.of('model.path', f'{path!r} is not a file', _FILE_WORDS)
        self._dtype = torch.float16 if self.half else torch.float32
        self.model, metadata = _load(path, device)
        if self.half:
            self.model.half()
        own, own_source = _own_names(path, metadata)
        names, source = resolve_class_names(config, own, own_source)
        shape = self._dummy_forward(path)
        self._transposed, num_classes = _layout(shape, names, source, path)
        if names is None:
            names = [f'class_{index}' for index in range(num_classes)]
            _LOG.warning('model.path %s: no class names found (model.class_names, '
                         'model.labels_file, %s or names inside the model); using class_0 to '
                         'class_%d', path, _sidecar(path), num_classes - 1)
        self.class_names: List[str] = list(names)
        self._num_classes = num_classes
        allowed = check_classes(self.class_names, config.classes)
        self._allowed: Optional[torch.Tensor] = None
        if allowed is not None:
            self._allowed = torch.zeros(num_classes, dtype=torch.bool, device=device)
            self._allowed[allowed] = True
        exported_size = _exported_size(metadata)
        if exported_size is not None and exported_size != config.input_size:
            _LOG.warning('input_size %d differs from the size %d this model was exported for',
                         config.input_size, exported_size)
        precision = ', fp16' if self.half else ''
        self.description = (f'torchscript {os.path.basename(path)} ({num_classes} classes, '
                            f'input {config.input_size}px{precision})')
        self._forward = graphed(config, device, lambda batch: _first_tensor(self.model(batch)),
                                f'torchscript {os.path.basename(path)}')

    def infer(self, images_bgr: Sequence[np.ndarray]) -> List[Detections]:
        """One batch of BGR frames (sizes may differ) -> Detections in each frame's pixels."""
        if len(images_bgr) == 0:
            return []
        with torch.inference_mode():
            batch, letterboxes = letterbox_batch(images_bgr, self.input_size, self.device,
                                                 self._dtype, self._uploader)
            output = self._forward(batch)  # ONE forward pass for the whole batch
            if self._transposed:
                output = output.transpose(1, 2)
            expected = (len(images_bgr), 4 + self._num_classes)
            if output.ndim != 3 or (output.shape[0], output.shape[2]) != expected:
                raise RuntimeError(f'model output {tuple(output.shape)} does not match the '
                                   f'layout found at load: B x N x {expected[1]}')
            config = self._config
            return postprocess_dense(output, letterboxes, config.confidence_threshold,
                                     config.iou_threshold, config.max_detections, self._allowed)

    def memory_bytes(self) -> int:
        """Bytes of the model's parameters and buffers."""
        tensors = list(self.model.parameters()) + list(self.model.buffers())
        return sum(tensor.numel() * tensor.element_size() for tensor in tensors)

    def _dummy_forward(self, path: str) -> Tuple[int, ...]:
        """Run a padding-only batch of 2; return the output's shape."""
        size = self.input_size
        dummy = torch.full((2, 3, size, size), PAD_VALUE, dtype=self._dtype, device=self.device)
        try:
            with torch.inference_mode():
                output = _first_tensor(self.model(dummy))
        except Exception as exc:  # noqa: BLE001 - whatever the model raises
            text = ' '.join(str(exc).split())[:400]
            raise ConfigError.of(
                'model.path', f'{path!r} failed on a dummy batch of shape 2 x 3 x {size} x '
                f'{size} (input_size {size}): {type(exc).__name__}: {text}',
                f'a model that takes any batch size B of B x 3 x {size} x {size} (export it '
                'with a dynamic batch dimension, for this input_size)') from None
        if output.ndim != 3 or output.shape[0] != 2:
            raise ConfigError.of('model.path', f'{path!r} returned shape {tuple(output.shape)} '
                                 'for a batch of 2', _OUTPUT_WORDS)
        return tuple(output.shape)


def _load(path: str, device: str) -> Tuple[torch.nn.Module, dict]:
    """(model on `device`, metadata stored in the file or {})."""
    extra = {_METADATA_FILE: ''}
    try:
        with warnings.catch_warnings():  # recent torch marks TorchScript deprecated
            warnings.simplefilter('ignore', FutureWarning)
            warnings.simplefilter('ignore', DeprecationWarning)
            if path.endswith('.pt2'):
                from torch.export.passes import move_to_device_pass

                program = move_to_device_pass(torch.export.load(path, extra_files=extra), device)
                model = program.module()  # eval/train is fixed at export time
            else:
                model = torch.jit.load(path, map_location=device, _extra_files=extra)
                model.eval()
    except Exception as exc:  # noqa: BLE001 - corrupt zip, wrong format, ...
        hint = ''
        if 'constants.pkl' in str(exc) or 'data.pkl' in str(exc):
            hint = (', and a checkpoint or state dict is not an exported model (an ultralytics '
                    '.pt file needs model.backend ultralytics)')
        raise ConfigError.of('model.path', f'cannot load {path!r} ({type(exc).__name__}: '
                             f'{first_line(exc)}){hint}', _FILE_WORDS) from None
    raw = extra.get(_METADATA_FILE) or ''
    try:
        metadata = json.loads(raw.decode() if isinstance(raw, bytes) else raw) if raw else {}
    except ValueError:
        metadata = {}
    return model, metadata if isinstance(metadata, dict) else {}


def _own_names(path: str, metadata: dict) -> Tuple[Optional[List[str]], str]:
    """Names from the sidecar file, else from the model's metadata, else (None, '')."""
    sidecar = _sidecar(path)
    if os.path.isfile(sidecar):
        return read_labels_file(sidecar, 'model.path', f'its class names file {sidecar!r}'), \
            sidecar
    if 'names' in metadata:
        try:
            return names_from_data(metadata['names']), f'{path} (metadata)'
        except ValueError:
            _LOG.warning('model.path %s: ignoring unreadable class names in its metadata', path)
    return None, ''


def _sidecar(path: str) -> str:
    return os.path.splitext(path)[0] + '.names'


def _layout(shape: Tuple[int, ...], names: Optional[Sequence[str]], source: str,
            path: str) -> Tuple[bool, int]:
    """(transposed?, number of classes) from the dummy output's shape B x A x C."""
    _, rows, columns = shape
    if names is not None:
        channels = 4 + len(names)
        if columns == channels:
            if rows == channels:
                _LOG.warning('model.path %s: output %s is square; reading it as B x N x '
                             '(4 + classes)', path, shape)
            return False, len(names)
        if rows == channels:
            return True, len(names)
        raise ConfigError.of(
            'model.path', f'{path!r} outputs shape {shape}, which has no dimension of '
            f'4 + {len(names)} = {channels} for the {len(names)} class names from {source}',
            'class names that match the model, whose output is B x N x (4 + classes) or '
            'B x (4 + classes) x N (an objectness column, as in YOLOv5, is not supported)')
    if rows == columns:
        raise ConfigError.of('model.path', f'{path!r} outputs shape {shape}: cannot tell boxes '
                             'from channels', 'the class names, set in model.class_names or '
                             'model.labels_file')
    channels = min(rows, columns)
    if channels < 5:
        raise ConfigError.of('model.path', f'{path!r} outputs shape {shape}',
                             'B x N x (4 + classes) with at least one class')
    return rows < columns, channels - 4


def _first_tensor(output: object) -> torch.Tensor:
    """The prediction tensor: the output itself, or the first element of a tuple/list."""
    while isinstance(output, (tuple, list)) and output:
        output = output[0]
    if not isinstance(output, torch.Tensor):
        raise ValueError(f'the model returned {type(output).__name__}; expected a tensor or a '
                         'tuple/list whose first element is one')
    return output


def _exported_size(metadata: dict) -> Optional[int]:
    size = metadata.get('imgsz')
    if isinstance(size, list) and len(size) == 2 and size[0] == size[1]:
        size = size[0]
    return size if isinstance(size, int) else None
