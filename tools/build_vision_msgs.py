#!/usr/bin/env python3
"""Build and install vision_msgs 4.1.1 into the virtual environment that runs this script.

PyPI has no vision_msgs wheel, but the ROS 2 wheels in the venv include the rosidl code
generators and the ament CMake tools, so the interface package can be generated on the spot.
The message definitions live in tools/vision_msgs/msg as plain data; package.xml and
CMakeLists.txt are written to a temporary directory outside the repository for each build, so
that colcon never finds a second vision_msgs package in this source tree.

Usage (from the repository root):

    .venv/bin/python tools/build_vision_msgs.py [--force]

When vision_msgs is installed and nothing it was built from has changed since, the script
prints one line and exits at once.
"""

import argparse
import fcntl
import hashlib
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import time
from collections import deque
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

PACKAGE = 'vision_msgs'
VERSION = '4.1.1'
DEPENDENCIES = ('std_msgs', 'geometry_msgs')

HERE = Path(__file__).resolve().parent
MSG_DIR = HERE / 'vision_msgs' / 'msg'
LOG_TAIL_LINES = 60

# Paths of the machine that built the ROS wheels, baked into their exported CMake targets.
WHEEL_INCLUDE_RE = re.compile(r'/opt/python/cp3\d+-cp3\d+t?/include/python3\.\d+t?')
WHEEL_SITE_RE = re.compile(r'/opt/python/cp3\d+-cp3\d+t?/lib/python3\.\d+t?/site-packages')

PACKAGE_XML = """<?xml version="1.0"?>
<?xml-model href="http://download.ros.org/schema/package_format3.xsd"
  schematypens="http://www.w3.org/2001/XMLSchema"?>
<package format="3">
  <name>{name}</name>
  <version>{version}</version>
  <description>
    vision_msgs {version} interface definitions, generated locally by
    multicam_ros/tools/build_vision_msgs.py for a Python virtual environment.
  </description>
  <maintainer email="maintainers@multicam-ros.org">multicam_ros maintainers</maintainer>
  <license>Apache-2.0</license>

  <buildtool_depend>ament_cmake</buildtool_depend>
  <buildtool_depend>rosidl_default_generators</buildtool_depend>
{depends}
  <exec_depend>rosidl_default_runtime</exec_depend>
  <member_of_group>rosidl_interface_packages</member_of_group>

  <export>
    <build_type>ament_cmake</build_type>
  </export>
</package>
"""

CMAKE_LISTS = """cmake_minimum_required(VERSION 3.16)
project({name})

find_package(ament_cmake REQUIRED)
find_package(rosidl_default_generators REQUIRED)
{find_deps}

rosidl_generate_interfaces(${{PROJECT_NAME}}
{msgs}
  DEPENDENCIES {deps}
)

ament_export_dependencies(rosidl_default_runtime)
ament_package()
"""


class StepFailed(Exception):
    """A build step exited non-zero; carries the step name."""


def venv_prefix() -> Path:
    """Return the prefix of the running virtual environment, or exit if there is none."""
    if sys.prefix == sys.base_prefix:
        sys.exit('build_vision_msgs: run this with the venv interpreter, '
                 'e.g. .venv/bin/python tools/build_vision_msgs.py')
    return Path(sys.prefix)


def msg_files() -> List[Path]:
    """Return the message definition files, sorted by name."""
    files = sorted(MSG_DIR.glob('*.msg'))
    if not files:
        sys.exit(f'build_vision_msgs: no .msg files in {MSG_DIR}')
    return files


def source_digest(files: Sequence[Path]) -> str:
    """Hash everything the build depends on: the definitions, this script, the Python ABI."""
    digest = hashlib.sha256()
    digest.update(sys.implementation.cache_tag.encode())
    for path in [*files, Path(__file__).resolve()]:
        digest.update(path.name.encode() + b'\0')
        digest.update(path.read_bytes() + b'\0')
    return digest.hexdigest()


def installed_paths(prefix: Path) -> List[Path]:
    """Return files whose presence shows that vision_msgs is installed in the prefix."""
    site = Path(sysconfig.get_paths()['purelib'])
    return [
        prefix / 'share' / PACKAGE / 'package.xml',
        prefix / 'share' / PACKAGE / 'msg' / 'Detection2DArray.json',
        prefix / 'share' / 'ament_index' / 'resource_index' / 'packages' / PACKAGE,
        prefix / 'lib' / f'lib{PACKAGE}__rosidl_typesupport_c.so',
        prefix / 'lib' / f'lib{PACKAGE}__rosidl_generator_py.so',
        site / PACKAGE / 'msg' / '__init__.py',
    ]


def stamp_path(prefix: Path) -> Path:
    """Return where the digest of the last successful build is kept."""
    return prefix / 'share' / PACKAGE / '.multicam_ros_build_stamp'


def is_up_to_date(prefix: Path, digest: str) -> bool:
    """Tell whether an install built from exactly these sources is present."""
    stamp = stamp_path(prefix)
    if not stamp.is_file() or stamp.read_text().strip() != digest:
        return False
    return all(path.exists() for path in installed_paths(prefix))


def exported_cmake_files(prefix: Path) -> Iterator[Path]:
    """Yield the CMake files that the ROS wheels installed into the prefix."""
    for root in (prefix / 'share', prefix / 'lib' / 'cmake'):
        if root.is_dir():
            yield from root.rglob('*.cmake')


def fix_wheel_python_paths(prefix: Path) -> int:
    """Point the wheel builder's Python paths in exported CMake files at this venv.

    Returns how many files were changed; a second call changes none.
    """
    paths = sysconfig.get_paths()
    include_dir = paths['include']
    site_dir = paths['purelib']
    if not (Path(include_dir) / 'Python.h').is_file():
        raise StepFailed(f'Python headers not found in {include_dir} (install python3-dev?)')
    changed = 0
    for path in exported_cmake_files(prefix):
        text = path.read_text(errors='surrogateescape')
        if '/opt/python/' not in text:
            continue
        new = WHEEL_INCLUDE_RE.sub(lambda _m: include_dir, text)
        new = WHEEL_SITE_RE.sub(lambda _m: site_dir, new)
        if new != text:
            path.write_text(new, errors='surrogateescape')
            changed += 1
        if '/opt/python/' in new:
            print(f'  warning: {path} still names /opt/python/ paths', flush=True)
    return changed


def write_package(src: Path, files: Sequence[Path]) -> None:
    """Write package.xml, CMakeLists.txt and the definitions into a package source dir."""
    (src / 'msg').mkdir(parents=True)
    for path in files:
        shutil.copy2(path, src / 'msg' / path.name)
    depends = '\n'.join(f'  <depend>{dep}</depend>' for dep in DEPENDENCIES)
    (src / 'package.xml').write_text(
        PACKAGE_XML.format(name=PACKAGE, version=VERSION, depends=depends))
    (src / 'CMakeLists.txt').write_text(CMAKE_LISTS.format(
        name=PACKAGE,
        find_deps='\n'.join(f'find_package({dep} REQUIRED)' for dep in DEPENDENCIES),
        msgs='\n'.join(f'  "msg/{path.name}"' for path in files),
        deps=' '.join(DEPENDENCIES)))


def build_env(prefix: Path) -> Dict[str, str]:
    """Return the environment for CMake: the venv is the only ROS prefix."""
    env = os.environ.copy()
    env['AMENT_PREFIX_PATH'] = str(prefix)
    env['CMAKE_PREFIX_PATH'] = str(prefix)
    env['PATH'] = os.pathsep.join([str(prefix / 'bin'), env.get('PATH', '')])
    env.pop('PYTHONHOME', None)
    return env


def run_step(name: str, cmd: Sequence[str], env: Dict[str, str], log: Path) -> None:
    """Run one build step, appending its output to the log; raise StepFailed on error."""
    print(f'  {name} ...', flush=True)
    started = time.monotonic()
    with log.open('a') as out:
        out.write(f'\n==== {name}: {" ".join(cmd)}\n')
        out.flush()
        proc = subprocess.run(cmd, env=env, stdout=out, stderr=subprocess.STDOUT, check=False)
    if proc.returncode != 0:
        raise StepFailed(name)
    print(f'  {name} done in {time.monotonic() - started:.1f} s', flush=True)


def missing_packages(log: Path) -> List[str]:
    """Return packages that find_package() could not locate, according to the log."""
    text = log.read_text(errors='replace')
    found = re.findall(r'provided by\s+"(\w+)"', text)
    return sorted(set(found))


def report_failure(step: str, log: Path) -> None:
    """Print which step failed, the tail of the log and a hint for missing packages."""
    print(f'build_vision_msgs: step "{step}" failed; full log: {log}', file=sys.stderr)
    if log.is_file():
        with log.open(errors='replace') as handle:
            tail = deque(handle, maxlen=LOG_TAIL_LINES)
        print(f'---- last {len(tail)} lines of the log ----', file=sys.stderr)
        sys.stderr.write(''.join(tail))
        print('---- end of log ----', file=sys.stderr)
        for name in missing_packages(log):
            wheel = 'ros-' + name.replace('_', '-')
            print(f'hint: CMake found no package "{name}": add the wheel {wheel} to the section '
                  '"Tools that generate vision_msgs" of requirements.txt and pip install it',
                  file=sys.stderr)


def build(prefix: Path, files: Sequence[Path], digest: str, keep: bool) -> Tuple[bool, Path]:
    """Generate, configure, build and install vision_msgs; return (success, log path)."""
    log = prefix / f'{PACKAGE}-build.log'
    log.parent.mkdir(parents=True, exist_ok=True)
    log.write_text(f'build_vision_msgs log, sources {digest}\n')
    workdir = Path(tempfile.mkdtemp(prefix='vision_msgs-build-'))
    src, bld = workdir / 'src', workdir / 'build'
    env = build_env(prefix)
    python = prefix / 'bin' / 'python'
    step = 'fix wheel CMake paths'
    ok = False
    try:
        print(f'  {step} ...', flush=True)
        print(f'  {step}: {fix_wheel_python_paths(prefix)} file(s) rewritten', flush=True)
        step = 'write package'
        write_package(src, files)
        print(f'  {step}: {len(files)} messages in {src}', flush=True)
        step = 'configure'
        run_step(step, [
            'cmake', '-S', str(src), '-B', str(bld),
            f'-DCMAKE_INSTALL_PREFIX={prefix}',
            f'-DCMAKE_PREFIX_PATH={prefix}',
            f'-DPython3_EXECUTABLE={python}',
            '-DCMAKE_BUILD_TYPE=Release',
            '-DBUILD_TESTING=OFF',
        ], env, log)
        step = 'build'
        run_step(step, ['cmake', '--build', str(bld), '--parallel', str(os.cpu_count() or 1)],
                 env, log)
        step = 'install'
        run_step(step, ['cmake', '--install', str(bld)], env, log)
        missing = [str(path) for path in installed_paths(prefix) if not path.exists()]
        if missing:
            step = 'check install'
            with log.open('a') as out:
                out.write('missing after install:\n' + '\n'.join(missing) + '\n')
            raise StepFailed(step)
        stamp_path(prefix).write_text(digest + '\n')
        ok = True
    except (StepFailed, OSError) as err:
        if not isinstance(err, StepFailed):
            with log.open('a') as out:
                out.write(f'{type(err).__name__}: {err}\n')
        elif str(err) != step:
            with log.open('a') as out:
                out.write(f'{err}\n')
        report_failure(step, log)
    finally:
        if ok and not keep:
            shutil.rmtree(workdir, ignore_errors=True)
        else:
            print(f'  build directory kept: {workdir}', flush=True)
    return ok, log


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Parse arguments, skip when up to date, otherwise build; return the exit status."""
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--force', action='store_true',
                        help='rebuild even when the installed vision_msgs is up to date')
    parser.add_argument('--keep-build-dir', action='store_true',
                        help='keep the temporary package and build directory')
    args = parser.parse_args(argv)

    prefix = venv_prefix()
    files = msg_files()
    digest = source_digest(files)
    if not args.force and is_up_to_date(prefix, digest):
        print(f'vision_msgs {VERSION} in {prefix} is up to date ({len(files)} messages)')
        return 0

    lock_path = prefix / f'.{PACKAGE}-build.lock'
    with lock_path.open('w') as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        # Another run may have finished the same build while this one waited.
        if not args.force and is_up_to_date(prefix, digest):
            print(f'vision_msgs {VERSION} in {prefix} is up to date ({len(files)} messages)')
            return 0
        started = time.monotonic()
        print(f'Building vision_msgs {VERSION} ({len(files)} messages) into {prefix}',
              flush=True)
        stamp_path(prefix).unlink(missing_ok=True)
        ok, log = build(prefix, files, digest, args.keep_build_dir)
    if not ok:
        return 1
    print(f'vision_msgs {VERSION} installed in {time.monotonic() - started:.0f} s '
          f'(log: {log})')
    return 0


if __name__ == '__main__':
    sys.exit(main())
