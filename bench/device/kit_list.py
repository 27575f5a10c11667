#!/usr/bin/env python3
"""Print the wheels the GPU machine needs for real rclpy and a vision_msgs build, as NAME==VER.

The list is the dependency closure (Requires-Dist, extras left out) of the ROS entries of
requirements.txt plus ros-wheels-bootstrapper, read from the venv that runs this script, so
that it can never drift from what works here. Packages the GPU machine's Python already has
(numpy, PyYAML, setuptools, ...: see KINDS.md of the device tool) are left out, except where
`--all` asks for them (a bare test venv). empy and lark-parser come as source only on PyPI:
they are marked `sdist` so that make_kit.sh builds them with `pip wheel`.

Run with the project venv: .venv/bin/python bench/device/kit_list.py [--all]
"""
import argparse
import importlib.metadata as metadata
import re
import sys
from pathlib import Path
from typing import Dict, List, Set

REPO = Path(__file__).resolve().parents[2]
EXTRA_ROOTS = ('ros-wheels-bootstrapper',)
# On the GPU machine's python3 already (KINDS.md, "Python packages already there").
GPU_PRESENT = frozenset({'numpy', 'packaging', 'pyparsing', 'python-dateutil', 'pyyaml',
                         'setuptools', 'typing-extensions', 'six', 'tzdata'})
SOURCE_ONLY = frozenset({'empy', 'lark-parser'})  # no wheel on PyPI: built with pip wheel


def canonical(name: str) -> str:
    """PEP 503 name: lower case, runs of -_. as one dash."""
    return re.sub(r'[-_.]+', '-', name).lower()


def roots(requirements: Path) -> List[str]:
    """The ROS wheels and catkin-pkg named in requirements.txt, plus the bootstrapper."""
    names = []
    for line in requirements.read_text().splitlines():
        text = line.split('#', 1)[0].strip()
        if text.startswith(('ros-', 'catkin-pkg', 'catkin_pkg')):
            names.append(canonical(re.split(r'[\s<>=!~;\[]', text)[0]))
    return names + [canonical(name) for name in EXTRA_ROOTS]


def closure(start: List[str]) -> Dict[str, str]:
    """name -> installed version for `start` and everything they require (no extras)."""
    installed = {canonical(d.metadata['Name']): d for d in metadata.distributions()}
    found: Dict[str, str] = {}
    missing: Set[str] = set()
    stack = list(start)
    while stack:
        name = stack.pop()
        if name in found or name in missing:
            continue
        dist = installed.get(name)
        if dist is None:
            missing.add(name)
            continue
        found[name] = dist.version
        for requirement in dist.requires or []:
            marker = requirement.partition(';')[2]
            if re.search(r'\bextra\s*==', marker):
                continue
            stack.append(canonical(re.split(r'[\s<>=!~;\[(]', requirement.strip())[0]))
    if missing:
        sys.exit(f'kit_list: not installed in {sys.prefix}: {", ".join(sorted(missing))}')
    return found


def main() -> int:
    """Print the list, one `name==version` (or `sdist name==version`) a line."""
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--all', action='store_true',
                        help='also list what the GPU machine already has (for a bare venv)')
    args = parser.parse_args()
    for name, version in sorted(closure(roots(REPO / 'requirements.txt')).items()):
        if name in GPU_PRESENT and not args.all:
            continue
        prefix = 'sdist ' if name in SOURCE_ONLY else ''
        print(f'{prefix}{name}=={version}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
