"""Model back-ends: one loaded detector per process, chosen by `model.backend`. ROS-free.

`load_detector(config)` is the one entry point. It checks the configuration, resolves the
device and hands over to a back-end module, imported only when asked for (torchvision and
ultralytics are heavy, and ultralytics is optional). Every configuration problem is a
ValueError whose message names the parameter and what it accepts, so that the node can print it
and exit non-zero at start-up.

Class names: index = the class id the model outputs. Where they come from, first match wins:
`model.class_names`, `model.labels_file`, then the model's own (torchvision's COCO list,
names stored in the model file, or a sidecar file: see each back-end).
"""
import json
import logging
import os
import re
from typing import List, Optional, Sequence, Tuple

from multicam_ros.models.base import Detections, Detector, ModelConfig

__all__ = ['BACKENDS', 'Detections', 'Detector', 'ModelConfig', 'check_classes', 'first_line',
           'load_detector', 'names_from_data', 'read_labels_file', 'resolve_class_names',
           'resolve_device', 'use_half']

BACKENDS = ('torchvision', 'torchscript', 'ultralytics')
_LOG = logging.getLogger(__name__)
_DEVICE_WORDS = "one of 'auto', 'cpu', 'cuda', 'cuda:N'"


def load_detector(config: ModelConfig) -> Detector:
    """Load the model that `config` describes onto its device, ready for `infer`."""
    _check_common(config)
    device = resolve_device(config.device)
    if config.backend == 'torchvision':
        from multicam_ros.models.torchvision_backend import TorchvisionDetector
        return TorchvisionDetector(config, device)
    if config.backend == 'torchscript':
        from multicam_ros.models.torchscript_backend import TorchscriptDetector
        return TorchscriptDetector(config, device)
    from multicam_ros.models.ultralytics_backend import UltralyticsDetector
    return UltralyticsDetector(config, device)


def resolve_device(requested: str) -> str:
    """'auto', 'cpu', 'cuda' or 'cuda:N' -> the torch device to use, e.g. 'cpu' or 'cuda:0'.

    `auto` takes the first GPU when CUDA works and otherwise falls back to the CPU with a
    warning; an explicit `cuda` that cannot be had is an error, never a silent CPU run.
    """
    import torch

    text = str(requested).strip().lower()
    if text == 'cpu':
        return 'cpu'
    if text == 'auto':
        if torch.cuda.is_available():
            return 'cuda:0'
        _LOG.warning('device auto: %s; running the model on the CPU', _why_no_cuda())
        return 'cpu'
    match = re.fullmatch(r'cuda(?::(\d+))?', text)
    if match is None:
        raise ValueError(f'parameter device: {requested!r} is not {_DEVICE_WORDS}')
    if not torch.cuda.is_available():
        raise ValueError(f'parameter device: {requested!r} asked for, but {_why_no_cuda()}; '
                         f"use 'cpu' or 'auto' (accepted: {_DEVICE_WORDS})")
    index = int(match.group(1) or 0)
    count = torch.cuda.device_count()
    if index >= count:
        raise ValueError(f'parameter device: {requested!r} asked for, but this machine has '
                         f'{count} CUDA device(s): cuda:0 to cuda:{count - 1}')
    return f'cuda:{index}'


def use_half(config: ModelConfig, device: str) -> bool:
    """Whether to run in fp16: only on CUDA. `half` on the CPU is ignored with a warning, so
    that one configuration with `device: auto` works on machines with and without a GPU."""
    if not config.half:
        return False
    if not device.startswith('cuda'):
        _LOG.warning('half: fp16 runs on CUDA only; running in fp32 on %s', device)
        return False
    return True


def read_labels_file(path: str, parameter: str = 'model.labels_file') -> List[str]:
    """Class names from a file: a YAML or JSON list (or a mapping id -> name, or a mapping with
    a `names` key, as in YOLO data files) for .yaml/.yml/.json, else one name per line (blank
    lines skipped)."""
    try:
        with open(path, 'r', encoding='utf-8') as stream:
            text = stream.read()
    except OSError as exc:
        raise ValueError(f'parameter {parameter}: cannot read {path!r} ({exc.strerror or exc}); '
                         'expected a file of class names') from None
    extension = os.path.splitext(path)[1].lower()
    if extension not in ('.yaml', '.yml', '.json'):
        names = [line.strip() for line in text.splitlines() if line.strip()]
    else:
        try:
            if extension == '.json':
                data = json.loads(text)
            else:
                import yaml
                data = yaml.safe_load(text)
        except Exception as exc:  # noqa: BLE001 - any parse error is the same bad input
            raise ValueError(f'parameter {parameter}: {path!r} is not valid '
                             f'{extension[1:].upper()} ({exc})') from None
        names = names_from_data(data, f'parameter {parameter}: {path!r}')
    if not names:
        raise ValueError(f'parameter {parameter}: {path!r} holds no class names')
    return names


def names_from_data(data: object, where: str) -> List[str]:
    """A list of names, a mapping id -> name (ids 0..n-1), or a mapping with `names` -> list."""
    if isinstance(data, dict) and 'names' in data:
        data = data['names']
    if isinstance(data, dict):
        try:
            by_id = {int(key): str(value) for key, value in data.items()}
        except (TypeError, ValueError):
            by_id = {}
        if sorted(by_id) != list(range(len(data))):
            raise ValueError(f'{where}: a mapping of class names needs the ids 0 to n-1 as keys')
        return [by_id[index] for index in range(len(by_id))]
    if isinstance(data, list) and all(isinstance(name, (str, int, float)) for name in data):
        return [str(name) for name in data]
    raise ValueError(f'{where}: expected a list of class names (or a mapping id -> name)')


def resolve_class_names(config: ModelConfig, own: Optional[Sequence[str]],
                        own_source: str = 'the model') -> Tuple[Optional[List[str]], str]:
    """(names, where they came from): the parameters override the model's own names `own`
    (None when it has none); (None, '') when there are none at all."""
    if config.class_names:
        return [str(name) for name in config.class_names], 'parameter model.class_names'
    if config.labels_file:
        return (read_labels_file(config.labels_file),
                f'parameter model.labels_file ({config.labels_file})')
    if own is not None:
        return list(own), own_source
    return None, ''


def check_classes(class_names: Sequence[str], classes: Sequence[str]) -> Optional[List[int]]:
    """Class ids whose name is in `classes` (None keeps every class); an unknown name is an
    error naming parameter `classes` and the model's classes."""
    if not classes:
        return None
    known = set(class_names)
    unknown = [name for name in classes if name not in known]
    if unknown:
        shown = ', '.join(repr(name) for name in list(dict.fromkeys(class_names))[:100])
        more = '' if len(set(class_names)) <= 100 else ', ...'
        raise ValueError(f'parameter classes: unknown class name(s) '
                         f"{', '.join(repr(name) for name in unknown)}; this model's classes "
                         f'are {shown}{more}')
    wanted = set(classes)
    return [index for index, name in enumerate(class_names) if name in wanted]


def first_line(exc: BaseException) -> str:
    """The first line of an exception's text, shortened: enough for a one-line error."""
    lines = str(exc).strip().splitlines()
    return lines[0][:300] if lines else ''


def _check_common(config: ModelConfig) -> None:
    """The parameters every back-end relies on (params.py checks them for the node too)."""
    if config.backend not in BACKENDS:
        raise ValueError(f'parameter model.backend: {config.backend!r} is not one of '
                         f"{', '.join(repr(name) for name in BACKENDS)}")
    checks = (('input_size', config.input_size, 32, 4096),
              ('confidence_threshold', config.confidence_threshold, 0.0, 1.0),
              ('iou_threshold', config.iou_threshold, 0.0, 1.0),
              ('max_detections', config.max_detections, 1, 10000))
    for name, value, low, high in checks:
        if not low <= value <= high:
            raise ValueError(f'parameter {name}: {value!r} is not from {low:g} to {high:g}')


def _why_no_cuda() -> str:
    import torch

    if torch.version.cuda is None:
        return f'CUDA is not available (torch {torch.__version__} is a CPU-only build)'
    return (f'CUDA is not available (torch {torch.__version__} is built for CUDA '
            f'{torch.version.cuda}, but no GPU or driver is visible)')
