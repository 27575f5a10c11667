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

A profile that cams.yaml names is checked before anything starts (`check_fastdds_profile`):
Fast DDS reads it only when a participant is created, and a file it cannot use makes every node
fall back, silently, to the default transports that do not carry large frames.
"""
import xml.etree.ElementTree as ElementTree
from importlib import resources
from typing import Dict, List, Mapping, Tuple

from multicam_ros.core.settings import ConfigError
from multicam_ros.system.executables import PACKAGE

FASTDDS_PROFILE_ENV = 'FASTDDS_DEFAULT_PROFILES_FILE'  # read by Fast DDS 3.x
FASTRTPS_PROFILE_ENV = 'FASTRTPS_DEFAULT_PROFILES_FILE'  # read by Fast DDS 2.x
PROFILE_ENVS = (FASTDDS_PROFILE_ENV, FASTRTPS_PROFILE_ENV)
FASTDDS_BUILTIN_TRANSPORTS_ENV = 'FASTDDS_BUILTIN_TRANSPORTS'  # Fast DDS 2.12 and later
USER_CHOICE_ENVS = PROFILE_ENVS + (FASTDDS_BUILTIN_TRANSPORTS_ENV,)
PROFILE_PACKAGE = 'package'  # the packaged large-frame profile
PROFILE_NONE = 'none'  # Fast DDS's own defaults
PROFILE_KEY = 'transport.fastdds_profile'
# The namespaces of eProsima's profile schemas: 3.x (<dds>) and 2.x (<profiles>). Fast DDS itself
# (tinyxml2) ignores namespaces, so a profile without one is accepted too.
FASTDDS_XML_NAMESPACES = ('http://www.eprosima.com',
                          'http://www.eprosima.com/XMLSchemas/fastRTPS_Profiles')
MAX_PROFILE_BYTES = 1024 * 1024  # eProsima's own examples are a few KiB
PROFILE_FORMS = ('a Fast DDS XML profile file: <dds xmlns="http://www.eprosima.com"><profiles> '
                 '(the 3.x layout) or <profiles xmlns="http://www.eprosima.com/XMLSchemas/'
                 'fastRTPS_Profiles"> (2.x), holding a <participant profile_name="..." '
                 'is_default_profile="true">, without a DOCTYPE')
_FEED_BYTES = 4096


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


class _DoctypeFound(Exception):
    """Raised from inside the XML parser at the start of a DOCTYPE (see _NoDoctype)."""


class _NoDoctype(ElementTree.TreeBuilder):
    """A TreeBuilder that refuses a DOCTYPE as soon as the parser meets one.

    DOCTYPE is where entity declarations live, and entities are how XML bombs (nested entities,
    "billion laughs") and external entities (reading other files) work. No profile needs them:
    Fast DDS reads profiles with tinyxml2, which neither reads a DTD nor expands declared
    entities, so a profile that used them would mean one thing to this check and another to
    Fast DDS. The profile is a local file, so this and expat's own limits are all that is needed
    (no defusedxml)."""

    def doctype(self, name: str, pubid: str, system: str) -> None:
        raise _DoctypeFound(name)


def _split_tag(tag: str) -> Tuple[str, str]:
    """'{namespace}local' -> ('namespace', 'local'); 'local' -> ('', 'local')."""
    if tag.startswith('{'):
        namespace, _, local = tag[1:].partition('}')
        return namespace, local
    return '', tag


def check_fastdds_profile(path: str, key: str = PROFILE_KEY) -> None:
    """Raise ConfigError (naming `key`) unless `path` is a Fast DDS XML profile that ROS nodes
    would use: well-formed XML of at most MAX_PROFILE_BYTES, no DOCTYPE, the 3.x layout
    (<dds><profiles>) or the 2.x one (<profiles>) in an eProsima namespace (or none), with a
    <participant profile_name=...> marked is_default_profile="true" (rmw_fastrtps creates every
    participant from the default participant profile; an unmarked one is never used)."""
    def refuse(problem: str) -> ConfigError:
        return ConfigError.of(key, f'{path}: {problem}', PROFILE_FORMS)

    try:
        with open(path, 'rb') as stream:
            data = stream.read(MAX_PROFILE_BYTES + 1)
    except OSError as exc:
        raise refuse(f'cannot read ({exc.strerror or exc})') from None
    if len(data) > MAX_PROFILE_BYTES:
        raise refuse(f'larger than {MAX_PROFILE_BYTES} bytes')
    parser = ElementTree.XMLParser(target=_NoDoctype())
    try:
        for start in range(0, len(data), _FEED_BYTES):  # small pieces: a DOCTYPE stops it early
            parser.feed(data[start:start + _FEED_BYTES])
        root = parser.close()
    except _DoctypeFound:
        raise refuse('has a DOCTYPE (document type or entity declarations), which Fast DDS '
                     'profiles do not use') from None
    except ElementTree.ParseError as exc:
        raise refuse(f'not well-formed XML ({exc})') from None
    problem = _profile_problem(root)
    if problem:
        raise refuse(problem)


def _profile_problem(root: ElementTree.Element) -> str:
    """What keeps the parsed profile `root` from giving ROS nodes a default participant ('' if
    nothing)."""
    local = _split_tag(root.tag)[1]
    if local == 'dds':
        profiles = [child for child in root if _split_tag(child.tag)[1] == 'profiles']
    elif local == 'profiles':
        profiles = [root]
    else:
        return f'the root element is <{local[:64]}>, not <dds> or <profiles>'
    if not profiles:
        return '<dds> holds no <profiles>'
    elements = [root, *profiles]
    participants: List[ElementTree.Element] = []
    for element in profiles:
        for child in element:
            if _split_tag(child.tag)[1] == 'participant':
                participants.append(child)
                elements.append(child)
    for element in elements:
        namespace, local = _split_tag(element.tag)
        if namespace and namespace not in FASTDDS_XML_NAMESPACES:
            return f'<{local}> is in the namespace {namespace[:100]!r}, not one of Fast DDS'
    named = [p for p in participants if p.get('profile_name', '').strip()]
    if not named:
        return 'no <participant profile_name="..."> in <profiles>'
    if not any(p.get('is_default_profile') == 'true' for p in named):
        return ('no participant profile is marked is_default_profile="true", so ROS nodes '
                "would not use it (they take Fast DDS's default participant)")
    return ''
