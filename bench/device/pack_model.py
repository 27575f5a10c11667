#!/usr/bin/env python3
"""Carry a TorchScript model to the GPU machine at half its size, and restore it there.

The kit (wheels, clips, working tree) leaves about 10 MiB of the 64 MiB a device call may
carry; NanoDet-g's TorchScript file is 15 MB in fp32. `pack` stores a copy with fp16
parameters and buffers (7.6 MB) in `.models/`; `unpack` on the GPU machine converts it back to
fp32 into `<dest>/<name>/<name>.torchscript` (with the class_names.json beside it, where the
nanodet back-end looks for it). The restored model has the same graph and cost as the original
and weights rounded to fp16, which a throughput benchmark does not notice.

Here:        .venv/bin/python bench/device/pack_model.py pack [MODEL] [--dest .models]
GPU machine: python3 bench/device/pack_model.py unpack .models /tmp/e2e_models
MODEL defaults to the converted NanoDet-g in the package cache (`multicam-ros models fetch`).
"""
import argparse
import shutil
import sys
import warnings
from pathlib import Path
from typing import List

PACKED_SUFFIX = '.fp16.torchscript'
NAMES_SUFFIX = '.class_names.json'
NAMES_FILE = 'class_names.json'


def _load(path: Path) -> 'object':
    import torch
    with warnings.catch_warnings():  # recent torch marks TorchScript deprecated
        warnings.simplefilter('ignore')
        return torch.jit.load(str(path), map_location='cpu')


def pack(source: Path, dest: Path) -> Path:
    """fp16 copy of `source` (and its class_names.json) in `dest`; returns the copy's path."""
    import torch
    model = _load(source)
    model.half()
    dest.mkdir(parents=True, exist_ok=True)
    stem = source.name.split('.')[0]
    target = dest / f'{stem}{PACKED_SUFFIX}'
    torch.jit.save(model, str(target))
    names = source.parent / NAMES_FILE
    if names.is_file():
        shutil.copyfile(names, dest / f'{stem}{NAMES_SUFFIX}')
    print(f'{source} ({source.stat().st_size / 2**20:.1f} MiB) -> {target} '
          f'({target.stat().st_size / 2**20:.1f} MiB)')
    return target


def unpack(source_dir: Path, dest: Path) -> List[Path]:
    """fp32 models from every packed file in `source_dir`; returns their paths."""
    import torch
    restored = []
    for packed in sorted(source_dir.glob(f'*{PACKED_SUFFIX}')):
        stem = packed.name[:-len(PACKED_SUFFIX)]
        folder = dest / stem
        folder.mkdir(parents=True, exist_ok=True)
        model = _load(packed)
        model.float()
        target = folder / f'{stem}.torchscript'
        torch.jit.save(model, str(target))
        names = source_dir / f'{stem}{NAMES_SUFFIX}'
        if names.is_file():
            shutil.copyfile(names, folder / NAMES_FILE)
        print(f'restored {target}')
        restored.append(target)
    return restored


def default_model() -> Path:
    """The converted NanoDet-g in the package cache."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    from multicam_ros.core.models.nanodet import default_model_path
    return default_model_path()


def main() -> int:
    """pack or unpack, see the module docstring."""
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    sub = parser.add_subparsers(dest='command', required=True)
    packer = sub.add_parser('pack', help='fp16 copy for the trip (here)')
    packer.add_argument('model', nargs='?', type=Path, help='TorchScript file (default: the '
                        'cached NanoDet-g)')
    packer.add_argument('--dest', type=Path, default=Path('.models'))
    unpacker = sub.add_parser('unpack', help='fp32 models again (on the GPU machine)')
    unpacker.add_argument('source', type=Path)
    unpacker.add_argument('dest', type=Path)
    args = parser.parse_args()
    if args.command == 'pack':
        model = args.model or default_model()
        if not model.is_file():
            sys.exit(f'pack_model: {model} does not exist (multicam-ros models fetch?)')
        pack(model, args.dest)
        return 0
    return 0 if unpack(args.source, args.dest) else 1


if __name__ == '__main__':
    sys.exit(main())
