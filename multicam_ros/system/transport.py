"""The DDS transport policy: which Fast DDS variables the system's processes get. ROS-free.

Images of 720p and more do not fit Fast DDS's default shared-memory segments, so the package
ships a large-frame profile. Both starters put `transport_environment(...)` into the
environment of every node they start (cams.yaml `transport.fastdds_profile` chooses), and a
node started on its own applies the same rule to itself (ros/node_main.py). Whoever starts the
system keeps the last word: variables already set are never overridden.

Each Fast DDS line reads the profile from a variable of its own: 2.x (Humble's 2.6, Jazzy's
2.14) only FASTRTPS_DEFAULT_PROFILES_FILE, 3.x (Kilted, Rolling) only
FASTDDS_DEFAULT_PROFILES_FILE. The policy sets both to the same file, which both lines accept
(test/test_transport.py loads it with Fast DDS 2.9 and 3.x), and either one set by the user
counts as the user's choice.
"""
from importlib import resources
from typing import Dict, Mapping

from multicam_ros.system.executables import PACKAGE

FASTDDS_PROFILE_ENV = 'FASTDDS_DEFAULT_PROFILES_FILE'  # read by Fast DDS 3.x
FASTRTPS_PROFILE_ENV = 'FASTRTPS_DEFAULT_PROFILES_FILE'  # read by Fast DDS 2.x
PROFILE_ENVS = (FASTDDS_PROFILE_ENV, FASTRTPS_PROFILE_ENV)
FASTDDS_BUILTIN_TRANSPORTS_ENV = 'FASTDDS_BUILTIN_TRANSPORTS'  # Fast DDS 2.12 and later
USER_CHOICE_ENVS = PROFILE_ENVS + (FASTDDS_BUILTIN_TRANSPORTS_ENV,)
PROFILE_PACKAGE = 'package'  # the packaged large-frame profile
PROFILE_NONE = 'none'  # Fast DDS's own defaults


def packaged_fastdds_profile() -> str:
    """Path of the package's large-frame Fast DDS profile."""
    return str(resources.files(PACKAGE) / 'resources' / 'fastdds_large_frames.xml')


def profile_environment(path: str) -> Dict[str, str]:
    """The variables that make every Fast DDS line load the profile at `path`."""
    return {name: path for name in PROFILE_ENVS}


def user_chose_transport(environ: Mapping[str, str]) -> bool:
    """True when a profile variable of either Fast DDS line or FASTDDS_BUILTIN_TRANSPORTS is
    set (non-empty): whoever starts the processes chose the transport."""
    return any(environ.get(name) for name in USER_CHOICE_ENVS)


def transport_environment(profile: str, environ: Mapping[str, str]) -> Dict[str, str]:
    """The Fast DDS variables for every process of the plan.

    Whoever starts the system has the last word: when FASTDDS_DEFAULT_PROFILES_FILE,
    FASTRTPS_DEFAULT_PROFILES_FILE or FASTDDS_BUILTIN_TRANSPORTS is already set (or the RMW is
    not Fast DDS), the processes inherit that unchanged and nothing is added. Otherwise
    `profile` decides: 'package' loads the packaged large-frame profile (shared memory with
    32 MiB segments plus UDPv4, which default subscribers such as rqt_image_view receive from),
    a path loads that profile (both under both profile variables), and 'none' keeps Fast DDS's
    defaults (FASTDDS_BUILTIN_TRANSPORTS=DEFAULT, which also keeps camera_node from loading the
    packaged profile itself; Fast DDS older than 2.12 ignores it and uses its defaults anyway).
    """
    if user_chose_transport(environ):
        return {}
    if not environ.get('RMW_IMPLEMENTATION', 'rmw_fastrtps_cpp').startswith('rmw_fastrtps'):
        return {}
    if profile == PROFILE_NONE:
        return {FASTDDS_BUILTIN_TRANSPORTS_ENV: 'DEFAULT'}
    if profile == PROFILE_PACKAGE:
        return profile_environment(packaged_fastdds_profile())
    return profile_environment(profile)
