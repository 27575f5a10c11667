"""ament_python package definition; also installs with pip into a plain virtual environment."""
import runpy
from glob import glob

from setuptools import find_packages, setup

PACKAGE = 'multicam_ros'
# The executables are listed once, in the package (setup.py must not import the package).
CONSOLE_SCRIPTS = runpy.run_path(f'{PACKAGE}/system/executables.py')['CONSOLE_SCRIPTS']

setup(
    name=PACKAGE,
    version='0.1.0',
    # multicam_testbed: the RTSP test streams of the tests and `make demo`, kept outside the
    # runtime package (it drives Debian's GStreamer; the nodes never import it).
    packages=find_packages(include=[PACKAGE, PACKAGE + '.*', 'multicam_testbed']),
    package_data={PACKAGE: ['resources/*.xml'], 'multicam_testbed': ['*.py']},
    data_files=[
        ('share/ament_index/resource_index/packages', ['resource/' + PACKAGE]),
        ('share/' + PACKAGE, ['package.xml']),
        ('share/' + PACKAGE + '/launch', glob('launch/*.launch.py')),
        ('share/' + PACKAGE + '/config', glob('config/*.yaml')),
    ],
    # ROS dependencies come from package.xml (rosdep) or, outside ROS, requirements.txt.
    install_requires=['setuptools'],
    zip_safe=True,
    maintainer='multicam_ros maintainers',
    maintainer_email='maintainers@multicam-ros.org',
    description='Many RTSP cameras, one shared detection model, standard ROS 2 outputs.',
    license='Apache-2.0',
    python_requires='>=3.10',
    entry_points={
        'console_scripts': [f'{name} = {target}' for name, target in CONSOLE_SCRIPTS.items()],
    },
)
