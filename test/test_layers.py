"""The folders are the architecture: core/ and system/ stay ROS-free, and core/ knows nothing of
the bring-up. Checked on the source of every module (imports at the top and inside functions
alike), and on what importing them really loads."""
import ast
import subprocess
import sys
from pathlib import Path
from typing import Iterator, List

import pytest

PACKAGE_DIR = Path(__file__).resolve().parent.parent / 'multicam_ros'
ROS_PACKAGES = ('rclpy', 'rcl_interfaces', 'launch', 'launch_ros', 'ament_index_python')
ROS_SUFFIXES = ('_msgs', '_interfaces')


def imported_names(tree: ast.AST, module: str) -> Iterator[str]:
    """Every module name an import statement anywhere in `tree` names (`from a import b` gives
    `a` and `a.b`: b may be a module), plus `importlib.import_module('x')` / `__import__('x')`
    with a literal name. `module` (dotted) resolves relative imports."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ''
            if node.level:
                parent = module.split('.')[:-node.level]
                base = '.'.join(parent + ([base] if base else []))
            yield base
            yield from (f'{base}.{alias.name}' for alias in node.names)
        elif isinstance(node, ast.Call) and node.args \
                and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str):
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, 'id', '')
            if name in ('import_module', '__import__'):
                yield node.args[0].value


def is_ros(name: str) -> bool:
    """A ROS package or message/interface module, or this package's ROS layer."""
    top = name.split('.')[0]
    return (top in ROS_PACKAGES or top.endswith(ROS_SUFFIXES)
            or name == 'multicam_ros.ros' or name.startswith('multicam_ros.ros.'))


def forbidden(source: str, module: str, layer: str) -> List[str]:
    """The imports of `source` (module `module`) that layer `layer` ('core' or 'system') must
    not make."""
    names = set(imported_names(ast.parse(source), module))
    bad = [name for name in names if is_ros(name)]
    if layer == 'core':
        bad += [name for name in names
                if name == 'multicam_ros.system' or name.startswith('multicam_ros.system.')]
    return sorted(set(bad))


def layer_modules(layer: str) -> List[Path]:
    return sorted((PACKAGE_DIR / layer).rglob('*.py'))


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE_DIR.parent).with_suffix('').parts
    return '.'.join(parts[:-1] if parts[-1] == '__init__' else parts)


@pytest.mark.parametrize('layer', ['core', 'system'])
def test_layer_imports_nothing_of_ros(layer: str):
    modules = layer_modules(layer)
    assert len(modules) > 3, modules  # the walk found the layer
    problems = {module_name(path): forbidden(path.read_text(encoding='utf-8'),
                                             module_name(path), layer) for path in modules}
    assert {name: bad for name, bad in problems.items() if bad} == {}


@pytest.mark.parametrize('source, caught', [
    ('import rclpy', 'rclpy'),
    ('def f():\n    from diagnostic_msgs.msg import DiagnosticArray\n', 'diagnostic_msgs.msg'),
    ('from rcl_interfaces.msg import ParameterDescriptor', 'rcl_interfaces.msg'),
    ('import launch.actions', 'launch.actions'),
    ('from launch_ros.actions import Node', 'launch_ros.actions'),
    ('from ament_index_python.packages import x', 'ament_index_python.packages'),
    ('import example_interfaces.srv', 'example_interfaces.srv'),
    ('from multicam_ros import ros', 'multicam_ros.ros'),
    ('from ..ros import convert', 'multicam_ros.ros'),
    ('from multicam_ros.system import plan', 'multicam_ros.system'),
    ('import importlib\nimportlib.import_module("rclpy.node")', 'rclpy.node'),
    ('import launcher_tools, msgs_helper, os', None),  # names that only look alike
    ('from multicam_ros.core import settings\nfrom . import frames', None),
])
def test_the_check_catches_each_kind_of_import(source: str, caught: str):
    bad = forbidden(source, 'multicam_ros.core.example', 'core')
    assert (caught in bad) if caught else bad == [], bad


def test_importing_core_and_system_loads_no_ros():
    """What the interpreter really loads, including what third-party imports pull in."""
    code = '\n'.join([
        'import pkgutil, sys',
        'import multicam_ros.core.params, multicam_ros.system.config, '
        'multicam_ros.system.supervisor',
        'import multicam_ros.system',
        'for info in pkgutil.iter_modules(multicam_ros.system.__path__, "multicam_ros.system."):',
        '    __import__(info.name)',
        'prefixes = ("rclpy", "rcl_interfaces", "launch", "ament_index_python",',
        '            "multicam_ros.ros")',
        'loaded = [m for m in sys.modules if m.startswith(prefixes)',
        '          or m.split(".")[0].endswith(("_msgs", "_interfaces"))]',
        'assert not loaded, loaded',
    ])
    result = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
