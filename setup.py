"""ament_python package definition; also installs with pip into a plain virtual environment."""
from glob import glob

from setuptools import find_packages, setup

PACKAGE = 'multicam_ros'

setup(
    name=PACKAGE,
    version='0.1.0',
    packages=find_packages(include=[PACKAGE, PACKAGE + '.*']),
    package_data={PACKAGE: ['testbed/*.py', 'resources/*.xml']},
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
        'console_scripts': [
            'camera_node = multicam_ros.camera_node:main',
            'detector_node = multicam_ros.detector_node:main',
            'multicam-ros = multicam_ros.cli:main',
        ],
    },
)
