"""The DDS transport policy: which Fast DDS variables the system's processes get. ROS-free.

Images of 720p and more do not fit Fast DDS's default shared-memory segments, so the package
ships a large-frame profile. Both starters put `transport_environment(...)` into the
environment of every node they start (cams.yaml `transport.fastdds_profile` chooses), and a
node started on its own applies the same rule to itself (ros/node_main.py). Whoever starts the
system keeps the last word: variables already set are never overridden.
"""
from importlib import resources
from typing import Dict, Mapping

from multicam_ros.system.executables import PACKAGE

FASTDDS_PROFILE_ENV = 'FASTDDS_DEFAULT_PROFILES_FILE'
FASTDDS_BUILTIN_TRANSPORTS_ENV = 'FASTDDS_BUILTIN_TRANSPORTS'
PROFILE_PACKAGE = 'package'  # the packaged large-frame profile
PROFILE_NONE = 'none'  # Fast DDS's own defaults


def packaged_fastdds_profile() -> str:
    """Path of the package's large-frame Fast DDS profile."""
    return str(resources.files(PACKAGE) / 'resources' / 'fastdds_large_frames.xml')


def transport_environment(profile: str, environ: Mapping[str, str]) -> Dict[str, str]:
    """The Fast DDS variables for every process of the plan.

    Whoever starts the system has the last word: when FASTDDS_DEFAULT_PROFILES_FILE or
    FASTDDS_BUILTIN_TRANSPORTS is already set (or the RMW is not Fast DDS), the processes
    inherit that unchanged and nothing is added. Otherwise `profile` decides: 'package' loads
    the packaged large-frame profile (shared memory with 32 MiB segments plus UDPv4, which
    default subscribers such as rqt_image_view receive from), a path loads that profile, and
    'none' keeps Fast DDS's defaults (FASTDDS_BUILTIN_TRANSPORTS=DEFAULT, which also keeps
    camera_node from loading the packaged profile itself).
    """
    if environ.get(FASTDDS_PROFILE_ENV) or environ.get(FASTDDS_BUILTIN_TRANSPORTS_ENV):
        return {}
    if not environ.get('RMW_IMPLEMENTATION', 'rmw_fastrtps_cpp').startswith('rmw_fastrtps'):
        return {}
    if profile == PROFILE_NONE:
        return {FASTDDS_BUILTIN_TRANSPORTS_ENV: 'DEFAULT'}
    if profile == PROFILE_PACKAGE:
        return {FASTDDS_PROFILE_ENV: packaged_fastdds_profile()}
    return {FASTDDS_PROFILE_ENV: profile}
