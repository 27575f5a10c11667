"""The large-frame transport on both Fast DDS lines: the policy sets the variable each line reads,
and each line builds a participant from the package's profile with the big SHM segment.

Humble (Fast DDS 2.6) and Jazzy (2.14) read only FASTRTPS_DEFAULT_PROFILES_FILE; Kilted and
Rolling (3.x) only FASTDDS_DEFAULT_PROFILES_FILE. The proof for 2.x is Debian 12's Fast DDS 2.9
(libfastrtps-dev, installed by `make setup`); the one for 3.x is the venv's Fast DDS. A small C++
program (test/fastdds_probe) is built against each and run with the environment the package's
starters give their nodes; it reports the transports of the participant it made.
"""
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path
from typing import Dict, List

import pytest

from multicam_ros.core.settings import ConfigError
from multicam_ros.system.transport import FASTDDS_BUILTIN_TRANSPORTS_ENV, FASTDDS_PROFILE_ENV, \
    FASTRTPS_PROFILE_ENV, MAX_PROFILE_BYTES, PROFILE_FORMS, PROFILE_NONE, PROFILE_PACKAGE, \
    USER_CHOICE_ENVS, check_fastdds_profile, packaged_fastdds_profile, profile_environment, \
    transport_environment, user_chose_transport
from ros_helpers import next_domain_id

pytestmark = pytest.mark.timeout(180)

PROBE_SOURCE = Path(__file__).resolve().parent / 'fastdds_probe' / 'participant_transports.cpp'
PROFILE_NAME = 'multicam_large_frames'  # the participant profile in the packaged XML
SEGMENT_BYTES = 32 * 1024 * 1024  # segment_size and maxMessageSize in the packaged XML
FASTDDS2_HEADER = Path('/usr/include/fastdds/rtps/transport/shared_mem/'
                       'SharedMemTransportDescriptor.h')


# -- the policy --------------------------------------------------------------------------------

def test_package_profile_goes_into_both_variables():
    path = packaged_fastdds_profile()
    assert transport_environment(PROFILE_PACKAGE, {}) == {
        'FASTDDS_DEFAULT_PROFILES_FILE': path, 'FASTRTPS_DEFAULT_PROFILES_FILE': path}
    assert transport_environment('/etc/mine.xml', {}) == profile_environment('/etc/mine.xml')
    assert transport_environment(PROFILE_NONE, {}) == {FASTDDS_BUILTIN_TRANSPORTS_ENV: 'DEFAULT'}


@pytest.mark.parametrize('variable', USER_CHOICE_ENVS)
@pytest.mark.parametrize('profile', [PROFILE_PACKAGE, PROFILE_NONE, '/abs/profile.xml'])
def test_either_profile_variable_is_the_users_choice(variable, profile):
    environ = {variable: '/etc/site_profile.xml'}
    assert user_chose_transport(environ)
    assert transport_environment(profile, environ) == {}


def test_empty_variables_are_no_choice():
    environ = {name: '' for name in USER_CHOICE_ENVS}
    assert not user_chose_transport(environ)
    assert transport_environment(PROFILE_PACKAGE, environ) == profile_environment(
        packaged_fastdds_profile())


# -- the start-up check of a profile ----------------------------------------------------------

V3 = 'http://www.eprosima.com'
V2 = 'http://www.eprosima.com/XMLSchemas/fastRTPS_Profiles'
PARTICIPANT = '<participant profile_name="p" is_default_profile="true"><rtps/></participant>'
GOOD_PROFILES = {
    '3.x layout': f'<?xml version="1.0"?><dds xmlns="{V3}"><profiles>{PARTICIPANT}</profiles>'
                  '</dds>',
    '2.x layout': f'<profiles xmlns="{V2}">{PARTICIPANT}</profiles>',
    '2.x profiles inside a 3.x dds': f'<dds xmlns="{V3}"><profiles xmlns="{V2}">{PARTICIPANT}'
                                     '</profiles></dds>',
    'no namespace (Fast DDS ignores it)': f'<dds><profiles>{PARTICIPANT}</profiles></dds>',
    'the default among others': f'<profiles xmlns="{V2}"><participant profile_name="a"/>'
                                f'{PARTICIPANT}<data_writer profile_name="w"/></profiles>',
}
BILLION_LAUGHS = ('<?xml version="1.0"?>\n<!DOCTYPE dds [\n <!ENTITY l0 "lol">\n'
                  + ''.join(f' <!ENTITY l{i} "' + f'&l{i - 1};' * 10 + '">\n'
                            for i in range(1, 10))
                  + f']>\n<dds xmlns="{V3}"><profiles><participant profile_name="&l9;" '
                  'is_default_profile="true"/></profiles></dds>\n')
BAD_PROFILES = {
    'not XML': ('profile: yes\n', 'not well-formed XML (syntax error: line 1, column 0)'),
    'empty': ('', 'not well-formed XML (no element found: line 1, column 0)'),
    'cut short': (GOOD_PROFILES['3.x layout'][:-10],
                  'not well-formed XML (unclosed token: line 1, column'),
    'another root': (f'<participant xmlns="{V2}" profile_name="p"/>',
                     'the root element is <participant>, not <dds> or <profiles>'),
    'dds without profiles': (f'<dds xmlns="{V3}"><log/></dds>', '<dds> holds no <profiles>'),
    'no participant': (f'<profiles xmlns="{V2}"><data_writer profile_name="w"/></profiles>',
                       'no <participant profile_name="..."> in <profiles>'),
    'participant without a name': (f'<profiles xmlns="{V2}"><participant '
                                   'is_default_profile="true"/></profiles>',
                                   'no <participant profile_name="..."> in <profiles>'),
    'no default participant': (f'<profiles xmlns="{V2}"><participant profile_name="p" '
                               'is_default_profile="TRUE"/></profiles>',
                               'no participant profile is marked is_default_profile="true", so '
                               'ROS nodes would not use it'),
    'a foreign namespace': (f'<dds xmlns="urn:other"><profiles>{PARTICIPANT}</profiles></dds>',
                            "<dds> is in the namespace 'urn:other', not one of Fast DDS"),
    'billion laughs': (BILLION_LAUGHS, 'has a DOCTYPE (document type or entity declarations)'),
    'an external entity': ('<?xml version="1.0"?><!DOCTYPE dds [<!ENTITY x SYSTEM '
                           f'"file:///etc/passwd">]><dds xmlns="{V3}"><profiles>&x;'
                           f'{PARTICIPANT}</profiles></dds>', 'has a DOCTYPE'),
    'too large': (GOOD_PROFILES['3.x layout'] + ' ' * MAX_PROFILE_BYTES,
                  f'larger than {MAX_PROFILE_BYTES} bytes'),
}


def test_the_packaged_profile_passes_the_check():
    check_fastdds_profile(packaged_fastdds_profile())


@pytest.mark.parametrize('case', sorted(GOOD_PROFILES))
def test_profiles_that_fast_dds_uses_pass(tmp_path, case):
    path = tmp_path / 'profile.xml'
    path.write_text(GOOD_PROFILES[case])
    check_fastdds_profile(str(path))


@pytest.mark.parametrize('case', sorted(BAD_PROFILES))
def test_profiles_that_fast_dds_cannot_use_are_refused(tmp_path, case):
    content, expected = BAD_PROFILES[case]
    path = tmp_path / 'profile.xml'
    path.write_text(content)
    with pytest.raises(ConfigError) as caught:
        check_fastdds_profile(str(path))
    assert len(caught.value.problems) == 1
    problem = caught.value.problems[0]
    assert problem.startswith(f'transport.fastdds_profile: {path}: {expected}'), problem
    assert problem.endswith(f'; accepted: {PROFILE_FORMS}') and len(problem) < 600, problem


def test_a_missing_or_unreadable_profile_is_named(tmp_path):
    with pytest.raises(ConfigError, match=r'^fastdds_profile: .*none\.xml: cannot read \(No '
                                          r'such file or directory\); accepted: a Fast DDS'):
        check_fastdds_profile(str(tmp_path / 'none.xml'), key='fastdds_profile')
    with pytest.raises(ConfigError, match=r'^transport\.fastdds_profile: .*: cannot read \(Is '
                                          r'a directory\)'):
        check_fastdds_profile(str(tmp_path))


# -- the profile, loaded by Fast DDS 2.x and 3.x -------------------------------------------------

def _compiler() -> str:
    compiler = shutil.which('g++')
    if compiler is None:
        pytest.fail('g++ not found: run `make setup` (it installs g++)')
    return compiler


def _build(out_dir: Path, flags: List[str]) -> Path:
    binary = out_dir / 'participant_transports'
    result = subprocess.run([_compiler(), '-std=c++17', '-O0', '-o', str(binary),
                             str(PROBE_SOURCE), *flags],
                            capture_output=True, text=True, timeout=150)
    assert result.returncode == 0, 'building the Fast DDS probe failed:\n' + result.stderr
    return binary


@pytest.fixture(scope='module')
def probe_fastdds2(tmp_path_factory) -> Path:
    """The probe built against Debian 12's Fast DDS 2.9 (the 2.x line of Humble and Jazzy)."""
    if not FASTDDS2_HEADER.is_file():
        pytest.fail(f'{FASTDDS2_HEADER} missing: run `make setup` (Debian packages '
                    'libfastrtps-dev and fastdds-tools: Fast DDS 2.9)')
    return _build(tmp_path_factory.mktemp('fastdds2'), ['-lfastrtps', '-lfastcdr'])


@pytest.fixture(scope='module')
def probe_fastdds3(tmp_path_factory) -> Path:
    """The probe built against the venv's Fast DDS 3.x (the line of Kilted and Rolling)."""
    prefix = Path(sys.prefix)
    assert (prefix / 'include' / 'fastdds' / 'config.hpp').is_file(), \
        f'no Fast DDS 3 headers under {prefix}/include: run `make setup`'
    flags = [f'-I{prefix}/include', f'-L{prefix}/lib', f'-Wl,-rpath,{prefix}/lib']
    # The wheel's libfastdds needs libraries that auditwheel placed beside the package.
    bundled = Path(sysconfig.get_paths()['purelib']) / 'ros_fastdds.libs'
    if bundled.is_dir():
        flags += [f'-Wl,-rpath-link,{bundled}', f'-Wl,-rpath,{bundled}']
    return _build(tmp_path_factory.mktemp('fastdds3'), flags + ['-lfastdds', '-lfastcdr'])


def _clean_environ() -> Dict[str, str]:
    """This process's environment without any transport choice of the person running the tests."""
    return {k: v for k, v in os.environ.items()
            if k not in USER_CHOICE_ENVS and k != 'RMW_IMPLEMENTATION'}


def _run_probe(binary: Path, env: Dict[str, str], cwd: Path) -> Dict[str, List[str]]:
    """Run the probe; returns its report as {first word: [rest of each such line]}."""
    # cwd: a directory without DEFAULT_FASTRTPS_PROFILES.xml / DEFAULT_FASTDDS_PROFILES.xml,
    # which Fast DDS would load from the working directory.
    result = subprocess.run([str(binary), str(next_domain_id()), PROFILE_NAME], env=env,
                            cwd=str(cwd), capture_output=True, text=True, timeout=60)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert 'XMLPARSER' not in output and 'Error' not in output, output
    report: Dict[str, List[str]] = {}
    for line in result.stdout.splitlines():
        word, _, rest = line.partition(' ')
        report.setdefault(word, []).append(rest)
    return report


def _assert_large_frame_participant(report: Dict[str, List[str]], line: str) -> None:
    assert report['fastdds'][0].startswith(line + '.'), report
    assert report['profile'] == [f'{PROFILE_NAME} 1'], report
    assert report['participant'] == ['1'], report
    assert report['builtin_transports'] == ['0'], report
    assert report['transport'][0] == (f'SHM segment_size={SEGMENT_BYTES} '
                                      f'max_message_size={SEGMENT_BYTES}'), report
    assert report['transport'][1].startswith('UDPv4 '), report
    assert len(report['transport']) == 2, report
    # The transport is really there: this process maps a shared-memory segment of 32 MiB+.
    sizes = [int(entry.rsplit(' ', 1)[1]) for entry in report.get('shm_mapping', [])]
    assert max(sizes, default=0) >= SEGMENT_BYTES, report


def test_fastdds2_builds_the_large_frame_participant(probe_fastdds2, tmp_path):
    """Humble's and Jazzy's line: what the starters set is read, and the SHM segment is big."""
    env = _clean_environ()
    env.pop('LD_LIBRARY_PATH', None)  # the venv's libraries belong to Fast DDS 3
    env.update(transport_environment(PROFILE_PACKAGE, env))
    _assert_large_frame_participant(_run_probe(probe_fastdds2, env, tmp_path), '2')


def test_fastdds3_builds_the_large_frame_participant(probe_fastdds3, tmp_path):
    """Kilted's and Rolling's line, from the same file and the same environment."""
    env = _clean_environ()
    env.update(transport_environment(PROFILE_PACKAGE, env))
    _assert_large_frame_participant(_run_probe(probe_fastdds3, env, tmp_path), '3')


def test_fastdds2_ignores_the_3x_variable(probe_fastdds2, tmp_path):
    """The defect both variables fix: given only FASTDDS_DEFAULT_PROFILES_FILE, Fast DDS 2.x
    loads nothing and runs on its default transports (small SHM segments plus UDP)."""
    env = _clean_environ()
    env.pop('LD_LIBRARY_PATH', None)
    env[FASTDDS_PROFILE_ENV] = packaged_fastdds_profile()
    report = _run_probe(probe_fastdds2, env, tmp_path)
    assert report['profile'] == [f'{PROFILE_NAME} 0'], report
    assert report['builtin_transports'] == ['1'], report
    assert FASTRTPS_PROFILE_ENV not in env


# -- the start-up check agrees with Fast DDS: what passes is what both lines use ---------------

def _udp_only(participant_attributes: str = 'is_default_profile="true"', root: str = 'dds',
              root_namespace: str = V3, profiles_namespace: str = '') -> str:
    """A profile whose participant is told apart from Fast DDS's default one: UDPv4 alone,
    builtin transports off."""
    profiles_xmlns = f' xmlns="{profiles_namespace}"' if profiles_namespace else ''
    profiles = (f'<profiles{profiles_xmlns}><transport_descriptors><transport_descriptor>'
                '<transport_id>udp_only</transport_id><type>UDPv4</type></transport_descriptor>'
                f'</transport_descriptors><participant profile_name="{PROFILE_NAME}" '
                f'{participant_attributes}><rtps><userTransports><transport_id>udp_only'
                '</transport_id></userTransports><useBuiltinTransports>false'
                '</useBuiltinTransports></rtps></participant></profiles>')
    xmlns = f' xmlns="{root_namespace}"' if root_namespace else ''
    if root == 'dds':
        return f'<?xml version="1.0"?><dds{xmlns}>{profiles}</dds>'
    return profiles.replace('<profiles', f'<profiles{xmlns}', 1)


AGREEMENT = {
    '3.x layout': _udp_only(),
    '2.x layout': _udp_only(root='profiles', root_namespace=V2),
    '2.x profiles inside a 3.x dds': _udp_only(profiles_namespace=V2),
    'no namespace': _udp_only(root_namespace=''),
    'no default participant': _udp_only(participant_attributes=''),
}


@pytest.mark.parametrize('line', ['2', '3'])
@pytest.mark.parametrize('case', sorted(AGREEMENT))
def test_the_check_agrees_with_fast_dds(request, tmp_path, line, case):
    """Fast DDS builds its default participant from the profile exactly when the check
    passes it: no profile is refused that a node would use, none passed that it would not."""
    path = tmp_path / 'profile.xml'
    path.write_text(AGREEMENT[case])
    try:
        check_fastdds_profile(str(path))
        passed = True
    except ConfigError:
        passed = False
    env = _clean_environ()
    if line == '2':
        env.pop('LD_LIBRARY_PATH', None)  # the venv's libraries belong to Fast DDS 3
    env.update(profile_environment(str(path)))
    probe = request.getfixturevalue(f'probe_fastdds{line}')
    result = subprocess.run([str(probe), str(next_domain_id()), PROFILE_NAME], env=env,
                            cwd=str(tmp_path), capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    used = 'builtin_transports 0' in result.stdout.splitlines()
    assert used == passed, (case, passed, result.stdout + result.stderr)
