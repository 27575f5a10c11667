"""Model back-ends: one loaded detector per process, chosen by `model.backend`. ROS-free.

`load_detector(config)` is the one entry point. It checks the configuration, resolves the
device and hands over to a back-end module, imported only when asked for (torchvision and
ultralytics are heavy, and ultralytics is optional). Every configuration problem, a model file
that cannot be loaded included, is a `ConfigError` (`<key>: <problem>; accepted: <values>`), so
that the node prints it and exits 2 at start-up; a model that misbehaves at run time raises a
plain error.

Class names: index = the class id the model outputs. Where they come from, first match wins:
`model.class_names`, `model.labels_file`, then the model's own (torchvision's COCO list,
names stored in the model file, or a sidecar file: see each back-end).
"""
import json
import logging
import os
import re
from typing import Any, Callable, List, Optional, Sequence, Tuple

from multicam_ros.core.models.base import BACKENDS, Detections, Detector, ModelConfig
from multicam_ros.core.models.requirements import require_torch
from multicam_ros.core.settings import ConfigError

__all__ = ['BACKENDS', 'Detections', 'Detector', 'ModelConfig', 'check_classes', 'first_line',
           'graphed', 'load_detector', 'names_from_data', 'names_origin', 'read_labels_file',
           'resolve_class_names', 'resolve_device', 'use_half']

_LOG = logging.getLogger(__name__)
_DEVICE_WORDS = "'auto', 'cpu', 'cuda' or 'cuda:N' (N: a GPU index)"
_LABELS_WORDS = ('a file of class names: one per line, or a YAML/JSON list (or a mapping '
                 'id -> name, or one with a names key)')


def load_detector(config: ModelConfig) -> Detector:
    """Load the model that `config` describes onto its device, ready for `infer`."""
    require_torch()  # a too-old torch or torchvision: a ConfigError saying how to get a good one
    device = resolve_device(config.device)
    if config.cuda_graphs and config.backend in ('torchvision', 'ultralytics'):
        _LOG.warning('cuda_graphs: the %s back-end runs without CUDA graphs (%s); they are '
                     'for the nanodet and torchscript back-ends', config.backend,
                     'its detection heads have data-dependent shapes'
                     if config.backend == 'torchvision' else 'ultralytics runs its own model')
    if config.backend == 'torchvision':
        from multicam_ros.core.models.torchvision_backend import TorchvisionDetector
        return TorchvisionDetector(config, device)
    if config.backend == 'torchscript':
        from multicam_ros.core.models.torchscript_backend import TorchscriptDetector
        return TorchscriptDetector(config, device)
    if config.backend == 'nanodet':
        from multicam_ros.core.models.nanodet import NanoDetDetector
        return NanoDetDetector(config, device)
    from multicam_ros.core.models.ultralytics_backend import UltralyticsDetector
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
        raise ConfigError.of('device', f'{requested!r} is not a device name', _DEVICE_WORDS)
    if not torch.cuda.is_available():
        raise ConfigError.of('device', f'{requested!r} asked for, but {_why_no_cuda()}',
                             "'auto', 'cpu' (no CUDA device on this machine)")
    index = int(match.group(1) or 0)
    count = torch.cuda.device_count()
    if index >= count:
        plural = '' if count == 1 else 's'
        indices = ', '.join(f"'cuda:{n}'" for n in range(count))
        raise ConfigError.of('device', f'{requested!r} asked for, but this machine has {count} '
                             f'CUDA device{plural}', f"'auto', 'cpu', 'cuda', {indices}")
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


def graphed(config: ModelConfig, device: str, forward: Callable[[Any], Any],
            description: str) -> Callable[[Any], Any]:
    """`forward`, replayed as CUDA graphs where `cuda_graphs` asks for it (graphs.py); on the
    CPU the setting is ignored with a warning, like `half`."""
    if not config.cuda_graphs:
        return forward
    if not device.startswith('cuda'):
        _LOG.warning('cuda_graphs: CUDA graphs need a CUDA device; running without on %s',
                     device)
        return forward
    from multicam_ros.core.models.graphs import GraphedForward
    return GraphedForward(forward, description)


def read_labels_file(path: str, key: str = 'model.labels_file', label: str = '') -> List[str]:
    """Class names from a file: a YAML or JSON list (or a mapping id -> name, or a mapping with
    a `names` key, as in YOLO data files) for .yaml/.yml/.json, else one name per line (blank
    lines skipped). Problems are ConfigErrors of `key`; `label` names the file in them
    (default: its path)."""
    label = label or repr(path)
    try:
        with open(path, 'r', encoding='utf-8') as stream:
            text = stream.read()
    except OSError as exc:
        raise ConfigError.of(key, f'cannot read {label} ({exc.strerror or exc})',
                             _LABELS_WORDS) from None
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
            details = ' '.join(str(exc).split())
            raise ConfigError.of(key, f'{label} is not valid {extension[1:].upper()} '
                                 f'({details})', _LABELS_WORDS) from None
        try:
            names = names_from_data(data)
        except ValueError as exc:
            raise ConfigError.of(key, f'{label}: {exc}', _LABELS_WORDS) from None
    if not names:
        raise ConfigError.of(key, f'{label} holds no class names', _LABELS_WORDS)
    return names


def names_from_data(data: object) -> List[str]:
    """A list of names, a mapping id -> name (ids 0..n-1), or a mapping with `names` -> list.
    Anything else is a ValueError saying what is wrong (the caller names the source)."""
    if isinstance(data, dict) and 'names' in data:
        data = data['names']
    if isinstance(data, dict):
        try:
            by_id = {int(key): str(value) for key, value in data.items()}
        except (TypeError, ValueError):
            by_id = {}
        if sorted(by_id) != list(range(len(data))):
            raise ValueError('a mapping of class names needs the ids 0 to n-1 as keys')
        return [by_id[index] for index in range(len(by_id))]
    if isinstance(data, list) and all(isinstance(name, (str, int, float)) for name in data):
        return [str(name) for name in data]
    raise ValueError('expected a list of class names (or a mapping id -> name)')


def resolve_class_names(config: ModelConfig, own: Optional[Sequence[str]],
                        own_source: str = 'the model') -> Tuple[Optional[List[str]], str]:
    """(names, where they came from): the parameters override the model's own names `own`
    (None when it has none); (None, '') when there are none at all."""
    if config.class_names:
        return [str(name) for name in config.class_names], 'model.class_names'
    if config.labels_file:
        return read_labels_file(config.labels_file), f'model.labels_file ({config.labels_file})'
    if own is not None:
        return list(own), own_source
    return None, ''


def names_origin(config: ModelConfig) -> Tuple[str, str]:
    """(key, words) of the parameter that gave the class names, for a ConfigError about them:
    ('model.class_names', '') or ('model.labels_file', " in '<path>'")."""
    if config.class_names:
        return 'model.class_names', ''
    return 'model.labels_file', f' in {config.labels_file!r}'


def check_classes(class_names: Sequence[str], classes: Sequence[str]) -> Optional[List[int]]:
    """Class ids whose name is in `classes` (None keeps every class); an unknown name is a
    ConfigError of `classes` that lists the model's classes."""
    if not classes:
        return None
    known = set(class_names)
    unknown = [name for name in classes if name not in known]
    if unknown:
        shown = ', '.join(repr(name) for name in list(dict.fromkeys(class_names))[:100])
        more = '' if len(set(class_names)) <= 100 else ', ...'
        raise ConfigError.of('classes', 'unknown class name(s) '
                             f"{', '.join(repr(name) for name in unknown)}",
                             f"this model's classes: {shown}{more}")
    wanted = set(classes)
    return [index for index, name in enumerate(class_names) if name in wanted]


def first_line(exc: BaseException) -> str:
    """The first line of an exception's text, shortened: enough for a one-line error."""
    lines = str(exc).strip().splitlines()
    return lines[0][:300] if lines else ''


def _why_no_cuda() -> str:
    import torch

    if torch.version.cuda is None:
        return f'CUDA is not available (torch {torch.__version__} is a CPU-only build)'
    return (f'CUDA is not available (torch {torch.__version__} is built for CUDA '
            f'{torch.version.cuda}, but no GPU or driver is visible)')
