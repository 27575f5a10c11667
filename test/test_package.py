"""The package as users get it: colcon builds it, the venv has its commands, the code is clean."""
import subprocess
import sys
import xml.etree.ElementTree as ElementTree
from pathlib import Path

import pytest

from ros_helpers import REPO, VENV_BIN

CONSOLE_SCRIPTS = ('camera_node', 'detector_node', 'multicam-ros')


def test_package_xml_declares_real_dependencies():
    root = ElementTree.parse(REPO / 'package.xml').getroot()
    assert root.get('format') == '3'
    depends = {e.text for e in root if e.tag.endswith('depend')}
    for dep in ('rclpy', 'rcl_interfaces', 'builtin_interfaces', 'sensor_msgs', 'std_msgs',
                'vision_msgs', 'diagnostic_msgs', 'ament_index_python', 'launch', 'launch_ros',
                'ros2launch', 'python3-opencv', 'python3-numpy', 'python3-yaml',
                'python3-torch', 'python3-torchvision', 'python3-scipy'):
        assert dep in depends, f'package.xml lacks a dependency on {dep}'
    # LabelInfo and VisionClass first appear in vision_msgs 4.1.0.
    assert root.find("exec_depend[.='vision_msgs']").get('version_gte') == '4.1.0'
    assert root.find('export/build_type').text == 'ament_python'


@pytest.mark.filterwarnings('ignore::DeprecationWarning')  # catkin_pkg's use of pyparsing
@pytest.mark.parametrize('distro, torch_keys', [
    ('humble', ['python3-torchvision-pip']),  # Ubuntu 22.04's torch 1.8.1 is too old
    ('jazzy', ['python3-torch', 'python3-torchvision']),
    ('kilted', ['python3-torch', 'python3-torchvision']),
])
def test_package_xml_torch_keys_per_distro(distro, torch_keys):
    """What rosdep installs for torch on each distro, as catkin_pkg evaluates the conditions."""
    from catkin_pkg.package import parse_package
    package = parse_package(str(REPO / 'package.xml'))
    package.evaluate_conditions({'ROS_DISTRO': distro, 'ROS_VERSION': '2'})
    keys = [d.name for d in package.exec_depends if d.evaluated_condition and 'torch' in d.name]
    assert keys == torch_keys


def test_no_vision_msgs_package_inside_repository():
    tracked = subprocess.run(['git', 'ls-files'], cwd=REPO, capture_output=True, text=True,
                             check=True).stdout.split()
    manifests = [p for p in tracked if p.endswith('package.xml') and p != 'package.xml']
    assert manifests == [], 'colcon would build these as extra packages: ' + ', '.join(manifests)


def test_colcon_build_installs_launch_config_and_scripts(tmp_path: Path):
    colcon = VENV_BIN / 'colcon'
    assert colcon.exists(), f'{colcon} missing: run `make setup` (requirements.txt has colcon)'
    result = subprocess.run(
        [str(colcon), '--log-base', str(tmp_path / 'log'), 'build', '--base-paths', str(REPO),
         '--build-base', str(tmp_path / 'build'), '--install-base', str(tmp_path / 'install')],
        cwd=tmp_path, capture_output=True, text=True, timeout=240)
    assert result.returncode == 0, result.stdout + result.stderr
    assert 'Summary: 1 package finished' in result.stdout, result.stdout
    prefix = tmp_path / 'install' / 'multicam_ros'
    share = prefix / 'share' / 'multicam_ros'
    for launch_file in (REPO / 'launch').glob('*.launch.py'):
        assert (share / 'launch' / launch_file.name).is_file()
    for config_file in (REPO / 'config').glob('*.yaml'):
        assert (share / 'config' / config_file.name).is_file()
    assert (share / 'package.xml').is_file()
    assert (prefix / 'share/ament_index/resource_index/packages/multicam_ros').is_file()
    for script in CONSOLE_SCRIPTS:  # where `ros2 run multicam_ros <script>` looks
        assert (prefix / 'lib' / 'multicam_ros' / script).is_file(), script


def test_venv_has_console_scripts_and_ros_share_directory():
    for script in CONSOLE_SCRIPTS:
        assert (VENV_BIN / script).is_file(), f'{script} missing from .venv: run `make setup`'
    code = ('from ament_index_python.packages import get_package_share_directory as g;'
            'print(g("multicam_ros"))')
    env = {'AMENT_PREFIX_PATH': sys.prefix, 'PATH': str(VENV_BIN)}
    result = subprocess.run([sys.executable, '-c', code], env=env, capture_output=True,
                            text=True, check=True)
    share = Path(result.stdout.strip())
    assert (share / 'config' / 'cams.yaml').is_file()
    assert (share / 'launch' / 'cams.launch.py').is_file()


def test_flake8_clean():
    result = subprocess.run([sys.executable, '-m', 'flake8', 'multicam_ros', 'test', 'tools',
                             'bench', 'launch', 'setup.py'],
                            cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
