"""The torch / torchvision check that runs before the detector loads anything.

The check takes version strings, so any version can be asked about without installing it; the
end-to-end test gives a real detector_node process the metadata of an old torch (a
`torch-1.8.1.dist-info` first on its path, as Ubuntu 22.04's python3-torch reports) and
expects the named error and exit 2, not an ImportError.
"""
import os
from pathlib import Path

import pytest

from multicam_ros.core.models.requirements import check_torch_versions, installed_version, \
    parse_version, require_torch
from multicam_ros.core.settings import ConfigError

ACCEPTED = "; accepted: a torch and torchvision from PyPI"


@pytest.mark.parametrize('text, parsed', [
    ('2.14.1+cpu', (2, 14)), ('1.13.0', (1, 13)), ('1.8.1', (1, 8)), ('2.1.0a0+git1234', (2, 1)),
    ('0.29.1+cu130', (0, 29)), ('1.13', (1, 13)), ('unknown', None), ('', None),
])
def test_parse_version(text, parsed):
    assert parse_version(text) == parsed


@pytest.mark.parametrize('torch_version, torchvision_version', [
    ('1.13.0', '0.14.0'), ('1.13.1+cu117', '0.14.1+cu117'), ('2.14.1', '0.29.1'),
    ('2.1.2', '0.16.0'), ('10.0.0', '1.0.0'),
])
def test_new_enough_versions_pass(torch_version, torchvision_version):
    check_torch_versions(torch_version, torchvision_version)


def test_ubuntu_22_04_torch_is_named_with_the_way_out():
    """rosdep's python3-torch / python3-torchvision on Ubuntu 22.04 (Humble)."""
    with pytest.raises(ConfigError) as caught:
        check_torch_versions('1.8.1', '0.8.2')
    lines = str(caught.value).splitlines()
    assert len(lines) == 2, lines
    assert lines[0].startswith(
        'torch: torch 1.8.1 is too old (the detector needs torch >= 1.13)' + ACCEPTED), lines
    assert lines[1].startswith('torchvision: torchvision 0.8.2 is too old (the detector needs '
                               'torchvision >= 0.14)' + ACCEPTED), lines
    for line in lines:  # both routes, and where to read more
        assert 'pip install torch torchvision' in line
        assert 'PEP 668' in line and 'python3-torchvision-pip' in line and 'README' in line


@pytest.mark.parametrize('torch_version, torchvision_version, key, problem', [
    ('1.12.1', '0.14.0', 'torch', 'torch 1.12.1 is too old'),
    ('1.13.0', '0.13.1', 'torchvision', 'torchvision 0.13.1 is too old'),
    (None, '0.14.0', 'torch', 'torch is not installed'),
    ('2.0.0', None, 'torchvision', 'torchvision is not installed'),
    ('2.0.0', 'weird', 'torchvision', "torchvision reports version 'weird', which is not a "
                                      "version number"),
])
def test_each_problem_is_one_line_of_its_key(torch_version, torchvision_version, key, problem):
    with pytest.raises(ConfigError) as caught:
        check_torch_versions(torch_version, torchvision_version)
    assert caught.value.problems == [line for line in caught.value.problems
                                     if line.startswith(f'{key}: {problem}')]
    assert len(caught.value.problems) == 1


def test_installed_torch_passes():
    assert installed_version('torch') and installed_version('torchvision')
    require_torch()
    assert installed_version('no_such_package_multicam') is None


def test_detector_with_an_old_torch_exits_2_with_the_named_error(node_launcher, tmp_path: Path):
    """The detector process, not a unit: a too-old torch stops it at start-up with exit 2."""
    fake = tmp_path / 'old_torch'
    info = fake / 'torch-1.8.1.dist-info'
    info.mkdir(parents=True)
    (info / 'METADATA').write_text('Metadata-Version: 2.1\nName: torch\nVersion: 1.8.1\n')
    path = os.pathsep.join(p for p in (str(fake), os.environ.get('PYTHONPATH', '')) if p)
    proc = node_launcher.start(['detector_node', '--ros-args', '-p', 'cameras:=[/cam0]',
                                '-p', 'device:=cpu', '-p', 'model.weights:=none'],
                               env={'PYTHONPATH': path})
    assert proc.wait(timeout_s=90.0) == 2, proc.output()
    output = proc.output()
    assert 'torch: torch 1.8.1 is too old (the detector needs torch >= 1.13)' in output, output
    assert 'Traceback' not in output and 'ImportError' not in output, output
