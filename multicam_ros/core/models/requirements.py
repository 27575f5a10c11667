"""The torch and torchvision versions the model back-ends need, checked before anything loads.

ROS-free. Every back-end imports torch and torchvision (preprocess.py: batched NMS); the
torchvision back-end needs torchvision 0.14 (`get_model_builder`) and torch 1.13
(`torch.load(weights_only=...)`). Ubuntu 22.04's python3-torch 1.8.1 and python3-torchvision
0.8.2, which rosdep's python3-torch key installs for Humble, are older: without this check the
detector would die on an ImportError deep in a back-end. With it, the detector exits 2 with a
ConfigError that names the package, the version found and how to install a good one.

`check_torch_versions` takes the version strings as arguments, so that tests can ask about any
version without installing it; `require_torch` reads the installed ones.
"""
import re
from importlib import import_module
from importlib.metadata import PackageNotFoundError, version
from typing import Optional, Tuple

from multicam_ros.core.settings import ConfigError

MIN_TORCH = (1, 13)
MIN_TORCHVISION = (0, 14)
INSTALL_WORDS = (
    'a torch and torchvision from PyPI, e.g. `python3 -m venv --system-site-packages ~/venv && '
    '~/venv/bin/pip install torch torchvision` (Ubuntu 24.04: pip only inside a venv, PEP 668), '
    "or rosdep's python3-torchvision-pip key (Humble on Ubuntu 22.04, whose python3-torch 1.8 is "
    'too old); see README, ROS 2 distributions')


def parse_version(text: str) -> Optional[Tuple[int, int]]:
    """(major, minor) of a version string such as '2.14.1+cpu', '1.8.1' or '2.1.0a0+git1';
    None when it has none."""
    match = re.match(r'\s*(\d+)\.(\d+)', str(text))
    return (int(match.group(1)), int(match.group(2))) if match else None


def _problem(package: str, found: Optional[str], minimum: Tuple[int, int]) -> Optional[str]:
    needed = f'{package} >= {minimum[0]}.{minimum[1]}'
    if found is None:
        return f'{package} is not installed (the detector needs {needed})'
    parsed = parse_version(found)
    if parsed is None:
        return f'{package} reports version {found!r}, which is not a version number'
    if parsed < minimum:
        return f'{package} {found} is too old (the detector needs {needed})'
    return None


def check_torch_versions(torch_version: Optional[str],
                         torchvision_version: Optional[str]) -> None:
    """Raise a ConfigError (keys `torch`, `torchvision`) unless both versions are new enough;
    None means not installed."""
    problems = []
    for package, found, minimum in (('torch', torch_version, MIN_TORCH),
                                    ('torchvision', torchvision_version, MIN_TORCHVISION)):
        problem = _problem(package, found, minimum)
        if problem is not None:
            problems.append(ConfigError.of(package, problem, INSTALL_WORDS).problems[0])
    if problems:
        raise ConfigError(*problems)


def installed_version(package: str) -> Optional[str]:
    """The installed version of `package`, or None: from its distribution metadata, else (a
    Debian python3-torch may carry none) from the module's `__version__`."""
    try:
        return version(package)
    except PackageNotFoundError:
        pass
    try:
        return str(import_module(package).__version__)
    except Exception:  # noqa: BLE001 - not installed, or broken: either way not usable
        return None


def require_torch() -> None:
    """Check the installed torch and torchvision (see check_torch_versions)."""
    check_torch_versions(installed_version('torch'), installed_version('torchvision'))
